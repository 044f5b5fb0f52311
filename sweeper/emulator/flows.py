"""The v4 flow routes: POST /v4/flows/{id}/run and GET /v4/flowRuns/{id}[/status|/jobGroups].

A flow run starts one job group per recipe output of the flow (or of ``wrangledDatasetIds``), in
one transaction, each built as the runJobGroup body that recipe would get: the flow's run
parameters, ``execution``, and the per-recipe ``overrides`` found by recipe name. The runFlow
quota is its own bucket (20 per user, 40 per workspace per minute), apart from runJobGroup's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sweeper.emulator.catalog import UnsafeSourceError
from sweeper.emulator.engine import TERMINAL, iso
from sweeper.emulator.http import not_found, user_key, validation_failed
from sweeper.emulator.posting import run_post
from sweeper.emulator.store import Store, dumps
from sweeper.emulator.validation import check_overrides, check_types, parse_body, run_parameters_of

if TYPE_CHECKING:
    from sweeper.emulator.app import Emulator


def _emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    emulator.engine.advance_due()
    return emulator


def _id(request: Request) -> int:
    raw = request.path_params["id"]
    try:
        value = int(raw)
    except ValueError:
        raise validation_failed(f"The id must be an integer, got {raw!r}.") from None
    if not 0 <= value < 2**63:
        raise not_found(f"No object has the id {raw}.")
    return value


def _recipe_bodies(emulator: Emulator, flow_id: int, body: dict[str, Any]) -> list[Any]:
    """(dataset, runJobGroup body, run parameters) for each job group the run starts, or 400."""
    flow = emulator.flows.get(flow_id)
    if flow is None:
        raise not_found(f"Flow with id {flow_id} does not exist.")
    check_types(body)
    given = run_parameters_of(body)
    wanted = body.get("wrangledDatasetIds")
    recipes = list(flow.recipes)
    if wanted is not None:
        if not isinstance(wanted, list) or not all(
            isinstance(w, int) and not isinstance(w, bool) for w in wanted
        ):
            raise validation_failed('"wrangledDatasetIds" must be a list of integer ids.')
        unknown = [w for w in wanted if w not in flow.recipes]
        if unknown or not wanted:
            raise validation_failed(
                f"wrangledDatasetIds {unknown or wanted} are not outputs of flow {flow_id}; "
                f"its outputs are {list(flow.recipes)}."
            )
        recipes = [r for r in flow.recipes if r in wanted]
    overrides = body.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise validation_failed('"overrides" must be an object keyed by recipe name.')
    names = {emulator.catalog[r].name: r for r in flow.recipes}
    strange = sorted(set(overrides) - set(names))
    if strange:
        raise validation_failed(
            f"overrides name no recipe of flow {flow_id}: {', '.join(strange)}; its recipes are "
            f"{', '.join(names)}."
        )
    out = []
    for recipe in recipes:
        dataset = emulator.catalog[recipe]
        own = overrides.get(dataset.name) or {}
        if not isinstance(own, dict):
            raise validation_failed(f'"overrides.{dataset.name}" must be an object.')
        merged = dict(own)
        if body.get("execution") is not None:
            merged.setdefault("execution", body["execution"])
        group_body: dict[str, Any] = {"wrangledDataset": {"id": recipe}}
        if merged:
            group_body["overrides"] = merged
        if body.get("runParameters") is not None:
            group_body["runParameters"] = body["runParameters"]
        check_overrides(group_body)
        try:
            dataset.source_path(dict(dataset.parameters) | dict(given))
        except UnsafeSourceError as exc:
            raise validation_failed(str(exc)) from None
        out.append((dataset, group_body, given))
    return out


def _new_flow_run(
    emulator: Emulator, request: Request, raw: bytes, who: str
) -> dict[str, Any] | None:
    """runFlow's own part of the POST (posting.run_post): validation, then 304 or the flow run
    with one job group per recipe output."""
    flow_id = _id(request)
    body = parse_body(raw) if raw.strip() else {}  # the body is optional
    planned = _recipe_bodies(emulator, flow_id, body)
    execution_id = request.headers.get("x-execution-id") or None
    started = start_run(emulator, "flow", flow_id, execution_id, body, planned, who)
    if started is None:
        return None
    run_id, groups = started
    data = [{**group, "flowRun": {"id": run_id}} for group in groups]
    return {"flowRunId": run_id, "data": data}


async def run_flow(request: Request) -> Response:
    """runFlow: the run POST path of posting.py around one new flow run."""
    emulator = _emulator(request)
    return await run_post(
        request,
        emulator,
        quota=emulator.flow_quota,
        received="flow_posts_received",
        creates="the flow run",
        create=_new_flow_run,
    )


def start_run(
    emulator: Emulator,
    kind: Literal["flow", "plan"],
    target_id: int,
    execution_id: str | None,
    body: Mapping[str, Any],
    planned: list[Any],
    who: str,
) -> tuple[int, list[dict[str, Any]]] | None:
    """A flow or plan run and one job group per planned recipe body, in one transaction: the
    run id and the groups, or None when the execution id was used before (answer 304)."""
    store, engine = emulator.store, emulator.engine
    runs, groups_table = f"{kind}_runs", f"{kind}_run_groups"  # fixed names, never user input
    with store.transaction() as conn:  # lookup and inserts in one IMMEDIATE transaction
        if execution_id is not None:
            seen = conn.execute(
                f"SELECT id FROM {runs} WHERE execution_id = ?", (execution_id,)
            ).fetchone()
            if seen is not None:
                store.bump(conn, "served_304")
                return None
        now = engine.now()
        run_id = Store.next_id(conn)
        conn.execute(
            f"INSERT INTO {runs} (id, {kind}_id, execution_id, body, created_at, user_key) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (run_id, target_id, execution_id, dumps(body), now, who),
        )
        created = []
        for seq, (dataset, group_body, given) in enumerate(planned):
            result = engine.create(
                conn,
                dataset=dataset,
                body=group_body,
                given=given,
                execution_id=None,  # the run holds the execution id
                user_key=who,
                now=now,
            )
            conn.execute(
                f"INSERT INTO {groups_table} ({kind}_run_id, group_id, seq) VALUES (?, ?, ?)",
                (run_id, result["id"], seq),
            )
            created.append(result)
            store.bump(conn, "created")
        store.bump(conn, f"{kind}_runs_created")
    return run_id, created


def _flow_run(emulator: Emulator, run_id: int) -> tuple[Any, list[tuple[Any, list[Any]]]]:
    """The flow run row and its (group, jobs) pairs in start order, or 404."""
    rows = emulator.store.query("SELECT * FROM flow_runs WHERE id = ?", (run_id,))
    if not rows:
        raise not_found(f"FlowRun with id {run_id} does not exist.")
    groups = []
    for row in emulator.store.query(
        "SELECT group_id FROM flow_run_groups WHERE flow_run_id = ? ORDER BY seq", (run_id,)
    ):
        group_id = int(row[0])
        emulator.engine.advance(group_id)
        group = emulator.store.group(group_id)
        groups.append((group, emulator.store.jobs(group_id)))
    return rows[0], groups


def flow_run_status(emulator: Emulator, groups: list[tuple[Any, list[Any]]]) -> str:
    """Created until a group starts, then InProgress (a value outside the published enum,
    which clients must treat as running), then Failed / Canceled / Complete."""
    now = emulator.engine.now()
    statuses = [emulator.engine.group_status(g, j, now) for g, j in groups]
    if all(s == "Created" for s in statuses):
        return "Created"
    if not all(s in TERMINAL for s in statuses):
        return "InProgress"
    for verdict in ("Failed", "Canceled"):
        if verdict in statuses:
            return verdict
    return "Complete"


async def get_flow_run(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("get")
    user_key(request, emulator.settings.token)
    row, groups = _flow_run(emulator, _id(request))
    created = float(row["created_at"])
    moments = [created] + [
        float(j["finished_at"]) for _, jobs in groups for j in jobs if j["finished_at"] is not None
    ]
    return JSONResponse(
        {
            "id": int(row["id"]),
            "flow": {"id": int(row["flow_id"])},
            "status": flow_run_status(emulator, groups),
            "createdAt": iso(created),
            "updatedAt": iso(max(moments)),
            "runParameters": json.loads(row["body"]).get("runParameters"),
        }
    )


async def get_flow_run_status(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("status")
    user_key(request, emulator.settings.token)
    _, groups = _flow_run(emulator, _id(request))
    return JSONResponse(flow_run_status(emulator, groups))


async def get_flow_run_job_groups(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("list")
    user_key(request, emulator.settings.token)
    _, groups = _flow_run(emulator, _id(request))
    now = emulator.engine.now()
    data = [emulator.engine.group_json(g, j, now, {"jobs"}) for g, j in groups]
    return JSONResponse({"data": data, "count": len(data)})
