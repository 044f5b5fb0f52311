"""The HTML report: a Jinja2 template (autoescaped) and matplotlib charts inlined as SVG.

The page is self-contained: no script, stylesheet, font or image is fetched, and every value
from the ledger (parameters, errors, run ids) is escaped, in the HTML and in the SVG text.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sweeper.reporting import (
    FAILING,
    STATE_COLORS,
    Report,
    _cell,
    _is_missing,
    _label,
    _params_text,
    _title,
)
from sweeper.state import State

if TYPE_CHECKING:
    import pandas as pd

CHART_RUNS = 14  # runs in the "states per run" chart, the selected one last
HEADLINE_VALUES = 5  # failing parameter values named in the headline
GRID_MAX_VALUES = 60  # values per grid axis before the rest are left out (said on the page)
DURATION_MAX_VALUES = 40  # values per parameter in the durations chart


@dataclass(frozen=True)
class Dot:
    """One combination in a grid cell."""

    state: str  # the CSS class of its state: in-doubt
    title: str  # shown on hover: parameters, state, job group
    url: str | None


@dataclass(frozen=True)
class Grid:
    """Parameter x parameter: the first two parameters as rows and columns, the rest folded."""

    run_id: str
    row_name: str
    col_name: str
    rows: list[tuple[str, list[list[Dot]]]]
    columns: list[str]
    left_out: int  # combinations beyond GRID_MAX_VALUES rows or columns


def _when(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None


def _took(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def _failing_values(report: Report) -> list[dict[str, Any]]:
    """Parameter values where half or more of the combinations failed, worst first; else the
    single worst value, so the headline always names where to look when anything failed."""
    pivot = report.by_param
    bad = pivot[pivot["failed"] > 0]
    if bad.empty:
        return []
    rate = bad["failed"] / bad["combinations"]
    ranked = bad.assign(rate=rate).sort_values(["rate", "failed"], ascending=False, kind="stable")
    chosen = ranked[ranked["rate"] >= 0.5]
    if chosen.empty:
        chosen = ranked.head(1)
    out = []
    combos = report.combinations
    for item in chosen.head(HEADLINE_VALUES).itertuples():
        hit = combos[
            combos["params"].map(
                lambda p, k=item.parameter, v=item.value: isinstance(p, dict) and str(p.get(k)) == v
            )
            & combos["state"].isin(FAILING)
        ]
        errors = [e for e in hit["error"] if e]
        common = max(set(errors), key=errors.count) if errors else ""
        out.append(
            {
                "parameter": item.parameter,
                "value": item.value,
                "failed": int(item.failed),
                "combinations": int(item.combinations),
                "error": common,
            }
        )
    return out


def _css(state: str) -> str:
    """A state's CSS class name (`in-doubt`): pages show labels, never JSON values."""
    return state.replace("_", "-")


def _sort_key(value: str) -> tuple[int, float, str]:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _grid(report: Report, run_id: str, combos: pd.DataFrame) -> Grid:
    names = list(report.param_names)
    row_name = names[0] if names else ""
    col_name = names[1] if len(names) > 1 else ""

    def value(params: Any, name: str) -> str:
        return str(params.get(name, "")) if name and isinstance(params, dict) else ""

    cells: dict[tuple[str, str], list[tuple[str, Dot]]] = {}
    for params, state, group in zip(
        combos["params"], combos["state"], combos["job_group_id"], strict=True
    ):
        key = (value(params, row_name), value(params, col_name))
        title = f"{_params_text(params)}: {State(state).label}"
        if not _is_missing(group):
            title += f", job group {int(group)}"
        rest = _params_text({k: v for k, v in params.items() if k not in (row_name, col_name)})
        dot = Dot(_css(state), title, report.job_url(group))
        cells.setdefault(key, []).append((rest, dot))
    row_values = sorted({k[0] for k in cells}, key=_sort_key)
    col_values = sorted({k[1] for k in cells}, key=_sort_key)
    shown_rows, shown_cols = row_values[:GRID_MAX_VALUES], col_values[:GRID_MAX_VALUES]
    rows = [
        (r, [[d for _, d in sorted(cells.get((r, c), []), key=lambda x: x[0])] for c in shown_cols])
        for r in shown_rows
    ]
    shown = sum(len(cells.get((r, c), [])) for r in shown_rows for c in shown_cols)
    return Grid(run_id, row_name, col_name, rows, shown_cols, len(combos) - shown)


# --- charts -----------------------------------------------------------------------------------

_SVG_PROLOGUE = re.compile(r"\A.*?(?=<svg)", re.S)
_SVG_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)


def _svg(figure: Any) -> str:
    """A matplotlib figure as inline SVG: text kept as (escaped) text; no XML prologue and no
    RDF metadata block, which only names vocabularies by URL."""
    buf = io.StringIO()
    figure.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = _SVG_PROLOGUE.sub("", buf.getvalue(), count=1)
    return _SVG_METADATA.sub("", svg, count=1)


def _rc() -> Any:
    import matplotlib

    return matplotlib.rc_context(
        {
            "svg.fonttype": "none",  # real <text>: selectable, searchable, small
            "svg.hashsalt": "sweeper",  # stable element ids
            "text.parse_math": False,  # a `$` in a value is text, not mathtext
            "font.size": 9,
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )


def chart_states_per_run(runs: pd.DataFrame, selected: str | None) -> str:
    """Stacked bars: combinations by state in each of the last runs, with counts on the bars."""
    from matplotlib.figure import Figure

    if runs.empty:
        return ""
    order = [str(r) for r in runs["run_id"]]
    end = order.index(selected) + 1 if selected in order else len(order)
    part = runs.iloc[max(0, end - CHART_RUNS) : end]
    labels = [str(r) for r in part["run_id"]]
    with _rc():
        fig = Figure(figsize=(max(4.0, 0.75 * len(labels) + 2.5), 3.2))
        ax = fig.add_subplot()
        bottom = [0.0] * len(labels)
        for state, color in STATE_COLORS.items():
            counts = [float(v) for v in part[state.value]]
            if not any(counts):
                continue
            bars = ax.bar(labels, counts, bottom=bottom, color=color, label=state.label)
            ax.bar_label(
                bars,
                labels=[str(int(c)) if c else "" for c in counts],
                label_type="center",
                color="white",
                fontsize=8,
            )
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        ax.set_xlabel("run")
        ax.set_ylabel("combinations")
        ax.set_title("Combinations by state, per run")
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        return _svg(fig)


def chart_durations(report: Report) -> str:
    """Box plots of finished durations per parameter value, one panel per parameter."""
    from matplotlib.figure import Figure

    combos = report.combinations
    done = combos[combos["duration_s"].notna()]
    if done.empty or not report.param_names:
        return ""
    panels = []
    for name in report.param_names[:3]:
        groups: dict[str, list[float]] = {}
        for params, seconds in zip(done["params"], done["duration_s"], strict=True):
            if isinstance(params, dict) and name in params:
                groups.setdefault(str(params[name]), []).append(float(seconds))
        values = sorted(groups, key=_sort_key)[:DURATION_MAX_VALUES]
        if values:
            panels.append((name, values, [groups[v] for v in values]))
    if not panels:
        return ""
    tallest = max(len(p[1]) for p in panels)
    with _rc():
        fig = Figure(figsize=(3.4 * len(panels) + 0.6, max(2.4, 0.22 * tallest + 1.2)))
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (name, values, data) in zip(axes, panels, strict=True):
            ax.boxplot(data, orientation="horizontal", widths=0.6, showfliers=True)
            ax.set_yticks(range(1, len(values) + 1), values)
            ax.invert_yaxis()  # first value on top, as in the tables
            ax.set_xlabel("seconds")
            ax.set_ylabel(name)
            ax.set_title(f"Duration by {name}")
            longest = max(max(d) for d in data)
            ax.set_xlim(0, longest * 1.1 if longest > 0 else 1)  # room for the longest box
        fig.tight_layout()
        return _svg(fig)


# --- the page ---------------------------------------------------------------------------------


def _without_empty_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The table without columns that hold nothing, so the error text gets the room."""
    empty = [c for c in frame.columns if frame[c].map(_is_missing).all() or (frame[c] == "").all()]
    kept: pd.DataFrame = frame.drop(columns=empty)
    return kept


def _table(frame: pd.DataFrame, report: Report) -> dict[str, Any]:
    """Header and cells for the template's table macro; job group ids carry their link."""
    import pandas as pd

    header = [str(_label(c)) for c in frame.columns]
    numeric = {
        i
        for i, c in enumerate(frame.columns)
        if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
    }
    states = {i for i, c in enumerate(frame.columns) if c in ("state", "previous_state")}
    rows = []
    for record in frame.itertuples(index=False, name=None):
        cells = []
        for i, (column, value) in enumerate(zip(frame.columns, record, strict=True)):
            text = _cell(_label(value) if i in states else value)
            if column == "success_rate" and not _is_missing(value):
                text = f"{float(value):.0%}"
            url = report.job_url(value) if column == "job_group_id" else None
            cells.append({"text": text, "url": url, "wide": column == "error"})
        rows.append(cells)
    return {"header": header, "numeric": numeric, "rows": rows}


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("sweeper", "templates"),
        autoescape=True,  # every value is escaped unless a chart marks itself safe
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: Report, runs: pd.DataFrame | None = None) -> str:
    """The report as one self-contained HTML page."""
    import markupsafe

    started, ended = _when(report.started_at), _when(report.ended_at)
    took = _took((ended - started).total_seconds()) if started and ended else None
    state_styles = {_css(s.value): c for s, c in STATE_COLORS.items()}
    runs_frame = report.runs if runs is None else runs
    nights = [_grid(report, rid, frame) for rid, frame in report.recent]
    page = (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=_title(report),
            report=report,
            started=started.strftime("%Y-%m-%d %H:%M UTC") if started else None,
            took=took,
            failing=_failing_values(report),
            grid=nights[-1] if nights else None,
            nights=nights[:-1],
            states=[(_css(s.value), s.label, c) for s, c in STATE_COLORS.items()],
            state_styles=state_styles,
            chart_runs=markupsafe.Markup(chart_states_per_run(runs_frame, report.run_id)),
            chart_durations=markupsafe.Markup(chart_durations(report)),
            failures=_table(_without_empty_columns(report.failures), report),
            by_param=_table(report.by_param, report),
            diff=_table(report.diff, report),
            unfinished=_table(report.unfinished, report),
            durations=_table(report.durations, report),
            all_runs=_table(report.runs, report),
        )
    )
    return str(page).lstrip()
