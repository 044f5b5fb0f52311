"""OAuth refresh-token rotation: the token file follows it, under a lock, across sweeps."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import itertools
import logging
import os
import re
import sqlite3
import stat
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

import sweeper
from sweeper.auth import OAuthRefreshAuth, build_auth, write_token_file
from sweeper.client import DataprepClient
from sweeper.config import ApiSettings
from sweeper.emulator import EmulatorSettings, create_app
from sweeper.errors import AuthError
from sweeper.ledger import current_state, read_ledger, state_of
from sweeper.state import State
from tests.conftest import FAST_RUN
from tests.emulator_server import FakeClock
from tests.reliab_support import created_groups, served_emulator, stats, sweeper_argv, write_sweep

FIRST = "first-refresh-token-0123456789"
BASE = "http://127.0.0.1"
TOKEN_URL = f"{BASE}/as/token"


def _app(tmp_path: Path, clock: Any = None, **settings: Any) -> Any:
    return create_app(
        EmulatorSettings(
            output_root=tmp_path,
            token="the-only-static-token",  # issued access tokens must work besides it
            oauth_refresh_token=FIRST,
            clock=clock,
            **settings,
        )
    )


def _token_file(tmp_path: Path, token: str = FIRST) -> Path:
    path = tmp_path / "refresh-token"
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def _always_stale() -> Any:
    """A clock that jumps 1000 s per reading: every request finds its access token expired."""
    ticks = itertools.count(step=1000.0)
    return lambda: float(next(ticks))


def _auth(path: Path | None, refresh: str = FIRST, clock: Any = None) -> OAuthRefreshAuth:
    return OAuthRefreshAuth(
        token_url=TOKEN_URL,
        refresh_token=refresh,
        client_id="sweeper-test",
        token_file=path,
        clock=clock or _always_stale(),
    )


async def _calls(app: Any, auth: httpx.Auth, count: int) -> list[Any]:
    transport = httpx.ASGITransport(app=app)
    async with DataprepClient(BASE, auth=auth, transport=transport) as client:
        out: list[Any] = []
        for _ in range(count):
            try:
                out.append(await client.list_job_library(limit=1))
            except AuthError as exc:
                out.append(exc)
        return out


def test_the_token_endpoint_rotates_and_its_access_tokens_are_accepted(tmp_path: Path) -> None:
    clock = FakeClock()
    app = _app(tmp_path, clock)

    async def go() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as c:
            form = {"grant_type": "refresh_token", "refresh_token": FIRST, "client_id": "x"}
            first = await c.post("/as/token", data=form)
            assert first.status_code == 200
            pair = first.json()
            assert pair["expires_in"] == 300 and pair["refresh_token"] != FIRST
            again = await c.post("/as/token", data=form)  # the old refresh token is dead
            assert again.status_code == 401 and again.json()["error"] == "invalid_grant"
            unknown = await c.post("/as/token", data=form | {"refresh_token": "made-up-token"})
            assert unknown.status_code == 401
            bearer = {"Authorization": f"Bearer {pair['access_token']}"}
            assert (await c.get("/v4/jobLibrary", headers=bearer)).status_code == 200
            clock.advance(301)  # access tokens live 5 minutes
            expired = await c.get("/v4/jobLibrary", headers=bearer)
            assert expired.status_code == 401
            assert pair["access_token"] not in expired.text
            nxt = await c.post("/as/token", data=form | {"refresh_token": pair["refresh_token"]})
            assert nxt.status_code == 200
            assert (await c.post("/as/token", data={"grant_type": "password"})).status_code == 400
            counts = (await c.get("/_emulator/stats")).json()
            assert (counts["oauth_refreshes"], counts["oauth_refreshes_refused"]) == (2, 2)

    asyncio.run(go())


def test_two_sweeps_in_two_threads_keep_working_from_one_rotating_token_file(
    tmp_path: Path,
) -> None:
    """Two sweeps in one process, every request refreshing first: quick, with an exact count."""
    app = _app(tmp_path)
    path = _token_file(tmp_path)
    results: dict[str, list[Any]] = {}

    def sweep(name: str) -> None:
        # Each "sweep" has its own event loop, client and in-memory copy of the refresh token.
        results[name] = asyncio.run(_calls(app, _auth(path), 12))

    threads = [threading.Thread(target=sweep, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(results) == {"a", "b"}
    for answers in results.values():
        assert all(isinstance(a, list) for a in answers), answers
    stats = app.state.emulator.store.query(
        "SELECT value FROM counters WHERE name = 'oauth_refreshes'"
    )
    assert int(stats[0]["value"]) == 24  # every request refreshed, none with a dead token
    # The file holds the live token, only its owner can read it, and no temporary is left.
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("refresh", "."))) == [
        "refresh-token",
        "refresh-token.lock",
    ]
    assert asyncio.run(_calls(app, _auth(path, refresh="stale-in-memory-token"), 1))[0] == []


def test_a_sweep_that_finds_the_file_rotated_uses_the_new_token(tmp_path: Path) -> None:
    app = _app(tmp_path)
    path = _token_file(tmp_path)
    early, late = _auth(path), _auth(path)  # both read FIRST at start
    assert asyncio.run(_calls(app, early, 1)) == [[]]
    assert path.read_text().strip() != FIRST
    assert asyncio.run(_calls(app, late, 1)) == [[]]  # re-read under the lock, not FIRST


def test_without_a_token_file_the_second_sweep_is_locked_out(tmp_path: Path) -> None:
    """Why the file matters: two copies of one rotating token in memory cannot both live."""
    app = _app(tmp_path)
    early, late = _auth(None), _auth(None)
    assert asyncio.run(_calls(app, early, 1)) == [[]]
    (answer,) = asyncio.run(_calls(app, late, 1))
    assert isinstance(answer, AuthError) and answer.status_code == 401


def test_a_failed_refresh_is_one_auth_error_naming_the_file(tmp_path: Path) -> None:
    app = _app(tmp_path)
    path = _token_file(tmp_path, "revoked-refresh-token-0123")
    seen: list[str] = []

    class Spy(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            return await httpx.ASGITransport(app=app).handle_async_request(request)

    async def go() -> Any:
        async with DataprepClient(BASE, auth=_auth(path), transport=Spy()) as client:
            return await client.list_job_library()

    with pytest.raises(AuthError) as caught:
        asyncio.run(go())
    message = str(caught.value)
    assert str(path) in message and "revoked-refresh-token-0123" not in message
    assert seen == ["/as/token"]  # one refresh, no request with a dead token, no loop
    assert path.read_text().strip() == "revoked-refresh-token-0123"  # left for the user


def test_build_auth_reads_the_refresh_token_from_the_token_file(tmp_path: Path) -> None:
    path = _token_file(tmp_path)
    api = ApiSettings(base_url=BASE, auth="oauth", token_url=TOKEN_URL, token_file=path)
    env = {"DATAPREP_CLIENT_ID": "cid", "DATAPREP_REFRESH_TOKEN": "env-refresh-token-0123"}
    auth = build_auth(api, env)
    assert isinstance(auth, OAuthRefreshAuth)
    app = _app(tmp_path)
    assert asyncio.run(_calls(app, auth, 1)) == [[]]  # FIRST (the file's) worked, not the env's
    assert path.read_text().strip() not in (FIRST, "env-refresh-token-0123")


def test_write_token_file_replaces_atomically_with_mode_0600(tmp_path: Path) -> None:
    target = tmp_path / "real"
    target.write_text("old\n")
    target.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    write_token_file(link, "new-token-value")
    assert link.is_symlink() and target.read_text() == "new-token-value\n"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_a_token_file_that_cannot_be_updated_warns_without_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full_disk(path: Path, token: str) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("sweeper.auth.write_token_file", full_disk)
    app = _app(tmp_path)
    path = _token_file(tmp_path)
    auth = _auth(path, clock=lambda: 0.0)  # refreshes once, then the access token is fresh
    with caplog.at_level(logging.WARNING, logger="sweeper.auth"):
        answers = asyncio.run(_calls(app, auth, 2))
    assert answers == [[], []]  # the run goes on with the rotated token in memory
    (record,) = [r for r in caplog.records if r.name == "sweeper.auth"]
    text = record.getMessage()
    assert str(path) in text and "No space left" in text and "new OAuth token pair" in text
    assert FIRST not in text and auth._refresh_token not in text


def _oauth_sweep(write_config: Callable[[str], Path], token_file: Path) -> Path:
    return write_config(
        f"""
        [sweep]
        name = "rotate"
        dataset = 33
        [api]
        base_url = "{BASE}"
        auth = "oauth"
        token_url = "{TOKEN_URL}"
        token_file = "{token_file}"
        [matrix]
        Region = ["01", "02", "03"]
        """
        + FAST_RUN
    )


def test_a_sweep_refreshes_from_the_token_file_and_leaves_the_rotated_token(
    write_config: Any, tmp_path: Path
) -> None:
    app = _app(tmp_path)
    path = _token_file(tmp_path)
    config = _oauth_sweep(write_config, path)
    env = {"DATAPREP_CLIENT_ID": "cid"}
    summary = sweeper.run(config, environ=env, transport=httpx.ASGITransport(app=app))
    assert summary.succeeded == 3
    assert path.read_text().strip() != FIRST
    again = sweeper.run(config, environ=env, transport=httpx.ASGITransport(app=app))
    assert again.exit_code == 0  # a second sweep starts from the rotated token


def test_a_sweep_whose_refresh_token_is_dead_stops_with_exit_1_naming_the_file(
    write_config: Any, tmp_path: Path
) -> None:
    app = _app(tmp_path)
    path = _token_file(tmp_path, "revoked-refresh-token-0123")
    config = _oauth_sweep(write_config, path)
    summary = sweeper.run(
        config, environ={"DATAPREP_CLIENT_ID": "cid"}, transport=httpx.ASGITransport(app=app)
    )
    assert int(summary.exit_code) == 1
    assert str(path) in summary.aborted and "revoked-refresh-token-0123" not in summary.aborted
    assert "401" in summary.aborted  # the token endpoint's answer, reported once


# Two `sweeper run` processes, one token file, the emulator served in a third process. ------------

# The emulator's access tokens live 30 s, and sweeper refreshes 30 s before an access token
# expires: so every request of both processes refreshes first, about 60 refreshes each over the
# 3 s the sweeps submit, interleaved. (31 s would refresh about once a second per process, and a
# broken lock would pass in about half the runs.)
ACCESS_SECONDS = 30
PER_SWEEP = 32  # combinations of each sweep
SWEEPS = {"north": '["01", "02", "03", "04"]', "south": '["05", "06", "07", "08"]'}
# Tokens the emulator issues are secrets.token_urlsafe(32): 43 characters of this alphabet.
_TOKEN_LENGTH = 43
_URLSAFE_RUN = re.compile(rf"[A-Za-z0-9_-]{{{_TOKEN_LENGTH},}}")
_TOKEN_CALL = re.compile(r'HTTP Request: POST \S+/as/token "HTTP/1\.1 (\d{3})')


def _issued_tokens_in(text: str, digests: set[str]) -> int:
    """How many tokens the emulator issued (known by their SHA-256) appear in ``text``."""
    found = 0
    for run in _URLSAFE_RUN.findall(text):
        for start in range(len(run) - _TOKEN_LENGTH + 1):
            window = run[start : start + _TOKEN_LENGTH]
            found += hashlib.sha256(window.encode()).hexdigest() in digests
    return found


def _issued_digests(state: Path) -> set[str]:
    """The SHA-256 of every access and refresh token the emulator issued (it stores no token)."""
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
        return {str(row[0]) for row in conn.execute("SELECT digest FROM oauth_tokens")}


@pytest.mark.timeout(90)
def test_two_sweep_processes_keep_working_from_one_rotating_token_file(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    path = _token_file(secrets_dir)
    server = tmp_path / "server"
    with served_emulator(
        server,
        token="static-token-no-sweep-knows-0123",  # so only issued access tokens are accepted
        args=[
            *("--quota-user", "0", "--quota-workspace", "0", "--time-scale", "4"),
            *("--access-token-seconds", str(ACCESS_SECONDS)),
            *("--oauth-refresh-token-env", "ROTATION_FIRST_REFRESH_TOKEN"),
        ],
        env={"ROTATION_FIRST_REFRESH_TOKEN": FIRST},
    ) as url:
        project = tmp_path / "project"
        configs = {
            name: write_sweep(
                project / f"{name}.toml",
                name=name,
                base_url=url,
                matrix=f"Region = {regions}\nbatch = {{ start = 1, end = {PER_SWEEP // 4} }}",
                run={"rate": "600/min", "concurrency": 4},
                token_env="ROTATION_ACCESS_TOKEN",  # unset: every access token is refreshed
                api={"auth": "oauth", "token_url": f"{url}/as/token", "token_file": str(path)},
            )
            for name, regions in SWEEPS.items()
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATAPREP_", "ROTATION_"))}
        env["DATAPREP_CLIENT_ID"] = "sweeper-rotation-test"
        logs: list[IO[bytes]] = []
        procs: dict[str, subprocess.Popen[bytes]] = {}
        try:
            for name, config in configs.items():
                out = (tmp_path / f"{name}.stdout").open("wb")
                err = (tmp_path / f"{name}.stderr").open("wb")
                logs += [out, err]
                # -vv: httpx logs every token-endpoint call, and more text to search for tokens.
                argv = sweeper_argv("run", str(config), "--run-id", "r1", "-vv")
                procs[name] = subprocess.Popen(argv, cwd=project, env=env, stdout=out, stderr=err)
            deadline = time.monotonic() + 60
            codes = {
                name: proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                for name, proc in procs.items()
            }
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            for handle in logs:
                handle.close()
        output = {
            name: (tmp_path / f"{name}.stdout").read_text("utf-8", "replace")
            + (tmp_path / f"{name}.stderr").read_text("utf-8", "replace")
            for name in SWEEPS
        }
        counters = stats(url)
        groups = created_groups(url)
        digests = _issued_digests(server / "emulator.sqlite")
        final = path.read_text(encoding="utf-8").strip()
        # The token file holds the one live refresh token: the emulator accepts it now.
        form = {"grant_type": "refresh_token", "refresh_token": final, "client_id": "check"}
        live = httpx.post(f"{url}/as/token", data=form, timeout=10)

    for name, code in codes.items():
        stdout = (tmp_path / f"{name}.stdout").read_text("utf-8", "replace")
        assert code == 0, f"{name} exited {code}:\n{stdout}\n...{output[name][-2000:]}"
    # Every combination of both sweeps succeeded, and the emulator created each exactly once.
    for name in SWEEPS:
        ledger = project / "results" / f"{name}.csv"
        states = Counter(state_of(row) for row in current_state(read_ledger(ledger)).values())
        assert states == {State.SUCCEEDED: PER_SWEEP}, (name, states)
    per_combo = Counter(tuple(sorted(g["params"].items())) for g in groups)
    assert len(per_combo) == 2 * PER_SWEEP and set(per_combo.values()) == {1}, per_combo
    assert counters["created"] == 2 * PER_SWEEP
    assert counters["duplicate_creations_by_params"] == 0
    # The refresh token rotated many times, from both processes, and no refresh was refused.
    refreshes = {name: Counter(_TOKEN_CALL.findall(text)) for name, text in output.items()}
    print(f"token endpoint answers per process: {refreshes}; emulator: {counters}")
    assert all(set(calls) == {"200"} for calls in refreshes.values()), refreshes
    assert all(calls["200"] >= 3 for calls in refreshes.values()), refreshes
    assert counters["oauth_refreshes"] == sum(c["200"] for c in refreshes.values()), counters
    assert counters["oauth_refreshes_refused"] == 0
    assert live.status_code == 200, live.text
    assert final != FIRST
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in secrets_dir.iterdir()) == ["refresh-token", "refresh-token.lock"]
    # No token, issued or the first, in what either process printed or any file a sweep wrote.
    assert len(digests) >= 2 * counters["oauth_refreshes"]
    assert _issued_tokens_in(f"leaked:{final}.", digests) == 1  # the search does find one
    written = {
        str(p.relative_to(project)): p.read_text("utf-8", "replace")
        for p in (project / "results").rglob("*")
        if p.is_file()
    }
    assert any(name.endswith("north.csv") for name in written), sorted(written)
    for where, text in {**output, **written}.items():
        assert FIRST not in text and final not in text, where
        assert _issued_tokens_in(text, digests) == 0, where
