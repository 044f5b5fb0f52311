"""`sweeper status`: brings `run --no-wait` and timed-out runs to completion, on real emulators."""

from __future__ import annotations

import asyncio
import csv
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import sweeper
from sweeper.cli import cli
from sweeper.config import load_config
from sweeper.connection import connect
from sweeper.emulator import EmulatorSettings
from sweeper.emulator.settings import FaultSettings
from sweeper.ledger import Ledger, read_ledger
from sweeper.refreshing import StatusResult, refresh
from tests.emulator_server import running_emulator
from tests.test_report_sweeps import Emulator, run, truth, write_sweep


def _served(project: Path, base_url: str) -> Path:
    """The nightly sweep pointed at a served emulator."""
    path = write_sweep(project)
    text = path.read_text(encoding="utf-8").replace('"embedded"', f'"{base_url}"')
    path.write_text(text, encoding="utf-8")
    return path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_status_brings_a_no_wait_run_to_completion(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAPREP_TOKEN", "any-token")
    settings = EmulatorSettings(
        output_root=project,
        time_scale=10.0,
        quota_user_per_min=0,
        quota_workspace_per_min=0,
        faults=FaultSettings(fail_params={"Region": ("02",)}),
    )
    with running_emulator(settings) as base_url:
        config = _served(project, base_url)
        ledger = project / "results" / "nightly.csv"
        cli_runner = CliRunner()

        submitted = cli_runner.invoke(
            cli, ["run", str(config), "--run-id", "n1", "--no-wait", "--json"]
        )
        # Still running when --no-wait returns: exit 3, as the README says.
        assert submitted.exit_code == 3, submitted.output + submitted.stderr
        summary = json.loads(submitted.stdout)
        assert (summary["submitted"], summary["running"], summary["wait"]) == (8, 8, False)
        assert not [r for r in _rows(ledger) if r["event"] == "finished"]

        watched = cli_runner.invoke(cli, ["status", str(config), "--watch"])
        assert watched.exit_code == 3, watched.output + watched.stderr  # Region 02 failed
        assert "[sweeper]" in watched.stderr  # the progress display
        assert watched.stdout.startswith("run n1: 6 succeeded, 2 failed")
        finished = [r for r in _rows(ledger) if r["event"] == "finished"]
        assert len(finished) == 8
        assert {r["reason"] for r in finished} == {"refreshed by sweeper status"}
        assert all(r["duration_s"] for r in finished)

        import httpx

        oracle = httpx.get(f"{base_url}/_emulator/jobGroups", timeout=10).json()["data"]
        assert len(oracle) == 8  # status created nothing
        by_id = {g["id"]: g["status"] for g in oracle}
        for row in finished:
            assert row["status"] == by_id[int(row["job_group_id"])]
            failed = row["param.Region"] == "02"
            assert row["status"] == ("Failed" if failed else "Complete")
            assert bool(row["error"]) is failed

        # Given the ledger, status finds configs/nightly.toml; nothing is left to ask about.
        again = cli_runner.invoke(cli, ["status", str(ledger), "--json"])
        assert again.exit_code == 3, again.output + again.stderr
        data = json.loads(again.stdout)
        assert data["counts"] == {"succeeded": 6, "failed": 2}
        assert (data["refreshed"], data["finished_now"]) == (0, 0)
        assert len(_rows(ledger)) == 8 * 3  # intent, submitted, finished; nothing new
        # The next `run` of the same id skips everything: status's rows count as finished.
        rerun = cli_runner.invoke(cli, ["run", str(config), "--run-id", "n1", "--json"])
        assert json.loads(rerun.stdout)["posts"] == 0
        assert rerun.exit_code == 3  # still the two failures


def test_status_without_a_sweep_file_shows_the_ledger_as_is(project: Path) -> None:
    config = write_sweep(project)
    emulator = Emulator(project)
    run(config, emulator, "n1", wait=False)
    config.unlink()  # no sweep file names this ledger any more
    result = CliRunner().invoke(cli, ["status", "results/nightly.csv", "--json"])
    assert result.exit_code == 3
    assert "No sweep file found" in result.stderr
    data = json.loads(result.stdout)
    assert data["counts"] == {"running": 8}
    assert data["refreshed"] == 0


def test_status_of_a_ledger_a_running_sweep_holds_shows_it_and_exits_0(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run holds the ledger: status reads it without the lock, writes nothing, says who holds
    it, and exits 0 (the running sweep decides how the run ends)."""
    monkeypatch.setenv("DATAPREP_TOKEN", "any-token")
    settings = EmulatorSettings(output_root=project, quota_user_per_min=0, time_scale=10.0)
    with running_emulator(settings) as base_url:
        config = _served(project, base_url)
        ledger = project / "results" / "nightly.csv"
        runner = CliRunner()
        submitted = runner.invoke(cli, ["run", str(config), "--run-id", "n1", "--no-wait"])
        assert submitted.exit_code == 3, submitted.output + submitted.stderr
        before = ledger.read_bytes()
        cfg = load_config(config)
        with Ledger.open(
            ledger, sweep="nightly", param_names=cfg.matrix.param_names, run_id="n1"
        ):  # the "running sweep"
            shown = runner.invoke(cli, ["status", str(config)])
            as_json = runner.invoke(cli, ["status", str(config), "--json"])
        assert shown.exit_code == 0, shown.output + shown.stderr
        assert shown.stdout.startswith("run n1: 8 running")
        assert "held by PID" in shown.stdout and "run n1" in shown.stdout
        assert as_json.exit_code == 0
        assert json.loads(as_json.stdout)["held_by"][0].startswith(str(ledger))
        assert ledger.read_bytes() == before  # nothing written while another process holds it


def test_status_of_a_missing_ledger_exits_2(project: Path) -> None:
    result = CliRunner().invoke(cli, ["status", "results/nope.csv"])
    assert result.exit_code == 2
    assert "results/nope.csv" in result.stderr


def _refresh(emulator: Emulator, config_path: Path) -> StatusResult:
    """One ``sweeper.status`` refresh of the sweep's ledger, over the emulator."""
    return sweeper.status(config_path, environ={}, transport=emulator.transport())


def _watch(emulator: Emulator, config_path: Path, **kwargs: Any) -> StatusResult:
    """``refresh(watch=True)`` itself: the test's ``sleep`` moves the emulator's clock on."""
    config = load_config(config_path)

    async def main() -> StatusResult:
        client = connect(config, environ={}, transport=emulator.transport())
        with Ledger.open(
            config.sweep.ledger, sweep=config.sweep.name, param_names=config.matrix.param_names
        ) as ledger:
            async with client:
                return await refresh(config, client=client, ledger=ledger, watch=True, **kwargs)

    return asyncio.run(main())


def test_watch_polls_on_the_run_wide_tick_until_every_group_ended(project: Path) -> None:
    """No real waiting: the injected sleep moves the emulator's clock and the watch's clock on."""
    config = write_sweep(project)
    tick = load_config(config).run.poll_interval
    emulator = Emulator(project)
    # Region 03 runs 100x longer: 15 s of emulator time.
    emulator.use_faults(FaultSettings(slow_factor=100.0, slow_params={"Region": ("03",)}))
    run(config, emulator, "n1", wait=False)
    emulator.offset += 1.0  # the fast ones are done; the slow ones are not
    now = [1000.0 + tick / 3]  # the watch's clock, a third of a tick past one
    sleeps: list[float] = []
    seen: list[dict[str, int]] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        emulator.offset += seconds

    result = _watch(
        emulator,
        config,
        sleep=sleep,
        clock=lambda: now[0],
        on_change=lambda r: seen.append(r.counts()),
    )
    assert result.open == 0 and result.finished == 8
    assert seen[0] == {"succeeded": 6, "running": 2}
    assert seen[-1] == {"succeeded": 8}
    # Every round lands on a tick of the clock, never more than one a tick, and the slow
    # groups' end (about 14 s after the first round) is seen within a tick or 5 % of its age.
    ends = list(itertools.accumulate(sleeps, initial=1000.0 + tick / 3))[1:]
    assert all(t / tick == pytest.approx(round(t / tick)) for t in ends)
    assert all(s > 0 for s in sleeps)
    cap = load_config(config).run.poll_max_interval
    assert max(sleeps) <= max(tick, cap) + 1e-9
    assert 14.0 / max(tick, cap) <= len(sleeps) <= 16.0 / tick + 1
    # one read per open group per round: 8, then 2 per round
    assert result.refreshed == 8 + 2 * len(sleeps)
    facts = truth(emulator, "n1")
    state = {(r.params["Region"], r.params["varReferenceType"]): r for r in result.rows}
    for key, fact in facts.items():
        assert state[key].status == fact["status"] == "Complete"
        assert state[key].duration_s == pytest.approx(fact["duration"], abs=0.002)


def test_status_refreshes_timed_out_rows(project: Path) -> None:
    config = write_sweep(project, timeout="1s")
    emulator = Emulator(project)
    emulator.use_faults(FaultSettings(slow_factor=1000.0, slow_params={"Region": ("04",)}))
    assert run(config, emulator, "n1").summary.timed_out
    first = _refresh(emulator, config)
    assert (first.refreshed, first.finished, first.open) == (2, 0, 2)
    emulator.offset += 3600.0
    second = _refresh(emulator, config)
    assert (second.refreshed, second.finished, second.open) == (2, 2, 0)
    events = [r.event.value for r in read_ledger(load_config(config).sweep.ledger)]
    assert events.count("timed_out") == 2 and events.count("finished") == 8


def test_an_unknown_job_group_is_a_warning_not_a_crash(project: Path) -> None:
    """A group the server no longer knows (404) is reported; its row is left as it was."""
    config = write_sweep(project)
    emulator = Emulator(project)
    run(config, emulator, "n1", wait=False)
    (project / "elsewhere").mkdir()
    fresh = Emulator(project / "elsewhere")  # another server: it knows none of these ids
    result = _refresh(fresh, config)
    assert result.finished == 0 and result.open == 8
    assert len(result.errors) == 8
    assert all(e.startswith("job group ") for e in result.errors)
