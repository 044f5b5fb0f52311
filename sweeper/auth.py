"""Credentials and TLS settings for the API client.

Tokens come from an environment variable or a file only the owner can read, never from argv or the
config file itself. Supported schemes: Bearer (Cloud Dataprep, Trifacta), HTTP Basic (on-prem
Trifacta), and OAuth refresh (Alteryx Analytics Cloud, whose access tokens last 5 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import stat
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from sweeper.config import ApiSettings, is_loopback_host
from sweeper.errors import AuthError, ConfigError
from sweeper.redact import MIN_SECRET_LENGTH, add_secrets, basic_forms, redact

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
        # Tokens issued mid-run were not known when redaction was installed: mask them too.
        add_secrets([token, self._refresh_token])
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


_TOKEN_FILE_MAX_BYTES = 64 * 1024  # far above any real token; a bigger file is the wrong file


def _token_file_error(path: Path, message: str) -> ConfigError:
    return ConfigError(message, path=str(path), key="api.token_file")


def _read_token_bytes(path: Path) -> bytes:
    """The bytes of a regular, owner-only file; ConfigError for anything else (never blocks)."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise _token_file_error(
            path, f"The token file cannot be read ({exc.strerror}); check api.token_file."
        ) from None
    try:
        # fstat the descriptor we opened, so the checks apply to what is actually read.
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise _token_file_error(
                path, "The token file is a directory; point api.token_file at the file itself."
            )
        if not stat.S_ISREG(mode):
            raise _token_file_error(
                path,
                "The token file is not a regular file (a FIFO, socket or device); put the "
                "token in an ordinary file only you can read and point api.token_file at it.",
            )
        if mode & 0o077:
            raise _token_file_error(
                path,
                f"The token file is readable by group or others (mode {stat.filemode(mode)}); "
                f"restrict it with `chmod 600 {path}` and run again.",
            )
        chunks: list[bytes] = []
        size = 0
        while size <= _TOKEN_FILE_MAX_BYTES:
            chunk = os.read(fd, _TOKEN_FILE_MAX_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as exc:
        raise _token_file_error(
            path, f"The token file cannot be read ({exc.strerror}); check api.token_file."
        ) from None
    finally:
        os.close(fd)
    if len(data) > _TOKEN_FILE_MAX_BYTES:
        raise _token_file_error(
            path,
            f"The token file is larger than {_TOKEN_FILE_MAX_BYTES // 1024} KiB, so it is not a "
            "token file; point api.token_file at the file that holds only the access token.",
        )
    return data


def read_token_file(path: Path) -> str:
    """The token in a regular file only its owner can read; ConfigError otherwise.

    The file holds the token alone, on one line (surrounding blank lines and whitespace are
    ignored). The message never shows the file's content.
    """
    data = _read_token_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _token_file_error(
            path,
            f"The token file is not UTF-8 text (byte {exc.start} cannot be decoded); is it the "
            "right file? Put only the access token in it, as plain text.",
        ) from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise _token_file_error(path, "The token file is empty; put the access token in it.")
    if len(lines) > 1:
        raise _token_file_error(
            path,
            f"The token file holds {len(lines)} non-empty lines, but it must hold only the access "
            "token, on one line; remove the other lines (comments, a second token).",
        )
    token = lines[0]
    if any(c.isspace() for c in token):
        raise _token_file_error(
            path,
            "The token in the token file contains spaces; put only the token in it (without "
            "'Bearer ' or a variable name).",
        )
    return _long_enough(token, "The token in the token file", path, "api.token_file")


def _long_enough(value: str, what: str, path: Path | None, key: str) -> str:
    """``value``, or ConfigError when it is too short to be masked in logs without garbling them."""
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{what} is only {len(value)} characters long; sweeper refuses credentials shorter "
            f"than {MIN_SECRET_LENGTH} characters, because masking one in logs and error messages "
            "would hide every occurrence of its letters (and it is easy to guess). Use the real "
            "credential.",
            path=str(path) if path else None,
            key=key,
        )
    return value


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
        return _long_enough(
            token, f"The access token in ${api.token_env}", config_path, "api.token_env"
        )
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
        token = _env(environ, api.token_env)
        if token:
            _long_enough(
                token, f"The access token in ${api.token_env}", config_path, "api.token_env"
            )
        return BearerAuth(token or DEMO_TOKEN)
    if api.auth == "bearer":
        return BearerAuth(_bearer_token(api, environ, config_path))
    if api.auth == "basic":
        username = _required(environ, api.username_env, "username", "api.username_env", config_path)
        password = _required(environ, api.password_env, "password", "api.password_env", config_path)
        _long_enough(
            password, f"The password in ${api.password_env}", config_path, "api.password_env"
        )
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
        what = f"The OAuth refresh token in ${api.refresh_token_env}"
        _long_enough(refresh, what, config_path, "api.refresh_token_env")
        client_id = _required(
            environ, api.client_id_env, "OAuth client id", "api.client_id_env", config_path
        )
        access = _env(environ, api.token_env)
        if access:
            _long_enough(
                access, f"The access token in ${api.token_env}", config_path, "api.token_env"
            )
        return OAuthRefreshAuth(
            token_url=api.token_url,
            refresh_token=refresh,
            client_id=client_id,
            access_token=access or None,
        )
    raise ConfigError(
        f'Unknown authentication scheme "{redact(api.auth)}"; use "bearer", "basic" or "oauth".',
        path=str(config_path) if config_path else None,
        key="api.auth",
    )


def secrets(
    api: ApiSettings, environ: Mapping[str, str], *, config_path: Path | None = None
) -> tuple[str, ...]:
    """The secret values in play, in every form they are sent, for ``install_redaction``.

    Never raises and never blocks (a token file that cannot be read safely is skipped; using it
    fails in ``build_auth``).
    """
    names = [api.token_env, api.password_env, api.refresh_token_env]
    values = [_env(environ, n) for n in names]
    password = _env(environ, api.password_env)
    username = _env(environ, api.username_env)
    if password and username:
        values += basic_forms(username, password)
    path = _token_file(api, config_path)
    if path is not None:
        with contextlib.suppress(ConfigError):
            values.append(read_token_file(path))
    return tuple(dict.fromkeys(v for v in values if v))


def build_verify(api: ApiSettings) -> ssl.SSLContext | bool:
    """TLS verification for ``api``: on by default, a CA bundle if given, off only for loopback."""
    if api.insecure:
        if api.embedded or is_loopback_host(urlsplit(api.base_url).hostname or ""):
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
