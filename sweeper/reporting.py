"""Summaries of a ledger: state counts, durations, failures, pivots by parameter, run diffs.

Built on pandas, imported lazily so that `import sweeper.reporting` stays cheap for the CLI.
`build_report` computes DataFrames; `render` turns them into text, Markdown, CSV or JSON;
`write_html` writes one self-contained HTML page with an inline SVG chart.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sweeper.ledger import PARAM_PREFIX, LedgerRow, fsync_directory, one_line
from sweeper.state import State

if TYPE_CHECKING:
    import pandas as pd

Format = Literal["table", "markdown", "csv", "json"]
REPORT_SCHEMA = "sweeper-report/1"

# The states a combination with ledger rows can be in (PENDING means it has none), as the
# values that report frames and JSON hold; the text formats show their labels.
_STATES: tuple[str, ...] = tuple(s.value for s in State if s is not State.PENDING)
FAILING = tuple(s.value for s in State if s.is_failure)  # terminal and not succeeded
UNFINISHED = tuple(s for s in _STATES if not State(s).is_terminal)
_STATE_COLUMNS = ("state", "previous_state")  # report columns that hold a state
_TEXT_CELL_MAX = 80  # table format: long error text is cut so columns stay readable
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

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
    return result


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
        records.append((combo, _params_text(params), change, prev, state))
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
    rows_or_frame: Iterable[LedgerRow] | pd.DataFrame, *, run_id: str | None = None
) -> Report:
    """Summarise one run (default: the latest) of a ledger and compare it with the run before."""
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
    counts = _state_counts(current)
    summary = pd.DataFrame(
        {
            "state": [*_STATES, "total"],
            "combinations": [*counts.values(), len(current)],
        }
    )
    durations = pd.DataFrame([_durations(_finished_durations(frame, selected))])
    params = current["params"].map(_params_text)

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
    )


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
    """A human-readable one-line cell."""
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
        body = [
            [c if len(c) <= _TEXT_CELL_MAX else c[: _TEXT_CELL_MAX - 1] + "…" for c in row]
            for row in body
        ]
        right = _numeric_columns(frame)
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        out += [_aligned(r, widths, right) for r in [header, *body]]
        out.append("")
    return "\n".join(out)


def _md_escape(text: str) -> str:
    # Cells hold server error text: keep it from breaking the table or injecting HTML.
    return html.escape(text, quote=False).replace("|", "\\|")


def _render_markdown(report: Report) -> str:
    out = [f"# {_md_escape(_title(report))}", ""]
    for attr, title in SECTIONS:
        frame: pd.DataFrame = getattr(report, attr)
        out += [f"## {title}", ""]
        if frame.empty:
            out += ["(none)", ""]
            continue
        header, body = _cells(frame)
        right = _numeric_columns(frame)
        out.append("| " + " | ".join(_md_escape(h) for h in header) + " |")
        out.append(
            "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"
        )
        out += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
        out.append("")
    return "\n".join(out)


def neutralize(cell: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with `'` (OWASP ASVS 1.2.10)."""
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def _render_csv(report: Report) -> str:
    """All tables in one CSV for people: each under a one-cell title row, then a blank row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([neutralize(_title(report))])
    writer.writerow([])
    for attr, title in SECTIONS:
        frame: pd.DataFrame = getattr(report, attr)
        header, body = _cells(frame)
        writer.writerow([title])
        writer.writerow([neutralize(h) for h in header])
        writer.writerows([neutralize(c) for c in row] for row in body)
        writer.writerow([])
    return buf.getvalue()


def _records(frame: pd.DataFrame) -> list[dict[str, object]]:
    columns = [str(c) for c in frame.columns]
    return [
        {c: _plain(v) for c, v in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def report_dict(report: Report) -> dict[str, object]:
    """The report as JSON-ready data with stable keys (values are raw, not neutralised)."""
    summary = dict(zip(report.summary["state"], report.summary["combinations"], strict=True))
    durations = _records(report.durations)[0] if len(report.durations) else {}
    return {
        "schema": REPORT_SCHEMA,
        "run_id": report.run_id,
        "previous_run_id": report.previous_run_id,
        "summary": {str(k): int(v) for k, v in summary.items()},
        "durations": durations,
        "failures": _records(report.failures),
        "unfinished": _records(report.unfinished),
        "by_param": _records(report.by_param),
        "diff": _records(report.diff),
        "runs": _records(report.runs),
    }


def render(report: Report, fmt: Format = "table") -> str:
    """The report as aligned text, Markdown, CSV (formula-safe, for people) or JSON."""
    if fmt == "table":
        return _render_table(report)
    if fmt == "markdown":
        return _render_markdown(report)
    if fmt == "csv":
        return _render_csv(report)
    if fmt == "json":
        return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"
    raise ValueError(f"unknown report format {fmt!r}; use table, markdown, csv or json")


# --- HTML -------------------------------------------------------------------------------------

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

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
td.n{text-align:right;font-variant-numeric:tabular-nums}
th{background:#f3f3f3} .none{color:#777} svg text{font-size:11px}
"""


def _html_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return '<p class="none">(none)</p>'
    header, body = _cells(frame)
    right = _numeric_columns(frame)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{html.escape(c)}</td>' if i in right else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in body
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _svg_runs(runs: pd.DataFrame) -> str:
    """Stacked bars of combinations by state per run, and bars of the p50 duration per run."""
    if runs.empty:
        return ""
    bar, gap, height, left, top = 28, 14, 160, 40, 10
    n = len(runs)
    width = max(left + n * (bar + gap), left + 140) + 150
    most = max(int(runs["combinations"].max()), 1)
    p50 = [0.0 if _is_missing(v) else float(v) for v in runs["p50_s"]]
    slowest = max(max(p50), 1e-9)
    parts = [
        f'<svg width="{width}" height="{2 * height + 80}" '
        f'role="img" aria-label="States and median durations per run">',
        f'<text x="{left}" y="{top + 2}">combinations by state</text>',
    ]
    base = top + height
    for i, record in enumerate(runs.to_dict("records")):
        x = left + i * (bar + gap)
        y = float(base)
        for state in _STATES:
            count = int(record[state])
            if not count:
                continue
            h = (height - 20) * count / most
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y:.1f}" width="{bar}" height="{h:.1f}" '
                f'fill="{STATE_COLORS[State(state)]}"><title>'
                f"{html.escape(str(record['run_id']))}: {count} {State(state).label}</title></rect>"
            )
        label = html.escape(str(record["run_id"])[-10:])
        parts.append(f'<text x="{x}" y="{base + 12}">{label}</text>')
        h2 = (height - 30) * p50[i] / slowest
        y2 = 2 * height + 50 - h2
        parts.append(
            f'<rect x="{x}" y="{y2:.1f}" width="{bar}" height="{h2:.1f}" fill="#546e7a">'
            f"<title>{label}: p50 {p50[i]:.2f} s</title></rect>"
            f'<text x="{x}" y="{2 * height + 62}">{label}</text>'
        )
    parts.append(
        f'<text x="{left}" y="{height + 40}">median duration (s), max {slowest:.2f}</text>'
    )
    legend_x = max(left + n * (bar + gap), left + 140) + 10  # clear of the chart's title
    for j, state in enumerate(STATE_COLORS):
        parts.append(
            f'<rect x="{legend_x}" y="{top + 14 * j}" width="10" height="10" '
            f'fill="{STATE_COLORS[state]}"/><text x="{legend_x + 14}" y="{top + 14 * j + 9}">'
            f"{state.label}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(report: Report, runs: pd.DataFrame | None = None) -> str:
    """One self-contained HTML page: every table and an inline SVG chart; all text escaped."""
    title = html.escape(_title(report))
    sections = "".join(
        f"<h2>{html.escape(t)}</h2>{_html_table(getattr(report, a))}" for a, t in SECTIONS
    )
    chart = _svg_runs(report.runs if runs is None else runs)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1>{chart}{sections}</body></html>\n"
    )


def write_html(
    report: Report,
    path: str | os.PathLike[str],
    rows_or_frame: Sequence[LedgerRow] | pd.DataFrame | None = None,
) -> Path:
    """Write the HTML report atomically (tmp, fsync, rename, fsync dir); returns the path.

    `rows_or_frame`, if given, supplies the runs for the chart (default: the report's runs).
    """
    path = Path(path)
    runs = None if rows_or_frame is None else _runs_overview(to_frame(rows_or_frame))
    data = render_html(report, runs).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path
