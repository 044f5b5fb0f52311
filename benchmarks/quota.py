"""Quota benchmark: sweeper at 0.9, 1.0 and 1.2 x the quota beside the naive and Airflow clients.

    python benchmarks/quota.py                 # Q = 600/min per user, N = 1,000, ~2-3 minutes
    python benchmarks/quota.py --repeat 3      # three runs, medians (~7 minutes)
    python benchmarks/quota.py --quick         # a smoke run of seconds (the quota never binds)

The platform's quota is 30 POSTs per minute per user and 60 per workspace; the emulator here
enforces 20 times that (Q per user, 2Q per workspace, over a sliding 60 s window), so 1,000
combinations take minutes instead of half an hour. Each row gets its own emulator subprocess and
the rows run side by side, so a run takes as long as its slowest row. Figures:

* what was really created, per combination, from the emulator's oracle (429s, duplicates, lost);
* wall time against N / R, the least a client paced at R (at most Q) can take;
* CPU per combination: sweeper's process (start-up included), or the client's thread.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import figures
from clients import airflow_style, naive_async
from harness import creations, median, run_sweeper, scratch, served_emulator, write_sweep

FAULT_AFTER = "[errors]\nafter_rate = 0.05\n"  # 5 % of POSTs: created, then 500


@dataclass(frozen=True)
class Row:
    client: str
    setting: str
    faults: str | None
    per_minute: Fraction  # the rate it asks for (Q for clients that do not pace)
    run: Callable[[str, Path, int], Attempt]


@dataclass(frozen=True)
class Attempt:
    wall_s: float
    cpu_s: float
    posts: int
    exit: int


@dataclass(frozen=True)
class Figures:
    client: str
    setting: str
    wall_s: float
    wall_ratio: float  # wall / (N / min(R, Q))
    cpu_ms: float  # CPU per combination
    rate_span: float  # created per minute over the submission span / Q
    rate_wall: float  # combinations created per minute of wall time / Q
    served_429: int
    posts: int
    created: int
    duplicates: int
    lost: int
    exit: int


def smooth_rate(per_minute: Fraction) -> str:
    """The rate as a user writes it, per minute: "540/min", or "1081/2min" for 540.5/min."""
    if per_minute.denominator == 1:
        return f"{per_minute.numerator}/min"
    return f"{per_minute.numerator}/{per_minute.denominator}min"


def sweeper_row(fraction: Fraction, quota: int, faults: str | None = None) -> Row:
    rate = smooth_rate(fraction * quota)

    def run(url: str, workdir: Path, n: int) -> Attempt:
        config = write_sweep(
            workdir / "sweep.toml", name="quota", base_url=url, n=n, rate=rate, concurrency=4
        )
        done = run_sweeper(config, timeout=900.0)
        # --no-wait leaves every job group running: exit 3 is the documented answer.
        if done.exit_code not in (0, 3):
            print(f"sweeper exited {done.exit_code}: {done.stderr_tail}")
        posts = int(done.summary.get("posts", 0) or 0)
        return Attempt(done.wall_s, done.cpu_s, posts, done.exit_code)

    label = "sweeper" + (" + 5% created-then-500" if faults else "")
    setting = f"rate {float(fraction):.1f}Q ({rate}), c=4"
    return Row(label, setting, faults, fraction * quota, run)


def naive_row(quota: int) -> Row:
    def run(url: str, workdir: Path, n: int) -> Attempt:
        done = naive_async(url, n, retry_sleep=1.0, deadline_s=600.0)
        return Attempt(done.wall_s, done.cpu_s, done.posts, 0 if done.gave_up == 0 else 3)

    return Row("naive asyncio", "all at once, 429 -> sleep 1 s", None, Fraction(quota), run)


def airflow_row(quota: int, faults: str | None = None) -> Row:
    def run(url: str, workdir: Path, n: int) -> Attempt:
        done = airflow_style(url, n)
        return Attempt(done.wall_s, done.cpu_s, done.posts, 0 if done.gave_up == 0 else 3)

    label = "Airflow-style" + (" + 5% created-then-500" if faults else "")
    return Row(label, "sequential, retry x5 exp.", faults, Fraction(quota), run)


def measure(row: Row, quota: int, n: int, seed: int) -> Figures:
    with (
        scratch("quota") as workdir,
        served_emulator(
            workdir=workdir,
            quota_user=quota,
            quota_workspace=2 * quota,
            faults=row.faults,
            seed=seed,
        ) as emulator,
    ):
        done = row.run(emulator.base_url, workdir, n)
        stats = emulator.stats()
        made = creations(emulator.job_groups(), n)
    per_second_q = quota / 60.0
    ideal = n / float(min(row.per_minute, Fraction(quota)) / 60)  # N / R, R at most Q
    wall = done.wall_s
    return Figures(
        client=row.client,
        setting=row.setting,
        wall_s=wall,
        wall_ratio=wall / ideal,
        cpu_ms=done.cpu_s / n * 1000,
        rate_span=made.rate_per_s / per_second_q,
        rate_wall=(made.distinct / wall) / per_second_q if wall > 0 else math.nan,
        served_429=int(stats["served_429"]),
        posts=done.posts or int(stats["posts_received"]),
        created=made.created,
        duplicates=made.duplicates,
        lost=made.lost,
        exit=done.exit,
    )


HEADERS = (
    "client",
    "setting",
    "wall s",
    "wall/(N/R)",
    "CPU ms/comb.",
    "rate/Q (span)",
    "rate/Q (wall)",
    "429s",
    "POSTs",
    "created",
    "duplicates",
    "lost",
    "exit",
)


def as_row(f: Figures) -> list[object]:
    return [
        f.client,
        f.setting,
        f.wall_s,
        f.wall_ratio,
        f.cpu_ms,
        f.rate_span,
        f.rate_wall,
        f.served_429,
        f.posts,
        f.created,
        f.duplicates,
        f.lost,
        f.exit,
    ]


def medians(runs: list[list[Figures]]) -> list[list[object]]:
    out = []
    for i, first in enumerate(runs[0]):
        same = [r[i] for r in runs]
        out.append(
            [
                first.client,
                first.setting,
                median([f.wall_s for f in same]),
                median([f.wall_ratio for f in same]),
                median([f.cpu_ms for f in same]),
                median([f.rate_span for f in same]),
                median([f.rate_wall for f in same]),
                median([f.served_429 for f in same]),
                median([f.posts for f in same]),
                median([f.created for f in same]),
                median([f.duplicates for f in same]),
                median([f.lost for f in same]),
                "/".join(str(f.exit) for f in same),
            ]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quota", type=int, default=600, help="Q: POSTs per user per minute")
    parser.add_argument("-n", type=int, default=1000, help="combinations per row")
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are reported")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=30, seconds")
    parser.add_argument("--sequential", action="store_true", help="one row at a time")
    parser.add_argument("--no-faults", action="store_true", help="skip the created-then-500 rows")
    parser.add_argument(
        "--record", action="store_true", help="also save the figures under results/benchmarks/"
    )
    args = parser.parse_args()
    n = 30 if args.quick else args.n
    quota = args.quota
    rows = [
        sweeper_row(Fraction(9, 10), quota),
        sweeper_row(Fraction(1), quota),
        sweeper_row(Fraction(6, 5), quota),
        naive_row(quota),
        airflow_row(quota),
    ]
    if not args.no_faults:
        rows += [airflow_row(quota, FAULT_AFTER), sweeper_row(Fraction(9, 10), quota, FAULT_AFTER)]
    info = figures.machine()
    runs: list[list[Figures]] = []
    for rep in range(args.repeat):
        print(f"run {rep + 1}/{args.repeat}: {len(rows)} rows, N={n}, Q={quota}/min ...")
        workers = 1 if args.sequential else len(rows)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(measure, row, quota, n, rep) for row in rows]
            runs.append([f.result() for f in futures])
        print(figures.table(HEADERS, [as_row(f) for f in runs[-1]]))
    title = f"Quota: Q = {quota}/min per user ({2 * quota}/min workspace), N = {n}"
    body = f"Medians of {len(runs)} run(s):\n\n" + figures.table(HEADERS, medians(runs))
    if len(runs) > 1:
        for i, run in enumerate(runs, 1):
            body += f"\n\nRun {i}:\n\n" + figures.table(HEADERS, [as_row(f) for f in run])
    figures.report(title, info, body, record=args.record)


if __name__ == "__main__":
    main()
