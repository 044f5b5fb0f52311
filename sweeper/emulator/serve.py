"""Serving the emulator over real HTTP with uvicorn (`sweeper emulator serve`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from sweeper.config import is_loopback_host
from sweeper.emulator.app import create_app
from sweeper.emulator.http import DROP_EXTENSION
from sweeper.emulator.settings import EmulatorSettings

log = logging.getLogger("sweeper.emulator")


def exposure_warning(host: str, *, token_required: bool) -> str | None:
    """The warning to print before serving on ``host``, or None when it is loopback only."""
    if is_loopback_host(host):
        return None
    if token_required:
        return (
            f"WARNING: the emulator listens on {host}, reachable from the network. The v4 API "
            "needs the token, but the /_emulator admin routes (stats, job groups, reset) need "
            "no credentials: serve on 127.0.0.1 unless this network is trusted."
        )
    return (
        f"WARNING: the emulator listens on {host}, reachable from the network, and accepts ANY "
        "token: anyone who can reach this port can create job groups, write outputs and use the "
        "/_emulator admin routes (stats, job groups, reset). Require a token with "
        "--token-env VAR, or serve on --host 127.0.0.1."
    )


class DroppableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a scope extension that aborts the TCP connection.

    ASGI has no way to close a connection without answering; the dropped-connection fault needs
    exactly that, so the app gets a callable that aborts this connection's transport.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})[DROP_EXTENSION] = self._abort
            await inner(scope, receive, send)

        self.app = app

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Server(uvicorn.Server):
    """A uvicorn server that stops on SIGINT/SIGTERM and returns instead of re-raising them."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            self.force_exit = True
        self.should_exit = True


def build_server(
    settings: EmulatorSettings, *, host: str = "127.0.0.1", port: int = 0
) -> uvicorn.Server:
    """A configured (not started) uvicorn server for the emulator app."""
    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        http=DroppableH11Protocol,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    return _Server(config)


def base_url(server: uvicorn.Server) -> str:
    """The URL a started server listens on (the real port when port 0 was asked)."""
    sockets = [s for srv in server.servers for s in (srv.sockets or ())]
    host, port = sockets[0].getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}"


async def _serve(server: uvicorn.Server, on_ready: Callable[[str], None] | None) -> None:
    task = asyncio.ensure_future(server.serve())
    # uvicorn offers no "started" event to wait on, so poll its flag
    while not server.started and not task.done():  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    if server.started and on_ready is not None:
        on_ready(base_url(server))
    await task


def serve(
    settings: EmulatorSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; calls on_ready(base_url) once listening, then returns cleanly."""
    asyncio.run(_serve(build_server(settings, host=host, port=port), on_ready))
