"""Summaries of a ledger: state counts, durations, failures, pivots by parameter, run diffs.

Built on pandas, imported lazily so that `import sweeper.reporting` stays cheap for the CLI.
`build_report` computes DataFrames; `render` turns them into text, Markdown, CSV or JSON;
`write_html` writes one self-contained HTML page (sweeper.report_html: Jinja2 and matplotlib).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sweeper.export import neutralize, write_atomic
from sweeper.ledger import PARAM_PREFIX, LedgerRow, one_line
from sweeper.links import job_url
from sweeper.state import State

if TYPE_CHECKING:
    import pandas as pd

Format = Literal["table", "markdown", "csv", "json"]
REPORT_SCHEMA = "sweeper.report/1"
RECENT_RUNS = 5  # runs shown side by side in the HTML report's grids, the selected one last
# The tables `report --format csv --table NAME` writes; "combinations" is the tidy default.
CSV_TABLES = ("combinations", "failures", "by-parameter", "diff", "summary", "runs")

# The states a combination with ledger rows can be in (PENDING means it has none), as the
# values that report frames and JSON hold; the text formats show their labels.
_STATES: tuple[str, ...] = tuple(s.value for s in State if s is not State.PENDING)
FAILING = tuple(s.value for s in State if s.is_failure)  # terminal and not succeeded
UNFINISHED = tuple(s for s in _STATES if not State(s).is_terminal)
_STATE_COLUMNS = ("state", "previous_state")  # report columns that hold a state
_TEXT_CELL_MAX = 80  # table format: long error text is cut so columns stay readable

# (attribute, title) of each table, in display order.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Combinations by state"),
    ("durations", "Durations of finished job groups (seconds)"),
    ("failures", "Failures"),
    ("unfinished", "In doubt, running or not sent"),
    ("by_param", "Success rate by parameter value"),
    ("diff", "Changes since the previous run"),
    ("runs", "All runs"),
)


@dataclass(frozen=True)
class Report:
    """The tables of one run of a ledger (see SECTIONS), plus the run-by-run overview."""

    run_id: str | None  # the selected run; None when the ledger has no rows
    previous_run_id: str | None  # the run before it in ledger order, if any
    summary: pd.DataFrame  # state, combinations
    durations: pd.DataFrame  # finished, p50_s, p90_s, p99_s, max_s (one row)
    failures: pd.DataFrame  # combo_id, params, state, status, http_status, job_group_id, error
    unfinished: pd.DataFrame  # combo_id, params, state, job_group_id, execution_id, last_event_at
    by_param: pd.DataFrame  # parameter, value, combinations, succeeded, failed, other, ...
    diff: pd.DataFrame  # combo_id, params, change, previous_state, state
    runs: pd.DataFrame  # run_id, combinations, one column per state, p50_s, max_s
    # One row per combination of the run: combo_id, params (a dict), state, status,
    # job_group_id, session_id, job_ids, duration_s, error.
    combinations: pd.DataFrame
    sweep: str | None = None
    started_at: str | None = None  # the run's first ledger row
    ended_at: str | None = None  # the run's last ledger row
    param_names: tuple[str, ...] = ()  # in ledger column order
    # (run_id, combinations) of the last RECENT_RUNS runs up to the selected one, oldest first.
    recent: tuple[tuple[str, pd.DataFrame], ...] = field(default=(), repr=False)
    base_url: str | None = None  # the platform's, when known: job group ids link to job pages

    @property
    def succeeded(self) -> int:
        return int((self.combinations["state"] == State.SUCCEEDED.value).sum())

    @property
    def total(self) -> int:
        return len(self.combinations)

    def job_url(self, job_group_id: object) -> str | None:
        """The platform's page for a job group of this report, if the base URL tells it."""
        return job_url(self.base_url, job_group_id)


def to_frame(rows_or_frame: Iterable[LedgerRow] | pd.DataFrame) -> pd.DataFrame:
    """A ledger frame (see ledger.rows_to_frame) from rows, or the frame itself."""
    import pandas as pd

    from sweeper.ledger import rows_to_frame

    if isinstance(rows_or_frame, pd.DataFrame):
        return rows_or_frame
    return rows_to_frame(list(rows_or_frame))


def _params_text(params: Any) -> str:
    if not isinstance(params, dict):
        return ""
    return ", ".join(f"{k}={v}" for k, v in params.items())


def _param_names(frame: pd.DataFrame) -> tuple[str, ...]:
    return tuple(
        str(c)[len(PARAM_PREFIX) :] for c in frame.columns if str(c).startswith(PARAM_PREFIX)
    )


def _combinations(frame: pd.DataFrame, run_id: str | None) -> pd.DataFrame:
    """One row per combination of the run: its current state and the ids it was last given."""
    import pandas as pd

    part = frame[frame["run_id"] == run_id]
    # A `finished` row need not repeat the session and job ids of its `submitted` row.
    known: dict[str, dict[str, Any]] = {}
    for combo, group, session, jobs in zip(
        part["combo_id"], part["job_group_id"], part["session_id"], part["job_ids"], strict=True
    ):
        ids = known.setdefault(combo, {"job_group_id": None, "session_id": "", "job_ids": ""})
        if not _is_missing(group):
            ids["job_group_id"] = int(group)
        if session:
            ids["session_id"] = str(session)
        if jobs:
            ids["job_ids"] = " ".join(str(j) for j in jobs)
    current = _current(frame, run_id)
    result = pd.DataFrame(
        {
            "combo_id": current["combo_id"],
            "params": current["params"],
            "state": current["state"],
            "status": current["status"],
            "job_group_id": pd.array(
                [known[c]["job_group_id"] for c in current["combo_id"]], dtype="Int64"
            ),
            "session_id": [known[c]["session_id"] for c in current["combo_id"]],
            "job_ids": [known[c]["job_ids"] for c in current["combo_id"]],
            "duration_s": current["duration_s"].where(current["event"] == "finished"),
            "error": current["error"],
        }
    )
    tidy: pd.DataFrame = result.reset_index(drop=True)
    return tidy


def _current(frame: pd.DataFrame, run_id: str | None) -> pd.DataFrame:
    """The last row of each combination within `run_id`, in first-seen order."""
    part = frame[frame["run_id"] == run_id]
    last = part.drop_duplicates("combo_id", keep="last").set_index("combo_id")
    order = part.drop_duplicates("combo_id", keep="first")["combo_id"]
    result: pd.DataFrame = last.loc[order].reset_index()
    return result


def _durations(finished: pd.Series) -> dict[str, float]:
    """Percentiles (linear interpolation) and max of finished durations."""
    values = finished.dropna().astype("float64")
    if values.empty:
        nan = math.nan
        return {"finished": 0, "p50_s": nan, "p90_s": nan, "p99_s": nan, "max_s": nan}
    return {
        "finished": int(values.size),
        "p50_s": float(values.quantile(0.5)),
        "p90_s": float(values.quantile(0.9)),
        "p99_s": float(values.quantile(0.99)),
        "max_s": float(values.max()),
    }


def _finished_durations(frame: pd.DataFrame, run_id: str | None) -> pd.Series:
    mask = (frame["run_id"] == run_id) & (frame["event"] == "finished")
    return frame.loc[mask, "duration_s"]


def _state_counts(current: pd.DataFrame) -> dict[str, int]:
    counts = current["state"].value_counts()
    return {state: int(counts.get(state, 0)) for state in _STATES}


def _by_param(current: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    records: list[dict[str, object]] = []
    for column in [c for c in current.columns if str(c).startswith(PARAM_PREFIX)]:
        values = current[column]
        for value in sorted(values.dropna().unique(), key=str):
            group = current[values == value]
            finished = group[group["event"] == "finished"]["duration_s"].dropna()
            n = len(group)
            ok = int((group["state"] == State.SUCCEEDED.value).sum())
            bad = int(group["state"].isin(FAILING).sum())
            records.append(
                {
                    "parameter": str(column)[len(PARAM_PREFIX) :],
                    "value": str(value),
                    "combinations": n,
                    "succeeded": ok,
                    "failed": bad,
                    "other": n - ok - bad,
                    "success_rate": ok / n,
                    "p50_s": float(finished.median()) if len(finished) else math.nan,
                }
            )
    columns = ["parameter", "value", "combinations", "succeeded", "failed", "other"]
    result: pd.DataFrame = pd.DataFrame.from_records(
        records, columns=[*columns, "success_rate", "p50_s"]
    )
    # Worst first: the value to look at is at the top; ties keep parameter and value order.
    worst_first: pd.DataFrame = result.sort_values("success_rate", kind="stable")
    ranked: pd.DataFrame = worst_first.reset_index(drop=True)
    return ranked


def _diff(current: pd.DataFrame, previous: pd.DataFrame | None) -> pd.DataFrame:
    import pandas as pd

    columns = ["combo_id", "params", "change", "previous_state", "state"]
    if previous is None:
        empty: pd.DataFrame = pd.DataFrame(columns=columns)
        return empty
    before = dict(zip(previous["combo_id"], previous["state"], strict=True))
    changes = {"newly failing": 0, "still failing": 1, "fixed": 2}
    records = []
    for combo, params, state in zip(
        current["combo_id"], current["params"], current["state"], strict=True
    ):
        prev = before.get(combo, "")
        if state in FAILING:
            change = "still failing" if prev in FAILING else "newly failing"
        elif state == State.SUCCEEDED.value and prev in FAILING:
            change = "fixed"
        else:
            continue
        records.append((combo, params, change, prev, state))
    records.sort(key=lambda r: changes[r[2]])  # stable: ledger order within each change
    result: pd.DataFrame = pd.DataFrame.from_records(records, columns=columns)
    return result


def _runs_overview(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    records = []
    for run in frame["run_id"].drop_duplicates():
        current = _current(frame, run)
        durations = _durations(_finished_durations(frame, run))
        records.append(
            {
                "run_id": run,
                "combinations": len(current),
                **_state_counts(current),
                "p50_s": durations["p50_s"],
                "max_s": durations["max_s"],
            }
        )
    result: pd.DataFrame = pd.DataFrame.from_records(
        records, columns=["run_id", "combinations", *_STATES, "p50_s", "max_s"]
    )
    return result


def build_report(
    rows_or_frame: Iterable[LedgerRow] | pd.DataFrame,
    *,
    run_id: str | None = None,
    base_url: str | None = None,
) -> Report:
    """Summarise one run (default: the latest) of a ledger and compare it with the run before.

    ``base_url`` is the platform's (the sweep's ``api.base_url``): job groups then link to their
    job pages where the platform is known.
    """
    import pandas as pd

    frame = to_frame(rows_or_frame)
    run_order = [str(r) for r in frame["run_id"].drop_duplicates()]
    if run_id is not None and run_id not in run_order:
        known = ", ".join(repr(r) for r in run_order)
        raise ValueError(f"run {run_id!r} is not in the ledger (runs: {known})")
    selected = run_id if run_id is not None else (run_order[-1] if run_order else None)
    previous_id = None
    if selected is not None and run_order.index(selected) > 0:
        previous_id = run_order[run_order.index(selected) - 1]

    current = _current(frame, selected)
    in_run = frame.loc[frame["run_id"] == selected, "ts"]
    counts = _state_counts(current)
    summary = pd.DataFrame(
        {
            "state": [*_STATES, "total"],
            "combinations": [*counts.values(), len(current)],
        }
    )
    durations = pd.DataFrame([_durations(_finished_durations(frame, selected))])
    params = current["params"]

    bad = current[current["state"].isin(FAILING)]
    failures = pd.DataFrame(
        {
            "combo_id": bad["combo_id"],
            "params": params[bad.index],
            "state": bad["state"],
            "status": bad["status"],
            "http_status": bad["http_status"],
            "job_group_id": bad["job_group_id"],
            "error": bad["error"],
        }
    ).reset_index(drop=True)
    open_ = current[current["state"].isin(UNFINISHED)]
    unfinished = pd.DataFrame(
        {
            "combo_id": open_["combo_id"],
            "params": params[open_.index],
            "state": open_["state"],
            "job_group_id": open_["job_group_id"],
            "execution_id": open_["execution_id"],
            "last_event_at": open_["ts"],
        }
    ).reset_index(drop=True)
    previous = _current(frame, previous_id) if previous_id is not None else None
    return Report(
        run_id=selected,
        previous_run_id=previous_id,
        summary=summary,
        durations=durations,
        failures=failures,
        unfinished=unfinished,
        by_param=_by_param(current),
        diff=_diff(current, previous),
        runs=_runs_overview(frame),
        combinations=_combinations(frame, selected),
        sweep=str(frame["sweep"].iloc[0]) if len(frame) else None,
        started_at=str(in_run.min()) if len(in_run) else None,
        ended_at=str(in_run.max()) if len(in_run) else None,
        param_names=_param_names(frame),
        recent=tuple((r, _combinations(frame, r)) for r in _recent(run_order, selected)),
        base_url=base_url,
    )


def _recent(run_order: list[str], selected: str | None) -> list[str]:
    if selected is None:
        return []
    end = run_order.index(selected) + 1
    return run_order[max(0, end - RECENT_RUNS) : end]


# --- rendering --------------------------------------------------------------------------------


def _is_missing(value: object) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def _plain(value: object) -> object:
    """A JSON-ready Python value: numpy scalars unwrapped, NaN/NA as None."""
    if _is_missing(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float):
        return round(value, 3)
    return value


def _cell(value: object) -> str:
    """A human-readable one-line cell; parameters as `Name=value, ...`."""
    if isinstance(value, dict):
        return one_line(_params_text(value))
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return one_line(str(value))


def _label(state: object) -> object:
    """A state value as people read it (`in doubt`); anything else unchanged."""
    return State(state).label if isinstance(state, str) and state in _VALUES else state


_VALUES = frozenset(s.value for s in State)


def _cells(frame: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Header and body as text for people: states (cells and column names) by their labels."""
    header = [str(_label(c)) for c in frame.columns]
    states = {i for i, c in enumerate(frame.columns) if c in _STATE_COLUMNS}
    body = [
        [_cell(_label(v) if i in states else v) for i, v in enumerate(row)]
        for row in frame.itertuples(index=False, name=None)
    ]
    return header, body


def _numeric_columns(frame: pd.DataFrame) -> set[int]:
    import pandas as pd

    return {
        i
        for i, col in enumerate(frame.columns)
        if pd.api.types.is_numeric_dtype(frame[col]) and not pd.api.types.is_bool_dtype(frame[col])
    }


def _title(report: Report) -> str:
    if report.run_id is None:
        return "Sweep report: the ledger has no rows yet"
    title = f"Sweep report for run {report.run_id}"
    if report.previous_run_id is not None:
        title += f" (previous run: {report.previous_run_id})"
    return title


def _aligned(cells: list[str], widths: list[int], right: set[int]) -> str:
    return "  ".join(
        c.rjust(w) if i in right else c.ljust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


def _render_table(report: Report) -> str:
    out = [_title(report), ""]
    for attr, title in SECTIONS:
        frame: pd.DataFrame = getattr(report, attr)
        out += [title, "-" * len(title)]
        if frame.empty:
            out += ["(none)", ""]
            continue
        header, body = _cells(frame)
        right = _numeric_columns(frame)
        # Error text is the cause people look for: it goes whole under the table, not cut.
        errors: list[str] = []
        if "error" in header:
            at = header.index("error")
            errors = [f"  {row[0]}: {row[at]}" for row in body if row[at]]
            header = header[:at] + header[at + 1 :]
            body = [row[:at] + row[at + 1 :] for row in body]
            right = {i - (i > at) for i in right}
        body = [
            [c if len(c) <= _TEXT_CELL_MAX else c[: _TEXT_CELL_MAX - 1] + "…" for c in row]
            for row in body
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        out += [_aligned(r, widths, right) for r in [header, *body]]
        if errors:
            out += ["errors:", *errors]
        out.append("")
    return "\n".join(out)


# Markdown syntax a value could carry into the page: links and images ([x](u), ![t](u)),
# emphasis, code, headings, tables. Each gets a backslash, so it shows as typed.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#!|~])")


def md_escape(text: str) -> str:
    """A value as literal Markdown text: HTML entities for <, >, &; a backslash before syntax."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def _render_markdown(report: Report) -> str:
    out = [f"# {md_escape(_title(report))}", ""]
    for attr, title in SECTIONS:
        frame: pd.DataFrame = getattr(report, attr)
        out += [f"## {title}", ""]
        if frame.empty:
            out += ["(none)", ""]
            continue
        header, body = _cells(frame)
        right = _numeric_columns(frame)
        out.append("| " + " | ".join(md_escape(h) for h in header) + " |")
        out.append(
            "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"
        )
        # Numbers are left as they are: nothing in 0.50 or 12 is Markdown syntax.
        out += [
            "| " + " | ".join(c if i in right else md_escape(c) for i, c in enumerate(row)) + " |"
            for row in body
        ]
        out.append("")
    return "\n".join(out)


def tidy_frame(report: Report) -> pd.DataFrame:
    """The run as one tidy table: a row per combination, a column per parameter."""
    import pandas as pd

    combos = report.combinations
    fixed = ["combo_id", "state", "status", "job_group_id", "session_id", "job_ids"]
    fixed += ["duration_s", "error"]
    names = list(report.param_names)
    for params in combos["params"]:
        if isinstance(params, dict):
            names += [n for n in params if n not in names]
    # A parameter named like a fixed column keeps its ledger name instead.
    columns = {n: (PARAM_PREFIX + n if n in fixed else n) for n in names}
    data: dict[str, Any] = {"combo_id": combos["combo_id"]}
    for name, column in columns.items():
        data[column] = [p.get(name, "") if isinstance(p, dict) else "" for p in combos["params"]]
    for column in fixed[1:]:
        data[column] = combos[column]
    result: pd.DataFrame = pd.DataFrame(data)
    return result


def _csv_table(report: Report, table: str) -> pd.DataFrame:
    if table == "combinations":
        return tidy_frame(report)
    attrs = {"failures": "failures", "by-parameter": "by_param", "diff": "diff"}
    attrs |= {"summary": "summary", "runs": "runs"}
    if table not in attrs:
        raise ValueError(f"unknown table {table!r}; use one of {', '.join(CSV_TABLES)}")
    frame: pd.DataFrame = getattr(report, attrs[table])
    return frame


def render_csv(report: Report, table: str = "combinations") -> str:
    """One table as CSV for people: formula-like cells neutralised, states by their labels.

    ``combinations`` (the default) is tidy: one row per combination, parameters as columns.
    """
    header, body = _cells(_csv_table(report, table))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([neutralize(h) for h in header])
    writer.writerows([neutralize(c) for c in row] for row in body)
    return buf.getvalue()


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    columns = [str(c) for c in frame.columns]
    return [
        {
            c: (dict(v) if isinstance(v, dict) else _plain(v))
            for c, v in zip(columns, row, strict=True)
        }
        for row in frame.itertuples(index=False, name=None)
    ]


def report_dict(report: Report) -> dict[str, object]:
    """The report as JSON-ready data with stable keys (values are raw, not neutralised)."""
    summary = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    durations = _records(report.durations)[0] if len(report.durations) else {}
    combinations = _records(report.combinations)
    for item in combinations:
        item["job_url"] = report.job_url(item["job_group_id"])
    return {
        "schema": REPORT_SCHEMA,
        "sweep": report.sweep,
        "run_id": report.run_id,
        "previous_run_id": report.previous_run_id,
        "started_at": report.started_at,
        "ended_at": report.ended_at,
        "summary": {str(k): int(v) for k, v in summary.items()},
        "durations": durations,
        "combinations": combinations,
        "failures": _records(report.failures),
        "unfinished": _records(report.unfinished),
        "by_param": _records(report.by_param),
        "diff": _records(report.diff),
        "runs": _records(report.runs),
    }


def render(report: Report, fmt: Format = "table") -> str:
    """The report as aligned text, Markdown, CSV (the tidy table, formula-safe) or JSON."""
    if fmt == "table":
        return _render_table(report)
    if fmt == "markdown":
        return _render_markdown(report)
    if fmt == "csv":
        return render_csv(report)
    if fmt == "json":
        return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown report format {fmt!r}; use table, markdown, csv or json")


# The colour of each state in the HTML report's grids and charts.
STATE_COLORS = {
    State.SUCCEEDED: "#2e7d32",
    State.FAILED: "#c62828",
    State.REJECTED: "#6a1b9a",
    State.CANCELED: "#795548",
    State.TIMED_OUT: "#ef6c00",
    State.RUNNING: "#1565c0",
    State.IN_DOUBT: "#f9a825",
    State.NOT_SENT: "#9e9e9e",
}


def write_html(
    report: Report,
    path: str | os.PathLike[str],
    rows_or_frame: Sequence[LedgerRow] | pd.DataFrame | None = None,
) -> Path:
    """Write the HTML report atomically; OutputError (exit 1) if it cannot be, and no file.

    `rows_or_frame`, if given, supplies the runs for the chart (default: the report's runs).
    """
    from sweeper.report_html import render_html

    runs = None if rows_or_frame is None else _runs_overview(to_frame(rows_or_frame))
    return write_atomic(path, render_html(report, runs))


def write_csv(report: Report, path: str | os.PathLike[str], table: str = "combinations") -> Path:
    """Write one CSV table for people atomically (see render_csv)."""
    return write_atomic(path, render_csv(report, table))
