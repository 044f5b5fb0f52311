"""Plan sweeps: the target key, the empty runPlan body, the ledger of a plan run, crash, resume."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from sweeper.config import load_config
from sweeper.emulator import FaultSettings
from sweeper.errors import ConfigError
from sweeper.ledger import Event, LedgerRow, read_ledger, state_of
from sweeper.matrix import Combination
from sweeper.state import State
from sweeper.template import RequestTemplate
from tests.reliab_support import emulator_app, oracle, run_library

PLAN_SWEEP = """\
[sweep]
name = "p"
plan = 5

[api]
base_url = "embedded"
token_env = "RELIAB_TOKEN"

[matrix]
repeat = ["1", "2"]

[run]
rate = "6000/min"
concurrency = 1
poll_interval = "0.1s"
poll_max_interval = "0.5s"
"""


class Crash(Exception):
    """Stands for the process dying in the middle of a request."""


def _plan_sweep(project: Path) -> Path:
    path = project / "configs" / "p.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(PLAN_SWEEP)
    return path


def _rows(project: Path) -> list[LedgerRow]:
    return read_ledger(project / "results" / "p.csv")


def test_a_plan_target_loads_with_its_own_rate_and_an_empty_body(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[sweep]\nname = "s"\nplan = 5\n[matrix]\nrepeat = ["1"]\n')
    cfg = load_config(path)
    assert cfg.sweep.is_plan and cfg.sweep.runs and cfg.sweep.dataset == 5
    assert (cfg.run.rate.count, cfg.run.rate.per_seconds) == (25, 60.0)
    template = RequestTemplate(cfg.sweep.dataset, cfg.overrides, plan=True)
    assert template.render(Combination({"repeat": "1"}, {"repeat": "1"}, "c1"), "r") == ({}, ())
    path.write_text(path.read_text() + '[overrides]\nexecution = "photon"\n')
    with pytest.raises(ConfigError, match="takes no overrides") as caught:
        load_config(path)
    assert caught.value.key == "overrides.execution"


def test_a_plan_sweep_submits_one_run_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    base = '[sweep]\nname = "s"\nplan = 5\n[matrix]\nrepeat = ["1", "2"]\n'
    path.write_text(base)
    assert load_config(path).run.concurrency == 1  # a recipe sweep's default is 4
    path.write_text(base + "[run]\nconcurrency = 4\n")
    with pytest.raises(ConfigError, match="one plan run at a time") as caught:
        load_config(path)
    assert caught.value.key == "run.concurrency"


def test_a_plan_sweep_records_each_run_and_a_rerun_submits_nothing(project: Path) -> None:
    app = emulator_app(project / "emu")
    config = _plan_sweep(project)
    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 0 and summary.succeeded == 2
    runs = oracle(app, "planRuns")
    assert [r["body"] for r in runs] == [{}, {}]  # the documented runPlan body: empty
    finished = [r for r in _rows(project) if r.event is Event.FINISHED]
    assert {r.flow_run_id for r in finished} == {r["id"] for r in runs}
    assert all(r.status == "Complete" for r in finished)
    again, _ = run_library(config, httpx.ASGITransport(app=app))
    assert again.exit_code == 0 and again.posts == 0
    assert oracle(app)["plan_runs_created"] == 2


def test_a_failed_job_group_fails_the_plan_run(project: Path) -> None:
    faults = FaultSettings(fail_params={"Region": ("01",)})
    app = emulator_app(project / "emu", faults=faults)
    summary, _ = run_library(_plan_sweep(project), httpx.ASGITransport(app=app))
    assert summary.exit_code != 0 and summary.succeeded == 0
    finished = [r for r in _rows(project) if r.event is Event.FINISHED]
    assert len(finished) == 2 and all(r.status == "Failed" for r in finished)
    assert all(f"plan run {r.flow_run_id} ended Failed" in r.error for r in finished)


def _crashing(app: Any, *, after_server: bool) -> httpx.MockTransport:
    """A transport that dies on the first runPlan POST, before or after the server handled it."""
    asgi = httpx.ASGITransport(app=app)
    crashed = False

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal crashed
        is_run_plan = request.method == "POST" and request.url.path.startswith("/v4/plans/")
        if is_run_plan and not crashed:
            crashed = True
            if after_server:
                await asgi.handle_async_request(request)
            raise Crash
        return await asgi.handle_async_request(request)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("after_server", [True, False])
def test_crash_mid_post_then_resume_creates_each_plan_run_once(
    project: Path, after_server: bool
) -> None:
    app = emulator_app(project / "emu")
    config = _plan_sweep(project)
    with pytest.raises(Crash):
        run_library(config, _crashing(app, after_server=after_server))
    (intent,) = _rows(project)
    assert intent.event is Event.INTENT
    assert oracle(app)["plan_runs_created"] == (1 if after_server else 0)

    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 0 and summary.succeeded == 2
    runs = oracle(app, "planRuns")
    assert len(runs) == 2  # one per combination: nothing created twice
    rows = [r for r in _rows(project) if r.combo_id == intent.combo_id]
    assert {r.execution_id for r in rows} == {intent.execution_id}
    (run,) = [x for x in runs if x["executionId"] == intent.execution_id]
    if after_server:
        reconciled = [r for r in rows if r.event is Event.RECONCILED]
        assert reconciled and reconciled[0].http_status == 304
        assert reconciled[0].flow_run_id == run["id"]
    assert rows[-1].event is Event.FINISHED and rows[-1].flow_run_id == run["id"]


def test_a_304_with_two_unclaimed_plan_runs_stays_in_doubt(project: Path) -> None:
    app = emulator_app(project / "emu")
    config = _plan_sweep(project)
    with pytest.raises(Crash):
        run_library(config, _crashing(app, after_server=True))
    # Someone else runs the same plan meanwhile: the lost run can no longer be told apart.
    transport = httpx.ASGITransport(app=app)

    async def other() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            r = await c.post("/v4/plans/5/run", headers={"Authorization": "Bearer t"})
            assert r.status_code == 201, r.text

    asyncio.run(other())
    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code != 0
    (intent, *rest) = _rows(project)
    mine = [r for r in rest if r.combo_id == intent.combo_id]
    assert mine[-1].http_status == 304 and mine[-1].flow_run_id is None
    assert state_of(mine[-1]) is State.IN_DOUBT  # the server has it: never "not sent"
    assert "no single plan run" in mine[-1].error
    assert oracle(app)["plan_runs_created"] == 3  # the lost run, the other one, combination 2
    # Every resume asks again with the same execution id, and creates nothing.
    again, _ = run_library(config, httpx.ASGITransport(app=app))
    assert again.exit_code != 0 and again.in_doubt == 1
    assert oracle(app)["plan_runs_created"] == 3
