"""The emulator's GET /v4/jobLibrary: the listing's job groups, filtered and newest first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from sweeper.emulator import EmulatorSettings, create_app
from tests.emulator_server import FakeClock

Api = httpx.AsyncClient


def _run(tmp_path: Path, body: Callable[[Api, FakeClock], Awaitable[None]]) -> None:
    clock = FakeClock()
    settings = EmulatorSettings(
        output_root=tmp_path, clock=clock, quota_user_per_min=0, quota_workspace_per_min=0
    )
    transport = httpx.ASGITransport(app=create_app(settings))

    async def main() -> None:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as api:
            await body(api, clock)

    asyncio.run(main())


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _post(api: Api, token: str = "user-one-token", **body: Any) -> int:
    answer = await api.post(
        "/v4/jobGroups", json={"wrangledDataset": {"id": 7}, **body}, headers=_auth(token)
    )
    assert answer.status_code == 201, answer.text
    return int(answer.json()["id"])


async def _page(api: Api, token: str = "user-one-token", **params: Any) -> Any:
    answer = await api.get("/v4/jobLibrary", params=params, headers=_auth(token))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def _ids(api: Api, **params: Any) -> list[int]:
    return [int(g["id"]) for g in (await _page(api, **params))["data"]]


def test_newest_first_with_jobs_and_narrowed_by_creation_date(tmp_path: Path) -> None:
    async def body(api: Api, clock: FakeClock) -> None:
        old = await _post(api)
        clock.advance(3600)
        boundary_ms = int(clock.now * 1000)
        new = [await _post(api), await _post(api)]
        assert await _ids(api) == [new[1], new[0], old]
        assert await _ids(api, **{"dateFilter[createdAt][gte]": boundary_ms}) == new[::-1]
        assert await _ids(api, **{"dateFilter[createdAt][lt]": boundary_ms}) == [old]
        assert await _ids(api, limit=1, offset=1) == [new[0]]
        page = await _page(api, includeCount="true", limit=1)
        assert page["count"] == 3
        assert page["data"][0]["jobs"]["data"]  # jobs embedded, as the poller needs them

    _run(tmp_path, body)


def test_status_filter_text_and_run_by(tmp_path: Path) -> None:
    async def body(api: Api, clock: FakeClock) -> None:
        mine = await _post(api)
        clock.advance(3600)  # every job of the first group has ended
        theirs = await _post(api, token="user-two-token")
        assert await _ids(api, status="Complete") == [mine]
        assert await _ids(api, status="Created,InProgress") == [theirs]
        assert await _ids(api, filter=str(theirs)) == [theirs]
        assert await _ids(api, runBy="currentUser") == [mine]
        assert await _ids(api, runBy="all") == [theirs, mine]

    _run(tmp_path, body)


def test_unknown_filters_are_validation_failures_and_credentials_are_needed(
    tmp_path: Path,
) -> None:
    async def body(api: Api, clock: FakeClock) -> None:
        for params in (
            {"dateFilter[deletedAt][gte]": "1"},
            {"dateFilter[createdAt][gte]": "yesterday"},
            {"status": "Done"},
            {"runBy": "someone"},
            {"ranfrom": "cli"},
        ):
            answer = await api.get("/v4/jobLibrary", params=params, headers=_auth("tok-12345"))
            assert answer.status_code == 400, params
            assert answer.json()["exception"]["name"] == "ValidationFailed"
        assert (await api.get("/v4/jobLibrary")).status_code == 401

    _run(tmp_path, body)


def test_ranfrom_null_is_reported_apart_from_not_sent(tmp_path: Path) -> None:
    async def body(api: Api, clock: FakeClock) -> None:
        hidden = await _post(api, ranfrom=None)
        plain = await _post(api)
        scheduled = await _post(api, ranfrom="schedule")
        shown = {}
        for group_id in (hidden, plain, scheduled):
            answer = await api.get(f"/v4/jobGroups/{group_id}", headers=_auth("user-one-token"))
            shown[group_id] = answer.json()["ranfrom"]
        assert shown == {hidden: None, plain: "api", scheduled: "schedule"}
        assert await _ids(api, ranfrom="null") == [hidden]
        assert await _ids(api, ranfrom="api") == [plain]

    _run(tmp_path, body)
