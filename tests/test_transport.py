"""LeanTransport against raw asyncio TCP servers: keep-alive, framing, and httpx error types."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest

from sweeper.client import DataprepClient
from sweeper.errors import ApiConnectionError, ApiInDoubtError
from sweeper.transport import LeanTransport

T = TypeVar("T")
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one test body in its own event loop, bounded to 10 seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(bounded())


# --- a raw HTTP/1.1 server ----------------------------------------------------------------------


@dataclass
class Req:
    """One request as it arrived on the wire (header names lower-cased)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name]
        assert len(values) <= 1, f"header {name} sent {len(values)} times"
        return values[0] if values else None


@dataclass
class ServerConn:
    """One accepted connection of a RawServer."""

    server: RawServer
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    index: int  # 0 for the first connection the server accepted

    async def read_request(self) -> Req | None:
        """The next request, parsed minimally; None (and counted) when the client closes."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.server.note_eof()
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip().lower(), value.strip()))
        length = int(dict(headers).get("content-length", "0"))
        body = await self.reader.readexactly(length) if length else b""
        req = Req(method, target, version, headers, body, self.index)
        self.server.requests.append(req)
        return req

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def wait_eof(self) -> None:
        """Wait until the client closes this connection (nothing else is expected on it)."""
        data = await self.reader.read()
        assert data == b"", f"unexpected bytes from the client: {data!r}"
        self.server.note_eof()

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[ServerConn], Awaitable[None]]


@dataclass
class RawServer:
    """asyncio TCP server on 127.0.0.1 that hands each connection to ``handler``."""

    handler: Handler
    connections: int = 0  # accepted
    eofs: int = 0  # connections the client closed (seen by read_request / wait_eof)
    requests: list[Req] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _eof_seen: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def note_eof(self) -> None:
        self.eofs += 1
        self._eof_seen.set()

    async def wait_eofs(self, count: int, timeout: float = 5.0) -> None:
        """Wait until the client has closed ``count`` connections."""

        async def wait() -> None:
            while self.eofs < count:
                self._eof_seen.clear()
                await self._eof_seen.wait()

        await asyncio.wait_for(wait(), timeout)

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = ServerConn(self, reader, writer, self.connections)
        self.connections += 1
        self._writers.append(writer)
        try:
            await self.handler(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Sequence[tuple[str, str]] = (),
    reason: str = "OK",
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def echo_path(conn: ServerConn) -> None:
    """Keep-alive server answering every request with its method and target."""
    while (req := await conn.read_request()) is not None:
        await conn.send(response(200, f"{req.method} {req.target}".encode()))


def lean_client(server: RawServer, timeout: float | httpx.Timeout = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), base_url=server.url, timeout=timeout)


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# --- keep-alive and framing ---------------------------------------------------------------------


def test_keep_alive_reuses_one_connection_and_sends_requests_as_given() -> None:
    async def handler(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if req.target == "/missing":
                await conn.send(response(404, b"no such thing", reason="Not Found"))
                continue
            reply = json.dumps({"n": len(conn.server.requests), "target": req.target}).encode()
            await conn.send(response(200, reply, [("X-Reply", "yes")]))

    async def main() -> tuple[RawServer, list[httpx.Response]]:
        async with RawServer(handler) as server, lean_client(server) as client:
            first = await client.get(
                "/a/b", params={"x": "1", "y": "two words"}, headers={"X-Test": "v1"}
            )
            second = await client.post(
                "/submit",
                content=b'{"k": 1}',
                headers={"Content-Type": "application/json", "X-Test": "v2"},
            )
            third = await client.get("/missing")
        return server, [first, second, third]

    server, (first, second, third) = run(main())
    assert server.connections == 1
    assert first.status_code == 200
    assert first.json() == {"n": 1, "target": "/a/b?x=1&y=two+words"}
    assert first.headers["x-reply"] == "yes"
    assert first.http_version == "HTTP/1.1"
    assert first.reason_phrase == "OK"
    assert second.json() == {"n": 2, "target": "/submit"}
    assert (third.status_code, third.reason_phrase, third.text) == (
        404,
        "Not Found",
        "no such thing",
    )

    get, post, _ = server.requests
    assert (get.method, get.target, get.version) == ("GET", "/a/b?x=1&y=two+words", "HTTP/1.1")
    assert get.header("host") == f"127.0.0.1:{server.port}"
    assert get.header("x-test") == "v1"
    assert get.body == b""
    assert (post.method, post.target) == ("POST", "/submit")
    assert post.header("x-test") == "v2"
    assert post.header("content-type") == "application/json"
    assert post.header("content-length") == "8"
    assert post.body == b'{"k": 1}'


def test_head_response_has_no_body_and_connection_is_reused() -> None:
    async def handler(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if req.method == "HEAD":  # announces a body it does not send, as HEAD must
                await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            else:
                await conn.send(response(200, b"hello"))

    async def main() -> tuple[RawServer, httpx.Response, httpx.Response]:
        async with RawServer(handler) as server, lean_client(server) as client:
            head = await client.head("/")
            get = await client.get("/")
        return server, head, get

    server, head, get = run(main())
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "5")
    assert get.content == b"hello"
    assert server.connections == 1


@pytest.mark.parametrize("server_closes", [True, False], ids=["server-closes", "server-lingers"])
def test_connection_close_answer_is_not_reused(server_closes: bool) -> None:
    async def handler(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            body = f"{req.target} on {conn.index}".encode()
            await conn.send(response(200, body, [("Connection", "close")]))
            if server_closes:
                conn.close()
                return

    async def main() -> tuple[RawServer, list[str]]:
        async with RawServer(handler) as server, lean_client(server) as client:
            texts = [(await client.get(f"/r{i}")).text for i in range(3)]
        return server, texts

    server, texts = run(main())
    assert texts == ["/r0 on 0", "/r1 on 1", "/r2 on 2"]
    assert server.connections == 3


def test_chunked_body_is_reassembled_and_gzip_is_decoded() -> None:
    doc = {"items": [1, 2, 3], "name": "chunky"}
    packed = gzip.compress(json.dumps({"zipped": True, "text": "x" * 500}).encode())

    async def handler(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if req.target == "/chunked":
                await conn.send(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                    b"Content-Type: application/json\r\n\r\n"
                )
                raw = json.dumps(doc).encode()
                for part in (raw[:5], raw[5:17], raw[17:]):
                    await conn.send(b"%x\r\n%s\r\n" % (len(part), part))
                    await asyncio.sleep(0.01)  # separate reads on the client side
                await conn.send(b"0\r\n\r\n")
            elif req.target == "/gzip":
                headers = [("Content-Encoding", "gzip"), ("Content-Type", "application/json")]
                await conn.send(response(200, packed, headers))
            else:  # gzip inside chunked framing
                await conn.send(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                    b"Content-Encoding: gzip\r\n\r\n"
                )
                half = len(packed) // 2
                for part in (packed[:half], packed[half:]):
                    await conn.send(b"%x\r\n%s\r\n" % (len(part), part))
                await conn.send(b"0\r\n\r\n")

    async def main() -> tuple[RawServer, list[httpx.Response]]:
        async with RawServer(handler) as server, lean_client(server) as client:
            answers = [await client.get(p) for p in ("/chunked", "/gzip", "/both", "/chunked")]
        return server, answers

    server, (chunked, zipped, both, again) = run(main())
    assert chunked.json() == doc
    assert again.json() == doc
    assert zipped.json() == {"zipped": True, "text": "x" * 500}
    assert both.json() == {"zipped": True, "text": "x" * 500}
    assert server.connections == 1  # chunked framing ended where it should


def test_informational_responses_are_skipped() -> None:
    async def handler(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            await conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            await asyncio.sleep(0.02)
            await conn.send(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            await asyncio.sleep(0.02)
            await conn.send(response(200, req.body[::-1]))

    async def main() -> tuple[RawServer, list[httpx.Response]]:
        async with RawServer(handler) as server, lean_client(server) as client:
            answers = [await client.post("/", content=b"abc"), await client.get("/")]
        return server, answers

    server, (first, second) = run(main())
    assert (first.status_code, first.content) == (200, b"cba")
    assert "link" not in first.headers
    assert (second.status_code, second.content) == (200, b"")
    assert server.connections == 1


# --- failures and their httpx types -------------------------------------------------------------


async def drop_after_request(conn: ServerConn) -> None:
    """Read the whole request, then close without answering (FIN, not RST)."""
    await conn.read_request()
    conn.close()


async def drop_mid_body(conn: ServerConn) -> None:
    await conn.read_request()
    await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    await asyncio.sleep(0.02)
    conn.close()


async def drop_mid_headers(conn: ServerConn) -> None:
    await conn.read_request()
    await conn.send(b"HTTP/1.1 200 OK\r\nContent-Le")
    await asyncio.sleep(0.02)
    conn.close()


async def garbage_status_line(conn: ServerConn) -> None:
    await conn.read_request()
    await conn.send(b"SMTP ready\r\n\r\n")
    await conn.wait_eof()


@pytest.mark.parametrize(
    "handler",
    [drop_after_request, drop_mid_body, drop_mid_headers, garbage_status_line],
    ids=["no-answer", "mid-body", "mid-headers", "garbage"],
)
def test_server_failing_after_the_request_is_remote_protocol_error(handler: Handler) -> None:
    async def main() -> RawServer:
        async with RawServer(handler) as server, lean_client(server) as client:
            with pytest.raises(httpx.TransportError) as info:
                await client.post("/v4/jobGroups", content=b"{}")
            assert type(info.value) is httpx.RemoteProtocolError, repr(info.value)
            assert not isinstance(info.value, (httpx.ConnectError, httpx.ConnectTimeout))
        return server

    server = run(main())
    assert [r.target for r in server.requests] == ["/v4/jobGroups"]


def test_reset_after_the_request_is_read_error() -> None:
    async def handler(conn: ServerConn) -> None:
        await conn.read_request()
        sock = conn.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # linger 0: RST instead of FIN

    async def main() -> None:
        async with RawServer(handler) as server, lean_client(server) as client:
            with pytest.raises(httpx.TransportError) as info:
                await client.post("/v4/jobGroups", content=b"{}")
            assert type(info.value) is httpx.ReadError, repr(info.value)

    run(main())


def test_read_timeout_and_the_timed_out_connection_is_not_reused() -> None:
    async def handler(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            if conn.index == 0:  # first connection: never answer, wait for the client to go
                await conn.wait_eof()
                return
            await conn.send(response(200, f"{req.target} on {conn.index}".encode()))

    async def main() -> tuple[RawServer, httpx.Response]:
        async with (
            RawServer(handler) as server,
            lean_client(server, httpx.Timeout(0.3)) as client,
        ):
            with pytest.raises(httpx.TransportError) as info:
                await client.get("/slow")
            assert type(info.value) is httpx.ReadTimeout, repr(info.value)
            await server.wait_eofs(1)  # the transport closed that connection
            answer = await client.get("/next")
        return server, answer

    server, answer = run(main())
    assert answer.text == "/next on 1"
    assert server.connections == 2


async def trickle(conn: ServerConn, pauses: Sequence[float]) -> None:
    """Answer in chunks, pausing before each one."""
    await conn.read_request()
    await conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    for pause in pauses:
        await asyncio.sleep(pause)
        await conn.send(b"1\r\nx\r\n")
    await conn.send(b"0\r\n\r\n")
    await conn.wait_eof()


def test_read_timeout_bounds_each_wait_not_the_whole_answer() -> None:
    """As with httpcore: a slow but steady answer longer than the timeout still arrives."""

    async def main() -> str:
        async with (
            RawServer(lambda conn: trickle(conn, [0.1] * 8)) as server,
            lean_client(server, httpx.Timeout(0.3)) as client,
        ):
            return (await client.get("/steady")).text

    assert run(main()) == "x" * 8


def test_a_stall_mid_answer_is_a_read_timeout() -> None:
    async def main() -> None:
        async with (
            RawServer(lambda conn: trickle(conn, [0.05, 1.5])) as server,
            lean_client(server, httpx.Timeout(0.3)) as client,
        ):
            with pytest.raises(httpx.TransportError) as info:
                await client.get("/stalls")
            assert type(info.value) is httpx.ReadTimeout, repr(info.value)

    run(main())


def test_a_close_before_any_answer_says_so_plainly() -> None:
    async def main() -> str:
        async with RawServer(drop_after_request) as server, lean_client(server) as client:
            with pytest.raises(httpx.RemoteProtocolError) as info:
                await client.post("/v4/jobGroups", content=b"{}")
            return str(info.value)

    assert run(main()) == "Server disconnected without sending a response."


def test_refused_connection_is_connect_error() -> None:
    port = free_port()

    async def main() -> None:
        async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as client:
            with pytest.raises(httpx.TransportError) as info:
                await client.get(f"http://127.0.0.1:{port}/")
            assert type(info.value) is httpx.ConnectError, repr(info.value)

    run(main())


def test_idle_connection_closed_by_server_is_replaced_transparently() -> None:
    close_first = asyncio.Event()

    async def handler(conn: ServerConn) -> None:
        req = await conn.read_request()
        assert req is not None
        await conn.send(response(200, f"{req.target} on {conn.index}".encode()))
        if conn.index == 0:  # keep-alive answer, then close while the client holds it idle
            await close_first.wait()
            conn.close()
            return
        await echo_path(conn)

    async def main() -> tuple[RawServer, list[str]]:
        async with RawServer(handler) as server, lean_client(server) as client:
            first = await client.get("/one")
            close_first.set()
            await asyncio.sleep(0.05)
            second = await client.get("/two")
            third = await client.get("/three")
        return server, [first.text, second.text, third.text]

    server, texts = run(main())
    assert texts == ["/one on 0", "/two on 1", "GET /three"]
    assert server.connections == 2


def test_concurrent_requests_get_their_own_answers_and_connections_are_pooled() -> None:
    async def handler(conn: ServerConn) -> None:
        while (req := await conn.read_request()) is not None:
            await asyncio.sleep(0.02)  # keep requests overlapping
            await conn.send(response(200, req.target.encode()))

    async def main() -> tuple[RawServer, list[list[str]]]:
        async with RawServer(handler) as server, lean_client(server) as client:
            rounds = []
            for r in range(2):
                answers = await asyncio.gather(*(client.get(f"/item/{r}/{i}") for i in range(20)))
                assert all(a.status_code == 200 for a in answers)
                rounds.append([a.text for a in answers])
        return server, rounds

    server, rounds = run(main())
    for r, texts in enumerate(rounds):
        assert texts == [f"/item/{r}/{i}" for i in range(20)]
    assert len(server.requests) == 40
    assert 1 <= server.connections <= 20  # the second round reused the first round's connections


def test_aclose_closes_idle_connections() -> None:
    async def main() -> RawServer:
        async with RawServer(echo_path) as server:
            client = lean_client(server)
            answers = await asyncio.gather(*(client.get(f"/{i}") for i in range(3)))
            assert [a.text for a in answers] == [f"GET /{i}" for i in range(3)]
            opened = server.connections
            assert opened >= 1
            await asyncio.sleep(0.05)
            assert server.eofs == 0  # idle, still open
            await client.aclose()
            await server.wait_eofs(opened)
        return server

    server = run(main())
    assert server.eofs == server.connections


def test_unsupported_scheme() -> None:
    async def main() -> None:
        async with httpx.AsyncClient(transport=LeanTransport(), timeout=5) as client:
            with pytest.raises(httpx.UnsupportedProtocol):
                await client.get(f"ftp://127.0.0.1:{free_port()}/file")

    run(main())


# --- through DataprepClient ---------------------------------------------------------------------


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_proxy_env")
def test_dataprep_client_dropped_post_is_in_doubt() -> None:
    async def main() -> RawServer:
        async with (
            RawServer(drop_after_request) as server,
            DataprepClient(server.url, timeout=5) as client,
        ):
            assert isinstance(client._client._transport, LeanTransport)
            with pytest.raises(ApiInDoubtError):
                await client.create_job_group({"wrangledDataset": {"id": 1}}, execution_id="e1")
        return server

    server = run(main())
    (req,) = server.requests
    assert (req.method, req.target) == ("POST", "/v4/jobGroups")
    assert req.header("x-execution-id") == "e1"
    assert json.loads(req.body) == {"wrangledDataset": {"id": 1}}


@pytest.mark.usefixtures("no_proxy_env")
def test_dataprep_client_refused_is_connection_error() -> None:
    async def main() -> None:
        async with DataprepClient(f"http://127.0.0.1:{free_port()}", timeout=5) as client:
            assert isinstance(client._client._transport, LeanTransport)
            with pytest.raises(ApiConnectionError):
                await client.create_job_group({"wrangledDataset": {"id": 1}}, execution_id="e1")

    run(main())


@pytest.mark.parametrize("name", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_dataprep_client_behind_proxy_keeps_httpx_transport(
    no_proxy_env: None, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")

    async def main() -> None:
        async with DataprepClient("http://api.test", timeout=5) as client:
            transport = client._client._transport
            assert not isinstance(transport, LeanTransport)
            assert isinstance(transport, httpx.AsyncHTTPTransport)

    run(main())


def test_dataprep_client_https_proxy_does_not_apply_to_http(
    no_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")

    async def main() -> None:
        async with DataprepClient("http://api.test", timeout=5) as client:
            assert isinstance(client._client._transport, LeanTransport)

    run(main())


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert, key), made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


async def _tls_server(cert: str, key: str) -> tuple[asyncio.Server, int]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ")[1]
                writer.write(response(200, b"tls " + target))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    return server, server.sockets[0].getsockname()[1]


def test_https_with_a_trusted_certificate_keeps_the_connection(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate

    async def main() -> list[str]:
        server, port = await _tls_server(cert, key)
        trusted = ssl.create_default_context(cafile=cert)
        try:
            async with httpx.AsyncClient(
                transport=LeanTransport(verify=trusted), base_url=f"https://127.0.0.1:{port}"
            ) as client:
                first = await client.get("/a")
                second = await client.get("/b")
                assert first.extensions["http_version"] == b"HTTP/1.1"
                return [first.text, second.text]
        finally:
            server.close()
            await server.wait_closed()

    assert run(main()) == ["tls /a", "tls /b"]


def test_https_with_an_untrusted_certificate_is_a_connect_error(
    certificate: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Verification is on by default, and a failed handshake means nothing was sent."""
    cert, key = certificate
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)

    async def main() -> tuple[str, str]:
        server, port = await _tls_server(cert, key)
        try:
            async with httpx.AsyncClient(
                transport=LeanTransport(), base_url=f"https://127.0.0.1:{port}"
            ) as client:
                with pytest.raises(httpx.ConnectError) as raw:
                    await client.get("/a")
            async with DataprepClient(f"https://127.0.0.1:{port}") as api:
                with pytest.raises(ApiConnectionError) as translated:
                    await api.get_status(1)
            return str(raw.value), str(translated.value)
        finally:
            server.close()
            await server.wait_closed()

    raw, translated = run(main())
    assert "CERTIFICATE_VERIFY_FAILED" in raw
    assert "certificate" in translated.lower()


def test_plain_http_never_loads_the_ca_bundle() -> None:
    """The TLS context (~50 ms of CA loading) is built on the first https connection only."""
    transport = LeanTransport()

    async def main() -> str:
        async with (
            RawServer(echo_path) as server,
            httpx.AsyncClient(transport=transport, base_url=server.url) as client,
        ):
            return (await client.get("/x")).text

    assert run(main()) == "GET /x"
    assert transport._ssl is None
