"""Pacing: how fast sweeper asks, apart from what it does when an answer is bad (retry.py).

- ``Pacer`` spaces requests evenly under a rate (pyrate-limiter's bucket decides, our sleep waits),
  so a sweep started just after another under the same user meets no wall of 429s;
- ``poll_delays`` is the status-poll backoff schedule, and ``aligned_delay`` puts polls on a grid
  shared by every waiting job group, so many groups come due together and share one listing.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterator

from pyrate_limiter import InMemoryBucket, Rate, RateItem

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

# Windows are stretched by 1 %, at most a quarter second: the platform counts POSTs as they
# arrive, so a POST delayed on its way (a new connection, a slow hop) could otherwise share a
# server window with one sent a full window later. That delay does not grow with the window.
QUOTA_MARGIN = 0.01
QUOTA_MARGIN_MAX_S = 0.25
# POSTs that may go at once before even spacing takes over: a run's first few combinations do
# not wait, and the platform still never sees more than a handful together.
SUBMIT_BURST = 3


class Pacer:
    """At most ``count`` grants in any window of ``per_seconds``, one every ``per_seconds/count``
    on average, with at most ``burst`` at once.

    Two rates in one bucket: the spacing rate keeps grants even (``burst`` in any
    ``burst * per_seconds / count``), the window rate is the quota itself. ``sleep`` is the run's
    interruptible sleep, so waiting for a slot ends the moment the run is told to stop.
    ``margin`` seconds stretch the window (default: 1 % of it, at most a quarter second).
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
    ) -> None:
        if margin is None:
            margin = min(QUOTA_MARGIN * per_seconds, QUOTA_MARGIN_MAX_S)
        if count < 1 or per_seconds <= 0 or margin < 0 or burst < 1:
            raise ValueError("Pacer needs count, burst >= 1, per_seconds > 0 and margin >= 0")
        window_ms = max(1, math.ceil((per_seconds + margin) * 1000))
        # The window rate is the quota; the spacing rate keeps grants one window/count apart.
        # A bucket window includes its first millisecond (Rate(1, 10) grants once per 11 ms),
        # hence the - 1. Rounded down to whole milliseconds, so it never holds a grant back
        # that the window rate allows. Above 500 grants a second spacing means nothing.
        burst = min(burst, count)
        spacing_ms = burst * window_ms // count
        rates = [Rate(count, window_ms)]
        if count > burst and spacing_ms >= 2:
            rates.insert(0, Rate(burst, spacing_ms - 1))
        self._bucket = InMemoryBucket(rates)
        self._sleep = sleep
        self._clock = clock

    async def acquire(self) -> None:
        """Wait (interruptibly) until a grant keeps both rates, then take it."""
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
