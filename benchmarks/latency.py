"""Latency benchmark: no quota, 100 ms per POST; throughput against Little's law, c = 1..32.

    python benchmarks/latency.py               # c = 1, 2, 4, 8, 16, 32; 3 runs; ~5 minutes
    python benchmarks/latency.py --quick       # c = 1, 8, 32, one short run

By Little's law a client holding c requests in flight against a server that answers in W
seconds cannot exceed c / W requests per second; the target is >= 0.8 of that bound up to
c = 16. Rows: sweeper itself (`sweeper run`, rate far above the bound, `--no-wait`: the whole
submission path, ledger fsyncs included, over httpx's stock transport), a bare single
httpx.AsyncClient at the same c for reference, and the two comparison clients as they are: the
Airflow-style loop (sequential, so c = 1 whatever the setting) and the naive one (everything at
once, so c = httpx's default pool of 100 connections). Throughput is measured by the server's
oracle, first to last creation, so process start-up is not counted; CPU per combination is.

Two servers: the emulator (uvicorn + Starlette + SQLite, a few ms of CPU per POST on the cores
the client uses too) and benchmarks/stub_server.py (a bare asyncio server answering after the
same 100 ms), which leaves the client as the bound.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import figures
from clients import airflow_style, bare_async, naive_async
from harness import (
    Emulator,
    creations,
    median,
    run_sweeper,
    scratch,
    served_emulator,
    served_stub,
    write_sweep,
)

LATENCY = 0.1  # seconds the emulator waits before answering each POST
FAULTS = f"[latency]\npost = [{LATENCY}, {LATENCY}]\n"
NAIVE_POOL = 100  # httpx's default max_connections: the naive client's real concurrency


@dataclass(frozen=True)
class Point:
    client: str
    concurrency: int
    n: int
    throughput: float  # creations per second over the creation span
    failures: int
    cpu_ms: float  # client CPU per combination (sweeper: the whole process, start-up included)


def sweeper_point(emulator: Emulator, workdir: Path, c: int, n: int, tag: str) -> Point:
    emulator.reset()
    config = write_sweep(
        workdir / f"lat-{tag}.toml",
        name=f"lat-{tag}",
        base_url=emulator.base_url,
        n=n,
        rate="100000/s",
        concurrency=c,
    )
    done = run_sweeper(config, timeout=300.0, run_id=tag)
    made = creations(emulator.job_groups(), n)
    if done.exit_code not in (0, 3):  # 3: --no-wait leaves the job groups running
        print(f"sweeper c={c} exited {done.exit_code}: {done.stderr_tail}")
    cpu = done.cpu_s / n * 1000
    return Point("sweeper", c, n, made.rate_per_s, made.lost + made.duplicates, cpu)


def bare_point(emulator: Emulator, c: int, n: int) -> Point:
    emulator.reset()
    done = bare_async(emulator.base_url, n, c)
    made = creations(emulator.job_groups(), n)
    failures = done.gave_up + made.lost
    return Point("httpx.AsyncClient x1", c, n, made.rate_per_s, failures, done.cpu_s / n * 1000)


def airflow_point(emulator: Emulator, n: int) -> Point:
    emulator.reset()
    done = airflow_style(emulator.base_url, n)
    made = creations(emulator.job_groups(), n)
    failures = done.gave_up + made.lost + made.duplicates
    return Point("Airflow-style", 1, n, made.rate_per_s, failures, done.cpu_s / n * 1000)


def naive_point(emulator: Emulator, n: int) -> Point:
    emulator.reset()
    done = naive_async(emulator.base_url, n)
    made = creations(emulator.job_groups(), n)
    failures = done.gave_up + made.lost + made.duplicates
    return Point("naive asyncio", NAIVE_POOL, n, made.rate_per_s, failures, done.cpu_s / n * 1000)


HEADERS = (
    "server",
    "client",
    "c",
    "N",
    "bound c/W req/s",
    "req/s (median)",
    "ratio",
    "runs",
    "failures",
    "CPU ms/comb.",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per point; medians reported")
    parser.add_argument("--quick", action="store_true", help="smoke run of seconds")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare httpx reference")
    parser.add_argument(
        "--server", choices=("emulator", "stub", "both"), default="both", help="which server"
    )
    parser.add_argument(
        "--record", action="store_true", help="also save the figures under results/benchmarks/"
    )
    args = parser.parse_args()
    servers = ["emulator", "stub"] if args.server == "both" else [args.server]
    levels = [1, 8, 32] if args.quick else [1, 2, 4, 8, 16, 32]
    repeat = 1 if args.quick else args.repeat
    seconds = 1.0 if args.quick else 3.0  # of steady state per point, at the bound
    info = figures.machine()
    points: dict[tuple[str, str, int], list[Point]] = {}
    for server in servers:
        with scratch("latency") as workdir:
            served = (
                served_emulator(workdir=workdir, faults=FAULTS)
                if server == "emulator"
                else served_stub(workdir=workdir, latency=LATENCY)
            )
            with served as emu:
                for rep in range(repeat):
                    got: list[Point] = []
                    for c in levels:
                        n = max(30, round(c / LATENCY * seconds))
                        got.append(sweeper_point(emu, workdir, c, n, f"r{rep}c{c}"))
                        if not args.no_bare:
                            got.append(bare_point(emu, c, n))
                    n_seq = max(30, round(seconds / LATENCY))
                    got += [airflow_point(emu, n_seq), naive_point(emu, 10 * n_seq)]
                    for p in got:
                        points.setdefault((server, p.client, p.concurrency), []).append(p)
                        print(
                            f"{server:8} run {rep + 1} {p.client:22} c={p.concurrency:<3} "
                            f"{p.throughput:7.1f} req/s {p.cpu_ms:5.2f} ms CPU/comb."
                        )
    rows = []
    for (server, client, c), ps in points.items():
        bound = c / LATENCY
        tput = median([p.throughput for p in ps])
        runs = ", ".join(f"{p.throughput:.1f}" for p in ps)
        failures = sum(p.failures for p in ps)
        cpu = median([p.cpu_ms for p in ps])
        rows.append([server, client, c, ps[0].n, bound, tput, tput / bound, runs, failures, cpu])
    order = ["sweeper", "httpx.AsyncClient x1", "Airflow-style", "naive asyncio"]
    rows.sort(key=lambda r: (str(r[0]), order.index(str(r[1])), int(str(r[2]))))
    title = f"Latency: no quota, {LATENCY * 1000:.0f} ms per POST, {repeat} run(s) per point"
    figures.report(title, info, figures.table(HEADERS, rows), record=args.record)


if __name__ == "__main__":
    main()
