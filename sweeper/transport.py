"""A lean HTTP/1.1 transport for httpx: asyncio protocols and h11, keep-alive, TLS.

httpx's default transport (httpcore over anyio) spends ~1.7 ms of CPU per request here, most of
it in anyio wrappers and in a pool that asks every idle socket whether it is readable on every
request. A sweep at concurrency 32 against a 100 ms server needs ~300 requests a second from one
event loop, so that cost alone kept sweeper under 0.8 of Little's-law bound (docs/performance.md).
This transport keeps the parts httpx users rely on (``httpx.AsyncClient``, its auth flows,
timeouts and exception types) and replaces only the connection layer:

* one ``asyncio.Protocol`` per connection, parsed by h11; the event loop reports a closed
  connection as it happens, so reusing an idle connection needs no system call;
* responses are read whole (API answers are small JSON documents);
* every failure is raised as the httpx exception httpcore would raise for it, because
  ``sweeper.client`` decides from that type whether a request may have reached the server:
  ``ConnectError``/``ConnectTimeout`` (provably not sent), ``ReadTimeout``, ``ReadError``,
  ``RemoteProtocolError`` (maybe sent: in doubt).

It does not do proxies, HTTP/2 or streaming; ``sweeper.client`` keeps httpx's own transport
when a proxy is configured in the environment.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import h11
import httpx

_DEFAULT_PORTS = {"http": 80, "https": 443}
_READ_TIMEOUT_MESSAGE = "timed out waiting for the server's response"
_NO_ANSWER = "Server disconnected without sending a response."  # httpcore's wording


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends a request, collects the response through h11."""

    def __init__(self) -> None:
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._eof = False
        self.last_data = 0.0  # loop time of the last bytes received (read timeouts are per read)
        self._error: Exception | None = None  # the socket error the connection was lost with
        self._wakeup: asyncio.Future[None] | None = None

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_data = asyncio.get_running_loop().time()
        self.h11.receive_data(data)
        self._wake()

    def eof_received(self) -> bool:
        self._feed_eof()
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._error = exc
        self._feed_eof()

    def _feed_eof(self) -> None:
        if not self._eof:
            self._eof = True
            self.closed = True
            self.h11.receive_data(b"")
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- requests -------------------------------------------------------------------------

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        read_timeout: float | None,
    ) -> tuple[h11.Response, bytes]:
        """Send one request and return its response; the caller closes the connection on error."""
        assert self.transport is not None
        try:
            data = self.h11.send(h11.Request(method=method, target=target, headers=headers))
            if body:
                data = (data or b"") + (self.h11.send(h11.Data(data=body)) or b"")
            data = (data or b"") + (self.h11.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        self.transport.write(data)

        loop = asyncio.get_running_loop()
        timed_out = False
        timer: asyncio.TimerHandle | None = None
        self.last_data = loop.time()

        def on_timeout() -> None:
            # Like httpcore, the read timeout bounds each wait for bytes, not the whole answer.
            nonlocal timed_out, timer
            assert read_timeout is not None
            quiet = loop.time() - self.last_data
            if quiet < read_timeout:
                timer = loop.call_later(read_timeout - quiet, on_timeout)
                return
            timed_out = True
            self._wake()

        if read_timeout is not None:
            timer = loop.call_later(read_timeout, on_timeout)
        response: h11.Response | None = None
        chunks: list[bytes] = []
        try:
            while True:
                try:
                    event = self.h11.next_event()
                except h11.RemoteProtocolError as exc:
                    # h11 reports a close before any answer in its own words: say it plainly.
                    message = str(exc) if response is not None or not self._eof else _NO_ANSWER
                    raise self._lost_error(message) from exc
                if event is h11.NEED_DATA:
                    if timed_out:
                        raise httpx.ReadTimeout(_READ_TIMEOUT_MESSAGE)
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                    if timed_out:
                        raise httpx.ReadTimeout(_READ_TIMEOUT_MESSAGE)
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise self._lost_error(_NO_ANSWER)
                # h11.InformationalResponse (1xx): keep reading for the final response.
        finally:
            if timer is not None:
                timer.cancel()
        assert response is not None
        return response, b"".join(chunks)

    def _lost_error(self, message: str) -> httpx.TransportError:
        if isinstance(self._error, OSError):
            return httpx.ReadError(str(self._error) or message)
        return httpx.RemoteProtocolError(message)

    def start_next_cycle(self) -> bool:
        """Make the connection ready for another request; False if it cannot take one.

        It can when both sides finished their message and nobody asked to close.
        """
        if self.closed or self.h11.our_state is not h11.DONE:
            return False
        if self.h11.their_state is not h11.DONE:
            return False
        self.h11.start_next_cycle()
        return True


class LeanTransport(httpx.AsyncBaseTransport):
    """httpx transport over asyncio protocols and h11 (HTTP/1.1, keep-alive, TLS, no proxies)."""

    def __init__(
        self,
        *,
        verify: ssl.SSLContext | bool = True,
        max_keepalive_connections: int = 64,
        keepalive_expiry: float = 4.0,  # under the 5 s idle timeout of uvicorn and many proxies
    ) -> None:
        self._verify = verify
        # Built on the first https connection: loading the CA bundle costs ~50 ms.
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else None
        self._max_idle = max_keepalive_connections
        self._expiry = keepalive_expiry
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        if scheme not in _DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r} in {url}")
        host = url.raw_host.decode("ascii")
        port = url.port or _DEFAULT_PORTS[scheme]
        key = (scheme, host, port)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()

        conn = self._checkout(key) or await self._connect(
            scheme, host, port, timeouts.get("connect")
        )
        try:
            response, content = await conn.request(
                request.method.encode("ascii"),
                url.raw_path,
                request.headers.raw,
                body,
                timeouts.get("read"),
            )
        except BaseException:
            self._discard(conn)
            raise
        if conn.start_next_cycle() and len(self._idle.get(key, ())) < self._max_idle:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(key, []).append(conn)
        else:
            self._discard(conn)
        return httpx.Response(
            response.status_code,
            headers=list(response.headers),
            stream=httpx.ByteStream(content),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": bytes(response.reason)},
        )

    def _checkout(self, key: tuple[str, str, int]) -> _Connection | None:
        """The most recently used idle connection that is still open and fresh."""
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self._expiry:
                return conn
            self._discard(conn)
        return None

    async def _connect(
        self, scheme: str, host: str, port: int, timeout: float | None
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = scheme == "https"
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection,
                    host,
                    port,
                    ssl=self._ssl_context() if tls else None,
                    server_hostname=host if tls else None,
                ),
                timeout,
            )
        except asyncio.TimeoutError as exc:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        self._open.add(conn)
        return conn

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context(verify=bool(self._verify))
        return self._ssl

    def _discard(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def aclose(self) -> None:
        for conn in list(self._open):
            self._discard(conn)
        self._idle.clear()
