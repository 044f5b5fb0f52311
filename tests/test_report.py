"""Reports over synthetic ledgers: every number, every format, escaping and neutralising."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path

import pytest

from sweeper.export import neutralize
from sweeper.ledger import Event, Ledger, LedgerRow, read_ledger, rows_to_frame
from sweeper.reporting import build_report, render, render_csv, write_html

FORMULA = '=HYPERLINK("http://evil","x")'
SCRIPT = "<script>alert(1)</script> | pipe"
COMBOS = {
    "a": {"Region": "01", "Type": "PROD"},
    "b": {"Region": "02", "Type": "PROD"},
    "c": {"Region": "03", "Type": "PROD"},
    "d": {"Region": "01", "Type": "TEST"},
    "e": {"Region": "02", "Type": "TEST"},
    "f": {"Region": "03", "Type": "TEST"},
}


def row(run: str, combo: str, event: Event, **kw: object) -> LedgerRow:
    return LedgerRow(
        ts="2026-11-29T12:00:00.000Z",
        sweep="regions",
        run_id=run,
        combo_id=combo,
        event=event,
        params=COMBOS[combo],
        **kw,  # type: ignore[arg-type]
    )


def finished(run: str, combo: str, status: str, duration: float, **kw: object) -> LedgerRow:
    return row(run, combo, Event.FINISHED, status=status, duration_s=duration, **kw)


def ledger_rows() -> list[LedgerRow]:
    return [
        # run r1: a succeeded, b failed, c rejected
        row("r1", "a", Event.INTENT, attempt=1),
        row("r1", "a", Event.SUBMITTED, job_group_id=1, duration_s=0.2),
        finished("r1", "a", "Complete", 10, job_group_id=1, outputs_ok="yes"),
        row("r1", "b", Event.INTENT, attempt=1),
        finished("r1", "b", "Failed", 20, job_group_id=2, error="boom"),
        row("r1", "c", Event.INTENT, attempt=1),
        row("r1", "c", Event.REJECTED, http_status=400, error="bad dataset"),
        # run r2: a newly failing, b fixed, c still failing, d in doubt, e running,
        # f newly failing (Complete but its outputs are missing)
        row("r2", "a", Event.INTENT, attempt=1),
        finished("r2", "a", "Failed", 30, job_group_id=11, error=FORMULA),
        finished("r2", "b", "Complete", 40, job_group_id=12),
        row("r2", "c", Event.REJECTED, http_status=422, error=SCRIPT),
        row("r2", "d", Event.INTENT, attempt=1, execution_id="swp-d"),
        row("r2", "e", Event.SUBMITTED, job_group_id=15),
        finished("r2", "f", "Complete", 50, job_group_id=16, outputs_ok="no"),
    ]


def test_latest_run_counts_and_durations() -> None:
    report = build_report(ledger_rows())
    assert (report.run_id, report.previous_run_id) == ("r2", "r1")
    counts = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    assert counts == {
        "succeeded": 1,
        "failed": 2,
        "rejected": 1,
        "canceled": 0,
        "timed_out": 0,
        "running": 1,
        "in_doubt": 1,
        "not_sent": 0,
        "total": 6,
    }
    d = report.durations.iloc[0]
    assert d["finished"] == 3
    assert d["p50_s"] == pytest.approx(40)
    assert d["p90_s"] == pytest.approx(48)  # linear interpolation over 30, 40, 50
    assert d["p99_s"] == pytest.approx(49.8)
    assert d["max_s"] == pytest.approx(50)


def test_failures_and_unfinished_tables() -> None:
    report = build_report(ledger_rows())
    f = report.failures
    assert list(f["combo_id"]) == ["a", "c", "f"]
    assert list(f["state"]) == ["failed", "rejected", "failed"]
    assert list(f["error"]) == [FORMULA, SCRIPT, ""]
    assert f["params"].iloc[0] == {"Region": "01", "Type": "PROD"}
    assert f["job_group_id"].iloc[0] == 11 and f["http_status"].iloc[1] == 422
    u = report.unfinished
    assert list(u["combo_id"]) == ["d", "e"]
    assert list(u["state"]) == ["in_doubt", "running"]
    assert u["execution_id"].iloc[0] == "swp-d" and u["job_group_id"].iloc[1] == 15


def test_pivot_by_parameter_value() -> None:
    pivot = build_report(ledger_rows()).by_param
    got = {
        (r.parameter, r.value): (r.combinations, r.succeeded, r.failed, r.other)
        for r in pivot.itertuples()
    }
    assert got == {
        ("Region", "01"): (2, 0, 1, 1),
        ("Region", "02"): (2, 1, 0, 1),
        ("Region", "03"): (2, 0, 2, 0),
        ("Type", "PROD"): (3, 1, 2, 0),
        ("Type", "TEST"): (3, 0, 1, 2),
    }
    rates = pivot.set_index(["parameter", "value"])["success_rate"].to_dict()
    assert rates[("Region", "02")] == pytest.approx(0.5)
    assert rates[("Type", "PROD")] == pytest.approx(1 / 3)
    p50 = pivot.set_index(["parameter", "value"])["p50_s"].to_dict()
    assert p50[("Region", "03")] == pytest.approx(50)
    assert p50[("Region", "01")] == 30  # only a finished; d is still in doubt


def test_diff_against_previous_run() -> None:
    diff = build_report(ledger_rows()).diff
    assert list(zip(diff["combo_id"], diff["change"], diff["previous_state"], strict=True)) == [
        ("a", "newly failing", "succeeded"),
        ("f", "newly failing", ""),
        ("c", "still failing", "rejected"),
        ("b", "fixed", "failed"),
    ]


def test_select_first_run_has_no_diff() -> None:
    report = build_report(ledger_rows(), run_id="r1")
    assert report.previous_run_id is None and report.diff.empty
    counts = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    assert (counts["succeeded"], counts["failed"], counts["rejected"], counts["total"]) == (
        1,
        1,
        1,
        3,
    )
    assert report.durations.iloc[0]["p50_s"] == pytest.approx(15)
    with pytest.raises(ValueError, match="r9"):
        build_report(ledger_rows(), run_id="r9")


def test_runs_overview() -> None:
    runs = build_report(ledger_rows()).runs
    assert list(runs["run_id"]) == ["r1", "r2"]
    assert list(runs["combinations"]) == [3, 6]
    assert list(runs["succeeded"]) == [1, 1] and list(runs["failed"]) == [1, 2]
    assert list(runs["max_s"]) == [20, 50]


def test_empty_ledger_renders() -> None:
    report = build_report([])
    assert report.run_id is None
    assert "no rows" in render(report, "table")
    assert json.loads(render(report, "json"))["summary"]["total"] == 0


def test_table_is_aligned_text() -> None:
    text = render(build_report(ledger_rows()), "table")
    assert text.startswith("Sweep report for run r2 (previous run: r1)")
    lines = text.splitlines()
    i = lines.index("Combinations by state")
    assert lines[i + 2].split() == ["state", "combinations"]
    assert lines[i + 3].split() == ["succeeded", "1"]
    assert len(lines[i + 3]) == len(lines[i + 2])  # numbers right-aligned under the header


def test_markdown_escapes_pipes_and_html() -> None:
    text = render(build_report(ledger_rows()), "markdown")
    assert "## Failures" in text
    assert "&lt;script&gt;" in text and "<script>" not in text
    assert "\\| pipe" in text


def test_csv_neutralises_formulas() -> None:
    text = render(build_report(ledger_rows()), "csv")
    cells = [c for r in csv.reader(io.StringIO(text)) for c in r]
    assert "'" + FORMULA in cells
    assert FORMULA not in cells
    assert not any(c.startswith(("=", "+", "-", "@", "\t", "\r")) for c in cells)
    assert [neutralize(x) for x in ("=1", "+1", "-1", "@a", "\tx", "\rx", "ok")] == [
        "'=1",
        "'+1",
        "'-1",
        "'@a",
        "'\tx",
        "'\rx",
        "ok",
    ]


def test_csv_rows_stay_whole_when_a_value_holds_a_carriage_return() -> None:
    """Cells are one-lined: a parameter value holding a bare \r cannot split a CSV row."""
    odd = dataclasses.replace(
        finished("r1", "a", "Failed", 10, job_group_id=1), params={"Region": "0\r1"}
    )
    text = render_csv(build_report([odd]), "by-parameter")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert ["Region", "0 1", "1", "0", "1", "0", "0.00", "10.00"] in rows
    assert len(rows) == 2


def test_json_is_raw_and_stable() -> None:
    data = json.loads(render(build_report(ledger_rows()), "json"))
    assert list(data) == [
        "schema",
        "sweep",
        "run_id",
        "previous_run_id",
        "started_at",
        "ended_at",
        "summary",
        "durations",
        "combinations",
        "failures",
        "unfinished",
        "by_param",
        "diff",
        "runs",
    ]
    assert data["schema"] == "sweeper.report/1"
    assert data["failures"][0]["error"] == FORMULA  # machine output is not neutralised
    assert data["failures"][0]["params"] == {"Region": "01", "Type": "PROD"}
    assert data["diff"][0]["params"] == {"Region": "01", "Type": "PROD"}
    assert data["combinations"][0]["params"] == {"Region": "01", "Type": "PROD"}
    assert data["combinations"][0]["job_url"] is None  # no base URL, no link
    assert data["failures"][0]["job_group_id"] == 11
    assert data["durations"]["p90_s"] == 48
    assert data["unfinished"][0]["job_group_id"] is None
    with pytest.raises(ValueError):
        render(build_report(ledger_rows()), "xml")  # type: ignore[arg-type]


def test_html_is_self_contained_escaped_and_atomic(tmp_path: Path) -> None:
    rows = ledger_rows()
    out = write_html(build_report(rows), tmp_path / "r" / "report.html", rows)
    page = out.read_text("utf-8")
    assert "<svg" in page and "<table>" in page and "Success rate by parameter value" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "http://evil" in page  # as escaped text only
    assert "src=" not in page and "<link" not in page and "@import" not in page
    # no base URL, no job links: the only references are the SVG's to its own elements
    assert all(ref.startswith("#") for ref in re.findall(r'href="([^"]*)"', page))
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temp file left


def test_values_are_escaped_in_the_html_and_in_the_chart_svg(tmp_path: Path) -> None:
    """A parameter value with markup shows as text in the grid, the tables and the SVG axes."""
    evil = '<img src=x onerror="alert(1)">&$x$'
    rows = [
        dataclasses.replace(r, params={"Region": evil, "Type": "PROD"})
        for r in ledger_rows()
        if r.combo_id == "a"
    ]
    page = write_html(build_report(rows), tmp_path / "r.html", rows).read_text("utf-8")
    assert "<img" not in page
    svg = page[page.index("<svg") : page.rindex("</svg>")]
    assert '&lt;img src=x onerror="alert(1)"&gt;&amp;$x$</text>' in svg  # an axis label


def test_html_write_failure_is_exit_1_and_leaves_no_file(tmp_path: Path) -> None:
    import os

    from sweeper.errors import ExitCode, OutputError, exit_code_for

    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user that can write a read-only folder (root)")
        with pytest.raises(OutputError, match=r"ro/report\.html") as caught:
            write_html(build_report(ledger_rows()), folder / "report.html")
        assert "Permission denied" in str(caught.value)
        assert exit_code_for(caught.value) is ExitCode.STOPPED
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (ENOSPC at fsync) is an OutputError naming the path and the cause."""
    import errno
    import os

    from sweeper.errors import OutputError

    out = tmp_path / "report.html"
    out.write_text("old", encoding="utf-8")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OutputError, match="No space left on device") as caught:
        write_html(build_report(ledger_rows()), out)
    assert str(out) in str(caught.value)
    assert out.read_text(encoding="utf-8") == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_tidy_csv_is_one_row_per_combination_for_pandas() -> None:
    import pandas as pd

    report = build_report(ledger_rows())
    frame = pd.read_csv(io.StringIO(render(report, "csv")))
    assert list(frame.columns) == [
        "combo_id",
        "Region",
        "Type",
        "state",
        "status",
        "job_group_id",
        "session_id",
        "job_ids",
        "duration_s",
        "error",
    ]
    assert list(frame["combo_id"]) == list("abcdef")
    assert list(frame["state"]) == [
        "failed",
        "succeeded",
        "rejected",
        "in doubt",
        "running",
        "failed",
    ]
    assert frame.loc[0, "error"] == "'" + FORMULA  # neutralised for spreadsheets
    assert frame.loc[2, "error"] == SCRIPT
    assert frame.loc[0, "job_group_id"] == 11 and frame.loc[5, "duration_s"] == 50


def test_other_tables_are_separate_csvs() -> None:
    report = build_report(ledger_rows())
    failures = list(csv.DictReader(io.StringIO(render_csv(report, "failures"))))
    assert [f["combo_id"] for f in failures] == ["a", "c", "f"]
    diff = list(csv.DictReader(io.StringIO(render_csv(report, "diff"))))
    assert diff[0]["change"] == "newly failing" and diff[0]["params"] == "Region=01, Type=PROD"
    pivot = list(csv.DictReader(io.StringIO(render_csv(report, "by-parameter"))))
    assert float(pivot[0]["success_rate"]) <= float(pivot[-1]["success_rate"])  # worst first
    with pytest.raises(ValueError, match="unknown table"):
        render_csv(report, "nope")


def test_markdown_keeps_link_and_image_syntax_dead() -> None:
    rows = [
        dataclasses.replace(r, error="see ![t](http://x/t.png) or [x](javascript:alert(1)) *now*")
        if r.combo_id == "a" and r.event is Event.FINISHED
        else r
        for r in ledger_rows()
    ]
    text = render(build_report(rows), "markdown")
    assert "![t](" not in text and "[x](" not in text and "*now*" not in text
    assert r"\!\[t\]\(http://x/t.png\)" in text
    assert r"\[x\]\(javascript:alert\(1\)\)" in text
    assert "| Region | 01 | 2 | 0 | 1 | 1 | 0.00 | 30.00 |" in text  # numbers stay plain


def test_table_format_shows_error_text_whole() -> None:
    long = "Job failed: " + "x" * 150 + " caused by: No source data for Region 13"
    rows = [
        dataclasses.replace(r, error=long) if r.combo_id == "a" and r.event is Event.FINISHED else r
        for r in ledger_rows()
    ]
    text = render(build_report(rows), "table")
    assert f"  a: {long}" in text


def test_report_from_ledger_file(tmp_path: Path) -> None:
    path = tmp_path / "regions.csv"
    with Ledger.open(path, sweep="regions", param_names=["Region", "Type"]) as led:
        for r in ledger_rows():
            led.append(r)
    from_file = build_report(rows_to_frame(read_ledger(path)))
    from_rows = build_report(ledger_rows())
    assert render(from_file, "json") == render(from_rows, "json")


def test_people_read_state_labels_scripts_read_state_values(tmp_path: Path) -> None:
    report = build_report(ledger_rows())
    data = json.loads(render(report, "json"))
    assert data["summary"]["in_doubt"] == 1 and "timed_out" in data["runs"][0]
    assert [u["state"] for u in data["unfinished"]] == ["in_doubt", "running"]
    for fmt in ("table", "markdown", "csv"):
        text = render(report, fmt) if fmt != "csv" else render_csv(report, "runs")  # type: ignore[arg-type]
        assert "in doubt" in text and "timed out" in text, fmt
        assert "in_doubt" not in text and "timed_out" not in text, fmt
    page = write_html(report, tmp_path / "r.html").read_text("utf-8")
    assert "in doubt" in page and "in_doubt" not in page
