"""The pytest plugin, in real pytest runs (subprocesses), plain and under xdist."""

from __future__ import annotations

import os
import re

import pytest

import sockcheck
from conftest import require_command

INNER = """
import os, socket
import pytest

LEAKED = []

def test_port(sockcheck_port):
    assert isinstance(sockcheck_port, int) and {lo} <= sockcheck_port <= {hi}
    s = socket.socket()
    s.bind(("{host}", sockcheck_port))
    s.listen()
    s.close()

def test_address(sockcheck_address):
    assert sockcheck_address.address.startswith("{prefix}")
    assert sockcheck_address.ports == [{aport}]

def test_leak(sockcheck_port):
    s = socket.socket()
    s.bind(("{host}", sockcheck_port))
    s.listen()
    LEAKED.append(s)
    with open(os.path.join({tmp!r}, "leak-%d" % sockcheck_port), "w") as f:
        f.write(str(os.getpid()))
"""


def options(n: int, host: str, lo: int, hi: int, prefix: str, aport: int) -> list[str]:
    return ["-p", "no:cacheprovider", "--sockcheck-host", host, "--sockcheck-port-range", f"{lo}-{hi}",
            "--sockcheck-pool", f"{prefix}1-{prefix}4", "--sockcheck-ports", str(aport), "-n", str(n)]


@pytest.mark.parametrize("backend,workers,n", [
    ("sockcheck", 0, 50), ("sockcheck", 2, 51), ("fallback", 0, 52), ("fallback", 2, 53),
])
def test_fixtures_and_the_leftover_report(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                          backend: str, workers: int, n: int) -> None:
    if backend == "sockcheck":
        require_command("acquire-port")
        monkeypatch.delenv("SOCKCHECK_FALLBACK", raising=False)
    else:
        monkeypatch.setenv("SOCKCHECK_FALLBACK", "1")
    host, prefix = f"127.87.{n}.10", f"127.87.{n}."
    lo = 46720 + (n - 50) * 5
    hi = lo + 4
    tmp = str(pytester.path)
    pytester.makepyfile(test_inner=INNER.format(lo=lo, hi=hi, host=host, prefix=prefix, aport=46709, tmp=tmp))
    result = pytester.runpytest_subprocess(*options(workers, host, lo, hi, prefix, 46709), "-W",
                                           "ignore::sockcheck.SockcheckFallbackWarning")
    result.assert_outcomes(passed=3)
    leaks = [f for f in os.listdir(tmp) if f.startswith("leak-")]
    assert len(leaks) == 1
    port = int(leaks[0].split("-")[1])
    with open(os.path.join(tmp, leaks[0])) as f:
        pid = int(f.read())
    out = result.stdout.str()
    assert "sockcheck: listeners left after teardown" in out
    lines = [line for line in out.splitlines() if line.startswith("leased port ")]
    assert len(lines) == 1, out
    assert f"leased port {host}:{port} has a listener left by test_inner.py::test_leak" in lines[0]
    if backend == "sockcheck":
        assert f"pid {pid}" in lines[0]
    if workers:
        assert pid != os.getpid()
    # Nothing stays leased once the run is over.
    with sockcheck.acquire(f"{prefix}1-{prefix}4", ports=46709) as a:
        assert a.address == f"{prefix}1"


CRASH = """
import os

def test_crash(sockcheck_address):
    with open(os.path.join({tmp!r}, "crashed"), "w") as f:
        f.write(sockcheck_address.address)
    os._exit(3)
"""


def test_a_crashed_xdist_worker_leaks_nothing(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCKCHECK_FALLBACK", raising=False)
    tmp = str(pytester.path)
    pytester.makepyfile(test_crash=CRASH.format(tmp=tmp))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "1", "--max-worker-restart", "0",
                                           "--sockcheck-pool", "127.87.60.1", "--sockcheck-ports", "46709")
    assert result.ret != 0
    with open(os.path.join(tmp, "crashed")) as f:
        assert f.read() == "127.87.60.1"
    assert re.search(r"crashed|worker .* crashed|failed", result.stdout.str())
    with sockcheck.acquire("127.87.60.1", ports=46709, wait="10s") as lease:
        assert lease.address == "127.87.60.1"
