"""How plans, progress and summaries look on a terminal, in JSON and in CSV."""

from __future__ import annotations

import collections
import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sweeper.export import AtomicFile, neutralize
from sweeper.identity import canonical_json
from sweeper.links import job_url
from sweeper.planner import PlanCounts, PlannedCombination, Planner, describe, plan_message
from sweeper.state import State
from sweeper.terminal import printable_lines

if TYPE_CHECKING:  # `sweeper plan` renders without loading the HTTP stack
    from sweeper.journal import RunSummary
    from sweeper.refreshing import StatusResult

PLAN_SCHEMA = "sweeper.plan/1"
STATUS_SCHEMA = "sweeper.status/1"
SHOWN_AT_EACH_END = 3  # first and last combinations shown by `sweeper plan`
REASONS_SHOWN = 20  # skip/resend/wait lines shown before "... and N more"


class PlanDigest:
    """What `sweeper plan` shows, gathered while the planner checks the plan (one pass).

    Counts per axis, the first and last combinations, and the combinations that are not plain
    submissions (skipped, resent, waited on, rerun) with their reasons.
    """

    def __init__(self, *, keep_all: bool = False) -> None:
        self.keep_all = keep_all
        self._pairs: dict[tuple[str, str], int] = {}
        self.first: list[PlannedCombination] = []
        self.last: collections.deque[PlannedCombination] = collections.deque(
            maxlen=SHOWN_AT_EACH_END
        )
        self.notable: list[PlannedCombination] = []
        self.notable_count = 0
        self.items: list[PlannedCombination] = []

    @property
    def axes(self) -> dict[str, dict[str, int]]:
        """Per parameter, how many combinations send each value."""
        out: dict[str, dict[str, int]] = {}
        for (key, value), n in self._pairs.items():
            out.setdefault(key, {})[value] = n
        return out

    def add(self, item: PlannedCombination) -> None:
        pairs = self._pairs
        for pair in item.combo.params.items():  # Counter.update costs ~3x this per combination
            pairs[pair] = pairs.get(pair, 0) + 1
        if self.keep_all:
            self.items.append(item)
        if len(self.first) < SHOWN_AT_EACH_END:
            self.first.append(item)
        else:
            self.last.append(item)
        if item.action.value != "submit" or item.generation:
            self.notable_count += 1
            if len(self.notable) < REASONS_SHOWN:
                self.notable.append(item)


def _line(item: PlannedCombination) -> str:
    return (
        f"  {item.action.value:<6} {item.combo.combo_id}  {describe(item.combo)}  — {item.reason}"
    )


def plan_text(planner: Planner, counts: PlanCounts, digest: PlanDigest) -> str:
    out = [plan_message(counts, planner.config.sweep.name, planner.run_id)]
    out.extend(f"note: {notice}" for notice in counts.notices)
    out.append(f"as of {planner.as_of.isoformat()}; ledger {planner.config.sweep.ledger}")
    axes = digest.axes
    if axes:
        out.append("values per parameter:")
        for key, values in axes.items():
            shown = ", ".join(f"{v} ({n})" for v, n in list(values.items())[:8])
            more = f", ... {len(values) - 8} more" if len(values) > 8 else ""
            out.append(f"  {key}: {len(values)} values: {shown}{more}")
    if digest.keep_all:
        out.append("combinations:")
        out.extend(_line(i) for i in digest.items)
    elif digest.first:
        out.append("first combinations:")
        out.extend(_line(i) for i in digest.first)
        if digest.last:
            out.append("last combinations:")
            out.extend(_line(i) for i in digest.last)
        out.append("first request body:")
        out.append("  " + canonical_json(digest.first[0].body))
    if digest.notable and not digest.keep_all:
        out.append("skipped, resent, waited on or rerun, and why:")
        out.extend(_line(i) for i in digest.notable)
        if digest.notable_count > len(digest.notable):
            out.append(
                f"  ... and {digest.notable_count - len(digest.notable)} more (--all lists them)"
            )
    out.append("no output paths collide; nothing was submitted.")
    return printable_lines("\n".join(out))


def _item_json(item: PlannedCombination) -> dict[str, Any]:
    return {
        "combo_id": item.combo.combo_id,
        "params": dict(item.combo.params),
        "action": item.action.value,
        "reason": item.reason,
        "generation": item.generation,
        "execution_id": item.execution_id,
        "body": item.body,
    }


def plan_json(planner: Planner, counts: PlanCounts, digest: PlanDigest) -> dict[str, Any]:
    """The plan for scripts; every combination with its body when the digest kept them all."""
    return {
        "schema": PLAN_SCHEMA,
        "sweep": planner.config.sweep.name,
        "run_id": planner.run_id,
        "as_of": planner.as_of.isoformat(),
        "total": counts.total,
        "actions": counts.by_action,
        "axes": digest.axes,
        "combinations": [_item_json(i) for i in digest.items],
    }


class PlanCsv:
    """The whole plan, one row per combination, streamed to a CSV file as it is checked.

    Each row has the decision and its reason, the identities, the parameter values and the
    output paths; the full request bodies are in ``sweeper plan --json``. The file is for
    people: cells a spreadsheet would run as formulas are neutralised, and it appears only
    whole (``commit``), never half-written.
    """

    def __init__(self, path: Path, param_names: Iterable[str]) -> None:
        self.names = list(param_names)
        self._file = AtomicFile(path)
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")
        # csv.writer does not quote a lone "\r" when the line ends in "\n", and readers split
        # on it; rows holding one have every field quoted instead.
        self._quote_all = csv.writer(self._buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
        self._writer.writerow(
            [
                "combo_id",
                "action",
                "reason",
                "generation",
                "execution_id",
                *[neutralize(n) for n in self.names],
                "output_paths",
            ]
        )

    def add(self, item: PlannedCombination) -> None:
        params = item.combo.params
        row = [
            item.combo.combo_id,
            item.action.value,
            neutralize(item.reason),
            str(item.generation),
            item.execution_id,
            *[neutralize(params.get(n, "")) for n in self.names],
            neutralize(" ".join(item.output_paths)),
        ]
        line = ",".join(row)
        # csv.writer leaves a field as it is unless it holds a comma, a quote or a line break.
        # A row with none is joined here, several times cheaper than writerow (which examines
        # every character); a comma inside a field shows as one comma too many. The other
        # characters are found with `in`, which costs far less per row than a regex search.
        if line.count(",") == len(row) - 1 and not ('"' in line or "\n" in line or "\r" in line):
            self._buf.write(line + "\n")
        elif "\r" in line:
            self._quote_all.writerow(row)
        else:
            self._writer.writerow(row)
        if self._buf.tell() > 1 << 16:  # bounded memory for large plans
            self._flush()

    def _flush(self) -> None:
        self._file.write(self._buf.getvalue())
        self._buf.seek(0)
        self._buf.truncate()

    def close(self) -> None:
        """Write the rest and move the file into place."""
        self._flush()
        self._file.commit()

    def discard(self) -> None:
        """Leave no file behind (the plan failed part-way)."""
        self._file.discard()


def run_json(summary: RunSummary) -> dict[str, Any]:
    """The run summary for scripts (``sweeper.run/1``)."""
    return summary.as_dict()


def summary_text(s: RunSummary) -> str:
    head = f"{s.sweep} run {s.run_id}: "
    parts = [f"{s.succeeded} succeeded", f"{s.failed} failed"]
    for label, n in (
        ("in doubt", s.in_doubt),
        ("running", s.running),
        ("not sent", s.not_sent),
        ("not started", s.pending),
    ):
        if n:
            parts.append(f"{n} {label}")
    lines = [head + ", ".join(parts) + f" (of {s.planned})."]
    lines.append(
        f"POSTs: {s.posts} ({s.submitted} created, {s.duplicates} already existed, "
        f"{s.rate_limited} rate-limited); skipped: {s.skipped}; ledger: {s.ledger}"
    )
    if s.posts == 0 and s.planned and not s.aborted:
        lines.append("Nothing new was submitted.")
    for combo, error, *_ in s.failures[:10]:
        lines.append(f"  failed: {combo}: {error}")
    if s.aborted:
        lines.append(f"Stopped: {s.aborted}")
    if s.interrupted or s.aborted:
        lines.append("The ledger is consistent: run the same command again to resume.")
    if s.timed_out or (s.running and not s.wait):
        lines.append(
            f"Some job groups are still running: `sweeper status {s.ledger}` follows them."
        )
    return printable_lines("\n".join(lines))


def table(rows: Iterable[Iterable[Any]], headers: Iterable[str]) -> str:
    """A plain aligned text table."""
    head = [str(h) for h in headers]
    body = [[str(c) for c in r] for r in rows]
    widths = (
        [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        if body
        else [len(h) for h in head]
    )
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join(
        [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body]
    )


def _status_rows(result: StatusResult) -> list[dict[str, Any]]:
    """The current row of each combination, with its state as a State value (`in_doubt`)."""
    from sweeper.ledger import state_of

    return [
        {
            "combo_id": r.combo_id,
            "params": dict(r.params),
            "state": state_of(r).value,
            "event": r.event.value,
            "status": r.status,
            "job_group_id": r.job_group_id,
            "job_url": job_url(result.base_url, r.job_group_id),
            "error": r.error,
            "ts": r.ts,
        }
        for r in result.rows
    ]


def status_json(result: StatusResult) -> dict[str, Any]:
    """Where each combination stands, for scripts (``sweeper.status/1``)."""
    return {
        "schema": STATUS_SCHEMA,
        "run_id": result.run_id,
        "counts": result.counts(),
        "refreshed": result.refreshed,
        "finished_now": result.finished,
        "errors": result.errors,
        "held_by": result.held_by,
        "timed_out": result.timed_out,
        "interrupted": result.interrupted,
        "combinations": _status_rows(result),
    }


def status_text(result: StatusResult) -> str:
    rows = _status_rows(result)
    body = table(
        (
            [
                State(r["state"]).label,
                r["status"] or r["event"],
                r["job_group_id"] or "",
                " ".join(f"{k}={v}" for k, v in r["params"].items()),
            ]
            for r in rows
        ),
        ["state", "status", "job group", "combination"],
    )
    counts = ", ".join(f"{n} {State(k).label}" for k, n in result.counts().items())
    head = f"run {result.run_id}: {counts or 'no combinations'}"
    if result.refreshed:
        head += f" (asked about {result.refreshed} job groups, {result.finished} ended since)"
    lines = [head, body] if rows else [head]
    # Errors whole, under the table: the cause is often at the end of a long message.
    errors = [r for r in rows if r["error"]]
    if errors:
        lines.append("errors:")
        lines.extend(
            f"  {' '.join(f'{k}={v}' for k, v in r['params'].items())}: {r['error']}"
            for r in errors
        )
    lines.extend(f"warning: {e}" for e in result.errors[:10])
    lines.extend(
        f"note: {held}; a sweep is running it, so it is shown as recorded and that run "
        "refreshes its own job groups."
        for held in result.held_by
    )
    if result.timed_out:
        lines.append("Stopped watching at run.timeout; some job groups are still running.")
    if result.interrupted:
        lines.append("Interrupted. The ledger is consistent: run the same command again to resume.")
    return printable_lines("\n".join(lines))
