"""The command line, through click's CliRunner, on the embedded emulator."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweeper.cli import cli
from tests.conftest import FAST_RUN


def _regions_fast(project: Path) -> Path:
    """configs/regions.toml with fast polling, so the test takes seconds."""
    path = project / "configs" / "regions.toml"
    text = path.read_text(encoding="utf-8")
    head = text.split("[run]")[0]
    tail = "\n[retry]" + text.split("[retry]")[1]
    path.write_text(head + FAST_RUN + tail, encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_regions_runs_end_to_end_then_submits_nothing(project: Path) -> None:
    config = _regions_fast(project)
    result = CliRunner().invoke(cli, ["run", str(config), "--run-id", "night-1"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "6 succeeded, 0 failed" in result.output

    rows = _rows(project / "results" / "regions.csv")
    combos = {r["combo_id"] for r in rows}
    assert len(combos) == 6
    for combo in combos:
        events = [r for r in rows if r["combo_id"] == combo]
        kinds = [r["event"] for r in events]
        assert kinds[0] == "intent"
        submitted = next(r for r in events if r["event"] == "submitted")
        finished = events[-1]
        assert finished["event"] == "finished" and finished["status"] == "Complete"
        assert submitted["job_group_id"] and submitted["session_id"] and submitted["job_ids"]
        assert finished["job_group_id"] == submitted["job_group_id"]
    # Outputs really exist, one per combination.
    outputs = sorted((project / "results" / "out" / "night-1").glob("region-*.csv"))
    assert len(outputs) == 6

    again = CliRunner().invoke(cli, ["run", str(config), "--run-id", "night-1"])
    assert again.exit_code == 0, again.output + again.stderr
    assert "Nothing new was submitted." in again.output
    assert "POSTs: 0" in again.output
    assert len(_rows(project / "results" / "regions.csv")) == len(rows)


def test_plan_shows_bodies_and_counts_without_a_token(project: Path) -> None:
    result = CliRunner().invoke(cli, ["plan", "configs/regions.toml", "--format", "json"])
    assert result.exit_code == 0, result.output + result.stderr
    plan = json.loads(result.output)
    assert plan["total"] == 6
    assert plan["actions"]["submit"] == 6
    body = plan["combinations"][0]["body"]
    assert body["wrangledDataset"] == {"id": 33}
    data = body["runParameters"]["overrides"]["data"]
    assert {d["key"] for d in data} == {"Region", "varReferenceType"}
    assert all(isinstance(d["value"], str) for d in data)
    assert not (project / "results" / "regions.csv").exists()


def test_plan_output_csv_lists_every_combination(project: Path) -> None:
    out = project / "plan.csv"
    result = CliRunner().invoke(cli, ["plan", "configs/regions.toml", "--output", str(out)])
    assert result.exit_code == 0, result.output + result.stderr
    rows = _rows(out)
    assert len(rows) == 6
    assert {r["action"] for r in rows} == {"submit"}
    assert all(r["reason"] for r in rows)


def test_bad_config_exits_2_and_names_the_key(write_config: Callable[[str], Path]) -> None:
    path = write_config(
        """
        [sweep]
        name = "x"
        dataset = 33
        [matrix]
        Region = ["01"]
        [run]
        rat = "25/min"
        """
    )
    result = CliRunner().invoke(cli, ["run", str(path)])
    assert result.exit_code == 2
    assert "run.rat" in result.stderr
    assert "rate" in result.stderr  # did you mean


def test_missing_config_exits_2(project: Path) -> None:
    result = CliRunner().invoke(cli, ["run", "configs/nope.toml"])
    assert result.exit_code == 2
    assert "nope.toml" in result.stderr


@pytest.mark.parametrize(
    "args", [[], ["run"], ["plan"], ["status"], ["report"], ["emulator"], ["emulator", "serve"]]
)
def test_every_command_has_help_with_examples(args: list[str]) -> None:
    result = CliRunner().invoke(cli, [*args, "--help"])
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")
    if args and args != ["emulator"]:
        assert "Examples:" in result.output


def test_python_dash_m_sweeper_works() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sweeper", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "sweeper" in done.stdout


def test_importing_the_cli_does_not_import_pandas() -> None:
    code = "import sys, sweeper.cli; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False"


def test_an_interrupt_outside_the_run_loop_exits_1_with_a_resume_hint(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    def interrupted(coro: object) -> None:
        coro.close()  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(asyncio, "run", interrupted)
    result = CliRunner().invoke(cli, ["run", "configs/regions.toml"])
    assert result.exit_code == 1
    assert "run the same command again to resume" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_plan_does_not_load_the_http_stack() -> None:
    """`sweeper plan` starts fast: httpx, its CLI's imports and the runner stay unloaded."""
    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from sweeper.cli import cli\n"
        "result = CliRunner().invoke(cli, ['plan', 'configs/regions.toml'])\n"
        "assert result.exit_code == 0, result.output\n"
        "print(sorted(m for m in ('httpx', 'httpcore', 'sweeper.runner', 'sweeper.client')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_full_disk_mid_run_is_a_clear_error_and_the_run_resumes(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC on a ledger write: exit 1 with what happened and what to do, no traceback."""
    import errno


    config = _regions_fast(project)
    real_fsync = os.fsync
    calls = 0

    def fsync(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls > 6:  # the header, its directory, and a few rows get through
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    result = CliRunner().invoke(cli, ["run", str(config), "--run-id", "night-1"])
    assert result.exit_code == 1, result.output
    assert "could not write to the ledger" in result.stderr
    assert "No space left on device" in result.stderr
    assert "run the same command again to resume" in result.stderr
    assert "Traceback" not in result.output + result.stderr
    before = _rows(project / "results" / "regions.csv")
    assert before and before[0]["event"] == "intent"  # what was written reads back whole

    monkeypatch.setattr(os, "fsync", real_fsync)  # the disk has room again
    again = CliRunner().invoke(cli, ["run", str(config), "--run-id", "night-1"])
    assert again.exit_code == 0, again.output + again.stderr
    assert "6 succeeded, 0 failed" in again.output
