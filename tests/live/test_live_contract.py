"""The live contract: one canary combination on a real tenant, through the library API.

Skipped at collection unless SWEEPER_LIVE_BASE_URL, SWEEPER_LIVE_TOKEN, SWEEPER_LIVE_DATASET and
SWEEPER_LIVE_PARAM (Name=value1,value2) are set; never run in CI. It submits exactly one job
group (the first value of the parameter, with the recipe's own outputs) and then reads:

    SWEEPER_LIVE_BASE_URL=https://api.clouddataprep.com SWEEPER_LIVE_TOKEN=... \
    SWEEPER_LIVE_DATASET=33 SWEEPER_LIVE_PARAM=Region=01,02 \
    pytest tests/live -n 0 -ra

See docs/operations.md, "Check sweeper against your platform before the first nightly run".
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.live.settings import HOW_TO_ENABLE, TOKEN, LiveSettings, live_settings

_SETTINGS = live_settings()
if _SETTINGS is None:
    pytest.skip(HOW_TO_ENABLE, allow_module_level=True)

import sweeper  # noqa: E402  (only once the test is sure to run)
from sweeper.client import TERMINAL_STATUSES  # noqa: E402

SWEEP = "live-contract"


@pytest.fixture
def live() -> LiveSettings:
    assert _SETTINGS is not None
    return _SETTINGS


def _write_sweep(root: Path, live: LiveSettings) -> Path:
    """A sweep file in tmp_path: the recipe, its one parameter, the token's variable name."""
    configs = root / "configs"
    configs.mkdir()
    path = configs / "live.toml"
    values = ", ".join(json.dumps(v) for v in live.values)
    path.write_text(
        f"""[sweep]
name = "{SWEEP}"
dataset = {live.dataset}

[api]
base_url = {json.dumps(live.base_url)}
token_env = "{TOKEN}"

[matrix]
{live.param} = [{values}]

[run]
rate = "6/min"
concurrency = 1
timeout = {json.dumps(live.timeout)}
""",
        encoding="utf-8",
    )
    return path


def test_a_canary_runs_is_recorded_and_is_not_submitted_twice(
    tmp_path: Path, live: LiveSettings
) -> None:
    config = _write_sweep(tmp_path, live)
    run_id = f"live-{uuid.uuid4().hex[:8]}"
    canary = [f"{live.param}={live.values[0]}"]

    # plan: needs no token, submits nothing, sees every combination as new.
    plan = sweeper.plan(config, run_id=run_id)
    assert plan.counts.total == len(live.values)
    assert plan.counts.by_action["submit"] == len(live.values)

    # The canary: one combination, submitted and waited on until it ends or run.timeout.
    summary = sweeper.run(config, run_id=run_id, only=canary, limit=1, environ=live.environ)
    assert not summary.aborted, f"the run stopped itself: {summary.aborted}"
    assert not summary.timed_out, f"the canary was still running at run.timeout ({live.timeout})"
    assert (summary.planned, summary.submitted, summary.duplicates) == (1, 1, 0)

    ledger = Path(summary.ledger)
    assert ledger.is_file()
    rows = [r for r in sweeper.read_ledger(ledger) if r.run_id == run_id]
    submitted = [r for r in rows if r.event.value == "submitted"]
    assert len(submitted) == 1
    assert isinstance(submitted[0].job_group_id, int) and submitted[0].job_group_id > 0
    assert submitted[0].session_id, "the 201 carried no sessionId"
    finished = [r for r in rows if r.event.value == "finished"]
    assert len(finished) == 1, f"events recorded: {[r.event.value for r in rows]}"
    end = finished[0]
    assert end.job_group_id == submitted[0].job_group_id
    assert end.status in TERMINAL_STATUSES
    assert end.job_ids and all(isinstance(j, int) and j > 0 for j in end.job_ids)

    # status: the run's combinations as the ledger and the API see them: the canary, ended.
    status = sweeper.status(ledger, config=config, run_id=run_id, environ=live.environ)
    assert status.errors == []
    counts = status.counts()
    assert sum(counts.values()) == 1
    assert set(counts) <= {"succeeded", "failed", "canceled"}, counts

    # report: the canary's ids, as the morning-after report shows them.
    report = sweeper.report(ledger, config=config, run_id=run_id)
    assert report.run_id == run_id
    combos = report.combinations
    ended = combos[combos["job_group_id"].notna()]
    assert len(ended) == 1
    one = ended.iloc[0]
    assert int(one["job_group_id"]) == end.job_group_id
    assert one["session_id"] == submitted[0].session_id
    assert str(one["job_ids"]).split() == [str(j) for j in end.job_ids]  # "2 3"

    # The same canary again: already recorded, nothing submitted.
    again = sweeper.run(config, run_id=run_id, only=canary, limit=1, environ=live.environ)
    assert again.posts == 0 and again.submitted == 0
    assert again.skipped == 1

    # Last, so that the ids above are checked even when the job itself failed.
    assert end.status == "Complete", f"the canary's job group ended {end.status}: {end.error}"
