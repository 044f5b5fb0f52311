"""sweeper.airflow under Airflow itself: ``dag.test()`` against a served emulator.

Airflow reads its configuration at its first import, so nothing here imports it at collection:
the session fixture sets ``AIRFLOW_HOME`` (one per xdist worker) first, then builds the database.
The tests share one xdist group, so one worker pays Airflow's warm-up once.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliab_support import created_groups, ledger_rows, served_emulator, write_sweep

pytestmark = [
    pytest.mark.skipif(
        importlib.util.find_spec("airflow") is None,
        reason="Airflow is not installed: pip install -e '.[test,airflow]'",
    ),
    pytest.mark.xdist_group("airflow"),
]

TOKEN = "airflow-test-token-5f0c2a9e71d84b36"
CONN_ID = "dataprep_test"
DAG_ID = "sweeper_airflow_test"
SHARDS = 4

# The DAG file Airflow parses and serializes; dag.test() needs the DAG in its database. The
# sweep file comes from the environment, so each test sweeps its own project.
DAG_FILE = f'''\
"""A test DAG (airflow dag): sweeper's task group over the sweep file in $SWEEPER_TEST_CONFIG."""
import os
from datetime import datetime, timedelta

from airflow.sdk import DAG

from sweeper.airflow import SweepOperator, sweep_task_group

with DAG(f"{DAG_ID}_single", schedule=None, start_date=datetime(2026, 11, 1)) as single:
    SweepOperator(
        task_id="sweep", config=os.environ.get("SWEEPER_TEST_CONFIG", "missing.toml"),
        conn_id="{CONN_ID}",
    )

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 11, 1), catchup=False) as dag:
    sweep_task_group(
        os.environ.get("SWEEPER_TEST_CONFIG", "missing.toml"),
        shards={SHARDS},
        conn_id="{CONN_ID}",
        retries=1,
        retry_delay=timedelta(0),
    )
'''


@pytest.fixture(scope="session")
def airflow_dags(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An Airflow home of this worker's own, its database built; returns the DAGs folder."""
    import os

    home = tmp_path_factory.mktemp("airflow-home")
    dags = home / "dags"
    dags.mkdir()
    (dags / "sweeper_test_dag.py").write_text(DAG_FILE, encoding="utf-8")
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
    from airflow.utils import db

    db.resetdb()
    return dags


def _dag(dags: Path, name: str = "dag") -> Any:
    """A test DAG, loaded from its file in the DAGs folder (rebuilt for this test's config)."""
    module_name = "sweeper_test_dag"
    sys.modules.pop(module_name, None)
    spec = importlib.util.spec_from_file_location(module_name, dags / f"{module_name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


@pytest.fixture
def sweep(
    airflow_dags: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: Any
) -> Iterator[tuple[Path, str]]:
    """A 12-combination sweep against a served emulator that accepts TOKEN only; the
    connection's host points sweeper at it (the sweep file names an unreachable host).
    Parametrize indirectly with a faults file's text to inject faults."""
    faults = getattr(request, "param", None)
    # Jobs take a fifth of a second, so the shards still defer while keeping the tests short.
    with served_emulator(
        tmp_path / "emulator", token=TOKEN, faults=faults, args=["--time-scale", "5"]
    ) as url:
        host, port = url.removeprefix("http://").split(":")
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            json.dumps(
                {
                    "conn_type": "http",
                    "host": host,
                    "port": int(port),
                    "schema": "http",
                    "password": TOKEN,
                }
            ),
        )
        config = write_sweep(
            tmp_path / "project" / "configs" / "nightly.toml",
            name="nightly",
            base_url="https://dataprep.invalid",
            matrix='Region = ["01", "02", "03"]\nbatch = { start = 1, end = 4 }',
            token_env="SWEEPER_AIRFLOW_TOKEN",
            # The shards pace themselves through one shared budget, as in production.
            run={"rate_store": "sqlite:///results/.rate.sqlite"},
        )
        monkeypatch.setenv("SWEEPER_TEST_CONFIG", str(config))
        monkeypatch.delenv("SWEEPER_AIRFLOW_TOKEN", raising=False)
        yield config, url


def _ledgers(config: Path) -> dict[str, list[dict[str, str]]]:
    results = config.parent.parent / "results"
    return {p.name: ledger_rows(p) for p in sorted(results.glob("nightly.shard-*-of-4.csv"))}


def _xcoms(dag_id: str) -> list[str]:
    """Every XCom value the DAG's runs stored, as text."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag_id).all()
        return [json.dumps(row.value) for row in rows]


def _assert_created_once(url: str) -> None:
    groups = created_groups(url)
    params = Counter(json.dumps(g.get("runParameters"), sort_keys=True) for g in groups)
    assert len(groups) == 12
    assert len(params) == 12, params  # no combination twice


def test_mapped_shards_defer_and_report(
    sweep: tuple[Path, str], airflow_dags: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config, url = sweep
    run = _dag(airflow_dags).test()
    assert run.state == "success"
    _assert_created_once(url)
    ledgers = _ledgers(config)
    assert len(ledgers) == SHARDS
    for name, rows in ledgers.items():
        # The run submitted without waiting; only the resumed task (after the trigger) writes
        # `finished` rows, so each shard deferred and came back.
        finished = [r for r in rows if r["event"] == "finished"]
        assert finished and all(r["status"] == "Complete" for r in finished), name
        assert {r["run_id"] for r in rows} == {run.logical_date.date().isoformat()}
    assert sum(len({r["combo_id"] for r in rows}) for rows in ledgers.values()) == 12
    assert (config.parent.parent / "results" / ".rate.sqlite").is_file()  # paced through it
    out, err = capfd.readouterr()
    assert TOKEN not in out + err
    xcoms = _xcoms(DAG_ID)
    assert xcoms and TOKEN not in "".join(xcoms)
    logs = airflow_dags.parent / "logs"
    for path in logs.rglob("*") if logs.exists() else ():
        if path.is_file():
            assert TOKEN not in path.read_text(encoding="utf-8", errors="replace"), path


@pytest.mark.parametrize("where", ["submission", "resume"])
def test_a_shard_that_crashes_once_is_retried_without_duplicates(
    sweep: tuple[Path, str], airflow_dags: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    from sweeper.airflow import SweepShardOperator
    from sweeper.journal import EventKind, RunEvent

    config, url = sweep
    crashes: list[int] = []
    logged = SweepShardOperator.on_sweep_event
    resume = SweepShardOperator.resume

    def crash_mid_submission(self: SweepShardOperator, event: RunEvent) -> None:
        logged(self, event)
        # The worker dies after its first submission was recorded, in the middle of its shard.
        if event.kind is EventKind.SUBMITTED and not crashes:
            crashes.append(self.shard)
            raise RuntimeError("worker lost")

    def crash_on_resume(self: SweepShardOperator, context: Any, event: Any) -> dict[str, int]:
        # The worker dies after the trigger fired, before the shard's outcomes were recorded:
        # the retry starts again from execute() and so submits its shard again.
        if not crashes:
            crashes.append(self.shard)
            raise RuntimeError("worker lost")
        return resume(self, context, event)

    if where == "submission":
        monkeypatch.setattr(SweepShardOperator, "on_sweep_event", crash_mid_submission)
    else:
        monkeypatch.setattr(SweepShardOperator, "resume", crash_on_resume)
    run = _dag(airflow_dags).test()
    assert crashes, "the crash hook never ran"
    assert run.state == "success"
    _assert_created_once(url)
    crashed = _ledgers(config)[f"nightly.shard-{crashes[0]}-of-4.csv"]
    assert [r for r in crashed if r["event"] == "finished"]


def test_a_bad_config_fails_the_plan_and_submits_nothing(
    sweep: tuple[Path, str], airflow_dags: Path
) -> None:
    config, url = sweep
    config.write_text(config.read_text(encoding="utf-8") + "\n[bogus]\nkey = 1\n", "utf-8")
    run = _dag(airflow_dags).test()
    assert run.state == "failed"
    assert created_groups(url) == []
    assert _ledgers(config) == {}


@pytest.mark.parametrize("sweep", ['[jobs]\nfail_params = { Region = ["02"] }\n'], indirect=True)
def test_a_failed_combination_fails_its_shard_the_report_and_the_run(
    sweep: tuple[Path, str], airflow_dags: Path
) -> None:
    _config, url = sweep
    run = _dag(airflow_dags).test()
    assert run.state == "failed"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("sweep.report", -1)] == "failed"  # all_done: it ran, and said so
    assert "failed" in {s for (task, _), s in states.items() if task == "sweep.shard"}
    # The shards' retries submitted nothing again: a failed combination is done in its run.
    _assert_created_once(url)


def test_sweep_operator_runs_the_whole_sweep_in_one_task(
    sweep: tuple[Path, str], airflow_dags: Path
) -> None:
    config, url = sweep
    run = _dag(airflow_dags, "single").test()
    assert run.state == "success"
    _assert_created_once(url)
    rows = ledger_rows(config.parent.parent / "results" / "nightly.csv")
    assert len({r["combo_id"] for r in rows if r["event"] == "finished"}) == 12


def test_the_trigger_round_trips_through_strings_and_ints_only() -> None:
    from sweeper.airflow import SweepShardTrigger

    trigger = SweepShardTrigger(
        config="configs/nightly.toml",
        conn_id=CONN_ID,
        job_group_ids="4,7",
        deadline=1_800_000_000,
        run_id="2026-11-29",
        since=1_764_000_000,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "sweeper.airflow.SweepShardTrigger"
    assert all(type(v) in (str, int) for v in kwargs.values())
    assert SweepShardTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_importing_sweeper_never_imports_airflow() -> None:
    code = "import sys, sweeper, sweeper.commands, sweeper.cli; print('airflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("host", "schema", "port", "expected"),
    [
        ("", None, None, None),
        ("api.eu.alteryxcloud.com", None, None, "https://api.eu.alteryxcloud.com"),
        ("127.0.0.1", "http", 8042, "http://127.0.0.1:8042"),
        ("https://trifacta.example.com/api", None, 8443, "https://trifacta.example.com:8443/api"),
        ("http://127.0.0.1:9000", None, 1234, "http://127.0.0.1:9000"),
    ],
)
def test_the_connection_host_becomes_the_base_url(
    host: str, schema: str | None, port: int | None, expected: str | None
) -> None:
    from types import SimpleNamespace

    from sweeper.airflow import _base_url

    assert _base_url(SimpleNamespace(host=host, schema=schema, port=port)) == expected


def test_the_connection_fills_the_credential_the_sweep_file_names(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sweeper.airflow import configured

    path = write_sweep(
        tmp_path / "configs" / "s.toml",
        name="s",
        base_url="https://dataprep.invalid",
        matrix='Region = ["01"]',
        token_env="MY_TOKEN",
    )
    conn = SimpleNamespace(host="", schema=None, port=None, login=None, password=TOKEN)
    cfg, env = configured(path, conn)
    assert env["MY_TOKEN"] == TOKEN
    assert cfg.api.base_url == "https://dataprep.invalid"
