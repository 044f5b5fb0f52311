"""The test-only admin surface under /_emulator/: what was really created, and counters.

No authentication: never expose an emulator with real data on a shared network.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route


def _emulator(request: Request) -> Any:
    return request.app.state.emulator


async def oracle_job_groups(request: Request) -> Response:
    """Every job group ever created (since the last reset), oldest first."""
    emulator = _emulator(request)
    rows = emulator.store.query("SELECT id FROM job_groups ORDER BY id")
    data = []
    for row in rows:
        group_id = int(row["id"])
        emulator.engine.advance(group_id)
        group = emulator.store.group(group_id)
        jobs = emulator.store.jobs(group_id)
        body = json.loads(group["body"])
        data.append(
            {
                "id": group_id,
                "executionId": group["execution_id"],
                "wrangledDataset": {"id": group["dataset_id"]},
                "runParameters": body.get("runParameters"),
                "overrides": body.get("overrides"),
                "params": json.loads(group["params"]),
                "createdAt": group["created_at"],
                "status": emulator.engine.group_status(group, jobs, emulator.engine.now()),
                "jobIds": [int(j["id"]) for j in jobs],
            }
        )
    return JSONResponse({"data": data, "count": len(data)})


async def oracle_flow_runs(request: Request) -> Response:
    """Every flow run ever created (since the last reset), oldest first, with its job groups."""
    emulator = _emulator(request)
    data = []
    for row in emulator.store.query("SELECT * FROM flow_runs ORDER BY id"):
        groups = emulator.store.query(
            "SELECT group_id FROM flow_run_groups WHERE flow_run_id = ? ORDER BY seq", (row["id"],)
        )
        data.append(
            {
                "id": int(row["id"]),
                "flowId": int(row["flow_id"]),
                "executionId": row["execution_id"],
                "body": json.loads(row["body"]),
                "createdAt": row["created_at"],
                "jobGroupIds": [int(g[0]) for g in groups],
            }
        )
    return JSONResponse({"data": data, "count": len(data)})


async def oracle_plan_runs(request: Request) -> Response:
    """Every plan snapshot run ever created (since the last reset), oldest first."""
    emulator = _emulator(request)
    data = []
    for row in emulator.store.query("SELECT * FROM plan_runs ORDER BY id"):
        groups = emulator.store.query(
            "SELECT group_id FROM plan_run_groups WHERE plan_run_id = ? ORDER BY seq", (row["id"],)
        )
        data.append(
            {
                "id": int(row["id"]),
                "planId": int(row["plan_id"]),
                "executionId": row["execution_id"],
                "body": json.loads(row["body"]),
                "createdAt": row["created_at"],
                "jobGroupIds": [int(g[0]) for g in groups],
            }
        )
    return JSONResponse({"data": data, "count": len(data)})


async def oracle_stats(request: Request) -> Response:
    """Counters tests and benchmarks rely on; the names are stable (docs/emulator.md)."""
    store = _emulator(request).store
    counters = store.counters()
    by_exec = store.query(
        "SELECT execution_id, count(*) AS n FROM job_groups WHERE execution_id IS NOT NULL "
        "GROUP BY execution_id HAVING n > 1"
    )
    by_params = store.query(
        "SELECT dataset_id, params_key, count(*) AS n FROM job_groups "
        "GROUP BY dataset_id, params_key HAVING n > 1"
    )
    created = int(store.query("SELECT count(*) FROM job_groups")[0][0])
    duplicates = {f"{r['dataset_id']}|{r['params_key']}": int(r["n"]) for r in by_params}
    return JSONResponse(
        {
            "posts_received": counters.get("posts_received", 0),
            "created": created,
            "duplicates_by_execution_id": {str(r["execution_id"]): int(r["n"]) for r in by_exec},
            "creations_by_params": duplicates,
            "duplicate_creations_by_params": sum(n - 1 for n in duplicates.values()),
            "served_304": counters.get("served_304", 0),
            "served_429": counters.get("served_429", 0),
            "flow_posts_received": counters.get("flow_posts_received", 0),
            "flow_runs_created": int(store.query("SELECT count(*) FROM flow_runs")[0][0]),
            "served_429_run_flow": counters.get("served_429:runFlow", 0),
            "plan_posts_received": counters.get("plan_posts_received", 0),
            "plan_runs_created": int(store.query("SELECT count(*) FROM plan_runs")[0][0]),
            "served_429_run_plan": counters.get("served_429:runPlan", 0),
            "oauth_refreshes": counters.get("oauth_refreshes", 0),
            "oauth_refreshes_refused": counters.get("oauth_refreshes_refused", 0),
            "faults_served": {
                name.split(":", 1)[1]: value
                for name, value in sorted(counters.items())
                if name.startswith("fault:")
            },
        }
    )


async def oracle_reset(request: Request) -> Response:
    """Forget every group, job, counter and quota event (ids keep growing)."""
    _emulator(request).store.reset()
    return JSONResponse({"reset": True})


def oracle_routes() -> list[BaseRoute]:
    return [
        Route("/_emulator/jobGroups", oracle_job_groups, methods=["GET"]),
        Route("/_emulator/flowRuns", oracle_flow_runs, methods=["GET"]),
        Route("/_emulator/planRuns", oracle_plan_runs, methods=["GET"]),
        Route("/_emulator/stats", oracle_stats, methods=["GET"]),
        Route("/_emulator/reset", oracle_reset, methods=["POST"]),
    ]
