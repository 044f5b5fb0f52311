"""What a run writes and tells: its ledger rows, its progress events, and its summary.

The submitter and the waiter share one ``Journal``: it builds each ledger row from the planned
combination, appends it (written and fsynced before the caller goes on), and emits a
``RunEvent`` for whoever shows progress.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from sweeper.config import Rate, SweepConfig
from sweeper.errors import ExitCode, exit_code_for
from sweeper.ledger import Event, Ledger, LedgerRow, utc_timestamp
from sweeper.planner import PlanCounts, PlannedCombination
from sweeper.state import State

RUN_SCHEMA = "sweeper.run/1"


class EventKind(str, enum.Enum):
    """What a progress event is about."""

    PLAN = "plan"
    SKIP = "skip"
    WAIT = "wait"
    SETTLE = "settle"
    SUBMIT = "submit"
    SUBMITTED = "submitted"
    DUPLICATE = "duplicate"
    RECONCILED = "reconciled"
    REJECTED = "rejected"
    RETRY = "retry"
    IN_DOUBT = "in_doubt"
    NOT_SENT = "not_sent"
    PAUSED = "paused"
    FINISHED = "finished"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"
    INTERRUPTED = "interrupted"
    NOTICE = "notice"  # something decided for the user that they must hear about (plan time)
    DECISIONS = "decisions"  # one line per decision class of the plan ("21 ... skipped")


@dataclass(frozen=True)
class RunEvent:
    """One line of progress; the CLI decides how (and whether) to show it."""

    kind: EventKind
    message: str
    item: PlannedCombination | None = None
    counts: PlanCounts | None = None  # PLAN: the plan's counts
    rate: Rate | None = None  # PLAN: run.rate, for progress displays
    http_status: int | None = None  # RETRY: the answer retried (429 = rate-limited)
    state: State | None = None  # FINISHED: where the combination now stands
    duration_s: float | None = None  # FINISHED: the job group's own duration


class Failure(NamedTuple):
    """A combination that ended without success, as the run summary lists it."""

    combination: str  # `Region=01 varReferenceType=PROD`, for people
    error: str
    combo_id: str
    params: Mapping[str, str]


@dataclass
class RunSummary:
    """What a run did and where every combination in scope stands at its end."""

    sweep: str
    run_id: str
    as_of: str
    ledger: str
    wait: bool = True
    planned: int = 0
    skipped: int = 0
    posts: int = 0  # POST attempts sent
    submitted: int = 0  # 201s
    duplicates: int = 0  # 304s
    rate_limited: int = 0  # 429/503 answers
    retries: int = 0
    # Where each combination in scope stands at the end, counted by State value.
    states: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in State})
    interrupted: bool = False
    timed_out: bool = False
    aborted: str = ""  # why the run stopped itself, if it did
    failures: list[Failure] = field(default_factory=list)

    @property
    def stopped_early(self) -> bool:
        return self.interrupted or bool(self.aborted)

    @property
    def in_progress(self) -> bool:
        return False  # the run itself: it knows how it ended

    def count(self, *states: State) -> int:
        return sum(self.states[s.value] for s in states)

    @property
    def succeeded(self) -> int:
        return self.count(State.SUCCEEDED)

    @property
    def failed(self) -> int:
        return sum(n for s, n in self.states.items() if State(s).is_failure)

    @property
    def in_doubt(self) -> int:
        return self.count(State.IN_DOUBT)

    @property
    def running(self) -> int:
        return sum(n for s, n in self.states.items() if State(s).is_open)

    @property
    def not_sent(self) -> int:
        return self.count(State.NOT_SENT)

    @property
    def pending(self) -> int:
        return self.count(State.PENDING)

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self)

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready data (``sweeper.run/1``); parameters are an object."""
        data: dict[str, Any] = {"schema": RUN_SCHEMA, **self.__dict__}
        for bucket in ("succeeded", "failed", "in_doubt", "running", "not_sent", "pending"):
            data[bucket] = getattr(self, bucket)
        data["failures"] = [
            {"combo_id": f.combo_id, "params": dict(f.params), "error": f.error}
            for f in self.failures
        ]
        data["exit_code"] = int(self.exit_code)
        return data


class Journal:
    """Rows and events of one run, for one sweep, run id and config."""

    def __init__(
        self,
        config: SweepConfig,
        ledger: Ledger,
        summary: RunSummary,
        on_event: Callable[[RunEvent], None],
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.summary = summary
        self._on_event = on_event

    def write(self, item: PlannedCombination, event: Event, **fields: Any) -> LedgerRow:
        """Append one row for ``item``; it is on disk (fsynced) when this returns."""
        fields.setdefault("reason", item.reason)
        row = LedgerRow(
            ts=utc_timestamp(),
            sweep=self.config.sweep.name,
            run_id=self.summary.run_id,
            combo_id=item.combo.combo_id,
            event=event,
            generation=item.generation,
            execution_id=item.execution_id,
            params=item.combo.params,
            config_hash=self.config.config_hash,
            as_of=self.summary.as_of,
            **fields,
        )
        self.ledger.append(row)
        return row

    def emit(
        self,
        kind: EventKind,
        message: str,
        item: PlannedCombination | None = None,
        **details: Any,
    ) -> None:
        """Tell whoever shows progress; ``details`` fill RunEvent's optional fields."""
        self._on_event(RunEvent(kind, message, item, **details))
