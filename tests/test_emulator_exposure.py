"""`sweeper emulator serve` warns loudly before listening on an address the network can reach.

Nothing here binds a socket: the decision is a function, and the CLI test replaces `serve`.
"""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from sweeper.cli import cli
from sweeper.config import is_loopback_host
from sweeper.emulator import serve as serve_module
from sweeper.emulator.serve import exposure_warning


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "a.localhost"]
)
def test_loopback_hosts_get_no_warning(host: str) -> None:
    assert is_loopback_host(host)
    assert exposure_warning(host, token_required=False) is None


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.7", "myhost", "localhost.evil.com", ""]
)
def test_other_hosts_without_a_token_get_the_loud_warning(host: str) -> None:
    assert not is_loopback_host(host)
    warning = exposure_warning(host, token_required=False)
    assert warning is not None
    assert warning.startswith("WARNING:") and f"listens on {host}," in warning
    assert "ANY token" in warning and "/_emulator" in warning and "--token-env" in warning


def test_a_required_token_still_warns_about_the_admin_routes() -> None:
    warning = exposure_warning("0.0.0.0", token_required=True)
    assert warning is not None
    assert "/_emulator" in warning and "no credentials" in warning
    assert "ANY token" not in warning


def _serve_with(
    monkeypatch: pytest.MonkeyPatch, *args: str, env: dict[str, str] | None = None
) -> Any:
    calls: list[dict[str, Any]] = []

    def fake_serve(settings: Any, **kwargs: Any) -> None:  # records instead of binding
        calls.append(kwargs)

    monkeypatch.setattr(serve_module, "serve", fake_serve)
    result = CliRunner().invoke(cli, ["emulator", "serve", *args], env=env)
    assert result.exit_code == 0, result.output + result.stderr
    assert len(calls) == 1
    return result, calls[0]


def test_cli_warns_on_stderr_for_a_non_loopback_host(monkeypatch: pytest.MonkeyPatch) -> None:
    result, call = _serve_with(monkeypatch, "--host", "0.0.0.0", "--port", "0")
    assert call["host"] == "0.0.0.0"
    assert "WARNING: the emulator listens on 0.0.0.0" in result.stderr
    assert "--token-env" in result.stderr
    assert "WARNING" not in result.stdout


def test_cli_stays_quiet_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    result, call = _serve_with(monkeypatch, "--port", "0")
    assert call["host"] == "127.0.0.1"
    assert "WARNING" not in result.output + result.stderr


def test_cli_with_token_env_warns_only_about_admin_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"EXPOSURE_TOKEN": "exposure-token-123"}
    result, _ = _serve_with(
        monkeypatch, "--host", "0.0.0.0", "--token-env", "EXPOSURE_TOKEN", env=env
    )
    assert "/_emulator admin routes" in result.stderr and "ANY token" not in result.stderr
