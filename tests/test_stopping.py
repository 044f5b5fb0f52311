"""StopController: the stop reason, interrupts, and the interruptible sleep every wait goes through.

No test asserts on elapsed time: a sleep that should end early is awaited under a generous
``asyncio.wait_for`` timeout, far shorter than the sleep itself.
"""

from __future__ import annotations

import asyncio

import pytest

from sweeper.errors import RunAbortedError
from sweeper.pacing import Pacer
from sweeper.stopping import StopController, Stopped, StopReason

LONG = 60.0  # a sleep that must never run its course in these tests
DEADLINE = 5.0  # how long a test waits for something that should happen at once


async def _stop_soon(stop: StopController, reason: StopReason = StopReason.INTERRUPTED) -> None:
    await asyncio.sleep(0.05)
    stop.stop(reason)


def test_sleep_returns_after_the_time_when_not_stopped() -> None:
    stop = StopController()

    async def go() -> None:
        await asyncio.wait_for(stop.sleep(0.01), DEADLINE)
        await asyncio.wait_for(stop.sleep(0.0), DEADLINE)
        await asyncio.wait_for(stop.sleep(-1.0), DEADLINE)  # a negative wait is no wait

    asyncio.run(go())
    assert not stop.stopped and stop.reason is None


def test_sleep_raises_at_once_when_already_stopped() -> None:
    stop = StopController()
    stop.stop(StopReason.TIMED_OUT)  # before any event loop exists

    async def go() -> None:
        with pytest.raises(Stopped):
            await asyncio.wait_for(stop.sleep(LONG), DEADLINE)
        with pytest.raises(Stopped):
            await asyncio.wait_for(stop.sleep(0.0), DEADLINE)

    asyncio.run(go())


def test_sleep_raises_when_stopped_while_another_sleep_made_the_event() -> None:
    stop = StopController()

    async def go() -> None:
        await stop.sleep(0.0)  # the event now exists in this loop
        stop.stop(StopReason.ABORTED)
        assert stop.event.is_set()
        with pytest.raises(Stopped):
            await asyncio.wait_for(stop.sleep(LONG), DEADLINE)

    asyncio.run(go())


@pytest.mark.parametrize("how", ["stop", "interrupt"])
def test_stop_during_a_long_sleep_ends_it_promptly(how: str) -> None:
    stop = StopController()

    async def stopper() -> None:
        await asyncio.sleep(0.05)
        if how == "stop":
            stop.stop(StopReason.INTERRUPTED)
        else:
            stop.interrupt()

    async def go() -> None:
        other = asyncio.create_task(stopper())
        with pytest.raises(Stopped):
            await asyncio.wait_for(stop.sleep(LONG), DEADLINE)  # TimeoutError would fail
        await other

    asyncio.run(go())
    assert stop.reason is StopReason.INTERRUPTED


def test_one_stop_ends_every_waiting_sleep() -> None:
    stop = StopController()

    async def go() -> list[BaseException | None]:
        sleepers = [asyncio.create_task(stop.sleep(LONG)) for _ in range(5)]
        stopper = asyncio.create_task(_stop_soon(stop))
        results = await asyncio.wait_for(
            asyncio.gather(*sleepers, return_exceptions=True), DEADLINE
        )
        await stopper
        return list(results)

    results = asyncio.run(go())
    assert all(isinstance(r, Stopped) for r in results)


def test_first_reason_wins() -> None:
    stop = StopController()
    error = RunAbortedError("breaker tripped")
    assert not stop.stopped
    stop.stop(StopReason.ABORTED, error)
    stop.stop(StopReason.INTERRUPTED)
    stop.stop(StopReason.TIMED_OUT, RunAbortedError("later"))
    assert stop.stopped
    assert stop.reason is StopReason.ABORTED
    assert stop.error is error


def test_interrupt_after_another_stop_keeps_the_reason() -> None:
    stop = StopController()
    stop.stop(StopReason.TIMED_OUT)
    stop.interrupt()
    assert stop.reason is StopReason.TIMED_OUT
    assert not stop.cancel_requested


def test_first_interrupt_stops_second_also_cancels() -> None:
    stop = StopController()
    stop.interrupt()
    assert stop.stopped and stop.reason is StopReason.INTERRUPTED
    assert not stop.cancel_requested
    stop.interrupt()
    assert stop.cancel_requested
    assert stop.interrupts == 2


def test_cancel_on_interrupt_cancels_on_the_first() -> None:
    stop = StopController(cancel_on_interrupt=True)
    assert not stop.cancel_requested
    stop.interrupt()
    assert stop.cancel_requested and stop.reason is StopReason.INTERRUPTED


def test_stop_alone_never_requests_cancel() -> None:
    stop = StopController(cancel_on_interrupt=True)
    stop.stop(StopReason.ABORTED)
    stop.stop(StopReason.INTERRUPTED)
    assert not stop.cancel_requested


def test_pacer_waiting_for_a_slot_raises_stopped_on_stop() -> None:
    stop = StopController()
    pacer = Pacer(1, LONG, sleep=stop.sleep)  # one grant a minute, real clock

    async def go() -> None:
        await asyncio.wait_for(pacer.acquire(), DEADLINE)  # the first slot is free
        stopper = asyncio.create_task(_stop_soon(stop))
        with pytest.raises(Stopped):
            await asyncio.wait_for(pacer.acquire(), DEADLINE)  # would wait ~60 s
        await stopper

    asyncio.run(go())
