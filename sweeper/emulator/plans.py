"""The v4 plan routes: POST /v4/plans/{id}/run and GET /v4/planSnapshotRuns[/{id}].

A plan's tasks run flows. The emulator's model is the simplest faithful one: a plan snapshot run
starts every recipe output of every flow of the plan at once (one job group each, built as that
flow's run with an empty body would build it) and ends when they all end; its status is derived
like a flow run's. The runPlan quota is its own bucket (30 per user, 60 per workspace per
minute), apart from runJobGroup's and runFlow's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sweeper.emulator.engine import TERMINAL, iso
from sweeper.emulator.flows import (
    _emulator,
    _id,
    _recipe_bodies,
    flow_run_status,
    start_run,
)
from sweeper.emulator.http import not_found, parse_int, user_key
from sweeper.emulator.posting import run_post
from sweeper.emulator.validation import parse_body

if TYPE_CHECKING:
    from sweeper.emulator.app import Emulator


def _new_plan_run(
    emulator: Emulator, request: Request, raw: bytes, who: str
) -> dict[str, Any] | None:
    """runPlan's own part of the POST (posting.run_post): validation, then 304 or the plan
    snapshot run with one job group per recipe output of its flows."""
    plan_id = _id(request)
    body = parse_body(raw) if raw.strip() else {}  # the body is optional
    plan = emulator.plans.get(plan_id)
    if plan is None:
        raise not_found(f"Plan with id {plan_id} does not exist.")
    # Each flow task runs as that flow's run with no body: the plan's own settings.
    planned = [p for flow_id in plan.flows for p in _recipe_bodies(emulator, flow_id, {})]
    execution_id = request.headers.get("x-execution-id") or None
    started = start_run(emulator, "plan", plan_id, execution_id, body, planned, who)
    if started is None:
        return None
    run_id, _ = started
    return {"planSnapshotRunId": run_id}


async def run_plan(request: Request) -> Response:
    """runPlan: the run POST path of posting.py around one new plan snapshot run."""
    emulator = _emulator(request)
    return await run_post(
        request,
        emulator,
        quota=emulator.plan_quota,
        received="plan_posts_received",
        creates="the plan snapshot run",
        create=_new_plan_run,
    )


def _plan_run_json(emulator: Emulator, row: Any) -> dict[str, Any]:
    """A plan snapshot run as the API shows it: id, plan, status and timestamps."""
    groups = []
    for g in emulator.store.query(
        "SELECT group_id FROM plan_run_groups WHERE plan_run_id = ? ORDER BY seq", (row["id"],)
    ):
        group_id = int(g[0])
        emulator.engine.advance(group_id)
        groups.append((emulator.store.group(group_id), emulator.store.jobs(group_id)))
    status = flow_run_status(emulator, groups)
    created = float(row["created_at"])
    finished = [float(j["finished_at"]) for _, js in groups for j in js if j["finished_at"]]
    return {
        "id": int(row["id"]),
        "plan": {"id": int(row["plan_id"])},
        "status": status,
        "createdAt": iso(created),
        "updatedAt": iso(max([created, *finished])),
        "finishedAt": iso(max(finished)) if status in TERMINAL and finished else None,
    }


async def get_plan_run(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("status")
    user_key(request, emulator.settings.token)
    run_id = _id(request)
    rows = emulator.store.query("SELECT * FROM plan_runs WHERE id = ?", (run_id,))
    if not rows:
        raise not_found(f"PlanSnapshotRun with id {run_id} does not exist.")
    return JSONResponse(_plan_run_json(emulator, rows[0]))


async def list_plan_runs(request: Request) -> Response:
    """Plan snapshot runs, newest first (``limit``, ``offset``)."""
    emulator = _emulator(request)
    await emulator.delay("list")
    user_key(request, emulator.settings.token)
    limit = parse_int(request, "limit", 25, minimum=1, maximum=10_000)
    offset = parse_int(request, "offset", 0)
    rows = emulator.store.query(
        "SELECT * FROM plan_runs ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
        (limit, offset),
    )
    data = [_plan_run_json(emulator, r) for r in rows]
    return JSONResponse({"data": data, "count": len(data)})
