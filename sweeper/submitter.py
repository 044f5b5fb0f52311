"""The submitter: an ``intent`` row, the POST (paced, retried safely), an outcome row.

The order of writes is the safety argument:

1. an ``intent`` row (fsynced) before every POST, carrying the execution id;
2. the POST, always with that same ``x-execution-id``, so a resend can only ever get 304;
3. a row for the outcome: ``submitted``, ``duplicate`` / ``reconciled`` (304, looked up),
   ``rejected``, ``in_doubt`` or ``not_sent``.

A crash between 1 and 3 leaves ``intent`` as the last row; the next run waits ``run.settle``
after that row (a request sent just before the crash may still be in flight), resends with the
execution id read back from the ledger, and on 304 looks the group up, so the ledger gets its
real id. Once any attempt may have reached the server, the combination stays in doubt until a
lookup settles it: it is never recorded as ``not_sent``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from sweeper.client import DataprepClient, FlowSubmission, JobGroupState, Submission
from sweeper.errors import (
    ApiConnectionError,
    ApiError,
    AuthError,
    FailureClass,
    RateLimitedError,
    RunAbortedError,
)
from sweeper.journal import EventKind, Journal
from sweeper.ledger import Event, LedgerRow, parse_timestamp, state_of
from sweeper.pacing import SUBMIT_BURST, Pacer, SharedBucket
from sweeper.planner import Action, PlannedCombination, describe
from sweeper.retry import CircuitBreaker, RetryBudget, call_with_retry
from sweeper.state import State
from sweeper.stopping import StopController, Stopped, StopReason

log = logging.getLogger("sweeper.submitter")

CLOCK_SKEW_S = 60.0  # slack when asking the server for groups created after a moment of ours


class Submitter:
    """Submits planned combinations, one call each; returns the job group to wait on."""

    def __init__(
        self,
        journal: Journal,
        client: DataprepClient,
        stop: StopController,
        history: list[LedgerRow],
        *,
        rate_store: SharedBucket | None = None,
    ) -> None:
        config = journal.config
        self.journal = journal
        self.config = config
        self.client = client
        self.stop = stop
        rate = config.run.rate
        self.pacer = Pacer(
            rate.count, rate.per_seconds, sleep=stop.sleep, burst=SUBMIT_BURST, store=rate_store
        )
        self.budget = RetryBudget(config.retry.budget)
        self.breaker = CircuitBreaker(
            config.retry.breaker_threshold,
            config.retry.breaker_pause,
            config.retry.breaker_max_opens,
            on_open=self._paused,
        )
        # Per execution id: when the ledger first records an attempt (a lookup must reach back to
        # it), and how many attempts it holds (attempts count within a generation, across resumes).
        self.first_attempt: dict[str, float] = {}
        self.attempts: dict[str, int] = {}
        # Every flow or plan run the ledger holds: a plan's 304 lookup must not take one of them.
        self.known_runs: set[int] = {r.flow_run_id for r in history if r.flow_run_id is not None}
        for row in history:
            if row.event is Event.INTENT:
                ts = parse_timestamp(row.ts)
                if ts is not None:
                    self.first_attempt.setdefault(row.execution_id, ts)
                self.attempts[row.execution_id] = max(
                    row.attempt, self.attempts.get(row.execution_id, 0)
                )

    def _paused(self, pause: float) -> None:
        self.journal.emit(
            EventKind.PAUSED,
            f"PAUSED: the platform refused {self.config.retry.breaker_threshold} requests in a "
            f"row (429/5xx); submission pauses for {pause:.0f}s.",
        )

    async def submit(self, item: PlannedCombination) -> int | None:
        """Submit ``item``; the id to wait on (its job group, or a flow sweep's flow run), or
        None. Never raises ApiError."""
        try:
            await self._settle(item)
        except Stopped:
            return None
        journal, summary = self.journal, self.journal.summary
        xid = item.execution_id
        first = self.attempts.get(xid, 0)
        attempt = first
        # A resend of something that may already exist stays in doubt whatever happens next.
        maybe_sent = item.last is not None and state_of(item.last) is State.IN_DOUBT
        last_error: ApiError | None = None

        async def once() -> Submission | FlowSubmission:
            nonlocal attempt, maybe_sent
            await self.breaker.wait(self.stop.sleep)
            await self.pacer.acquire()
            if self.stop.stopped:
                raise Stopped  # the stop came while we waited for a slot
            attempt += 1
            self.attempts[xid] = attempt
            journal.write(item, Event.INTENT, attempt=attempt)  # on disk before the request
            summary.posts += 1
            try:
                result: Submission | FlowSubmission
                if self.config.sweep.is_plan:
                    result = await self.client.run_plan(
                        self.config.sweep.dataset, item.body, execution_id=xid
                    )
                elif self.config.sweep.is_flow:
                    result = await self.client.run_flow(
                        self.config.sweep.dataset, item.body, execution_id=xid
                    )
                else:
                    result = await self.client.create_job_group(item.body, execution_id=xid)
            except ApiError as exc:
                self.breaker.record(exc)
                if exc.failure is FailureClass.REJECTED:
                    summary.rate_limited += 1
                if isinstance(exc, RateLimitedError) and exc.retry_after:
                    await self.pacer.block(exc.retry_after)  # every process sharing the store
                if exc.failure is FailureClass.IN_DOUBT:
                    maybe_sent = True
                raise
            self.breaker.record(None)
            return result

        def on_retry(number: int, error: ApiError, delay: float) -> None:
            nonlocal last_error
            last_error = error
            summary.retries += 1
            if error.failure is FailureClass.IN_DOUBT:
                journal.write(
                    item,
                    Event.IN_DOUBT,
                    attempt=attempt,
                    http_status=error.status_code,
                    error=str(error),
                    request_id=error.request_id or "",
                )
            journal.emit(
                EventKind.RETRY,
                f"{describe(item.combo)}: {error} — retrying in {delay:.1f}s",
                item,
                http_status=error.status_code,
            )

        journal.emit(
            EventKind.SUBMIT, f"{item.action.value} {describe(item.combo)}: {item.reason}", item
        )
        try:
            sub = await call_with_retry(
                once,
                self.config.retry,
                sleep=self.stop.sleep,
                budget=self.budget,
                on_retry=on_retry,
            )
        except Stopped:
            if attempt > first:
                self._record_failure(
                    item, last_error, attempt, maybe_sent, note="interrupted before it was resolved"
                )
            return None
        except RunAbortedError as exc:
            if attempt > first:
                self._record_failure(item, last_error, attempt, maybe_sent, note=str(exc))
            self.stop.stop(StopReason.ABORTED, exc)
            return None
        except ApiError as exc:
            self._record_failure(item, exc, attempt, maybe_sent)
            if isinstance(exc, AuthError):
                self.stop.stop(StopReason.ABORTED, exc)
            elif isinstance(exc, ApiConnectionError) and not maybe_sent:
                # Every retry failed to even connect: the API is unreachable, so the run cannot
                # go on (exit 1) rather than failing each remaining combination in turn.
                self.stop.stop(
                    StopReason.ABORTED,
                    RunAbortedError(
                        f"{exc} The API stayed unreachable through every retry, so sweeper "
                        "stopped submitting; run the same command again to resume."
                    ),
                )
            return None
        return await self._record_submission(item, sub, attempt)

    async def _settle(self, item: PlannedCombination) -> None:
        """Before resending after a crash, give a request that may still be in flight time to
        land, so the server's answer to the resend is the truth."""
        last_ts = parse_timestamp(item.last.ts) if item.last is not None else None
        if item.action is not Action.RESEND or last_ts is None:
            return
        settle = last_ts + self.config.run.settle - time.time()
        if settle > 0:
            self.journal.emit(
                EventKind.SETTLE, f"waiting {settle:.1f}s for in-flight requests to settle", item
            )
            await self.stop.sleep(settle)

    def _record_failure(
        self,
        item: PlannedCombination,
        error: ApiError | None,
        attempt: int,
        maybe_sent: bool,
        note: str = "",
    ) -> None:
        text = "; ".join(t for t in (str(error) if error else "", note) if t)
        failure = error.failure if error else FailureClass.NOT_SENT
        if maybe_sent or failure is FailureClass.IN_DOUBT:
            event, kind = Event.IN_DOUBT, EventKind.IN_DOUBT
        elif failure is FailureClass.PERMANENT:
            event, kind = Event.REJECTED, EventKind.REJECTED
        else:  # NOT_SENT, REJECTED (429/503) or AUTH: the server provably did not create it
            event, kind = Event.NOT_SENT, EventKind.NOT_SENT
        self.journal.write(
            item,
            event,
            attempt=attempt,
            http_status=error.status_code if error else None,
            error=text,
            request_id=(error.request_id or "") if error else "",
        )
        self.journal.emit(
            kind, f"{describe(item.combo)}: {event.value.replace('_', ' ')}: {text}", item
        )

    async def _record_submission(
        self, item: PlannedCombination, sub: Submission | FlowSubmission, attempt: int
    ) -> int | None:
        journal = self.journal
        common = {"attempt": attempt, "http_status": sub.status_code, "request_id": sub.request_id}
        if isinstance(sub, FlowSubmission) and self.config.sweep.is_plan:
            return await self._record_plan_submission(item, sub, common)
        if isinstance(sub, FlowSubmission):
            return await self._record_flow_submission(item, sub, common)
        if sub.job_group_id is not None:
            journal.summary.submitted += 1
            journal.write(
                item,
                Event.SUBMITTED,
                job_group_id=sub.job_group_id,
                session_id=sub.session_id,
                job_ids=sub.job_ids,
                status="Created",
                **common,
            )
            journal.emit(
                EventKind.SUBMITTED,
                f"submitted {describe(item.combo)}: job group {sub.job_group_id}",
                item,
            )
            return sub.job_group_id
        # 304: the server already has this execution id. Find the group so the ledger gets its id.
        journal.summary.duplicates += 1
        event = Event.RECONCILED if item.action is Action.RESEND else Event.DUPLICATE
        found = await self._lookup(item)
        if found is None:
            self._unfound(item, "no job group matched in its listing", "id", common)
            return None
        journal.write(
            item,
            event,
            job_group_id=found.id,
            job_ids=tuple(j.id for j in found.jobs),
            status=found.status,
            **common,
        )
        journal.emit(
            EventKind(event.value),
            f"{describe(item.combo)}: already exists as job group {found.id}",
            item,
        )
        return found.id

    async def _record_flow_submission(
        self, item: PlannedCombination, sub: FlowSubmission, common: dict[str, Any]
    ) -> int | None:
        """The rows of a flow run: its id, its first job group and all of them."""
        journal = self.journal
        if sub.flow_run_id is not None:
            journal.summary.submitted += 1
            journal.write(
                item,
                Event.SUBMITTED,
                flow_run_id=sub.flow_run_id,
                job_group_id=sub.job_group_id,
                job_group_ids=sub.job_group_ids,
                session_id=sub.session_id,
                job_ids=sub.job_ids,
                status="Created",
                **common,
            )
            listed = ", ".join(map(str, sub.job_group_ids))
            journal.emit(
                EventKind.SUBMITTED,
                f"submitted {describe(item.combo)}: flow run {sub.flow_run_id} "
                f"(job groups {listed})",
                item,
            )
            return sub.flow_run_id
        # 304: the server already has a flow run for this execution id; find it and its groups.
        journal.summary.duplicates += 1
        event = Event.RECONCILED if item.action is Action.RESEND else Event.DUPLICATE
        run_id: int | None = None
        groups: list[JobGroupState] = []
        try:
            run_id = await self.client.find_flow_run(
                flow_id=self.config.sweep.dataset,
                run_parameters=item.combo.params,
                output_paths=item.output_paths,
                outputs=self.config.sweep.outputs,
                created_after=self._lookup_since(item),
            )
            if run_id is not None:
                groups = await self.client.get_flow_run_job_groups(run_id)
        except ApiError as exc:
            log.warning("lookup of %s failed: %s", item.combo.combo_id, exc)
            run_id = None
        if run_id is None or not groups:
            self._unfound(item, "no flow run matched in its job listing", "flow run id", common)
            return None
        journal.write(
            item,
            event,
            flow_run_id=run_id,
            job_group_id=groups[0].id,
            job_group_ids=tuple(g.id for g in groups),
            job_ids=tuple(j.id for g in groups for j in g.jobs),
            **common,
        )
        journal.emit(
            EventKind(event.value),
            f"{describe(item.combo)}: already exists as flow run {run_id}",
            item,
        )
        return run_id

    async def _record_plan_submission(
        self, item: PlannedCombination, sub: FlowSubmission, common: dict[str, Any]
    ) -> int | None:
        """The rows of a plan run: its planSnapshotRunId, in the run id column (flow_run_id)."""
        journal = self.journal
        if sub.flow_run_id is not None:
            self.known_runs.add(sub.flow_run_id)
            journal.summary.submitted += 1
            journal.write(
                item, Event.SUBMITTED, flow_run_id=sub.flow_run_id, status="Created", **common
            )
            journal.emit(
                EventKind.SUBMITTED,
                f"submitted {describe(item.combo)}: plan run {sub.flow_run_id}",
                item,
            )
            return sub.flow_run_id
        # 304: the server already has a plan run for this execution id. Its body carries no run
        # parameters, so the lookup can only take the one unclaimed run since the first attempt.
        journal.summary.duplicates += 1
        event = Event.RECONCILED if item.action is Action.RESEND else Event.DUPLICATE
        run_id: int | None = None
        try:
            run_id = await self.client.find_plan_run(
                plan_id=self.config.sweep.dataset,
                created_after=self._lookup_since(item),
                known=self.known_runs,
            )
        except ApiError as exc:
            log.warning("lookup of %s failed: %s", item.combo.combo_id, exc)
        if run_id is None:
            self._unfound(
                item,
                "no single plan run since the first attempt is unaccounted for",
                "plan run id",
                common,
            )
            return None
        self.known_runs.add(run_id)
        journal.write(item, event, flow_run_id=run_id, **common)
        journal.emit(
            EventKind(event.value),
            f"{describe(item.combo)}: already exists as plan run {run_id}",
            item,
        )
        return run_id

    def _unfound(
        self, item: PlannedCombination, why: str, unknown: str, common: dict[str, Any]
    ) -> None:
        """Record a 304 whose lookup found nothing: the server has it, so it is in doubt (a
        ``duplicate`` row without an id), and a resume asks again with the same execution id."""
        self.journal.write(
            item,
            Event.DUPLICATE,
            error=f"the server already has this execution id (304), but {why}; check the "
            "platform's job history",
            **common,
        )
        self.journal.emit(
            EventKind.IN_DOUBT,
            f"{describe(item.combo)}: exists on the server (304), {unknown} unknown",
            item,
        )

    def _lookup_since(self, item: PlannedCombination) -> str:
        """How far back the group of a 304 can have been created, as an ISO timestamp.

        An earlier attempt with this execution id on record bounds it. Without one (the ledger
        was lost, or the run goes on from another machine) the search reaches back to the start
        of the run: the run id's date when it is one, else a day before the run's as-of.
        """
        first = self.first_attempt.get(item.execution_id)
        if first is not None:
            start = datetime.fromtimestamp(first, timezone.utc)
        else:
            try:
                start = datetime.fromisoformat(self.journal.summary.run_id[:10])
                start = start.replace(tzinfo=timezone.utc)
            except ValueError:
                start = datetime.fromisoformat(self.journal.summary.as_of) - timedelta(days=1)
        return (start - timedelta(seconds=CLOCK_SKEW_S)).isoformat()

    async def _lookup(self, item: PlannedCombination) -> JobGroupState | None:
        try:
            return await self.client.find_job_group(
                dataset_id=self.config.sweep.dataset,
                run_parameters=item.combo.params,
                output_paths=item.output_paths,
                created_after=self._lookup_since(item),
            )
        except ApiError as exc:
            log.warning("lookup of %s failed: %s", item.combo.combo_id, exc)
            return None
