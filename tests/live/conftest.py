"""Guard for the live tests: without the SWEEPER_LIVE_* variables, nothing here may leave the
machine. Every test under tests/live gets a socket layer that refuses non-loopback addresses
(and name lookups of anything but localhost) unless the variables are set."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.live.settings import HOW_TO_ENABLE, configured

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def _is_loopback(host: object) -> bool:
    if not isinstance(host, str):
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _refuse(where: object) -> OSError:
    return OSError(f"tests/live may not reach {where!r}: {HOW_TO_ENABLE}")


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Refuse non-loopback connections and lookups unless the live variables are set."""
    if configured():
        yield
        return
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def check(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise _refuse(address)

    def connect(self: socket.socket, address: Any) -> None:
        check(self, address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(self, address)
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        # An address literal needs no lookup; connect() checks it.
        if name is not None and not _is_loopback(name) and not _is_ip_literal(name):
            raise socket.gaierror(f"tests/live may not look up {host!r}: {HOW_TO_ENABLE}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """``pytest tests/live`` without the variables collects nothing (the module skips): that is
    the expected outcome, so it exits 0 rather than 5 ("no tests collected")."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and not configured():
        session.exitstatus = pytest.ExitCode.OK
