"""Credentials and TLS settings for the API client.

Tokens come from an environment variable or a file only the owner can read, never from argv or the
config file itself. Supported schemes: Bearer (Cloud Dataprep, Trifacta), HTTP Basic (on-prem
Trifacta), and OAuth refresh (Alteryx Analytics Cloud, whose access tokens last 5 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import stat
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from sweeper.config import ApiSettings
from sweeper.errors import AuthError, ConfigError
from sweeper.redact import redact

DEMO_TOKEN = "sweeper-embedded-demo-token"  # the embedded emulator accepts any bearer token
_REFRESH_MARGIN = 30.0  # refresh an OAuth access token this many seconds before it expires


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <token>`` on every request."""

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(token=***)"


class OAuthRefreshAuth(httpx.Auth):
    """Bearer auth that refreshes the access token with a refresh token.

    It refreshes before the first request when no access token is known, shortly before a known
    expiry, and once after a 401; the request is then retried once. A second 401 is returned
    as-is (the client maps it to AuthError), so it never loops. A failed refresh raises AuthError.
    """

    requires_response_body = True

    def __init__(
        self,
        *,
        token_url: str,
        refresh_token: str,
        client_id: str,
        access_token: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token_url = token_url
        self._refresh_token = refresh_token
        self._client_id = client_id
        self._access_token = access_token
        self._expires_at: float | None = None
        self._clock = clock
        self._generation = 0  # bumped on each refresh, so concurrent 401s refresh only once
        self._lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"OAuthRefreshAuth(token_url={urlsplit(self._token_url).path!r}, tokens=***)"

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("OAuthRefreshAuth works with httpx.AsyncClient only.")

    def _refresh_request(self) -> httpx.Request:
        return httpx.Request(
            "POST",
            self._token_url,
            data={
                "grant_type": "refresh_token",
                "refresh_token": self._refresh_token,
                "client_id": self._client_id,
            },
            headers={"Accept": "application/json"},
        )

    def _accept_refresh(self, response: httpx.Response) -> None:
        path = urlsplit(self._token_url).path or "/"
        if response.status_code != 200:
            raise AuthError(
                f"Refreshing the OAuth access token at {path} failed with HTTP "
                f"{response.status_code}. The refresh token may have expired or been revoked: "
                "create a new OAuth token pair, set it in the refresh-token environment "
                "variable, and resume the run.",
                status_code=response.status_code,
            )
        try:
            payload: Any = response.json()
            token = payload["access_token"]
        except (ValueError, KeyError, TypeError):
            raise AuthError(
                f"The OAuth token endpoint {path} answered 200 without an access_token; "
                "check api.token_url.",
                status_code=response.status_code,
            ) from None
        if not isinstance(token, str) or not token:
            raise AuthError(f"The OAuth token endpoint {path} returned an empty access token.")
        self._access_token = token
        self._generation += 1
        new_refresh = payload.get("refresh_token")
        if isinstance(new_refresh, str) and new_refresh:  # rotating refresh tokens
            self._refresh_token = new_refresh
        expires_in = payload.get("expires_in")
        if isinstance(expires_in, (int, float)) and expires_in > 0:
            self._expires_at = self._clock() + float(expires_in)
        else:
            self._expires_at = None

    def _stale(self) -> bool:
        if self._access_token is None:
            return True
        return self._expires_at is not None and self._clock() >= self._expires_at - _REFRESH_MARGIN

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._stale():
            async with self._lock:
                if self._stale():
                    self._accept_refresh((yield self._refresh_request()))
        generation = self._generation
        request.headers["Authorization"] = f"Bearer {self._access_token}"
        response = yield request
        if response.status_code != 401:
            return
        async with self._lock:
            # Another request may have refreshed while this one was in flight: reuse its token.
            if self._generation == generation:
                self._accept_refresh((yield self._refresh_request()))
        request.headers["Authorization"] = f"Bearer {self._access_token}"
        yield request  # the one retry; whatever it answers goes back to the caller


def _config_dir(config_path: Path | None) -> Path | None:
    if config_path is None:
        return None
    return config_path if config_path.is_dir() else config_path.parent


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def read_token_file(path: Path) -> str:
    """Read a token file that only its owner can read; ConfigError otherwise."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(
            f"The token file cannot be read ({exc.strerror}); check api.token_file.",
            path=str(path),
            key="api.token_file",
        ) from None
    if mode & 0o077:
        raise ConfigError(
            f"The token file is readable by group or others (mode {stat.filemode(mode)}); "
            f"restrict it with `chmod 600 {path}` and run again.",
            path=str(path),
            key="api.token_file",
        )
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError(
            "The token file is empty; put the access token in it.",
            path=str(path),
            key="api.token_file",
        )
    return token


def _token_file(api: ApiSettings, config_path: Path | None) -> Path | None:
    if api.token_file is None:
        return None
    base = _config_dir(config_path)
    path = Path(api.token_file).expanduser()
    if not path.is_absolute() and base is not None:
        path = base / path
    return path


def _bearer_token(api: ApiSettings, environ: Mapping[str, str], config_path: Path | None) -> str:
    token = _env(environ, api.token_env)
    if token:
        return token
    path = _token_file(api, config_path)
    if path is not None:
        return read_token_file(path)
    raise ConfigError(
        f"No access token: the environment variable {api.token_env} is not set. Set it with "
        f"`export {api.token_env}=...` (or point api.token_file at a file only you can read).",
        path=str(config_path) if config_path else None,
        key="api.token_env",
    )


def _required(
    environ: Mapping[str, str], name: str, what: str, key: str, where: Path | None
) -> str:
    value = _env(environ, name)
    if not value:
        raise ConfigError(
            f"No {what}: the environment variable {name} is not set. Set it with "
            f"`export {name}=...` before running.",
            path=str(where) if where else None,
            key=key,
        )
    return value


def build_auth(
    api: ApiSettings, environ: Mapping[str, str], *, config_path: Path | None = None
) -> httpx.Auth | None:
    """The ``httpx.Auth`` for ``api``; ConfigError when a credential is missing or unsafe."""
    if api.embedded:
        return BearerAuth(_env(environ, api.token_env) or DEMO_TOKEN)
    if api.auth == "bearer":
        return BearerAuth(_bearer_token(api, environ, config_path))
    if api.auth == "basic":
        username = _required(environ, api.username_env, "username", "api.username_env", config_path)
        password = _required(environ, api.password_env, "password", "api.password_env", config_path)
        return httpx.BasicAuth(username, password)
    if api.auth == "oauth":
        if not api.token_url:
            raise ConfigError(
                'OAuth needs the token endpoint: set api.token_url (for example "https://'
                'pingauth-eu1.alteryxcloud.com/as/token").',
                path=str(config_path) if config_path else None,
                key="api.token_url",
            )
        refresh = _required(
            environ,
            api.refresh_token_env,
            "OAuth refresh token",
            "api.refresh_token_env",
            config_path,
        )
        client_id = _required(
            environ, api.client_id_env, "OAuth client id", "api.client_id_env", config_path
        )
        return OAuthRefreshAuth(
            token_url=api.token_url,
            refresh_token=refresh,
            client_id=client_id,
            access_token=_env(environ, api.token_env) or None,
        )
    raise ConfigError(
        f'Unknown authentication scheme "{redact(api.auth)}"; use "bearer", "basic" or "oauth".',
        path=str(config_path) if config_path else None,
        key="api.auth",
    )


def secrets(
    api: ApiSettings, environ: Mapping[str, str], *, config_path: Path | None = None
) -> tuple[str, ...]:
    """The secret values in play, for ``redact.install_redaction``; never raises."""
    names = [api.token_env, api.password_env, api.refresh_token_env]
    values = [_env(environ, n) for n in names]
    path = _token_file(api, config_path)
    if path is not None:
        with contextlib.suppress(OSError, UnicodeDecodeError):
            values.append(path.read_text(encoding="utf-8").strip())
    return tuple(dict.fromkeys(v for v in values if v))


def _is_loopback(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_verify(api: ApiSettings) -> ssl.SSLContext | bool:
    """TLS verification for ``api``: on by default, a CA bundle if given, off only for loopback."""
    if api.insecure:
        if api.embedded or _is_loopback(api.base_url):
            return False
        raise ConfigError(
            "api.insecure = true turns off TLS verification and is allowed only for a loopback "
            "base_url (127.0.0.1, ::1, localhost). For a corporate CA, set api.ca_bundle to its "
            "PEM file instead.",
            key="api.insecure",
        )
    if api.ca_bundle is not None:
        bundle = Path(api.ca_bundle).expanduser()
        try:
            return ssl.create_default_context(cafile=str(bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"The CA bundle {bundle} cannot be loaded ({exc}); point api.ca_bundle at a PEM "
                "file of trusted certificates.",
                key="api.ca_bundle",
            ) from None
    return True
