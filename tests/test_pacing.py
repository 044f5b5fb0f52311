"""Pacing: ``Pacer`` under a fake clock (window quota, even spacing, full rate), the poll schedule.

Time is simulated: the pacer's clock and sleep are a discrete-event fake, so nothing here waits
for, or asserts on, the wall clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Awaitable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.pacing import POLL_AGE_FRACTION, Pacer, PollSchedule, aligned_delay, poll_delays

MS = 0.001  # the pacer's bucket counts whole milliseconds


class FakeTime:
    """Discrete-event fake clock: ``sleep`` parks a task until ``run`` advances time to it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.ticks = 0  # progress marker: bumped whenever a task reads the clock or sleeps

    def clock(self) -> float:
        self.ticks += 1
        return self.now

    async def sleep(self, delay: float) -> None:
        self.ticks += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, delay), next(self._seq), fut))
        await fut

    async def run(self, *coros: Awaitable[Any]) -> list[Any]:
        tasks = [asyncio.ensure_future(c) for c in coros]
        while True:
            quiet = 0
            while quiet < 10:  # let every runnable task reach its next sleep
                before = (self.ticks, sum(t.done() for t in tasks))
                await asyncio.sleep(0)
                quiet = quiet + 1 if before == (self.ticks, sum(t.done() for t in tasks)) else 0
            if all(t.done() for t in tasks):
                return [t.result() for t in tasks]
            if not self._timers:
                raise AssertionError("deadlock: tasks waiting with no timer pending")
            when, _, fut = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            fut.set_result(None)


class SteppingClock:
    """For one caller at a time: the sleep simply advances the clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0  # a zero sleep would spin
        self.sleeps += 1
        self.now += seconds


def _paced(
    count: int, per: float, arrivals: list[float], margin: float = 0.0
) -> list[tuple[float, float]]:
    """(arrival, grant) for concurrent callers arriving at ``arrivals``, sorted by grant."""
    ft = FakeTime()
    pacer = Pacer(count, per, margin=margin, clock=ft.clock, sleep=ft.sleep)
    out: list[tuple[float, float]] = []

    async def one(at: float) -> None:
        await ft.sleep(at)
        await pacer.acquire()
        out.append((at, ft.now))

    async def go() -> None:
        await ft.run(*(one(a) for a in arrivals))

    asyncio.run(go())
    return sorted(out, key=lambda pair: pair[1])


def _sequential(count: int, per: float, n: int, margin: float = 0.0) -> list[float]:
    """Grant times of ``n`` back-to-back acquires by one caller."""
    clock = SteppingClock()
    pacer = Pacer(count, per, margin=margin, clock=clock, sleep=clock.sleep)
    grants: list[float] = []

    async def go() -> None:
        for _ in range(n):
            await pacer.acquire()
            grants.append(clock.now)

    asyncio.run(go())
    return grants


def _assert_window(grants: list[float], count: int, window: float) -> None:
    """No more than ``count`` grants in any half-open window of ``window`` seconds."""
    for i in range(len(grants) - count):
        assert grants[i + count] - grants[i] >= window - 1e-9, (i, grants[i], grants[i + count])


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=6),
    per_seconds=st.sampled_from([0.5, 1.0, 60.0]),
    margin=st.sampled_from([0.0, 0.01]),
    arrivals=st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), max_size=20),
)
def test_pacer_window_and_spacing_property(
    count: int, per_seconds: float, margin: float, arrivals: list[float]
) -> None:
    pairs = _paced(count, per_seconds, arrivals, margin)
    grants = [g for _, g in pairs]
    assert len(grants) == len(arrivals)  # everyone is served
    assert all(g >= at for at, g in pairs)  # nobody before they asked
    _assert_window(grants, count, per_seconds + margin)
    # Even spacing: consecutive grants at least per/count apart, to within the bucket's whole
    # milliseconds (its spacing and its clock are both rounded down to one).
    for a, b in itertools.pairwise(grants):
        assert b - a >= per_seconds / count - 2 * MS


def test_pacer_spreads_a_burst_over_the_window() -> None:
    """480/min: a burst of callers is spaced ~1/8 s apart, not all let through at once."""
    grants = [g for _, g in _paced(480, 60.0, [0.0] * 40, margin=0.01)]
    assert grants[0] == 0.0
    assert 1 <= sum(g < 1.0 for g in grants) <= 8
    for a, b in itertools.pairwise(grants):
        assert b - a >= 60.0 / 480
    assert grants[-1] <= 39 * 0.13  # and no slower than the spacing either


def test_pacer_saturated_achieves_the_rate() -> None:
    grants = [g for _, g in _paced(25, 60.0, [0.0] * 100, margin=0.01)]
    rate = (len(grants) - 1) / (grants[-1] - grants[0])
    assert rate <= 25 / 60.0
    assert rate >= 0.97 * 25 / 60.0


@pytest.mark.parametrize(
    ("count", "per", "margin"),
    [
        (1, 1.0, 0.0),
        (7, 1.0, 0.01),  # window does not divide evenly
        (480, 60.0, 0.01),
        (5, 0.2, 0.0),
        (25, 1.0, 0.01),
        (3000, 1.0, 0.0),  # several grants per millisecond
        (4000, 2.5, 0.01),
    ],
)
def test_pacer_sequential_caller_keeps_the_quota(count: int, per: float, margin: float) -> None:
    grants = _sequential(count, per, 3 * count + 1, margin)
    _assert_window(grants, count, per + margin)
    achieved = (len(grants) - 1) / (grants[-1] - grants[0])
    assert achieved <= count / per


@pytest.mark.parametrize(
    ("count", "per", "margin"),
    [
        (1, 1.0, 0.0),
        (7, 1.0, 0.01),
        (480, 60.0, 0.01),
        (5, 0.2, 0.0),
        (25, 1.0, 0.01),
        (100, 1.0, 0.01),
        (200, 1.0, 0.01),
        (3000, 1.0, 0.0),
    ],
)
def test_pacer_saturated_sequential_caller_gets_the_full_rate(
    count: int, per: float, margin: float
) -> None:
    """The rate achieved is the quota's (count per per + margin), within 3 %."""
    n = 3 * count + 1
    grants = _sequential(count, per, n, margin)
    achieved = (n - 1) / (grants[-1] - grants[0])
    assert achieved >= 0.97 * count / (per + margin)


def test_pacer_first_grant_is_immediate_and_idle_time_is_not_saved_up() -> None:
    clock = SteppingClock()
    pacer = Pacer(4, 1.0, margin=0.0, clock=clock, sleep=clock.sleep)

    async def go() -> list[float]:
        grants = []
        await pacer.acquire()
        grants.append(clock.now)
        clock.now = 100.0  # a long idle spell: no burst of 4 afterwards, still one per 1/4 s
        for _ in range(3):
            await pacer.acquire()
            grants.append(clock.now)
        return grants

    grants = asyncio.run(go())
    assert grants[:2] == [0.0, 100.0]
    for a, b in itertools.pairwise(grants[1:]):
        assert b - a >= 0.25 - MS


@pytest.mark.parametrize(
    ("count", "per", "margin"), [(0, 1.0, 0.0), (1, 0.0, 0.0), (1, -1.0, 0.0), (1, 1.0, -0.1)]
)
def test_pacer_rejects_bad_arguments(count: int, per: float, margin: float) -> None:
    clock = SteppingClock()
    with pytest.raises(ValueError):
        Pacer(count, per, margin=margin, sleep=clock.sleep, clock=clock)


@pytest.mark.parametrize(("count", "per"), [(3, 0.0005), (1, 0.0001), (2, 0.002), (7, 1.0)])
def test_pacer_accepts_tiny_and_uneven_windows(count: int, per: float) -> None:
    grants = _sequential(count, per, 2 * count + 1)
    _assert_window(grants, count, per)


# ---------------------------------------------------------------- poll schedule


@pytest.mark.parametrize("seed", range(50))
def test_poll_schedule_one_hour_job_takes_at_most_20_polls(seed: int) -> None:
    polls, elapsed = 0, 0.0
    for delay in poll_delays(2.0, 600.0, rng=random.Random(seed)):
        assert 0 < delay <= 600.0
        polls += 1
        elapsed += delay
        if elapsed >= 3600:
            break
    assert polls <= 20


def test_poll_schedule_grows_geometrically_without_jitter() -> None:
    delays = list(itertools.islice(poll_delays(2.0, 10.0, jitter=0.0), 6))
    assert delays == pytest.approx([2.0, 3.0, 4.5, 6.75, 10.0, 10.0])


def test_poll_schedule_jitter_stays_within_bounds_and_cap() -> None:
    rng = random.Random(7)
    delays = list(itertools.islice(poll_delays(2.0, 10.0, jitter=0.1, rng=rng), 300))
    bases = [min(10.0, 2.0 * 1.5**n) for n in range(300)]
    for delay, base in zip(delays, bases, strict=True):
        assert base * 0.9 - 1e-9 <= delay <= min(10.0, base * 1.1) + 1e-9
    assert len(set(delays[:5])) == 5  # jitter actually varies the delays


def test_poll_schedule_runs_long_without_overflow() -> None:
    delays = list(itertools.islice(poll_delays(2.0, 600.0, jitter=0.0), 1000))
    assert delays[-1] == 600.0 and all(math.isfinite(d) for d in delays)


@settings(max_examples=200, deadline=None)
@given(
    delay=st.floats(min_value=0.01, max_value=10_000),
    now=st.floats(min_value=0, max_value=1_000_000),
)
def test_aligned_delay_lands_on_the_shared_grid(delay: float, now: float) -> None:
    aligned = aligned_delay(delay, now)
    grid = delay / 4
    assert delay - 1e-6 <= aligned <= delay * 1.25 + 1e-6
    steps = (now + aligned) / grid
    assert steps == pytest.approx(round(steps), abs=1e-6, rel=1e-9)


def test_aligned_delay_groups_submitted_apart_poll_together() -> None:
    a = 1001.0 + aligned_delay(40.0, 1001.0)
    b = 1003.0 + aligned_delay(40.0, 1003.0)
    assert a == pytest.approx(1050.0) and b == pytest.approx(1050.0)
    assert aligned_delay(0.0, 5.0) == 0.0
    assert aligned_delay(-1.0, 5.0) == 0.0


class StepClock:
    """A wall clock a test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _reads_until(schedule: PollSchedule, clock: StepClock, end: float) -> list[float]:
    """The times a group on ``schedule`` is read, up to the first read at or after ``end``."""
    reads: list[float] = []
    while not reads or reads[-1] < end:
        clock.now += schedule.next_delay(batched=True)
        reads.append(clock.now)
    return reads


@settings(max_examples=300, deadline=None)
@given(
    start=st.floats(min_value=1.7e9, max_value=1.8e9),
    length=st.floats(min_value=0.5, max_value=6 * 3600.0),
    interval=st.sampled_from([0.25, 2.0, 10.0, 30.0]),
)
def test_a_batched_schedule_notices_an_end_within_a_tick_or_5_percent_of_the_run_time(
    start: float, length: float, interval: float
) -> None:
    cap = 600.0
    clock = StepClock(start)
    schedule = PollSchedule(interval, cap, started=start, clock=clock)
    reads = _reads_until(schedule, clock, start + length)
    late = reads[-1] - (start + length)
    assert late <= max(interval, min(cap, POLL_AGE_FRACTION * length)) + 1e-6
    # Every read lands on a tick of the one run-wide clock, and no tick is read twice.
    ticks = [round(t / interval) for t in reads]
    assert all(
        t == pytest.approx(k * interval, abs=1e-6) for t, k in zip(reads, ticks, strict=True)
    )
    assert len(set(ticks)) == len(ticks)


def test_groups_submitted_apart_read_on_the_same_ticks_at_most_one_round_a_tick() -> None:
    interval = 10.0
    reads: set[float] = set()
    for k in range(100):  # 100 groups submitted 1.7 s apart, each running 1 h
        start = 1_800_000_000.0 + 1.7 * k
        clock = StepClock(start)
        schedule = PollSchedule(interval, 600.0, started=start, clock=clock)
        reads.update(_reads_until(schedule, clock, start + 3600.0))
    first, last = min(reads), max(reads)
    # All groups' reads fall on at most one instant per tick of the run.
    assert len(reads) <= (last - first) / interval + 1
    assert all(t % interval == 0 for t in reads)


def test_a_batched_schedule_reads_young_groups_each_tick_and_old_ones_by_5_percent_of_age() -> None:
    clock = StepClock(1_800_000_000.0)
    schedule = PollSchedule(10.0, 600.0, started=clock.now, clock=clock)
    reads = _reads_until(schedule, clock, clock.now + 3 * 3600.0)
    gaps = [b - a for a, b in itertools.pairwise(reads)]
    assert gaps[:10] == [10.0] * 10  # for its first 200 s a group is read every tick
    assert max(gaps) <= 600.0  # and never less often than run.poll_max_interval
    assert 500.0 <= gaps[-1] <= 600.0  # about 5 % of 3 h, rounded down to a tick
    assert len(reads) < 150  # about 20 + ln(18) / ln(1.05) + (3 h - 1 h 40) / 10 min


def test_a_read_that_wakes_a_hair_before_its_tick_does_not_read_that_tick_again() -> None:
    clock = StepClock(1_800_000_003.0)
    schedule = PollSchedule(10.0, 600.0, started=clock.now, clock=clock)
    assert schedule.next_delay(batched=True) == pytest.approx(7.0)  # the next tick, 10 s at most
    clock.now = 1_800_000_010.0 - 1e-4  # the sleep ended just before the tick
    assert schedule.next_delay(batched=True) == pytest.approx(10.0 + 1e-4)


def test_one_by_one_the_schedule_backs_off_and_returns_to_ticks_when_batched_again() -> None:
    clock = StepClock(1_800_000_000.0)
    schedule = PollSchedule(2.0, 600.0, started=clock.now, clock=clock, rng=random.Random(1))
    delays = []
    for _ in range(8):
        delays.append(schedule.next_delay(batched=False))
        clock.now += delays[-1]
    assert delays[-1] > 20.0  # 2 s x 1.5^7, jittered and aligned: backing off
    age = clock.now - schedule.started
    batched = schedule.next_delay(batched=True)  # batched again: back on the ticks
    assert batched <= max(2.0, POLL_AGE_FRACTION * age) + 1e-9
    tick = (clock.now + batched) / 2.0
    assert tick == pytest.approx(round(tick), abs=1e-6)


@pytest.mark.parametrize(("count", "per", "burst"), [(25, 60.0, 3), (480, 60.0, 3), (10, 1.0, 4)])
def test_pacer_with_a_burst_lets_that_many_go_at_once_then_spaces_the_rest(
    count: int, per: float, burst: int
) -> None:
    clock = SteppingClock()
    pacer = Pacer(count, per, margin=0.0, burst=burst, clock=clock, sleep=clock.sleep)

    async def go() -> list[float]:
        grants = []
        for _ in range(3 * count):
            await pacer.acquire()
            grants.append(clock.now)
        return grants

    grants = asyncio.run(go())
    assert grants[:burst] == [0.0] * burst and grants[burst] > 0.0
    # Never more than `burst` in any span of burst * per / count, nor `count` in any window.
    for i in range(len(grants) - burst):
        assert grants[i + burst] - grants[i] >= burst * per / count - MS
    _assert_window(grants, count, per)
