"""For scripts and cron: --json documents, --quiet and the documented exit codes, via the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result

from sweeper.cli import cli
from sweeper.emulator import EmulatorSettings
from sweeper.emulator.settings import FaultSettings
from sweeper.ledger import Ledger
from sweeper.reporting import REPORT_SCHEMA
from tests.emulator_server import running_emulator
from tests.test_report_sweeps import write_sweep


def _settings(project: Path, **kwargs: object) -> EmulatorSettings:
    return EmulatorSettings(
        output_root=project,
        time_scale=10.0,
        quota_user_per_min=0,
        quota_workspace_per_min=0,
        **kwargs,  # type: ignore[arg-type]
    )


def _point_at(config: Path, base_url: str) -> Path:
    config.write_text(
        config.read_text(encoding="utf-8").replace('"embedded"', f'"{base_url}"'),
        encoding="utf-8",
    )
    return config


@pytest.fixture
def failing_server(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """The nightly sweep on a served emulator where Region 02 always fails."""
    monkeypatch.setenv("DATAPREP_TOKEN", "any-token")
    faults = FaultSettings(fail_params={"Region": ("02",)})
    with running_emulator(_settings(project, faults=faults)) as base_url:
        yield _point_at(write_sweep(project), base_url), base_url


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_run_json_is_the_only_stdout_and_its_exit_code_is_the_process_exit_code(
    failing_server: tuple[Path, str],
) -> None:
    config, base_url = failing_server
    result = invoke("run", str(config), "--run-id", "n1", "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)  # nothing but the document on stdout
    assert data["exit_code"] == 3
    assert (data["succeeded"], data["failed"], data["planned"]) == (6, 2, 8)
    assert data["schema"] == "sweeper.run/1"
    assert [f["params"] for f in data["failures"]] == [
        {"Region": "02", "varReferenceType": "PROD"},
        {"Region": "02", "varReferenceType": "TEST"},
    ]
    assert all(f["error"].startswith("Injected fault") for f in data["failures"])
    assert result.stderr == ""  # --json silences the progress lines
    oracle = httpx.get(f"{base_url}/_emulator/jobGroups", timeout=10).json()
    assert oracle["count"] == data["submitted"] == 8


def test_quiet_run_prints_only_the_result(project: Path) -> None:
    config = write_sweep(project)
    result = invoke("run", str(config), "--run-id", "n1", "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.startswith("nightly run n1: 8 succeeded, 0 failed (of 8).")


def test_plan_json_says_why_for_every_combination(failing_server: tuple[Path, str]) -> None:
    config, _ = failing_server
    assert invoke("run", str(config), "--run-id", "n1", "--quiet").exit_code == 3
    plan = invoke("plan", str(config), "--run-id", "n1", "--rerun", "failed", "--format", "json")
    assert plan.exit_code == 0, plan.output
    data = json.loads(plan.stdout)
    assert data["actions"] == {"submit": 2, "resend": 0, "wait": 0, "skip": 6}
    for item in data["combinations"]:
        if item["params"]["Region"] == "02":
            assert item["action"] == "submit" and item["generation"] == 1
            assert item["reason"].startswith("ended Failed (job group ")
            assert item["reason"].endswith("; --rerun failed")
        else:
            assert item["action"] == "skip"
            assert item["reason"].startswith("succeeded in this run (job group ")
    # the default policy skips the failures too, and says how to rerun them
    text = invoke("plan", str(config), "--run-id", "n1")
    assert "use --rerun failed to run it again" in text.stdout
    # `run --rerun failed` runs exactly those, and its progress lines carry the same reasons
    rerun = invoke("run", str(config), "--run-id", "n1", "--rerun", "failed")
    assert rerun.exit_code == 3  # the fault is still there
    assert rerun.stderr.count("; --rerun failed") == 2
    # the skipped ones are one line for their class, not one line each (-v lists them)
    assert "6 already succeeded, skipped" in rerun.stderr and "skip " not in rerun.stderr


def test_status_and_report_json(failing_server: tuple[Path, str], tmp_path: Path) -> None:
    config, _ = failing_server
    invoke("run", str(config), "--run-id", "n1", "--quiet")
    status = invoke("status", str(config), "--json")
    assert status.exit_code == 3
    data = json.loads(status.stdout)
    assert data["run_id"] == "n1"
    assert data["counts"] == {"succeeded": 6, "failed": 2}
    assert len(data["combinations"]) == 8
    assert {c["state"] for c in data["combinations"] if c["params"]["Region"] == "02"} == {"failed"}

    ledger = "results/nightly.csv"
    by_flag = invoke("report", ledger, "--json")
    by_format = invoke("report", ledger, "--format", "json")
    assert by_flag.exit_code == by_format.exit_code == 0
    assert by_flag.stdout == by_format.stdout
    report = json.loads(by_flag.stdout)
    assert report["schema"] == REPORT_SCHEMA
    assert (report["run_id"], report["previous_run_id"]) == ("n1", None)
    assert report["summary"]["succeeded"] == 6 and report["summary"]["failed"] == 2
    assert report["summary"]["total"] == 8
    assert len(report["failures"]) == 2
    assert report["durations"]["finished"] == 8

    html = tmp_path / "r.html"
    written = invoke("report", ledger, "--html", str(html), "--format", "markdown")
    assert written.exit_code == 0
    assert written.stdout.startswith("# Sweep report for run n1")
    assert f"wrote {html}" in written.stderr
    assert "<svg" in html.read_text(encoding="utf-8")


def test_report_of_an_unknown_run_id_exits_2_naming_the_runs(project: Path) -> None:
    config = write_sweep(project)
    invoke("run", str(config), "--run-id", "n1", "--quiet")
    result = invoke("report", "results/nightly.csv", "--run-id", "n9")
    assert result.exit_code == 2
    assert "'n9'" in result.stderr and "n1" in result.stderr
    assert "Traceback" not in result.output


def test_report_of_a_missing_ledger_exits_2(project: Path) -> None:
    result = invoke("report", "results/none.csv")
    assert result.exit_code == 2
    assert "results/none.csv" in result.stderr


def test_refused_credentials_exit_1_and_the_ledger_stays_resumable(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAPREP_TOKEN", "wrong-token")
    with running_emulator(_settings(project, token="right-token")) as base_url:
        config = _point_at(write_sweep(project), base_url)
        result = invoke("run", str(config), "--run-id", "n1", "--json")
        assert result.exit_code == 1
        data = json.loads(result.stdout)
        assert data["exit_code"] == 1 and data["aborted"]
        assert "wrong-token" not in result.output  # never the token
        monkeypatch.setenv("DATAPREP_TOKEN", "right-token")
        again = invoke("run", str(config), "--run-id", "n1", "--json")
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)["succeeded"] == 8


def test_a_locked_ledger_stops_a_run_with_1_but_status_reads_it(project: Path) -> None:
    config = write_sweep(project)
    with Ledger.open(
        project / "results" / "nightly.csv",
        sweep="nightly",
        param_names=("Region", "varReferenceType"),
    ):
        result = invoke("run", str(config), "--run-id", "n1", "--json")
        status = invoke("status", str(config))
    assert result.exit_code == 1
    assert "lock" in result.stderr.lower()
    assert status.exit_code == 0  # a look at a ledger another sweeper holds
    assert "held by PID" in status.stdout


def test_bad_usage_exits_2_and_submits_nothing(project: Path) -> None:
    config = write_sweep(project)
    result = invoke("run", str(config), "--rerun", "sometimes")
    assert result.exit_code == 2
    assert not (project / "results" / "nightly.csv").exists()


def test_an_unreachable_api_exits_1(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAPREP_TOKEN", "any-token")
    config = _point_at(write_sweep(project), "http://127.0.0.1:9")
    text = config.read_text(encoding="utf-8") + '\n[retry]\nattempts = 1\nmax_wait = "0.1s"\n'
    config.write_text(text, encoding="utf-8")
    result = invoke("run", str(config), "--run-id", "n1", "--quiet")
    assert result.exit_code == 1
