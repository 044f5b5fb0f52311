"""Polling benchmark: status GETs per job group for jobs of 10 s, 10 min and 1 h.

    python benchmarks/polling.py               # 3 runs, ~1-2 minutes
    python benchmarks/polling.py --quick       # one run, seconds

Two figures per job length:
* computed: the reads `sweeper.pacing.PollSchedule` makes of one group until they cover the
  job: in pages (one run-wide tick of `run.poll_interval`, a read after max(tick, 5 % of the
  group's age); every group due at a tick shares that read), and one by one (a GET per read,
  backing off by 1.5 from `run.poll_interval` to `run.poll_max_interval`): without jitter, and
  the mean / max over 1,000 seeded jittered schedules;
* measured: a real `run_sweep` (the library, in this process) against a served emulator whose
  clock runs k times faster (`--time-scale k`) with every poll setting of the sweep divided by k
  (`poll_interval`, `poll_max_interval`, `timeout`) and `max_polls_per_second` multiplied by k.
  Every duration on both sides shrinks by the same factor, so the sequence of (sleep, GET)
  steps is the same as at full scale; only the few ms each GET takes in real time grow
  relative to the sleeps (they make a poll happen later in emulated time, so this can only
  *lower* the count slightly). GETs are counted by a transport wrapper, per job group; since
  polls that come due together are batched into `GET /v4/jobLibrary` pages, which are
  counted per run too, and "status requests/group" is (GETs + listings) / groups.
Targets: one by one, <= 20 GETs per job group for a one-hour job; in pages, at most one request
a tick for the whole run, whatever the number of groups (so the reads of a one-hour job, about
80, are shared by the groups open with it: 4 groups cost about 20 requests each).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
from collections import Counter
from pathlib import Path

import figures
import httpx
from harness import HandClock, median, scratch, served_emulator, sweep_in_process, write_sweep

LENGTHS = {"10 s": 10.0, "10 min": 600.0, "1 h": 3600.0}
BASE_JOB_SECONDS = 1.5  # the emulator's created + wrangle + filewriter, one write setting
GROUP_PATH = re.compile(r"/v4/jobGroups/(\d+)/?$")  # one group's status, not its /outputs
# the job-library pages (or the older listing) that batched polls share
LISTING_PATH = re.compile(r"/v4/(jobLibrary|jobGroups)/?$")


class CountingTransport(httpx.AsyncBaseTransport):
    """Counts status GETs per job group id, and listings, on their way to the real transport."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.gets: Counter[int] = Counter()
        self.listings = 0  # GET /v4/jobLibrary pages: one request answers for every group listed
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            self.posts += 1
        match = GROUP_PATH.search(request.url.path)
        if request.method == "GET" and match:
            self.gets[int(match.group(1))] += 1
        elif request.method == "GET" and LISTING_PATH.search(request.url.path):
            self.listings += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def computed(seconds: float, initial: float, cap: float) -> tuple[int, float, int, int]:
    """Reads to see a job of ``seconds`` end: one by one (no jitter, mean jittered, max
    jittered), then in pages (the run-wide tick)."""
    from sweeper.pacing import PollSchedule, poll_delays

    def count(rng: random.Random | None, jitter: float) -> int:
        elapsed = 0.0
        for n, delay in enumerate(poll_delays(initial, cap, jitter=jitter, rng=rng), 1):
            elapsed += delay
            if elapsed >= seconds:
                return n
        raise AssertionError("unreachable")

    start = 1_800_000_000.0
    clock = HandClock(start)
    schedule = PollSchedule(initial, cap, started=start, clock=clock)
    ticks = 0
    while clock.now - start < seconds:
        clock.now += schedule.next_delay(batched=True)
        ticks += 1
    samples = [count(random.Random(seed), 0.1) for seed in range(1000)]
    return count(None, 0.0), statistics.mean(samples), max(samples), ticks


async def _measure(config_path: Path, groups: int) -> tuple[list[int], int]:
    counting = CountingTransport(httpx.AsyncHTTPTransport())
    exit_code = await sweep_in_process(config_path, counting, run_id="poll")
    if exit_code != 0:
        print(f"warning: the sweep ended with exit code {exit_code}")
    counts = list(counting.gets.values())
    return counts + [0] * (groups - len(counts)), counting.listings


def measure(seconds: float, real_seconds: float, groups: int, seed: int) -> tuple[list[int], int]:
    """(GETs per group, listings) for ``groups`` jobs of ``seconds``, in ~``real_seconds``."""
    from sweeper.config import RunSettings

    k = max(1.0, seconds / real_seconds)
    defaults = RunSettings()
    faults = f"[jobs]\nslow_factor = {seconds / BASE_JOB_SECONDS}\n"
    with (
        scratch("polling") as workdir,
        served_emulator(workdir=workdir, time_scale=k, faults=faults, seed=seed) as emulator,
    ):
        config = write_sweep(
            workdir / "poll.toml",
            name="poll",
            base_url=emulator.base_url,
            n=groups,
            rate="1000/s",
            concurrency=4,
            wait=True,
            extra_run={
                "poll_interval": defaults.poll_interval / k,
                "poll_max_interval": defaults.poll_max_interval / k,
                "max_polls_per_second": defaults.max_polls_per_second * k,
                "timeout": 3 * seconds / k + 30,
            },
        )
        return asyncio.run(_measure(config, groups))


HEADERS = (
    "job length",
    "k (time scale)",
    "computed, pages: reads a run",
    "computed, one by one: no jitter",
    "mean (max)",
    "measured GETs/group (median)",
    "listings/run (median)",
    "status requests/group (median)",
    "runs (per-group GETs + listings)",
    "target",
)


def main() -> None:
    from sweeper.config import RunSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs; medians reported")
    parser.add_argument("--groups", type=int, default=4, help="job groups per length")
    parser.add_argument("--quick", action="store_true", help="one run, 2 groups, ~2 s per job")
    parser.add_argument(
        "--record", action="store_true", help="also save the figures under results/benchmarks/"
    )
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    groups = 2 if args.quick else args.groups
    real = 2.0 if args.quick else 8.0  # real seconds per emulated job
    defaults = RunSettings()
    info = figures.machine()
    rows = []
    for label, seconds in LENGTHS.items():
        plain, mean, worst, ticks = computed(
            seconds, defaults.poll_interval, defaults.poll_max_interval
        )
        runs = [measure(seconds, real, groups, seed) for seed in range(repeat)]
        flat = [c for gets, _ in runs for c in gets]
        # A listing answers for every group it lists: its cost is shared by the groups of the run.
        per_group = [(sum(gets) + listings) / groups for gets, listings in runs]
        print(f"{label}: computed {plain} ({mean:.1f} mean), measured (GETs, listings) {runs}")
        rows.append(
            [
                label,
                max(1.0, seconds / real),
                ticks,
                plain,
                f"{mean:.1f} ({worst})",
                median(flat),
                median([listings for _, listings in runs]),
                f"{median(per_group):.3g}",
                "; ".join(f"{','.join(str(c) for c in g)} + {n}" for g, n in runs),
                "one by one <= 20" if seconds == 3600.0 else "-",
            ]
        )
    title = (
        f"Polling: status requests per job group ({groups} a length; poll_interval "
        f"{defaults.poll_interval:g} s, poll_max_interval {defaults.poll_max_interval:g} s)"
    )
    figures.report(title, info, figures.table(HEADERS, rows), record=args.record)


if __name__ == "__main__":
    main()
