"""The real uvicorn server on a free loopback port, driven with plain httpx."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from sweeper.emulator import EmulatorSettings, FaultSettings

try:
    from tests.emulator_server import SEED_OVERRIDES_AND_PARAMETERS, FakeClock, running_emulator
except ImportError:  # pragma: no cover
    from emulator_server import (  # type: ignore[no-redef]
        SEED_OVERRIDES_AND_PARAMETERS,
        FakeClock,
        running_emulator,
    )
from tests.reliab_support import served_emulator

AUTH = {"Authorization": "Bearer t0ken"}
MINIMAL = {"wrangledDataset": {"id": 7}}
OVERRIDES_AND_PARAMETERS = SEED_OVERRIDES_AND_PARAMETERS
WRITESETTINGS_SPELLING = {
    "wrangledDataset": {"id": 33},
    "overrides": {
        "execution": "photon",
        "profiler": True,
        "writeSettings": [
            {
                "path": "results/run/region-03-TEST.json.gz",
                "action": "create",
                "format": "json",
                "compression": "gzip",
                "asSingleFile": True,
            },
            {
                "path": "results/run/region-03-TEST.csv",
                "action": "create",
                "format": "csv",
                "compression": "none",
                "header": True,
                "asSingleFile": True,
            },
        ],
    },
    "runParameters": {
        "overrides": {
            "data": [{"key": "Region", "value": "03"}, {"key": "varReferenceType", "value": "TEST"}]
        }
    },
}


def settings(tmp_path: Path, **extra: Any) -> EmulatorSettings:
    return EmulatorSettings(output_root=tmp_path, **extra)


def post(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/v4/jobGroups", json=body, headers=headers)


def test_seed_bodies_profiling_and_outputs_over_http(tmp_path: Path) -> None:
    clock = FakeClock()
    with (
        running_emulator(settings(tmp_path, clock=clock)) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=5) as client,
    ):
        answers = [
            post(client, b) for b in (MINIMAL, OVERRIDES_AND_PARAMETERS, WRITESETTINGS_SPELLING)
        ]
        for r in answers:
            assert r.status_code == 201, r.text
            assert set(r.json()) == {"sessionId", "reason", "jobGraph", "id", "jobs"}
            assert r.json()["reason"] == "JobStarted" and r.headers["x-trifacta-request-id"]
        assert [len(r.json()["jobs"]["data"]) for r in answers] == [2, 2, 4]
        profiled = answers[2].json()["id"]
        clock.advance(30)
        jobs = client.get(f"/v4/jobGroups/{profiled}/jobs").json()["data"]
        assert [j["jobType"] for j in jobs] == ["wrangle", "filewriter", "filewriter", "profile"]
        assert client.get(f"/v4/jobGroups/{profiled}/status").json() == "Complete"
        with gzip.open(tmp_path / "results/run/region-03-TEST.json.gz") as handle:
            frame = pd.read_json(handle, lines=True)
        assert len(frame) > 0 and set(frame["reference_type"]) == {"TEST"}
        csv = pd.read_csv(tmp_path / "results/run/region-03-TEST.csv", dtype={"region": str})
        assert csv.equals(frame.astype({"region": str})[list(csv.columns)]) or len(csv) == len(
            frame
        )
        assert (tmp_path / "_buckets/gs/bucket/out/run_02.csv").is_file()
        files = client.get(f"/v4/jobGroups/{profiled}/outputs").json()["files"]
        assert [f["path"] for f in files] == [
            "results/run/region-03-TEST.json.gz",
            "results/run/region-03-TEST.csv",
        ]


# Each quota bucket: its `sweeper emulator serve` options, a POST it counts, its default per-user
# limit. Flow 13 and plan 5 are in the packaged catalog.
QUOTAS = {
    "runJobGroup": ("--quota-user", "--quota-workspace", "/v4/jobGroups", MINIMAL, 30),
    "runFlow": ("--flow-quota-user", "--flow-quota-workspace", "/v4/flows/13/run", None, 20),
    "runPlan": ("--plan-quota-user", "--plan-quota-workspace", "/v4/plans/5/run", None, 30),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("endpoint", list(QUOTAS))
def test_quota_over_http_is_exactly_as_documented(tmp_path: Path, endpoint: str) -> None:
    """`sweeper emulator serve` with one bucket's quota options: 429 past its per-user count,
    with the documented headers and body, while the other buckets stay untouched."""
    user_flag, workspace_flag, route, body, _ = QUOTAS[endpoint]
    args = [user_flag, "2", workspace_flag, "5"]
    with (
        served_emulator(tmp_path, args=args) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=10) as client,
    ):
        ok = [client.post(route, json=body) for _ in range(2)]
        assert [r.status_code for r in ok] == [201, 201], ok[0].text
        assert ok[1].headers["x-rate-limit-user-remaining"] == "0"
        r = client.post(route, json=body)
        assert r.status_code == 429 and "retry-after" not in r.headers
        retry = int(r.headers["x-retry-after"])
        assert 1 <= retry <= 60
        for name in (
            "user-limit",
            "user-remaining",
            "user-reset",
            "workspace-limit",
            "workspace-remaining",
            "workspace-reset",
        ):
            assert r.headers[f"x-rate-limit-{name}"].isdigit()
        assert r.headers["x-rate-limit-user-limit"] == "2"
        assert r.headers["x-rate-limit-workspace-limit"] == "5"
        assert len(r.headers["x-rate-limit-user-reset"]) == 13  # epoch milliseconds
        assert r.json()["exception"] == {
            "name": "TooManyRequestsException",
            "message": "Too Many Requests",
            "details": f'API quota reached for "{endpoint}". Wait {retry} seconds before making '
            "a new request. (Max. 2 requests allowed per minute per user.)",
        }
        # The other buckets count nothing of this one's POSTs (nor of the job groups they ran).
        for other, (_, _, other_route, other_body, default) in QUOTAS.items():
            if other != endpoint:
                answer = client.post(other_route, json=other_body)
                assert answer.status_code == 201, (other, answer.text)
                assert answer.headers["x-rate-limit-user-limit"] == str(default), other
                assert answer.headers["x-rate-limit-user-remaining"] == str(default - 1), other
        stats = client.get("/_emulator/stats").json()
        counters = ("served_429", "served_429_run_flow", "served_429_run_plan")
        assert {k: stats[k] for k in counters} == {
            "served_429": 1,
            "served_429_run_flow": int(endpoint == "runFlow"),
            "served_429_run_plan": int(endpoint == "runPlan"),
        }
        accepted = {**dict.fromkeys(QUOTAS, 1), endpoint: 2}  # the refused POST created nothing
        assert stats["flow_runs_created"] == accepted["runFlow"]
        assert stats["plan_runs_created"] == accepted["runPlan"]


def test_injected_429_bursts(tmp_path: Path) -> None:
    faults = FaultSettings(rate_limit_every=3, rate_limit_burst=2, rate_limit_retry_after=4)
    with (
        running_emulator(settings(tmp_path, faults=faults)) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=5) as client,
    ):
        answers = [post(client, MINIMAL) for _ in range(7)]
        assert [r.status_code for r in answers] == [201, 201, 429, 429, 201, 429, 429]
        refused = answers[2]
        assert refused.headers["x-retry-after"] == "4" and "retry-after" not in refused.headers
        assert refused.json()["exception"]["name"] == "TooManyRequestsException"
        assert "Wait 4 seconds" in refused.json()["exception"]["details"]
        r = post(client, MINIMAL)
        assert r.status_code == 201
        stats = client.get("/_emulator/stats").json()
        assert stats["created"] == 4 and stats["served_429"] == 4
        assert stats["faults_served"] == {"rate_limit": 4}


def test_injected_5xx_before_and_after_creating(tmp_path: Path) -> None:
    for faults, created in (
        (FaultSettings(error_before_rate=1.0), 0),
        (FaultSettings(error_after_rate=1.0, error_status=502), 1),
    ):
        with (
            running_emulator(settings(tmp_path, faults=faults)) as url,
            httpx.Client(base_url=url, headers=AUTH, timeout=5) as client,
        ):
            r = post(client, MINIMAL, **{"x-execution-id": "e"})
            assert r.status_code == faults.error_status
            assert r.json()["exception"]["name"] == "InternalServerError"
            assert client.get("/_emulator/stats").json()["created"] == created
            if created:  # the retry with the same execution id learns that it exists
                assert post(client, MINIMAL, **{"x-execution-id": "e"}).status_code == 304


def test_dropped_connection_after_creating(tmp_path: Path) -> None:
    with running_emulator(settings(tmp_path, faults=FaultSettings(drop_after_rate=1.0))) as url:
        with httpx.Client(base_url=url, headers=AUTH, timeout=5) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                post(client, MINIMAL, **{"x-execution-id": "d"})
            # the retry with the same execution id is answered (only creations are dropped)
            assert post(client, MINIMAL, **{"x-execution-id": "d"}).status_code == 304
        stats = httpx.get(f"{url}/_emulator/stats").json()
        assert stats["created"] == 1 and stats["served_304"] == 1
        assert stats["faults_served"] == {"drop_after": 1}


# Each run endpoint's oracle: the counter of POSTs it received, its admin listing, the counter
# of what it created.
RUN_ORACLE = {
    "runJobGroup": ("posts_received", "jobGroups", "created"),
    "runFlow": ("flow_posts_received", "flowRuns", "flow_runs_created"),
    "runPlan": ("plan_posts_received", "planRuns", "plan_runs_created"),
}
# Each POST fault at rate 1.0, and whether the POST it hits creates what it asked for.
RUN_FAULTS = {
    "rate_limit": (FaultSettings(rate_limit_rate=1.0, rate_limit_retry_after=7), False),
    "error_before": (FaultSettings(error_before_rate=1.0, error_status=503), False),
    "error_after": (FaultSettings(error_after_rate=1.0, error_status=502), True),
    "drop_after": (FaultSettings(drop_after_rate=1.0), True),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fault", list(RUN_FAULTS))
@pytest.mark.parametrize("endpoint", list(QUOTAS))
def test_every_run_endpoint_takes_the_post_faults_alike(
    tmp_path: Path, endpoint: str, fault: str
) -> None:
    """runJobGroup, runFlow and runPlan answer each POST fault at the same step: an injected 429
    in the endpoint's own bucket and not counted against it; a 5xx before creating, counted,
    nothing created; a 5xx or a dropped connection after creating: the run exists, and the
    resend with the same execution id gets 304."""
    _, _, route, body, limit = QUOTAS[endpoint]
    received, listing, counter = RUN_ORACLE[endpoint]
    faults, creates = RUN_FAULTS[fault]
    state = tmp_path / "emulator.sqlite"
    xid = {"x-execution-id": f"{endpoint}-{fault}"}
    with (
        running_emulator(settings(tmp_path, state_path=state, faults=faults)) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=5) as client,
    ):
        if fault == "drop_after":
            with pytest.raises(httpx.RemoteProtocolError):
                client.post(route, json=body, headers=xid)
        else:
            answer = client.post(route, json=body, headers=xid)
        stats = client.get("/_emulator/stats").json()
        runs = client.get(f"/_emulator/{listing}").json()["data"]
        resend = client.post(route, json=body, headers=xid)

    assert stats[received] == 1 and stats["faults_served"] == {fault: 1}
    assert [r["executionId"] for r in runs] == ([xid["x-execution-id"]] if creates else [])
    assert stats[counter] == int(creates) and (stats["created"] > 0) == creates
    if creates:  # only the POST that created is hit; the resend learns that the run exists
        assert resend.status_code == 304
    else:
        assert resend.status_code == answer.status_code
    if fault == "error_before" or fault == "error_after":
        assert answer.status_code == faults.error_status
        problem = answer.json()["exception"]
        assert problem["name"] == "InternalServerError"
        assert problem["details"].startswith(f"Injected fault {fault.split('_')[1]} creating")
    if fault == "rate_limit":
        assert answer.status_code == 429 and "retry-after" not in answer.headers
        assert answer.headers["x-retry-after"] == "7"
        assert answer.headers["x-rate-limit-user-limit"] == str(limit)
        assert answer.headers["x-rate-limit-user-remaining"] == "0"
        assert answer.json()["exception"] == {
            "name": "TooManyRequestsException",
            "message": "Too Many Requests",
            "details": f'API quota reached for "{endpoint}". Wait 7 seconds before making a '
            f"new request. (Max. {limit} requests allowed per minute per user.)",
        }
        assert stats["served_429"] == 1
        assert stats["served_429_run_flow"] == int(endpoint == "runFlow")
        assert stats["served_429_run_plan"] == int(endpoint == "runPlan")

    # The same server without faults: its quota counted both POSTs, except injected 429s.
    with (
        running_emulator(settings(tmp_path, state_path=state)) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=5) as client,
    ):
        healthy = client.post(route, json=body)
    counted = 0 if fault == "rate_limit" else 2
    assert healthy.status_code == 201, healthy.text
    assert healthy.headers["x-rate-limit-user-remaining"] == str(limit - counted - 1)


def test_latency_makes_a_short_client_timeout_fire(tmp_path: Path) -> None:
    faults = FaultSettings(latency={"post": (0.4, 0.4)})
    with running_emulator(settings(tmp_path, faults=faults)) as url:
        with httpx.Client(base_url=url, headers=AUTH, timeout=0.05) as client:
            with pytest.raises(httpx.ReadTimeout):
                post(client, MINIMAL)  # in doubt: the server still creates the group
            assert client.get("/_emulator/stats").status_code == 200  # reads are not delayed
            assert client.get("/v4/jobGroups").status_code == 200
        with httpx.Client(base_url=url, headers=AUTH, timeout=5) as client:
            assert post(client, MINIMAL).status_code == 201
            stats = client.get("/_emulator/stats").json()
            assert stats["faults_served"] == {"latency": 2} and stats["created"] == 2


def test_failing_and_slow_jobs_over_http(tmp_path: Path) -> None:
    clock = FakeClock()
    faults = FaultSettings(
        fail_params={"Region": ("02",)}, slow_factor=10.0, slow_params={"Region": ("03",)}
    )
    with (
        running_emulator(settings(tmp_path, clock=clock, faults=faults)) as url,
        httpx.Client(base_url=url, headers=AUTH, timeout=5) as client,
    ):
        ids = {}
        for region in ("01", "02", "03"):
            body = {
                "wrangledDataset": {"id": 33},
                "runParameters": {"overrides": {"data": [{"key": "Region", "value": region}]}},
            }
            ids[region] = post(client, body).json()["id"]
        clock.advance(10)
        status = {k: client.get(f"/v4/jobGroups/{v}/status").json() for k, v in ids.items()}
        assert status == {"01": "Complete", "02": "Failed", "03": "InProgress"}
        jobs = client.get(f"/v4/jobGroups/{ids['02']}/jobs").json()["data"]
        assert "Injected fault" in jobs[0]["errorMessage"]
        faults_served = client.get("/_emulator/stats").json()["faults_served"]
        assert faults_served == {"job_fail": 1, "slow_job": 1}


def test_304_across_two_servers_on_one_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    with (
        running_emulator(settings(tmp_path, state_path=state)) as first,
        running_emulator(settings(tmp_path, state_path=state)) as second,
    ):
        a = httpx.post(
            f"{first}/v4/jobGroups", json=MINIMAL, headers={**AUTH, "x-execution-id": "s"}
        )
        b = httpx.post(
            f"{second}/v4/jobGroups", json=MINIMAL, headers={**AUTH, "x-execution-id": "s"}
        )
        assert (a.status_code, b.status_code) == (201, 304)
    with running_emulator(settings(tmp_path, state_path=state)) as third:
        c = httpx.post(
            f"{third}/v4/jobGroups", json=MINIMAL, headers={**AUTH, "x-execution-id": "s"}
        )
        assert c.status_code == 304
        assert httpx.get(f"{third}/_emulator/stats").json()["created"] == 1


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_serve_reports_its_url_and_returns_cleanly_on_a_signal(
    tmp_path: Path, signame: str
) -> None:
    import signal
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from sweeper.emulator import EmulatorSettings\n"
        "from sweeper.emulator.serve import serve\n"
        "serve(EmulatorSettings(output_root=Path(sys.argv[1])), port=0,\n"
        "      on_ready=lambda url: print(url, flush=True))\n"
        "print('returned', flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert httpx.get(f"{url}/_emulator/stats", timeout=5).status_code == 200
        proc.send_signal(getattr(signal, signame))
        out, _ = proc.communicate(timeout=10)
        assert proc.returncode == 0 and "returned" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_concurrent_duplicates_on_two_servers_sharing_a_state_file(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    state = tmp_path / "state.sqlite"
    with (
        running_emulator(settings(tmp_path, state_path=state)) as a,
        running_emulator(settings(tmp_path, state_path=state)) as b,
    ):

        def send(url: str) -> int:
            headers = {**AUTH, "x-execution-id": "race"}
            return httpx.post(f"{url}/v4/jobGroups", json=MINIMAL, headers=headers).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = sorted(pool.map(send, [a, b] * 4))
        assert codes == [201] + [304] * 7
        assert httpx.get(f"{a}/_emulator/stats").json()["created"] == 1


def test_the_serve_quota_defaults_are_the_settings_defaults() -> None:
    from sweeper.cli import EMULATOR_QUOTAS

    settings = EmulatorSettings()
    for prefix, _endpoint, user, workspace in EMULATOR_QUOTAS:
        field = prefix.replace("-", "_")
        assert getattr(settings, f"{field}_user_per_min") == user
        assert getattr(settings, f"{field}_workspace_per_min") == workspace
