"""Retry policy, pacing and back-pressure: what to resend, when, and how fast.

- ``call_with_retry`` retries by ``FailureClass`` (tenacity underneath): NOT_SENT, REJECTED and
  IN_DOUBT are resent (the caller guarantees an IN_DOUBT resend reuses the same x-execution-id);
  PERMANENT and AUTH never are.
- ``RateLimiter`` keeps POSTs under the platform quota (sliding log, FIFO-fair).
- ``RetryBudget`` and ``CircuitBreaker`` stop a retry storm run-wide.
- ``poll_delays`` / ``PollGate`` keep status polling cheap.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import math
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_random_exponential

from sweeper.config import RetrySettings
from sweeper.errors import (
    ApiError,
    ApiInDoubtError,
    FailureClass,
    RateLimitedError,
    RunAbortedError,
)

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]

RETRYABLE = frozenset({FailureClass.NOT_SENT, FailureClass.REJECTED, FailureClass.IN_DOUBT})
RETRY_AFTER_JITTER = 1.0  # seconds added at random to a server-requested wait (spreads workers)
_EPSILON = 1e-9  # float slack so a fake clock landing a hair short of a deadline cannot spin


def parse_retry_after(
    value: str | None, *, now: float | None = None, cap: float = 300.0
) -> float | None:
    """Seconds to wait from a ``Retry-After`` / ``x-retry-after`` value, capped; None if unusable.

    Accepts delay-seconds (``"7"``, also ``"7.5"``) or an HTTP-date (RFC 9110 §10.2.3). A negative
    or unparseable value is None, i.e. the header is ignored and normal backoff applies.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" dates parse naive; RFC 9110 dates are GMT
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        seconds = max(0.0, seconds)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


@dataclass(frozen=True)
class RetryPolicy:
    """Per-request bounds: ``attempts`` calls, each wait <= ``max_wait``, waits <= ``total``."""

    attempts: int
    max_wait: float
    total: float
    base: float = 1.0  # full-jitter backoff: wait ~ U(0, min(max_wait, base * 2**(n-1)))

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(attempts=settings.attempts, max_wait=settings.max_wait, total=settings.total)


class RetryBudget:
    """Run-wide cap on retries: retries <= ratio * requests + minimum (Finagle-style)."""

    def __init__(self, ratio: float = 0.2, minimum: int = 10) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.requests = 0
        self.retries = 0

    def record_request(self) -> None:
        self.requests += 1

    def try_spend(self) -> bool:
        """Take one retry token; False (and nothing taken) when the budget is used up."""
        if self.retries + 1 > self.ratio * self.requests + self.minimum:
            return False
        self.retries += 1
        return True


class RetryBudgetExhaustedError(RunAbortedError):
    """The run-wide retry budget ran out; ``error`` is the API error that was not retried."""

    def __init__(self, error: ApiError) -> None:
        self.error = error
        super().__init__(
            f"{error} The run-wide retry budget ran out (too many failures across the run), "
            "so sweeper stopped retrying; the ledger is consistent and the run can be resumed "
            "once the platform recovers."
        )


class CircuitBreaker:
    """Pauses submission after ``threshold`` consecutive 429/5xx; aborts after ``max_opens``.

    Closed -> (threshold failures) -> open: ``wait_if_open`` sleeps out ``pause`` seconds ->
    half-open: one failure re-opens it, one success closes it. The ``max_opens``-th opening ends
    the run with ``RunAbortedError`` instead of pausing.
    """

    def __init__(
        self,
        threshold: int,
        pause: float,
        max_opens: int,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_open: Callable[[float], None] | None = None,
    ) -> None:
        self.threshold = max(1, threshold)
        self.pause = pause
        self.max_opens = max(1, max_opens)
        self._clock = clock
        self._sleep = sleep
        self._on_open = on_open
        self.failures = 0  # consecutive
        self.opens = 0
        self.state = "closed"  # closed | open | half_open | tripped
        self._opened_at = 0.0

    @classmethod
    def from_settings(
        cls,
        settings: RetrySettings,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        on_open: Callable[[float], None] | None = None,
    ) -> CircuitBreaker:
        return cls(
            settings.breaker_threshold,
            settings.breaker_pause,
            settings.breaker_max_opens,
            clock=clock,
            sleep=sleep,
            on_open=on_open,
        )

    def record(self, ok: bool) -> None:
        """Count one answer: True for a success, False for a 429/5xx."""
        if self.state == "tripped":
            return
        if ok:
            self.failures = 0
            if self.state == "half_open":
                self.state = "closed"
            return
        self.failures += 1
        if self.state == "open":
            return
        if self.state == "half_open" or self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.opens += 1
        self.failures = 0
        if self.opens >= self.max_opens:
            self.state = "tripped"
            return
        self.state = "open"
        self._opened_at = self._clock()
        if self._on_open is not None:
            self._on_open(self.pause)

    async def wait_if_open(self) -> None:
        """Return at once when closed; sleep out the pause when open; raise when tripped."""
        if self.state == "tripped":
            raise RunAbortedError(
                f"The platform kept refusing requests (429/5xx): the circuit breaker opened "
                f"{self.opens} times, so sweeper stopped submitting. Everything already "
                "submitted is in the ledger; run the same command again later to resume."
            )
        if self.state != "open":
            return
        remaining = self._opened_at + self.pause - self._clock()
        if remaining > _EPSILON:
            await self._sleep(remaining)
        if self.state == "open":
            self.state = "half_open"
        if self.state == "tripped":  # another task's probe failed while we slept
            await self.wait_if_open()


def _is_pushback(error: ApiError) -> bool:
    """A 429/503 or a 5xx: the platform is struggling (what the breaker counts)."""
    if isinstance(error, RateLimitedError):
        return True
    return (
        isinstance(error, ApiInDoubtError)
        and error.status_code is not None
        and error.status_code >= 500
    )


class _Schedule:
    """Decides each wait once per attempt so tenacity's wait and stop agree (any tenacity order)."""

    def __init__(self, policy: RetryPolicy, budget: RetryBudget | None) -> None:
        self.policy = policy
        self.budget = budget
        self.backoff = wait_random_exponential(multiplier=policy.base, max=policy.max_wait)
        self.waited = 0.0
        self.budget_ran_out = False
        self._delays: dict[int, float] = {}
        self._stops: dict[int, bool] = {}

    def delay(self, rs: RetryCallState) -> float:
        n = rs.attempt_number
        if n not in self._delays:
            exc = rs.outcome.exception() if rs.outcome is not None else None
            if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
                wait = exc.retry_after + random.uniform(0.0, RETRY_AFTER_JITTER)
            else:
                wait = self.backoff(rs)
            self._delays[n] = min(wait, self.policy.max_wait)
        return self._delays[n]

    def stop(self, rs: RetryCallState) -> bool:
        n = rs.attempt_number
        if n not in self._stops:
            self._stops[n] = self._decide_stop(rs)
        return self._stops[n]

    def _decide_stop(self, rs: RetryCallState) -> bool:
        if rs.attempt_number >= self.policy.attempts:
            return True
        wait = self.delay(rs)
        if self.waited + wait > self.policy.total:
            return True
        if self.budget is not None and not self.budget.try_spend():
            self.budget_ran_out = True
            return True
        self.waited += wait
        return False


class _ScheduleWait(wait_base):
    def __init__(self, schedule: _Schedule) -> None:
        self.schedule = schedule

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.schedule.delay(retry_state)


class _ScheduleStop(stop_base):
    def __init__(self, schedule: _Schedule) -> None:
        self.schedule = schedule

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.schedule.stop(retry_state)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.failure in RETRYABLE


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    budget: RetryBudget | None = None,
    breaker: CircuitBreaker | None = None,
    on_retry: Callable[[int, ApiError, float], None] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Call ``fn`` until it succeeds, fails permanently, or the policy/budget/breaker says stop.

    Raises the last ``ApiError`` unchanged when attempts or total wait run out, or
    ``RetryBudgetExhaustedError`` (a ``RunAbortedError`` carrying the last error as ``.error``)
    when the run-wide budget is spent. ``on_retry(attempt, error, delay)`` runs before each sleep.
    """
    schedule = _Schedule(policy, budget)
    if budget is not None:
        budget.record_request()

    async def attempt() -> T:
        if breaker is not None:
            await breaker.wait_if_open()
        try:
            result = await fn()
        except ApiError as error:
            if breaker is not None and _is_pushback(error):
                breaker.record(False)
            raise
        if breaker is not None:
            breaker.record(True)
        return result

    def before_sleep(rs: RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        if on_retry is not None and isinstance(exc, ApiError):
            on_retry(rs.attempt_number, exc, schedule.delay(rs))

    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        wait=_ScheduleWait(schedule),
        stop=_ScheduleStop(schedule),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
    try:
        return await retrying(attempt)
    except ApiError as error:
        if schedule.budget_ran_out:
            raise RetryBudgetExhaustedError(error) from error
        raise


class RateLimiter:
    """At most ``count`` acquisitions in any window of ``per_seconds`` (sliding log, FIFO-fair).

    When saturated, each grant happens exactly one window after the grant ``count`` places
    before it, so the achieved rate equals the configured rate. ``margin`` stretches the window
    by that fraction, for a server that counts arrivals: network jitter can bring two requests
    sent one window apart closer together than a window when they arrive.
    """

    def __init__(
        self,
        count: int,
        per_seconds: float,
        *,
        margin: float = 0.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if count < 1 or per_seconds <= 0 or margin < 0:
            raise ValueError("RateLimiter needs count >= 1, per_seconds > 0 and margin >= 0")
        self.count = count
        self.per_seconds = per_seconds * (1.0 + margin)
        self._clock = clock
        self._sleep = sleep
        self._grants: deque[float] = deque(maxlen=count)
        self._lock: asyncio.Lock | None = None  # created lazily inside the running loop

    async def acquire(self) -> None:
        """Wait until a grant keeps the window property, then take it."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        # asyncio.Lock wakes waiters in FIFO order, and the holder sleeps while holding it, so
        # grants go out in arrival order.
        async with self._lock:
            while len(self._grants) == self.count:
                wait = self._grants[0] + self.per_seconds - self._clock()
                if wait <= _EPSILON:
                    break
                await self._sleep(wait)
            self._grants.append(self._clock())


class PollGate:
    """Caps status GETs across the run at ``max_per_second``, evenly spaced."""

    def __init__(
        self,
        max_per_second: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_per_second <= 0:
            raise ValueError("PollGate needs max_per_second > 0")
        self._limiter = RateLimiter(1, 1.0 / max_per_second, clock=clock, sleep=sleep)

    async def acquire(self) -> None:
        await self._limiter.acquire()


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
