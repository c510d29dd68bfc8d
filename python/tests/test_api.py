"""The API against the binary: address leases, errors, check."""

from __future__ import annotations

import os
import signal
import socket
import stat
from pathlib import Path
from typing import Iterator

import pytest

import sockcheck
from conftest import Procs, binary, run_bin


@pytest.fixture(autouse=True)
def _binary_only(monkeypatch: pytest.MonkeyPatch) -> None:
    binary()
    monkeypatch.delenv("SOCKCHECK_FALLBACK", raising=False)
    monkeypatch.delenv("SOCKCHECK_POOL", raising=False)
    monkeypatch.delenv("SOCKCHECK_PORTS", raising=False)


@pytest.fixture
def listener() -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def listen(socks: list[socket.socket], host: str, port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen()
    socks.append(s)
    return s


def test_the_binary_is_found_and_runs() -> None:
    found = sockcheck.find_binary()
    assert found is not None
    status, out, _ = run_bin("--version")
    assert status == 0 and out.startswith("sockcheck ")
    assert sockcheck.backend()[0] == "sockcheck"


def test_acquire_leases_distinct_addresses_owned_by_this_process() -> None:
    pool = "127.87.1.1-127.87.1.3"
    with sockcheck.acquire(pool, ports=46700) as a, sockcheck.acquire(pool, ports=[46700]) as b:
        assert a.address != b.address
        assert {a.address, b.address} <= {"127.87.1.1", "127.87.1.2", "127.87.1.3"}
        assert a.ports == [46700] and a.source == "sockcheck"
        assert a.owner is not None and a.owner["pid"] == os.getpid()
        _, doc, _ = run_bin("leases", "--json", "127.87.1.0/29")
        mine = {row["address"]: row for row in doc["leases"]}
        assert mine[a.address]["owner"]["pid"] == os.getpid()
        assert mine[a.address]["backend"] == "binary"
    assert a.released and b.released
    _, doc, _ = run_bin("leases", "--json", "127.87.1.0/29")
    assert doc["leases"] == []
    a.release()  # twice is fine


def test_no_free_address_lists_candidates() -> None:
    with sockcheck.acquire("127.87.2.1", ports=46700) as held:
        with pytest.raises(sockcheck.SockcheckError) as info:
            sockcheck.acquire("127.87.2.1", ports=46700)
    e = info.value
    assert e.code == "SOCKCHECK_NO_FREE_ADDRESS"
    assert e.exit_status == 1
    assert [c["address"] for c in e.candidates] == [held.address]
    assert e.candidates[0]["reason"] == "leased"
    assert os.getpid() in e.candidates[0]["pids"]
    assert "127.87.2.1" in str(e) and f"pid {os.getpid()}" in str(e)


def test_a_busy_address_is_skipped_naming_its_holder(listener: list[socket.socket]) -> None:
    listen(listener, "127.87.3.1", 46700)
    with sockcheck.acquire("127.87.3.1-127.87.3.2", ports=46700) as lease:
        assert lease.address == "127.87.3.2"
    with pytest.raises(sockcheck.SockcheckError) as info:
        sockcheck.acquire("127.87.3.1", ports=46700)
    c = info.value.candidates[0]
    assert (c["address"], c["reason"], c["pids"]) == ("127.87.3.1", "busy", [os.getpid()])


def test_usage_errors() -> None:
    with pytest.raises(sockcheck.SockcheckError) as info:
        sockcheck.acquire("bogus", ports=46700)
    assert info.value.code == "SOCKCHECK_USAGE" and info.value.exit_status == 2
    with pytest.raises(sockcheck.SockcheckError) as info:
        sockcheck.acquire("127.87.4.1", ports=0)
    assert info.value.code == "SOCKCHECK_USAGE"
    with pytest.raises(sockcheck.SockcheckError) as info:
        sockcheck.acquire("127.87.4.1", ports=46700, wait="soon")
    assert info.value.code == "SOCKCHECK_USAGE"


def test_a_state_directory_open_to_others_is_a_state_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    assert stat.S_IMODE(state.stat().st_mode) == 0o777
    monkeypatch.setenv("SOCKCHECK_STATE_DIR", str(state))
    with pytest.raises(sockcheck.SockcheckError) as info:
        sockcheck.acquire("127.87.4.2", ports=46700)
    e = info.value
    assert e.code == "SOCKCHECK_STATE", e
    assert e.exit_status == 3
    assert str(state) in str(e)


def test_check_reports_without_raising(listener: list[socket.socket]) -> None:
    doc = sockcheck.check("127.87.5.1", ports=46701)
    assert doc["free"] is True and doc["source"] == "sockcheck"
    assert doc["addresses"][0]["verdict"] == "free"
    listen(listener, "127.87.5.1", 46701)
    doc = sockcheck.check(["127.87.5.1", "127.87.5.2"], ports=[46701])
    assert doc["free"] is False
    busy, free = doc["addresses"]
    assert busy["verdict"] == "busy" and free["verdict"] == "free"
    owners = busy["ports"][0]["listeners"][0]["owners"]
    assert [o["pid"] for o in owners] == [os.getpid()]
    with pytest.raises(sockcheck.SockcheckError) as info:
        sockcheck.check("localhost:80")
    assert info.value.code == "SOCKCHECK_USAGE"


CHILD_ACQUIRE = """
import sys, sockcheck
lease = sockcheck.acquire(sys.argv[1] if len(sys.argv) > 1 else {pool!r}, ports=46700)
print(lease.address, flush=True)
sys.stdin.readline()
"""


def test_a_lease_ends_when_its_process_is_killed(procs: Procs) -> None:
    child = procs.python(CHILD_ACQUIRE.format(pool="127.87.6.1"))
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "127.87.6.1"
    with pytest.raises(sockcheck.SockcheckError):
        sockcheck.acquire("127.87.6.1", ports=46700)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with sockcheck.acquire("127.87.6.1", ports=46700, wait="10s") as lease:
        assert lease.address == "127.87.6.1"


def test_wait_takes_the_address_when_it_is_released(procs: Procs) -> None:
    child = procs.python(CHILD_ACQUIRE.format(pool="127.87.7.1"))
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "127.87.7.1"
    child.stdin.write("\n")  # the child exits: its lease ends
    child.stdin.flush()
    with sockcheck.acquire("127.87.7.1", ports=46700, wait=10.0) as lease:
        assert lease.address == "127.87.7.1"
