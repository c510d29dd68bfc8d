"""The done-when suite: 64 tests under pytest-xdist (-n 8), each binding its
own sockcheck_port. python/ci.sh runs it against the installed wheel with
--sockcheck-host 127.87.64.1 --sockcheck-port-range 46750-46799."""

from __future__ import annotations

import socket
import time

import pytest


@pytest.mark.parametrize("i", range(64))
def test_bind_the_leased_port(i: int, sockcheck_port: int, request: pytest.FixtureRequest) -> None:
    host = request.config.getoption("sockcheck_host")
    server = socket.socket()
    # No SO_REUSEADDR: a port another test holds fails here.
    server.bind((host, sockcheck_port))
    server.listen()
    try:
        client = socket.create_connection((host, sockcheck_port), timeout=5)
        conn, _ = server.accept()
        client.sendall(b"%d\n" % i)
        assert conn.recv(16) == b"%d\n" % i
        time.sleep(0.02)  # overlap with the other workers' tests
        # The client closes first, so the TIME_WAIT is on its ephemeral
        # port, not on the leased one (which a bind without SO_REUSEADDR,
        # and the canary, would find in use for a minute).
        client.close()
        assert conn.recv(16) == b""
        conn.close()
    finally:
        server.close()
