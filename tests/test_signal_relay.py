"""SignalRelay: signals before, during and after a run, delivered to this very process."""

from __future__ import annotations

import asyncio
import signal

import pytest

from sweeper.signals import SignalRelay


def test_before_the_run_a_signal_aborts_the_command() -> None:
    with SignalRelay(), pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)


def test_during_the_run_signals_reach_the_loop_and_do_not_raise() -> None:
    got: list[str] = []

    async def run(relay: SignalRelay) -> None:
        with relay.attached(lambda: got.append("signal")):
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
            for _ in range(100):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.01)

    with SignalRelay() as relay:
        asyncio.run(run(relay))
    assert got == ["signal", "signal"]


def test_after_the_run_a_late_signal_is_counted_not_fatal() -> None:
    async def run(relay: SignalRelay) -> None:
        with relay.attached(lambda: None):
            await asyncio.sleep(0)

    with SignalRelay() as relay:
        asyncio.run(run(relay))
        # Once the loop has closed asyncio would have put SIGTERM back to "terminate".
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    assert relay.late == 2


def test_previous_handlers_come_back() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with SignalRelay():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_without_restore_signals_stay_harmless_after_the_block() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    relay = SignalRelay(restore=False)
    try:
        with relay:
            pass
        # The process would now be shutting down: signals are ignored at the OS level, which
        # the interpreter's shutdown keeps (it resets only Python-level handlers).
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGTERM)  # would end this test run if it were not ignored
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
