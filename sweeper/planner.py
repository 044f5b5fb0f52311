"""Planning: which combinations to submit, resend, wait on or skip in a run, and why.

Planning is pure: it reads the config and the ledger's history and touches no network, so
``sweeper plan`` shows exactly what ``sweeper run`` will do.
"""

from __future__ import annotations

import difflib
import enum
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sweeper.config import SweepConfig
from sweeper.errors import ConfigError, MatrixError
from sweeper.identity import execution_id
from sweeper.ledger import Event, LedgerRow, current_state, found_on_server, state_of
from sweeper.matrix import (
    Combination,
    combinations_bound,
    did_you_mean,
    expand_matrix,
    parse_only,
    select,
)
from sweeper.shards import Shard
from sweeper.state import State
from sweeper.template import RequestTemplate

RERUN_POLICIES = ("incomplete", "failed", "all")


class Action(str, enum.Enum):
    SUBMIT = "submit"  # POST a new job group (first time in this run, or a new generation)
    RESEND = "resend"  # POST again with the SAME execution id (in doubt or never sent)
    WAIT = "wait"  # already submitted in this run: only poll it
    SKIP = "skip"  # nothing to do (succeeded, or failed and not asked to rerun)


class PlannedCombination(NamedTuple):
    """One combination's decision for a run, with its request body (immutable).

    A NamedTuple rather than a frozen dataclass: a plan builds one per combination, and a frozen
    dataclass's ``__init__`` (an ``object.__setattr__`` per field) costs about three times more.
    """

    combo: Combination
    action: Action
    reason: str
    generation: int
    execution_id: str
    body: Mapping[str, Any]
    output_paths: tuple[str, ...]  # the body's writesettings paths (collision checks, outputs)
    last: LedgerRow | None = None

    @property
    def job_group_id(self) -> int | None:
        return self.last.job_group_id if self.last is not None else None

    @property
    def flow_run_id(self) -> int | None:
        return self.last.flow_run_id if self.last is not None else None


@dataclass
class PlanCounts:
    total: int = 0
    by_action: dict[str, int] = field(default_factory=lambda: {a.value: 0 for a in Action})
    # (action, state of the last row in this run) -> combinations: one line per class on resume
    by_class: dict[tuple[str, str], int] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)  # things the user should know (plan, run)

    def add(self, item: PlannedCombination) -> None:
        self.total += 1
        self.by_action[item.action.value] += 1
        key = (item.action.value, state_of(item.last).value)
        self.by_class[key] = self.by_class.get(key, 0) + 1


def _decide(
    last: LedgerRow | None, rerun: str, sweep: str, run_id: str, combo_id: str
) -> tuple[Action, str, int, str]:
    """(action, reason, generation, execution id) for one combination, from its last ledger row."""
    if last is None:
        return Action.SUBMIT, "new in this run", 0, execution_id(sweep, run_id, combo_id)

    gen, xid = (
        last.generation,
        last.execution_id or execution_id(sweep, run_id, combo_id, last.generation),
    )
    group = f"job group {last.job_group_id}" if last.job_group_id is not None else "no job group id"
    if last.job_group_id is None and last.flow_run_id is not None:
        group = f"run {last.flow_run_id}"  # a plan run: its job groups are not recorded
    next_gen = gen + 1

    def rerun_as_new(reason: str) -> tuple[Action, str, int, str]:
        return Action.SUBMIT, reason, next_gen, execution_id(sweep, run_id, combo_id, next_gen)

    event = last.event
    if event in (Event.INTENT, Event.IN_DOUBT):
        return (
            Action.RESEND,
            f"in doubt after attempt {last.attempt}: resend with the same execution id",
            gen,
            xid,
        )
    if event is Event.NOT_SENT:
        return Action.RESEND, "never reached the server last time: send again", gen, xid
    if event is Event.CANCELED:
        return rerun_as_new(f"canceled by sweeper on interrupt ({group}): run it again")
    if event in (Event.DUPLICATE, Event.RECONCILED) and not found_on_server(last):
        if event is Event.RECONCILED:
            return Action.RESEND, "not found on the server after a crash: send again", gen, xid
        return Action.RESEND, "server has it (304) but lookup failed: ask again", gen, xid
    if event in (Event.SUBMITTED, Event.DUPLICATE, Event.RECONCILED, Event.TIMED_OUT):
        return Action.WAIT, f"submitted in this run ({group}), not finished yet", gen, xid
    if state_of(last) is State.SUCCEEDED:
        if rerun == "all":
            return rerun_as_new(f"succeeded ({group}); --rerun all")
        return Action.SKIP, f"succeeded in this run ({group})", gen, xid
    # Failed, Canceled on the server, rejected, or Complete with missing outputs.
    what = "rejected" if event is Event.REJECTED else f"ended {last.status or 'unsuccessfully'}"
    if last.outputs_ok == "no":
        what = "completed but its outputs are missing"
    if rerun in ("failed", "all"):
        return rerun_as_new(f"{what} ({group}); --rerun {rerun}")
    return (
        Action.SKIP,
        f"{what} in this run ({group}); use --rerun failed to run it again",
        gen,
        xid,
    )


class Planner:
    """Expands a config into planned combinations against a ledger history."""

    def __init__(
        self,
        config: SweepConfig,
        *,
        history: Sequence[LedgerRow],
        run_id: str,
        as_of: datetime,
        rerun: str = "incomplete",
        only: Sequence[str] = (),
        limit: int | None = None,
        requested_as_of: datetime | None = None,
        shard: Shard | None = None,
    ) -> None:
        if rerun not in RERUN_POLICIES:
            raise ConfigError(f"--rerun must be one of {', '.join(RERUN_POLICIES)}, not {rerun!r}.")
        self.config = config
        self.run_id = run_id
        self.as_of = as_of
        self.rerun = rerun
        self.only = parse_only(only, config.matrix)
        self.limit = limit
        self.requested_as_of = requested_as_of  # --as-of as given; None when not given
        self.shard = shard
        self.state = current_state(history, run_id=run_id)
        self.stored_as_of = latest_as_of(history, run_id)

    def _expand(self) -> Iterator[Combination]:
        return expand_matrix(
            self.config.matrix, dataset=self.config.sweep.dataset, as_of=self.as_of
        )

    def combinations(self) -> Iterator[Combination]:
        combos = self._expand()
        if self.shard is not None:
            holds = self.shard.holds
            combos = (c for c in combos if holds(c.combo_id))
        if not self.only and self.limit is None:
            return combos  # nothing to select: spare every combination a generator hop
        return select(combos, self.only, self.limit)

    def __iter__(self) -> Iterator[PlannedCombination]:
        return self._plan(self.combinations())

    def _plan(self, combos: Iterator[Combination]) -> Iterator[PlannedCombination]:
        cfg = self.config
        try:
            request = RequestTemplate(
                cfg.sweep.dataset,
                cfg.overrides,
                cfg.sweep.ranfrom,
                flow=cfg.sweep.is_flow,
                plan=cfg.sweep.is_plan,
                outputs=cfg.sweep.outputs,
            )
        except MatrixError as exc:
            if exc.path:
                raise
            raise self._in_sweep_file(exc) from None
        for combo in combos:
            try:
                body, paths = request.render(combo, self.run_id)
            except MatrixError as exc:
                if exc.path:
                    raise
                raise self._in_sweep_file(exc) from None
            last = self.state.get(combo.combo_id)
            action, reason, gen, xid = _decide(
                last, self.rerun, cfg.sweep.name, self.run_id, combo.combo_id
            )
            yield PlannedCombination(combo, action, reason, gen, xid, body, paths, last)

    def check(
        self,
        *,
        allow_large: bool = False,
        on_item: Callable[[PlannedCombination], None] | None = None,
    ) -> PlanCounts:
        """Refuse a plan that is too large or that has colliding combinations; count actions.

        A full pass over the plan before anything is submitted: a combination listed twice (which
        would send the same request twice) or two combinations writing the same output path are
        refused. ``on_item`` sees every planned combination of that pass, so callers that render
        the plan need no second pass.
        """
        self._check_include_keys()
        bound = combinations_bound(self.config.matrix, as_of=self.as_of)
        limit = self.config.sweep.max_combinations
        if bound > limit and not allow_large:
            raise MatrixError(
                f"the matrix expands to up to {bound:,} combinations (the product of its axes "
                f"plus its includes, before excludes), more than sweep.max_combinations = "
                f"{limit:,}. Raise sweep.max_combinations, narrow the matrix, or pass "
                "--allow-large.",
                path=str(self.config.path),
                key="sweep.max_combinations",
            )
        if self.only:
            self._check_only_values()
        counts = PlanCounts()
        stale: dict[str, int] = {}  # old config_hash -> combinations submitted with it
        owned = {os.path.normpath(p) for p in self.config.owned_paths}
        failed_before = 0
        seen_combo: set[str] = set()
        seen_path: dict[str, str] = {}
        shard, taken = self.shard, 0
        # A shard checks the whole sweep (as selected by --only), so that two shards can never
        # write one output path; it counts and shows only its own combinations.
        source = iter(self) if shard is None else self._plan(select(self._expand(), self.only))
        for item in source:
            # Every parameter is sent in runParameters, so two combinations send the same request
            # exactly when they have the same parameters, i.e. the same combo_id.
            cid = item.combo.combo_id
            if cid in seen_combo:
                raise MatrixError(
                    f"the combination {describe(item.combo)} appears twice in the matrix, so two "
                    "entries would send the same request. Make the values distinct: check a "
                    "format that drops detail (e.g. %Y for days), rows files and "
                    "[[matrix.include]] entries.",
                    path=str(self.config.path),
                    key="matrix",
                )
            seen_combo.add(cid)
            for path in item.output_paths:
                if owned:
                    self._check_not_owned(path, owned, item)
                other = seen_path.setdefault(path, cid)
                if other != cid:
                    raise MatrixError(
                        f"combinations {other} and {cid} ({describe(item.combo)}) both write "
                        f"{path!r}. Put every parameter that varies into the path, e.g. "
                        "{Region}, or use {combo_id}.",
                        path=str(self.config.path),
                        key="overrides.writeSettings.path",
                    )
            if shard is not None:
                if not shard.holds(cid) or (self.limit is not None and taken >= self.limit):
                    continue
                taken += 1
            counts.add(item)
            last = item.last
            if last is not None:
                if last.config_hash and last.config_hash != self.config.config_hash:
                    stale[last.config_hash] = stale.get(last.config_hash, 0) + 1
                if state_of(last).is_failure:
                    failed_before += 1
            if on_item is not None:
                on_item(item)
        counts.notices.extend(self._notices(stale, failed_before))
        return counts

    def _check_not_owned(self, path: str, owned: set[str], item: PlannedCombination) -> None:
        """Refuse an output that would land on the ledger, its lock or the emulator's state."""
        if "://" in path:
            return  # a bucket or remote URI: not a file on this machine
        local = os.path.expanduser(path)
        if not os.path.isabs(local):
            if not self.config.api.embedded:
                return  # relative to the platform's own storage, not to this machine
            local = os.path.join(self.config.root, local)
        target = os.path.normpath(local)
        hit = next((o for o in owned if target == o or target.startswith(o + os.sep)), None)
        if hit is not None:
            raise MatrixError(
                f"the combination {describe(item.combo)} would write its output to {target}, "
                f"which sweeper itself keeps ({hit}: the ledger, its lock file or the embedded "
                "emulator's state). Write outputs elsewhere, e.g. results/out/{run_id}/....",
                path=str(self.config.path),
                key="overrides.writeSettings.path",
            )

    def _notices(self, stale: Mapping[str, int], failed_before: int) -> list[str]:
        """What a user should hear before anything is sent: never decided silently."""
        out: list[str] = []
        given, stored = self.requested_as_of, self.stored_as_of
        if given is not None and stored is not None and given != stored:
            out.append(
                f"run {self.run_id} already has as-of {stored.isoformat()} in the ledger; using "
                f"it, not --as-of {given.isoformat()} (a run's dates must not drift; pass a new "
                "--run-id for another as-of)."
            )
        if self.rerun == "failed" and failed_before == 0:
            out.append(
                f"--rerun failed: nothing failed in run {self.run_id}, so there is nothing to "
                "rerun."
            )
        if stale:
            n = sum(stale.values())
            old = ", ".join(sorted(stale))
            out.append(
                f"the request template (sweep.dataset and [overrides]) changed since {n} "
                f"combination{'s' if n != 1 else ''} of run {self.run_id} were submitted: "
                f"config_hash {old} in the ledger, {self.config.config_hash} now. Those were "
                "submitted with the old template and are not sent again (--rerun all, or a new "
                "--run-id, sends them with the new one)."
            )
        return out

    def _check_only_values(self) -> None:
        """Refuse an --only value no combination has (a typo would select nothing, exit 0)."""
        seen: dict[str, set[str]] = {key: set() for key in self.only}
        combos = expand_matrix(
            self.config.matrix, dataset=self.config.sweep.dataset, as_of=self.as_of
        )
        for combo in combos:
            for key, values in seen.items():
                value = combo.params.get(key)
                if value is not None:
                    values.add(value)
        for key, wanted in self.only.items():
            valid = sorted(seen[key])
            for value in sorted(wanted):
                if value not in seen[key]:
                    shown = ", ".join(valid[:20]) + (", ..." if len(valid) > 20 else "")
                    raise ConfigError(
                        f"--only {key}={value}: no combination has {key} = {value!r}."
                        f"{did_you_mean(value, valid)} Values of {key}: {shown}.",
                        key="--only",
                    )

    def _in_sweep_file(self, exc: MatrixError) -> MatrixError:
        """A template error naming the sweep file, so the message says where to fix it."""
        return MatrixError(exc.message, path=str(self.config.path), key=exc.key)

    def _check_include_keys(self) -> None:
        """Refuse an include key that is not an axis but is spelled almost like one (a typo).

        GitHub's rules let an include add new keys, so a misspelt axis name would silently send
        an extra run parameter with every combination it matches.
        """
        spec = self.config.matrix
        axes = list(spec.axis_names)
        for index, entry in enumerate(spec.include):
            for key in entry.params:
                if key in axes:
                    continue
                close = difflib.get_close_matches(key, axes, n=1, cutoff=0.75)
                if close:
                    raise MatrixError(
                        f"The include adds the parameter {key!r}, which is not an axis but is "
                        f"spelled almost like the axis {close[0]!r}. Fix the spelling (or give "
                        "a deliberately new parameter a more distinct name).",
                        path=str(self.config.path),
                        key=f"matrix.include[{index}].{key}",
                    )


def describe(combo: Combination) -> str:
    """``Region=01 varReferenceType=PROD``: how a combination is shown to people."""
    return " ".join(f"{k}={v}" for k, v in combo.params.items()) or "(no parameters)"


def plan_message(counts: PlanCounts, sweep: str, run_id: str) -> str:
    a = counts.by_action
    if counts.total == 0:
        return f"{sweep}: the matrix is empty; nothing to do."
    todo = a["submit"] + a["resend"]
    head = f"{sweep} run {run_id}: {counts.total} combinations"
    parts = [
        f"{a['submit']} to submit",
        f"{a['resend']} to resend",
        f"{a['wait']} to wait on",
        f"{a['skip']} to skip",
    ]
    tail = "" if todo or a["wait"] else " — nothing new to submit"
    return f"{head}: " + ", ".join(parts) + tail


_VERBS = {
    "submit": "to submit",
    "resend": "to resend with the same execution id",
    "wait": "to wait on",
    "skip": "skipped",
}


def decision_lines(counts: PlanCounts) -> list[str]:
    """One line per decision class (``21 already succeeded, skipped``), largest first."""
    out = []
    for (action, state), n in sorted(counts.by_class.items(), key=lambda kv: -kv[1]):
        what = {
            State.PENDING.value: "new in this run",
            State.SUCCEEDED.value: "already succeeded",
        }.get(state, State(state).label)
        verb = _VERBS[action]
        if action == "submit" and state != State.PENDING.value:
            verb = "to run again (new generation)"
        hint = ""
        if action == "skip" and State(state).is_failure:
            hint = " (--rerun failed runs them again)"
        out.append(f"{n} {what}, {verb}{hint}")
    return out


def latest_as_of(history: Sequence[LedgerRow], run_id: str) -> datetime | None:
    """The as-of a run already resolved its relative dates against, so a resume does not drift."""
    for row in history:
        if row.run_id == run_id and row.as_of:
            try:
                return datetime.fromisoformat(row.as_of)
            except ValueError:
                return None
    return None
