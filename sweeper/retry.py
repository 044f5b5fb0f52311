"""Retry policy: which failed requests to send again, after how long, and when to give up.

- ``call_with_retry`` resends by ``FailureClass`` (tenacity underneath): NOT_SENT, REJECTED
  (429/503) and IN_DOUBT are resent (the caller guarantees an IN_DOUBT resend reuses the same
  ``x-execution-id``); PERMANENT and AUTH never are.
- ``RetryBudget`` caps retries run-wide, so a storm of failures cannot multiply the load.
- ``CircuitBreaker`` pauses submission when the platform keeps refusing.

How fast requests go out in the first place is pacing (``sweeper.pacing``), not retry.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)
from tenacity.stop import stop_base

from sweeper.config import RetrySettings
from sweeper.errors import ApiError, FailureClass, RateLimitedError, RunAbortedError

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

RETRYABLE = frozenset({FailureClass.NOT_SENT, FailureClass.REJECTED, FailureClass.IN_DOUBT})
RETRY_AFTER_JITTER = 1.0  # seconds added at random to a server-requested wait (spreads workers)


def parse_retry_after(
    value: str | None, *, now: float | None = None, cap: float = 300.0
) -> float | None:
    """Seconds to wait from a ``Retry-After`` / ``x-retry-after`` value, capped; None if unusable.

    Accepts delay-seconds (``"7"``, also ``"7.5"``) or an HTTP-date (RFC 9110 §10.2.3). A negative
    or unparseable value is None, i.e. the header is ignored and normal backoff applies.
    """
    text = (value or "").strip()
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
        seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


class RetryBudget:
    """Run-wide cap on retries: retries <= ratio * requests + minimum (Finagle-style)."""

    def __init__(self, ratio: float = 0.2, minimum: int = 10) -> None:
        self.ratio = ratio
        self.minimum = minimum
        self.requests = 0
        self.retries = 0
        self.exhausted = False  # a retry was refused at least once

    def try_spend(self) -> bool:
        """Take one retry token; False (and nothing taken) when the budget is used up."""
        if self.retries + 1 > self.ratio * self.requests + self.minimum:
            self.exhausted = True
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
    """``threshold`` refusals in a row (429, 503, other 5xx) pause submission for ``pause``
    seconds; the ``max_opens``-th pause ends the run instead (resumably)."""

    def __init__(
        self,
        threshold: int,
        pause: float,
        max_opens: int,
        *,
        on_open: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = max(1, threshold)
        self.pause = pause
        self.max_opens = max(1, max_opens)
        self._on_open = on_open
        self._clock = clock
        self.refusals = 0  # in a row
        self.opens = 0
        self.paused_until = 0.0

    def record(self, error: ApiError | None) -> None:
        """Count one answer: None for a success, else the error it raised."""
        if error is None or not _is_refusal(error):
            self.refusals = 0
            return
        if self._clock() < self.paused_until:
            return  # sent before the pause began: the platform's answer is already counted
        self.refusals += 1
        if self.refusals >= self.threshold:
            self.refusals = 0
            self.opens += 1
            if self.opens < self.max_opens:
                self.paused_until = self._clock() + self.pause
                if self._on_open is not None:
                    self._on_open(self.pause)

    async def wait(self, sleep: Sleep) -> None:
        """Return at once when closed, sleep out a pause, raise ``RunAbortedError`` when tripped."""
        if self.opens >= self.max_opens:
            raise RunAbortedError(
                f"The platform kept refusing requests (429/5xx): the circuit breaker paused "
                f"submission {self.opens - 1} time(s) and the refusals went on, so sweeper stopped "
                "submitting. "
                "Everything already submitted is in the ledger; run the same command again "
                "later to resume."
            )
        remaining = self.paused_until - self._clock()
        if remaining > 0:
            await sleep(remaining)


def _is_refusal(error: ApiError) -> bool:
    """A 429/503 or another 5xx: the platform is struggling."""
    if isinstance(error, RateLimitedError):
        return True
    return error.status_code is not None and error.status_code >= 500


class _WaitRetryAfter(wait_random_exponential):
    """Full-jitter exponential backoff, unless the server said how long to wait."""

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return min(exc.retry_after + random.uniform(0.0, RETRY_AFTER_JITTER), self.max)
        return float(super().__call__(retry_state))


class _StopWhenSpent(stop_base):
    """Stop when the run-wide budget has no retry left (takes one when it has)."""

    def __init__(self, budget: RetryBudget | None) -> None:
        self.budget = budget
        self.spent = False  # this call stopped because the budget ran out

    def __call__(self, retry_state: RetryCallState) -> bool:
        if self.budget is not None and not self.budget.try_spend():
            self.spent = True
        return self.spent


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.failure in RETRYABLE


async def call_with_retry(
    fn: Callable[[], Coroutine[Any, Any, T]],
    settings: RetrySettings,
    *,
    sleep: Sleep,
    budget: RetryBudget | None = None,
    on_retry: Callable[[int, ApiError, float], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, fails for good, or the settings or budget say stop.

    Stops after ``settings.attempts`` calls, before a wait would take the request (waits and
    attempts together) past ``settings.total``, or when the run-wide ``budget`` is spent (then
    raising ``RetryBudgetExhaustedError``); otherwise the last ``ApiError`` is raised unchanged.
    ``on_retry(attempt, error, delay)`` runs before each ``sleep``.
    """
    if budget is not None:
        budget.requests += 1

    def before_sleep(retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if on_retry is not None and isinstance(exc, ApiError):
            delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
            on_retry(retry_state.attempt_number, exc, delay)

    when_spent = _StopWhenSpent(budget)
    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=(
            stop_after_attempt(settings.attempts) | stop_before_delay(settings.total) | when_spent
        ),
        wait=_WaitRetryAfter(multiplier=1.0, max=settings.max_wait),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return await retrying(fn)
    except ApiError as error:
        if when_spent.spent:
            raise RetryBudgetExhaustedError(error) from error
        raise
