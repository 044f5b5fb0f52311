"""Start-up benchmark: `sweeper --help`, and the time from `sweeper run` to its first POST.

    python benchmarks/startup.py               # 10 runs of --help, 5 of each first-POST row
    python benchmarks/startup.py --quick       # 3 and 1

* `--help`: wall time of the installed `sweeper --help` (the console script; `python -m sweeper`
  when it is not on PATH), after one warm-up run, beside `python -c pass` (the interpreter alone).
* first POST: a fresh process is started against a served emulator (no quota) and the clock
  runs until the emulator creates the first job group (its own clock, the same machine). Rows:
  `sweeper run` (config read, ledger locked, plan, intent row fsynced, then the POST), and the
  Airflow-style and naive clients started the same way (a Python process importing httpx and
  tenacity, then one POST).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import figures
from harness import (
    Emulator,
    bench_env,
    median,
    scratch,
    served_emulator,
    write_sweep,
)

HERE = Path(__file__).resolve().parent
CLIENT_START = """
import sys
sys.path.insert(0, {here!r})
from clients import {name}
{name}({url!r}, 1)
"""


def sweeper_command() -> list[str]:
    """The console script users run, next to this interpreter or on PATH."""
    beside = Path(sys.executable).with_name("sweeper")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("sweeper")
    return [found] if found else [sys.executable, "-m", "sweeper"]


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def first_post(emulator: Emulator, cmd: list[str], cwd: Path) -> float:
    """Seconds from starting ``cmd`` to the emulator creating its first job group."""
    emulator.reset()
    started = time.time()
    subprocess.run(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=bench_env(),
        cwd=cwd,
        timeout=120,
        check=False,
    )
    created = [float(g["createdAt"]) for g in emulator.job_groups()]
    if not created:
        raise RuntimeError(f"{cmd[:4]} created nothing")
    return min(created) - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="first-POST runs per row")
    parser.add_argument("--quick", action="store_true", help="smoke run of seconds")
    parser.add_argument(
        "--record", action="store_true", help="also save the figures under results/benchmarks/"
    )
    args = parser.parse_args()
    help_runs = 3 if args.quick else 10
    repeat = 1 if args.quick else args.repeat
    info = figures.machine()
    sweeper = sweeper_command()

    wall([*sweeper, "--help"])  # warm-up: bytecode caches, page cache
    helps = [wall([*sweeper, "--help"]) for _ in range(help_runs)]
    bare = [wall([sys.executable, "-c", "pass"]) for _ in range(help_runs)]
    rows: list[list[object]] = [
        [f"`{Path(sweeper[-1]).name} --help`", median(helps) * 1000, help_runs, "< 150 ms"],
        ["`python -c pass` (the interpreter alone)", median(bare) * 1000, help_runs, "-"],
    ]

    with scratch("startup") as workdir, served_emulator(workdir=workdir) as emulator:
        config = write_sweep(
            workdir / "start.toml",
            name="start",
            base_url=emulator.base_url,
            n=3,
            rate="100/s",
            concurrency=1,
        )
        starters: dict[str, Callable[[int], list[str]]] = {
            "`sweeper run` (--no-wait)": lambda i: [
                *sweeper,
                "run",
                str(config),
                "--run-id",
                f"start-{i}",
                "--no-wait",
                "-q",
            ],
            "Airflow-style client": lambda i: [
                sys.executable,
                "-c",
                CLIENT_START.format(here=str(HERE), name="airflow_style", url=emulator.base_url),
            ],
            "naive asyncio client": lambda i: [
                sys.executable,
                "-c",
                CLIENT_START.format(here=str(HERE), name="naive_async", url=emulator.base_url),
            ],
        }
        for label, starter in starters.items():
            first_post(emulator, starter(-1), workdir)  # warm-up
            times = [first_post(emulator, starter(i), workdir) for i in range(repeat)]
            target = "< 1 s" if label.startswith("`sweeper") else "-"
            rows.append([f"start to first POST: {label}", median(times) * 1000, repeat, target])
            print(f"{label}: " + ", ".join(f"{t * 1000:.0f} ms" for t in times))

    headers = ("what", "median ms", "runs", "target")
    title = "Start-up: `sweeper --help` and time to the first POST"
    figures.report(title, info, figures.table(headers, rows), record=args.record)


if __name__ == "__main__":
    main()
