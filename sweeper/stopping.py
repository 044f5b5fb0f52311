"""Stopping a run: one event, one reason, and the one sleep that every wait of a run uses.

A run stops submitting for one of four reasons (``StopReason``). Whatever the reason, every wait
of the run (a rate-limit slot, a ``Retry-After`` or backoff sleep, a breaker pause, a poll
interval, the settle time before a resend) goes through ``StopController.sleep``, which returns
at once with ``Stopped`` when the run is told to stop. So an interrupt never waits behind a
minute-long pause, and no POST leaves after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

from sweeper.errors import SweeperError


class StopReason(enum.Enum):
    """Why a run stopped submitting."""

    INTERRUPTED = "interrupted"  # SIGINT / SIGTERM (or a caller's request)
    ABORTED = "aborted"  # the run could not go on: auth, unreachable API, breaker, budget
    TIMED_OUT = "timed_out"  # run.timeout was reached


class Stopped(Exception):
    """Raised by ``StopController.sleep`` when the run is told to stop."""


class StopController:
    """The run's stop switch: first interrupt stops submitting, a second one also cancels.

    ``cancel_on_interrupt`` makes the first interrupt cancel the running job groups too.
    """

    def __init__(self, *, cancel_on_interrupt: bool = False) -> None:
        self.cancel_on_interrupt = cancel_on_interrupt
        self.reason: StopReason | None = None
        self.error: SweeperError | None = None  # why an aborted run aborted
        self.cancel_requested = False
        self.interrupts = 0
        self._event: asyncio.Event | None = None  # made inside the running loop

    @property
    def event(self) -> asyncio.Event:
        if self._event is None:
            self._event = asyncio.Event()
            if self.reason is not None:
                self._event.set()
        return self._event

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def stop(self, reason: StopReason, error: SweeperError | None = None) -> None:
        """Submit nothing new from now on; the first reason given is the one that counts."""
        if self.reason is None:
            self.reason = reason
            self.error = error
        if self._event is not None:
            self._event.set()

    def interrupt(self) -> None:
        """A signal: the first stops submitting, the second (or the first, with
        ``cancel_on_interrupt``) also asks to cancel the job groups still running."""
        self.interrupts += 1
        if self.interrupts > 1 or self.cancel_on_interrupt:
            self.cancel_requested = True
        self.stop(StopReason.INTERRUPTED)

    async def sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or raise ``Stopped`` as soon as the run is told to stop."""
        if self.stopped:
            raise Stopped
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout=max(0.0, seconds))
        if self.stopped:
            raise Stopped
