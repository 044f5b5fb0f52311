"""Credentials and TLS settings for the API client.

Tokens come from an environment variable or a file only the owner can read, never from argv or the
config file itself. Supported schemes: Bearer (Cloud Dataprep, Trifacta), HTTP Basic (on-prem
Trifacta), and OAuth refresh (Alteryx Analytics Cloud, whose access tokens last 5 minutes and whose
refresh tokens rotate: a refresh token kept in a file is rewritten there, under a lock).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import ssl
import stat
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from sweeper.config import ApiSettings, is_loopback_host
from sweeper.errors import AuthError, ConfigError
from sweeper.redact import MIN_SECRET_LENGTH, add_secrets, basic_forms, redact

log = logging.getLogger("sweeper.auth")

DEMO_TOKEN = "sweeper-embedded-demo-token"  # the embedded emulator accepts any bearer token
_REFRESH_MARGIN = 30.0  # refresh an OAuth access token this many seconds before it expires
_LOCK_WAIT = 120.0  # seconds to wait for another sweep's refresh of the same token file
_LOCK_POLL = 0.05  # seconds between tries of that lock (flock has no async form)


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

    With ``token_file``, the refresh token lives in that file and refresh tokens may rotate (the
    old one dies when a new one is issued): each refresh holds an flock on a sibling ``.lock``
    file, re-reads the token file under it (another sweep may have rotated it already), and
    writes the new refresh token back atomically before the new access token is used.
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
        token_file: Path | None = None,
    ) -> None:
        self._token_url = token_url
        self._refresh_token = refresh_token
        self._client_id = client_id
        self._access_token = access_token
        self._expires_at: float | None = None
        self._clock = clock
        self._token_file = token_file
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

    def _where(self) -> str:
        """Where the user puts a new refresh token, for messages."""
        if self._token_file is not None:
            return f"put the new refresh token in {self._token_file} (alone, mode 0600)"
        return "set it in the refresh-token environment variable"

    def _accept_refresh(self, response: httpx.Response) -> None:
        path = urlsplit(self._token_url).path or "/"
        if response.status_code != 200:
            raise AuthError(
                f"Refreshing the OAuth access token at {path} failed with HTTP "
                f"{response.status_code}. The refresh token may have expired, been revoked, or "
                f"been used up by a rotation sweeper did not see: create a new OAuth token pair, "
                f"{self._where()}, and resume the run.",
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
        new_refresh = payload.get("refresh_token")
        rotated = isinstance(new_refresh, str) and bool(new_refresh)
        # Tokens issued mid-run were not known when redaction was installed: mask them too.
        add_secrets([token, new_refresh if rotated else self._refresh_token])
        if rotated and new_refresh != self._refresh_token:
            # The old refresh token is dead now: the file must hold the new one before anything
            # else happens, or a crash would leave only a dead token behind.
            self._refresh_token = new_refresh
            if self._token_file is not None:
                self._store(new_refresh)
        self._access_token = token
        self._generation += 1
        expires_in = payload.get("expires_in")
        if isinstance(expires_in, (int, float)) and expires_in > 0:
            self._expires_at = self._clock() + float(expires_in)
        else:
            self._expires_at = None

    def _store(self, refresh_token: str) -> None:
        """Write the rotated refresh token to the token file; a failure is only warned about."""
        assert self._token_file is not None
        try:
            write_token_file(self._token_file, refresh_token)
        except OSError as exc:
            # The run can go on with the token in memory; the next one needs a new token pair.
            log.warning(
                "The OAuth refresh token was rotated but %s could not be updated (%s): the token "
                "there no longer works. After this run, create a new OAuth token pair and put "
                "the refresh token in %s.",
                self._token_file,
                exc.strerror or type(exc).__name__,
                self._token_file,
            )

    def _reread(self) -> None:
        """Adopt the token file's refresh token: another sweep may have rotated it."""
        assert self._token_file is not None
        try:
            current = read_token_file(self._token_file)
        except ConfigError as exc:
            raise AuthError(f"{exc} The OAuth refresh token is read from it.") from None
        if current != self._refresh_token:
            add_secrets([current])
            self._refresh_token = current

    def _stale(self) -> bool:
        if self._access_token is None:
            return True
        return self._expires_at is not None and self._clock() >= self._expires_at - _REFRESH_MARGIN

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        """Around one refresh: the token file's lock, and its current token, if there is one."""
        if self._token_file is None:
            yield
            return
        async with _file_lock(self._token_file):
            self._reread()
            yield

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._stale():
            async with self._lock:
                if self._stale():
                    async with self._guard():
                        refreshed = yield self._refresh_request()
                        await refreshed.aread()  # streamed by the client; not read for us
                        self._accept_refresh(refreshed)
        generation = self._generation
        request.headers["Authorization"] = f"Bearer {self._access_token}"
        response = yield request
        if response.status_code != 401:
            return
        async with self._lock:
            # Another request may have refreshed while this one was in flight: reuse its token.
            if self._generation == generation:
                async with self._guard():
                    refreshed = yield self._refresh_request()
                    await refreshed.aread()
                    self._accept_refresh(refreshed)
        request.headers["Authorization"] = f"Bearer {self._access_token}"
        yield request  # the one retry; whatever it answers goes back to the caller


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive flock on ``<path>.lock``, waited for without blocking the event loop."""
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        raise AuthError(
            f"The lock file {lock_path} beside the OAuth token file cannot be opened "
            f"({exc.strerror}); sweeper needs to create it there to refresh the token safely."
        ) from None
    try:
        deadline = time.monotonic() + _LOCK_WAIT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AuthError(
                        f"Another process has held {lock_path} for {_LOCK_WAIT:g} s while "
                        f"refreshing the OAuth token in {path}; if none is running, delete "
                        "the lock file and resume."
                    ) from None
                await asyncio.sleep(_LOCK_POLL)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def write_token_file(path: Path, token: str) -> None:
    """Replace the token file's content atomically: a 0600 file beside it, fsync, rename."""
    target = Path(os.path.realpath(path))  # a symlinked token file stays a symlink
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(token + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename itself must survive a power loss, or the old (dead) token comes back.
    with contextlib.suppress(OSError):
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


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
        # A token file wins over the variable: only a file can follow the refresh token's
        # rotation from one sweep to the next.
        token_file = _token_file(api, config_path)
        if token_file is not None:
            refresh = read_token_file(token_file)
        else:
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
            token_file=token_file,
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
