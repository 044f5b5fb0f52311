"""Status reads for many job groups, answered together from job-library pages.

When many groups wait at once, their reads land on one run-wide tick (``pacing.PollSchedule``)
and ``StatusPoller`` answers the reads that arrive together from pages of ``GET /v4/jobLibrary``
(newest first, narrowed by ``dateFilter[createdAt][gte]`` to the run's window), or of the
deprecated ``GET /v4/jobGroups`` listing where the job library answers 404 (older on-prem
releases; one page then, since the listing cannot be narrowed). A page holds up to 100 groups,
so a run with 100 groups open reads one page a tick. A group the pages do not hold gets one
``GET /v4/jobGroups/{id}``. Editions without either (Legacy/Standard Dataprep answer 403/404)
turn batching off for the rest of the run, and the groups' schedules back off instead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from sweeper.client import DataprepClient, JobGroupState
from sweeper.errors import ApiError, ApiRejectedError, AuthError
from sweeper.pacing import Pacer

MAX_PAGE = 100  # the most groups one listing asks for
MAX_PAGES = 10  # the most job-library pages one round reads; the rest are read one by one
CLOCK_SKEW = timedelta(minutes=5)  # the server's createdAt may run behind our clock


class StatusPoller:
    """``await get(id)`` for many pollers; asks that arrive together share job-library pages."""

    def __init__(
        self,
        client: DataprepClient,
        gate: Pacer,
        *,
        window: float = 0.05,
        clock: Callable[[], float] = time.time,
        since: datetime | None = None,
    ) -> None:
        self.client = client
        self.gate = gate
        self.window = window  # how long the first ask waits for others to join its batch
        self.clock = clock
        # Job groups polled here were created after this: the job library is narrowed to it.
        # Default: when the poller was made (a run makes it before submitting), less clock skew;
        # a group from before (a resumed run) is simply polled by id until its createdAt is seen.
        self.since = since or datetime.fromtimestamp(clock(), timezone.utc) - CLOCK_SKEW
        self.batching = True
        self.listings = 0  # pages of GET /v4/jobLibrary or GET /v4/jobGroups sent
        self.gets = 0  # GET /v4/jobGroups/{id} sent
        self._waiting: dict[int, list[asyncio.Future[JobGroupState]]] = {}
        self._created: dict[int, datetime] = {}  # createdAt of groups answered so far
        self._flusher: asyncio.Task[None] | None = None

    async def get(self, job_group_id: int) -> JobGroupState:
        if not self.batching:
            return await self._get_one(job_group_id)
        future: asyncio.Future[JobGroupState] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_group_id, []).append(future)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _get_one(self, job_group_id: int) -> JobGroupState:
        await self.gate.acquire()
        self.gets += 1
        return await self.client.get_job_group(job_group_id)

    async def _flush(self) -> None:
        # Loop: asks that arrive while a batch is on the wire are answered by the next round.
        while self._waiting:
            await asyncio.sleep(self.window)
            waiting, self._waiting = self._waiting, {}
            try:
                await self._answer(waiting)
            except BaseException as exc:  # never leave a poller waiting for an answer
                for futures in waiting.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                raise

    async def _answer(self, waiting: dict[int, list[asyncio.Future[JobGroupState]]]) -> None:
        found: dict[int, JobGroupState] = {}
        if len(waiting) >= 2 and self.batching:
            found = await self._list(waiting)
        missing = [gid for gid in waiting if gid not in found]
        results = await asyncio.gather(
            *(self._get_one(gid) for gid in missing), return_exceptions=True
        )
        answers: dict[int, JobGroupState | BaseException] = dict(found)
        answers.update(zip(missing, results, strict=True))
        for answer in answers.values():
            if isinstance(answer, JobGroupState):
                self._remember(answer)
        for gid, futures in waiting.items():
            answer = answers[gid]
            for future in futures:
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    def _window(self, waiting: dict[int, list[asyncio.Future[JobGroupState]]]) -> datetime:
        """The earliest creation time the waiting groups can have (widened by what was seen)."""
        seen = [self._created[gid] for gid in waiting if gid in self._created]
        return min([self.since, *(t - CLOCK_SKEW for t in seen)])

    def _remember(self, group: JobGroupState) -> None:
        created = _parse_time(group.created_at)
        if created is not None:
            self._created[group.id] = created

    async def _list(
        self, waiting: dict[int, list[asyncio.Future[JobGroupState]]]
    ) -> dict[int, JobGroupState]:
        since = self._window(waiting)
        found: dict[int, JobGroupState] = {}
        listed: set[int] = set()
        # Pages come newest first: once a page ends before the oldest creation time known among
        # the waiting groups, later pages hold none of those. Whole pages, since the groups
        # still open may be the run's oldest, behind many that ended.
        known = [self._created[gid] for gid in waiting if gid in self._created]
        oldest = min(known) if known else None
        limit = MAX_PAGE
        try:
            for page in range(MAX_PAGES):
                await self.gate.acquire()
                self.listings += 1
                groups = await self.client.recent_job_groups(
                    limit=limit, offset=page * limit, created_since=since
                )
                for group in groups:
                    if group.id not in waiting:
                        continue
                    listed.add(group.id)
                    # A page may leave jobs out: a group that ended is then read by id, once,
                    # so its job ids and errors are recorded.
                    if group.jobs or not group.terminal:
                        found[group.id] = group
                last = _parse_time(groups[-1].created_at) if groups else None
                if (
                    len(listed) == len(waiting)
                    or len(groups) < limit
                    or self.client.job_library is False  # the listing: newest page only
                    or (oldest is not None and last is not None and last < oldest)
                ):
                    break
        except AuthError:
            return found  # each group's own GET reports it
        except ApiRejectedError:
            self.batching = False  # no listing on this edition: poll one by one from now on
            return {}
        except ApiError:
            return found  # a passing failure: the rest of this round polls one by one
        return found


def _parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
