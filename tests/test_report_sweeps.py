"""Reports over ledgers built by REAL sweeps on the emulator, checked against its oracle.

Every number a report prints (counts, percentiles, failures, rates by parameter, the diff with the
previous run) is recomputed here from what the emulator says happened: `/_emulator/jobGroups`
(every job group it created, with its status) and `GET /v4/jobGroups/{id}` (its timestamps and
jobs). The sweeps run in-process through `httpx.ASGITransport`, on one SQLite state file, so two
"nights" with different faults are two apps over the same server state.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import textwrap
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import sweeper
from sweeper.config import load_config
from sweeper.emulator import EmulatorSettings, create_app
from sweeper.emulator.settings import FaultSettings
from sweeper.journal import RunEvent, RunSummary
from sweeper.ledger import read_ledger
from sweeper.reporting import Report, build_report, render, render_csv, report_dict, write_html
from tests.reliab_support import run_library

# 4 Regions x 2 types = 8 combinations; fast lifecycle, polling and pacing.
NIGHTLY = """
[sweep]
name = "nightly"
dataset = 33

[api]
base_url = "embedded"

[matrix]
Region = ["01", "02", "03", "04"]
varReferenceType = ["PROD", "TEST"]

[overrides]
execution = "photon"
profiler = false

[[overrides.writeSettings]]
path = "{out}/{{run_id}}/region-{{Region}}-{{varReferenceType}}.csv"
action = "create"
format = "csv"
compression = "none"
header = true
asSingleFile = true

[run]
rate = "6000/min"
concurrency = 8
poll_interval = "0.05s"
poll_max_interval = "0.2s"
max_polls_per_second = 200
timeout = "{timeout}"
settle = "0s"
verify_outputs = {verify}
"""

NIGHT_1 = FaultSettings(
    fail_params={"Region": ("02",)}, slow_factor=4.0, slow_params={"Region": ("03",)}
)
NIGHT_2 = FaultSettings(fail_params={"Region": ("04",), "varReferenceType": ("TEST",)})


def write_sweep(
    project: Path,
    *,
    timeout: str = "1m",
    verify: bool = False,
    out: str = "results/out",
    name: str = "nightly.toml",
) -> Path:
    path = project / "configs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    text = NIGHTLY.format(out=out, timeout=timeout, verify=str(verify).lower())
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


class Emulator:
    """One emulated server state (a SQLite file) that apps with different faults can share.

    Its clock is real time plus `offset`, so a test can make slow jobs end by moving time on
    instead of sleeping.
    """

    def __init__(
        self, root: Path, *, output_root: Path | None = None, time_scale: float = 10.0
    ) -> None:
        self.state = root / "emulator.sqlite"
        self.output_root = output_root or root
        self.time_scale = time_scale
        self.offset = 0.0
        self.app = self.make_app()

    def clock(self) -> float:
        return time.time() + self.offset

    def make_app(self, faults: FaultSettings | None = None) -> Any:
        settings = EmulatorSettings(
            state_path=self.state,
            output_root=self.output_root,
            faults=faults,
            time_scale=self.time_scale,
            clock=self.clock,
            quota_user_per_min=0,
            quota_workspace_per_min=0,
        )
        return create_app(settings)

    def use_faults(self, faults: FaultSettings | None) -> None:
        self.app = self.make_app(faults)

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=self.app)

    def _get(self, path: str, **params: str) -> Any:
        async def go() -> Any:
            async with httpx.AsyncClient(
                transport=self.transport(),
                base_url="http://emulator",
                headers={"Authorization": "Bearer oracle"},
            ) as http:
                response = await http.get(path, params=params)
                response.raise_for_status()
                return response.json()

        return asyncio.run(go())

    def oracle(self) -> list[dict[str, Any]]:
        """Every job group the emulator created, oldest first."""
        data: list[dict[str, Any]] = self._get("/_emulator/jobGroups")["data"]
        return data

    def group(self, group_id: int) -> dict[str, Any]:
        data: dict[str, Any] = self._get(f"/v4/jobGroups/{group_id}", embed="jobs")
        return data


@dataclass
class Sweep:
    summary: RunSummary
    events: list[RunEvent] = field(default_factory=list)


def run(
    config_path: Path,
    emulator: Emulator,
    run_id: str,
    *,
    rerun: str = "incomplete",
    wait: bool | None = None,
) -> Sweep:
    """One real sweep through the library, on the emulator, into the config's ledger."""
    summary, events = run_library(
        config_path, emulator.transport(), run_id=run_id, rerun=rerun, wait=wait
    )
    return Sweep(summary, events)


# --- what the emulator says happened -------------------------------------------------------


def combo_key(params: Mapping[str, str]) -> tuple[str, str]:
    return (params["Region"], params["varReferenceType"])


def groups_of_run(emulator: Emulator, run_id: str) -> list[dict[str, Any]]:
    """The oracle's groups whose output path names `run_id` (independent of the ledger)."""
    return [g for g in emulator.oracle() if f"/{run_id}/" in json.dumps(g["overrides"])]


def truth(emulator: Emulator, run_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Per combination: the LAST group of the run (a rerun supersedes), its status and timing."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for g in groups_of_run(emulator, run_id):
        full = emulator.group(g["id"])
        created = datetime.fromisoformat(full["createdAt"].replace("Z", "+00:00"))
        updated = datetime.fromisoformat(full["updatedAt"].replace("Z", "+00:00"))
        errors = [j["errorMessage"] for j in full["jobs"]["data"] if j["errorMessage"]]
        out[combo_key(g["params"])] = {
            "id": g["id"],
            "status": g["status"],
            "duration": (updated - created).total_seconds(),
            "error": errors[0] if errors else "",
        }
    return out


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's and pandas' default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def params_of(params: Mapping[str, str]) -> tuple[str, str]:
    """('01', 'PROD') from a report's {'Region': '01', 'varReferenceType': 'PROD'}."""
    return combo_key(params)


def check_report_against_oracle(report: Report, facts: Mapping[tuple[str, str], Any]) -> None:
    """Every number of the report's run sections, recomputed from the emulator's facts."""
    statuses = Counter(f["status"] for f in facts.values())
    counts = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    assert counts["succeeded"] == statuses["Complete"]
    assert counts["failed"] == statuses["Failed"]
    assert counts["canceled"] == statuses["Canceled"]
    assert counts["total"] == len(facts)
    assert counts["rejected"] == counts["in_doubt"] == counts["not_sent"] == 0

    # durations: every group of the run ended; the API's createdAt -> updatedAt
    durations = [f["duration"] for f in facts.values()]
    d = report.durations.iloc[0]
    assert d["finished"] == len(durations)
    for column, q in (("p50_s", 0.5), ("p90_s", 0.9), ("p99_s", 0.99)):
        assert d[column] == pytest.approx(percentile(durations, q), abs=0.002)
    assert d["max_s"] == pytest.approx(max(durations), abs=0.002)
    assert d["p50_s"] <= d["p90_s"] <= d["p99_s"] <= d["max_s"]

    # failures: exactly the Failed groups, with their ids and the job's errorMessage
    failed = {k: f for k, f in facts.items() if f["status"] == "Failed"}
    got = {
        params_of(p): (s, g, e)
        for p, s, g, e in report.failures[["params", "state", "job_group_id", "error"]].itertuples(
            index=False, name=None
        )
    }
    assert set(got) == set(failed)
    for key, (state, group_id, error) in got.items():
        assert state == "failed"
        assert group_id == failed[key]["id"]
        assert error == failed[key]["error"] and error.startswith("Injected fault")
    assert report.unfinished.empty

    # success rate by parameter value
    rows = {(r["parameter"], r["value"]): r for r in report.by_param.to_dict("records")}
    expected_keys = {("Region", k[0]) for k in facts} | {("varReferenceType", k[1]) for k in facts}
    assert set(rows) == expected_keys
    for (param, value), r in rows.items():
        index = 0 if param == "Region" else 1
        mine = [f for k, f in facts.items() if k[index] == value]
        ok = sum(f["status"] == "Complete" for f in mine)
        bad = sum(f["status"] == "Failed" for f in mine)
        assert (r["combinations"], r["succeeded"], r["failed"], r["other"]) == (
            len(mine),
            ok,
            bad,
            0,
        )
        assert r["success_rate"] == pytest.approx(ok / len(mine))


def diff_sets(report: Report) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {
        "newly failing": set(),
        "fixed": set(),
        "still failing": set(),
    }
    for params, change in report.diff[["params", "change"]].itertuples(index=False, name=None):
        out[change].add(params_of(params))
    return out


def expected_diff(
    before: Mapping[tuple[str, str], Any], after: Mapping[tuple[str, str], Any]
) -> dict[str, set[tuple[str, str]]]:
    def bad(f: Any) -> bool:
        return f is not None and f["status"] != "Complete"

    return {
        "newly failing": {k for k, f in after.items() if bad(f) and not bad(before.get(k))},
        "fixed": {k for k, f in after.items() if not bad(f) and bad(before.get(k))},
        "still failing": {k for k, f in after.items() if bad(f) and bad(before.get(k))},
    }


# --- the tests -----------------------------------------------------------------------------


@pytest.fixture
def two_nights(project: Path) -> tuple[Path, Emulator, Sweep, Sweep]:
    """night-1 fails Region 02 (Region 03 is slow); night-2 fails Region 04 and every TEST."""
    config = write_sweep(project)
    emulator = Emulator(project)
    emulator.use_faults(NIGHT_1)
    first = run(config, emulator, "night-1")
    emulator.use_faults(NIGHT_2)
    second = run(config, emulator, "night-2")
    return config, emulator, first, second


def test_two_nights_report_matches_the_oracle(two_nights: Any) -> None:
    config, emulator, first, second = two_nights
    assert first.summary.exit_code == 3 and second.summary.exit_code == 3
    night1, night2 = truth(emulator, "night-1"), truth(emulator, "night-2")
    assert len(night1) == len(night2) == 8
    # the faults did what they say, so the checks below are not vacuous
    assert {k for k, f in night1.items() if f["status"] == "Failed"} == {
        ("02", "PROD"),
        ("02", "TEST"),
    }
    assert {k for k, f in night2.items() if f["status"] == "Failed"} == {
        ("01", "TEST"),
        ("02", "TEST"),
        ("03", "TEST"),
        ("04", "PROD"),
        ("04", "TEST"),
    }
    # nothing was created twice
    assert len(emulator.oracle()) == 16

    rows = read_ledger(load_config(config).sweep.ledger)
    latest = build_report(rows)
    assert (latest.run_id, latest.previous_run_id) == ("night-2", "night-1")
    check_report_against_oracle(latest, night2)
    assert diff_sets(latest) == expected_diff(night1, night2)
    assert diff_sets(latest) == {
        "newly failing": {("01", "TEST"), ("03", "TEST"), ("04", "PROD"), ("04", "TEST")},
        "fixed": {("02", "PROD")},
        "still failing": {("02", "TEST")},
    }

    older = build_report(rows, run_id="night-1")
    assert (older.run_id, older.previous_run_id) == ("night-1", None)
    check_report_against_oracle(older, night1)
    assert older.diff.empty
    # Region 03 was 4x slower on night 1: the slowest jobs are exactly the 03s
    slow = [f["duration"] for k, f in night1.items() if k[0] == "03"]
    assert older.durations.iloc[0]["max_s"] == pytest.approx(max(slow), abs=0.002)
    assert min(slow) > max(f["duration"] for k, f in night1.items() if k[0] != "03")

    # the run-by-run overview agrees with both nights
    runs = latest.runs.set_index("run_id")
    for run_id, facts in (("night-1", night1), ("night-2", night2)):
        statuses = Counter(f["status"] for f in facts.values())
        assert runs.loc[run_id, "combinations"] == 8
        assert runs.loc[run_id, "succeeded"] == statuses["Complete"]
        assert runs.loc[run_id, "failed"] == statuses["Failed"]
        assert runs.loc[run_id, "p50_s"] == pytest.approx(
            percentile([f["duration"] for f in facts.values()], 0.5), abs=0.002
        )


def test_rerun_failed_then_report_counts_the_new_generation(two_nights: Any) -> None:
    config, emulator, _, _ = two_nights
    emulator.use_faults(None)  # the data was fixed
    again = run(config, emulator, "night-2", rerun="failed")
    assert again.summary.exit_code == 0
    assert again.summary.submitted == 5 and again.summary.skipped == 3
    # every decision line says why
    skips = [e.message for e in again.events if e.kind == "skip"]
    submits = [e.message for e in again.events if e.kind == "submit"]
    assert len(skips) == 3 and all("succeeded in this run" in m for m in skips)
    assert len(submits) == 5 and all("--rerun failed" in m for m in submits)

    night2 = truth(emulator, "night-2")  # the last group per combination: the reruns
    assert len(groups_of_run(emulator, "night-2")) == 13
    report = build_report(read_ledger(load_config(config).sweep.ledger))
    counts = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    assert counts["succeeded"] == 8 and counts["total"] == 8
    assert report.failures.empty
    # durations count every finished job group of the run: the 8 first ones and the 5 reruns
    assert report.durations.iloc[0]["finished"] == 13
    assert diff_sets(report) == {
        "newly failing": set(),
        "fixed": {("02", "PROD"), ("02", "TEST")},
        "still failing": set(),
    }
    assert all(f["status"] == "Complete" for f in night2.values())


def test_every_format_prints_the_same_numbers(two_nights: Any) -> None:
    config, emulator, _, _ = two_nights
    report = build_report(read_ledger(load_config(config).sweep.ledger))
    night2 = truth(emulator, "night-2")

    data = json.loads(render(report, "json"))
    assert data == json.loads(json.dumps(report_dict(report)))
    assert data["summary"]["failed"] == 5 and data["summary"]["succeeded"] == 3
    assert {params_of(f["params"]) for f in data["failures"]} == {
        k for k, f in night2.items() if f["status"] == "Failed"
    }
    assert {f["job_group_id"] for f in data["failures"]} == {
        f["id"] for f in night2.values() if f["status"] == "Failed"
    }

    table = render(report, "table")
    assert "Sweep report for run night-2 (previous run: night-1)" in table
    for f in night2.values():
        if f["status"] == "Failed":
            assert str(f["id"]) in table

    markdown = render(report, "markdown")
    assert "| succeeded | 3 |" in markdown and "| failed | 5 |" in markdown
    assert "| Region | 04 | 2 | 0 | 2 | 0 | 0.00 |" in markdown

    records = list(csv.reader(io.StringIO(render_csv(report, "summary"))))
    assert records[:3] == [["state", "combinations"], ["succeeded", "3"], ["failed", "5"]]
    tidy = list(csv.DictReader(io.StringIO(render(report, "csv"))))
    assert Counter(r["state"] for r in tidy) == {"succeeded": 3, "failed": 5}
    assert {(r["Region"], r["varReferenceType"], r["job_group_id"]) for r in tidy} == {
        (*k, str(f["id"])) for k, f in night2.items()
    }


FORMULAS = """
[sweep]
name = "formulas"
dataset = 33

[api]
base_url = "embedded"

[matrix]
Region = ["01", "02"]
Note = ["=HYPERLINK(\\"http://x\\")", "+1", "-2", "@SUM(A1)", "plain"]

[overrides]
execution = "photon"

[[overrides.writeSettings]]
path = "results/out/{run_id}/{combo_id}.csv"
action = "create"
format = "csv"

[run]
rate = "6000/min"
concurrency = 8
poll_interval = "0.05s"
poll_max_interval = "0.2s"
max_polls_per_second = 200
settle = "0s"
"""


def test_formula_like_values_are_neutralised_in_csv_but_raw_in_json(project: Path) -> None:
    """Run-parameter values a spreadsheet would run are defused in the people CSV only."""
    config = project / "configs" / "formulas.toml"
    config.write_text(FORMULAS.lstrip(), encoding="utf-8")
    emulator = Emulator(project)
    emulator.use_faults(FaultSettings(fail_params={"Region": ("02",)}))
    assert run(config, emulator, "night-1").summary.exit_code == 3
    assert len(groups_of_run(emulator, "night-1")) == 10
    report = build_report(read_ledger(load_config(config).sweep.ledger))

    for table in ("combinations", "by-parameter", "failures"):
        cells = [c for r in csv.reader(io.StringIO(render_csv(report, table))) for c in r]
        assert not any(c[:1] in ("=", "+", "-", "@") for c in cells if c), table
        assert "plain" in cells or table == "failures"
    cells = [c for r in csv.reader(io.StringIO(render_csv(report, "combinations"))) for c in r]
    for value in ('=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)"):
        assert "'" + value in cells  # parameter columns of the tidy table
    # the failures' params text does not start with a formula character, so it is not touched
    failures = [c for r in csv.reader(io.StringIO(render_csv(report, "failures"))) for c in r]
    assert 'Note==HYPERLINK("http://x"), Region=02' in failures

    data = json.loads(render(report, "json"))
    values = {r["value"] for r in data["by_param"] if r["parameter"] == "Note"}
    assert values == {'=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "plain"}
    notes = {r["value"]: r for r in data["by_param"] if r["parameter"] == "Note"}
    assert all(
        (r["combinations"], r["succeeded"], r["failed"]) == (2, 1, 1) for r in notes.values()
    )


def test_html_report_opens_with_the_headline_grids_and_charts(
    two_nights: Any, tmp_path: Path
) -> None:
    config, emulator, _, _ = two_nights
    rows = read_ledger(load_config(config).sweep.ledger)
    report = build_report(rows, base_url="https://api.clouddataprep.com")
    page = write_html(report, tmp_path / "report.html", rows).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    headline = page[: page.index('<section id="grid">')]
    assert "nightly · run night-2" in headline and "3 / 8 succeeded" in headline
    # the failing values, worst first, with the emulator's error text
    assert headline.index("varReferenceType TEST</strong>: 4 of 4 failed") < headline.index(
        "Region 04</strong>: 2 of 2 failed"
    )
    assert "Injected fault" in headline
    for title in (
        "Status grid",
        "The last 2 runs",
        "Charts",
        "Failures",
        "Success rate by parameter value",
        "Changes since the previous run",
        "All runs",
    ):
        assert f"<h2>{title}</h2>" in page
    # one grid cell per combination, titled with its job group and linked to its job page
    night2 = truth(emulator, "night-2")
    for (region, kind), fact in night2.items():
        state = "succeeded" if fact["status"] == "Complete" else "failed"
        title = f"Region={region}, varReferenceType={kind}: {state}, job group {fact['id']}"
        assert f'href="https://clouddataprep.com/jobs/{fact["id"]}" title="{title}"' in page
    assert page.count('class="grid"') == 1 and page.count('class="grid small"') == 2
    assert page.count("<svg") == 2 and ">Combinations by state, per run<" in page
    assert ">Duration by Region<" in page
    assert "<script" not in page and "src=" not in page and "<link" not in page


def test_timed_out_run_then_status_finishes_it(project: Path) -> None:
    """run.timeout with jobs still running: timed_out rows, exit 3, then `status` ends them."""
    config = write_sweep(project, timeout="1s")
    emulator = Emulator(project)
    # Region 03 takes 1000x longer (150 s at this time scale): still running at the timeout.
    emulator.use_faults(FaultSettings(slow_factor=1000.0, slow_params={"Region": ("03",)}))
    timed = run(config, emulator, "night-1")
    s = timed.summary
    assert s.timed_out and s.exit_code == 3
    assert (s.succeeded, s.running) == (6, 2)
    from sweeper.render import summary_text

    assert "sweeper status" in summary_text(s)
    slow_ids = {f["id"] for k, f in truth(emulator, "night-1").items() if k[0] == "03"}
    facts = {k: f["status"] for k, f in truth(emulator, "night-1").items()}
    assert {facts[k] for k in facts if k[0] == "03"} <= {"Created", "InProgress"}  # not ended

    ledger_path = load_config(config).sweep.ledger
    report = build_report(read_ledger(ledger_path))
    counts = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    assert counts["timed_out"] == 2 and counts["succeeded"] == 6
    assert set(report.unfinished["state"]) == {"timed_out"}
    assert set(report.unfinished["job_group_id"]) == slow_ids
    assert report.durations.iloc[0]["finished"] == 6

    emulator.offset += 3600.0  # an hour later, the slow jobs have ended
    result = sweeper.status(config, environ={}, transport=emulator.transport())
    assert (result.refreshed, result.finished, result.open) == (2, 2, 0)
    after = build_report(read_ledger(ledger_path))
    check_report_against_oracle(after, truth(emulator, "night-1"))


def test_verify_outputs_counts_complete_without_outputs_as_failed(project: Path) -> None:
    """Two signals: Complete on the server AND the local output files exist."""
    config = write_sweep(project, verify=True)
    # The platform writes somewhere this machine cannot see: every job completes, no file here.
    emulator = Emulator(project, output_root=project / "elsewhere")
    s = run(config, emulator, "night-1").summary
    assert (s.succeeded, s.failed, s.exit_code) == (0, 8, 3)
    facts = truth(emulator, "night-1")
    assert {f["status"] for f in facts.values()} == {"Complete"}  # the server says all is well
    rows = read_ledger(load_config(config).sweep.ledger)
    finished = [r for r in rows if r.event.value == "finished"]
    assert {r.outputs_ok for r in finished} == {"no"}
    for r in finished:
        assert r.error == (
            "outputs missing: results/out/night-1/"
            f"region-{r.params['Region']}-{r.params['varReferenceType']}.csv"
        )
    report = build_report(rows)
    counts = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    assert (counts["succeeded"], counts["failed"]) == (0, 8)
    assert set(report.failures["status"]) == {"Complete"}
    assert all(e.startswith("outputs missing: ") for e in report.failures["error"])

    # Now the outputs land where they should: `--rerun failed` runs them again and they pass.
    emulator.output_root = project
    emulator.use_faults(None)
    again = run(config, emulator, "night-1", rerun="failed")
    assert again.summary.succeeded == 8 and again.summary.exit_code == 0
    submits = [e.message for e in again.events if e.kind == "submit"]
    assert all("completed but its outputs are missing" in m for m in submits)
    report = build_report(read_ledger(load_config(config).sweep.ledger))
    assert set(report.diff["change"]) == set()  # same run: no previous run to compare with
    assert report.failures.empty


def test_verify_outputs_through_the_outputs_endpoint_for_bucket_paths(project: Path) -> None:
    config = write_sweep(project, verify=True, out="gs://night-bucket/out")
    emulator = Emulator(project)
    s = run(config, emulator, "night-1").summary
    assert (s.succeeded, s.exit_code) == (8, 0)
    rows = read_ledger(load_config(config).sweep.ledger)
    assert {r.outputs_ok for r in rows if r.event.value == "finished"} == {"yes"}
    # the emulator really wrote them under its bucket folder
    assert len(list((project / "_buckets" / "gs" / "night-bucket").rglob("*.csv"))) == 8


def test_verify_outputs_deleted_file_is_written_again_by_a_rerun(project: Path) -> None:
    """A file deleted after the run: `--rerun all` runs the group again and the file is back."""
    config = write_sweep(project, verify=True)
    emulator = Emulator(project)
    assert run(config, emulator, "night-1").summary.exit_code == 0
    out = project / "results" / "out" / "night-1"
    assert len(list(out.glob("*.csv"))) == 8
    gone = out / "region-01-PROD.csv"
    gone.unlink()
    again = run(config, emulator, "night-1", rerun="all")
    assert again.summary.succeeded == 8 and again.summary.exit_code == 0
    assert gone.exists()
    # action = "create" never overwrites: the 7 files still there got a job-id suffixed sibling
    assert len(list(out.glob("*_*.csv"))) == 7


def _chromium() -> str | None:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def test_html_report_renders_in_a_headless_browser(two_nights: Any, tmp_path: Path) -> None:
    """Debian's chromium loads the page offline: headline, grid and charts are in the DOM, and
    a screenshot is written."""
    import subprocess

    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium)")
    config, _emulator, _, _ = two_nights
    rows = read_ledger(load_config(config).sweep.ledger)
    page = write_html(build_report(rows), tmp_path / "report.html", rows)
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    url = page.as_uri()
    dom = subprocess.run(
        [*flags, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=True
    ).stdout
    assert "3 / 8 succeeded" in dom and "nightly · run night-2" in dom
    assert 'class="grid"' in dom and dom.count('class="dot s-failed"') >= 5
    assert dom.count("<svg") == 2 and "Combinations by state, per run" in dom
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,2000", url],
        capture_output=True,
        timeout=90,
        check=True,
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_sweep_file_reads_its_ledger(two_nights: Any) -> None:
    config, _emulator, _, _ = two_nights
    from_config = sweeper.report(config)
    from_ledger = sweeper.report(load_config(config).sweep.ledger, config=config)
    assert (from_config.run_id, from_config.total, from_config.succeeded) == ("night-2", 8, 3)
    assert report_dict(from_config) == report_dict(from_ledger)
    assert from_config.base_url == "embedded"  # the emulator has no job pages: no links
    combinations = report_dict(from_config)["combinations"]
    assert isinstance(combinations, list)
    assert all(c["job_url"] is None for c in combinations)
