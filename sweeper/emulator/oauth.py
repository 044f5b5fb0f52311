"""OAuth 2.0 refresh with rotating refresh tokens, as Alteryx Analytics Cloud does it.

``POST /as/token`` (form ``grant_type=refresh_token&refresh_token=..&client_id=..``) answers
``{access_token, refresh_token, token_type, expires_in}``. Each refresh token works once: using it
issues a new pair and kills it, so a stale copy answers 401. Access tokens it issues are accepted
by the v4 routes until they expire (``EmulatorSettings.access_token_seconds``, 300 by default).
State lives in the store, so apps sharing a state file share tokens. Only hashes are stored.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sweeper.emulator.http import read_body
from sweeper.emulator.store import Store

TOKEN_PATH = "/as/token"  # as on pingauth-<region>.alteryxcloud.com
_SCHEMA = """
CREATE TABLE IF NOT EXISTS oauth_tokens (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,            -- 'refresh' or 'access'
    expires_at REAL,               -- access tokens only
    used INTEGER NOT NULL DEFAULT 0
)
"""
_FORM_LIMIT = 16 * 1024  # bytes of form accepted; a refresh request is well under 1 KiB


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OAuthIssuer:
    """Issues rotating refresh tokens and short-lived access tokens, kept (hashed) in the store."""

    def __init__(
        self,
        store: Store,
        now: Callable[[], float],
        *,
        initial_refresh_token: str | None,
        access_seconds: float,
    ) -> None:
        self.store = store
        self.now = now
        self.access_seconds = access_seconds
        # Without an initial token, any refresh token never seen before is accepted once.
        self.open = initial_refresh_token is None
        with store.transaction() as conn:
            conn.execute(_SCHEMA)
            if initial_refresh_token is not None:
                conn.execute(
                    "INSERT OR IGNORE INTO oauth_tokens (digest, kind) VALUES (?, 'refresh')",
                    (_digest(initial_refresh_token),),
                )

    def refresh(self, refresh_token: str) -> dict[str, object] | None:
        """A new token pair for a live refresh token (which dies), or None."""
        access, new_refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        with self.store.transaction() as conn:
            row = conn.execute(
                "SELECT used FROM oauth_tokens WHERE digest = ? AND kind = 'refresh'",
                (_digest(refresh_token),),
            ).fetchone()
            if (row is None and not self.open) or (row is not None and row["used"]):
                Store.bump(conn, "oauth_refreshes_refused")
                return None
            conn.execute(
                "INSERT OR REPLACE INTO oauth_tokens (digest, kind, used) VALUES (?, 'refresh', 1)",
                (_digest(refresh_token),),
            )
            conn.execute(
                "INSERT INTO oauth_tokens (digest, kind) VALUES (?, 'refresh')",
                (_digest(new_refresh),),
            )
            conn.execute(
                "INSERT INTO oauth_tokens (digest, kind, expires_at) VALUES (?, 'access', ?)",
                (_digest(access), self.now() + self.access_seconds),
            )
            Store.bump(conn, "oauth_refreshes")
        return {
            "access_token": access,
            "refresh_token": new_refresh,
            "token_type": "Bearer",
            "expires_in": int(self.access_seconds),
        }

    def verdict(self, access_token: str) -> bool | None:
        """True for an access token issued here and still live, False once expired, else None."""
        rows = self.store.query(
            "SELECT expires_at FROM oauth_tokens WHERE digest = ? AND kind = 'access'",
            (_digest(access_token),),
        )
        if not rows:
            return None
        return self.now() < float(rows[0]["expires_at"])


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


async def token_endpoint(request: Request) -> Response:
    """The refresh_token grant; errors in the OAuth form ``{error, error_description}``."""
    issuer: OAuthIssuer = request.app.state.oauth
    raw = await read_body(request, _FORM_LIMIT)
    form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items() if v}
    if form.get("grant_type") != "refresh_token":
        return _oauth_error(400, "unsupported_grant_type", "Only refresh_token is supported.")
    if not form.get("client_id") or not form.get("refresh_token"):
        return _oauth_error(400, "invalid_request", "refresh_token and client_id are required.")
    pair = issuer.refresh(form["refresh_token"])
    if pair is None:
        # RFC 6749 says 400 invalid_grant; the emulator answers 401, as a revoked token does.
        return _oauth_error(401, "invalid_grant", "The refresh token is unknown or already used.")
    return JSONResponse(pair, headers={"Cache-Control": "no-store"})


def oauth_routes() -> list[Route]:
    return [Route(TOKEN_PATH, token_endpoint, methods=["POST"], include_in_schema=False)]
