"""In-process tests of the emulated v4 plan routes: run, plan snapshot runs, quota, oracle."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from sweeper.emulator import EmulatorSettings, create_app

try:
    from tests.emulator_server import FakeClock, asgi_client
except ImportError:  # pragma: no cover
    from emulator_server import FakeClock, asgi_client  # type: ignore[no-redef]


def run_with(
    tmp_path: Path,
    body: Callable[[httpx.AsyncClient, FakeClock], Awaitable[None]],
    **settings: Any,
) -> None:
    clock = FakeClock()
    app = create_app(EmulatorSettings(output_root=tmp_path, clock=clock, **settings))

    async def main() -> None:
        async with asgi_client(app) as client:
            await body(client, clock)

    asyncio.run(main())


def test_a_plan_run_starts_every_flow_output_and_ends_complete(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        r = await client.post("/v4/plans/5/run", headers={"x-execution-id": "p1"})
        assert r.status_code == 201, r.text
        run_id = r.json()["planSnapshotRunId"]
        assert r.headers["x-rate-limit-user-limit"] == "30"
        (oracle,) = (await client.get("/_emulator/planRuns")).json()["data"]
        assert oracle["id"] == run_id and oracle["executionId"] == "p1"
        assert len(oracle["jobGroupIds"]) == 4  # flows 12 and 13: two recipes each
        first = (await client.get(f"/v4/planSnapshotRuns/{run_id}")).json()
        assert first["plan"] == {"id": 5} and first["status"] not in ("Complete", "Failed")
        again = await client.post("/v4/plans/5/run", headers={"x-execution-id": "p1"})
        assert again.status_code == 304 and again.content == b""
        clock.advance(3600)
        done = (await client.get(f"/v4/planSnapshotRuns/{run_id}")).json()
        assert done["status"] == "Complete" and done["finishedAt"]
        listed = (await client.get("/v4/planSnapshotRuns", params={"limit": 5})).json()
        assert [x["id"] for x in listed["data"]] == [run_id]
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["plan_runs_created"] == 1 and stats["plan_posts_received"] == 2
        assert (await client.post("/v4/plans/999/run")).status_code == 404
        assert (await client.get("/v4/planSnapshotRuns/999999")).status_code == 404

    run_with(tmp_path, body)


def test_run_plan_quota_is_its_own_bucket(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        for _i in range(30):
            r = await client.post("/v4/plans/5/run")
            assert r.status_code == 201, r.text
        assert r.headers["x-rate-limit-user-remaining"] == "0"
        refused = await client.post("/v4/plans/5/run")
        assert refused.status_code == 429
        assert int(refused.headers["x-retry-after"]) >= 1
        assert refused.headers["x-rate-limit-user-limit"] == "30"
        assert '"runPlan"' in refused.json()["exception"]["details"]
        # 120 job groups started by plans, yet the runJobGroup and runFlow buckets are untouched.
        group = await client.post("/v4/jobGroups", json={"wrangledDataset": {"id": 7}})
        assert group.status_code == 201
        assert group.headers["x-rate-limit-user-remaining"] == "29"
        flow = await client.post("/v4/flows/13/run")
        assert flow.headers["x-rate-limit-user-remaining"] == "19"
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["served_429_run_plan"] == 1 and stats["plan_runs_created"] == 30

    run_with(tmp_path, body, plan_quota_workspace_per_min=0)
