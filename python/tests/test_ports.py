"""acquire_port against the binary's `acquire-port` (skips, saying so, on a
binary without it)."""

from __future__ import annotations

import os
import signal
import socket

import pytest

import sockcheck
from conftest import Procs, require_command, run_bin


@pytest.fixture(autouse=True)
def _ports_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    require_command("acquire-port")
    monkeypatch.delenv("SOCKCHECK_FALLBACK", raising=False)


def test_acquire_port_leases_distinct_ports() -> None:
    with sockcheck.acquire_port("46710-46712", host="127.87.40.1", count=2) as lease:
        assert lease.source == "sockcheck" and lease.host == "127.87.40.1"
        assert len(set(lease.ports)) == 2 and set(lease.ports) <= {46710, 46711, 46712}
        assert lease.port == lease.ports[0]
        assert lease.owner is not None and lease.owner["pid"] == os.getpid()
        with sockcheck.acquire_port("46710-46712", host="127.87.40.1") as third:
            assert third.port not in lease.ports
            with pytest.raises(sockcheck.SockcheckError) as err:
                sockcheck.acquire_port("46710-46712", host="127.87.40.1")
    e = err.value
    assert e.code == "SOCKCHECK_NO_FREE_PORT" and e.exit_status == 1
    assert sorted(c["port"] for c in e.candidates) == [46710, 46711, 46712]
    assert all(c["reason"] == "leased" and os.getpid() in c["pids"] for c in e.candidates)
    assert lease.released
    with sockcheck.acquire_port("46710-46712", host="127.87.40.1", count=3) as all3:
        assert sorted(all3.ports) == [46710, 46711, 46712]


def test_a_busy_port_is_skipped() -> None:
    s = socket.socket()
    s.bind(("127.87.41.1", 46713))
    s.listen()
    try:
        with sockcheck.acquire_port([46713, 46714], host="127.87.41.1") as lease:
            assert lease.ports == [46714]
    finally:
        s.close()


def test_port_leases_show_in_leases() -> None:
    with sockcheck.acquire_port(46715, host="127.87.42.1"):
        _, doc, _ = run_bin("leases", "--json")
        rows = [r for r in doc["leases"] if r.get("kind") == "port" and r.get("port") == 46715]
        assert len(rows) == 1 and rows[0]["owner"]["pid"] == os.getpid()


def test_a_port_lease_ends_when_its_process_is_killed(procs: Procs) -> None:
    child = procs.python(
        "import sys, sockcheck\n"
        "lease = sockcheck.acquire_port(46716, host='127.87.43.1')\n"
        "print(lease.port, flush=True)\n"
        "sys.stdin.readline()\n")
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "46716"
    with pytest.raises(sockcheck.SockcheckError):
        sockcheck.acquire_port(46716, host="127.87.43.1")
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with sockcheck.acquire_port(46716, host="127.87.43.1", wait="10s") as lease:
        assert lease.port == 46716


def test_usage() -> None:
    with pytest.raises(sockcheck.SockcheckError) as err:
        sockcheck.acquire_port("99999", host="127.87.44.1")
    assert err.value.code == "SOCKCHECK_USAGE"
    with pytest.raises(sockcheck.SockcheckError) as err:
        sockcheck.acquire_port(46717, host="127.87.44.1", count=0)
    assert err.value.code == "SOCKCHECK_USAGE"
