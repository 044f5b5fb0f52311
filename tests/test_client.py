"""DataprepClient over httpx.MockTransport: requests sent, responses parsed, errors classified."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from sweeper.auth import BearerAuth
from sweeper.client import DataprepClient, JobGroupState, Submission
from sweeper.errors import (
    ApiConnectionError,
    ApiError,
    ApiInDoubtError,
    ApiRejectedError,
    ApiResponseError,
    AuthError,
    FailureClass,
    RateLimitedError,
)

SENTINEL = "sentinel-token-5d1c0b8e"
BODY = {"wrangledDataset": {"id": 33}, "runParameters": {"overrides": {"data": []}}}
CREATED = {
    "sessionId": "79276c31-c58c-4e79-ae5e-fed1a25ebca1",
    "reason": "JobStarted",
    "jobGraph": {"vertices": [21, 22], "edges": [{"source": 21, "target": 22}]},
    "id": 9,
    "jobs": {"data": [{"id": 21}, {"id": 22}]},
}

Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, base_url: str = "http://api.test") -> DataprepClient:
    return DataprepClient(
        base_url, auth=BearerAuth(SENTINEL), transport=httpx.MockTransport(handler)
    )


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def call(handler: Handler, method: str, *args: Any, **kwargs: Any) -> Any:
    async def go() -> Any:
        async with make_client(handler) as client:
            return await getattr(client, method)(*args, **kwargs)

    return run(go())


def error_of(handler: Handler, method: str = "create_job_group", *args: Any) -> ApiError:
    if method == "create_job_group":
        args = (BODY,)
    kwargs = {"execution_id": "swp-1"} if method == "create_job_group" else {}
    with pytest.raises(ApiError) as info:
        call(handler, method, *args, **kwargs)
    err = info.value
    assert SENTINEL not in str(err) and SENTINEL not in repr(err)
    return err


def test_create_sends_headers_body_and_parses_201() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json=CREATED, headers={"x-trifacta-request-id": "req-1"})

    sub = call(handler, "create_job_group", BODY, execution_id="swp-abc")
    assert sub == Submission(201, 9, str(CREATED["sessionId"]), (21, 22), "req-1")
    assert not sub.duplicate
    (req,) = seen
    assert req.method == "POST"
    assert req.url.path == "/v4/jobGroups"
    assert req.headers["x-execution-id"] == "swp-abc"
    assert req.headers["content-type"] == "application/json"
    assert req.headers["accept"] == "application/json"
    assert req.headers["authorization"] == f"Bearer {SENTINEL}"
    assert json.loads(req.content) == BODY


@pytest.mark.parametrize("base", ["http://api.test/trifacta", "http://api.test/trifacta/"])
def test_base_url_path_prefix_is_kept(base: str) -> None:
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.method == "POST":
            return httpx.Response(201, json=CREATED)
        return httpx.Response(200, json="Complete")

    async def go() -> None:
        async with make_client(handler, base) as client:
            await client.create_job_group(BODY, execution_id="x")
            await client.get_status(9)

    run(go())
    assert paths == ["/trifacta/v4/jobGroups", "/trifacta/v4/jobGroups/9/status"]


def test_304_is_a_duplicate_submission_without_ids() -> None:
    sub = call(
        lambda r: httpx.Response(304, headers={"x-trifacta-request-id": "r2"}),
        "create_job_group",
        BODY,
        execution_id="swp-1",
    )
    assert sub == Submission(304, None, "", (), "r2")
    assert sub.duplicate


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(201, content=b"<html>oops</html>"),
        httpx.Response(201, json=["not", "an", "object"]),
        httpx.Response(201, json={"sessionId": "s", "reason": "JobStarted"}),
    ],
)
def test_201_with_misshaped_body_is_in_doubt(response: httpx.Response) -> None:
    """A 2xx to the POST means the group may exist, whatever the body: never a plain failure."""
    err = error_of(lambda r: response)
    assert isinstance(err, ApiInDoubtError)
    assert err.status_code == 201
    assert "POST /v4/jobGroups answered 201 but" in str(err)


@pytest.mark.parametrize(
    ("status", "cls", "failure"),
    [
        (400, ApiRejectedError, FailureClass.PERMANENT),
        (404, ApiRejectedError, FailureClass.PERMANENT),
        (409, ApiRejectedError, FailureClass.PERMANENT),
        (410, ApiRejectedError, FailureClass.PERMANENT),
        (415, ApiRejectedError, FailureClass.PERMANENT),
        (422, ApiRejectedError, FailureClass.PERMANENT),
        (418, ApiRejectedError, FailureClass.PERMANENT),
        (401, AuthError, FailureClass.AUTH),
        (403, AuthError, FailureClass.AUTH),
        (429, RateLimitedError, FailureClass.REJECTED),
        (503, RateLimitedError, FailureClass.REJECTED),
        (500, ApiInDoubtError, FailureClass.IN_DOUBT),
        (502, ApiInDoubtError, FailureClass.IN_DOUBT),
        (504, ApiInDoubtError, FailureClass.IN_DOUBT),
    ],
)
def test_status_codes_map_to_failure_classes(
    status: int, cls: type[ApiError], failure: FailureClass
) -> None:
    envelope = {"exception": {"name": "SomeException", "message": "It failed", "details": "why"}}
    err = error_of(
        lambda r: httpx.Response(status, json=envelope, headers={"x-trifacta-request-id": "rq"})
    )
    assert type(err) is cls
    assert err.failure is failure
    assert err.status_code == status
    assert err.name == "SomeException"
    assert err.request_id == "rq"
    text = str(err)
    assert f"POST /v4/jobGroups was answered {status} SomeException: It failed - why" in text
    assert "rq" in text


def test_error_details_are_one_line_and_truncated() -> None:
    details = "line one\nline two\t" + "x" * 1000
    envelope = {"exception": {"name": "ValidationFailed", "message": "Bad", "details": details}}
    err = error_of(lambda r: httpx.Response(400, json=envelope))
    text = str(err)
    assert "\n" not in text and "\t" not in text
    assert "Bad - line one line two" in text
    assert "x" * 300 not in text


def test_error_messages_mask_an_echoed_credential_and_omit_query() -> None:
    envelope = {"exception": {"name": "X", "message": f"header was Bearer {SENTINEL}"}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json=envelope)

    err = error_of(handler, "get_job_group", 5)
    assert "Bearer ***" in str(err)
    assert "GET /v4/jobGroups/5 " in str(err)
    assert "embed" not in str(err)  # the query string never reaches a message


def test_non_json_error_body_still_gives_a_message() -> None:
    err = error_of(lambda r: httpx.Response(502, text="<html>Bad gateway</html>"))
    assert isinstance(err, ApiInDoubtError)
    assert "<html>Bad gateway</html>" in str(err)
    assert err.name is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-retry-after": "7"}, 7.0),
        ({"Retry-After": "12"}, 12.0),
        ({"x-retry-after": "7", "Retry-After": "20"}, 20.0),
        ({"x-retry-after": "30", "Retry-After": "2"}, 30.0),
        ({"x-retry-after": "100000"}, 300.0),
        ({"x-retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_429_retry_after_is_the_larger_header_capped(
    headers: dict[str, str], expected: float | None
) -> None:
    err = error_of(lambda r: httpx.Response(429, headers=headers))
    assert isinstance(err, RateLimitedError)
    assert err.retry_after == expected


def _raiser(exc_type: type[httpx.HTTPError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if issubclass(exc_type, httpx.RequestError):
            raise exc_type("boom", request=request)
        raise exc_type("boom")  # pragma: no cover

    return handler


@pytest.mark.parametrize(
    ("exc_type", "cls"),
    [
        (httpx.ConnectError, ApiConnectionError),
        (httpx.ConnectTimeout, ApiConnectionError),
        (httpx.PoolTimeout, ApiConnectionError),
        (httpx.ReadTimeout, ApiInDoubtError),
        (httpx.WriteTimeout, ApiInDoubtError),
        (httpx.ReadError, ApiInDoubtError),
        (httpx.WriteError, ApiInDoubtError),
        (httpx.RemoteProtocolError, ApiInDoubtError),
    ],
)
def test_transport_errors_map_by_whether_the_request_may_have_arrived(
    exc_type: type[httpx.HTTPError], cls: type[ApiError]
) -> None:
    err = error_of(_raiser(exc_type))
    assert type(err) is cls
    assert err.status_code is None
    assert "POST /v4/jobGroups" in str(err)
    assert exc_type.__name__ in str(err)


GROUP = {
    "id": 9,
    "status": "Failed",
    "createdAt": "2026-01-02T03:04:05.000Z",
    "updatedAt": "2026-01-02T03:05:00.000Z",
    "wrangledDataset": {"id": 33},
    "runParameters": {"overrides": {"data": [{"key": "Region", "value": "02"}]}},
    "jobs": {
        "data": [
            {
                "id": 21,
                "jobType": "wrangle",
                "status": "Failed",
                "percentComplete": 40,
                "errorMessage": {"name": "RecipeError", "message": "bad\ncolumn"},
            },
            {
                "id": 22,
                "jobType": "filewriter",
                "status": "Canceled",
                "percentComplete": 0,
                "errorMessage": None,
                "writeSetting": {"id": 3, "path": "/out/r02.csv"},
            },
        ]
    },
}


def test_get_job_group_parses_jobs_params_and_paths() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=GROUP)

    group: JobGroupState = call(handler, "get_job_group", 9)
    assert seen[0].url.path == "/v4/jobGroups/9"
    assert "jobs" in seen[0].url.params["embed"].split(",")
    assert group.id == 9 and group.dataset_id == 33 and group.status == "Failed"
    assert group.terminal
    assert [j.id for j in group.jobs] == [21, 22]
    assert group.jobs[0].percent_complete == 40
    assert group.error == "RecipeError - bad column"
    assert group.run_parameters == {"Region": "02"}
    assert group.output_paths == ("/out/r02.csv",)
    assert group.created_at == "2026-01-02T03:04:05.000Z"


def test_job_group_without_embeds_and_in_progress() -> None:
    group = call(
        lambda r: httpx.Response(200, json={"id": 4, "status": "InProgress"}), "get_job_group", 4
    )
    assert not group.terminal
    assert group.jobs == () and group.run_parameters is None and group.output_paths == ()
    assert group.error == ""


def test_get_job_group_with_bad_body_is_response_error() -> None:
    err = error_of(lambda r: httpx.Response(200, json={"status": "Complete"}), "get_job_group", 4)
    assert isinstance(err, ApiResponseError)


def test_get_jobs_status_cancel_outputs() -> None:
    cancels: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/jobs"):
            return httpx.Response(200, json={"data": GROUP["jobs"]["data"]})  # type: ignore[index]
        if path.endswith("/status"):
            return httpx.Response(200, json="InProgress")
        if path.endswith("/cancel"):
            assert request.method == "POST"
            cancels.append(request.headers.get("x-execution-id"))
            return httpx.Response(200, json={"jobIds": [21, 22], "jobgroupId": 9})
        if path.endswith("/outputs"):
            return httpx.Response(
                200, json={"files": [{"path": "/a.csv"}, {"path": "/b.csv"}], "tables": []}
            )
        return httpx.Response(404)

    async def go() -> None:
        async with make_client(handler) as client:
            jobs = await client.get_jobs(9)
            assert [(j.id, j.job_type) for j in jobs] == [(21, "wrangle"), (22, "filewriter")]
            assert await client.get_status(9) == "InProgress"
            assert await client.cancel_job_group(9) == (21, 22)
            assert await client.cancel_job_group(9, execution_id="swp-c") == (21, 22)
            assert await client.get_outputs(9) == ("/a.csv", "/b.csv")

    run(go())
    assert cancels == [None, "swp-c"]


def test_status_that_is_not_a_string_is_response_error() -> None:
    err = error_of(lambda r: httpx.Response(200, json={"status": "x"}), "get_status", 1)
    assert isinstance(err, ApiResponseError)


def _group(
    gid: int,
    created: str,
    params: dict[str, str] | None = None,
    paths: tuple[str, ...] = (),
    dataset: int = 33,
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": gid,
        "status": "Complete",
        "createdAt": created,
        "updatedAt": created,
        "wrangledDataset": {"id": dataset},
        "jobs": {
            "data": [
                {
                    "id": gid * 10 + i,
                    "jobType": "filewriter",
                    "status": "Complete",
                    "writeSetting": {"path": p},
                }
                for i, p in enumerate(paths)
            ]
        },
    }
    if params is not None:
        item["runParameters"] = {
            "overrides": {"data": [{"key": k, "value": v} for k, v in params.items()]}
        }
    return item


class Lister:
    """A fake listing endpoint over ``groups`` (newest first), counting the pages asked for."""

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        self.groups = groups
        self.calls: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        self.calls.append(params)
        offset, limit = int(params["offset"]), int(params["limit"])
        return httpx.Response(200, json={"data": self.groups[offset : offset + limit]})


def test_list_job_groups_sends_paging_params() -> None:
    lister = Lister([_group(1, "2026-01-01T00:00:00.000Z")])
    groups = call(lister, "list_job_groups", limit=10, offset=20)
    assert groups == []
    assert lister.calls == [
        {
            "limit": "10",
            "offset": "20",
            "sort": "-createdAt",
            "embed": "jobs.fileWriterJob.writeSetting",
        }
    ]


def test_find_job_group_matches_run_parameters_across_pages() -> None:
    groups = [
        _group(100 - i, f"2026-01-02T00:{59 - i:02d}:00.000Z", {"Region": f"{i:02d}"})
        for i in range(60)
    ]
    lister = Lister(groups)
    found = call(lister, "find_job_group", dataset_id=33, run_parameters={"Region": "30"})
    assert found is not None and found.id == 70
    assert len(lister.calls) == 2


def test_find_job_group_matches_output_paths_when_params_are_not_returned() -> None:
    lister = Lister(
        [
            _group(3, "2026-01-02T00:03:00.000Z", paths=("/out/r03.csv",)),
            _group(2, "2026-01-02T00:02:00.000Z", paths=("/out/r02.csv",)),
            _group(1, "2026-01-02T00:01:00.000Z", paths=("/out/r02.csv",), dataset=34),
        ]
    )
    found = call(
        lister,
        "find_job_group",
        dataset_id=33,
        run_parameters={"Region": "02"},
        output_paths=["/out/r02.csv"],
    )
    assert found is not None and found.id == 2
    # Without params or paths visible, a dataset match alone is never taken as proof.
    assert call(lister, "find_job_group", dataset_id=33, run_parameters={"Region": "02"}) is None


def test_find_job_group_stops_at_groups_older_than_the_intent() -> None:
    groups = [
        _group(50 - i, f"2026-01-02T00:{59 - i:02d}:00.000Z", {"Region": "x"}) for i in range(50)
    ]
    groups.append(_group(1, "2026-01-01T00:00:00.000Z", {"Region": "wanted"}))
    lister = Lister(groups)
    found = call(
        lister,
        "find_job_group",
        dataset_id=33,
        run_parameters={"Region": "wanted"},
        created_after="2026-01-02T00:30:00.000Z",
    )
    assert found is None
    assert len(lister.calls) == 2  # stopped inside the second page, never read the third


def test_find_job_group_respects_max_pages() -> None:
    lister = Lister([_group(i, "2026-01-02T00:00:00.000Z", {"Region": "x"}) for i in range(100)])
    assert (
        call(lister, "find_job_group", dataset_id=33, run_parameters={"Region": "y"}, max_pages=3)
        is None
    )
    assert len(lister.calls) == 3


def test_concurrent_requests_all_succeed() -> None:
    count = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal count
        count += 1
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": b'"Complete"'})

    async def go() -> list[str]:
        transport = httpx.ASGITransport(app=app)
        async with DataprepClient("http://emulator.invalid", transport=transport) as client:
            return await asyncio.gather(*(client.get_status(i) for i in range(30)))

    assert run(go()) == ["Complete"] * 30
    assert count == 30


class PathLister(Lister):
    """A Lister that records each request's path and answers 404 for ``missing`` paths."""

    def __init__(self, groups: list[dict[str, Any]], missing: tuple[str, ...] = ()) -> None:
        super().__init__(groups)
        self.missing = missing
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.path in self.missing:
            return httpx.Response(404, json={"exception": {"name": "NotFound", "message": "no"}})
        return super().__call__(request)


def test_find_job_group_narrows_the_job_library_to_the_run_window() -> None:
    lister = PathLister([_group(7, "2026-01-02T00:31:00.000Z", {"Region": "wanted"})])
    found = call(
        lister,
        "find_job_group",
        dataset_id=33,
        run_parameters={"Region": "wanted"},
        created_after="2026-01-02T00:30:00.000Z",
    )
    assert found is not None and found.id == 7
    assert lister.paths == ["/v4/jobLibrary"]
    since = datetime(2026, 1, 2, 0, 30, tzinfo=timezone.utc)
    assert lister.calls[0]["dateFilter[createdAt][gte]"] == str(int(since.timestamp() * 1000))
    assert "embed" not in lister.calls[0]  # the job library does not document embed


def test_find_job_group_falls_back_to_the_listing_once_where_the_job_library_is_404() -> None:
    lister = PathLister(
        [_group(7, "2026-01-02T00:31:00.000Z", {"Region": "wanted"})], missing=("/v4/jobLibrary",)
    )

    async def go() -> list[Any]:
        async with make_client(lister) as client:
            args: dict[str, Any] = {"dataset_id": 33, "run_parameters": {"Region": "wanted"}}
            first = await client.find_job_group(**args)
            second = await client.find_job_group(**args)
            return [first, second, client.job_library]

    first, second, library = asyncio.run(go())
    assert first is not None and first.id == 7 and second is not None and second.id == 7
    assert library is False
    assert lister.paths == ["/v4/jobLibrary", "/v4/jobGroups", "/v4/jobGroups"]


def test_a_job_library_error_other_than_404_is_not_a_fallback() -> None:
    lister = PathLister([], missing=())

    def refuse(request: httpx.Request) -> httpx.Response:
        lister.paths.append(request.url.path)
        return httpx.Response(400, json={"exception": {"name": "ValidationFailed", "message": "x"}})

    with pytest.raises(ApiRejectedError):
        call(refuse, "find_job_group", dataset_id=33, run_parameters={"Region": "x"})
    assert lister.paths == ["/v4/jobLibrary"]
