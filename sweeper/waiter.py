"""The waiter: polls each submitted job group until it ends, and records how it ended.

Each group is read on a ``PollSchedule`` through one ``StatusPoller``: where status comes in
job-library pages, every group's reads land on one run-wide tick and share its page; where each
read is a GET of its own (no job library, or a flow or plan run), reads back off. A group that
ends gets a ``finished`` row (with the output check, when ``run.verify_outputs`` asks for it);
one still running at ``run.timeout`` gets ``timed_out``; on a cancel request every group still
open is canceled and gets ``canceled``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sweeper.client import TERMINAL_STATUSES, DataprepClient, JobGroupState
from sweeper.config import SweepConfig
from sweeper.errors import ApiError, AuthError
from sweeper.journal import EventKind, Journal
from sweeper.ledger import Event, parse_timestamp, state_of
from sweeper.outputs import verify_outputs
from sweeper.pacing import Pacer, PollSchedule
from sweeper.planner import Action, PlannedCombination, describe
from sweeper.polling import StatusPoller
from sweeper.stopping import StopController, Stopped, StopReason

log = logging.getLogger("sweeper.waiter")


async def finished_fields(
    config: SweepConfig,
    client: DataprepClient,
    group: JobGroupState,
    output_paths: Sequence[str],
) -> dict[str, Any]:
    """The fields of a ``finished`` row for a group that ended, outputs checked if asked."""
    outputs_ok, note = "", ""
    if group.status == "Complete" and config.run.verify_outputs:
        outputs_ok, note = await verify_outputs(
            client,
            group.id,
            output_paths,
            created_at=parse_timestamp(group.created_at),
            # The embedded emulator writes relative paths under the sweep's project root.
            base=config.root if config.api.embedded else None,
        )
    created, updated = parse_timestamp(group.created_at), parse_timestamp(group.updated_at)
    duration = round(updated - created, 3) if created is not None and updated is not None else None
    return {
        "job_group_id": group.id,
        "job_ids": tuple(j.id for j in group.jobs),
        "status": group.status,
        "error": group.error if group.status != "Complete" else note,
        "duration_s": duration,
        "outputs_ok": outputs_ok,
    }


def flow_finished_fields(flow_run_id: int, groups: Sequence[JobGroupState]) -> dict[str, Any]:
    """The fields of a ``finished`` row for a flow run that ended: every group, and in
    ``job_group_id`` the first that failed (or the first group, when none did)."""
    bad = [g for g in groups if g.status != "Complete"]
    status = next(
        (v for v in ("Failed", "Canceled") if any(g.status == v for g in groups)),
        "Complete" if groups and not bad else "Failed",
    )
    shown = bad[0] if bad else (groups[0] if groups else None)
    error = ""
    if bad:
        first = bad[0]
        error = f"job group {first.id} (recipe {first.dataset_id}) {first.status}"
        error += f": {first.error}" if first.error else ""
    elif not groups:
        error = f"flow run {flow_run_id} has no job groups"
    created = [t for t in (parse_timestamp(g.created_at) for g in groups) if t is not None]
    updated = [t for t in (parse_timestamp(g.updated_at) for g in groups) if t is not None]
    duration = round(max(updated) - min(created), 3) if created and updated else None
    return {
        "flow_run_id": flow_run_id,
        "job_group_id": shown.id if shown else None,
        "job_group_ids": tuple(g.id for g in groups),
        "job_ids": tuple(j.id for g in groups for j in g.jobs),
        "status": status,
        "error": error,
        "duration_s": duration,
    }


class Waiter:
    """Waits on job groups for one run; ``watch`` starts, ``drain`` waits for them all.

    In a flow sweep the id watched is a flow run's: its status is polled until it ends, then its
    job groups are read once; the combination succeeds when every one of them completed.
    """

    def __init__(
        self,
        journal: Journal,
        client: DataprepClient,
        stop: StopController,
        *,
        wait: bool,
        deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.journal = journal
        self.config = journal.config
        self.client = client
        self.stop = stop
        self.wait = wait
        self.deadline = deadline
        self.clock = clock
        rate = self.config.run.max_polls_per_second
        self.poller = StatusPoller(client, Pacer(1, 1.0 / rate, sleep=stop.sleep, margin=0.0))
        self.open: dict[str, tuple[PlannedCombination, int]] = {}  # combo_id -> (item, group)
        self.flows = self.config.sweep.runs  # ids watched are flow runs or plan snapshot runs
        self.plans = self.config.sweep.is_plan
        self._tasks: set[asyncio.Task[None]] = set()

    def watch(self, item: PlannedCombination, job_group_id: int) -> None:
        """Remember the group as open and, when the run waits, poll it until it ends."""
        self.open[item.combo.combo_id] = (item, job_group_id)
        if self.wait:
            task = asyncio.create_task(self._poll(item, job_group_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Return when every poll has ended (each ends by itself when the run stops)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def abandon(self) -> None:
        """Cancel every poll (a poll only reads; the ledger says the group is running)."""
        for task in list(self._tasks):
            task.cancel()

    def _schedule(self, item: PlannedCombination) -> PollSchedule:
        """The group's poll schedule, its age counted from its submission."""
        age = 0.0
        if item.last is not None and item.action is Action.WAIT:
            # Submitted by an earlier run: the newest row is no older than the group.
            now = time.time()
            age = max(0.0, now - (parse_timestamp(item.last.ts) or now))
        run = self.config.run
        started = time.monotonic() - age
        return PollSchedule(run.poll_interval, run.poll_max_interval, started=started)

    async def _poll(self, item: PlannedCombination, job_group_id: int) -> None:
        group: JobGroupState | None = None
        schedule = self._schedule(item)
        try:
            while True:
                remaining = self.deadline - self.clock()
                if remaining <= 0:
                    self.stop.stop(StopReason.TIMED_OUT)
                    break
                # A flow or plan run is read by a GET of its own; job groups share pages.
                delay = schedule.next_delay(batched=self.poller.batching and not self.flows)
                await self.stop.sleep(min(delay, remaining))
                try:
                    if self.plans:
                        if await self._plan_ended(item, job_group_id):
                            return
                        continue
                    if self.flows:
                        if await self._flow_ended(item, job_group_id):
                            return
                        continue
                    group = await self.poller.get(job_group_id)
                except AuthError as exc:
                    self.stop.stop(StopReason.ABORTED, exc)
                    return
                except ApiError as exc:
                    log.warning("polling job group %s failed: %s", job_group_id, exc)
                    continue
                if group.terminal:
                    await self.finish(item, group)
                    return
        except Stopped:
            pass
        if self.stop.reason is StopReason.TIMED_OUT:
            ids: dict[str, Any] = {"job_group_id": job_group_id}
            if self.flows:
                ids = {"flow_run_id": job_group_id, **self._last_ids(item)}
            self.journal.write(
                item,
                Event.TIMED_OUT,
                **ids,
                status=group.status if group else "",
                reason="run.timeout reached while it was running",
            )
            self.journal.emit(
                EventKind.TIMED_OUT, f"{describe(item.combo)}: still running at run.timeout", item
            )

    @staticmethod
    def _last_ids(item: PlannedCombination) -> dict[str, Any]:
        """The job group ids a flow combination's newest row holds, to carry into the next."""
        last = item.last
        if last is None or last.flow_run_id is None:
            return {}
        return {"job_group_id": last.job_group_id, "job_group_ids": last.job_group_ids}

    async def _flow_ended(self, item: PlannedCombination, flow_run_id: int) -> bool:
        """Poll a flow run once; when it ended, read its job groups and record it."""
        status = await self.client.get_flow_run_status(flow_run_id)
        # The published enum has no InProgress: any value but a terminal one means running.
        if status not in TERMINAL_STATUSES:
            return False
        groups = await self.client.get_flow_run_job_groups(flow_run_id)
        if not all(g.terminal for g in groups):
            return False  # the run says it ended before every group did: look again later
        await self.finish_flow(item, flow_run_id, groups)
        return True

    async def _plan_ended(self, item: PlannedCombination, plan_run_id: int) -> bool:
        """Poll a plan snapshot run once; when it ended, record how."""
        status = await self.client.get_plan_run_status(plan_run_id)
        # Any value but a terminal one (Created, InProgress, one not published) means running.
        if status not in TERMINAL_STATUSES:
            return False
        self.open.pop(item.combo.combo_id, None)
        error = "" if status == "Complete" else f"plan run {plan_run_id} ended {status}"
        row = self.journal.write(
            item, Event.FINISHED, flow_run_id=plan_run_id, status=status, error=error
        )
        self.journal.emit(
            EventKind.FINISHED,
            f"finished {describe(item.combo)}: plan run {plan_run_id} {status}",
            item,
            state=state_of(row),
            duration_s=row.duration_s,
        )
        return True

    async def finish_flow(
        self, item: PlannedCombination, flow_run_id: int, groups: Sequence[JobGroupState]
    ) -> None:
        """Record that a flow run ended, naming the job group that failed, if one did."""
        self.open.pop(item.combo.combo_id, None)
        fields = flow_finished_fields(flow_run_id, groups)
        row = self.journal.write(item, Event.FINISHED, **fields)
        verdict = fields["status"] + (f" ({fields['error']})" if fields["error"] else "")
        self.journal.emit(
            EventKind.FINISHED,
            f"finished {describe(item.combo)}: flow run {flow_run_id} {verdict}",
            item,
            state=state_of(row),
            duration_s=row.duration_s,
        )

    async def finish(self, item: PlannedCombination, group: JobGroupState) -> None:
        """Record that ``group`` ended."""
        self.open.pop(item.combo.combo_id, None)
        fields = await finished_fields(self.config, self.client, group, item.output_paths)
        row = self.journal.write(item, Event.FINISHED, **fields)
        verdict = group.status + (
            f" (outputs: {fields['outputs_ok']})" if fields["outputs_ok"] else ""
        )
        self.journal.emit(
            EventKind.FINISHED,
            f"finished {describe(item.combo)}: job group {group.id} {verdict}",
            item,
            state=state_of(row),
            duration_s=row.duration_s,
        )

    async def cancel_open(self) -> None:
        """Cancel every group still open and record it (or how it ended, if it beat the cancel)."""
        for item, job_group_id in list(self.open.values()):
            if self.plans:
                # No documented cancel for a plan run: it goes on, and a resume waits on it.
                self.journal.emit(
                    EventKind.CANCELED,
                    f"{describe(item.combo)}: plan run {job_group_id} left running (a plan run "
                    "cannot be canceled through the API); a resume waits on it",
                    item,
                )
                continue
            if self.flows:
                await self._cancel_flow(item, job_group_id)
                continue
            try:
                job_ids = await self.client.cancel_job_group(job_group_id)
                group = await self.client.get_job_group(job_group_id)
            except ApiError as exc:
                self.journal.emit(
                    EventKind.CANCELED, f"{describe(item.combo)}: cancel failed: {exc}", item
                )
                continue
            if group.status in ("Complete", "Failed"):
                # It ended before the cancel arrived: record the real outcome, so a resume does
                # not run a finished combination again.
                await self.finish(item, group)
                continue
            self.open.pop(item.combo.combo_id, None)
            self.journal.write(
                item,
                Event.CANCELED,
                job_group_id=job_group_id,
                job_ids=job_ids or tuple(j.id for j in group.jobs),
                status=group.status or "Canceled",
                reason="canceled by sweeper on interrupt",
            )
            self.journal.emit(
                EventKind.CANCELED,
                f"{describe(item.combo)}: canceled job group {job_group_id}",
                item,
            )

    async def _cancel_flow(self, item: PlannedCombination, flow_run_id: int) -> None:
        """Cancel every job group of a flow run still open, and record it."""
        try:
            groups = await self.client.get_flow_run_job_groups(flow_run_id)
            for group in groups:
                if not group.terminal:
                    await self.client.cancel_job_group(group.id)
            groups = await self.client.get_flow_run_job_groups(flow_run_id)
        except ApiError as exc:
            self.journal.emit(
                EventKind.CANCELED, f"{describe(item.combo)}: cancel failed: {exc}", item
            )
            return
        if groups and all(g.status in ("Complete", "Failed") for g in groups):
            await self.finish_flow(item, flow_run_id, groups)  # it ended before the cancel
            return
        self.open.pop(item.combo.combo_id, None)
        self.journal.write(
            item,
            Event.CANCELED,
            flow_run_id=flow_run_id,
            job_group_id=groups[0].id if groups else None,
            job_group_ids=tuple(g.id for g in groups),
            job_ids=tuple(j.id for g in groups for j in g.jobs),
            status="Canceled",
            reason="canceled by sweeper on interrupt",
        )
        self.journal.emit(
            EventKind.CANCELED, f"{describe(item.combo)}: canceled flow run {flow_run_id}", item
        )
