"""Without the SWEEPER_LIVE_* variables, tests here cannot leave the machine (conftest.py)."""

from __future__ import annotations

import socket

import pytest

from tests.live.settings import configured

pytestmark = pytest.mark.skipif(configured(), reason="the live variables are set: no guard")


def test_a_non_loopback_address_is_refused_before_any_packet() -> None:
    # 192.0.2.1 is TEST-NET-1: documentation only, never routed.
    with pytest.raises(OSError, match="tests/live may not reach"):
        socket.create_connection(("192.0.2.1", 443), timeout=0.5)
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock,
        pytest.raises(OSError, match="tests/live may not reach"),
    ):
        sock.connect_ex(("2001:db8::1", 443, 0, 0))


def test_a_name_lookup_of_a_remote_host_is_refused() -> None:
    with pytest.raises(socket.gaierror, match="may not look up"):
        socket.getaddrinfo("api.clouddataprep.com", 443)


def test_loopback_still_works() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("localhost", port), timeout=5):
            conn, _ = server.accept()
            conn.close()
