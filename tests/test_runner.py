"""The runner's safety promises, on the in-process emulator: write-ahead, auth, budgets, reruns."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from sweeper.emulator import FaultSettings
from sweeper.ledger import Event, read_ledger
from sweeper.runner import Interrupt, RunEvent
from tests.reliab_support import emulator_app, oracle, run_library, write_sweep

SIX = """
Region = ["01", "02", "03"]
varReferenceType = ["PROD", "TEST"]
"""


def _sweep(project: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("matrix", SIX)
    return write_sweep(project / "configs" / "s.toml", name="s", base_url="embedded", **kwargs)


def _events(rows: list[Any], combo: str) -> list[str]:
    return [r.event.value for r in rows if r.combo_id == combo]


def test_intent_row_is_on_disk_before_every_post(project: Path) -> None:
    """The ledger, read from disk by the server side at the moment of each POST, has the intent."""
    app = emulator_app(project / "emu", faults=FaultSettings(error_after_rate=0.5, seed=3))
    asgi = httpx.ASGITransport(app=app)
    ledger = project / "results" / "s.csv"
    seen: list[tuple[str, int]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v4/jobGroups":
            xid = request.headers["x-execution-id"]
            on_disk = [r for r in read_ledger(ledger) if r.execution_id == xid]
            assert on_disk, f"no ledger row for {xid} before its POST"
            assert on_disk[-1].event is Event.INTENT
            assert on_disk[-1].attempt == sum(1 for x, _ in seen if x == xid) + 1
            seen.append((xid, on_disk[-1].attempt))
        return await asgi.handle_async_request(request)

    summary, _ = run_library(_sweep(project), httpx.MockTransport(handler))
    assert summary.exit_code == 0
    assert len({x for x, _ in seen}) == 6
    assert any(attempt > 1 for _, attempt in seen)  # the 500-after-create path was exercised
    stats = oracle(app)
    assert stats["created"] == 6 and stats["duplicate_creations_by_params"] == 0


def test_each_submitted_row_is_on_disk_before_the_next_post(project: Path) -> None:
    """The runner does not wait for `submitted`, yet with one worker it precedes the next POST."""
    app = emulator_app(project / "emu")
    asgi = httpx.ASGITransport(app=app)
    ledger = project / "results" / "s.csv"
    created: list[str] = []  # execution ids answered 201, in order

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v4/jobGroups":
            submitted = {r.execution_id for r in read_ledger(ledger) if r.event is Event.SUBMITTED}
            assert set(created) <= submitted, "a submitted row was not on disk before the POST"
        response = await asgi.handle_async_request(request)
        if request.method == "POST" and response.status_code == 201:
            created.append(request.headers["x-execution-id"])
        return response

    config = _sweep(project, run={"concurrency": 1})
    summary, _ = run_library(config, httpx.MockTransport(handler), wait=False)
    assert summary.exit_code == 0 and len(created) == 6
    rows = read_ledger(ledger)
    assert Counter(r.event for r in rows) == {Event.INTENT: 6, Event.SUBMITTED: 6}


def test_refused_token_costs_exactly_one_post_and_leaves_a_resumable_ledger(
    project: Path,
) -> None:
    app = emulator_app(project / "emu", token="the-right-token")
    config = _sweep(project, run={"concurrency": 4})
    summary, _ = run_library(config, httpx.ASGITransport(app=app), token="a-wrong-token")
    assert summary.exit_code == 1
    assert "401" in summary.aborted or "credentials" in summary.aborted.lower()
    assert oracle(app)["posts_received"] == 1
    rows = read_ledger(project / "results" / "s.csv")
    assert [r.event for r in rows] == [Event.INTENT, Event.NOT_SENT]

    again, _ = run_library(config, httpx.ASGITransport(app=app), token="the-right-token")
    assert again.exit_code == 0 and again.succeeded == 6
    assert oracle(app)["created"] == 6


def test_breaker_pauses_says_so_and_ends_the_run_resumably(project: Path) -> None:
    faults = FaultSettings(rate_limit_rate=1.0, rate_limit_retry_after=0)
    app = emulator_app(project / "emu", faults=faults)
    config = _sweep(
        project,
        run={"concurrency": 2},
        retry={
            "attempts": 20,
            "breaker_threshold": 3,
            "breaker_pause": "0.05s",
            "breaker_max_opens": 2,
        },
    )
    summary, events = run_library(config, httpx.ASGITransport(app=app))
    paused = [e for e in events if e.kind == "paused"]
    assert paused and paused[0].message.startswith("PAUSED")
    assert summary.exit_code == 1
    assert "circuit breaker" in summary.aborted
    assert oracle(app)["created"] == 0
    last = {r.combo_id: r for r in read_ledger(project / "results" / "s.csv")}
    assert last and all(r.event is Event.NOT_SENT for r in last.values())

    calm = emulator_app(project / "emu")  # the storm passed: same server state, no faults
    again, _ = run_library(config, httpx.ASGITransport(app=calm))
    assert again.exit_code == 0 and again.succeeded == 6
    assert oracle(calm)["created"] == 6


def test_run_wide_retry_budget_stops_a_storm(project: Path) -> None:
    faults = FaultSettings(error_before_rate=1.0, error_status=502)
    app = emulator_app(project / "emu", faults=faults)
    matrix = 'Region = ["01", "02", "03", "04"]\nbatch = { start = 1, end = 10 }'
    config = _sweep(
        project,
        matrix=matrix,
        run={"concurrency": 2},
        retry={"attempts": 50, "budget": 0, "breaker_threshold": 1000},
    )
    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 1
    assert "retry budget" in summary.aborted
    posts = oracle(app)["posts_received"]
    # budget 0: at most 10 retries across the run, on top of one POST per combination started
    assert posts <= 40 + 10 and posts < 40 * 2
    rows = read_ledger(project / "results" / "s.csv")
    last = {r.combo_id: r for r in rows}
    assert all(r.event in (Event.IN_DOUBT, Event.NOT_SENT) for r in last.values())


def test_rerun_failed_is_a_new_generation_with_its_own_execution_id(project: Path) -> None:
    faults = FaultSettings(fail_params={"Region": ("02",)}, error_after_rate=0.3, seed=5)
    app = emulator_app(project / "emu", faults=faults)
    config = _sweep(project)
    first, _ = run_library(config, httpx.ASGITransport(app=app))
    assert first.exit_code == 3 and first.failed == 2 and first.succeeded == 4

    again, _ = run_library(config, httpx.ASGITransport(app=app), rerun="failed")
    assert again.failed == 2 and again.skipped == 4

    rows = read_ledger(project / "results" / "s.csv")
    by_combo: dict[str, list[Any]] = {}
    for row in rows:
        by_combo.setdefault(row.combo_id, []).append(row)
    for combo_rows in by_combo.values():
        failing = combo_rows[0].params["Region"] == "02"
        generations = {r.generation for r in combo_rows}
        assert generations == ({0, 1} if failing else {0})
        for gen in generations:  # retries and resumes never change a generation's identity
            assert len({r.execution_id for r in combo_rows if r.generation == gen}) == 1
        if failing:
            xids = {r.generation: r.execution_id for r in combo_rows}
            assert xids[0] != xids[1]
    created = Counter(
        (g["params"]["Region"], g["params"]["varReferenceType"]) for g in oracle(app, "jobGroups")
    )
    assert created == {
        (r, t): 2 if r == "02" else 1 for r in ("01", "02", "03") for t in ("PROD", "TEST")
    }
    assert not oracle(app)["duplicates_by_execution_id"]


def test_second_signal_cancels_running_groups_and_records_it(project: Path) -> None:
    app = emulator_app(project / "emu", faults=FaultSettings(slow_factor=1000.0))
    config = _sweep(project)
    interrupt = Interrupt()
    submitted: list[RunEvent] = []

    def on_event(event: RunEvent) -> None:
        if event.kind == "submitted":
            submitted.append(event)
            if len(submitted) == 3:
                interrupt.signal()
                interrupt.signal()

    summary, _ = run_library(
        config, httpx.ASGITransport(app=app), interrupt=interrupt, on_event=on_event
    )
    assert summary.exit_code == 1 and summary.interrupted
    rows = read_ledger(project / "results" / "s.csv")
    canceled = [r for r in rows if r.event is Event.CANCELED]
    assert len(canceled) == len(submitted) >= 3
    groups = {g["id"]: g for g in oracle(app, "jobGroups")}
    assert all(groups[r.job_group_id]["status"] == "Canceled" for r in canceled)
    assert len(groups) == len(submitted)  # nothing new after the signal (in flight: recorded)


@pytest.mark.parametrize("cancel", [False, True])
def test_first_signal_stops_submitting_and_keeps_groups_running(
    project: Path, cancel: bool
) -> None:
    app = emulator_app(project / "emu", faults=FaultSettings(slow_factor=1000.0))
    config = _sweep(project, run={"concurrency": 1})
    interrupt = Interrupt(cancel_on_interrupt=cancel)

    def on_event(event: RunEvent) -> None:
        if event.kind == "submitted":
            interrupt.signal()

    summary, _ = run_library(
        config, httpx.ASGITransport(app=app), interrupt=interrupt, on_event=on_event
    )
    assert summary.exit_code == 1
    groups = oracle(app, "jobGroups")
    assert len(groups) == 1
    assert groups[0]["status"] == ("Canceled" if cancel else "InProgress") or (
        not cancel and groups[0]["status"] == "Created"
    )
    last = {r.combo_id: r for r in read_ledger(project / "results" / "s.csv")}
    assert len(last) == 1
    (row,) = last.values()
    assert row.event is (Event.CANCELED if cancel else Event.SUBMITTED)


def test_unreachable_api_stops_the_run_after_one_combinations_retries(project: Path) -> None:
    attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.headers.get("x-execution-id", ""))
        raise httpx.ConnectError("connection refused", request=request)

    config = _sweep(project, run={"concurrency": 4}, retry={"attempts": 3})
    summary, _ = run_library(config, httpx.MockTransport(handler))
    assert summary.exit_code == 1
    assert "unreachable" in summary.aborted
    assert len(attempts) == 3 and len(set(attempts)) == 1  # one combination, alone, retried
    rows = read_ledger(project / "results" / "s.csv")
    assert [r.event for r in rows] == [Event.INTENT] * 3 + [Event.NOT_SENT]


def test_cli_says_paused_on_stderr_and_exits_1_when_the_storm_does_not_pass(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from sweeper.cli import cli
    from sweeper.emulator import EmulatorSettings
    from tests.emulator_server import running_emulator

    faults = FaultSettings(rate_limit_rate=1.0, rate_limit_retry_after=0)
    with running_emulator(EmulatorSettings(faults=faults, output_root=project)) as url:
        config = write_sweep(
            project / "configs" / "storm.toml",
            name="storm",
            base_url=url,
            matrix=SIX,
            retry={"attempts": 20, "breaker_threshold": 3, "breaker_pause": "0.05s"},
        )
        monkeypatch.setenv("RELIAB_TOKEN", "storm-token")
        result = CliRunner().invoke(cli, ["run", str(config), "--quiet"])
    assert result.exit_code == 1, result.output + result.stderr
    assert "PAUSED" in result.stderr
    assert "circuit breaker" in result.output and "resume" in result.output


def test_every_ledger_state_has_a_summary_bucket() -> None:
    """The run summary and `sweeper status`/`report` classify rows with one vocabulary."""
    from sweeper.runner import SUMMARY_BUCKET, classify
    from sweeper.state import State

    assert set(SUMMARY_BUCKET) == set(State)
    assert classify(None) == "pending"
