"""`sweeper status`: bring the ledger up to date with job groups that were still running."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sweeper.client import DataprepClient
from sweeper.config import SweepConfig, load_config
from sweeper.errors import ApiError, AuthError, ExitCode, exit_code_for
from sweeper.ledger import (
    Event,
    Ledger,
    LedgerRow,
    current_state,
    latest_run_id,
    state_of,
    utc_timestamp,
)
from sweeper.pacing import Pacer, PollSchedule
from sweeper.planner import Planner, latest_as_of
from sweeper.polling import CLOCK_SKEW, StatusPoller
from sweeper.shards import LedgerSet
from sweeper.waiter import finished_fields


@dataclass
class StatusResult:
    """Where each combination of one run stands, after asking the API about open job groups."""

    run_id: str
    rows: list[LedgerRow]  # the current row per combination, after refreshing
    refreshed: int = 0  # job groups asked about
    finished: int = 0  # of which are now terminal (a `finished` row was appended)
    errors: list[str] = field(default_factory=list)
    timed_out: bool = False  # --watch gave up at run.timeout
    interrupted: bool = False  # a signal ended --watch early
    sweep_file: Path | None = None  # the sweep file the API was asked with; None: ledger as is
    base_url: str | None = None  # the platform's, when the sweep file is known (job page links)
    held_by: list[str] = field(default_factory=list)  # ledgers a running sweep holds, and who

    def counts(self) -> dict[str, int]:
        """How many combinations are in each state (only states that occur)."""
        out: dict[str, int] = {}
        for row in self.rows:
            state = state_of(row).value
            out[state] = out.get(state, 0) + 1
        return out

    @property
    def states(self) -> dict[str, int]:
        return self.counts()

    @property
    def stopped_early(self) -> bool:
        return self.interrupted

    @property
    def in_progress(self) -> bool:
        """A running sweep holds a ledger of this sweep: its state is still moving."""
        return bool(self.held_by)

    @property
    def exit_code(self) -> ExitCode:
        return exit_code_for(self)

    @property
    def open(self) -> int:
        return sum(1 for row in self.rows if state_of(row).is_open)


def run_start(history: Sequence[LedgerRow], run_id: str) -> datetime | None:
    """When the run's first row was written, less clock skew: its groups were created after."""
    stamps = [row.ts for row in history if row.run_id == run_id and row.ts]
    try:
        first = datetime.fromisoformat(min(stamps).replace("Z", "+00:00")) if stamps else None
    except ValueError:
        return None  # a hand-edited ledger: the poller's own default applies
    return first - CLOCK_SKEW if first is not None else None


def open_groups(rows: Sequence[LedgerRow]) -> list[LedgerRow]:
    """Rows whose job group was submitted but is not known to have ended."""
    return [r for r in rows if state_of(r).is_open and r.job_group_id is not None]


def find_config_for(
    ledger: Path, search: Sequence[Path] = (Path("configs"), Path("."))
) -> Path | None:
    """The sweep file whose ledger is ``ledger``, looked for in ``configs/`` and here."""
    target = ledger.resolve()
    for folder in search:
        for candidate in sorted(folder.glob("*.toml")):
            try:
                if load_config(candidate).sweep.ledger.resolve() == target:
                    return candidate
            except Exception:  # an unrelated broken TOML file is not our business
                continue
    return None


def expected_outputs(
    config: SweepConfig, history: Sequence[LedgerRow], run_id: str
) -> dict[str, tuple[str, ...]]:
    """The output paths each combination of a run asked for, rendered as the run rendered them."""
    as_of = latest_as_of(history, run_id) or datetime.now(timezone.utc)
    planner = Planner(config, history=[], run_id=run_id, as_of=as_of)
    return {item.combo.combo_id: item.output_paths for item in planner}


async def refresh(
    config: SweepConfig,
    *,
    client: DataprepClient,
    ledger: Ledger | LedgerSet,
    run_id: str | None = None,
    watch: bool = False,
    on_change: Callable[[StatusResult], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> StatusResult:
    """Ask the API about every open job group of the run and append `finished` rows.

    With ``watch``, keep asking (on the run's poll schedule) until every group has ended, or
    until ``run.timeout`` has passed (``timed_out`` is then set on the result). Given a
    ``LedgerSet`` (a sharded sweep), each ``finished`` row goes to the ledger its combination's
    last row came from; groups of a shard still running are left to that shard, and said so.
    """
    history = ledger.history()
    rid = run_id or latest_run_id(history)
    result = StatusResult(run_id=rid, rows=[], sweep_file=config.path)
    shared = ledger if isinstance(ledger, LedgerSet) else None
    if shared is not None:
        result.held_by = list(shared.busy)
    gate = Pacer(1, 1.0 / config.run.max_polls_per_second, sleep=sleep, margin=0.0)
    poller = StatusPoller(client, gate, since=run_start(history, rid))
    started = clock()
    schedule = PollSchedule(
        config.run.poll_interval, config.run.poll_max_interval, started=started, clock=clock
    )
    expected: dict[str, tuple[str, ...]] | None = None
    while True:
        state = current_state(ledger.history(), run_id=rid)
        pending = open_groups(list(state.values()))
        if shared is not None:
            pending = [row for row in pending if shared.can_append(row)]
        answers = await asyncio.gather(
            *(poller.get(row.job_group_id) for row in pending if row.job_group_id is not None),
            return_exceptions=True,
        )
        result.refreshed += len(pending)
        for row, group in zip(pending, answers, strict=True):
            if isinstance(group, AuthError):
                raise group
            if isinstance(group, ApiError):
                result.errors.append(f"job group {row.job_group_id}: {group}")
                continue
            if isinstance(group, BaseException):
                raise group
            if group.terminal:
                if expected is None and config.run.verify_outputs:
                    expected = expected_outputs(config, ledger.history(), rid)  # once, if needed
                fields = await finished_fields(
                    config, client, group, (expected or {}).get(row.combo_id, ())
                )
                ledger.append(
                    dataclasses.replace(
                        row,
                        ts=utc_timestamp(),
                        event=Event.FINISHED,
                        attempt=0,
                        http_status=None,
                        request_id="",
                        reason="refreshed by sweeper status",
                        **fields,
                    )
                )
                result.finished += 1
        result.rows = list(current_state(ledger.history(), run_id=rid).values())
        if on_change is not None:
            on_change(result)
        if not watch or result.open == 0 or (shared is not None and not pending):
            return result
        if clock() - started >= config.run.timeout:
            result.timed_out = True
            return result
        await sleep(schedule.next_delay(batched=poller.batching))
