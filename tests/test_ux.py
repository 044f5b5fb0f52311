"""The operator's night: answers to common mistakes, safe paths, and help that matches the docs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sweeper.cli import cli
from sweeper.config import load_config

BASE = """
[sweep]
name = "ux"
dataset = 33

[api]
base_url = "{base_url}"

[matrix]
Region = ["01", "02", "03", "04"]
"""


def test_the_embedded_emulator_is_polled_soon_after_submission(
    write_config: Callable[..., Path],
) -> None:
    embedded = load_config(write_config(BASE.format(base_url="embedded")))
    # Its jobs end about 1.5 s after submission: the first poll must come well before that.
    assert embedded.run.poll_interval < 1.0 and embedded.run.poll_max_interval <= 1.0
    real = load_config(write_config(BASE.format(base_url="https://api.example.com"), "real.toml"))
    assert real.run.poll_interval == 10.0  # one tick: at most one job-library page per 10 s
    explicit = load_config(
        write_config(BASE.format(base_url="embedded") + '[run]\npoll_interval = "3s"\n', "e.toml")
    )
    assert explicit.run.poll_interval == 3.0 and explicit.run.poll_max_interval >= 3.0


# ---------------------------------------------------------------- running the CLI

FAST = """
[run]
rate = "600/min"
concurrency = 4
poll_interval = "0.2s"
poll_max_interval = "1s"
max_polls_per_second = 100
timeout = "2m"
settle = "0s"
"""

SWEEP = (
    BASE.format(base_url="embedded")
    + """
[[overrides.writeSettings]]
path = "{path}"
action = "create"
format = "csv"
"""
    + FAST
)
OUT = "results/out/{run_id}/r-{Region}.csv"


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_the_same_config_reaches_the_same_ledger_from_any_directory(
    project: Path, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(SWEEP.format(path=OUT))
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    first = _cli("run", str(config), "--run-id", "r1", "--limit", "1")
    assert first.exit_code == 0, first.output
    ledger = project / "results" / "ux.csv"
    assert ledger.exists() and not (elsewhere / "results").exists()
    assert f"ledger: {ledger}" in first.stdout  # the summary names it absolutely
    assert list((project / "results" / "out" / "r1").glob("r-*.csv"))
    monkeypatch.chdir(project)
    again = _cli("run", "configs/sweep.toml", "--run-id", "r1", "--limit", "1")
    assert "1 already succeeded, skipped" in again.stderr
    assert "POSTs: 0" in again.stdout


@pytest.mark.parametrize(
    "path", ["results/ux.csv", "results/ux.csv.lock", "results/.emulator/state.sqlite"]
)
def test_an_output_onto_a_file_sweeper_keeps_is_refused_before_anything_is_sent(
    project: Path, write_config: Callable[..., Path], path: str
) -> None:
    config = write_config(SWEEP.format(path=path))
    result = _cli("run", str(config))
    assert result.exit_code == 2, result.output
    assert "overrides.writeSettings.path" in result.stderr
    assert not (project / "results" / "ux.csv").exists()  # nothing submitted, nothing recorded
    assert not (project / "results" / "ux.csv.lock").exists()
    plan = _cli("plan", str(config))
    assert plan.exit_code == 2 and "overrides.writeSettings.path" in plan.stderr


def test_the_embedded_emulator_never_writes_over_a_protected_file(tmp_path: Path) -> None:
    import pandas as pd

    from sweeper.emulator.output import OutputError, write

    ledger = tmp_path / "results" / "ux.csv"
    ledger.parent.mkdir()
    ledger.write_text("schema\n")
    setting = {"path": "results/ux.csv", "action": "overwrite", "format": "csv"}
    with pytest.raises(OutputError):
        write(pd.DataFrame({"a": [1]}), setting, tmp_path, 7, (ledger,))
    assert ledger.read_text() == "schema\n"


def test_a_config_error_at_plan_time_leaves_no_ledger_and_no_lock(
    project: Path, write_config: Callable[..., Path]
) -> None:
    # An include key spelled almost like an axis is refused when the plan is checked.
    config = write_config(SWEEP.format(path=OUT) + '\n[[matrix.include]]\nRegoin = "05"\n')
    result = _cli("run", str(config))
    assert result.exit_code == 2, result.output
    assert "matrix.include[0].Regoin" in result.stderr
    assert not (project / "results" / "ux.csv").exists()
    assert not (project / "results" / "ux.csv.lock").exists()


def test_only_with_a_value_no_combination_has_names_the_valid_values(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(SWEEP.format(path=OUT))
    for command in ("plan", "run"):
        result = _cli(command, str(config), "--only", "Region=1")
        assert result.exit_code == 2, result.output
        assert "Did you mean '01'?" in result.stderr and "01, 02, 03, 04" in result.stderr


def test_a_stored_as_of_is_used_and_said(write_config: Callable[..., Path]) -> None:
    config = write_config(SWEEP.format(path=OUT))
    first = _cli("run", str(config), "--run-id", "r", "--as-of", "2026-01-01", "--limit", "1")
    assert first.exit_code == 0, first.output
    again = _cli("run", str(config), "--run-id", "r", "--as-of", "2026-02-01", "--limit", "1")
    assert "already has as-of 2026-01-01" in again.stderr and "2026-02-01" in again.stderr
    plan = _cli("plan", str(config), "--run-id", "r", "--as-of", "2026-02-01")
    assert "note: run r already has as-of 2026-01-01" in plan.stdout
    same = _cli("run", str(config), "--run-id", "r", "--as-of", "2026-01-01", "--limit", "1")
    assert "already has as-of" not in same.stderr


def test_rerun_failed_with_nothing_failed_says_so(write_config: Callable[..., Path]) -> None:
    config = write_config(SWEEP.format(path=OUT))
    assert _cli("run", str(config), "--run-id", "r", "--limit", "1").exit_code == 0
    again = _cli("run", str(config), "--run-id", "r", "--limit", "1", "--rerun", "failed")
    assert "nothing failed in run r" in again.stderr


def test_a_changed_template_under_the_same_run_is_said_by_run_and_plan(
    write_config: Callable[..., Path],
) -> None:
    config = write_config(SWEEP.format(path=OUT))
    assert _cli("run", str(config), "--run-id", "r", "--limit", "2").exit_code == 0
    write_config(SWEEP.format(path=OUT.replace("r-", "region-")))
    plan = _cli("plan", str(config), "--run-id", "r")
    assert "request template" in plan.stdout and "2 combinations of run r" in plan.stdout
    run = _cli("run", str(config), "--run-id", "r", "--limit", "2")
    assert "request template" in run.stderr and "old template" in run.stderr


def test_report_takes_a_config_and_agrees_with_status_on_the_latest_run(
    project: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config(SWEEP.format(path=OUT))
    # "b" first, then "a": the latest run is "a" although "b" sorts after it.
    assert _cli("run", str(config), "--run-id", "b", "--limit", "1").exit_code == 0
    assert _cli("run", str(config), "--run-id", "a", "--limit", "1").exit_code == 0
    # A resume of "b" writes rows after "a"'s; "b" is still the older run.
    _cli("run", str(config), "--run-id", "b", "--limit", "2")
    by_config = _cli("report", str(config))
    by_ledger = _cli("report", str(project / "results" / "ux.csv"))
    assert by_config.exit_code == 0, by_config.output
    assert by_config.stdout == by_ledger.stdout
    assert "run a (previous run: b)" in by_config.stdout
    status = _cli("status", str(project / "results" / "ux.csv"), "--no-refresh")
    assert status.stdout.startswith("run a:")
    refreshed = _cli("status", str(config))
    assert refreshed.stdout.startswith("run a:")


def test_control_characters_in_values_are_escaped_everywhere(
    write_config: Callable[..., Path],
) -> None:
    text = SWEEP.format(path="results/out/{run_id}/{combo_id}.csv").replace(
        'Region = ["01", "02", "03", "04"]', 'Region = ["01", "\\u001b]0;pwned\\u0007"]'
    )
    config = write_config(text)
    outputs = [
        _cli("plan", str(config), "--all"),
        _cli("run", str(config), "--run-id", "r", "-v"),
        _cli("status", str(config)),
    ]
    for result in outputs:  # the emulator rejects the value as a source path: exit 3 is fine
        assert result.exit_code in (0, 3), result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "\\x1b]0;pwned\\x07" in result.output
