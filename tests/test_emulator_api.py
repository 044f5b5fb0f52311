"""In-process (ASGITransport) tests of the emulated v4 job-group API."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from sweeper.emulator import EmulatorSettings, create_app

try:  # the helper lives next to the tests; importable both as tests.x and as x
    from tests.emulator_server import SEED_OVERRIDES_AND_PARAMETERS, FakeClock, asgi_client
except ImportError:  # pragma: no cover
    from emulator_server import (  # type: ignore[no-redef]
        SEED_OVERRIDES_AND_PARAMETERS,
        FakeClock,
        asgi_client,
    )

SEED_33 = SEED_OVERRIDES_AND_PARAMETERS  # the documented example, the shape sweeper sends


def run_with(
    tmp_path: Path,
    body: Callable[[httpx.AsyncClient, FakeClock], Awaitable[None]],
    **settings: Any,
) -> None:
    clock = FakeClock()
    options: dict[str, Any] = {"output_root": tmp_path, "clock": clock, **settings}
    app = create_app(EmulatorSettings(**options))

    async def main() -> None:
        async with asgi_client(app) as client:
            await body(client, clock)

    asyncio.run(main())


def assert_envelope(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    exception = response.json()["exception"]
    assert set(exception) == {"name", "message", "details"}
    assert exception["name"] == name
    return dict(exception)


def test_seed_body_gets_201_with_the_documented_shape(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        r = await client.post("/v4/jobGroups", json=SEED_33)
        assert r.status_code == 201
        data = r.json()
        assert set(data) == {"sessionId", "reason", "jobGraph", "id", "jobs"}
        uuid.UUID(data["sessionId"])
        assert data["reason"] == "JobStarted"
        ids = [j["id"] for j in data["jobs"]["data"]]
        assert len(ids) == 2 and ids == data["jobGraph"]["vertices"]
        assert data["jobGraph"]["edges"] == [{"source": ids[0], "target": ids[1]}]
        assert data["id"] not in ids
        assert r.headers["x-trifacta-request-id"]

    run_with(tmp_path, body)


def test_every_response_has_a_request_id_and_errors_use_the_envelope(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        answers = [
            await client.post("/v4/jobGroups", content=b"not json"),
            await client.post("/v4/jobGroups", json={"overrides": {}}),
            await client.post("/v4/jobGroups", json={"wrangledDataset": {"id": "x"}}),
            await client.get("/v4/jobGroups/999"),
            await client.get("/v4/nowhere"),
            await client.get("/_emulator/stats"),
        ]
        for r in answers:
            assert r.headers.get("x-trifacta-request-id")
        assert len({r.headers["x-trifacta-request-id"] for r in answers}) == len(answers)
        for r in answers[:3]:
            assert_envelope(r, 400, "ValidationFailed")
        assert_envelope(answers[3], 404, "DataNotFoundException")
        assert_envelope(answers[4], 404, "RouteNotFoundException")

    run_with(tmp_path, body)


def test_unknown_recipe_is_404_and_creates_nothing(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        r = await client.post("/v4/jobGroups", json={"wrangledDataset": {"id": 4242}})
        details = assert_envelope(r, 404, "DataNotFoundException")["details"]
        assert "4242" in details
        assert (await client.get("/_emulator/stats")).json()["created"] == 0

    run_with(tmp_path, body)


def test_credentials_are_required_and_never_echoed(tmp_path: Path) -> None:
    secret = "s3cr3t-token-value"

    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        transport = client._transport  # same app, other credentials
        async with httpx.AsyncClient(transport=transport, base_url="http://e") as anon:
            r = await anon.post("/v4/jobGroups", json={"wrangledDataset": {"id": 7}})
            assert_envelope(r, 401, "AuthenticationFailed")
            for header in ("Bearer", "Bearer wrong", "Basic !!notbase64", "Token abc"):
                r = await anon.get("/v4/jobGroups", headers={"Authorization": header})
                assert r.status_code == 401
                assert secret not in r.text and "wrong" not in r.text
            good = await anon.get("/v4/jobGroups", headers={"Authorization": f"Bearer {secret}"})
            assert good.status_code == 200
            assert secret not in good.text and secret not in str(good.headers)
            basic = base64.b64encode(f"anyone:{secret}".encode()).decode()
            r = await anon.get("/v4/jobGroups", headers={"Authorization": f"Basic {basic}"})
            assert r.status_code == 200
            wrong = base64.b64encode(b"anyone:nope").decode()
            r = await anon.get("/v4/jobGroups", headers={"Authorization": f"Basic {wrong}"})
            assert r.status_code == 401

    run_with(tmp_path, body, token=secret)


def test_any_credentials_are_accepted_without_a_configured_token(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        basic = base64.b64encode(b"user:pw").decode()
        r = await client.get("/v4/jobGroups", headers={"Authorization": f"Basic {basic}"})
        assert r.status_code == 200
        r = await client.get("/v4/jobGroups", headers={"Authorization": "Bearer anything"})
        assert r.status_code == 200

    run_with(tmp_path, body)


def test_both_writesettings_spellings_and_unchecked_override_values(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        for key in ("writesettings", "writeSettings"):
            ws = [
                {"path": f"out/{key}.csv", "action": "create", "format": "csv"},
                {"path": f"out/{key}.avro", "action": "create", "format": "avro"},
            ]
            r = await client.post(
                "/v4/jobGroups", json={"wrangledDataset": {"id": 1}, "overrides": {key: ws}}
            )
            assert r.status_code == 201  # the bad format is accepted, and fails the job later
            assert len(r.json()["jobs"]["data"]) == 3
        clock.advance(60)
        jobs = (await client.get("/v4/jobGroups/1/jobs")).json()["data"]
        assert [j["status"] for j in jobs] == ["Complete", "Complete", "Failed"]
        assert "avro" in jobs[2]["errorMessage"]
        assert (await client.get("/v4/jobGroups/1/status")).json() == "Failed"

    run_with(tmp_path, body)


def test_unknown_run_parameters_are_accepted_unless_strict(tmp_path: Path) -> None:
    request = {
        "wrangledDataset": {"id": 33},
        "runParameters": {"overrides": {"data": [{"key": "varRegion", "value": "02"}]}},
    }

    async def lenient(client: httpx.AsyncClient, _: FakeClock) -> None:
        assert (await client.post("/v4/jobGroups", json=request)).status_code == 201

    async def strict(client: httpx.AsyncClient, _: FakeClock) -> None:
        r = await client.post("/v4/jobGroups", json=request)
        assert "varRegion" in assert_envelope(r, 400, "ValidationFailed")["details"]

    run_with(tmp_path, lenient)
    run_with(tmp_path, strict, strict_parameters=True)


def test_repeated_execution_id_gets_304_with_empty_body(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        headers = {"x-execution-id": "exec-1"}
        first = await client.post("/v4/jobGroups", json=SEED_33, headers=headers)
        again = await client.post("/v4/jobGroups", json=SEED_33, headers=headers)
        other = await client.post("/v4/jobGroups", json=SEED_33, headers={"x-execution-id": "2"})
        assert (first.status_code, again.status_code, other.status_code) == (201, 304, 201)
        assert again.content == b""
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["created"] == 2 and stats["served_304"] == 1
        assert stats["posts_received"] == 3
        assert stats["duplicates_by_execution_id"] == {}
        assert stats["duplicate_creations_by_params"] == 1  # two groups for the same params

    run_with(tmp_path, body)


def test_concurrent_duplicates_create_exactly_one_group(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        headers = {"x-execution-id": "same"}
        answers = await asyncio.gather(
            *(client.post("/v4/jobGroups", json=SEED_33, headers=headers) for _ in range(12))
        )
        assert sorted(r.status_code for r in answers) == [201] + [304] * 11
        groups = (await client.get("/_emulator/jobGroups")).json()["data"]
        assert [g["executionId"] for g in groups] == ["same"]

    run_with(tmp_path, body, quota_user_per_min=0, quota_workspace_per_min=0)


def test_duplicate_across_app_instances_on_one_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"

    async def first(client: httpx.AsyncClient, _: FakeClock) -> None:
        r = await client.post("/v4/jobGroups", json=SEED_33, headers={"x-execution-id": "x"})
        assert r.status_code == 201

    async def second(client: httpx.AsyncClient, _: FakeClock) -> None:
        r = await client.post("/v4/jobGroups", json=SEED_33, headers={"x-execution-id": "x"})
        assert r.status_code == 304
        r = await client.post("/v4/jobGroups", json=SEED_33, headers={"x-execution-id": "y"})
        assert r.json()["id"] > 1  # ids keep growing across instances
        assert len((await client.get("/v4/jobGroups")).json()["data"]) == 2

    run_with(tmp_path, first, state_path=state)
    run_with(tmp_path, second, state_path=state)


def test_quota_answers_429_exactly_as_documented(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        for i in range(3):
            r = await client.post("/v4/jobGroups", json=SEED_33)
            assert r.status_code == 201
            assert r.headers["x-rate-limit-user-limit"] == "3"
            assert r.headers["x-rate-limit-user-remaining"] == str(2 - i)
            clock.advance(1)
        r = await client.post("/v4/jobGroups", json=SEED_33)
        assert r.status_code == 429
        assert "retry-after" not in r.headers
        assert r.headers["x-retry-after"] == "57"  # the first POST leaves the window in 57 s
        assert r.headers["x-rate-limit-user-remaining"] == "0"
        assert int(r.headers["x-rate-limit-user-reset"]) == int((clock.now - 3 + 60) * 1000)
        assert r.headers["x-rate-limit-workspace-limit"] == "10"
        assert r.json() == {
            "exception": {
                "name": "TooManyRequestsException",
                "message": "Too Many Requests",
                "details": 'API quota reached for "runJobGroup". Wait 57 seconds before making '
                "a new request. (Max. 3 requests allowed per minute per user.)",
            }
        }
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["created"] == 3 and stats["served_429"] == 1
        clock.advance(57)  # the sliding window frees one slot
        assert (await client.post("/v4/jobGroups", json=SEED_33)).status_code == 201
        assert (await client.post("/v4/jobGroups", json=SEED_33)).status_code == 429
        assert (await client.get("/v4/jobGroups")).status_code == 200  # reads are not counted

    run_with(tmp_path, body, quota_user_per_min=3, quota_workspace_per_min=10)


def test_workspace_quota_counts_every_user(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        for user in ("a", "b"):
            r = await client.post(
                "/v4/jobGroups", json=SEED_33, headers={"Authorization": f"Bearer {user}"}
            )
            assert r.status_code == 201
        r = await client.post("/v4/jobGroups", json=SEED_33, headers={"Authorization": "Bearer c"})
        assert r.status_code == 429
        assert "per workspace" in r.json()["exception"]["details"]

    run_with(tmp_path, body, quota_user_per_min=0, quota_workspace_per_min=2)


def test_lifecycle_follows_the_clock(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        gid = (await client.post("/v4/jobGroups", json=SEED_33)).json()["id"]
        seen = []
        for step in (0.0, 0.5, 0.5, 0.3):
            clock.advance(step)
            seen.append((await client.get(f"/v4/jobGroups/{gid}/status")).json())
        assert seen == ["Created", "InProgress", "InProgress", "InProgress"]
        jobs = (await client.get(f"/v4/jobGroups/{gid}/jobs")).json()["data"]
        assert [j["status"] for j in jobs] == ["Complete", "InProgress"]
        assert 0 < jobs[1]["percentComplete"] < 100
        assert not (tmp_path / "_buckets").exists()  # written when the filewriter completes
        clock.advance(1.0)
        assert (await client.get(f"/v4/jobGroups/{gid}/status")).json() == "Complete"
        assert (tmp_path / "_buckets/gs/bucket/out/run_02.csv").is_file()

    run_with(tmp_path, body)


def test_time_scale_speeds_up_the_clock(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        gid = (await client.post("/v4/jobGroups", json=SEED_33)).json()["id"]
        clock.advance(0.5)  # 1800 emulated seconds of a 3600 s wrangle
        jobs = (await client.get(f"/v4/jobGroups/{gid}/jobs")).json()["data"]
        assert jobs[0]["status"] == "InProgress" and 40 <= jobs[0]["percentComplete"] <= 60
        clock.advance(1.0)
        assert (await client.get(f"/v4/jobGroups/{gid}/status")).json() == "Complete"

    run_with(
        tmp_path,
        body,
        created_seconds=0,
        wrangle_seconds=3600,
        filewriter_seconds=60,
        time_scale=3600,
    )


def test_get_job_group_fields_embeds_and_lenient_queries(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        gid = (await client.post("/v4/jobGroups", json=SEED_33)).json()["id"]
        r = await client.get(f"/v4/jobGroups/{gid}?embed=&includeDeleted=False")
        assert r.status_code == 200
        group = r.json()
        for key in (
            "id",
            "name",
            "description",
            "ranfrom",
            "ranfor",
            "status",
            "profilingEnabled",
            "runParameterReferenceDate",
            "createdAt",
            "updatedAt",
            "workspace",
            "creator",
            "updater",
            "snapshot",
            "wrangledDataset",
            "flowRun",
        ):
            assert key in group
        assert group["wrangledDataset"] == {"id": 33} and "jobs" not in group
        assert group["createdAt"].endswith("Z") and group["runParameterReferenceDate"].endswith(
            ".000Z"
        )
        assert group["runParameters"] == {"overrides": {"data": [{"key": "Region", "value": "02"}]}}
        clock.advance(10)
        full = (
            await client.get(f"/v4/jobGroups/{gid}", params={"embed": "jobs,wrangledDataset"})
        ).json()
        assert full["wrangledDataset"]["recipe"]["name"] == "POS-regions"
        assert [j["jobType"] for j in full["jobs"]["data"]] == ["wrangle", "filewriter"]
        assert full["jobs"]["data"][1]["writeSetting"] == {
            "id": full["jobs"]["data"][1]["writeSetting"]["id"]
        }
        ws = (await client.get(f"/v4/jobGroups/{gid}?embed=jobs.fileWriterJob.writeSetting")).json()
        assert ws["jobs"]["data"][1]["writeSetting"] | {"id": 0} == {
            "id": 0,
            "path": "gs://bucket/out/run_02.csv",
            "action": "create",
            "format": "csv",
            "compression": "none",
        }
        r = await client.get(f"/v4/jobGroups/{gid}?embed=jobs,flows")
        details = assert_envelope(r, 400, "ValidationFailed")["details"]
        assert "flows" in details and "Valid associations are" in details and "jobs" in details
        assert_envelope(await client.get(f"/v4/jobGroups/{gid}?embed=*"), 400, "ValidationFailed")
        only = (await client.get(f"/v4/jobGroups/{gid}?fields=status;createdAt")).json()
        assert set(only) == {"id", "status", "createdAt"}

    run_with(tmp_path, body)


def test_jobs_status_and_job_status_endpoints(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        request = dict(SEED_33, overrides={**SEED_33["overrides"], "profiler": True})  # type: ignore[dict-item]
        created = (await client.post("/v4/jobGroups", json=request)).json()
        gid, ids = created["id"], [j["id"] for j in created["jobs"]["data"]]
        assert len(ids) == 3 and ids == sorted(ids)
        clock.advance(10)
        r = await client.get(f"/v4/jobGroups/{gid}/status")
        assert r.text == '"Complete"'
        jobs = (await client.get(f"/v4/jobGroups/{gid}/jobs")).json()["data"]
        assert [j["jobType"] for j in jobs] == ["wrangle", "filewriter", "profile"]
        for job in jobs:
            assert {
                "id",
                "status",
                "jobType",
                "percentComplete",
                "errorMessage",
                "createdAt",
                "updatedAt",
                "lastHeartbeatAt",
                "jobGroup",
                "creator",
                "sampleSize",
            } <= set(job)
            assert job["jobGroup"] == {"id": gid} and job["percentComplete"] == 100
        assert jobs[0]["executionLanguage"] == "photon" and "writeSetting" in jobs[1]
        assert (await client.get(f"/v4/jobs/{ids[0]}/status")).json() == "Complete"
        assert (await client.get(f"/v4/jobs/{gid}/status")).status_code == 404
        assert (await client.get(f"/v4/jobGroups/{ids[0]}")).status_code == 404

    run_with(tmp_path, body)


def test_cancel_stops_jobs_and_is_a_noop_when_terminal(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        created = (await client.post("/v4/jobGroups", json=SEED_33)).json()
        gid, ids = created["id"], [j["id"] for j in created["jobs"]["data"]]
        clock.advance(0.5)
        r = await client.post(f"/v4/jobGroups/{gid}/cancel")
        assert r.status_code == 200 and r.json() == {"jobIds": ids, "jobgroupId": gid}
        clock.advance(10)
        assert (await client.get(f"/v4/jobGroups/{gid}/status")).json() == "Canceled"
        jobs = (await client.get(f"/v4/jobGroups/{gid}/jobs")).json()["data"]
        assert {j["status"] for j in jobs} == {"Canceled"}
        assert (await client.get(f"/v4/jobGroups/{gid}/outputs")).json()["files"] == []
        assert not (tmp_path / "_buckets").exists()
        done = (await client.post("/v4/jobGroups", json=SEED_33)).json()["id"]
        clock.advance(10)
        r = await client.post(f"/v4/jobGroups/{done}/cancel")
        assert r.json() == {"jobIds": [], "jobgroupId": done}
        assert (await client.get(f"/v4/jobGroups/{done}/status")).json() == "Complete"

    run_with(tmp_path, body)


def test_list_limit_offset_sort_count_and_embed(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, clock: FakeClock) -> None:
        ids = []
        for _ in range(30):
            ids.append(
                (await client.post("/v4/jobGroups", json={"wrangledDataset": {"id": 7}})).json()[
                    "id"
                ]
            )
            clock.advance(0.01)
        page = (await client.get("/v4/jobGroups")).json()
        assert [g["id"] for g in page["data"]] == ids[::-1][:25] and "count" not in page
        page = (await client.get("/v4/jobGroups?sort=id&limit=5&offset=3&includeCount=true")).json()
        assert [g["id"] for g in page["data"]] == ids[3:8] and page["count"] == 30
        page = (await client.get("/v4/jobGroups?sort=createdAt&limit=2&embed=jobs")).json()
        assert [g["id"] for g in page["data"]] == ids[:2]
        assert len(page["data"][0]["jobs"]["data"]) == 2
        assert_envelope(await client.get("/v4/jobGroups?sort=name"), 400, "ValidationFailed")
        assert_envelope(await client.get("/v4/jobGroups?limit=x"), 400, "ValidationFailed")

    run_with(tmp_path, body, quota_user_per_min=0, quota_workspace_per_min=0)


def test_oracle_lists_groups_and_reset_forgets_them(tmp_path: Path) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        await client.post("/v4/jobGroups", json=SEED_33, headers={"x-execution-id": "e1"})
        groups = (await client.get("/_emulator/jobGroups")).json()["data"]
        assert groups[0]["executionId"] == "e1" and groups[0]["wrangledDataset"] == {"id": 33}
        assert groups[0]["runParameters"] == SEED_33["runParameters"]
        assert groups[0]["overrides"] == SEED_33["overrides"]
        assert groups[0]["status"] == "Created" and "createdAt" in groups[0]
        async with httpx.AsyncClient(transport=client._transport, base_url="http://e") as anon:
            assert (await anon.post("/_emulator/reset")).status_code == 200  # no auth needed
        stats = (await client.get("/_emulator/stats")).json()
        assert stats["created"] == 0 and stats["posts_received"] == 0
        r = await client.post("/v4/jobGroups", json=SEED_33, headers={"x-execution-id": "e1"})
        assert r.status_code == 201 and r.json()["id"] > groups[0]["id"]

    run_with(tmp_path, body)


@pytest.mark.parametrize(
    "bad", [[1, 2], {"overrides": {"data": "x"}}, {"overrides": {"data": [{"value": "1"}]}}]
)
def test_malformed_run_parameters_are_rejected(tmp_path: Path, bad: object) -> None:
    async def body(client: httpx.AsyncClient, _: FakeClock) -> None:
        r = await client.post(
            "/v4/jobGroups", json={"wrangledDataset": {"id": 33}, "runParameters": bad}
        )
        assert_envelope(r, 400, "ValidationFailed")

    run_with(tmp_path, body)
