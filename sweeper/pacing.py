"""Pacing: how fast sweeper asks, apart from what it does when an answer is bad (retry.py).

- ``Pacer`` spaces requests evenly under a rate (pyrate-limiter's bucket decides, our sleep waits),
  so a sweep started just after another under the same user meets no wall of 429s;
- ``PollSchedule`` says when a job group is read next: on one run-wide tick where status is read
  in pages (every group due at a tick shares one job-library page), on a backoff schedule where
  each group costs a GET of its own (``poll_delays``, aligned to a grid by ``aligned_delay``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

from pyrate_limiter import InMemoryBucket, Rate, RateItem

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# Windows are stretched by 1 %, at most a quarter second: the platform counts POSTs as they
# arrive, so a POST delayed on its way (a new connection, a slow hop) could otherwise share a
# server window with one sent a full window later. That delay does not grow with the window.
QUOTA_MARGIN = 0.01
QUOTA_MARGIN_MAX_S = 0.25
# POSTs that may go together: a run's first combinations do not wait for their slot one by one,
# and the platform never sees more than a handful at once (three every 3 x window / count).
SUBMIT_BURST = 3
# Where status is read in pages, a group is read again after this share of its age (never sooner
# than the tick): its end is then noticed within 5 % of its run time, or within one tick.
POLL_AGE_FRACTION = 0.05


class SharedBucket(Protocol):
    """A rate bucket and a "blocked until" shared by every process using one store and key.

    Its calls do blocking I/O: the Pacer runs them in a worker thread.
    """

    def bind(self, rates: list[Rate]) -> None:
        """Create (or join) the shared bucket for these rates."""

    def acquire_step(self, name: str) -> int:
        """Take a slot named ``name`` unless blocked or full: 0 when taken, else ms to wait."""

    def block(self, seconds: float) -> None:
        """Lengthen the shared block to at least ``seconds`` from now (a 429 was seen)."""

    def close(self) -> None:
        """Release connections."""


def pacer_rates(count: int, per_seconds: float, *, margin: float, burst: int) -> list[Rate]:
    """The bucket's rates: a spacing rate (``burst`` per ``burst`` slots) and the window rate,
    the window stretched by ``margin`` seconds."""
    window_ms = max(1, math.ceil((per_seconds + margin) * 1000))
    # The window rate is the quota; the spacing rate keeps grants one window/count apart.
    # A bucket window includes its first millisecond (Rate(1, 10) grants once per 11 ms),
    # hence the - 1. Rounded down to whole milliseconds, so it never holds a grant back that
    # the window rate allows. Above 500 grants a second spacing means nothing and is left out.
    burst = min(burst, count)
    spacing_ms = burst * window_ms // count
    rates = [Rate(count, window_ms)]
    if count > burst and spacing_ms >= 2:
        rates.insert(0, Rate(burst, spacing_ms - 1))
    return rates


class Pacer:
    """At most ``count`` grants in any window of ``per_seconds``, one every ``per_seconds/count``
    on average, with at most ``burst`` at once.

    Two rates in one bucket: the spacing rate keeps grants even (``burst`` in any
    ``burst * per_seconds / count``), the window rate is the quota itself. ``sleep`` is the run's
    interruptible sleep, so waiting for a slot ends the moment the run is told to stop.
    ``margin`` seconds stretch the window (default: 1 % of it, at most a quarter second).
    With a ``store``, the bucket and a 429's "blocked until" are shared with every process
    using the same store and key; every wait still goes through ``sleep``.
    """

    def __init__(
        self,
        count: int,
        per_seconds: float,
        *,
        sleep: Sleep,
        margin: float | None = None,
        burst: int = 1,
        clock: Clock = time.monotonic,
        store: SharedBucket | None = None,
    ) -> None:
        if margin is None:
            margin = min(QUOTA_MARGIN * per_seconds, QUOTA_MARGIN_MAX_S)
        if count < 1 or per_seconds <= 0 or margin < 0 or burst < 1:
            raise ValueError("Pacer needs count, burst >= 1, per_seconds > 0 and margin >= 0")
        self._rates = pacer_rates(count, per_seconds, margin=margin, burst=burst)
        self._bucket = InMemoryBucket(self._rates)
        self._sleep = sleep
        self._clock = clock
        self._store = store
        self._bound = False
        self._names = itertools.count()
        self._prefix = f"{random.getrandbits(48):012x}"  # slot names unique across processes
        self._mutex: asyncio.Lock | None = None

    async def block(self, seconds: float) -> None:
        """Share a 429's "retry after" with every process of the store (no store: nothing)."""
        if self._store is not None and seconds > 0:
            await asyncio.to_thread(self._store.block, seconds)

    async def _acquire_shared(self, store: SharedBucket) -> None:
        # One store call at a time per process: the workers of a run queue here, not in the DB.
        if self._mutex is None:
            self._mutex = asyncio.Lock()
        async with self._mutex:
            if not self._bound:
                await asyncio.to_thread(store.bind, self._rates)
                self._bound = True
            while True:
                name = f"{self._prefix}-{next(self._names)}"
                wait_ms = await asyncio.to_thread(store.acquire_step, name)
                if wait_ms <= 0:
                    return
                await self._sleep(wait_ms / 1000)

    async def acquire(self) -> None:
        """Wait (interruptibly) until a grant keeps both rates, then take it."""
        if self._store is not None:
            await self._acquire_shared(self._store)
            return
        while True:
            now = int(self._clock() * 1000)
            self._bucket.leak(now)  # drop grants older than the longest window
            item = RateItem("grant", now)
            if self._bucket.put(item):
                return
            wait_ms = self._bucket.waiting(item)
            assert isinstance(wait_ms, int)  # an in-memory bucket answers synchronously
            await self._sleep(max(1, wait_ms) / 1000)


def poll_delays(
    initial: float,
    cap: float,
    *,
    factor: float = 1.5,
    jitter: float = 0.1,
    rng: random.Random | None = None,
) -> Iterator[float]:
    """Endless status-poll delays: initial * factor**n, capped, each scaled by 1 +- jitter."""
    rand = rng if rng is not None else random.Random()
    for n in itertools.count():
        base = min(cap, initial * factor**n) if n < 200 else cap  # avoid float overflow
        yield max(0.0, min(cap, base * (1.0 + rand.uniform(-jitter, jitter))))


def aligned_delay(delay: float, now: float) -> float:
    """``delay``, lengthened by at most a quarter so the poll lands on a grid shared by all.

    The grid is a quarter of the delay, so polls at the same backoff step (the long ones, in a
    big sweep) land on the same instants whatever second their group was submitted in.
    """
    if delay <= 0:
        return 0.0
    grid = delay / 4
    return math.ceil((now + delay) / grid) * grid - now


class PollSchedule:
    """When one job group (or one round of groups) is read next.

    ``batched`` (status read in job-library pages): every read lands on one clock that ticks
    every ``interval`` seconds (multiples of ``interval`` on ``clock``, the event loop's clock by
    default), so all groups due at a tick share that tick's page, and the run reads at most one
    round of pages per tick. A group is read again after max(``interval``, 5 % of its age), at
    most ``cap``, rounded down to a tick: an end is noticed within max(``interval``, 5 % of the
    run time). Not batched (one GET per group): the delays back off from ``interval`` by 1.5 up
    to ``cap`` (``poll_delays``), aligned to a grid. ``started`` is when the group was
    submitted, on ``clock``.
    """

    def __init__(
        self,
        interval: float,
        cap: float,
        *,
        started: float,
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.interval = interval
        self.cap = max(cap, interval)
        self.started = started
        self.clock = clock
        self._backoff = poll_delays(interval, self.cap, rng=rng)
        self._last_tick: int | None = None

    def next_delay(self, *, batched: bool) -> float:
        """Seconds from now until the next read."""
        now = self.clock()
        if not batched:
            self._last_tick = None
            return aligned_delay(next(self._backoff), now)
        want = max(self.interval, min(self.cap, POLL_AGE_FRACTION * (now - self.started)))
        tick = math.floor((now + want) / self.interval)
        if self._last_tick is not None:
            # Never the tick just read again (a sleep may end a hair before its tick).
            tick = max(tick, self._last_tick + 1)
        self._last_tick = tick
        return max(0.0, tick * self.interval - now)
