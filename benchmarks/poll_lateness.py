"""Polling side by side: 100 job groups open at once, how many requests, how late each end is seen.

    python benchmarks/poll_lateness.py             # 3 schedules, ~5 minutes
    python benchmarks/poll_lateness.py --quick     # 20 groups, k = 240, ~1 minute

One sweep of ``--groups`` combinations (default 100), all submitted at once, whose jobs last from
10 s to 1 h (log-spaced: 10 s, 10.6 s, ... 1 h; the emulator's job duration per ``Item`` value
is set by a serve wrapper in this file), run on an emulator whose clock runs k times faster
(``--time-scale``, default 60: the hour-long job takes a minute) with every poll setting divided
by k and ``max_polls_per_second`` multiplied by k, as in ``polling.py`` (and the poller's 50 ms
batching window divided by k: unscaled it would add 3 s of emulated delay per poll at k = 60).
Three schedules, all with sweeper's defaults (``run.poll_interval`` 10 s, ``poll_max_interval``
10 min):

* ``tick``     : sweeper as it is with the job library: every group is read after max(10 s, 5 %
  of its age), rounded down to a tick of one run-wide 10 s clock, so every read of the run lands
  on the same ticks and shares their ``GET /v4/jobLibrary`` page;
* ``backoff``  : the same pages, but each group's reads backing off from 10 s by 1.5 up to
  10 min on a grid of a quarter of the delay (``PollSchedule`` told it is not batched);
* ``per-group``: the job library turned off (``StatusPoller.batching`` False): the backoff, one
  ``GET /v4/jobGroups/{id}`` per read: what sweeper does on editions without a listing, and what
  a naive client does.

Per schedule: status requests per group ((GETs + listing pages) / groups), listing pages and all
status requests per 10 s of the run (mean over the run, and the busiest 10 s of the clock's
grid, the ticks sweeper reads on), and how late each group's end was noticed (the ``finished``
row's time minus the group's ``updatedAt``, at full scale), against the target: within
max(10 s, 5 % of the job's run time).
The last three columns are the schedule alone, computed without any server (20 jittered
schedules and submission seconds per group; "within" counts groups whose worst case meets the
target): the measured figures add what the host and the emulator take, multiplied by k.
Timings are wall-clock on a loaded 2-core machine: ~10 ms of real jitter is ~0.6 s at k = 60.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import random
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import figures
import httpx
from harness import HandClock, _served, scratch, sweep_in_process, write_sweep

from sweeper.config import RunSettings

BASE_JOB_SECONDS = 1.5  # the emulator's created + wrangle + filewriter, one write setting
SHORTEST, LONGEST = 10.0, 3600.0
TICK = 10.0  # the target's floor
POLL_INTERVAL, POLL_MAX = RunSettings().poll_interval, RunSettings().poll_max_interval
SCHEDULES = ("tick", "backoff", "per-group")


def durations(groups: int) -> list[float]:
    """Full-scale job lengths, log-spaced from 10 s to 1 h: ``Item = i`` runs durations[i-1]."""
    if groups == 1:
        return [LONGEST]
    ratio = LONGEST / SHORTEST
    return [SHORTEST * ratio ** (i / (groups - 1)) for i in range(groups)]


def allowance(seconds: float) -> float:
    """The target: an end noticed within 10 s or 5 % of the run time, whichever is larger."""
    return max(TICK, 0.05 * seconds)


def serve(argv: list[str]) -> None:
    """``--serve GROUPS <emulator serve options>``: the emulator, with per-Item job lengths."""
    from sweeper.cli import main as sweeper_main
    from sweeper.emulator.faults import FaultInjector

    lengths = durations(int(argv[0]))

    def slow_factor(self: FaultInjector, params: Any) -> float:
        item = params.get("Item")
        if item is None or not str(item).isdigit():
            return 1.0
        return lengths[int(item) - 1] / BASE_JOB_SECONDS

    FaultInjector.slow_factor = slow_factor  # type: ignore[method-assign]
    sys.argv = ["sweeper", "emulator", "serve", *argv[1:]]
    sweeper_main()


class TimedTransport(httpx.AsyncBaseTransport):
    """Counts status GETs and listing pages on their way to the real transport, with times."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.gets: list[float] = []
        self.listings: list[float] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.rstrip("/")
        if request.method == "GET":
            tail = path.rsplit("/v4/", 1)[-1]
            if tail in ("jobLibrary", "jobGroups"):
                self.listings.append(time.time())
            elif tail.startswith("jobGroups/") and tail.count("/") == 1:
                self.gets.append(time.time())
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _run(config_path: Path, schedule: str, k: float) -> TimedTransport:
    from sweeper.pacing import PollSchedule
    from sweeper.polling import StatusPoller

    original_init = StatusPoller.__init__
    original_next = PollSchedule.next_delay

    def init(self: StatusPoller, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.window /= k  # the 50 ms batching window, time-scaled like every other setting
        self.batching = schedule != "per-group"

    def backoff(self: PollSchedule, *, batched: bool) -> float:
        return original_next(self, batched=False)  # pages, but each group backing off

    StatusPoller.__init__ = init  # type: ignore[method-assign]
    if schedule == "backoff":
        PollSchedule.next_delay = backoff  # type: ignore[method-assign]
    timed = TimedTransport(httpx.AsyncHTTPTransport())
    try:
        exit_code = await sweep_in_process(config_path, timed, run_id="late")
    finally:
        StatusPoller.__init__ = original_init  # type: ignore[method-assign]
        PollSchedule.next_delay = original_next  # type: ignore[method-assign]
    if exit_code != 0:
        print(f"warning: {schedule}: the sweep ended with exit code {exit_code}")
    return timed


def computed(schedule: str, groups: int, seeds: int = 20) -> tuple[float, float, int]:
    """The schedule alone, in arithmetic (no server, no host delays): how late each group's end
    is first seen, over ``seeds`` jittered schedules and submission phases per group.
    Returns (median, max, groups whose worst case is within the target)."""
    from sweeper.pacing import PollSchedule

    late: list[float] = []
    met = 0
    for length in durations(groups):
        worst = 0.0
        for seed in range(seeds):
            rng = random.Random(seed)
            start = 1_800_000_000.0 + rng.uniform(0, 60)  # any second of the minute
            clock = HandClock(start)
            poll = PollSchedule(POLL_INTERVAL, POLL_MAX, started=start, clock=clock, rng=rng)
            while clock.now - start < length:
                clock.now += poll.next_delay(batched=schedule == "tick")
            late.append(clock.now - start - length)
            worst = max(worst, late[-1])
        met += worst <= allowance(length)
    return statistics.median(late), max(late), met


def _epoch(text: str) -> float:
    """Seconds since the epoch from an ISO-8601 time (the ledger) or a number (the oracle)."""
    try:
        return float(text)
    except ValueError:
        pass
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def busiest(times: list[float], window: float) -> int:
    """The most events in one window of the clock's ``window``-second grid (the run's ticks)."""
    return max(collections.Counter(math.floor(t / window) for t in times).values(), default=0)


def measure(schedule: str, groups: int, k: float) -> dict[str, Any]:
    from sweeper.ledger import read_ledger

    lengths = durations(groups)
    with scratch("lateness") as workdir:
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--serve",
            str(groups),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--quota-user",
            "0",
            "--quota-workspace",
            "0",
            "--time-scale",
            str(k),
            "--output-root",
            str(workdir / "emulator-output"),
        ]
        with _served(cmd, workdir) as emulator:
            config = write_sweep(
                workdir / "late.toml",
                name="late",
                base_url=emulator.base_url,
                n=groups,
                rate="1000/s",
                concurrency=8,
                wait=True,
                extra_run={
                    "poll_interval": POLL_INTERVAL / k,
                    "poll_max_interval": POLL_MAX / k,
                    "max_polls_per_second": 5.0 * k,
                    "timeout": 3 * LONGEST / k + 60,
                    "settle": 0,
                },
            )
            timed = asyncio.run(_run(config, schedule, k))
            oracle: list[dict[str, Any]] = emulator.job_groups()
            created = {int(g["id"]): _epoch(str(g["createdAt"])) for g in oracle}
        rows = read_ledger(workdir / "late.csv")
    late: list[tuple[float, float]] = []  # (full-scale lateness, full-scale job length)
    for row in rows:
        gid = row.job_group_id
        if row.event.value == "finished" and gid in created and row.duration_s is not None:
            item = int(row.params["Item"])
            # The group ended at createdAt + duration_s (its updatedAt, on the emulator's clock).
            seen = k * (_epoch(row.ts) - created[gid] - row.duration_s)
            late.append((max(0.0, seen), lengths[item - 1]))
    stamps = timed.listings + timed.gets
    span = (max(stamps) - min(stamps)) * k if stamps else 0.0
    per10 = span / TICK if span else 1.0
    lateness = [x for x, _ in late]
    ratios = [x / allowance(d) for x, d in late]
    return {
        "schedule": schedule,
        "noticed": len(late),
        "requests/group": (len(timed.gets) + len(timed.listings)) / groups,
        "listings/10s": (len(timed.listings) / per10, busiest(timed.listings, TICK / k)),
        "requests/10s": (len(stamps) / per10, busiest(stamps, TICK / k)),
        "late median": statistics.median(lateness) if lateness else math.nan,
        "late max": max(lateness, default=math.nan),
        "met": sum(r <= 1.0 for r in ratios),
        "worst ratio": max(ratios, default=math.nan),
        "worst": max(late, key=lambda p: p[0] / allowance(p[1]), default=(math.nan, math.nan)),
    }


HEADERS = (
    "schedule",
    "status requests/group",
    "listing pages per 10 s: mean (busiest)",
    "all status requests per 10 s: mean (busiest)",
    "end noticed late: median",
    "max",
    "within max(10 s, 5 %)",
    "worst vs allowance",
    "the schedule alone: late median",
    "max",
    "within",
)


def _clock(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", type=int, default=100, help="job groups, 10 s to 1 h")
    parser.add_argument("--time-scale", type=float, default=60.0, help="k: emulated/real time")
    parser.add_argument("--schedule", choices=SCHEDULES, action="append", help="default: all")
    parser.add_argument("--quick", action="store_true", help="20 groups at k = 240")
    parser.add_argument(
        "--record", action="store_true", help="also save the figures under results/benchmarks/"
    )
    args = parser.parse_args()
    groups, k = (20, 240.0) if args.quick else (args.groups, args.time_scale)
    info = figures.machine()
    rows = []
    for schedule in args.schedule or SCHEDULES:
        plain = computed(schedule, groups)
        m = measure(schedule, groups, k)
        worst_late, worst_len = m["worst"]
        print(
            f"{schedule}: {m['noticed']}/{groups} ends noticed; worst {worst_late:.0f} s late "
            f"for a {worst_len:.0f} s job (allowance {allowance(worst_len):.0f} s)"
        )
        rows.append(
            [
                schedule,
                f"{m['requests/group']:.1f}",
                f"{m['listings/10s'][0]:.2f} ({m['listings/10s'][1]})",
                f"{m['requests/10s'][0]:.2f} ({m['requests/10s'][1]})",
                _clock(m["late median"]),
                _clock(m["late max"]),
                f"{m['met']}/{groups}",
                f"{m['worst ratio']:.1f} x",
                _clock(plain[0]),
                _clock(plain[1]),
                f"{plain[2]}/{groups}",
            ]
        )
    title = (
        f"Polling side by side: {groups} job groups of 10 s to 1 h open at once "
        f"(emulator at k = {k:g}; target: each end noticed within max(10 s, 5 % of run time))"
    )
    figures.report(title, info, figures.table(HEADERS, rows), record=args.record)


if __name__ == "__main__":
    main()
