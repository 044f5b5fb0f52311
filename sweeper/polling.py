"""Status polls for many job groups: aligned in time and batched into one listing.

Each waiting job group polls on its own backoff schedule (``pacing.poll_delays``). Two things keep
the platform's load low when hundreds of groups wait at once:

- ``pacing.aligned_delay`` rounds each poll time up to a shared grid (a quarter of the delay), so
  groups submitted a few seconds apart come due together;
- ``StatusPoller`` answers asks that come due together from one ``GET /v4/jobGroups`` listing
  (newest first) where the API has one, and falls back to one ``GET /v4/jobGroups/{id}`` for a
  group the page does not hold. Editions without the listing (Legacy/Standard Dataprep answer it
  with 403/404) turn batching off for the rest of the run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sweeper.client import DataprepClient, JobGroupState
from sweeper.errors import ApiError, ApiRejectedError, AuthError
from sweeper.pacing import Pacer

MAX_PAGE = 100  # the most groups one listing asks for


class StatusPoller:
    """``await get(id)`` for many pollers; asks that arrive together share one listing."""

    def __init__(
        self,
        client: DataprepClient,
        gate: Pacer,
        *,
        window: float = 0.05,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.gate = gate
        self.window = window  # how long the first ask waits for others to join its batch
        self.clock = clock
        self.batching = True
        self.listings = 0  # GET /v4/jobGroups sent
        self.gets = 0  # GET /v4/jobGroups/{id} sent
        self._waiting: dict[int, list[asyncio.Future[JobGroupState]]] = {}
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
        for gid, futures in waiting.items():
            answer = answers[gid]
            for future in futures:
                if future.done():
                    continue
                if isinstance(answer, BaseException):
                    future.set_exception(answer)
                else:
                    future.set_result(answer)

    async def _list(
        self, waiting: dict[int, list[asyncio.Future[JobGroupState]]]
    ) -> dict[int, JobGroupState]:
        limit = min(MAX_PAGE, max(25, 2 * len(waiting)))
        try:
            await self.gate.acquire()
            self.listings += 1
            groups = await self.client.list_job_groups(limit=limit, sort="-createdAt")
        except AuthError:
            return {}  # each group's own GET reports it
        except ApiRejectedError:
            self.batching = False  # no listing on this edition: poll one by one from now on
            return {}
        except ApiError:
            return {}  # a passing failure: this round polls one by one
        return {g.id: g for g in groups if g.id in waiting}
