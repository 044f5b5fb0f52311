"""In-process tests of the emulated v4 flow routes: run, flow runs, quota, oracle."""

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

PARAMS = {"runParameters": {"overrides": {"data": [{"key": "Region", "value": "02"}]}}}


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


def test_a_flow_run_starts_one_job_group_per_recipe_and_ends_complete(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        r = await client.post("/v4/flows/12/run", json=PARAMS, headers={"x-execution-id": "x1"})
        assert r.status_code == 201, r.text
        data = r.json()
        run_id = data["flowRunId"]
        groups = [g["id"] for g in data["data"]]
        assert len(groups) == 2
        for g in data["data"]:
            assert g["reason"] == "JobStarted" and g["jobs"]["data"] and g["sessionId"]
        assert (await client.get(f"/v4/flowRuns/{run_id}/status")).json() == "Created"
        clock.advance(60)
        assert (await client.get(f"/v4/flowRuns/{run_id}/status")).json() == "Complete"
        listed = (await client.get(f"/v4/flowRuns/{run_id}/jobGroups")).json()["data"]
        assert [g["id"] for g in listed] == groups
        assert {g["wrangledDataset"]["id"] for g in listed} == {33, 1}
        assert all(g["flowRun"] == {"id": run_id} for g in listed)
        assert all(g["status"] == "Complete" for g in listed)
        run = (await client.get(f"/v4/flowRuns/{run_id}")).json()
        assert run["id"] == run_id and run["flow"] == {"id": 12} and run["status"] == "Complete"
        again = await client.post("/v4/flows/12/run", json=PARAMS, headers={"x-execution-id": "x1"})
        assert again.status_code == 304
        oracle = (await client.get("/_emulator/flowRuns")).json()["data"]
        assert [(o["id"], o["jobGroupIds"]) for o in oracle] == [(run_id, groups)]
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["flow_runs_created"] == 1 and stats["created"] == 2

    run_with(tmp_path, body)


def test_wrangled_dataset_ids_and_overrides_by_recipe_name(tmp_path: Path) -> None:
    request = {
        **PARAMS,
        "wrangledDatasetIds": [33],
        "overrides": {
            "POS-regions": {
                "profiler": True,
                "writesettings": [{"path": "out/a.csv", "action": "create", "format": "csv"}],
            }
        },
    }

    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        r = await client.post("/v4/flows/12/run", json=request)
        assert r.status_code == 201, r.text
        (group,) = r.json()["data"]
        listed = (await client.get("/_emulator/jobGroups")).json()["data"]
        assert [g["wrangledDataset"]["id"] for g in listed] == [33]
        assert listed[0]["overrides"]["writesettings"][0]["path"] == "out/a.csv"
        assert len(group["jobs"]["data"]) == 3  # wrangle, one file writer, profile
        bad = await client.post("/v4/flows/12/run", json={"wrangledDatasetIds": [7]})
        assert bad.status_code == 400
        bad = await client.post("/v4/flows/12/run", json={"overrides": {"nope": {}}})
        assert bad.status_code == 400 and "POS-regions" in bad.text
        assert (await client.post("/v4/flows/999/run")).status_code == 404

    run_with(tmp_path, body)


def test_run_flow_quota_is_its_own_bucket(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        for _i in range(20):
            r = await client.post("/v4/flows/13/run")
            assert r.status_code == 201, r.text
        assert r.headers["x-rate-limit-user-limit"] == "20"
        assert r.headers["x-rate-limit-user-remaining"] == "0"
        refused = await client.post("/v4/flows/13/run")
        assert refused.status_code == 429
        assert int(refused.headers["x-retry-after"]) >= 1
        assert '"runFlow"' in refused.json()["exception"]["details"]
        # 40 job groups started by flows, yet runJobGroup's own quota is untouched.
        group = await client.post("/v4/jobGroups", json={"wrangledDataset": {"id": 7}})
        assert group.status_code == 201
        assert group.headers["x-rate-limit-user-remaining"] == "29"
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["served_429_run_flow"] == 1 and stats["flow_runs_created"] == 20

    run_with(tmp_path, body)
