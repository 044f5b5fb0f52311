"""Secrets never reach log output: the redact() function and the logging filter, end to end."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sweeper.auth import BearerAuth
from sweeper.client import DataprepClient
from sweeper.errors import ApiError
from sweeper.redact import (
    RedactingFilter,
    clear_secrets,
    install_redaction,
    redact,
    uninstall_redaction,
)

SENTINEL = "sentinel-9b7e55aa-0c41"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A DEBUG handler on the root logger (httpx/httpcore/sweeper at DEBUG), removed afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        uninstall_redaction()
        root.removeHandler(handler)
        root.setLevel(old_level)


def test_redact_masks_secrets_and_schemes() -> None:
    clear_secrets()
    try:
        install_redaction([SENTINEL, "", "  "])
        text = f"token={SENTINEL} Authorization: Bearer abc.def Basic dXNlcjpwdw== ok"
        assert redact(text) == "token=*** Authorization: Bearer *** Basic *** ok"
        assert redact("(b'Authorization', b'Bearer xyz')") == "(b'Authorization', b'Bearer ***')"
        assert redact("nothing secret here") == "nothing secret here"
    finally:
        uninstall_redaction()


def test_filter_masks_args_and_tracebacks(captured: io.StringIO) -> None:
    install_redaction([SENTINEL])
    log = logging.getLogger("sweeper.test")
    log.warning("token is %s", SENTINEL)
    try:
        raise RuntimeError(f"failed with {SENTINEL}")
    except RuntimeError:
        log.exception("boom")
    out = captured.getvalue()
    assert "token is ***" in out and "failed with ***" in out
    assert SENTINEL not in out


def test_without_redaction_the_sentinel_would_leak(captured: io.StringIO) -> None:
    """Guards the end-to-end tests below: they would see the token if the filter did nothing."""
    asyncio.run(_loopback_request())
    assert SENTINEL in captured.getvalue()


ECHOED: list[str] = []  # the Authorization headers the echo server sent back


async def _echo_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A minimal HTTP/1.1 server that echoes the Authorization header back in response headers."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    ECHOED.append(headers.get("authorization", ""))
    length = int(headers.get("content-length", "0"))
    if length:
        await asyncio.wait_for(reader.readexactly(length), timeout=5)
    body = (
        b'{"exception": {"name": "Boom", "message": "echo '
        + headers.get("authorization", "").encode()
        + b'"}}'
    )
    writer.write(
        b"HTTP/1.1 500 Internal Server Error\r\n"
        + b"x-echo-auth: "
        + headers.get("authorization", "").encode()
        + b"\r\n"
        + b"x-raw: "
        + headers.get("authorization", "").split(" ")[-1].encode()
        + b"\r\n"
        + b"content-type: application/json\r\n"
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\nconnection: close\r\n\r\n"
        + body
    )
    await writer.drain()
    writer.close()


async def _loopback_request() -> ApiError:
    """One POST through httpx's own transport, whose httpcore logs every header at DEBUG."""
    server = await asyncio.start_server(_echo_server, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with DataprepClient(
            f"http://127.0.0.1:{port}",
            auth=BearerAuth(SENTINEL),
            timeout=5.0,
        ) as client:
            with pytest.raises(ApiError) as info:
                await client.create_job_group({"wrangledDataset": {"id": 1}}, execution_id="e")
            return info.value
    finally:
        server.close()
        await server.wait_closed()


def test_real_loopback_request_at_debug_leaks_nothing(captured: io.StringIO) -> None:
    install_redaction([SENTINEL])
    ECHOED.clear()
    err = asyncio.run(_loopback_request())
    assert list(ECHOED) == [f"Bearer {SENTINEL}"]  # the token went out and came back in the answer
    out = captured.getvalue()
    assert "sweeper.client" in out  # the DEBUG loggers really spoke
    assert "receive_response_headers" in out
    assert SENTINEL not in out
    assert SENTINEL not in str(err)


def _json_handler(request: httpx.Request) -> httpx.Response:
    auth = request.headers.get("authorization", "")
    return httpx.Response(
        400,
        headers={"x-echo-auth": auth},
        json={"exception": {"name": "Bad", "message": f"you sent {auth}", "details": SENTINEL}},
    )


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    auth = dict(scope["headers"]).get(b"authorization", b"")
    body = b'{"exception": {"name": "Bad", "message": "you sent ' + auth + b'"}}'
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [(b"content-type", b"application/json"), (b"x-echo-auth", auth)],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize(
    "transport_factory",
    [lambda: httpx.MockTransport(_json_handler), lambda: httpx.ASGITransport(app=_asgi_app)],
    ids=["mock", "asgi"],
)
def test_mock_and_asgi_transports_leak_nothing(
    captured: io.StringIO, transport_factory: Any
) -> None:
    install_redaction([SENTINEL])

    async def go() -> ApiError:
        transport = transport_factory()
        async with DataprepClient(
            "http://emulator.invalid", auth=BearerAuth(SENTINEL), transport=transport
        ) as client:
            with pytest.raises(ApiError) as info:
                await client.get_job_group(3)
            logging.getLogger("sweeper.test").error("failed: %s", info.value)
            return info.value

    err = asyncio.run(go())
    out = captured.getvalue()
    assert "GET /v4/jobGroups/3" in out
    assert SENTINEL not in out
    assert SENTINEL not in str(err)


def test_filter_is_a_plain_logging_filter() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("Bearer zzz",), None)
    assert RedactingFilter().filter(record) is True
    assert record.getMessage() == "a Bearer ***"


def test_basic_credentials_echoed_without_the_scheme_are_masked(captured: io.StringIO) -> None:
    """A server that echoes only the base64 (or the decoded user:password) leaks nothing."""
    from sweeper.auth import build_auth, secrets
    from sweeper.config import ApiSettings

    api = ApiSettings(base_url="http://trifacta.invalid", auth="basic")
    env = {"DATAPREP_USERNAME": "ann", "DATAPREP_PASSWORD": SENTINEL}
    encoded = base64.b64encode(f"ann:{SENTINEL}".encode()).decode()

    def handler(request: httpx.Request) -> httpx.Response:
        sent = request.headers["authorization"].removeprefix("Basic ")
        assert sent == encoded  # the request really carried the credentials in this form
        message = f"credentials {sent} ({base64.b64decode(sent).decode()}) rejected"
        return httpx.Response(
            400,
            headers={"x-credential": sent, "x-unpadded": sent.rstrip("=")},
            json={"exception": {"name": "Bad", "message": message, "details": sent}},
        )

    install_redaction(secrets(api, env))

    async def go() -> ApiError:
        async with DataprepClient(
            api.base_url, auth=build_auth(api, env), transport=httpx.MockTransport(handler)
        ) as client:
            with pytest.raises(ApiError) as info:
                await client.get_job_group(3)
            logging.getLogger("sweeper.test").error("failed: %s", info.value)
            return info.value

    err = asyncio.run(go())
    out = captured.getvalue()
    assert "failed:" in out and "rejected" in str(err)
    for text in (out, str(err)):
        assert encoded not in text and encoded.rstrip("=") not in text
        assert SENTINEL not in text and f"ann:{SENTINEL}" not in text
