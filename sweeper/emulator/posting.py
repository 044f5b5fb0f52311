"""The one POST path of the run endpoints: runJobGroup, runFlow and runPlan.

Each of them answers in this order, with the same faults:

1. credentials: 401 before a byte of the body is read;
2. the body: 413 past ``max_body_bytes``; read before the latency, so a client that times out
   during the latency leaves a request that is still processed (the "in doubt" case);
3. the injected latency (``post``);
4. an injected 429, before the quota and not counted against it, carrying the endpoint's own
   bucket in its headers and message;
5. the endpoint's own quota: a 429 naming it, or the x-rate-limit-* headers of the answer;
6. an injected 5xx before creating: nothing is created;
7. the endpoint's own part (``create``): validation (400 / 404), then 304 for an execution id
   seen before, or the creation;
8. after a creation only: a dropped connection, or an injected 5xx: what was created exists,
   the client does not learn it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sweeper.emulator.http import ApiProblem, DropConnection, read_body, user_key
from sweeper.emulator.quota import Quota, too_many_details
from sweeper.emulator.settings import EmulatorSettings
from sweeper.emulator.store import Store

if TYPE_CHECKING:
    from sweeper.emulator.app import Emulator

# (emulator, request, body bytes, user key) -> the 201 body, or None for a 304 (the execution id
# was seen before). Raises ApiProblem (400, 404) for a request it refuses; creates nothing then.
Create = Callable[["Emulator", Request, bytes, str], "dict[str, Any] | None"]

# The per-user limit an injected 429 reports for an endpoint whose quota is turned off (0): the
# platform's documented one, which is the settings' default.
DOCUMENTED_USER_LIMIT = {
    "runJobGroup": EmulatorSettings.quota_user_per_min,
    "runFlow": EmulatorSettings.flow_quota_user_per_min,
    "runPlan": EmulatorSettings.plan_quota_user_per_min,
}


async def run_post(
    request: Request,
    emulator: Emulator,
    *,
    quota: Quota,
    received: str,
    creates: str,
    create: Create,
) -> Response:
    """Answer one run POST: the steps of this module's docstring around ``create``.

    ``quota`` is the endpoint's bucket, ``received`` the counter of every POST that reached it
    (whatever the answer), ``creates`` what it creates ("the flow run"), for the 5xx details.
    """
    emulator.store.count(received)
    who = user_key(request, emulator.settings.token)
    raw = await read_body(request, emulator.settings.max_body_bytes)
    await emulator.delay("post")
    faults = emulator.faults
    if faults.rate_limited():
        raise _injected_429(emulator, quota)
    quota_headers = take_quota(emulator, quota, who)
    if faults.error_before():
        emulator.fault("error_before")
        raise _injected_5xx(emulator, f"Injected fault before creating {creates}.")
    created = create(emulator, request, raw, who)
    if created is None:
        return Response(status_code=304, headers=quota_headers)
    if faults.drop_after():
        emulator.fault("drop_after")
        raise DropConnection()
    if faults.error_after():
        emulator.fault("error_after")
        raise _injected_5xx(emulator, f"Injected fault after creating {creates}.")
    return JSONResponse(created, status_code=201, headers=quota_headers)


def _count_429(conn: sqlite3.Connection, quota: Quota) -> None:
    """Every 429 counts in served_429; runFlow's and runPlan's also in their own counter."""
    Store.bump(conn, "served_429")
    if quota.endpoint != "runJobGroup":  # runJobGroup's are the plain served_429
        Store.bump(conn, f"served_429:{quota.endpoint}")


def take_quota(emulator: Emulator, quota: Quota, who: str) -> dict[str, str]:
    """Count this POST against ``quota`` (one endpoint's bucket): its x-rate-limit-* headers,
    or a 429 naming the endpoint."""
    with emulator.store.transaction() as conn:
        answer = quota.take(conn, who, emulator.engine.now())
        if not answer.allowed:
            _count_429(conn, quota)
    if not answer.allowed:
        details = too_many_details(answer.retry_after, answer.limit, answer.scope, quota.endpoint)
        raise ApiProblem(
            429, "TooManyRequestsException", "Too Many Requests", details, answer.headers
        )
    return answer.headers


def _injected_429(emulator: Emulator, quota: Quota) -> ApiProblem:
    """An injected 429 as ``quota``'s bucket would send it (its per-user limit and name), with
    the fault settings' x-retry-after; nothing is counted against the quota."""
    wait = emulator.faults.faults.rate_limit_retry_after
    with emulator.store.transaction() as conn:
        _count_429(conn, quota)
        Store.bump(conn, "fault:rate_limit")
    limit = quota.user_limit or DOCUMENTED_USER_LIMIT[quota.endpoint]
    headers = {
        "x-rate-limit-user-limit": str(limit),
        "x-rate-limit-user-remaining": "0",
        "x-rate-limit-user-reset": str(int((emulator.engine.now() + wait) * 1000)),
        "x-retry-after": str(wait),
    }
    details = too_many_details(wait, limit, "user", quota.endpoint)
    return ApiProblem(429, "TooManyRequestsException", "Too Many Requests", details, headers)


def _injected_5xx(emulator: Emulator, details: str) -> ApiProblem:
    status = emulator.faults.faults.error_status
    return ApiProblem(status, "InternalServerError", "Internal Server Error", details)
