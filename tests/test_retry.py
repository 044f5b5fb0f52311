"""Retry: classification end to end (client + call_with_retry), waits, budget, breaker, Retry-After.

Pacing (``Pacer``, poll schedule) is tested in test_pacing.py, stopping in test_stopping.py.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import time
from collections.abc import Callable

import httpx
import pytest

from sweeper.client import DataprepClient, Submission
from sweeper.config import RetrySettings
from sweeper.errors import (
    ApiConnectionError,
    ApiError,
    ApiInDoubtError,
    ApiRejectedError,
    AuthError,
    RateLimitedError,
    RunAbortedError,
)
from sweeper.retry import (
    CircuitBreaker,
    RetryBudget,
    RetryBudgetExhaustedError,
    call_with_retry,
    parse_retry_after,
)

BODY = {"wrangledDataset": {"id": 33}}
SETTINGS = RetrySettings(attempts=3, max_wait=60.0, total=600.0)


class Recorder:
    """An injected sleep that records the requested delays and never sleeps."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class FakeClock:
    """A clock that only moves when its ``sleep`` is awaited (or ``advance`` is called)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _http_date(seconds_ahead: float) -> str:
    return email.utils.formatdate(time.time() + seconds_ahead, usegmt=True)


def _fail(kind: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if kind == "connect":
            raise httpx.ConnectError("refused", request=request)
        if kind == "read_timeout":
            raise httpx.ReadTimeout("timed out", request=request)
        if kind == "protocol":
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        if kind == "429_x":
            return httpx.Response(429, headers={"x-retry-after": "7"})
        if kind == "429_date":
            return httpx.Response(429, headers={"Retry-After": _http_date(30)})
        return httpx.Response(int(kind))

    return handler


def _backoff_bounds(n: int) -> tuple[float, float]:
    """Full jitter: the n-th wait is anywhere in [0, min(max_wait, 2**(n-1))]."""
    return 0.0, min(SETTINGS.max_wait, 2.0 ** (n - 1))


BACKOFF = [_backoff_bounds(1), _backoff_bounds(2)]
CASES = [
    # kind, error class, POSTs, bounds of each requested delay
    ("connect", ApiConnectionError, 3, BACKOFF),
    ("429_x", RateLimitedError, 3, [(7.0, 8.0), (7.0, 8.0)]),  # Retry-After + up to 1 s jitter
    ("429_date", RateLimitedError, 3, [(28.0, 31.0), (28.0, 31.0)]),
    ("503", RateLimitedError, 3, BACKOFF),
    ("500", ApiInDoubtError, 3, BACKOFF),
    ("502", ApiInDoubtError, 3, BACKOFF),
    ("read_timeout", ApiInDoubtError, 3, BACKOFF),
    ("protocol", ApiInDoubtError, 3, BACKOFF),
    ("400", ApiRejectedError, 1, []),
    ("404", ApiRejectedError, 1, []),
    ("401", AuthError, 1, []),
    ("403", AuthError, 1, []),
]


@pytest.mark.parametrize(("kind", "cls", "posts", "bounds"), CASES)
def test_classification_posts_and_delays(
    kind: str, cls: type[ApiError], posts: int, bounds: list[tuple[float, float]]
) -> None:
    execution_ids: list[str] = []
    fail = _fail(kind)

    def handler(request: httpx.Request) -> httpx.Response:
        execution_ids.append(request.headers["x-execution-id"])
        return fail(request)

    sleep = Recorder()
    retries: list[tuple[int, str, float]] = []

    def on_retry(n: int, error: ApiError, delay: float) -> None:
        retries.append((n, type(error).__name__, delay))

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with DataprepClient("http://api.test", transport=transport) as client:

            async def post() -> Submission:
                return await client.create_job_group(BODY, execution_id="swp-same")

            await call_with_retry(post, SETTINGS, sleep=sleep, on_retry=on_retry)

    with pytest.raises(cls) as info:
        asyncio.run(go())
    assert type(info.value) is cls  # raised unchanged, not wrapped
    assert len(execution_ids) == posts
    assert set(execution_ids) == {"swp-same"}  # every resend reuses the execution id
    assert len(sleep.delays) == len(bounds)
    for delay, (low, high) in zip(sleep.delays, bounds, strict=True):
        assert low <= delay <= high
    # on_retry saw each retry before its sleep, with the same delay that was then slept.
    assert [(n, d) for n, _, d in retries] == list(zip(itertools.count(1), sleep.delays))
    assert all(name == cls.__name__ for _, name, _ in retries)


def test_recovers_after_transient_failures_and_304_is_a_result() -> None:
    answers = iter([httpx.Response(503), httpx.Response(500), httpx.Response(304)])
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["x-execution-id"])
        return next(answers)

    sleep = Recorder()

    async def go() -> Submission:
        async with DataprepClient("http://a.test", transport=httpx.MockTransport(handler)) as c:

            async def post() -> Submission:
                return await c.create_job_group(BODY, execution_id="swp-x")

            return await call_with_retry(post, SETTINGS, sleep=sleep)

    sub = asyncio.run(go())
    assert isinstance(sub, Submission)
    assert sub.status_code == 304 and sub.job_group_id is None
    assert seen == ["swp-x"] * 3
    assert len(sleep.delays) == 2


class Failing:
    """A callable that raises ``errors`` in turn, then returns "ok"."""

    def __init__(self, *errors: ApiError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def _limited(retry_after: float | None = None) -> RateLimitedError:
    return RateLimitedError("429", retry_after=retry_after, status_code=429)


def test_success_first_time_does_not_sleep() -> None:
    fn = Failing()
    sleep = Recorder()
    assert asyncio.run(call_with_retry(fn, SETTINGS, sleep=sleep)) == "ok"
    assert fn.calls == 1 and sleep.delays == []


def test_max_wait_caps_a_long_retry_after() -> None:
    fn = Failing(_limited(100.0))
    sleep = Recorder()
    settings = RetrySettings(attempts=3, max_wait=10.0, total=600.0)
    assert asyncio.run(call_with_retry(fn, settings, sleep=sleep)) == "ok"
    assert sleep.delays == [10.0]


def test_max_wait_caps_exponential_backoff() -> None:
    fn = Failing(*(ApiInDoubtError("500", status_code=500) for _ in range(9)))
    sleep = Recorder()
    settings = RetrySettings(attempts=10, max_wait=3.0, total=10_000.0)
    assert asyncio.run(call_with_retry(fn, settings, sleep=sleep)) == "ok"
    assert len(sleep.delays) == 9
    assert all(0.0 <= d <= 3.0 for d in sleep.delays)


def test_total_stops_before_a_wait_longer_than_the_total() -> None:
    fn = Failing(_limited(100.0))
    sleep = Recorder()
    settings = RetrySettings(attempts=6, max_wait=300.0, total=50.0)
    with pytest.raises(RateLimitedError):
        asyncio.run(call_with_retry(fn, settings, sleep=sleep))
    assert fn.calls == 1 and sleep.delays == []


def test_attempts_bound_raises_the_last_error() -> None:
    errors = [ApiInDoubtError(f"e{i}", status_code=500) for i in range(5)]
    fn = Failing(*errors)
    with pytest.raises(ApiInDoubtError) as info:
        asyncio.run(call_with_retry(fn, SETTINGS, sleep=Recorder()))
    assert fn.calls == 3
    assert info.value is errors[2]


def test_budget_exhaustion_stops_retrying_and_says_so() -> None:
    budget = RetryBudget(ratio=0.0, minimum=1)
    sleep = Recorder()
    first = Failing(ApiInDoubtError("e1", status_code=500))
    assert asyncio.run(call_with_retry(first, SETTINGS, budget=budget, sleep=sleep)) == "ok"
    assert first.calls == 2  # the budget's one retry
    assert not budget.exhausted
    second = Failing(ApiInDoubtError("e3", status_code=502))
    with pytest.raises(RetryBudgetExhaustedError) as info:
        asyncio.run(call_with_retry(second, SETTINGS, budget=budget, sleep=sleep))
    assert second.calls == 1
    assert isinstance(info.value, RunAbortedError)
    assert isinstance(info.value.error, ApiInDoubtError)
    assert info.value.__cause__ is info.value.error
    assert "retry budget ran out" in str(info.value)
    assert budget.requests == 2 and budget.retries == 1 and budget.exhausted
    assert len(sleep.delays) == 1


def test_budget_is_not_charged_when_attempts_already_stop() -> None:
    budget = RetryBudget(ratio=0.0, minimum=5)
    fn = Failing(*(ApiInDoubtError("e", status_code=500) for _ in range(3)))
    with pytest.raises(ApiInDoubtError):
        asyncio.run(call_with_retry(fn, SETTINGS, budget=budget, sleep=Recorder()))
    assert budget.retries == 2  # the two retries made; the third stop is the attempts bound
    assert not budget.exhausted


def test_budget_ratio() -> None:
    budget = RetryBudget(ratio=0.5, minimum=0)
    assert not budget.try_spend()
    assert budget.retries == 0  # a refused spend takes nothing
    for _ in range(4):  # every call_with_retry counts one request
        assert asyncio.run(call_with_retry(Failing(), SETTINGS, budget=budget, sleep=Recorder()))
    assert budget.requests == 4
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]
    assert budget.retries == 2


def test_budget_minimum_allows_retries_before_any_request() -> None:
    budget = RetryBudget(ratio=0.2, minimum=3)
    assert [budget.try_spend() for _ in range(4)] == [True, True, True, False]


def test_permanent_error_after_exhaustion_is_raised_unchanged() -> None:
    budget = RetryBudget(ratio=0.0, minimum=0)
    with pytest.raises(RetryBudgetExhaustedError):
        asyncio.run(
            call_with_retry(
                Failing(ApiInDoubtError("e", status_code=500)),
                SETTINGS,
                budget=budget,
                sleep=Recorder(),
            )
        )
    rejected = Failing(ApiRejectedError("400", status_code=400))
    with pytest.raises(ApiRejectedError):
        asyncio.run(call_with_retry(rejected, SETTINGS, budget=budget, sleep=Recorder()))


@pytest.mark.parametrize(
    "error",
    [
        ApiRejectedError("400", status_code=400),
        ApiRejectedError("409", status_code=409),
        AuthError("401", status_code=401),
        AuthError("403", status_code=403),
    ],
)
def test_permanent_and_auth_are_never_retried(error: ApiError) -> None:
    budget = RetryBudget(ratio=0.0, minimum=5)
    fn = Failing(error)
    sleep = Recorder()
    retried: list[int] = []
    with pytest.raises(type(error)) as info:
        asyncio.run(
            call_with_retry(
                fn,
                SETTINGS,
                sleep=sleep,
                budget=budget,
                on_retry=lambda n, e, d: retried.append(n),
            )
        )
    assert info.value is error
    assert fn.calls == 1 and sleep.delays == [] and retried == []
    assert budget.retries == 0 and not budget.exhausted


def test_non_api_errors_propagate_without_retry() -> None:
    calls = 0

    async def boom() -> str:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        asyncio.run(call_with_retry(boom, SETTINGS, sleep=Recorder()))
    assert calls == 1


# ---------------------------------------------------------------- circuit breaker


def _refusal(code: int = 429) -> ApiError:
    if code in (429, 503):
        return RateLimitedError(str(code), status_code=code)
    return ApiInDoubtError(str(code), status_code=code)


def test_breaker_closed_does_not_wait() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(3, 60.0, 3, clock=clock)
    asyncio.run(breaker.wait(clock.sleep))
    assert clock.slept == []


def test_breaker_threshold_refusals_in_a_row_pause() -> None:
    clock = FakeClock()
    opened: list[float] = []
    breaker = CircuitBreaker(3, 60.0, 5, clock=clock, on_open=opened.append)
    breaker.record(_refusal(429))
    breaker.record(_refusal(503))
    asyncio.run(breaker.wait(clock.sleep))
    assert clock.slept == [] and opened == []  # two in a row: still closed
    breaker.record(_refusal(500))  # any 5xx counts
    assert opened == [60.0] and breaker.opens == 1
    clock.advance(20.0)
    asyncio.run(breaker.wait(clock.sleep))
    assert clock.slept == [pytest.approx(40.0)]  # sleeps out the rest of the pause
    assert clock.now == pytest.approx(60.0)
    asyncio.run(breaker.wait(clock.sleep))  # the pause is over: no more waiting
    assert len(clock.slept) == 1


def test_breaker_success_resets_the_count() -> None:
    clock = FakeClock()
    opened: list[float] = []
    breaker = CircuitBreaker(3, 60.0, 5, clock=clock, on_open=opened.append)
    for _ in range(3):
        breaker.record(_refusal())
        breaker.record(_refusal())
        breaker.record(None)
    asyncio.run(breaker.wait(clock.sleep))
    assert opened == [] and clock.slept == [] and breaker.opens == 0
    for _ in range(3):
        breaker.record(_refusal())
    assert opened == [60.0]


@pytest.mark.parametrize(
    "error",
    [
        ApiRejectedError("400", status_code=400),
        ApiConnectionError("connect refused"),
        ApiInDoubtError("read timeout"),  # no answer at all: not the platform refusing
    ],
)
def test_breaker_other_errors_are_not_refusals(error: ApiError) -> None:
    clock = FakeClock()
    opened: list[float] = []
    breaker = CircuitBreaker(3, 60.0, 5, clock=clock, on_open=opened.append)
    for _ in range(3):
        breaker.record(_refusal())
        breaker.record(_refusal())
        breaker.record(error)  # breaks the run of refusals
    asyncio.run(breaker.wait(clock.sleep))
    assert opened == [] and clock.slept == [] and breaker.opens == 0


def test_breaker_max_opens_th_opening_aborts_the_run() -> None:
    clock = FakeClock()
    opened: list[float] = []
    breaker = CircuitBreaker(2, 30.0, 3, clock=clock, on_open=opened.append)

    async def go() -> None:
        for n in (1, 2):
            breaker.record(_refusal())
            breaker.record(_refusal())
            assert opened == [30.0] * n
            await breaker.wait(clock.sleep)  # a pause, not an abort
            assert clock.now == pytest.approx(30.0 * n)
        breaker.record(_refusal())
        breaker.record(_refusal())  # the third opening ends the run
        with pytest.raises(RunAbortedError, match="resume"):
            await breaker.wait(clock.sleep)
        assert opened == [30.0, 30.0]  # the aborting opening is not announced as a pause
        assert clock.slept == [pytest.approx(30.0)] * 2
        with pytest.raises(RunAbortedError):  # and stays tripped
            await breaker.wait(clock.sleep)

    asyncio.run(go())


def test_breaker_max_opens_one_aborts_on_the_first_opening() -> None:
    clock = FakeClock()
    opened: list[float] = []
    breaker = CircuitBreaker(1, 30.0, 1, clock=clock, on_open=opened.append)
    breaker.record(_refusal())
    with pytest.raises(RunAbortedError):
        asyncio.run(breaker.wait(clock.sleep))
    assert opened == [] and clock.slept == []


def test_breaker_refusals_during_a_pause_do_not_open_it_again() -> None:
    clock = FakeClock()
    opened: list[float] = []
    breaker = CircuitBreaker(2, 60.0, 3, clock=clock, on_open=opened.append)
    for _ in range(6):  # e.g. six concurrent requests all answered 429 at the same moment
        breaker.record(_refusal())
    asyncio.run(breaker.wait(clock.sleep))  # expected: one pause, not an abort
    assert opened == [60.0]


# ---------------------------------------------------------------- Retry-After


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("300", 300.0),
        ("100000", 300.0),
        ("-1", None),
        ("soon", None),
        ("", None),
        ("   ", None),
        (None, None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_cap() -> None:
    assert parse_retry_after("100", cap=30.0) == 30.0
    assert parse_retry_after("10", cap=30.0) == 10.0


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now=now) == 42.0
    assert parse_retry_after(email.utils.formatdate(now - 42, usegmt=True), now=now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 4200, usegmt=True), now=now) == 300.0
    # An RFC 850 date, which RFC 9110 recipients must also accept.
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now=784111777.0 - 10) == 10.0


def test_parse_retry_after_rejects_a_date_without_a_zone() -> None:
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:20 -0000", now=1_700_000_000.0) is None
    assert parse_retry_after("Tue, 14 Nov 2023 99:99:99 GMT", now=1_700_000_000.0) is None
