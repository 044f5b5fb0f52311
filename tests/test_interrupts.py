"""Interrupts are instant and cancel means cancel, whatever the run is waiting on.

Each scenario puts the run into one kind of wait that would last an hour (a rate-limit slot, a
429's back-off, a breaker pause, a poll interval) and interrupts it there. The run must return
at once (the test's timeout is far below the wait), send no POST after the interrupt, record
every request's outcome, and exit 1. A second interrupt also cancels the job groups still running
and records ``canceled`` rows.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from sweeper.emulator import FaultSettings
from sweeper.journal import EventKind, RunEvent
from sweeper.ledger import Event, read_ledger
from sweeper.stopping import StopController
from tests.reliab_support import (
    emulator_app,
    oracle,
    run_library,
    served_emulator,
    sweeper_argv,
    write_sweep,
)

THREE = 'Region = ["01", "02", "03"]'
HOUR = "1h"


def _sweep(project: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("matrix", THREE)
    return write_sweep(project / "configs" / "s.toml", name="s", base_url="embedded", **kwargs)


class CountingPosts(httpx.AsyncBaseTransport):
    """Passes requests to the in-process emulator and counts the POSTs that reach it."""

    def __init__(self, app: Any) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.posts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v4/jobGroups":
            self.posts += 1
        return await self.inner.handle_async_request(request)


def _run(
    project: Path,
    config: Path,
    app: Any,
    when: EventKind,
    times: int,
) -> tuple[Any, CountingPosts, list[int]]:
    stop = StopController()
    transport = CountingPosts(app)
    posts_at_interrupt: list[int] = []

    def on_event(event: RunEvent) -> None:
        if event.kind is when and not posts_at_interrupt:
            posts_at_interrupt.append(-1)

            def fire() -> None:
                posts_at_interrupt[0] = transport.posts
                for _ in range(times):
                    stop.interrupt()

            asyncio.get_running_loop().call_later(0.2, fire)

    summary, _ = run_library(config, transport, stop=stop, on_event=on_event)
    return summary, transport, posts_at_interrupt


def _last_rows(project: Path) -> dict[str, Any]:
    return {r.combo_id: r for r in read_ledger(project / "results" / "s.csv")}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("times", [1, 2])
def test_interrupt_during_a_rate_limit_wait(project: Path, times: int) -> None:
    """One POST a day: the second combination waits for its slot, and the interrupt ends that."""
    app = emulator_app(project / "emu", faults=FaultSettings(slow_factor=1000.0))
    config = _sweep(project, run={"rate": "1/h", "concurrency": 2})
    summary, transport, at = _run(project, config, app, EventKind.SUBMITTED, times)
    assert summary.exit_code == 1 and summary.interrupted
    assert transport.posts == at[0] == 1  # nothing was sent after the interrupt
    (row,) = _last_rows(project).values()
    group = oracle(app, "jobGroups")[0]
    if times == 1:
        assert row.event is Event.SUBMITTED and group["status"] != "Canceled"
    else:
        assert row.event is Event.CANCELED and group["status"] == "Canceled"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("times", [1, 2])
def test_interrupt_during_a_429_back_off(project: Path, times: int) -> None:
    """The platform asks for an hour's wait; the interrupt ends it, and 429 means not created."""
    faults = FaultSettings(rate_limit_rate=1.0, rate_limit_retry_after=3600)
    app = emulator_app(project / "emu", faults=faults)
    config = _sweep(
        project,
        run={"concurrency": 1},
        retry={"attempts": 5, "max_wait": HOUR, "total": "2h", "breaker_threshold": 100},
    )
    summary, transport, at = _run(project, config, app, EventKind.RETRY, times)
    assert summary.exit_code == 1 and summary.interrupted
    assert transport.posts == at[0] == 1
    (row,) = _last_rows(project).values()
    assert row.event is Event.NOT_SENT and row.http_status == 429
    assert "interrupted" in row.error
    assert oracle(app)["created"] == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("times", [1, 2])
def test_interrupt_during_a_breaker_pause(project: Path, times: int) -> None:
    """Refusals open the breaker for an hour; the interrupt ends the pause."""
    faults = FaultSettings(rate_limit_rate=1.0, rate_limit_retry_after=0)
    app = emulator_app(project / "emu", faults=faults)
    config = _sweep(
        project,
        run={"concurrency": 1},
        retry={
            "attempts": 10,
            "max_wait": "0.01s",
            "breaker_threshold": 2,
            "breaker_pause": HOUR,
            "breaker_max_opens": 5,
        },
    )
    summary, transport, at = _run(project, config, app, EventKind.PAUSED, times)
    assert summary.exit_code == 1 and summary.interrupted
    assert transport.posts == at[0] == 2  # the two refusals that opened it
    (row,) = _last_rows(project).values()
    assert row.event is Event.NOT_SENT and row.attempt == 2
    assert oracle(app)["created"] == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("times", [1, 2])
def test_interrupt_during_polling(project: Path, times: int) -> None:
    """Every group submitted, polls an hour apart: the interrupt ends the wait; twice cancels."""
    app = emulator_app(project / "emu", faults=FaultSettings(slow_factor=1000.0))
    config = _sweep(project, run={"poll_interval": HOUR, "poll_max_interval": HOUR})
    stop = StopController()
    transport = CountingPosts(app)
    submitted: list[RunEvent] = []

    def interrupt(times: int) -> None:
        for _ in range(times):
            stop.interrupt()

    def on_event(event: RunEvent) -> None:
        if event.kind is EventKind.SUBMITTED:
            submitted.append(event)
            if len(submitted) == 3:
                loop = asyncio.get_running_loop()
                loop.call_later(0.2, interrupt, times)

    summary, _ = run_library(config, transport, stop=stop, on_event=on_event)
    assert summary.exit_code == 1 and summary.interrupted
    assert transport.posts == 3
    rows = _last_rows(project)
    groups = oracle(app, "jobGroups")
    if times == 1:
        assert {r.event for r in rows.values()} == {Event.SUBMITTED}
        assert all(g["status"] != "Canceled" for g in groups)
    else:
        assert {r.event for r in rows.values()} == {Event.CANCELED}
        assert all(g["status"] == "Canceled" for g in groups)


@pytest.mark.timeout(30)
def test_a_post_on_the_wire_at_the_interrupt_gets_its_outcome_row(project: Path) -> None:
    app = emulator_app(project / "emu", faults=FaultSettings(slow_factor=1000.0))
    inner = httpx.ASGITransport(app=app)
    stop = StopController()

    async def slow_post(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v4/jobGroups":
            stop.interrupt()  # the signal lands while this POST is on the wire
            await asyncio.sleep(0.3)
        return await inner.handle_async_request(request)

    config = _sweep(project, run={"concurrency": 1})
    summary, _ = run_library(config, httpx.MockTransport(slow_post), stop=stop)
    assert summary.exit_code == 1
    rows = read_ledger(project / "results" / "s.csv")
    assert [r.event for r in rows] == [Event.INTENT, Event.SUBMITTED]
    assert oracle(app)["created"] == 1


@pytest.mark.timeout(60)
def test_sigint_to_sweeper_run_during_a_429_back_off_exits_1_at_once(tmp_path: Path) -> None:
    """The real thing: SIGINT to a `sweeper run` process that waits out an hour-long 429."""
    faults = """
    [rate_limit]
    rate = 1.0
    retry_after = 3600
    """
    with served_emulator(tmp_path / "emu", faults=faults) as url:
        config = write_sweep(
            tmp_path / "s.toml",
            name="s",
            base_url=url,
            matrix=THREE,
            run={"concurrency": 1},
            retry={"attempts": 5, "max_wait": HOUR, "total": "2h", "breaker_threshold": 100},
        )
        env = {**os.environ, "RELIAB_TOKEN": "interrupt-token"}
        proc = subprocess.Popen(
            sweeper_argv("run", str(config), "-v"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            for line in proc.stderr:  # wait until it is in the back-off
                if "retrying in" in line:
                    break
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stats = httpx.get(f"{url}/_emulator/stats", timeout=5).json()
    assert proc.returncode == 1, out + err
    assert "resume" in out + err
    assert stats["created"] == 0
    rows = read_ledger(tmp_path / "results" / "s.csv")
    assert [r.event for r in rows] == [Event.INTENT, Event.NOT_SENT]
