"""OAuth refresh-token rotation: the token file follows it, under a lock, across sweeps."""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import sweeper
from sweeper.auth import OAuthRefreshAuth, build_auth, write_token_file
from sweeper.client import DataprepClient
from sweeper.config import ApiSettings
from sweeper.emulator import EmulatorSettings, create_app
from sweeper.errors import AuthError
from tests.conftest import FAST_RUN
from tests.emulator_server import FakeClock

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

    asyncio.run(go())


def test_two_sweeps_in_two_threads_keep_working_from_one_rotating_token_file(
    tmp_path: Path,
) -> None:
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
