"""The library API: sweeper.run / plan / status / report, wired exactly as the CLI wires them."""

from __future__ import annotations

import ast
import csv
import importlib
import importlib.util
import json
import pkgutil
import re
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import sweeper
from sweeper import ConfigError, ExitCode, exit_code_for
from sweeper.cli import cli
from sweeper.refreshing import StatusResult
from tests.test_cli import _regions_fast

ROOT = Path(__file__).resolve().parent.parent
AS_OF = "2026-11-29T06:00:00"
# A C0 control, DEL and a C1 control (NEL): each would split or corrupt a CSV row or a path.
CONTROL_RUN_IDS = ["night\t1", "night\n1", "night\r1", "night\x00", "night\x7f", "night\x85"]


def _cli(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code in (0, 3), result.output + result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def _real_api(project: Path) -> Path:
    """configs/regions.toml pointed at a real platform, with no token in the environment."""
    path = project / "configs" / "regions.toml"
    text = path.read_text(encoding="utf-8").replace(
        'base_url = "embedded"', 'base_url = "https://api.clouddataprep.com"'
    )
    assert "clouddataprep" in text
    path.write_text(text, encoding="utf-8")
    return path


def test_run_on_the_embedded_emulator_then_again_submits_nothing(project: Path) -> None:
    config = _regions_fast(project)
    summary = sweeper.run(config, run_id="night-1", as_of=AS_OF)
    assert summary.exit_code is ExitCode.OK and exit_code_for(summary) is ExitCode.OK
    assert (summary.succeeded, summary.posts, summary.planned) == (6, 6, 6)
    again = sweeper.run(str(config), run_id="night-1")
    assert (again.posts, again.skipped, again.exit_code) == (0, 6, ExitCode.OK)
    # The as-of recorded in the ledger wins over "now" on a resume, as in the CLI.
    assert again.as_of == summary.as_of
    # The CLI resumes what the library ran, and the other way round.
    cli_again = _cli("run", str(config), "--run-id", "night-1", "--json")
    assert cli_again["posts"] == 0 and cli_again["exit_code"] == 0


def test_the_default_run_id_is_the_clis(project: Path) -> None:
    """No run id: library and CLI both pick today's run, so each resumes the other."""
    config = _regions_fast(project)
    summary = sweeper.run(sweeper.load_config(config), wait=False)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", summary.run_id)
    assert summary.posts == 6
    cli_again = _cli("run", str(config), "--json")
    assert cli_again["run_id"] == summary.run_id and cli_again["posts"] == 0


def test_plan_needs_no_token_and_writes_the_csv(project: Path) -> None:
    config = _real_api(project)
    plan = sweeper.plan(config, run_id="r", as_of=AS_OF, output="plan.csv", keep_all=True)
    assert isinstance(plan, sweeper.SweepPlan)
    assert plan.counts.total == 6 and plan.counts.by_action["submit"] == 6
    assert plan.run_id == "r" and plan.as_of.isoformat() == "2026-11-29T06:00:00+00:00"
    assert len(plan.digest.items) == 6
    assert "6 to submit" in plan.message
    with (project / "plan.csv").open(newline="", encoding="utf-8") as fh:
        assert len(list(csv.DictReader(fh))) == 6
    # Running it needs the token: refused before anything is sent or written.
    with pytest.raises(ConfigError) as refused:
        sweeper.run(config, run_id="r", environ={})
    assert "DATAPREP_TOKEN" in str(refused.value)
    assert exit_code_for(refused.value) is ExitCode.USAGE
    assert not (project / "results" / "regions.csv").exists()


def test_status_and_report_of_the_ledger(project: Path) -> None:
    config = _regions_fast(project)
    sweeper.run(config, run_id="n1", as_of=AS_OF, wait=False)
    ledger = project / "results" / "regions.csv"

    as_is = sweeper.status(ledger, refresh=False)
    assert as_is.sweep_file is None and as_is.refreshed == 0 and as_is.run_id == "n1"
    assert len(as_is.rows) == 6

    seen: list[dict[str, int]] = []
    watched = sweeper.status(ledger, watch=True, on_change=lambda r: seen.append(r.counts()))
    assert watched.sweep_file == Path("configs/regions.toml")  # found in configs/ for the ledger
    assert watched.counts() == {"succeeded": 6} and watched.open == 0
    assert watched.exit_code is ExitCode.OK and not watched.interrupted
    assert seen and seen[-1] == {"succeeded": 6}

    report = sweeper.report(ledger)
    assert isinstance(report, sweeper.Report) and report.run_id == "n1"
    counts = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    assert counts["succeeded"] == 6 and counts["total"] == 6
    with pytest.raises(ConfigError, match="not in the ledger"):
        sweeper.report(ledger, run_id="n2")


def test_status_and_report_of_a_missing_ledger(project: Path) -> None:
    for call in (sweeper.status, sweeper.report):
        with pytest.raises(ConfigError, match="no ledger at"):
            call("results/nope.csv")


def test_an_interrupted_status_stops_the_cli_with_exit_1() -> None:
    result = StatusResult(run_id="r", rows=[], interrupted=True)
    assert result.stopped_early and exit_code_for(result) is ExitCode.STOPPED
    assert StatusResult(run_id="r", rows=[]).exit_code is ExitCode.OK


@pytest.mark.parametrize("as_of", ["yesterday", "2026-13-01", "29/11/2026"])
def test_an_invalid_as_of_is_a_config_error(project: Path, as_of: str) -> None:
    config = _regions_fast(project)
    for call in (sweeper.plan, sweeper.run):
        with pytest.raises(ConfigError, match="not an ISO date") as exc:
            call(config, run_id="r", as_of=as_of)
        assert exit_code_for(exc.value) is ExitCode.USAGE
    result = CliRunner().invoke(cli, ["run", str(config), "--as-of", as_of])
    assert result.exit_code == 2 and "--as-of" in result.stderr
    assert not (project / "results" / "regions.csv").exists()


@pytest.mark.parametrize("run_id", CONTROL_RUN_IDS)
def test_a_run_id_with_a_control_character_is_refused(project: Path, run_id: str) -> None:
    config = _regions_fast(project)
    for call in (sweeper.plan, sweeper.run, sweeper.status):
        with pytest.raises(ConfigError, match="control character"):
            call(config, run_id=run_id)
    with pytest.raises(ConfigError, match="control character"):
        sweeper.report("results/regions.csv", run_id=run_id)
    for command in ("run", "plan"):
        result = CliRunner().invoke(cli, [command, str(config), "--run-id", run_id])
        assert result.exit_code == 2, result.output
        assert "control character" in result.stderr
    assert not (project / "results" / "regions.csv").exists()  # nothing was submitted


def test_a_run_id_with_unicode_letters_is_fine(project: Path) -> None:
    plan = sweeper.plan(_regions_fast(project), run_id="nuit-été", as_of=AS_OF)
    assert plan.run_id == "nuit-été"


def _readme_python() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert blocks, "README.md has no python example"
    return "\n".join(blocks)


def test_the_readme_library_example_runs_and_resumes_like_the_cli(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _regions_fast(project)  # the README's own config, polled fast
    exec(compile(_readme_python(), "README.md", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split()[0] == "0"  # the exit code comes first
    again = _cli("run", "configs/regions.toml", "--json")
    assert again["posts"] == 0 and again["exit_code"] == 0


def test_every_public_name_resolves_after_every_submodule_is_imported() -> None:
    # Importing a submodule sets it as an attribute of the package: a public name spelt like a
    # submodule would then be the module, not the function.
    optional = {"sweeper.airflow": "airflow"}  # needs its extra
    for info in pkgutil.walk_packages(sweeper.__path__, "sweeper."):
        if info.name == "sweeper.__main__":
            continue
        extra = optional.get(info.name)
        if extra is not None and importlib.util.find_spec(extra) is None:
            continue
        importlib.import_module(info.name)
    for name in sweeper.__all__:
        value = getattr(sweeper, name)
        assert value is not None and not isinstance(value, types.ModuleType), name
    assert callable(sweeper.run) and sweeper.run.__module__ == "sweeper.commands"


def test_type_checkers_see_every_public_name() -> None:
    """Each lazily exported name is also imported under TYPE_CHECKING, from the same module."""
    tree = ast.parse((ROOT / "sweeper" / "__init__.py").read_text(encoding="utf-8"))
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module
                for alias in stmt.names:
                    assert alias.asname == alias.name  # `as` itself: a re-export for mypy
                    typed[alias.name] = stmt.module
    exports = importlib.import_module("sweeper")._EXPORTS
    assert typed == exports
    assert (ROOT / "sweeper" / "py.typed").exists()
    assert set(sweeper.__all__) == {*exports, "__version__"}
