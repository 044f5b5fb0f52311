"""httpx's own transport under ordinary network faults, through DataprepClient and whole sweeps.

The server here is a small threaded HTTP/1.1 server on a loopback address that answers just
enough of the v4 API for a sweep that does not wait (POST /v4/jobGroups -> 201) and misbehaves
in one chosen way. It runs in its own threads, so it keeps its own time while a test blocks the
client's event loop.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from sweeper.client import MAX_ANSWER_BYTES, DataprepClient
from sweeper.errors import ApiConnectionError, ApiInDoubtError, ApiResponseError
from sweeper.journal import RunEvent
from sweeper.ledger import Event, read_ledger
from tests.reliab_support import run_library

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
FAKE_HOST = "api.sweeper-test.invalid"  # resolved only by the patched getaddrinfo below
BODY = {"wrangledDataset": {"id": 33}}
REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx honours proxies from the environment; these tests talk to loopback directly."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


# --- a small misbehaving API server -------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    connection: int  # 0 for the first connection accepted
    method: str
    target: str  # as sent: origin-form, or absolute-form through a proxy
    execution_id: str


@dataclass
class Faults:
    """How the server misbehaves (all off: a plain keep-alive server)."""

    long_header: int = 0  # a header of this many bytes in every answer, head sent in two parts
    idle_timeout: float | None = None  # an idle keep-alive connection ends after this long...
    on_idle: str = "close"  # ...by closing, or by writing "408" and lingering until the client goes
    silent: bool = False  # read requests, never answer
    drop: bool = False  # close right after reading a request
    tls: ssl.SSLContext | None = None


@dataclass
class FaultyApi:
    """What the server saw; filled in by its handler threads."""

    faults: Faults
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    idle_closes: int = 0  # idle connections ended by the server (closed or 408)
    after_408: list[Seen] = field(default_factory=list)  # requests sent after our 408: reused
    lock: threading.Lock = field(default_factory=threading.Lock)
    sockets: list[socket.socket] = field(default_factory=list)

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]


def _read_request(sock: socket.socket, pending: bytearray) -> tuple[str, str, dict[str, str]]:
    """The next request's method, target and headers; raises EOFError when the client closes."""
    while b"\r\n\r\n" not in pending:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        pending += data
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            raise EOFError
        rest += data
    pending[:] = rest[length:]
    return method, target, headers


def _answer(method: str, target: str, number: int) -> tuple[int, dict[str, Any]]:
    """The v4 API, as little of it as a sweep needs."""
    path = urlsplit(target).path
    if method == "POST" and path == "/v4/jobGroups":
        return 201, {"id": number, "sessionId": f"s-{number}", "jobs": {"data": [{"id": number}]}}
    if method == "GET" and path == "/v4/jobGroups":
        return 200, {"data": []}
    if method == "GET" and path.startswith("/v4/jobGroups/"):
        group = int(path.split("/")[3])
        return 200, {"id": group, "status": "Complete", "jobs": {"data": []}}
    return 404, {"exception": {"name": "RouteNotFoundException", "message": path}}


def _serve_connection(api: FaultyApi, sock: socket.socket) -> None:
    faults = api.faults
    with api.lock:
        index = api.connections
        api.connections += 1
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # each write its own segment
    pending = bytearray()
    while True:
        sock.settimeout(faults.idle_timeout)
        try:
            method, target, headers = _read_request(sock, pending)
        except TimeoutError:
            with api.lock:
                api.idle_closes += 1
            if faults.on_idle == "408":
                sock.sendall(REQUEST_TIMEOUT)
                sock.settimeout(5.0)  # linger: a client that reuses this connection shows up
                try:
                    method, target, headers = _read_request(sock, pending)
                    xid = headers.get("x-execution-id", "")
                    with api.lock:
                        api.after_408.append(Seen(index, method, target, xid))
                except (EOFError, OSError):
                    pass
            return
        seen = Seen(index, method, target, headers.get("x-execution-id", ""))
        with api.lock:
            api.seen.append(seen)
            number = len(api.seen)
        if faults.drop:
            return
        if faults.silent:
            sock.settimeout(10.0)
            while sock.recv(65536):  # until the client gives up and closes
                pass
            return
        status, payload = _answer(method, target, number)
        body = json.dumps(payload).encode()
        head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        if faults.long_header:
            head += f"X-Padding: {'a' * faults.long_header}\r\n"
        head += f"Content-Length: {len(body)}\r\n\r\n"
        data = head.encode("latin-1") + body
        if faults.long_header:
            # The first segment alone is an incomplete head larger than h11's default limit
            # (16 KB); a client that refuses to buffer that much fails here.
            cut = len(head) - 100
            sock.sendall(data[:cut])
            time.sleep(0.05)  # the client reads the first part before the rest exists
            sock.sendall(data[cut:])
        else:
            sock.sendall(data)


@contextmanager
def faulty_api(faults: Faults | None = None, *, host: str = "127.0.0.1") -> Iterator[FaultyApi]:
    """Serve on ``host`` (a free port); yields the record; closes every socket on exit."""
    api = FaultyApi(faults or Faults())

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            if api.faults.tls is not None:
                try:
                    sock = api.faults.tls.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError):
                    return
            with api.lock:
                api.sockets.append(sock)
            with suppress(EOFError, OSError):
                _serve_connection(api, sock)

    server = socketserver.ThreadingTCPServer((host, 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    api.port = server.server_address[1]
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        with api.lock:
            for sock in api.sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


# --- sweeps -------------------------------------------------------------------------------------


def write_sweep(
    project: Path,
    base_url: str,
    *,
    combos: int = 3,
    rate: str = "6000/min",
    timeout: str = "10s",
    extra_api: str = "",
) -> Path:
    """A sweep of ``combos`` combinations that does not wait, no retries: one POST each."""
    values = ", ".join(f'"{i:02d}"' for i in range(1, combos + 1))
    path = project / "net.toml"
    path.write_text(
        f"""\
[sweep]
name = "net"
dataset = 33

[api]
base_url = "{base_url}"
token_env = "RELIAB_TOKEN"
timeout = "{timeout}"
{extra_api}

[matrix]
Region = [{values}]

[run]
wait = false
rate = "{rate}"
concurrency = 1
settle = "0s"

[retry]
attempts = 1
""",
        encoding="utf-8",
    )
    return path


def sweep(config: Path, **kwargs: Any) -> Any:
    """Run the sweep over sweeper's own connection set-up (no transport given); the summary."""
    summary, _ = run_library(config, None, wait=False, **kwargs)
    return summary


def assert_clean_run(summary: Any, project: Path, combos: int) -> None:
    """Every combination submitted with its first POST; nothing retried, lost or in doubt."""
    # Not waited for: every group is still running (exit 3), none failed or in doubt.
    assert summary.running == combos and summary.exit_code == 3, summary.failures
    assert (summary.posts, summary.submitted, summary.retries) == (combos, combos, 0)
    rows = read_ledger(project / "results" / "net.csv")
    assert sorted(r.event.value for r in rows) == sorted(
        [Event.INTENT.value] * combos + [Event.SUBMITTED.value] * combos
    )
    assert {r.attempt for r in rows} == {1}


def assert_each_post_once(api: FaultyApi, combos: int) -> None:
    xids = [s.execution_id for s in api.posts()]
    assert len(xids) == combos and len(set(xids)) == combos and all(xids)


@pytest.mark.timeout(30)
def test_a_20_kb_response_head_in_two_segments_is_read(project: Path) -> None:
    with faulty_api(Faults(long_header=20_000)) as api:
        summary = sweep(write_sweep(project, f"http://127.0.0.1:{api.port}"))
    assert_clean_run(summary, project, 3)
    assert_each_post_once(api, 3)
    assert api.connections == 1  # and the connection stayed usable after each long head


@contextmanager
def dead_address(port: int) -> Iterator[str]:
    """127.0.0.2:``port`` where a connect hangs: a listener whose accept queue is full."""
    listener = socket.socket()
    fillers: list[socket.socket] = []
    try:
        listener.bind(("127.0.0.2", port))
        listener.listen(0)
        for _ in range(3):  # more than the queue holds; later SYNs are dropped, not refused
            filler = socket.socket()
            filler.setblocking(False)
            fillers.append(filler)
            with suppress(BlockingIOError):
                filler.connect(("127.0.0.2", port))
        probe = socket.socket()
        probe.settimeout(0.5)
        with probe, pytest.raises(TimeoutError):  # dead means hanging, not refused
            probe.connect(("127.0.0.2", port))
        yield "127.0.0.2"
    finally:
        for sock in [*fillers, listener]:
            sock.close()


@pytest.mark.timeout(10)
def test_a_dead_first_address_does_not_stall_the_connect(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Happy eyeballs: after 250 ms the next address is tried, long before the 30 s timeout."""
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    with faulty_api() as api, dead_address(api.port) as dead:

        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            name = host.decode() if isinstance(host, bytes) else host
            if name != FAKE_HOST:
                return real_getaddrinfo(host, port, *args, **kwargs)
            lookups.append(name)
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            return [(*tcp, (dead, int(port))), (*tcp, ("127.0.0.1", int(port)))]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        config = write_sweep(project, f"http://{FAKE_HOST}:{api.port}", timeout="30s")
        summary = sweep(config)
    assert lookups, "the client never resolved the fake host name"
    assert_clean_run(summary, project, 3)
    assert_each_post_once(api, 3)


@pytest.mark.timeout(30)
def test_an_idle_connection_answered_408_is_not_reused(project: Path) -> None:
    """The server times an idle connection out with 408 and lingers; the next POST goes anew."""
    with faulty_api(Faults(idle_timeout=0.2, on_idle="408")) as api:
        # One POST a second: every connection idles well past the server's 0.2 s.
        summary = sweep(write_sweep(project, f"http://127.0.0.1:{api.port}", rate="1/s"))
    assert_clean_run(summary, project, 3)
    assert_each_post_once(api, 3)
    assert api.after_408 == []  # no request was ever sent on a connection after its 408
    assert [s.connection for s in api.posts()] == [0, 1, 2]
    assert api.idle_closes >= 2


@pytest.mark.timeout(30)
def test_a_keep_alive_that_died_while_the_loop_was_blocked_is_not_used(project: Path) -> None:
    blocked: list[str] = []

    def block_once(event: RunEvent) -> None:
        if event.kind == "submitted" and not blocked:
            blocked.append(event.message)
            time.sleep(1.0)  # the loop cannot see the server close the idle connection meanwhile

    with faulty_api(Faults(idle_timeout=0.2, on_idle="close")) as api:
        config = write_sweep(project, f"http://127.0.0.1:{api.port}")
        summary = sweep(config, on_event=block_once)
    assert blocked
    assert_clean_run(summary, project, 3)
    assert_each_post_once(api, 3)
    # The first connection died during the block; the next two POSTs shared a new one.
    assert [s.connection for s in api.posts()] == [0, 1, 1]
    assert api.idle_closes >= 1


@pytest.mark.timeout(30)
def test_a_post_straight_after_a_block_does_not_use_the_dead_keep_alive() -> None:
    """As above, with no pass of the event loop between the block and the POST."""

    async def main(base_url: str) -> None:
        async with DataprepClient(base_url, timeout=5) as client:
            await client.create_job_group(BODY, execution_id="e1")
            time.sleep(1.0)  # noqa: ASYNC251 - the point: the server closes the idle connection
            await client.create_job_group(BODY, execution_id="e2")

    with faulty_api(Faults(idle_timeout=0.2, on_idle="close")) as api:
        run(main(f"http://127.0.0.1:{api.port}"))
    assert [(s.connection, s.execution_id) for s in api.posts()] == [(0, "e1"), (1, "e2")]


# --- classification of transport failures, through DataprepClient -------------------------------


def run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 10)

    return asyncio.run(bounded())


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _post(base_url: str, **kwargs: Any) -> None:
    async with DataprepClient(base_url, **kwargs) as client:
        await client.create_job_group(BODY, execution_id="e1")


@pytest.mark.timeout(20)
def test_a_post_the_server_dropped_is_in_doubt() -> None:
    with faulty_api(Faults(drop=True)) as api, pytest.raises(ApiInDoubtError):
        run(_post(f"http://127.0.0.1:{api.port}", timeout=5))
    assert [(s.method, s.target, s.execution_id) for s in api.seen] == [
        ("POST", "/v4/jobGroups", "e1")
    ]


@pytest.mark.timeout(20)
def test_a_read_timeout_is_in_doubt() -> None:
    with (
        faulty_api(Faults(silent=True)) as api,
        pytest.raises(ApiInDoubtError, match="ReadTimeout"),
    ):
        run(_post(f"http://127.0.0.1:{api.port}", timeout=0.3))
    assert len(api.posts()) == 1  # it did arrive: in doubt is the truth


@pytest.mark.timeout(20)
def test_a_refused_connection_is_not_sent() -> None:
    with pytest.raises(ApiConnectionError, match="was not sent"):
        run(_post(f"http://127.0.0.1:{free_port()}", timeout=5))


@pytest.mark.timeout(20)
def test_a_proxy_from_the_environment_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """trust_env: HTTP_PROXY sends the request to the proxy, in absolute form."""
    with faulty_api() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        run(_post(f"http://{FAKE_HOST}/", timeout=5))
    assert [s.target for s in proxy.seen] == [f"http://{FAKE_HOST}/v4/jobGroups"]


# --- TLS with a private CA (api.ca_bundle) ------------------------------------------------------


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


def _tls(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.mark.timeout(30)
def test_https_sweep_trusts_the_ca_bundle(project: Path, certificate: tuple[str, str]) -> None:
    cert, key = certificate
    with faulty_api(Faults(tls=_tls(cert, key))) as api:
        config = write_sweep(
            project, f"https://127.0.0.1:{api.port}", extra_api=f'ca_bundle = "{cert}"'
        )
        summary = sweep(config)
    assert_clean_run(summary, project, 3)
    assert_each_post_once(api, 3)
    assert api.connections == 1  # the TLS connection was kept alive


@pytest.mark.timeout(30)
def test_https_without_the_ca_is_refused_before_anything_is_sent(
    certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    with (
        faulty_api(Faults(tls=_tls(cert, key))) as api,
        pytest.raises(ApiConnectionError) as info,
    ):
        run(_post(f"https://127.0.0.1:{api.port}", timeout=5))
    assert "CERTIFICATE_VERIFY_FAILED" in str(info.value)
    assert "\n" not in str(info.value)
    assert api.seen == []


# --- bounded, flat answers ----------------------------------------------------------------------


def _client(handler: Any) -> DataprepClient:
    return DataprepClient("http://api.test", transport=httpx.MockTransport(handler), timeout=5)


async def _call(handler: Any, method: str) -> Exception:
    async with _client(handler) as client:
        try:
            if method == "POST":
                await client.create_job_group(BODY, execution_id="e1")
            else:
                await client.get_job_group(7)
        except Exception as exc:
            return exc
    raise AssertionError("no error raised")


NESTED = b"[" * 200_000 + b"]" * 200_000


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("method", "expected"), [("POST", ApiInDoubtError), ("GET", ApiResponseError)]
)
def test_a_body_nested_200000_deep_is_a_malformed_answer(method: str, expected: type) -> None:
    err = run(
        _call(lambda r: httpx.Response(201 if method == "POST" else 200, content=NESTED), method)
    )
    assert type(err) is expected
    assert "not JSON (or nests too deeply)" in str(err) and "\n" not in str(err)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("method", "expected"), [("POST", ApiInDoubtError), ("GET", ApiResponseError)]
)
def test_an_endless_answer_is_cut_at_the_bound(method: str, expected: type) -> None:
    """The body never ends: the client stops reading past 8 MB instead of buffering forever."""
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        chunk = b'{"data": [' + b" " * 65536
        while True:
            sent.append(len(chunk))
            yield chunk

    err = run(
        _call(lambda r: httpx.Response(200 if method == "GET" else 201, content=endless()), method)
    )
    assert type(err) is expected
    assert "larger than 8 MB" in str(err) and "\n" not in str(err)
    assert MAX_ANSWER_BYTES < sum(sent) <= MAX_ANSWER_BYTES + 2 * 65546


@pytest.mark.timeout(20)
def test_an_oversized_error_answer_keeps_its_status_class() -> None:
    """A huge 429 is still a rate limit (its text cut), not a malformed answer."""
    big = b"x" * (MAX_ANSWER_BYTES + 10)
    err = run(_call(lambda r: httpx.Response(429, content=big), "POST"))
    assert err.failure.name == "REJECTED"
    assert len(str(err)) < 1000
