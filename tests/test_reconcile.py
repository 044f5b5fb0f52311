"""Resume after a crash: a last row `intent` or `in_doubt` is reconciled, never duplicated."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from sweeper.config import load_config
from sweeper.emulator import FaultSettings
from sweeper.ledger import Event, Ledger, LedgerRow, read_ledger, utc_timestamp
from sweeper.planner import Planner
from tests.emulator_server import FakeClock
from tests.reliab_support import emulator_app, oracle, run_library, write_sweep

SIX = 'Region = ["01", "02", "03"]\nvarReferenceType = ["PROD", "TEST"]'
AS_OF = datetime(2026, 11, 29, tzinfo=timezone.utc)


class Crash(Exception):
    """Stands for the process dying in the middle of a request."""


def _sweep(project: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("matrix", SIX)
    kwargs.setdefault("run", {"concurrency": 1})
    return write_sweep(project / "configs" / "s.toml", name="s", base_url="embedded", **kwargs)


def _crashing(app: Any, *, after_server: bool) -> httpx.MockTransport:
    """A transport that dies on the first POST, before or after the server handled it."""
    asgi = httpx.ASGITransport(app=app)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v4/jobGroups":
            if after_server:
                await asgi.handle_async_request(request)
            raise Crash
        return await asgi.handle_async_request(request)

    return httpx.MockTransport(handler)


def _crash_once(config: Path, app: Any, *, after_server: bool) -> LedgerRow:
    with pytest.raises(Crash):
        run_library(config, _crashing(app, after_server=after_server))
    rows = read_ledger(Path("results/s.csv"))
    assert [r.event for r in rows] == [Event.INTENT]
    return rows[0]


def _per_combo(app: Any) -> Counter[tuple[str, ...]]:
    return Counter(tuple(sorted(g["params"].items())) for g in oracle(app, "jobGroups"))  # type: ignore[misc]


@pytest.mark.parametrize("after_server", [True, False])
def test_crash_mid_post_then_resume_creates_each_combination_once(
    project: Path, after_server: bool
) -> None:
    app = emulator_app(project / "emu")
    config = _sweep(project)
    intent = _crash_once(config, app, after_server=after_server)
    assert oracle(app)["created"] == (1 if after_server else 0)

    summary, events = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 0 and summary.succeeded == 6
    rows = [r for r in read_ledger(Path("results/s.csv")) if r.combo_id == intent.combo_id]
    assert {r.execution_id for r in rows} == {intent.execution_id}  # never a new identity
    after = [r.event for r in rows[1:]]
    groups = {tuple(sorted(g["params"].items())): g for g in oracle(app, "jobGroups")}
    group = groups[tuple(sorted(intent.params.items()))]
    if after_server:
        # 304 for the same execution id, then a lookup gives the ledger the real id.
        assert after[:2] == [Event.INTENT, Event.RECONCILED]
        assert rows[2].job_group_id == group["id"] and rows[2].http_status == 304
    else:
        assert after[:2] == [Event.INTENT, Event.SUBMITTED]
    assert after[-1] is Event.FINISHED and rows[-1].job_group_id == group["id"]
    assert set(_per_combo(app).values()) == {1} and len(_per_combo(app)) == 6
    assert any(e.kind == "submit" and "resend" in e.message for e in events)


def test_in_doubt_after_created_then_500_is_reconciled_on_resume(project: Path) -> None:
    faulty = emulator_app(project / "emu", faults=FaultSettings(error_after_rate=1.0))
    config = _sweep(project, retry={"attempts": 1}, run={"concurrency": 2})
    first, _ = run_library(config, httpx.ASGITransport(app=faulty))
    assert first.exit_code == 3 and first.in_doubt == 6
    assert oracle(faulty)["created"] == 6

    healthy = emulator_app(project / "emu")  # same server state, the faults are gone
    again, _ = run_library(config, httpx.ASGITransport(app=healthy))
    assert again.exit_code == 0 and again.succeeded == 6 and again.submitted == 0
    assert again.duplicates == 6
    stats = oracle(healthy)
    assert stats["created"] == 6 and stats["duplicate_creations_by_params"] == 0
    rows = read_ledger(Path("results/s.csv"))
    ids = {r.combo_id: r.job_group_id for r in rows if r.event is Event.RECONCILED}
    assert len(ids) == 6 and all(ids.values())


def test_resend_uses_the_execution_id_in_the_ledger_not_a_recomputed_one(project: Path) -> None:
    app = emulator_app(project / "emu")
    config = _sweep(project, matrix='Region = ["01"]')
    cfg = load_config(config)
    item = next(iter(Planner(cfg, history=[], run_id="r1", as_of=AS_OF)))
    written = "swp-written-by-an-earlier-sweeper-version"
    with Ledger.open(cfg.sweep.ledger, sweep="s", param_names=["Region"]) as ledger:
        ledger.append(
            LedgerRow(
                ts=utc_timestamp(),
                sweep="s",
                run_id="r1",
                combo_id=item.combo.combo_id,
                event=Event.INTENT,
                attempt=1,
                execution_id=written,
                params=item.combo.params,
            )
        )
    sent: list[str] = []
    asgi = httpx.ASGITransport(app=app)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            sent.append(request.headers["x-execution-id"])
        return await asgi.handle_async_request(request)

    summary, _ = run_library(config, httpx.MockTransport(handler))
    assert summary.exit_code == 0
    assert sent == [written]
    assert {g["executionId"] for g in oracle(app, "jobGroups")} == {written}


def test_lookup_reaches_back_to_the_first_attempt_across_resumes(project: Path) -> None:
    """Created two hours ago by attempt 1; attempt 2 (a later resume) died too; now: found."""
    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    clock = FakeClock(two_hours_ago.timestamp())
    app = emulator_app(project / "emu", clock=clock)
    config = _sweep(project, matrix='Region = ["01"]')
    cfg = load_config(config)
    item = next(iter(Planner(cfg, history=[], run_id="r1", as_of=AS_OF)))

    async def lost_attempt() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            response = await client.post(
                "/v4/jobGroups",
                json=dict(item.body),
                headers={"x-execution-id": item.execution_id, "Authorization": "Bearer t"},
            )
            assert response.status_code == 201

    asyncio.run(lost_attempt())
    with Ledger.open(cfg.sweep.ledger, sweep="s", param_names=["Region"]) as ledger:
        for attempt, when in ((1, two_hours_ago), (2, datetime.now(timezone.utc))):
            ledger.append(
                LedgerRow(
                    ts=utc_timestamp(when),
                    sweep="s",
                    run_id="r1",
                    combo_id=item.combo.combo_id,
                    event=Event.INTENT,
                    attempt=attempt,
                    execution_id=item.execution_id,
                    params=item.combo.params,
                )
            )
    clock.advance(2 * 3600)
    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 0
    rows = read_ledger(Path("results/s.csv"))
    reconciled = [r for r in rows if r.event is Event.RECONCILED]
    assert len(reconciled) == 1 and reconciled[0].job_group_id == 1
    assert oracle(app)["created"] == 1


def test_resume_waits_for_in_flight_requests_to_settle(project: Path) -> None:
    app = emulator_app(project / "emu")
    config = _sweep(
        project, matrix='Region = ["01", "02"]', run={"concurrency": 1, "settle": "0.3s"}
    )
    _crash_once(config, app, after_server=True)
    summary, events = run_library(config, httpx.ASGITransport(app=app))
    settles = [e for e in events if e.kind == "settle"]
    assert len(settles) == 1 and settles[0].item is not None
    wait = float(settles[0].message.split("waiting ")[1].split("s")[0])
    assert 0 < wait <= 0.3
    assert summary.exit_code == 0 and oracle(app)["created"] == 2


def test_304_without_a_match_is_recorded_and_never_resubmitted_under_a_new_id(
    project: Path,
) -> None:
    """The server has the execution id but its listing shows no matching group: stay in doubt."""
    app = emulator_app(project / "emu")
    config = _sweep(project, matrix='Region = ["01"]')
    cfg = load_config(config)
    item = next(iter(Planner(cfg, history=[], run_id="r1", as_of=AS_OF)))
    other = {
        **item.body,
        "runParameters": {"overrides": {"data": [{"key": "Region", "value": "09"}]}},
    }

    async def someone_else() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as client:
            await client.post(
                "/v4/jobGroups",
                json=other,
                headers={"x-execution-id": item.execution_id, "Authorization": "Bearer t"},
            )

    asyncio.run(someone_else())
    for _ in range(2):
        summary, _ = run_library(config, httpx.ASGITransport(app=app))
        assert summary.exit_code == 3
    rows = read_ledger(Path("results/s.csv"))
    assert {r.execution_id for r in rows} == {item.execution_id}
    assert [r.event for r in rows].count(Event.SUBMITTED) == 0
    assert oracle(app)["created"] == 1


def test_attempts_count_within_the_generation_across_resumes(project: Path) -> None:
    """Attempt 1 died with the process; the resume's resend is attempt 2, as the ledger says."""
    app = emulator_app(project / "emu")
    config = _sweep(project)
    intent = _crash_once(config, app, after_server=False)
    assert intent.attempt == 1
    run_library(config, httpx.ASGITransport(app=app))
    rows = [r for r in read_ledger(Path("results/s.csv")) if r.combo_id == intent.combo_id]
    assert [r.attempt for r in rows if r.event is Event.INTENT] == [1, 2]


def test_in_doubt_then_429_stays_in_doubt_and_resumes_once(project: Path) -> None:
    """Attempt 1 created the group but answered 500; every retry then got 429. The group
    exists, so the combination is in doubt (not `not_sent`) and a resume reconciles it."""
    app = emulator_app(project / "emu")
    asgi = httpx.ASGITransport(app=app)
    posts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v4/jobGroups":
            posts.append(request.headers["x-execution-id"])
            if len(posts) == 1:
                await asgi.handle_async_request(request)  # created...
                return httpx.Response(500)  # ...but the answer is lost
            return httpx.Response(429, headers={"x-retry-after": "0"})
        return await asgi.handle_async_request(request)

    config = _sweep(project, matrix='Region = ["01"]', retry={"attempts": 3})
    first, _ = run_library(config, httpx.MockTransport(handler))
    assert len(posts) == 3 and len(set(posts)) == 1
    assert first.exit_code == 3 and first.in_doubt == 1 and first.not_sent == 0
    (last,) = {r.combo_id: r for r in read_ledger(Path("results/s.csv"))}.values()
    assert last.event is Event.IN_DOUBT

    again, _ = run_library(config, httpx.ASGITransport(app=app))
    assert again.exit_code == 0 and again.succeeded == 1 and again.duplicates == 1
    assert oracle(app)["created"] == 1


def test_a_lost_ledger_is_rebuilt_from_the_platform_without_creating_anything(
    project: Path,
) -> None:
    """The groups were made two hours ago and the ledger is gone: every POST gets 304, the
    lookup reaches back to the start of the run (not just to this process's first attempt),
    and each combination is recorded with its group."""
    two_hours_ago = datetime.now(timezone.utc) - timedelta(hours=2)
    clock = FakeClock(two_hours_ago.timestamp())
    app = emulator_app(project / "emu", clock=clock)
    config = _sweep(project)
    run_id = two_hours_ago.date().isoformat()
    first, _ = run_library(config, httpx.ASGITransport(app=app), run_id=run_id, wait=False)
    assert first.submitted == 6 and oracle(app)["created"] == 6
    Path("results/s.csv").unlink()
    clock.advance(2 * 3600)  # the jobs have long ended

    again, _ = run_library(config, httpx.ASGITransport(app=app), run_id=run_id)
    assert again.exit_code == 0 and again.succeeded == 6
    assert again.duplicates == 6 and again.submitted == 0
    assert oracle(app)["created"] == 6
    rows = read_ledger(Path("results/s.csv"))
    found = {r.combo_id: r.job_group_id for r in rows if r.event is Event.DUPLICATE}
    assert len(found) == 6 and all(found.values())


TWELVE = 'Region = ["01", "02", "03", "04", "05", "06"]\nvarReferenceType = ["PROD", "TEST"]'
# Per target: the oracle's listing of what a POST creates, and the ledger column of its id.
CREATED = {
    "dataset": ("jobGroups", "job_group_id"),
    "flow": ("flowRuns", "flow_run_id"),
    "plan": ("planRuns", "flow_run_id"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", list(CREATED))
def test_created_then_500_and_dropped_connections_create_each_run_once(
    project: Path, target: Literal["dataset", "flow", "plan"]
) -> None:
    """30 % of the POSTs that create answer 500 and 10 % drop the connection (seeded): every
    resend carries the same execution id, gets 304 and the lookup finds the run. The sweep ends
    with exit 0 after at most one resume; each combination's job group, flow run or plan run
    exists exactly once, and the ledger holds its id."""
    app = emulator_app(
        project / "emu", faults=FaultSettings(error_after_rate=0.3, drop_after_rate=0.1, seed=7)
    )
    config = write_sweep(
        project / "configs" / "s.toml", name="s", base_url="embedded", matrix=TWELVE, target=target
    )
    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    if summary.exit_code != 0:  # at most one resume
        summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 0, summary
    stats = oracle(app)
    faults = stats["faults_served"]
    assert faults.get("error_after", 0) > 0 and faults.get("drop_after", 0) > 0, faults
    assert stats["served_304"] >= faults["error_after"] + faults["drop_after"]

    listing, column = CREATED[target]
    runs = oracle(app, listing)
    rows = read_ledger(Path("results/s.csv"))
    last = {r.combo_id: r for r in rows}
    assert len(last) == 12
    assert len({(r.combo_id, r.execution_id) for r in rows}) == 12  # one identity each
    # The oracle: one run per combination, under its execution id, and nothing else.
    assert Counter(r["executionId"] for r in runs) == Counter(r.execution_id for r in last.values())
    run_of = {r["executionId"]: r["id"] for r in runs}
    for row in last.values():
        assert row.event is Event.FINISHED and row.status == "Complete", row
        assert getattr(row, column) == run_of[row.execution_id], row
