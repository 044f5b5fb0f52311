"""Flow sweeps: the target keys, the runFlow body, the ledger of a flow run, crash and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from sweeper.config import load_config
from sweeper.emulator import FaultSettings
from sweeper.errors import ConfigError, LedgerError
from sweeper.ledger import Event, LedgerRow, read_ledger
from sweeper.matrix import Combination
from sweeper.template import RequestTemplate
from tests.reliab_support import emulator_app, oracle, run_library, write_sweep

TWO = 'Region = ["01", "02"]'


class Crash(Exception):
    """Stands for the process dying in the middle of a request."""


def _flow_sweep(project: Path, **kwargs: Any) -> Path:
    kwargs.setdefault("matrix", TWO)
    kwargs.setdefault("run", {"concurrency": 1})
    path = project / "configs" / "f.toml"
    return write_sweep(path, name="f", base_url="embedded", target="flow", **kwargs)


def _config(tmp_path: Path, sweep: str, rest: str = "") -> Path:
    path = tmp_path / "s.toml"
    path.write_text(f'[sweep]\nname = "s"\n{sweep}\n[matrix]\nRegion = ["01"]\n{rest}')
    return path


@pytest.mark.parametrize(
    ("sweep", "says"),
    [
        ("dataset = 33\nflow = 12", "dataset and flow"),
        ("flow = 12\nplan = 5", "flow and plan"),
        ("", "none of them"),
        ("dataset = 33\noutputs = [33]", "needs flow"),
        ("flow = 12\noutputs = []", "list of recipe ids"),
    ],
)
def test_exactly_one_target(tmp_path: Path, sweep: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says) as caught:
        load_config(_config(tmp_path, sweep))
    assert caught.value.key is not None and caught.value.key.startswith("sweep.")


def test_per_recipe_overrides_need_a_flow_and_recipe_keys_need_a_recipe(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs flow"):
        load_config(
            _config(tmp_path, "dataset = 33", '[overrides."POS-regions"]\nprofiler = true\n')
        )
    with pytest.raises(ConfigError, match="Unknown key 'ignoreRecipeErrors'"):
        load_config(_config(tmp_path, "dataset = 33", "[overrides]\nignoreRecipeErrors = true\n"))
    with pytest.raises(ConfigError, match="Unknown key 'profiler'"):
        load_config(_config(tmp_path, "flow = 12", "[overrides]\nprofiler = true\n"))


def test_default_rate_follows_the_target(tmp_path: Path) -> None:
    flow = load_config(_config(tmp_path, "flow = 12"))
    assert (flow.run.rate.count, flow.run.rate.per_seconds) == (16, 60.0)
    recipe = load_config(_config(tmp_path, "dataset = 33"))
    assert (recipe.run.rate.count, recipe.run.rate.per_seconds) == (25, 60.0)
    assert flow.config_hash != recipe.config_hash


def test_flow_body_puts_each_part_where_run_flow_takes_it(tmp_path: Path) -> None:
    rest = (
        '[overrides]\nexecution = "photon"\nignoreRecipeErrors = true\n'
        '[overrides."POS-regions"]\nprofiler = true\n'
        '[[overrides."POS-regions".writesettings]]\npath = "out/{run_id}/r-{Region}.csv"\n'
    )
    cfg = load_config(_config(tmp_path, "flow = 12\noutputs = [33]", rest))
    template = RequestTemplate(
        cfg.sweep.dataset, cfg.overrides, flow=True, outputs=cfg.sweep.outputs
    )
    combo = Combination({"Region": "01"}, {"Region": "01"}, "c1")
    body, paths = template.render(combo, "r1")
    assert body == {
        "runParameters": {"overrides": {"data": [{"key": "Region", "value": "01"}]}},
        "wrangledDatasetIds": [33],
        "execution": "photon",
        "ignoreRecipeErrors": True,
        "overrides": {
            "POS-regions": {"profiler": True, "writesettings": [{"path": "out/r1/r-01.csv"}]}
        },
    }
    assert paths == ("out/r1/r-01.csv",)
    bad = Combination({"Region": "../x"}, {"Region": "../x"}, "c2")
    with pytest.raises(Exception, match="path separator"):
        template.render(bad, "r1")  # path safety holds inside a recipe's write settings


def _flow_rows(project: Path) -> list[LedgerRow]:
    return read_ledger(project / "results" / "f.csv")


def test_flow_sweep_records_every_job_group_and_a_rerun_submits_nothing(project: Path) -> None:
    app = emulator_app(project / "emu")
    config = _flow_sweep(project)
    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 0 and summary.succeeded == 2
    runs = {r["id"]: r["jobGroupIds"] for r in oracle(app, "flowRuns")}
    finished = [r for r in _flow_rows(project) if r.event is Event.FINISHED]
    assert {r.flow_run_id: list(r.job_group_ids) for r in finished} == runs
    assert all(len(r.job_group_ids) == 2 and r.status == "Complete" for r in finished)
    again, _ = run_library(config, httpx.ASGITransport(app=app))
    assert again.exit_code == 0 and again.posts == 0
    assert oracle(app)["flow_runs_created"] == 2


def test_a_failed_job_group_fails_its_combination_and_is_named(project: Path) -> None:
    faults = FaultSettings(fail_params={"Region": ("02",)})
    app = emulator_app(project / "emu", faults=faults)
    summary, _ = run_library(_flow_sweep(project), httpx.ASGITransport(app=app))
    assert summary.exit_code != 0 and summary.succeeded == 1
    (bad,) = [
        r for r in _flow_rows(project) if r.event is Event.FINISHED and r.params["Region"] == "02"
    ]
    assert bad.status == "Failed"
    assert bad.job_group_id in bad.job_group_ids
    assert f"job group {bad.job_group_id}" in bad.error


def _crashing(app: Any, *, after_server: bool) -> httpx.MockTransport:
    """A transport that dies on the first runFlow POST, before or after the server handled it."""
    asgi = httpx.ASGITransport(app=app)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.startswith("/v4/flows/"):
            if after_server:
                await asgi.handle_async_request(request)
            raise Crash
        return await asgi.handle_async_request(request)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("after_server", [True, False])
def test_crash_mid_post_then_resume_creates_each_flow_run_once(
    project: Path, after_server: bool
) -> None:
    app = emulator_app(project / "emu")
    config = _flow_sweep(project)
    with pytest.raises(Crash):
        run_library(config, _crashing(app, after_server=after_server))
    (intent,) = _flow_rows(project)
    assert intent.event is Event.INTENT
    assert oracle(app)["flow_runs_created"] == (1 if after_server else 0)

    summary, _ = run_library(config, httpx.ASGITransport(app=app))
    assert summary.exit_code == 0 and summary.succeeded == 2
    runs = oracle(app, "flowRuns")
    assert len(runs) == 2  # one per combination: nothing created twice
    assert oracle(app)["created"] == 4
    rows = [r for r in _flow_rows(project) if r.combo_id == intent.combo_id]
    assert {r.execution_id for r in rows} == {intent.execution_id}
    if after_server:
        reconciled = [r for r in rows if r.event is Event.RECONCILED]
        assert reconciled and reconciled[0].http_status == 304
        (run,) = [x for x in runs if x["executionId"] == intent.execution_id]
        assert reconciled[0].flow_run_id == run["id"]
        assert list(reconciled[0].job_group_ids) == run["jobGroupIds"]
    assert rows[-1].event is Event.FINISHED and rows[-1].flow_run_id is not None


def test_a_flow_sweep_refuses_a_v1_ledger_before_any_post(project: Path) -> None:
    from sweeper.ledger import COLUMNS_V1

    ledger = project / "results" / "f.csv"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    ledger.write_text(",".join((*COLUMNS_V1, "param.Region")) + "\n")
    app = emulator_app(project / "emu")
    with pytest.raises(LedgerError, match="cannot record a flow run"):
        run_library(_flow_sweep(project), httpx.ASGITransport(app=app))
    assert oracle(app)["flow_posts_received"] == 0
    assert read_ledger(ledger) == []
