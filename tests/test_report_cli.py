"""The report command's targets and outputs, JSON errors, job page links, the plan CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import cli
from sweeper.links import job_url
from sweeper.render import PlanCsv


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api.clouddataprep.com", "https://clouddataprep.com/jobs/42"),
        ("https://api.clouddataprep.com/", "https://clouddataprep.com/jobs/42"),
        ("https://us1.alteryxcloud.com", "https://us1.alteryxcloud.com/jobs/42"),
        ("https://eu1.alteryxcloud.com/", "https://eu1.alteryxcloud.com/jobs/42"),
        ("embedded", None),
        ("http://127.0.0.1:3005", None),
        ("https://trifacta.example.com", None),
        ("http://api.clouddataprep.com", None),  # not the platform's own scheme
    ],
)
def test_job_url_rule(base_url: str, expected: str | None) -> None:
    assert job_url(base_url, 42) == expected
    assert job_url(base_url, None) is None


def test_json_error_is_a_document_on_stdout_and_keeps_the_exit_code(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "missing.csv"), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["schema"] == "sweeper.error/1" and data["exit_code"] == 2
    assert data["error"]["type"] == "ConfigError"
    assert "missing.csv" in data["error"]["message"]
    assert "missing.csv" in result.stderr


def test_table_needs_csv_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "x.csv"), "--table", "diff"])
    assert result.exit_code == 2 and "--table applies to --format csv" in result.stderr


def test_plan_csv_neutralises_formulas_and_appears_whole(tmp_path: Path) -> None:
    from types import SimpleNamespace

    out = tmp_path / "plan.csv"
    plan = PlanCsv(out, ["Note"])
    item = SimpleNamespace(
        combo=SimpleNamespace(combo_id="c1", params={"Note": "=SUM(A1)"}),
        action=SimpleNamespace(value="submit"),
        reason="new",
        generation=0,
        execution_id="swp-1",
        output_paths=("-out.csv",),
    )
    plan.add(item)  # type: ignore[arg-type]
    assert not out.exists()  # nothing at the path until the plan is whole
    plan.close()
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[1] == ["c1", "submit", "new", "0", "swp-1", "'=SUM(A1)", "'-out.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["plan.csv"]
