"""Shared quota: 4 shard processes against one emulator, with and without a shared rate store.

    python benchmarks/shared_quota.py          # Q = 300/min (30/min scaled x10), N = 750, ~9 min
    python benchmarks/shared_quota.py --quick  # N = 60, under a minute; the quota barely binds

Rows, one after the other, each with its own emulator enforcing Q per user and 2Q per workspace
(one token, so one user): 4 shards sharing a SQLite store, 4 shards sharing a PostgreSQL store
(when the postgresql binaries and psycopg are installed), 4 shards without a store (each paced
at Q on its own), and the Airflow-style client. Figures come from the emulator's oracle.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import figures
from clients import airflow_style
from harness import bench_env, creations, scratch, served_emulator, write_sweep

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.pg_support import postgres_bin, postgres_server

SHARDS = 4
SWEEPER_RUN = (sys.executable, "-m", "sweeper", "run", "-q")


@dataclass(frozen=True)
class Figures:
    client: str
    wall_s: float
    rate_q: float  # created per minute over the submission span / Q
    served_429: int
    created: int
    duplicates: int
    lost: int
    exits: str


def run_shards(url: str, workdir: Path, n: int, quota: int, store: str | None) -> tuple[float, str]:
    """4 ``sweeper run --shard K/4`` processes at once; (wall seconds, their exit codes)."""
    extra: dict[str, object] = {"rate_store": store} if store else {}
    config = write_sweep(
        workdir / "sweep.toml",
        name="shared",
        base_url=url,
        n=n,
        rate=f"{quota}/min",
        concurrency=4,
        extra_run=extra,
    )
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                *SWEEPER_RUN,
                str(config),
                "--run-id",
                "bench",
                "--shard",
                f"{k}/{SHARDS}",
                "--no-wait",
            ],
            cwd=workdir,
            env=bench_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for k in range(SHARDS)
    ]
    codes = []
    for proc in procs:
        _, err = proc.communicate(timeout=1800)
        if proc.returncode not in (0, 3):
            print(f"shard exited {proc.returncode}: {err.decode()[-600:]}")
        codes.append(str(proc.returncode))
    return time.perf_counter() - started, "/".join(codes)


def measure(
    label: str, quota: int, n: int, runner: Callable[[str, Path], tuple[float, str]]
) -> Figures:
    with (
        scratch("shared") as workdir,
        served_emulator(workdir=workdir, quota_user=quota, quota_workspace=2 * quota) as emulator,
    ):
        wall, exits = runner(emulator.base_url, workdir)
        stats = emulator.stats()
        made = creations(emulator.job_groups(), n)
    return Figures(
        label,
        wall,
        made.rate_per_s * 60 / quota,
        int(stats["served_429"]),
        made.created,
        made.duplicates,
        made.lost,
        exits,
    )


@contextmanager
def maybe_postgres() -> Iterator[str | None]:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        yield None
        return
    if postgres_bin() is None:
        yield None
        return
    with postgres_server() as url:
        yield url


HEADERS = ("client", "wall s", "rate/Q (span)", "429s", "created", "duplicates", "lost", "exits")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quota", type=int, default=300, help="Q: POSTs per user per minute")
    parser.add_argument(
        "-n", type=int, default=750, help="combinations per row (above 2Q, so the quota binds)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: N=60")
    parser.add_argument(
        "--record", action="store_true", help="also save the figures under results/benchmarks/"
    )
    args = parser.parse_args()
    n = 60 if args.quick else args.n
    quota = args.quota
    info = figures.machine()
    rows: list[Figures] = []

    def shards(store: Callable[[Path], str | None]) -> Callable[[str, Path], tuple[float, str]]:
        return lambda url, workdir: run_shards(url, workdir, n, quota, store(workdir))

    def airflow(url: str, workdir: Path) -> tuple[float, str]:
        done = airflow_style(url, n)
        return done.wall_s, "0" if done.gave_up == 0 else "3"

    rows.append(
        measure(
            "4 shards, shared SQLite store",
            quota,
            n,
            shards(lambda w: f"sqlite:///{(w / 'rate.sqlite').as_posix()}"),
        )
    )
    print(figures.table(HEADERS, [as_row(rows[-1])]))
    pg: AbstractContextManager[str | None] = maybe_postgres()
    with pg as pg_url:
        if pg_url is not None:
            rows.append(
                measure("4 shards, shared Postgres store", quota, n, shards(lambda w: pg_url))
            )
        else:
            print("PostgreSQL row skipped: no postgresql binaries or psycopg")
    rows.append(measure("4 shards, no store (independent)", quota, n, shards(lambda w: None)))
    rows.append(measure("Airflow-style client", quota, n, airflow))
    title = f"Shared quota: 4 shards, Q = {quota}/min per user ({2 * quota}/min workspace), N = {n}"
    body = figures.table(HEADERS, [as_row(f) for f in rows])
    figures.report(title, info, body, record=args.record)


def as_row(f: Figures) -> list[object]:
    return [f.client, f.wall_s, f.rate_q, f.served_429, f.created, f.duplicates, f.lost, f.exits]


if __name__ == "__main__":
    main()
