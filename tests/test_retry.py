"""Retry classification end to end (client + call_with_retry), pacing, budget, breaker, polling."""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sweeper.client import DataprepClient
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
    PollGate,
    RateLimiter,
    RetryBudget,
    RetryBudgetExhaustedError,
    RetryPolicy,
    call_with_retry,
    parse_retry_after,
    poll_delays,
)

BODY = {"wrangledDataset": {"id": 33}}
CREATED = {"id": 9, "sessionId": "s-1", "jobs": {"data": [{"id": 21}, {"id": 22}]}}
POLICY = RetryPolicy(attempts=3, max_wait=60.0, total=600.0)


class Recorder:
    """An injected sleep that records the requested delays and never sleeps."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


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
    return 0.0, min(POLICY.max_wait, POLICY.base * 2 ** (n - 1))


CASES = [
    # kind, error class, POSTs, bounds of each requested delay
    ("connect", ApiConnectionError, 3, [_backoff_bounds(1), _backoff_bounds(2)]),
    ("429_x", RateLimitedError, 3, [(7.0, 8.0), (7.0, 8.0)]),
    ("429_date", RateLimitedError, 3, [(28.0, 31.0), (28.0, 31.0)]),
    ("503", RateLimitedError, 3, [_backoff_bounds(1), _backoff_bounds(2)]),
    ("500", ApiInDoubtError, 3, [_backoff_bounds(1), _backoff_bounds(2)]),
    ("read_timeout", ApiInDoubtError, 3, [_backoff_bounds(1), _backoff_bounds(2)]),
    ("protocol", ApiInDoubtError, 3, [_backoff_bounds(1), _backoff_bounds(2)]),
    ("400", ApiRejectedError, 1, []),
    ("401", AuthError, 1, []),
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

    async def go() -> None:
        transport = httpx.MockTransport(handler)
        async with DataprepClient("http://api.test", transport=transport) as client:
            await call_with_retry(
                lambda: client.create_job_group(BODY, execution_id="swp-same"),
                POLICY,
                sleep=sleep,
                on_retry=lambda n, e, d: retries.append((n, type(e).__name__, d)),
            )

    with pytest.raises(cls):
        asyncio.run(go())
    assert len(execution_ids) == posts
    assert set(execution_ids) == {"swp-same"}
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

    async def go() -> Any:
        async with DataprepClient("http://a.test", transport=httpx.MockTransport(handler)) as c:
            return await call_with_retry(
                lambda: c.create_job_group(BODY, execution_id="swp-x"), POLICY, sleep=sleep
            )

    sub = asyncio.run(go())
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


def test_max_wait_caps_a_long_retry_after() -> None:
    fn = Failing(RateLimitedError("429", retry_after=100.0, status_code=429))
    sleep = Recorder()
    policy = RetryPolicy(attempts=3, max_wait=10.0, total=600.0)
    assert asyncio.run(call_with_retry(fn, policy, sleep=sleep)) == "ok"
    assert sleep.delays == [10.0]


def test_total_wait_bound_stops_before_exceeding() -> None:
    errors = [RateLimitedError("429", retry_after=100.0, status_code=429) for _ in range(5)]
    fn = Failing(*errors)
    sleep = Recorder()
    policy = RetryPolicy(attempts=6, max_wait=300.0, total=250.0)
    with pytest.raises(RateLimitedError):
        asyncio.run(call_with_retry(fn, policy, sleep=sleep))
    assert fn.calls == 3  # waits ~100 + ~100 fit in 250; a third would not
    assert len(sleep.delays) == 2
    assert sum(sleep.delays) <= 250.0


def test_budget_exhaustion_stops_retrying_and_says_so() -> None:
    budget = RetryBudget(ratio=0.0, minimum=1)
    sleep = Recorder()
    first = Failing(ApiInDoubtError("e1", status_code=500))
    assert asyncio.run(call_with_retry(first, POLICY, budget=budget, sleep=sleep)) == "ok"
    assert first.calls == 2  # the budget's one retry
    second = Failing(ApiInDoubtError("e3", status_code=502))
    with pytest.raises(RetryBudgetExhaustedError) as info:
        asyncio.run(call_with_retry(second, POLICY, budget=budget, sleep=sleep))
    assert second.calls == 1
    assert isinstance(info.value, RunAbortedError)
    assert isinstance(info.value.error, ApiInDoubtError)
    assert "retry budget ran out" in str(info.value)
    assert budget.requests == 2 and budget.retries == 1


def test_budget_ratio() -> None:
    budget = RetryBudget(ratio=0.5, minimum=0)
    assert not budget.try_spend()
    for _ in range(4):
        budget.record_request()
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]


def test_permanent_and_auth_are_never_retried() -> None:
    for err in (ApiRejectedError("400", status_code=400), AuthError("401", status_code=401)):
        fn = Failing(err)
        with pytest.raises(type(err)):
            asyncio.run(call_with_retry(fn, POLICY, sleep=Recorder()))
        assert fn.calls == 1


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


def _limited(count: int, per: float, arrivals: list[float], margin: float = 0.0) -> list[float]:
    ft = FakeTime()
    limiter = RateLimiter(count, per, margin=margin, clock=ft.clock, sleep=ft.sleep)
    grants: list[float] = []

    async def one(at: float) -> None:
        await ft.sleep(at)
        await limiter.acquire()
        grants.append(ft.now)

    async def go() -> None:
        await ft.run(*(one(a) for a in arrivals))

    asyncio.run(go())
    return grants


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=1, max_value=6),
    per_seconds=st.sampled_from([0.5, 1.0, 60.0]),
    margin=st.sampled_from([0.0, 0.01]),
    arrivals=st.lists(st.floats(min_value=0, max_value=200, allow_nan=False), max_size=25),
)
def test_rate_limiter_window_property_and_full_rate(
    count: int, per_seconds: float, margin: float, arrivals: list[float]
) -> None:
    grants = _limited(count, per_seconds, arrivals, margin)
    per = per_seconds * (1 + margin)  # the window the limiter keeps
    assert len(grants) == len(arrivals)
    # Window property: any count+1 consecutive grants span at least per seconds.
    for i in range(len(grants) - count):
        assert grants[i + count] - grants[i] >= per - 1e-6
    # No wasted time: FIFO, each grant as early as the window allows.
    expected: list[float] = []
    for i, at in enumerate(sorted(arrivals)):
        g = max(at, expected[-1] if expected else 0.0)
        if i >= count:
            g = max(g, expected[i - count] + per)
        expected.append(g)
    assert grants == pytest.approx(expected, abs=1e-6)


def test_rate_limiter_saturated_achieves_the_rate() -> None:
    grants = _limited(25, 60.0, [0.0] * 100)
    assert grants[:25] == [0.0] * 25
    assert grants[25] == pytest.approx(60.0) and grants[-1] == pytest.approx(180.0)


def test_rate_limiter_margin_stretches_each_window() -> None:
    grants = _limited(25, 60.0, [0.0] * 50, margin=0.01)
    assert grants[:25] == [0.0] * 25
    assert grants[25:] == pytest.approx([60.6] * 25)


def test_poll_gate_spaces_requests() -> None:
    ft = FakeTime()
    gate = PollGate(5.0, clock=ft.clock, sleep=ft.sleep)
    times: list[float] = []

    async def one() -> None:
        await gate.acquire()
        times.append(ft.now)

    async def go() -> None:
        await ft.run(*(one() for _ in range(6)))

    asyncio.run(go())
    assert times == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])


def test_breaker_opens_pauses_half_opens_and_aborts() -> None:
    ft = FakeTime()
    opened: list[float] = []
    breaker = CircuitBreaker(2, 60.0, 3, clock=ft.clock, sleep=ft.sleep, on_open=opened.append)

    async def go() -> None:
        await breaker.wait_if_open()  # closed: no wait
        assert ft.now == 0.0
        breaker.record(False)
        breaker.record(True)  # a success resets the consecutive count
        breaker.record(False)
        assert breaker.state == "closed"
        breaker.record(False)
        assert breaker.state == "open" and opened == [60.0]
        await breaker.wait_if_open()
        assert ft.now == pytest.approx(60.0) and breaker.state == "half_open"
        breaker.record(True)
        assert breaker.state == "closed"
        breaker.record(False)
        breaker.record(False)
        assert opened == [60.0, 60.0]
        await breaker.wait_if_open()
        breaker.record(False)  # a failed probe in half-open: third opening ends the run
        with pytest.raises(RunAbortedError, match="resume"):
            await breaker.wait_if_open()
        assert opened == [60.0, 60.0]  # the aborting opening is not announced as a pause

    async def main() -> None:
        await ft.run(go())

    asyncio.run(main())


def test_breaker_inside_call_with_retry_pauses_between_attempts() -> None:
    sleep = Recorder()
    breaker = CircuitBreaker(2, 60.0, 5, clock=lambda: 0.0, sleep=sleep)
    fn = Failing(*(RateLimitedError("503", status_code=503) for _ in range(2)))
    policy = RetryPolicy(attempts=5, max_wait=1.0, total=100.0)
    assert asyncio.run(call_with_retry(fn, policy, breaker=breaker, sleep=sleep)) == "ok"
    assert 60.0 in sleep.delays  # the breaker's pause happened before the third attempt
    assert breaker.state == "closed" and breaker.opens == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 12 ", 12.0),
        ("1.5", 1.5),
        ("0", 0.0),
        ("100000", 300.0),
        ("-1", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_parse_retry_after_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after(email.utils.formatdate(now + 42, usegmt=True), now=now) == 42.0
    assert parse_retry_after(email.utils.formatdate(now - 42, usegmt=True), now=now) == 0.0
    assert parse_retry_after(email.utils.formatdate(now + 4200, usegmt=True), now=now) == 300.0


def test_policy_from_settings() -> None:
    policy = RetryPolicy.from_settings(RetrySettings(attempts=4, max_wait=30.0, total=90.0))
    assert policy == RetryPolicy(attempts=4, max_wait=30.0, total=90.0, base=1.0)


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
