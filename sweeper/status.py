"""`sweeper status`: bring the ledger up to date with job groups that were still running."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sweeper.client import DataprepClient, JobGroupState
from sweeper.config import SweepConfig, load_config
from sweeper.errors import ApiError, AuthError
from sweeper.ledger import Event, Ledger, LedgerRow, current_state, state_of
from sweeper.outputs import verify_outputs
from sweeper.plan import Planner, latest_as_of
from sweeper.polling import StatusPoller
from sweeper.retry import PollGate, poll_delays
from sweeper.runner import parse_ts, utc_now


@dataclass
class StatusResult:
    run_id: str
    rows: list[LedgerRow]  # the current row per combination, after refreshing
    refreshed: int = 0  # job groups asked about
    finished: int = 0  # of which are now terminal (a `finished` row was appended)
    errors: list[str] = field(default_factory=list)
    timed_out: bool = False  # --watch gave up at run.timeout

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows:
            kind = state_of(row).value
            out[kind] = out.get(kind, 0) + 1
        return out

    @property
    def open(self) -> int:
        return sum(1 for row in self.rows if state_of(row).is_open)


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


def _finished_row(
    row: LedgerRow, state: JobGroupState, outputs: tuple[str, str] = ("", "")
) -> LedgerRow:
    created, updated = parse_ts(state.created_at), parse_ts(state.updated_at)
    outputs_ok, note = outputs
    return LedgerRow(
        ts=utc_now(),
        sweep=row.sweep,
        run_id=row.run_id,
        combo_id=row.combo_id,
        event=Event.FINISHED,
        generation=row.generation,
        execution_id=row.execution_id,
        params=row.params,
        job_group_id=state.id,
        job_ids=tuple(j.id for j in state.jobs),
        status=state.status,
        error=state.error if state.status != "Complete" else note,
        outputs_ok=outputs_ok,
        duration_s=round(updated - created, 3)
        if created is not None and updated is not None
        else None,
        config_hash=row.config_hash,
        as_of=row.as_of,
        reason="refreshed by sweeper status",
    )


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
    ledger: Ledger,
    run_id: str | None = None,
    watch: bool = False,
    on_change: Callable[[StatusResult], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> StatusResult:
    """Ask the API about every open job group of the run and append `finished` rows.

    With ``watch``, keep asking (with the run's poll backoff) until every group has ended, or
    until ``run.timeout`` has passed (``timed_out`` is then set on the result).
    """
    history = ledger.history()
    rid = run_id or (history[-1].run_id if history else "")
    result = StatusResult(run_id=rid, rows=[])
    poller = StatusPoller(client, PollGate(config.run.max_polls_per_second))
    delays = poll_delays(config.run.poll_interval, config.run.poll_max_interval)
    started = clock()
    expected: dict[str, tuple[str, ...]] | None = None
    while True:
        state = current_state(ledger.history(), run_id=rid)
        pending = open_groups(list(state.values()))
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
                outputs = ("", "")
                if group.status == "Complete" and config.run.verify_outputs:
                    if expected is None:  # rendered once, and only when needed
                        expected = expected_outputs(config, ledger.history(), rid)
                    outputs = await verify_outputs(
                        client,
                        group.id,
                        expected.get(row.combo_id, ()),
                        created_at=parse_ts(group.created_at),
                    )
                ledger.append(_finished_row(row, group, outputs))
                result.finished += 1
        result.rows = list(current_state(ledger.history(), run_id=rid).values())
        if on_change is not None:
            on_change(result)
        if not watch or result.open == 0:
            return result
        if clock() - started >= config.run.timeout:
            result.timed_out = True
            return result
        await sleep(next(delays))
