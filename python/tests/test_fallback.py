"""The fallback: the binary's lease tokens, held by this process."""

from __future__ import annotations

import json
import os
import signal
import socket
import warnings
from typing import Any

import pytest

import sockcheck
from sockcheck import _fallback
from conftest import Procs, binary, require_command, run_bin

pytestmark = pytest.mark.skipif(not _fallback.ABSTRACT_TOKENS, reason="skipped: abstract unix tokens are Linux only")


def token_line(name: bytes) -> dict[str, Any]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(name)
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(4096)
        assert chunk, "the token closed before its info line"
        data += chunk
    s.close()
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def proc_net_unix_names() -> list[str]:
    with open("/proc/net/unix") as f:
        return [line.split()[7] for line in f.read().splitlines()[1:] if len(line.split()) >= 8]


def test_it_warns_once_and_says_what_it_cannot_see(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCKCHECK_FALLBACK", "1")
    monkeypatch.setattr("sockcheck._api._warned", False)
    with pytest.warns(sockcheck.SockcheckFallbackWarning, match="no holder pids"):
        doc = sockcheck.check("127.87.20.9", ports=46702)
    assert doc["source"] == "fallback" and doc["free"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sockcheck.check("127.87.20.9", ports=46702)


def test_an_address_lease_is_the_binarys_token(fallback: None) -> None:
    with sockcheck.acquire("127.87.21.1", ports=46702) as lease:
        assert lease.source == "fallback" and lease.address == "127.87.21.1"
        name = b"\0" + b"sockcheck/v1/lease/127.87.21.1".ljust(107, b"\0")
        assert len(name) == 108
        shown = "@sockcheck/v1/lease/127.87.21.1".ljust(108, "@")
        assert shown in proc_net_unix_names()
        info = token_line(name)
        assert info["sockcheck_lease"] == 1 and info["kind"] == "address" and info["backend"] == "fallback"
        assert info["address"] == "127.87.21.1" and info["ports"] == [46702]
        assert info["owner"] == {"pid": os.getpid(), "start_ticks": None}
        assert info["holders"] == [] and info["uid"] == os.getuid() and isinstance(info["acquired"], int)
        if sockcheck.find_binary():
            status, doc, _ = run_bin("acquire", "--json", "--ports", "46702", "127.87.21.1")
            assert status == 1
            assert doc["skipped"][0]["reason"] == "leased" and doc["skipped"][0]["pids"] == [os.getpid()]
            _, doc, _ = run_bin("leases", "--json", "127.87.21.0/24")
            assert [(r["address"], r["backend"], r["holder"]["pid"]) for r in doc["leases"]] == \
                [("127.87.21.1", "fallback", os.getpid())]
    assert shown not in proc_net_unix_names()


def test_a_binary_lease_is_honoured_and_named(fallback: None, monkeypatch: pytest.MonkeyPatch) -> None:
    binary()
    monkeypatch.delenv("SOCKCHECK_FALLBACK")
    held = sockcheck.acquire("127.87.22.1", ports=46702)
    try:
        assert held.source == "sockcheck"
        monkeypatch.setenv("SOCKCHECK_FALLBACK", "1")
        with pytest.raises(sockcheck.SockcheckError) as info:
            sockcheck.acquire("127.87.22.1", ports=46702)
        e = info.value
        assert e.code == "SOCKCHECK_NO_FREE_ADDRESS" and e.source == "fallback"
        c = e.candidates[0]
        assert c["reason"] == "leased" and os.getpid() in c["pids"]
        assert "sockcheck binary" in c["message"]
        with sockcheck.acquire("127.87.22.1-127.87.22.2", ports=46702) as other:
            assert other.address == "127.87.22.2"
    finally:
        monkeypatch.delenv("SOCKCHECK_FALLBACK")
        held.release()


def test_check_and_busy_addresses(fallback: None) -> None:
    s = socket.socket()
    s.bind(("127.87.23.1", 46703))
    s.listen()
    try:
        doc = sockcheck.check(["127.87.23.1", "127.87.23.2"], ports=46703)
        assert doc["source"] == "fallback" and doc["free"] is False
        assert [a["verdict"] for a in doc["addresses"]] == ["busy", "free"]
        with sockcheck.acquire("127.87.23.1-127.87.23.2", ports=46703) as lease:
            assert lease.address == "127.87.23.2"
            with pytest.raises(sockcheck.SockcheckError) as info:
                sockcheck.acquire("127.87.23.1-127.87.23.2", ports=46703)
        reasons = [(c["address"], c["reason"]) for c in info.value.candidates]
        assert reasons == [("127.87.23.1", "busy"), ("127.87.23.2", "leased")]
    finally:
        s.close()


def test_a_fallback_lease_ends_with_its_process(procs: Procs) -> None:
    child = procs.python(
        "import sys, sockcheck\n"
        "lease = sockcheck.acquire('127.87.24.1', ports=46702)\n"
        "print(lease.address, lease.source, flush=True)\n"
        "sys.stdin.readline()\n",
        env={"SOCKCHECK_FALLBACK": "1", "PYTHONWARNINGS": "ignore"})
    assert child.stdout is not None
    assert child.stdout.readline().split() == ["127.87.24.1", "fallback"]
    with pytest.raises(sockcheck.SockcheckError):
        sockcheck.acquire("127.87.24.1", ports=46702)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with sockcheck.acquire("127.87.24.1", ports=46702) as lease:
        assert lease.address == "127.87.24.1"


def test_a_port_lease_is_the_binarys_port_token(fallback: None) -> None:
    with sockcheck.acquire_port("46704-46705", host="127.87.25.1", count=2) as lease:
        assert lease.ports == [46704, 46705] and lease.port == 46704 and lease.source == "fallback"
        info = token_line(b"\0" + b"sockcheck/v1/port/46704".ljust(107, b"\0"))
        assert info["kind"] == "port" and info["ports"] == [46704] and info["owner"]["pid"] == os.getpid()
        with pytest.raises(sockcheck.SockcheckError) as err:
            sockcheck.acquire_port("46704-46705", host="127.87.25.1")
        assert err.value.code == "SOCKCHECK_NO_FREE_PORT"
        assert [c["port"] for c in err.value.candidates] == [46704, 46705]
        # Per port, for every host.
        with pytest.raises(sockcheck.SockcheckError):
            sockcheck.acquire_port(46704, host="127.87.25.2")
    with sockcheck.acquire_port(46704, host="127.87.25.2") as again:
        assert again.port == 46704


def test_a_busy_port_is_skipped(fallback: None) -> None:
    s = socket.socket()
    s.bind(("127.87.26.1", 46706))
    s.listen()
    try:
        with sockcheck.acquire_port("46706-46707", host="127.87.26.1") as lease:
            assert lease.ports == [46707]
    finally:
        s.close()


def test_fallback_and_binary_port_leases_never_overlap(fallback: None, monkeypatch: pytest.MonkeyPatch) -> None:
    require_command("acquire-port")
    with sockcheck.acquire_port(46708, host="127.87.27.1"):
        status, doc, _ = run_bin("acquire-port", "--json", "--host", "127.87.27.1", "46708")
        assert status == 1, doc
        assert doc["skipped"][0]["port"] == 46708 and doc["skipped"][0]["reason"] == "leased"
        assert os.getpid() in doc["skipped"][0]["pids"]
    monkeypatch.delenv("SOCKCHECK_FALLBACK")
    with sockcheck.acquire_port(46708, host="127.87.27.1") as binary_lease:
        assert binary_lease.source == "sockcheck"
        monkeypatch.setenv("SOCKCHECK_FALLBACK", "1")
        with pytest.raises(sockcheck.SockcheckError) as err:
            sockcheck.acquire_port(46708, host="127.87.27.1")
        assert "sockcheck binary" in err.value.candidates[0]["message"]
        monkeypatch.delenv("SOCKCHECK_FALLBACK")


def test_no_binary_and_fallback_forbidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sockcheck._api.find_binary", lambda: None)
    monkeypatch.setenv("SOCKCHECK_FALLBACK", "0")
    with pytest.raises(sockcheck.SockcheckError) as err:
        sockcheck.check("127.87.28.1", ports=46702)
    assert err.value.code == "SOCKCHECK_NOT_RUN"
    monkeypatch.delenv("SOCKCHECK_FALLBACK")
    monkeypatch.setattr("sockcheck._api._warned", False)
    with pytest.warns(sockcheck.SockcheckFallbackWarning, match="no sockcheck binary"):
        assert sockcheck.check("127.87.28.1", ports=46702)["source"] == "fallback"
