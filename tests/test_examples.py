"""Every example sweep in configs/ plans, and runs to success on the embedded emulator."""

from __future__ import annotations

import csv
import json
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import sweeper
from sweeper.cli import cli

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
EXAMPLES = sorted(p.name for p in CONFIGS.glob("*.toml"))


def test_there_are_examples_for_each_kind_of_axis() -> None:
    assert {"regions.toml", "backfill.toml", "rows.toml", "glob.toml"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_plans(project: Path, name: str) -> None:
    result = CliRunner().invoke(
        cli, ["plan", f"configs/{name}", "--json", "--as-of", "2026-11-29T06:00:00"]
    )
    assert result.exit_code == 0, result.output + result.stderr
    plan = json.loads(result.output)
    assert plan["total"] > 0
    assert plan["actions"]["submit"] == plan["total"]


@pytest.mark.parametrize(
    "name", ["regions.toml", "rows.toml", "glob.toml", "backfill.toml", "flow.toml", "plan.toml"]
)
def test_example_runs_on_the_embedded_emulator(project: Path, name: str) -> None:
    # The backfill has 31 days: a canary of 5 keeps the test under the 25/min pacing window.
    limit = ["--limit", "5"] if name == "backfill.toml" else []
    args = ["run", f"configs/{name}", "--run-id", "t", "--as-of", "2026-11-29T06:00:00", *limit]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output + result.stderr
    ledger = next((project / "results").glob("*.csv"))
    with ledger.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    finished = [r for r in rows if r["event"] == "finished"]
    assert finished and all(r["status"] == "Complete" for r in finished)
    assert len(finished) == len({r["combo_id"] for r in rows})
    if name == "flow.toml":  # every flow run and all its job groups (2 recipes) are recorded
        assert all(r["flow_run_id"] and len(r["job_group_ids"].split()) == 2 for r in finished)
    if name == "plan.toml":  # one plan snapshot run per combination, in the run id column
        assert len({r["flow_run_id"] for r in finished}) == len(finished)


def test_public_api_names_resolve() -> None:
    for name in sweeper.__all__:
        value = getattr(sweeper, name)
        # A public name must not be shadowed by a submodule of the same name.
        assert value is not None and not isinstance(value, types.ModuleType), name
    with pytest.raises(AttributeError):
        _ = sweeper.no_such_thing  # type: ignore[attr-defined]
