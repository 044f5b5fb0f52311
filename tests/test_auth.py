"""Credentials (env, token file, Basic, OAuth refresh) and TLS verification settings."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from sweeper.auth import (
    DEMO_TOKEN,
    BearerAuth,
    OAuthRefreshAuth,
    build_auth,
    build_verify,
    secrets,
)
from sweeper.client import DataprepClient
from sweeper.config import ApiSettings
from sweeper.errors import AuthError, ConfigError

SENTINEL = "sentinel-4f0e2a9c-token"
URL = "https://api.clouddataprep.com"


def auth_header(auth: httpx.Auth | None) -> str:
    """The Authorization header ``auth`` puts on a request (sync flow is enough for static auth)."""
    assert auth is not None
    request = httpx.Request("GET", "https://h.test/v4/jobGroups/1")
    flow = auth.sync_auth_flow(request)
    sent = next(flow)
    return str(sent.headers["Authorization"])


def test_bearer_from_env_strips_whitespace() -> None:
    auth = build_auth(ApiSettings(base_url=URL), {"DATAPREP_TOKEN": f"  {SENTINEL}\n"})
    assert isinstance(auth, BearerAuth)
    assert auth_header(auth) == f"Bearer {SENTINEL}"
    assert SENTINEL not in repr(auth)


def test_missing_token_names_the_variable_and_how_to_set_it() -> None:
    with pytest.raises(ConfigError) as info:
        build_auth(ApiSettings(base_url=URL, token_env="MY_TOKEN"), {"OTHER": SENTINEL})
    text = str(info.value)
    assert "MY_TOKEN" in text and "export MY_TOKEN=" in text
    assert info.value.key == "api.token_env"
    assert SENTINEL not in text


def _token_file(tmp_path: Path, mode: int, content: str = SENTINEL + "\n") -> Path:
    path = tmp_path / "token"
    path.write_text(content)
    path.chmod(mode)
    return path


def test_token_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o644)
    with pytest.raises(ConfigError) as info:
        build_auth(ApiSettings(base_url=URL, token_file=path), {})
    assert f"chmod 600 {path}" in str(info.value)
    assert SENTINEL not in str(info.value)


def test_token_file_0600_is_accepted_and_env_wins(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o600)
    assert auth_header(build_auth(ApiSettings(base_url=URL, token_file=path), {})) == (
        f"Bearer {SENTINEL}"
    )
    env = {"DATAPREP_TOKEN": "env-token-wins"}
    env_auth = build_auth(ApiSettings(base_url=URL, token_file=path), env)
    assert auth_header(env_auth) == "Bearer env-token-wins"


def test_relative_token_file_resolves_against_the_config_file(tmp_path: Path) -> None:
    _token_file(tmp_path, 0o600)
    config = tmp_path / "sweep.toml"
    config.write_text("")
    api = ApiSettings(base_url=URL, token_file=Path("token"))
    assert auth_header(build_auth(api, {}, config_path=config)) == f"Bearer {SENTINEL}"
    assert secrets(api, {}, config_path=config) == (SENTINEL,)


def test_empty_or_missing_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        build_auth(ApiSettings(base_url=URL, token_file=_token_file(tmp_path, 0o600, "\n")), {})
    with pytest.raises(ConfigError, match="cannot be read"):
        build_auth(ApiSettings(base_url=URL, token_file=tmp_path / "nope"), {})


def test_embedded_uses_a_demo_token_unless_one_is_set() -> None:
    assert auth_header(build_auth(ApiSettings(), {})) == f"Bearer {DEMO_TOKEN}"
    env = {"DATAPREP_TOKEN": "my-own-token"}
    assert auth_header(build_auth(ApiSettings(), env)) == "Bearer my-own-token"


def test_basic_auth_from_env() -> None:
    api = ApiSettings(base_url="http://trifacta:3005", auth="basic")
    env = {"DATAPREP_USERNAME": "ann", "DATAPREP_PASSWORD": SENTINEL}
    expected = base64.b64encode(f"ann:{SENTINEL}".encode()).decode()
    assert auth_header(build_auth(api, env)) == f"Basic {expected}"
    with pytest.raises(ConfigError) as info:
        build_auth(api, {"DATAPREP_USERNAME": "ann"})
    assert "DATAPREP_PASSWORD" in str(info.value)


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bearer"):
        build_auth(ApiSettings(base_url=URL, auth="kerberos"), {"DATAPREP_TOKEN": SENTINEL})


def test_secrets_lists_values_in_play() -> None:
    env = {
        "DATAPREP_TOKEN": "token-aaaa",
        "DATAPREP_REFRESH_TOKEN": "refresh-cccc",
    }
    assert set(secrets(ApiSettings(base_url=URL), env)) == {"token-aaaa", "refresh-cccc"}


def test_secrets_lists_every_form_basic_credentials_travel_in() -> None:
    env = {"DATAPREP_USERNAME": "not-secret", "DATAPREP_PASSWORD": "password-bbbb"}
    found = set(secrets(ApiSettings(base_url=URL, auth="basic"), env))
    encoded = base64.b64encode(b"not-secret:password-bbbb").decode()
    assert {"password-bbbb", "not-secret:password-bbbb", encoded} <= found
    assert "not-secret" not in found  # a user name alone is not a secret
    # what the client really sends is one of these forms
    assert auth_header(build_auth(ApiSettings(base_url=URL, auth="basic"), env)) == (
        f"Basic {encoded}"
    )


# --- OAuth ---------------------------------------------------------------------------------------

TOKEN_URL = "https://auth.test/as/token"
OAUTH = ApiSettings(base_url="https://us1.alteryxcloud.com", auth="oauth", token_url=TOKEN_URL)
OAUTH_ENV = {
    "DATAPREP_REFRESH_TOKEN": "refresh-1",
    "DATAPREP_CLIENT_ID": "cid",
    "DATAPREP_TOKEN": "access-old",
}


class OAuthServer:
    """Token endpoint plus an API that accepts only ``valid`` access tokens."""

    def __init__(self, valid: set[str], token_status: int = 200) -> None:
        self.valid = valid
        self.token_status = token_status
        self.token_calls: list[dict[str, list[str]]] = []
        self.api_auth: list[str] = []
        self.issued = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/as/token":
            self.token_calls.append(parse_qs(request.content.decode()))
            if self.token_status != 200:
                return httpx.Response(self.token_status, json={"error": "invalid_grant"})
            self.issued += 1
            return httpx.Response(
                200,
                json={
                    "access_token": f"access-new-{self.issued}",
                    "refresh_token": f"refresh-{self.issued + 1}",
                    "expires_in": 300,
                },
            )
        header = request.headers.get("authorization", "")
        self.api_auth.append(header)
        if header.removeprefix("Bearer ") in self.valid:
            return httpx.Response(200, json="Complete")
        return httpx.Response(401, json={"exception": {"name": "Unauthorized", "message": "no"}})


def _status(server: OAuthServer, env: dict[str, str], calls: int = 1) -> list[Any]:
    auth = build_auth(OAUTH, env)
    assert isinstance(auth, OAuthRefreshAuth)

    async def go() -> list[Any]:
        transport = httpx.MockTransport(server)
        async with DataprepClient(OAUTH.base_url, auth=auth, transport=transport) as client:
            return await asyncio.gather(
                *(client.get_status(1) for _ in range(calls)), return_exceptions=True
            )

    return asyncio.run(go())


def test_oauth_refreshes_once_on_401_and_retries() -> None:
    server = OAuthServer(valid={"access-new-1"})
    assert _status(server, OAUTH_ENV) == ["Complete"]
    assert server.api_auth == ["Bearer access-old", "Bearer access-new-1"]
    assert server.token_calls == [
        {"grant_type": ["refresh_token"], "refresh_token": ["refresh-1"], "client_id": ["cid"]}
    ]


def test_oauth_second_401_is_returned_as_auth_error_without_looping() -> None:
    server = OAuthServer(valid=set())
    (result,) = _status(server, OAUTH_ENV)
    assert isinstance(result, AuthError) and result.status_code == 401
    assert len(server.token_calls) == 1
    assert len(server.api_auth) == 2


def test_oauth_without_access_token_refreshes_first() -> None:
    server = OAuthServer(valid={"access-new-1"})
    env = {k: v for k, v in OAUTH_ENV.items() if k != "DATAPREP_TOKEN"}
    assert _status(server, env) == ["Complete"]
    assert server.api_auth == ["Bearer access-new-1"]


def test_oauth_concurrent_401s_refresh_once() -> None:
    server = OAuthServer(valid={"access-new-1"})
    assert _status(server, OAUTH_ENV, calls=5) == ["Complete"] * 5
    assert len(server.token_calls) == 1


def test_oauth_failed_refresh_is_auth_error_without_secrets() -> None:
    server = OAuthServer(valid=set(), token_status=400)
    (result,) = _status(server, OAUTH_ENV)
    assert isinstance(result, AuthError)
    assert "/as/token" in str(result) and "refresh token" in str(result)
    for secret in OAUTH_ENV.values():
        if secret != "cid":
            assert secret not in str(result)


def test_oauth_needs_token_url_and_refresh_token() -> None:
    with pytest.raises(ConfigError, match="token_url"):
        build_auth(ApiSettings(base_url=URL, auth="oauth"), OAUTH_ENV)
    with pytest.raises(ConfigError, match="DATAPREP_REFRESH_TOKEN"):
        build_auth(OAUTH, {"DATAPREP_CLIENT_ID": "cid"})


# --- TLS -----------------------------------------------------------------------------------------


def test_verify_is_on_by_default() -> None:
    assert build_verify(ApiSettings(base_url=URL)) is True


@pytest.mark.parametrize(
    "base", ["http://127.0.0.1:3005", "https://localhost", "http://[::1]:8080", "http://127.8.0.1"]
)
def test_insecure_allowed_for_loopback(base: str) -> None:
    assert build_verify(ApiSettings(base_url=base, insecure=True)) is False


@pytest.mark.parametrize(
    "base", [URL, "https://10.0.0.5", "https://localhost.evil.com", "https://127.0.0.1.nip.io"]
)
def test_insecure_refused_for_non_loopback(base: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_verify(ApiSettings(base_url=base, insecure=True))
    assert "api.ca_bundle" in str(info.value)


def test_ca_bundle(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ca_bundle"):
        build_verify(ApiSettings(base_url=URL, ca_bundle=tmp_path / "missing.pem"))
    import certifi  # httpx's own dependency: a real PEM bundle to load

    context = build_verify(ApiSettings(base_url=URL, ca_bundle=Path(certifi.where())))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED


# --- credentials too short to mask ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "env", "key"),
    [
        (ApiSettings(base_url=URL), {"DATAPREP_TOKEN": "abc"}, "api.token_env"),
        (ApiSettings(), {"DATAPREP_TOKEN": "abc"}, "api.token_env"),  # embedded, own token
        (
            ApiSettings(base_url=URL, auth="basic"),
            {"DATAPREP_USERNAME": "ann", "DATAPREP_PASSWORD": "abc"},
            "api.password_env",
        ),
        (
            OAUTH,
            {"DATAPREP_REFRESH_TOKEN": "abc", "DATAPREP_CLIENT_ID": "cid"},
            "api.refresh_token_env",
        ),
        (OAUTH, {**OAUTH_ENV, "DATAPREP_TOKEN": "abc"}, "api.token_env"),
    ],
    ids=["bearer", "embedded", "basic-password", "oauth-refresh", "oauth-access"],
)
def test_credentials_too_short_to_mask_are_refused(
    api: ApiSettings, env: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_auth(api, env)
    text = str(info.value)
    assert info.value.key == key
    assert "3 characters" in text and "shorter than 8" in text and "mask" in text
    assert "abc" not in text


def test_the_demo_token_and_an_eight_character_token_are_accepted() -> None:
    assert len(DEMO_TOKEN) >= 8  # the built-in demo token needs no exemption
    assert auth_header(build_auth(ApiSettings(), {})) == f"Bearer {DEMO_TOKEN}"
    assert auth_header(build_auth(ApiSettings(base_url=URL), {"DATAPREP_TOKEN": "12345678"})) == (
        "Bearer 12345678"
    )


def test_short_values_are_not_registered_for_masking() -> None:
    from sweeper.redact import clear_secrets, install_redaction, redact, uninstall_redaction

    clear_secrets()
    try:
        install_redaction(["ab", SENTINEL])
        assert redact(f"a table of {SENTINEL}") == "a table of ***"  # not "t***le"
    finally:
        uninstall_redaction()


# --- token files that are not what they should be -----------------------------------------------


def _refused(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        build_auth(ApiSettings(base_url=URL, token_file=path), {})
    assert info.value.key == "api.token_file"
    text = str(info.value)
    assert str(path) in text  # the file is named
    return text


def test_token_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"\xff\xfe" + SENTINEL.encode("utf-16-le"))
    path.chmod(0o600)
    text = _refused(path)
    assert "not UTF-8" in text and "byte 0" in text
    assert SENTINEL not in text


def test_token_file_is_a_directory(tmp_path: Path) -> None:
    path = tmp_path / "tokendir"
    path.mkdir(mode=0o700)
    assert "is a directory" in _refused(path)


@pytest.mark.timeout(15)
def test_token_file_is_a_fifo_and_nothing_hangs(tmp_path: Path) -> None:
    path = tmp_path / "token.fifo"
    os.mkfifo(path, 0o600)
    assert "not a regular file" in _refused(path)
    # secrets() reads the same file for redaction: it must not block either
    assert secrets(ApiSettings(base_url=URL, token_file=path), {}) == ()


def test_token_file_with_two_lines(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o600, f"{SENTINEL}\n\nsecond-token-value\n")
    text = _refused(path)
    assert "2 non-empty lines" in text and "only the access token" in text
    assert SENTINEL not in text and "second-token-value" not in text


def test_token_file_with_a_scheme_or_spaces(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o600, f"Bearer {SENTINEL}\n")
    assert "contains spaces" in _refused(path)


def test_token_file_too_short(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o600, "abc\n")
    assert "shorter than 8" in _refused(path)


def test_token_file_blank_lines_and_crlf_are_fine(tmp_path: Path) -> None:
    path = _token_file(tmp_path, 0o600, f"\r\n{SENTINEL}\r\n\r\n")
    assert auth_header(build_auth(ApiSettings(base_url=URL, token_file=path), {})) == (
        f"Bearer {SENTINEL}"
    )


def test_fifo_readable_by_others_names_the_type_first(tmp_path: Path) -> None:
    path = tmp_path / "open.fifo"
    os.mkfifo(path)
    path.chmod(0o644)
    assert "not a regular file" in _refused(path)


def test_tokens_issued_by_an_oauth_refresh_are_masked() -> None:
    from sweeper.redact import clear_secrets, redact

    clear_secrets()
    try:
        server = OAuthServer(valid={"access-new-1"})
        assert _status(server, OAUTH_ENV) == ["Complete"]
        assert redact("got access-new-1 and refresh-2") == "got *** and ***"
    finally:
        clear_secrets()
