"""Tables for the terminal and the raw-results log appended to docs/performance.md."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
RAW_HEADING = "## Raw results"
PACKAGES = ("sweeper", "httpx", "httpcore", "uvicorn", "starlette", "tenacity", "h11")


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


def append_raw(
    title: str, command: Sequence[str], info: str, body: str, *, doc: Path = DOC
) -> None:
    """Append one run's figures under the raw-results section at the end of the doc."""
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text(encoding="utf-8") if doc.exists() else "# Performance\n"
    if RAW_HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{RAW_HEADING}\n\nAppended by the benchmark scripts.\n"
    cmd = " ".join(["python", *command])
    block = f"\n### {title}\n\n`{cmd}` · {info}\n\n{body.rstrip()}\n"
    doc.write_text(text.rstrip("\n") + "\n" + block, encoding="utf-8")


def report(title: str, info: str, body: str, *, record: bool) -> None:
    """Print the figures, and append them to docs/performance.md unless told not to.

    ``info`` is `machine()` taken when the run started (its load average is the one that counts).
    """
    print(f"\n{title}\n{info}\n\n{body}\n")
    if record:
        append_raw(title, [Path(sys.argv[0]).as_posix(), *sys.argv[1:]], info, body)
        print(f"(appended to {DOC})")
