"""run_sweep(): plan, then submit and wait, writing every step to the ledger before it matters.

A short orchestrator over three parts:

- the ``Submitter`` (``sweeper.submitter``): intent row, paced POST with safe retries, outcome row;
- the ``Waiter`` (``sweeper.waiter``): polls, ``finished`` / ``timed_out`` rows, output checks,
  cancel;
- the ``StopController`` (``sweeper.stopping``): one event and one interruptible sleep for every
  wait, so a signal, an abort or ``run.timeout`` stops the run at once.

Stopping is always clean: the run's first submission goes alone, so a refused token (401/403) or
an unreachable API costs one combination's requests; a stop submits nothing new, lets requests
already on the wire finish and records their outcome, and leaves the ledger resumable. A crash of
any task ends the run at once instead of hanging it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from sweeper.client import DataprepClient
from sweeper.config import SweepConfig
from sweeper.journal import EventKind, Failure, Journal, RunEvent, RunSummary
from sweeper.ledger import Ledger, LedgerRow, current_state, state_of
from sweeper.pacing import SharedBucket
from sweeper.planner import (
    Action,
    PlanCounts,
    PlannedCombination,
    Planner,
    decision_lines,
    describe,
    plan_message,
)
from sweeper.shards import Shard, merge_rows
from sweeper.stopping import StopController, StopReason
from sweeper.submitter import Submitter
from sweeper.waiter import Waiter

_End = None  # what a worker takes from the queue when there is nothing more to submit


class _Run:
    def __init__(
        self,
        journal: Journal,
        client: DataprepClient,
        planner: Planner,
        stop: StopController,
        *,
        wait: bool,
        clock: Callable[[], float],
        others: Sequence[LedgerRow] = (),
        rate_store: SharedBucket | None = None,
    ) -> None:
        config = journal.config
        self.journal = journal
        self.summary = journal.summary
        self.planner = planner
        self.stop = stop
        self.clock = clock
        self.deadline = clock() + config.run.timeout
        self.concurrency = config.run.concurrency
        self.others = others  # rows of the sweep's other ledgers (shards), read at the start
        self.submitter = Submitter(journal, client, stop, self.history(), rate_store=rate_store)
        self.waiter = Waiter(journal, client, stop, wait=wait, deadline=self.deadline, clock=clock)
        # The first submission of a run goes alone, retries included: a refused token or an
        # unreachable API costs one combination's requests, not one per worker.
        self.probe_taken = False
        self.probe_done = asyncio.Event()

    async def execute(self, counts: PlanCounts) -> RunSummary:
        self.summary.planned = counts.total
        helpers = [asyncio.create_task(self._announce_stop()), asyncio.create_task(self._timer())]
        queue: asyncio.Queue[PlannedCombination | None] = asyncio.Queue(2 * self.concurrency)
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.concurrency)]
        producer = asyncio.create_task(self._produce(queue))
        try:
            # A crash in any worker must end the run, not leave the producer blocked on a full
            # queue: the ledger already says everything a resume needs.
            tasks = [producer, *workers]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            await self.waiter.drain()
            if self.stop.cancel_requested:
                await self.waiter.cancel_open()
        finally:
            for task in (*helpers, producer, *workers):
                task.cancel()
            self.waiter.abandon()
        self._tally()
        return self.summary

    async def _announce_stop(self) -> None:
        await self.stop.event.wait()
        if self.stop.reason is StopReason.INTERRUPTED:
            again = (
                "."
                if self.stop.cancel_requested
                else " (interrupt again to cancel the running job groups)."
            )
            self.journal.emit(
                EventKind.INTERRUPTED,
                "Interrupted: submitting nothing new; recording what is in flight. "
                "Run the same command again to resume" + again,
            )

    async def _timer(self) -> None:
        await asyncio.sleep(max(0.0, self.deadline - self.clock()))
        if not self.stop.stopped:
            self.journal.emit(EventKind.TIMED_OUT, "run.timeout reached: submitting nothing new.")
            self.stop.stop(StopReason.TIMED_OUT)

    async def _produce(self, queue: asyncio.Queue[PlannedCombination | None]) -> None:
        for item in self.planner:
            if self.stop.stopped:
                break
            if item.action is Action.SKIP:
                self.summary.skipped += 1
                self.journal.emit(
                    EventKind.SKIP, f"skip {describe(item.combo)}: {item.reason}", item
                )
            elif item.action is Action.WAIT:
                # A flow sweep waits on the flow run; a recipe sweep on the job group.
                watched = item.flow_run_id if self.waiter.flows else item.job_group_id
                assert watched is not None
                self.journal.emit(
                    EventKind.WAIT, f"wait {describe(item.combo)}: {item.reason}", item
                )
                self.waiter.watch(item, watched)
            else:
                await queue.put(item)
        for _ in range(self.concurrency):
            await queue.put(_End)

    async def _worker(self, queue: asyncio.Queue[PlannedCombination | None]) -> None:
        while (item := await queue.get()) is not _End:
            if not self.stop.stopped:
                await self._submit(item)

    async def _submit(self, item: PlannedCombination) -> None:
        probe = not self.probe_taken
        self.probe_taken = True
        if not probe:
            await self.probe_done.wait()
            if self.stop.stopped:
                return  # the probe stopped the run: never attempted, nothing to record
        try:
            job_group_id = await self.submitter.submit(item)
        finally:
            if probe:
                self.probe_done.set()
        if job_group_id is not None:
            self.waiter.watch(item, job_group_id)

    def history(self) -> list[LedgerRow]:
        """This run's ledger, merged with the sweep's other ledgers when sharded."""
        own = self.journal.ledger.history()
        return merge_rows([self.others, own]) if self.others else own

    def _tally(self) -> None:
        """Where every combination in scope stands, by its last row in this run."""
        s = self.summary
        latest = current_state(self.history(), run_id=s.run_id)
        for combo in self.planner.combinations():
            row = latest.get(combo.combo_id)
            state = state_of(row)
            s.states[state.value] += 1
            if state.is_failure and row is not None and len(s.failures) < 50:
                error = row.error or row.status or row.event.value
                s.failures.append(Failure(describe(combo), error, combo.combo_id, combo.params))
        s.interrupted = self.stop.reason is StopReason.INTERRUPTED
        s.timed_out = self.stop.reason is StopReason.TIMED_OUT
        if self.stop.reason is StopReason.ABORTED and self.stop.error is not None:
            s.aborted = str(self.stop.error)


async def run_sweep(
    config: SweepConfig,
    *,
    client: DataprepClient,
    ledger: Ledger,
    run_id: str,
    as_of: datetime,
    rerun: str = "incomplete",
    only: Sequence[str] = (),
    limit: int | None = None,
    wait: bool | None = None,
    allow_large: bool = False,
    stop: StopController | None = None,
    on_event: Callable[[RunEvent], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    requested_as_of: datetime | None = None,
    shard: Shard | None = None,
    others: Sequence[LedgerRow] = (),
    rate_store: SharedBucket | None = None,
) -> RunSummary:
    """Run one sweep: plan, submit what needs submitting, wait, and return the summary.

    ``shard`` runs only that shard's combinations; ``others`` are the rows of the sweep's other
    ledgers, planned from with this one's. ``rate_store`` shares the rate budget (and a 429's
    block) with every process using the same store and key.
    Raises ConfigError/MatrixError before anything is submitted if the plan is invalid.
    ``requested_as_of`` is ``--as-of`` as given, so a run that keeps its stored one says so.
    """
    own = ledger.history()
    planner = Planner(
        config,
        history=merge_rows([others, own]) if others else own,
        run_id=run_id,
        as_of=as_of,
        rerun=rerun,
        only=only,
        limit=limit,
        requested_as_of=requested_as_of,
        shard=shard,
    )
    counts = planner.check(allow_large=allow_large)
    summary = RunSummary(
        sweep=config.sweep.name,
        run_id=run_id,
        as_of=planner.as_of.isoformat(),
        ledger=str(ledger.path),
        wait=config.run.wait if wait is None else wait,
    )
    journal = Journal(config, ledger, summary, on_event or (lambda event: None))
    journal.emit(
        EventKind.PLAN,
        plan_message(counts, config.sweep.name, run_id),
        counts=counts,
        rate=config.run.rate,
    )
    for notice in counts.notices:
        journal.emit(EventKind.NOTICE, f"note: {notice}")
    for line in decision_lines(counts):
        journal.emit(EventKind.DECISIONS, line)
    if counts.total == 0:
        return summary
    run = _Run(
        journal,
        client,
        planner,
        stop or StopController(),
        wait=summary.wait,
        clock=clock,
        others=others,
        rate_store=rate_store,
    )
    return await run.execute(counts)
