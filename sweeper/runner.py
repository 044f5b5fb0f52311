"""run_sweep(): plan -> submit -> wait, writing every step to the ledger before it matters.

The order of writes is the safety argument:

1. an ``intent`` row (fsynced) before every POST, carrying the execution id;
2. the POST, always with that same ``x-execution-id``, so a resend can only ever get 304;
3. a row for the outcome (``submitted``, ``duplicate``, ``reconciled``, ``rejected``,
   ``in_doubt``, ``not_sent``), then ``finished`` when the job group ends.

A crash between 1 and 3 leaves ``intent`` as the last row; the next run waits ``run.settle``
after that row (a request sent just before the crash may still be in flight), resends with the
execution id read back from the ledger, and on 304 looks the group up (as far back as the first
attempt with that id) so the ledger gets its real id. So no combination is created twice, and a
combination never changes identity within a run: only ``--rerun`` (or a resume after sweeper
canceled the group on interrupt) starts a new generation, with its own execution id.

Stopping is always clean: the run's first submission goes alone, so a refused token (401/403)
or an unreachable API costs one combination's requests; a signal, the breaker, the retry budget
or ``run.timeout`` stop new submissions, record what was in flight, and leave the ledger
resumable. A crash of any task ends the run at once instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sweeper.client import DataprepClient, JobGroupState, Submission
from sweeper.config import SweepConfig
from sweeper.errors import (
    ApiConnectionError,
    ApiError,
    AuthError,
    FailureClass,
    RunAbortedError,
    SweeperError,
)
from sweeper.ledger import Event, Ledger, LedgerRow, current_state, state_of
from sweeper.outputs import verify_outputs
from sweeper.plan import (
    Action,
    PlanCounts,
    PlannedCombination,
    Planner,
    describe,
    plan_message,
)
from sweeper.polling import StatusPoller, aligned_delay
from sweeper.retry import (
    CircuitBreaker,
    PollGate,
    RateLimiter,
    RetryBudget,
    RetryPolicy,
    call_with_retry,
    poll_delays,
)
from sweeper.state import State

log = logging.getLogger("sweeper.runner")

TERMINAL = ("Complete", "Failed", "Canceled")
# run.rate windows are stretched by 1 % (0.6 s of a minute): the platform counts POSTs as they
# arrive, so jitter between the limiter's grant and the arrival can put one more POST into a
# server window than the limiter allowed in its own. On loopback this cost about one POST in 450
# a 429 at rate = quota (docs/performance.md); a real network's jitter is larger.
QUOTA_MARGIN = 0.01


def utc_now() -> str:
    """UTC ISO-8601 with milliseconds, as the API writes timestamps."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_ts(value: str) -> float | None:
    """Seconds since the epoch for an ISO-8601 timestamp, or None."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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
    # Current state of the combinations in scope, from the ledger at the end:
    succeeded: int = 0
    failed: int = 0
    in_doubt: int = 0
    running: int = 0
    not_sent: int = 0
    pending: int = 0  # never attempted (interrupted or timed out before its turn)
    interrupted: bool = False
    timed_out: bool = False
    aborted: str = ""  # why the run stopped itself, if it did
    failures: list[tuple[str, str]] = field(default_factory=list)  # (combination, error)

    @property
    def exit_code(self) -> int:
        """0 all good, 1 the run could not go on, 3 finished with failures or doubt (DESIGN.md)."""
        if self.aborted or self.interrupted:
            return 1
        bad = self.failed + self.in_doubt + self.not_sent + self.pending
        if self.wait:
            bad += self.running
        return 3 if bad else 0

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["failures"] = [{"combination": c, "error": e} for c, e in self.failures]
        data["exit_code"] = self.exit_code
        return data


@dataclass(frozen=True)
class RunEvent:
    """One line of progress; the CLI decides how (and whether) to show it."""

    kind: str  # plan, skip, submit, submitted, duplicate, reconciled, rejected, retry, in_doubt,
    # not_sent, paused, finished, timed_out, canceled, interrupted, settle, done
    message: str
    item: PlannedCombination | None = None


class Interrupt:
    """First signal: stop submitting. Second signal: also cancel in-flight job groups."""

    def __init__(self, *, cancel_on_interrupt: bool = False) -> None:
        self.stop = asyncio.Event()
        self.cancel = asyncio.Event()
        self.cancel_on_interrupt = cancel_on_interrupt

    def signal(self) -> None:
        if self.stop.is_set() or self.cancel_on_interrupt:
            self.cancel.set()
        self.stop.set()


class _Stopped(Exception):
    """Raised inside a retry sleep when the run is told to stop."""


class _Run:
    def __init__(
        self,
        config: SweepConfig,
        *,
        client: DataprepClient,
        ledger: Ledger,
        planner: Planner,
        wait: bool,
        interrupt: Interrupt,
        on_event: Callable[[RunEvent], None],
        clock: Callable[[], float],
    ) -> None:
        self.config = config
        self.client = client
        self.ledger = ledger
        self.planner = planner
        self.wait = wait
        self.interrupt = interrupt
        self.emit = on_event
        self.clock = clock
        self.as_of = planner.as_of.isoformat()
        rate = config.run.rate
        self.limiter = RateLimiter(rate.count, rate.per_seconds, margin=QUOTA_MARGIN)
        self.policy = RetryPolicy.from_settings(config.retry)
        self.budget = RetryBudget(config.retry.budget)
        self.breaker = CircuitBreaker(
            config.retry.breaker_threshold,
            config.retry.breaker_pause,
            config.retry.breaker_max_opens,
            on_open=self._on_breaker_open,
        )
        self.poller = StatusPoller(client, PollGate(config.run.max_polls_per_second))
        self.deadline = clock() + config.run.timeout
        self.summary = RunSummary(
            sweep=config.sweep.name,
            run_id=planner.run_id,
            as_of=self.as_of,
            ledger=str(ledger.path),
            wait=wait,
        )
        self.open_groups: dict[str, tuple[PlannedCombination, int]] = {}
        self.pollers: set[asyncio.Task[None]] = set()
        self.abort: SweeperError | None = None
        self.stopping = asyncio.Event()  # interrupt, abort or deadline: submit nothing new
        # The first submission of a run goes alone, retries included: a refused token or an
        # unreachable API costs one combination's requests, not one per worker.
        self.probe_taken = False
        self.probe_done = asyncio.Event()
        # When each execution id was first attempted: a lookup must reach back to that attempt,
        # however many resumes came after it.
        self.first_attempt: dict[str, float] = {}
        for row in ledger.rows:
            if row.event is Event.INTENT and row.execution_id not in self.first_attempt:
                ts = parse_ts(row.ts)
                if ts is not None:
                    self.first_attempt[row.execution_id] = ts

    # -- ledger ---------------------------------------------------------------------------

    async def write(self, item: PlannedCombination, event: Event, **fields: Any) -> LedgerRow:
        """Append a row and return once it is on disk."""
        row = self._row(item, event, **fields)
        self.ledger.append(row)
        return row

    def write_soon(self, item: PlannedCombination, event: Event, **fields: Any) -> LedgerRow:
        """Append a row (on disk when this returns)."""
        row = self._row(item, event, **fields)
        self.ledger.append(row)
        return row

    def write_now(self, item: PlannedCombination, event: Event, **fields: Any) -> LedgerRow:
        """Append a row synchronously, for callbacks that cannot await (retry hooks)."""
        row = self._row(item, event, **fields)
        self.ledger.append(row)
        return row

    def _row(self, item: PlannedCombination, event: Event, **fields: Any) -> LedgerRow:
        fields.setdefault("reason", item.reason)
        if event is Event.INTENT:
            self.first_attempt.setdefault(item.execution_id, time.time())
        return LedgerRow(
            ts=utc_now(),
            sweep=self.config.sweep.name,
            run_id=self.planner.run_id,
            combo_id=item.combo.combo_id,
            event=event,
            generation=item.generation,
            execution_id=item.execution_id,
            params=item.combo.params,
            config_hash=self.config.config_hash,
            as_of=self.as_of,
            **fields,
        )

    # -- stopping -------------------------------------------------------------------------

    def _on_breaker_open(self, pause: float) -> None:
        self.emit(
            RunEvent(
                "paused",
                f"PAUSED: the platform refused {self.config.retry.breaker_threshold} requests in a "
                f"row (429/5xx); submission pauses for {pause:.0f}s.",
            )
        )

    @property
    def halted(self) -> bool:
        """Submit nothing new: stopping, or a signal whose watcher has not run yet."""
        return self.stopping.is_set() or self.interrupt.stop.is_set()

    def _stop(self, why: SweeperError | None = None) -> None:
        if why is not None and self.abort is None:
            self.abort = why
        self.stopping.set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake up (raising _Stopped) as soon as the run is told to stop."""
        if self.stopping.is_set():
            raise _Stopped
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))
        if self.stopping.is_set():
            raise _Stopped

    async def _watch_signals(self) -> None:
        await self.interrupt.stop.wait()
        if not self.stopping.is_set():
            self.summary.interrupted = True
            self.emit(
                RunEvent(
                    "interrupted",
                    "Interrupted: submitting nothing new; recording what is in flight. "
                    "Run the same command again to resume"
                    + (
                        "."
                        if self.interrupt.cancel_on_interrupt
                        else " (interrupt again to cancel the running job groups)."
                    ),
                )
            )
        self.stopping.set()

    # -- submission -----------------------------------------------------------------------

    async def submit(self, item: PlannedCombination) -> None:
        """Submit one combination; the run's first submission goes alone (see probe_done)."""
        probe = not self.probe_taken
        self.probe_taken = True
        if not probe:
            await self.probe_done.wait()
            if self.halted:
                return  # the probe stopped the run: never attempted, nothing to record
        try:
            await self._submit(item)
        finally:
            if probe:
                self.probe_done.set()

    async def _submit(self, item: PlannedCombination) -> None:
        attempt = 0
        last_error: ApiError | None = None
        last_ts = parse_ts(item.last.ts) if item.last is not None else None
        if item.action is Action.RESEND and last_ts is not None:
            # A request sent just before a crash may still be in flight on the server:
            # give it time to land before trusting what the server says (reliability-perf §1.4).
            settle = last_ts + self.config.run.settle - time.time()
            if settle > 0:
                self.emit(
                    RunEvent(
                        "settle", f"waiting {settle:.1f}s for in-flight requests to settle", item
                    )
                )
                try:
                    await self._sleep(settle)
                except _Stopped:
                    return

        async def post() -> Submission:
            nonlocal attempt
            if self.halted and attempt == 0:
                raise _Stopped
            attempt += 1
            await self.write(
                item, Event.INTENT, attempt=attempt
            )  # fsynced before the request leaves
            self.summary.posts += 1
            try:
                result = await self.client.create_job_group(
                    item.body, execution_id=item.execution_id
                )
            except ApiError as exc:
                self.breaker.record(
                    exc.failure not in (FailureClass.REJECTED, FailureClass.IN_DOUBT)
                )
                if exc.failure is FailureClass.REJECTED:
                    self.summary.rate_limited += 1
                raise
            self.breaker.record(True)
            return result

        async def once() -> Submission:
            await self.breaker.wait_if_open()
            await self.limiter.acquire()
            return await post()

        def on_retry(number: int, error: ApiError, delay: float) -> None:
            nonlocal last_error
            last_error = error
            self.summary.retries += 1
            if error.failure is FailureClass.IN_DOUBT:
                self.write_now(
                    item,
                    Event.IN_DOUBT,
                    attempt=number,
                    http_status=error.status_code,
                    error=str(error),
                    request_id=error.request_id or "",
                )
            self.emit(
                RunEvent(
                    "retry", f"{describe(item.combo)}: {error} — retrying in {delay:.1f}s", item
                )
            )

        self.emit(
            RunEvent("submit", f"{item.action.value} {describe(item.combo)}: {item.reason}", item)
        )
        try:
            sub = await call_with_retry(
                once, self.policy, budget=self.budget, on_retry=on_retry, sleep=self._sleep
            )
        except _Stopped:
            if attempt == 0:
                return  # never sent: nothing to record, the next run submits it
            await self._record_failure(
                item, last_error, attempt, note="interrupted before it was resolved"
            )
            return
        except RunAbortedError as exc:
            if attempt:
                await self._record_failure(item, last_error, attempt, note=str(exc))
            self._stop(exc)
            return
        except ApiError as exc:
            await self._record_failure(item, exc, attempt)
            if isinstance(exc, AuthError):
                self._stop(exc)
            elif isinstance(exc, ApiConnectionError):
                # Every retry failed to even connect: the API is unreachable, so the run cannot
                # go on (exit 1) rather than failing each remaining combination in turn.
                self._stop(
                    RunAbortedError(
                        f"{exc} The API stayed unreachable through every retry, so sweeper "
                        "stopped submitting; run the same command again to resume."
                    )
                )
            return
        await self._record_submission(item, sub, attempt)

    async def _record_failure(
        self, item: PlannedCombination, error: ApiError | None, attempt: int, note: str = ""
    ) -> None:
        text = "; ".join(t for t in (str(error) if error else "", note) if t)
        status = error.status_code if error else None
        request_id = (error.request_id or "") if error else ""
        failure = error.failure if error else FailureClass.NOT_SENT
        if failure is FailureClass.IN_DOUBT or (error is None and attempt):
            event, kind = Event.IN_DOUBT, "in_doubt"
        elif failure is FailureClass.PERMANENT:
            event, kind = Event.REJECTED, "rejected"
        else:  # NOT_SENT, REJECTED (429/503) or AUTH: the server provably did not create it
            event, kind = Event.NOT_SENT, "not_sent"
        await self.write(
            item, event, attempt=attempt, http_status=status, error=text, request_id=request_id
        )
        self.emit(RunEvent(kind, f"{describe(item.combo)}: {kind.replace('_', ' ')}: {text}", item))

    async def _record_submission(
        self, item: PlannedCombination, sub: Submission, attempt: int
    ) -> None:
        common = {"attempt": attempt, "http_status": sub.status_code, "request_id": sub.request_id}
        if sub.status_code == 201 and sub.job_group_id is not None:
            self.summary.submitted += 1
            self.write_soon(
                item,
                Event.SUBMITTED,
                job_group_id=sub.job_group_id,
                session_id=sub.session_id,
                job_ids=sub.job_ids,
                status="Created",
                **common,
            )
            self.emit(
                RunEvent(
                    "submitted",
                    f"submitted {describe(item.combo)}: job group {sub.job_group_id}",
                    item,
                )
            )
            self._watch(item, sub.job_group_id)
            return
        # 304: the server already has this execution id. Find the group so the ledger gets its id.
        self.summary.duplicates += 1
        event = Event.RECONCILED if item.action is Action.RESEND else Event.DUPLICATE
        found = await self._lookup(item)
        if found is None:
            await self.write(
                item,
                event,
                error="the server already has this execution id (304), but no job group "
                "matched in its listing; check the platform's job history",
                **common,
            )
            self.emit(
                RunEvent(
                    "in_doubt",
                    f"{describe(item.combo)}: exists on the server (304), id unknown",
                    item,
                )
            )
            return
        await self.write(
            item,
            event,
            job_group_id=found.id,
            job_ids=tuple(j.id for j in found.jobs),
            status=found.status,
            **common,
        )
        self.emit(
            RunEvent(
                event.value, f"{describe(item.combo)}: already exists as job group {found.id}", item
            )
        )
        self._watch(item, found.id)

    async def _lookup(self, item: PlannedCombination) -> JobGroupState | None:
        since = None
        ts = self.first_attempt.get(item.execution_id)
        if ts is None and item.last is not None:
            ts = parse_ts(item.last.ts)
        if ts is not None:
            # The group can only have been created by an attempt with this execution id, the first
            # of which is on record (a minute of slack for clock skew with the server).
            since = datetime.fromtimestamp(ts - 60, timezone.utc).isoformat()
        try:
            return await self.client.find_job_group(
                dataset_id=self.config.sweep.dataset,
                run_parameters=item.combo.params,
                output_paths=item.output_paths,
                created_after=since,
            )
        except ApiError as exc:
            log.warning("lookup of %s failed: %s", item.combo.combo_id, exc)
            return None

    # -- waiting --------------------------------------------------------------------------

    def _watch(self, item: PlannedCombination, job_group_id: int) -> None:
        self.open_groups[item.combo.combo_id] = (item, job_group_id)
        if self.wait:
            task = asyncio.create_task(self.poll(item, job_group_id))
            self.pollers.add(task)
            task.add_done_callback(self.pollers.discard)

    async def _get(self, job_group_id: int) -> JobGroupState:
        async def once() -> JobGroupState:
            return await self.poller.get(job_group_id)

        return await call_with_retry(once, self.policy, budget=self.budget, sleep=self._sleep)

    async def poll(self, item: PlannedCombination, job_group_id: int) -> None:
        state: JobGroupState | None = None
        try:
            for delay in poll_delays(
                self.config.run.poll_interval, self.config.run.poll_max_interval
            ):
                remaining = self.deadline - self.clock()
                if remaining <= 0:
                    break
                # Aligned to a shared grid, so groups come due together and share one listing.
                await self._sleep(min(aligned_delay(delay, time.time()), remaining))
                try:
                    state = await self._get(job_group_id)
                except AuthError as exc:
                    self._stop(exc)
                    return
                except ApiError as exc:
                    log.warning("polling job group %s failed: %s", job_group_id, exc)
                    continue
                if state.terminal:
                    await self._finish(item, state)
                    return
        except _Stopped:
            if not self.summary.timed_out:
                return  # interrupted: the submitted row already says it is running
        self.summary.timed_out = True
        await self.write(
            item,
            Event.TIMED_OUT,
            job_group_id=job_group_id,
            status=state.status if state else "",
            reason="run.timeout reached while it was running",
        )
        self.emit(
            RunEvent("timed_out", f"{describe(item.combo)}: still running at run.timeout", item)
        )

    async def _finish(self, item: PlannedCombination, state: JobGroupState) -> None:
        self.open_groups.pop(item.combo.combo_id, None)
        outputs_ok, note = "", ""
        if state.status == "Complete" and self.config.run.verify_outputs:
            outputs_ok, note = await verify_outputs(
                self.client, state.id, item.output_paths, created_at=parse_ts(state.created_at)
            )
        created, updated = parse_ts(state.created_at), parse_ts(state.updated_at)
        duration = (
            round(updated - created, 3) if created is not None and updated is not None else None
        )
        error = state.error if state.status != "Complete" else note
        await self.write(
            item,
            Event.FINISHED,
            job_group_id=state.id,
            job_ids=tuple(j.id for j in state.jobs),
            status=state.status,
            error=error,
            duration_s=duration,
            outputs_ok=outputs_ok,
        )
        verdict = state.status + (f" (outputs: {outputs_ok})" if outputs_ok else "")
        self.emit(
            RunEvent(
                "finished", f"finished {describe(item.combo)}: job group {state.id} {verdict}", item
            )
        )

    async def cancel_open_groups(self) -> None:
        for combo_id, (item, job_group_id) in list(self.open_groups.items()):
            try:
                job_ids = await self.client.cancel_job_group(job_group_id)
                state = await self.client.get_job_group(job_group_id)
            except ApiError as exc:
                self.emit(
                    RunEvent("canceled", f"{describe(item.combo)}: cancel failed: {exc}", item)
                )
                continue
            self.open_groups.pop(combo_id, None)
            if state.status in ("Complete", "Failed"):
                # It ended before the cancel arrived: record the real outcome, so a resume does
                # not run a finished combination again.
                await self._finish(item, state)
                continue
            await self.write(
                item,
                Event.CANCELED,
                job_group_id=job_group_id,
                job_ids=job_ids or tuple(j.id for j in state.jobs),
                status=state.status or "Canceled",
                reason="canceled by sweeper on interrupt",
            )
            self.emit(
                RunEvent(
                    "canceled", f"{describe(item.combo)}: canceled job group {job_group_id}", item
                )
            )

    # -- the whole run --------------------------------------------------------------------

    async def execute(self, counts: PlanCounts) -> RunSummary:
        self.summary.planned = counts.total
        signals = asyncio.create_task(self._watch_signals())
        deadline = asyncio.create_task(self._deadline())
        queue: asyncio.Queue[PlannedCombination | None] = asyncio.Queue(
            maxsize=2 * self.config.run.concurrency
        )
        workers = [
            asyncio.create_task(self._worker(queue)) for _ in range(self.config.run.concurrency)
        ]
        producer = asyncio.create_task(self._feed(queue, len(workers)))
        try:
            # A crash in any worker must end the run, not leave the producer blocked on a full
            # queue: the ledger already says everything a resume needs.
            tasks = [producer, *workers]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
            while self.pollers:
                await asyncio.gather(*list(self.pollers), return_exceptions=True)
            if self.interrupt.cancel.is_set():
                await self.cancel_open_groups()
        finally:
            for task in (signals, deadline, producer, *workers, *self.pollers):
                task.cancel()
        self._tally()
        return self.summary

    async def _deadline(self) -> None:
        await asyncio.sleep(max(0.0, self.deadline - self.clock()))
        if not self.stopping.is_set():
            self.summary.timed_out = True
            self.emit(RunEvent("timed_out", "run.timeout reached: submitting nothing new."))
            self.stopping.set()

    async def _feed(self, queue: asyncio.Queue[PlannedCombination | None], workers: int) -> None:
        await self._produce(queue)
        for _ in range(workers):
            await queue.put(None)

    async def _produce(self, queue: asyncio.Queue[PlannedCombination | None]) -> None:
        for item in self.planner:
            if self.halted:
                return
            if item.action is Action.SKIP:
                self.summary.skipped += 1
                self.emit(RunEvent("skip", f"skip {describe(item.combo)}: {item.reason}", item))
            elif item.action is Action.WAIT:
                assert item.job_group_id is not None
                self.emit(RunEvent("wait", f"wait {describe(item.combo)}: {item.reason}", item))
                self._watch(item, item.job_group_id)
            else:
                await queue.put(item)

    async def _worker(self, queue: asyncio.Queue[PlannedCombination | None]) -> None:
        while (item := await queue.get()) is not None:
            if not self.halted:
                await self.submit(item)

    def _tally(self) -> None:
        """Classify every combination in scope by its last row in this run."""
        s = self.summary
        state = current_state(self.ledger.history(), run_id=self.planner.run_id)
        for combo in self.planner.combinations():
            row = state.get(combo.combo_id)
            kind = classify(row)
            setattr(s, kind, getattr(s, kind) + 1)
            if kind == "failed" and row is not None and len(s.failures) < 50:
                s.failures.append((describe(combo), row.error or row.status or row.event.value))
        if self.abort is not None:
            s.aborted = str(self.abort)


# The run summary's buckets, from the ledger's per-combination states.
SUMMARY_BUCKET = {
    State.SUCCEEDED: "succeeded",
    State.FAILED: "failed",
    State.REJECTED: "failed",
    State.CANCELED: "failed",
    State.RUNNING: "running",
    State.TIMED_OUT: "running",
    State.IN_DOUBT: "in_doubt",
    State.NOT_SENT: "not_sent",
    State.PENDING: "pending",
}


def classify(row: LedgerRow | None) -> str:
    """succeeded, failed, in_doubt, running, not_sent or pending: a combination's last row."""
    return SUMMARY_BUCKET[state_of(row)]


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
    interrupt: Interrupt | None = None,
    on_event: Callable[[RunEvent], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RunSummary:
    """Run one sweep: plan, submit what needs submitting, wait, and return the summary.

    Raises ConfigError/MatrixError before anything is submitted if the plan is invalid.
    """
    planner = Planner(
        config,
        history=ledger.history(),
        run_id=run_id,
        as_of=as_of,
        rerun=rerun,
        only=only,
        limit=limit,
    )
    counts = planner.check(allow_large=allow_large)
    emit = on_event or (lambda event: None)
    run = _Run(
        config,
        client=client,
        ledger=ledger,
        planner=planner,
        wait=config.run.wait if wait is None else wait,
        interrupt=interrupt or Interrupt(),
        on_event=emit,
        clock=clock,
    )
    emit(RunEvent("plan", plan_message(counts, config.sweep.name, run_id)))
    if counts.total == 0:
        return run.summary
    return await run.execute(counts)
