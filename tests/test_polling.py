"""Status polls: on one run-wide tick, and batched into job-library pages where the API allows."""

from __future__ import annotations

import asyncio
import collections
import json
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

import sweeper
from sweeper.client import DataprepClient, JobGroupState
from sweeper.config import load_config
from sweeper.emulator import EmulatorSettings, create_app
from sweeper.ledger import Event, read_ledger
from sweeper.pacing import Pacer
from sweeper.polling import MAX_PAGE, StatusPoller
from tests.conftest import FAST_RUN


class Counting(httpx.AsyncBaseTransport):
    """Counts requests per (method, path shape) on their way to the in-process emulator."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        *,
        list_status: int | None = None,
        missing: tuple[str, ...] = ("/v4/jobGroups",),
    ) -> None:
        self.inner = inner
        self.list_status = list_status  # answer the paths in `missing` with this status instead
        self.missing = missing
        self.counts: collections.Counter[str] = collections.Counter()
        self.queries: list[httpx.QueryParams] = []  # of GET /v4/jobLibrary
        self.listed_at: list[float] = []  # wall-clock times of GET /v4/jobLibrary

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        shape = re.sub(r"/\d+", "/{id}", request.url.path)
        self.counts[f"{request.method} {shape}"] += 1
        if shape == "/v4/jobLibrary":
            self.queries.append(request.url.params)
            self.listed_at.append(time.time())
        if self.list_status and request.method == "GET" and shape in self.missing:
            body = {"exception": {"name": "RouteNotFoundException", "message": "no", "details": ""}}
            return httpx.Response(self.list_status, json=body)
        return await self.inner.handle_async_request(request)


def _sweep(
    write_config: Callable[[str], Path], *, rate: str = "60000/min", poll_interval: str = "0.2s"
) -> Path:
    """12 combinations, submitted together at the default rate."""
    run = FAST_RUN.replace('rate = "600/min"', f'rate = "{rate}"')
    return write_config(
        """
        [sweep]
        name = "poll"
        dataset = 33
        [matrix]
        Region = ["01", "02", "03", "04", "05", "06"]
        varReferenceType = ["PROD", "TEST"]
        """
        + run.replace('poll_interval = "0.2s"', f'poll_interval = "{poll_interval}"')
    )


def _run(path: Path, transport: Counting) -> Any:
    """A sweep through ``sweeper.run`` over ``transport``: (summary, the ledger's rows)."""
    summary = sweeper.run(path, run_id="r", environ={}, transport=transport)
    return summary, read_ledger(load_config(path).sweep.ledger)


def test_groups_that_come_due_together_share_one_listing(write_config: Any, tmp_path: Path) -> None:
    transport = Counting(
        httpx.ASGITransport(app=create_app(EmulatorSettings(output_root=tmp_path)))
    )
    summary, rows = _run(_sweep(write_config), transport)
    assert summary.succeeded == 12
    assert sum(1 for r in rows if r.event is Event.FINISHED) == 12
    listings = transport.counts["GET /v4/jobLibrary"]
    singles = transport.counts["GET /v4/jobGroups/{id}"]
    assert listings >= 1
    assert transport.counts["GET /v4/jobGroups"] == 0  # the deprecated listing is not needed
    # Every page is narrowed to the run's time window.
    assert all("dateFilter[createdAt][gte]" in q for q in transport.queries)
    # Without batching every group needs at least one GET of its own to be seen ending.
    assert singles < 12


def test_a_sweep_reads_every_status_on_one_run_wide_tick(write_config: Any, tmp_path: Path) -> None:
    tick = 0.5
    path = _sweep(write_config, rate="12/s", poll_interval=f"{tick}s")  # submitted apart
    transport = Counting(
        httpx.ASGITransport(app=create_app(EmulatorSettings(output_root=tmp_path)))
    )
    summary, _ = _run(path, transport)
    assert summary.succeeded == 12
    # Groups submitted apart are read together: at most one job-library page on each tick of
    # the run's clock (a page holds all 12), however many groups are open.
    ticks = [math.floor(t / tick) for t in transport.listed_at]
    assert ticks and len(ticks) == len(set(ticks))
    assert transport.counts["GET /v4/jobGroups/{id}"] < 12


def test_without_a_listing_batching_turns_off_and_every_group_is_polled(
    write_config: Any, tmp_path: Path
) -> None:
    inner = httpx.ASGITransport(app=create_app(EmulatorSettings(output_root=tmp_path)))
    # A Legacy/Standard edition: neither the job library nor the listing
    transport = Counting(inner, list_status=404, missing=("/v4/jobGroups", "/v4/jobLibrary"))
    summary, _ = _run(_sweep(write_config), transport)
    assert summary.succeeded == 12
    assert transport.counts["GET /v4/jobLibrary"] == 1  # tried once, then never again
    assert transport.counts["GET /v4/jobGroups"] == 1
    assert transport.counts["GET /v4/jobGroups/{id}"] >= 12


class Bearer(httpx.Auth):
    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = "Bearer test-token"
        yield request


def _client(tmp_path: Path) -> DataprepClient:
    settings = EmulatorSettings(
        output_root=tmp_path, quota_user_per_min=0, quota_workspace_per_min=0
    )
    app = create_app(settings)
    return DataprepClient("http://emulator", transport=httpx.ASGITransport(app=app), auth=Bearer())


def test_poller_answers_each_waiter_and_falls_back_for_groups_off_the_page(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[list[int], list[int], StatusPoller]:
        async with _client(tmp_path) as client:
            ids = []
            for i in range(MAX_PAGE + 30):
                sub = await client.create_job_group(
                    {"wrangledDataset": {"id": 7}}, execution_id=f"x{i}"
                )
                assert sub.job_group_id is not None
                ids.append(sub.job_group_id)
            poller = StatusPoller(client, Pacer(1, 0.001, sleep=asyncio.sleep, margin=0.0))
            # The oldest group is not on the first (newest-first) page of a busy workspace.
            asked = [ids[0], ids[-1], ids[-2]]
            states = await asyncio.gather(*(poller.get(i) for i in asked))
            return asked, [s.id for s in states], poller

    asked, got, poller = asyncio.run(main())
    assert got == asked
    # The oldest group is on the second job-library page: pages, not a GET per group.
    assert poller.listings == 2
    assert poller.gets == 0


def test_a_single_waiter_is_not_batched(tmp_path: Path) -> None:
    async def main() -> StatusPoller:
        async with _client(tmp_path) as client:
            sub = await client.create_job_group({"wrangledDataset": {"id": 7}}, execution_id="1")
            assert sub.job_group_id is not None
            poller = StatusPoller(client, Pacer(1, 0.001, sleep=asyncio.sleep, margin=0.0))
            assert (await poller.get(sub.job_group_id)).id == sub.job_group_id
            return poller

    poller = asyncio.run(main())
    assert (poller.listings, poller.gets) == (0, 1)


def test_an_ask_arriving_while_a_batch_is_on_the_wire_is_answered(tmp_path: Path) -> None:
    """The next round picks it up: no poller is ever left waiting (this once hung a run)."""

    class Slow(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(0.2)  # every request takes a while on the wire
            return await self.inner.handle_async_request(request)

    app = create_app(EmulatorSettings(output_root=tmp_path))
    transport = Slow(httpx.ASGITransport(app=app))

    async def main() -> tuple[list[int], list[int]]:
        async with DataprepClient("http://e", transport=transport, auth=Bearer()) as client:
            ids = []
            for i in range(3):
                sub = await client.create_job_group(
                    {"wrangledDataset": {"id": 7}}, execution_id=f"w{i}"
                )
                assert sub.job_group_id is not None
                ids.append(sub.job_group_id)
            poller = StatusPoller(
                client, Pacer(1, 0.001, sleep=asyncio.sleep, margin=0.0), window=0.01
            )
            first = [asyncio.ensure_future(poller.get(i)) for i in ids[:2]]
            await asyncio.sleep(0.1)  # the first batch has left its window and is on the wire
            late = asyncio.ensure_future(poller.get(ids[2]))
            states = await asyncio.wait_for(asyncio.gather(*first, late), timeout=10)
            return ids, [s.id for s in states]

    ids, got = asyncio.run(main())
    assert got == ids


def _submit(client: DataprepClient, count: int) -> Any:
    async def go() -> list[int]:
        ids = []
        for i in range(count):
            sub = await client.create_job_group(
                {"wrangledDataset": {"id": 7}}, execution_id=f"m{i}"
            )
            assert sub.job_group_id is not None
            ids.append(sub.job_group_id)
        return ids

    return go()


def _slow_app(tmp_path: Path) -> Any:
    """An emulator whose jobs stay open long enough to be polled many times."""
    settings = EmulatorSettings(
        output_root=tmp_path,
        quota_user_per_min=0,
        quota_workspace_per_min=0,
        created_seconds=3600.0,
    )
    return create_app(settings)


def test_polls_of_many_open_groups_cost_job_library_pages_not_a_get_each(tmp_path: Path) -> None:
    transport = Counting(httpx.ASGITransport(app=_slow_app(tmp_path)))

    async def main() -> tuple[list[int], list[JobGroupState], StatusPoller]:
        async with DataprepClient("http://e", transport=transport, auth=Bearer()) as client:
            ids = await _submit(client, 230)
            poller = StatusPoller(client, Pacer(1, 0.0001, sleep=asyncio.sleep, margin=0.0))
            states = await asyncio.gather(*(poller.get(i) for i in ids))
            return ids, list(states), poller

    ids, states, poller = asyncio.run(main())
    assert [s.id for s in states] == ids
    assert all(not s.terminal for s in states)
    assert poller.gets == 0
    assert transport.counts["GET /v4/jobGroups/{id}"] == 0
    assert 3 <= transport.counts["GET /v4/jobLibrary"] == poller.listings <= 4  # 100 a page
    assert transport.counts["GET /v4/jobGroups"] == 0


class Hiding(httpx.AsyncBaseTransport):
    """Shows one job group as another (an id nobody asks about) on every job-library page: a group
    the listing does not show, on pages as long as ever."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.hidden: int | None = None
        self.pages = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.url.path != "/v4/jobLibrary":
            return response
        self.pages += 1
        body = json.loads(await response.aread())
        for group in body["data"]:
            if group["id"] == self.hidden:
                group["id"] = 10**9
        return httpx.Response(response.status_code, json=body)


def test_a_round_reads_pages_no_deeper_than_its_oldest_group(tmp_path: Path) -> None:
    transport = Hiding(httpx.ASGITransport(app=_slow_app(tmp_path)))

    async def main() -> tuple[int, int, StatusPoller]:
        async with DataprepClient("http://e", transport=transport, auth=Bearer()) as client:
            ids = await _submit(client, 3 * MAX_PAGE + 50)
            poller = StatusPoller(client, Pacer(1, 0.0001, sleep=asyncio.sleep, margin=0.0))
            hidden = ids[2 * MAX_PAGE]  # on the second page, newest first
            transport.hidden = hidden
            await asyncio.gather(*(poller.get(i) for i in ids))  # learns every createdAt
            before = transport.pages
            newest = ids[-20:]
            states = await asyncio.gather(*(poller.get(i) for i in [hidden, *newest]))
            assert [s.id for s in states] == [hidden, *newest]
            return before, transport.pages - before, poller

    first, second, poller = asyncio.run(main())
    assert first == 4  # 350 groups: every page, down to the short one
    # The hidden group is not on any page: the round stops at the page that ends before its
    # creation time (the second), not at the last one, and reads it by id.
    assert second == 2
    assert poller.gets == 2  # the hidden group, once a round


def test_without_the_job_library_polls_fall_back_to_the_listing(tmp_path: Path) -> None:
    # An older on-prem release: GET /v4/jobLibrary is 404, the deprecated listing works.
    inner = httpx.ASGITransport(app=_slow_app(tmp_path))
    transport = Counting(inner, list_status=404, missing=("/v4/jobLibrary",))

    async def main() -> tuple[list[int], list[JobGroupState], StatusPoller, bool | None]:
        async with DataprepClient("http://e", transport=transport, auth=Bearer()) as client:
            ids = await _submit(client, 20)
            poller = StatusPoller(client, Pacer(1, 0.0001, sleep=asyncio.sleep, margin=0.0))
            states = list(await asyncio.gather(*(poller.get(i) for i in ids)))
            states += await asyncio.gather(*(poller.get(i) for i in ids))  # a second round
            return ids, states, poller, client.job_library

    ids, states, poller, library = asyncio.run(main())
    assert [s.id for s in states] == ids + ids
    assert library is False  # remembered for this client
    assert transport.counts["GET /v4/jobLibrary"] == 1  # asked once, never again
    assert transport.counts["GET /v4/jobGroups"] == 2  # one listing page per round
    assert poller.batching and poller.gets == 0


def test_ended_groups_without_jobs_on_the_page_are_read_once_by_id(tmp_path: Path) -> None:
    """A job library that leaves jobs out: a finished group's job ids come from its own GET."""
    app = create_app(EmulatorSettings(output_root=tmp_path, quota_user_per_min=0))

    class NoJobs(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.ASGITransport(app=app)
            self.singles = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path == "/v4/jobLibrary":
                request.url = request.url.copy_set_param("embed", "wrangledDataset")
            elif re.fullmatch(r"/v4/jobGroups/\d+", request.url.path):
                self.singles += 1
            return await self.inner.handle_async_request(request)

    transport = NoJobs()

    async def main() -> list[JobGroupState]:
        async with DataprepClient("http://e", transport=transport, auth=Bearer()) as client:
            ids = await _submit(client, 3)
            poller = StatusPoller(client, Pacer(1, 0.0001, sleep=asyncio.sleep, margin=0.0))
            while True:
                states = await asyncio.gather(*(poller.get(i) for i in ids))
                if all(s.terminal for s in states):
                    return list(states)
                await asyncio.sleep(0.2)

    states = asyncio.run(main())
    assert all(s.jobs for s in states)  # each ended group carries its jobs
    assert transport.singles >= 3
