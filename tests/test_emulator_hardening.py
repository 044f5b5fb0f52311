"""The emulator against hostile or careless peers: deep JSON, huge bodies, no credentials, and run
parameters that try to read outside a custom catalog's folder."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sweeper.emulator import EmulatorSettings, create_app
from sweeper.emulator.catalog import RecipeError, UnsafeSourceError, load_catalog
from tests.emulator_server import FakeClock, asgi_client, running_emulator

TOKEN = "hardening-token-1234"
AUTH = [(b"authorization", f"Bearer {TOKEN}".encode())]
MINIMAL = {"wrangledDataset": {"id": 7}}

Receive = Callable[[], Awaitable[dict[str, Any]]]


def _settings(tmp_path: Path, **extra: Any) -> EmulatorSettings:
    options: dict[str, Any] = {
        "output_root": tmp_path,
        "clock": FakeClock(),
        "token": TOKEN,
        "quota_user_per_min": 0,
        "quota_workspace_per_min": 0,
        **extra,
    }
    return EmulatorSettings(**options)


def _envelope(status: int, body: bytes, expected: int, name: str) -> dict[str, Any]:
    assert status == expected, body
    exception = json.loads(body)["exception"]
    assert set(exception) == {"name", "message", "details"}
    assert exception["name"] == name
    return dict(exception)


async def _raw_post(app: Any, headers: list[tuple[bytes, bytes]], receive: Receive) -> Any:
    """POST /v4/jobGroups through the ASGI interface itself, with our own ``receive``."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v4/jobGroups",
        "raw_path": b"/v4/jobGroups",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"emulator"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("emulator", 80),
    }
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = sent[0]["status"]
    return status, b"".join(m.get("body", b"") for m in sent[1:])


def _stats(app: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        async with asgi_client(app, token=TOKEN) as client:
            return dict((await client.get("/_emulator/stats")).json())

    return asyncio.run(go())


# --- deeply nested JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deeply_nested_body_is_400_not_500(tmp_path: Path, depth: int) -> None:
    app = create_app(_settings(tmp_path))
    raw = b'{"wrangledDataset": {"id": 7}, "x": ' + b"[" * depth + b"]" * depth + b"}"
    assert len(raw) < 1024 * 1024  # the size limit is not what answers here

    async def go() -> httpx.Response:
        async with asgi_client(app, token=TOKEN) as client:
            return await client.post("/v4/jobGroups", content=raw)

    r = asyncio.run(go())
    exception = _envelope(r.status_code, r.content, 400, "ValidationFailed")
    assert "nested more than 64 levels" in exception["details"]
    assert _stats(app)["created"] == 0


def test_ordinary_nesting_is_still_accepted(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    body = {**MINIMAL, "overrides": {"writesettings": [{"path": "a.csv", "x": [[[[{}]]]]}]}}

    async def go() -> httpx.Response:
        async with asgi_client(app, token=TOKEN) as client:
            return await client.post("/v4/jobGroups", json=body)

    assert asyncio.run(go()).status_code == 201


# --- body size limit ------------------------------------------------------------------------------


def test_declared_content_length_over_the_limit_is_413_without_reading(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    received: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append({})
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    headers = [*AUTH, (b"content-length", str(50 * 1024 * 1024).encode())]
    status, body = asyncio.run(_raw_post(app, headers, receive))
    exception = _envelope(status, body, 413, "PayloadTooLarge")
    assert str(1024 * 1024) in exception["details"]
    assert received == []  # not one byte of the body was read
    assert _stats(app)["created"] == 0


def test_chunked_body_is_counted_while_streaming(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path, max_body_bytes=1000))
    chunks = 0

    async def receive() -> dict[str, Any]:  # an endless chunked body
        nonlocal chunks
        chunks += 1
        if chunks > 10_000:  # a guard so the old behaviour ends instead of looping forever
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": b"x" * 100, "more_body": True}

    status, body = asyncio.run(_raw_post(app, AUTH, receive))
    _envelope(status, body, 413, "PayloadTooLarge")
    assert chunks == 11  # 1000 bytes are allowed; the 11th chunk crosses the limit


def test_a_body_of_exactly_the_limit_is_accepted(tmp_path: Path) -> None:
    limit = 2000
    app = create_app(_settings(tmp_path, max_body_bytes=limit))
    exact = json.dumps(MINIMAL).encode().ljust(limit)  # JSON allows trailing whitespace

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with asgi_client(app, token=TOKEN) as client:
            ok = await client.post("/v4/jobGroups", content=exact)
            over = await client.post("/v4/jobGroups", content=exact + b" ")
            return ok, over

    ok, over = asyncio.run(go())
    assert ok.status_code == 201, ok.text
    _envelope(over.status_code, over.content, 413, "PayloadTooLarge")


def _exchange(base_url: str, request: bytes, then: list[bytes]) -> bytes:
    """Send a request head (and maybe some body) on a raw socket; return what the server says.

    The body is never completed, so an answer proves the server did not wait for it.
    """
    parts = urlsplit(base_url)
    assert parts.hostname == "127.0.0.1" and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        for chunk in then:
            try:
                sock.sendall(chunk)
            except OSError:  # the server may already have answered and closed
                break
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    return answer


def _status_and_body(answer: bytes) -> tuple[int, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.timeout(60)
def test_over_http_a_huge_declared_body_is_answered_413_at_once(tmp_path: Path) -> None:
    with running_emulator(_settings(tmp_path)) as url:
        head = (
            b"POST /v4/jobGroups HTTP/1.1\r\nHost: emulator\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        status, body = _status_and_body(_exchange(url, head, [b"{"]))
    _envelope(status, body, 413, "PayloadTooLarge")


@pytest.mark.timeout(60)
def test_over_http_a_chunked_body_past_the_limit_is_413(tmp_path: Path) -> None:
    with running_emulator(_settings(tmp_path, max_body_bytes=4096)) as url:
        head = (
            b"POST /v4/jobGroups HTTP/1.1\r\nHost: emulator\r\n"
            + f"Authorization: Bearer {TOKEN}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"3e8\r\n" + b" " * 1000 + b"\r\n"  # 1000 bytes; the last chunk is never sent
        status, body = _status_and_body(_exchange(url, head, [chunk] * 8))
    _envelope(status, body, 413, "PayloadTooLarge")


# --- credentials before the body ------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    [[], [(b"authorization", b"Bearer not-the-token")]],
    ids=["none", "wrong"],
)
def test_credentials_are_checked_before_the_body_is_read(
    tmp_path: Path, auth: list[tuple[bytes, bytes]]
) -> None:
    app = create_app(_settings(tmp_path))
    received: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        received.append({})
        return {"type": "http.request", "body": json.dumps(MINIMAL).encode(), "more_body": False}

    headers = [*auth, (b"content-length", str(50 * 1024 * 1024).encode())]
    status, body = asyncio.run(_raw_post(app, headers, receive))
    _envelope(status, body, 401, "AuthenticationFailed")  # not 413: nobody asked who it was
    assert received == []


# --- catalog sources stay in the catalog's folder -------------------------------------------------


def _catalog(tmp_path: Path, source: str) -> Path:
    folder = tmp_path / "catalog"
    (folder / "input").mkdir(parents=True)
    (folder / "input" / "DE.csv").write_text("id,status\n1,open\n")
    (tmp_path / "secret.csv").write_text("id,status\n42,top-secret\n")
    catalog = folder / "catalog.toml"
    catalog.write_text(
        f'[datasets.500]\nname = "mine"\nsource = "{source}"\n'
        '[datasets.500.parameters]\nCountry = "DE"\n'
    )
    return catalog


def _post_500(tmp_path: Path, catalog: Path, **values: str) -> tuple[httpx.Response, Any]:
    app = create_app(_settings(tmp_path / "emu", catalog_path=catalog))
    data = [{"key": k, "value": v} for k, v in values.items()]
    body = {
        "wrangledDataset": {"id": 500},
        "runParameters": {"overrides": {"data": data}},
        "overrides": {"writesettings": [{"path": "o.csv", "format": "csv", "asSingleFile": True}]},
    }

    async def go() -> httpx.Response:
        async with asgi_client(app, token=TOKEN) as client:
            return await client.post("/v4/jobGroups", json=body)

    return asyncio.run(go()), app


@pytest.mark.parametrize(
    "country", ["../../secret", "../secret", "/etc/passwd", "a\\..\\..\\secret", "DE\x00"]
)
def test_a_run_parameter_cannot_move_the_source_outside_the_catalog(
    tmp_path: Path, country: str
) -> None:
    catalog = _catalog(tmp_path, "input/{Country}.csv")
    r, app = _post_500(tmp_path, catalog, Country=country)
    exception = _envelope(r.status_code, r.content, 400, "ValidationFailed")
    assert "Country" in exception["details"] and "outside its folder" in exception["details"]
    assert _stats(app)["created"] == 0
    assert not list((tmp_path / "emu").rglob("o.csv"))


def test_placeholders_that_join_into_dot_dot_are_refused(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, "input/{A}{B}/secret.csv")
    r, _ = _post_500(tmp_path, catalog, A=".", B=".")
    exception = _envelope(r.status_code, r.content, 400, "ValidationFailed")
    assert "'..'" in exception["details"] or "'.' or '..'" in exception["details"]


def test_a_plain_value_still_reads_its_source(tmp_path: Path) -> None:
    catalog = _catalog(tmp_path, "input/{Country}.csv")
    r, _ = _post_500(tmp_path, catalog, Country="DE")
    assert r.status_code == 201, r.text


def test_the_wrangle_job_also_refuses_an_unsafe_source(tmp_path: Path) -> None:
    """Defence in depth: a group stored before the POST check still cannot read outside."""
    dataset = load_catalog(_catalog(tmp_path, "input/{Country}.csv"))[500]
    with pytest.raises(UnsafeSourceError) as info:
        dataset.run({"Country": "../../secret"})
    assert isinstance(info.value, RecipeError)  # so it fails the job instead of crashing
    assert dataset.source_path({"Country": "DE"}) == tmp_path / "catalog" / "input" / "DE.csv"
