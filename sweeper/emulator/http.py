"""HTTP plumbing for the routes: error envelope, request ids, auth, dropped connections."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("sweeper.emulator")
DROP_EXTENSION = "sweeper.emulator.drop"  # set by serve.py's protocol: aborts the TCP connection


class ApiProblem(Exception):
    """An error answer in the documented envelope {"exception": {name, message, details}}."""

    def __init__(
        self,
        status: int,
        name: str,
        message: str,
        details: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.name, self.message, self.details = status, name, message, details
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"exception": {"name": self.name, "message": self.message, "details": self.details}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def validation_failed(details: str) -> ApiProblem:
    return ApiProblem(400, "ValidationFailed", "Input validation failed", details)


def not_found(details: str) -> ApiProblem:
    return ApiProblem(404, "DataNotFoundException", "Not found", details)


def too_large(limit: int) -> ApiProblem:
    return ApiProblem(
        413,
        "PayloadTooLarge",
        "Request body too large",
        f"The request body is larger than {limit} bytes; a run request body is a few KB.",
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes.

    A declared Content-Length over the limit is refused before reading anything; a chunked body
    (no Content-Length) is counted while it streams in, so at most ``limit`` bytes plus one chunk
    are ever held in memory.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise validation_failed("The Content-Length header is not a number.") from None
        if length > limit:
            raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class DropConnection(Exception):
    """Raised by a route to close the connection without any response."""


def user_key(request: Request, token: str | None) -> str:
    """Who is calling (for the per-user quota), or raise 401; never logs or echoes a secret."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    secret: str | None = None
    who = ""
    if scheme.lower() == "bearer" and credential:
        secret = credential
        who = "bearer:" + hashlib.sha256(credential.encode()).hexdigest()[:16]
        oauth = getattr(request.app.state, "oauth", None)
        issued = oauth.verdict(credential) if oauth is not None else None
        if issued is False:
            raise ApiProblem(
                401,
                "AuthenticationFailed",
                "Unauthorized",
                "The access token has expired; refresh it with the refresh token.",
            )
        if issued:
            return "oauth-client"  # one user, whichever of its access tokens is sent
    elif scheme.lower() == "basic" and credential:
        try:
            user, sep, password = (
                base64.b64decode(credential, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            user, sep, password = "", "", ""
        if sep and user:
            secret, who = password, "basic:" + user
    if secret is None:
        raise ApiProblem(
            401,
            "AuthenticationFailed",
            "Unauthorized",
            "Send an Authorization header: 'Bearer <access token>' or HTTP Basic credentials.",
        )
    if token is not None and not hmac.compare_digest(secret.encode(), token.encode()):
        raise ApiProblem(
            401,
            "AuthenticationFailed",
            "Unauthorized",
            "The access token or password was not accepted; check the credentials you configured.",
        )
    return who


class EdgeMiddleware:
    """Adds x-trifacta-request-id to every answer, turns crashes into the error envelope, and
    carries out DropConnection: over uvicorn (serve.py) the TCP connection is aborted with no
    response; in-process (httpx ASGITransport) httpx.RemoteProtocolError is raised to the client,
    which is what httpx raises for a real server that disconnects without answering."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-trifacta-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except DropConnection:
            drop: Callable[[], None] | None = scope.get("extensions", {}).get(DROP_EXTENSION)
            if drop is None:
                import httpx  # only in-process: mirror what httpx raises for a real drop

                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response."
                ) from None
            drop()
            for _ in range(3):  # let connection_lost run so uvicorn does not answer 500
                await asyncio.sleep(0)
        except Exception:
            log.exception("emulator error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            problem = ApiProblem(
                500,
                "InternalServerError",
                "Internal Server Error",
                "The emulator failed; see its log.",
            )
            await problem.response()(scope, receive, send_with_id)


def json_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return exc.response()


def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    status = int(getattr(exc, "status_code", 500))
    if status == 404:
        return ApiProblem(
            404, "RouteNotFoundException", "Not found", f"No route {request.url.path}."
        ).response()
    if status == 405:
        return ApiProblem(
            405,
            "MethodNotAllowed",
            "Method not allowed",
            f"{request.method} is not allowed on {request.url.path}.",
            headers=dict(getattr(exc, "headers", None) or {}),  # keeps Allow (RFC 9110)
        ).response()
    return ApiProblem(status, "HttpError", str(getattr(exc, "detail", "")), "").response()


def parse_bool(name: str, value: str | None, default: bool = False) -> bool:
    """Case-insensitive booleans: Airflow sends includeDeleted=False (a stringified Python bool)."""
    if value is None or value == "":
        return default
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise validation_failed(f"Query parameter {name} must be true or false, got {value!r}.")


def parse_int(
    request: Request, name: str, default: int, minimum: int = 0, maximum: int = 2**62
) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise validation_failed(
            f"Query parameter {name} must be an integer, got {raw!r}."
        ) from None
    if not minimum <= value <= maximum:
        raise validation_failed(f"Query parameter {name} must be between {minimum} and {maximum}.")
    return value


Json = Any
