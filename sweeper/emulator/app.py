"""The v4 routes: job groups (run, get, status, jobs, cancel, outputs, list), job library, jobs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sweeper.emulator.catalog import (
    Dataset,
    Flow,
    Plan,
    UnsafeSourceError,
    load_catalog,
    load_flows,
    load_plans,
)
from sweeper.emulator.engine import Engine
from sweeper.emulator.faults import FaultInjector
from sweeper.emulator.flows import (
    get_flow_run,
    get_flow_run_job_groups,
    get_flow_run_status,
    run_flow,
)
from sweeper.emulator.http import (
    ApiProblem,
    EdgeMiddleware,
    http_error_handler,
    json_error_handler,
    not_found,
    parse_bool,
    parse_int,
    user_key,
    validation_failed,
)
from sweeper.emulator.oauth import OAuthIssuer, oauth_routes
from sweeper.emulator.openapi import openapi_route
from sweeper.emulator.oracle import oracle_routes
from sweeper.emulator.plans import get_plan_run, list_plan_runs, run_plan
from sweeper.emulator.posting import run_post
from sweeper.emulator.quota import Quota
from sweeper.emulator.settings import EmulatorSettings
from sweeper.emulator.store import Store
from sweeper.emulator.validation import (
    check_overrides,
    check_types,
    dataset_id_of,
    parse_body,
    run_parameters_of,
)

EMBEDS = ("jobs", "wrangledDataset", "creator", "updater", "workspace", "snapshot")
NESTED_EMBEDS = {
    "jobs.fileWriterJob.writeSetting": "jobs.writeSetting",
    "jobs.writeSetting": "jobs.writeSetting",
    "wrangledDataset.recipe": "wrangledDataset",
}
Endpoint = Callable[[Request], Awaitable[Response]]
SORTS = {
    "createdAt": "created_at ASC, id ASC",
    "-createdAt": "created_at DESC, id DESC",
    "id": "id ASC",
    "-id": "id DESC",
}


class Emulator:
    """Everything one app instance shares: settings, store, catalog, engine, faults, quota."""

    def __init__(self, settings: EmulatorSettings) -> None:
        self.settings = settings
        self.store = Store(settings.state_path)
        self.catalog: dict[int, Dataset] = load_catalog(settings.catalog_path)
        self.faults = FaultInjector(settings.faults, settings.seed)
        self.engine = Engine(settings, self.store, self.catalog, self.faults)
        self.quota = Quota(settings.quota_user_per_min, settings.quota_workspace_per_min)
        self.flows: dict[int, Flow] = load_flows(settings.catalog_path, self.catalog)
        self.flow_quota = Quota(
            settings.flow_quota_user_per_min, settings.flow_quota_workspace_per_min, "runFlow"
        )
        self.plans: dict[int, Plan] = load_plans(settings.catalog_path, self.flows)
        self.plan_quota = Quota(
            settings.plan_quota_user_per_min, settings.plan_quota_workspace_per_min, "runPlan"
        )

    async def delay(self, endpoint: str) -> None:
        seconds = self.faults.latency(endpoint)
        if seconds > 0:
            self.fault("latency")
            await asyncio.sleep(seconds)

    def fault(self, kind: str) -> None:
        self.store.count(f"fault:{kind}")


def _emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    emulator.engine.advance_due()  # lazy execution: any request runs the jobs that are due
    return emulator


def _embed(request: Request) -> set[str]:
    raw = request.query_params.get("embed", "")
    chosen: set[str] = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue  # Airflow sends embed= (empty)
        if item in EMBEDS:
            chosen.add(item)
        elif item in NESTED_EMBEDS:
            chosen |= {item.split(".")[0], NESTED_EMBEDS[item]}
        else:
            valid = ", ".join([*EMBEDS, *NESTED_EMBEDS])
            raise validation_failed(
                f"No association {item} in jobGroups! Valid associations are {valid}"
            )
    return chosen


def _fields(request: Request, data: dict[str, Any]) -> dict[str, Any]:
    raw = request.query_params.get("fields", "")
    wanted = {f.strip() for f in raw.split(";") if f.strip()}
    if not wanted:
        return data
    return {k: v for k, v in data.items() if k in wanted or k == "id"}


def _group_id(request: Request) -> int:
    raw = request.path_params["id"]
    try:
        value = int(raw)
    except ValueError:
        raise validation_failed(f"The id must be an integer, got {raw!r}.") from None
    if not 0 <= value < 2**63:  # SQLite integers are 64-bit; nothing can have such an id
        raise not_found(f"No object has the id {raw}.")
    return value


def _load(emulator: Emulator, group_id: int) -> tuple[sqlite3.Row, list[sqlite3.Row]]:
    emulator.engine.advance(group_id)
    group = emulator.store.group(group_id)
    if group is None:
        raise not_found(f"JobGroup with id {group_id} does not exist.")
    return group, emulator.store.jobs(group_id)


# POST /v4/jobGroups -------------------------------------------------------------------------


def _validated(
    emulator: Emulator, raw: bytes
) -> tuple[dict[str, Any], Dataset, list[tuple[str, str]]]:
    """The body, its recipe and its run parameters, or a 400 / 404 ApiProblem."""
    body = parse_body(raw)
    dataset_id = dataset_id_of(body)
    check_types(body)
    dataset = emulator.catalog.get(dataset_id)
    if dataset is None:
        raise not_found(f"WrangledDataset with id {dataset_id} does not exist.")
    given = run_parameters_of(body)
    check_overrides(body)
    try:  # refuse now what would make the wrangle job read outside the catalog's folder
        dataset.source_path(dict(dataset.parameters) | dict(given))
    except UnsafeSourceError as exc:
        raise validation_failed(str(exc)) from None
    if emulator.settings.strict_parameters:
        unknown = sorted({k for k, _ in given} - set(dataset.parameters))
        if unknown:
            raise validation_failed(
                f"Unknown run parameter(s) {', '.join(unknown)} for recipe {dataset_id}; "
                f"known: {', '.join(sorted(dataset.parameters)) or 'none'}."
            )
    return body, dataset, given


def _new_job_group(
    emulator: Emulator, request: Request, raw: bytes, who: str
) -> dict[str, Any] | None:
    """runJobGroup's own part of the POST (posting.run_post): validation, then 304 or the job
    group."""
    store, engine = emulator.store, emulator.engine
    body, dataset, given = _validated(emulator, raw)
    execution_id = request.headers.get("x-execution-id") or None
    with store.transaction() as conn:  # lookup and insert in one IMMEDIATE transaction
        if execution_id is not None:
            seen = conn.execute(
                "SELECT id FROM job_groups WHERE execution_id = ?", (execution_id,)
            ).fetchone()
            if seen is not None:
                store.bump(conn, "served_304")
                return None
        result = engine.create(
            conn,
            dataset=dataset,
            body=body,
            given=given,
            execution_id=execution_id,
            user_key=who,
            now=engine.now(),
        )
        store.bump(conn, "created")
    return result


async def create_job_group(request: Request) -> Response:
    """runJobGroup: the run POST path of posting.py around one new job group."""
    emulator = _emulator(request)
    return await run_post(
        request,
        emulator,
        quota=emulator.quota,
        received="posts_received",
        creates="the job group",
        create=_new_job_group,
    )


# reads ----------------------------------------------------------------------------------------


async def get_job_group(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("get")
    user_key(request, emulator.settings.token)
    embed = _embed(request)
    parse_bool("includeDeleted", request.query_params.get("includeDeleted"))
    group, jobs = _load(emulator, _group_id(request))
    data = emulator.engine.group_json(group, jobs, emulator.engine.now(), embed)
    return JSONResponse(_fields(request, data))


async def get_status(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("status")
    user_key(request, emulator.settings.token)
    group, jobs = _load(emulator, _group_id(request))
    return JSONResponse(emulator.engine.group_status(group, jobs, emulator.engine.now()))


async def get_jobs(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("jobs")
    user_key(request, emulator.settings.token)
    group, jobs = _load(emulator, _group_id(request))
    now = emulator.engine.now()
    data = [emulator.engine.job_json(j, group, now, False) for j in jobs]
    return JSONResponse({"data": data, "count": len(data)})


async def cancel_job_group(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("cancel")
    user_key(request, emulator.settings.token)
    group_id = _group_id(request)
    _load(emulator, group_id)
    ids = emulator.engine.cancel(group_id)
    return JSONResponse({"jobIds": ids, "jobgroupId": group_id})


async def get_outputs(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("outputs")
    user_key(request, emulator.settings.token)
    _, jobs = _load(emulator, _group_id(request))
    files = []
    for job in jobs:
        if job["outputs"]:
            files += json.loads(job["outputs"])
    return JSONResponse({"files": files, "tables": []})


async def list_job_groups(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("list")
    user_key(request, emulator.settings.token)
    embed = _embed(request)
    parse_bool("includeDeleted", request.query_params.get("includeDeleted"))
    limit = parse_int(request, "limit", 25, minimum=1, maximum=10_000)
    offset = parse_int(request, "offset", 0)
    sort = request.query_params.get("sort") or "-createdAt"
    if sort not in SORTS:
        raise validation_failed(f"Unsupported sort {sort!r}; use one of {', '.join(SORTS)}.")
    ids = [
        int(r["id"])
        for r in emulator.store.query(
            f"SELECT id FROM job_groups ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?",
            (limit, offset),
        )
    ]
    data = []
    for group_id in ids:
        group, jobs = _load(emulator, group_id)
        data.append(
            _fields(request, emulator.engine.group_json(group, jobs, emulator.engine.now(), embed))
        )
    body: dict[str, Any] = {"data": data}
    if parse_bool("includeCount", request.query_params.get("includeCount")):
        body["count"] = int(emulator.store.query("SELECT count(*) FROM job_groups")[0][0])
    return JSONResponse(body)


# What a job-library page embeds when the caller names nothing: the jobs and where they write,
# as the listing gives with embed=jobs.fileWriterJob.writeSetting.
LIBRARY_EMBED = frozenset({"jobs", "jobs.writeSetting"})
DATE_FILTERS = {
    f"dateFilter[{field}][{op}]": (field, op)
    for field in ("createdAt", "updatedAt")
    for op in ("gte", "lt")
}
RANFROM = ("ui", "schedule", "api", "null")
RUN_BY = ("all", "currentUser")


def _library_filters(request: Request) -> dict[tuple[str, str], float]:
    """dateFilter[createdAt|updatedAt][gte|lt] (epoch ms) as seconds; 400 for any other."""
    bounds: dict[tuple[str, str], float] = {}
    for name in request.query_params:
        if name.startswith("dateFilter"):
            if name not in DATE_FILTERS:
                valid = ", ".join(DATE_FILTERS)
                raise validation_failed(f"Unsupported date filter {name}; use one of {valid}.")
            bounds[DATE_FILTERS[name]] = parse_int(request, name, 0) / 1000.0
    return bounds


def _within(moment: float, field: str, bounds: dict[tuple[str, str], float]) -> bool:
    low, high = bounds.get((field, "gte")), bounds.get((field, "lt"))
    return (low is None or moment >= low) and (high is None or moment < high)


async def list_job_library(request: Request) -> Response:
    """listJobLibrary: the listing's job groups, filtered by date, status, ranfrom, text, user."""
    emulator = _emulator(request)
    await emulator.delay("list")
    who = user_key(request, emulator.settings.token)
    embed = _embed(request) if "embed" in request.query_params else set(LIBRARY_EMBED)
    parse_bool("includeDeleted", request.query_params.get("includeDeleted"))
    limit = parse_int(request, "limit", 25, minimum=1, maximum=10_000)
    offset = parse_int(request, "offset", 0)
    sort = request.query_params.get("sort") or "-createdAt"
    if sort not in SORTS:
        raise validation_failed(f"Unsupported sort {sort!r}; use one of {', '.join(SORTS)}.")
    bounds = _library_filters(request)
    statuses = {s for s in request.query_params.get("status", "").split(",") if s}
    unknown = statuses - {"Created", "InProgress", "Complete", "Failed", "Canceled"}
    if unknown:
        raise validation_failed(f"Unknown status {', '.join(sorted(unknown))}.")
    ranfrom = request.query_params.get("ranfrom") or None
    if ranfrom is not None and ranfrom not in RANFROM:
        raise validation_failed(f"Unknown ranfrom {ranfrom!r}; use one of {', '.join(RANFROM)}.")
    run_by = request.query_params.get("runBy") or "all"
    if run_by not in RUN_BY:
        raise validation_failed(f"Unknown runBy {run_by!r}; use all or currentUser.")
    text = (request.query_params.get("filter") or "").strip().lower()
    # createdAt narrows in SQL (it is stored); status, updatedAt and the rest are computed.
    where: list[str] = ["1 = 1"]
    args: list[Any] = []
    if ("createdAt", "gte") in bounds:
        where.append("created_at >= ?")
        args.append(bounds["createdAt", "gte"])
    if ("createdAt", "lt") in bounds:
        where.append("created_at < ?")
        args.append(bounds["createdAt", "lt"])
    if run_by == "currentUser":
        where.append("user_key = ?")
        args.append(who)
    rows = emulator.store.query(
        f"SELECT id FROM job_groups WHERE {' AND '.join(where)} ORDER BY {SORTS[sort]}",
        tuple(args),
    )
    now = emulator.engine.now()
    matched: list[dict[str, Any]] = []
    for row in rows:
        group, jobs = _load(emulator, int(row["id"]))
        data = emulator.engine.group_json(group, jobs, now, embed | {"wrangledDataset"})
        name = str(data["wrangledDataset"].get("name") or "").lower()
        if (
            (statuses and data["status"] not in statuses)
            or (ranfrom is not None and (data["ranfrom"] or "null") != ranfrom)
            or (text and text != str(group["id"]) and text not in name)
            or not _within(float(group["created_at"]), "createdAt", bounds)
        ):
            continue
        if ("updatedAt", "gte") in bounds or ("updatedAt", "lt") in bounds:
            updated = emulator.engine.group_json(group, jobs, now, set())["updatedAt"]
            if not _within(_epoch(updated), "updatedAt", bounds):
                continue
        if "wrangledDataset" not in embed:
            data["wrangledDataset"] = {"id": group["dataset_id"]}
        matched.append(data)
    body: dict[str, Any] = {"data": [_fields(request, d) for d in matched[offset : offset + limit]]}
    if parse_bool("includeCount", request.query_params.get("includeCount")):
        body["count"] = len(matched)
    return JSONResponse(body)


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def get_job_status(request: Request) -> Response:
    emulator = _emulator(request)
    await emulator.delay("job_status")
    user_key(request, emulator.settings.token)
    job_id = _group_id(request)
    rows = emulator.store.query("SELECT group_id FROM jobs WHERE id = ?", (job_id,))
    if not rows:
        raise not_found(f"Job with id {job_id} does not exist.")
    group, jobs = _load(emulator, int(rows[0]["group_id"]))
    job = next(j for j in jobs if int(j["id"]) == job_id)
    return JSONResponse(
        emulator.engine.job_json(job, group, emulator.engine.now(), False)["status"]
    )


def _route(path: str, endpoints: dict[str, Endpoint]) -> Route:
    """One route per path (so a 405 lists every method in Allow), without Starlette's implicit
    HEAD, which the v4 API does not document."""

    async def dispatch(request: Request) -> Response:
        return await endpoints[request.method](request)

    route = Route(path, dispatch, methods=list(endpoints))
    route.methods = set(endpoints)
    return route


def create_app(settings: EmulatorSettings | None = None) -> Starlette:
    """A Dataprep v4-compatible ASGI app; each call is one server (its own or a shared store)."""
    emulator = Emulator(settings or EmulatorSettings())
    routes = [
        _route("/v4/jobGroups", {"GET": list_job_groups, "POST": create_job_group}),
        _route("/v4/jobGroups/{id}", {"GET": get_job_group}),
        _route("/v4/jobGroups/{id}/status", {"GET": get_status}),
        _route("/v4/jobGroups/{id}/jobs", {"GET": get_jobs}),
        _route("/v4/jobGroups/{id}/cancel", {"POST": cancel_job_group}),
        _route("/v4/jobGroups/{id}/outputs", {"GET": get_outputs}),
        _route("/v4/jobs/{id}/status", {"GET": get_job_status}),
        _route("/v4/jobLibrary", {"GET": list_job_library}),
        _route("/v4/flows/{id}/run", {"POST": run_flow}),
        _route("/v4/flowRuns/{id}", {"GET": get_flow_run}),
        _route("/v4/flowRuns/{id}/status", {"GET": get_flow_run_status}),
        _route("/v4/flowRuns/{id}/jobGroups", {"GET": get_flow_run_job_groups}),
        _route("/v4/plans/{id}/run", {"POST": run_plan}),
        _route("/v4/planSnapshotRuns", {"GET": list_plan_runs}),
        _route("/v4/planSnapshotRuns/{id}", {"GET": get_plan_run}),
        openapi_route(),
        *oracle_routes(),
        *oauth_routes(),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(EdgeMiddleware)],
        exception_handlers={ApiProblem: json_error_handler, HTTPException: http_error_handler},
    )
    app.state.emulator = emulator
    app.state.oauth = OAuthIssuer(
        emulator.store,
        emulator.engine.now,
        initial_refresh_token=emulator.settings.oauth_refresh_token,
        access_seconds=emulator.settings.access_token_seconds,
    )
    return app
