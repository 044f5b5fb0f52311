"""Tables for the terminal, and optionally a copy of each run's figures under results/."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent.parent / "results" / "benchmarks"
PACKAGES = ("sweeper", "httpx", "httpcore", "pyrate-limiter", "tenacity", "uvicorn", "starlette")


def versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def machine() -> str:
    """One line: date, cores, load, Python and package versions."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now}; {os.cpu_count()} cores; load average at start {load}; "
        f"{platform.system()} {platform.machine()}; Python {sys.version.split()[0]}; {versions()}"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (readable as plain text too)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    for r in cells:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def save(title: str, info: str, body: str, *, directory: Path = RESULTS) -> Path:
    """Write one run's figures to results/benchmarks/ (git-ignored), named by script and time."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{Path(sys.argv[0]).stem}-{stamp}.md"
    cmd = " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    path.write_text(f"# {title}\n\n`{cmd}` · {info}\n\n{body.rstrip()}\n", encoding="utf-8")
    return path


def report(title: str, info: str, body: str, *, record: bool) -> None:
    """Print the figures; with ``record``, also save them under results/benchmarks/.

    ``info`` is `machine()` taken when the run started (its load average is the one that counts).
    Nothing is ever written into the documentation.
    """
    print(f"\n{title}\n{info}\n\n{body}\n")
    if record:
        print(f"(saved to {save(title, info, body)})")
