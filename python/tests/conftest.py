"""Shared helpers for the package's tests.

Real processes and sockets, as the crate's tests: each test owns its
loopback addresses (127.87.0.0/16, one /24 per test) and ports (46700-46749;
46750-46799 belong to tests_xdist/), and every process a test starts is
killed by pid at teardown. A test that needs something missing skips and
says why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Iterator, Optional

import pytest

import sockcheck
from sockcheck._binary import has_command

pytest_plugins = ["pytester"]


def pytest_report_header(config: pytest.Config) -> list[str]:
    found = sockcheck.find_binary()
    return [f"sockcheck module: {sockcheck.__file__}",
            f"sockcheck binary: {found[1] + ' (' + found[0] + ')' if found else 'none (fallback)'}"]


def pytest_sessionstart(session: pytest.Session) -> None:
    # CI runs the tests against the installed wheel: make sure that is what
    # is imported and run, not the source tree or another binary.
    if os.environ.get("SOCKCHECK_TEST_EXPECT_INSTALLED") == "1":
        where = os.path.dirname(sockcheck.__file__)
        assert "site-packages" in where, f"sockcheck imported from {where}, not the installed wheel"
        found = sockcheck.find_binary()
        assert found is not None and found[0] == "wheel", f"the binary is not the wheel's: {found}"


def binary() -> str:
    found = sockcheck.find_binary()
    if found is None:
        pytest.skip("skipped: no sockcheck binary (install the wheel, or set SOCKCHECK_BIN)")
    return found[1]


def require_command(sub: str) -> str:
    """The binary, if it has the command `sub`; else skip, saying why."""
    bin_path = binary()
    if not has_command(bin_path, sub):
        msg = f"skipped: this sockcheck binary ({bin_path}) has no `{sub}` command"
        if os.environ.get("SOCKCHECK_TEST_STRICT") == "1" and os.environ.get("SOCKCHECK_TEST_ALLOW_NO_PORTS") != "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return bin_path


def run_bin(*args: str) -> tuple[int, Any, str]:
    """Run the binary; (status, parsed stdout or the text, stderr)."""
    r = subprocess.run([binary(), *args], capture_output=True, text=True, timeout=60)
    try:
        out: Any = json.loads(r.stdout)
    except ValueError:
        out = r.stdout
    return r.returncode, out, r.stderr


class Procs:
    """Processes a test starts, killed by pid at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def python(self, code: str, env: Optional[dict[str, str]] = None) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                             text=True, env={**os.environ, **(env or {})})
        self.procs.append(p)
        return p

    def kill_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


@pytest.fixture
def procs() -> Iterator[Procs]:
    guard = Procs()
    try:
        yield guard
    finally:
        guard.kill_all()


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Force the fallback for this test (and let it warn again)."""
    monkeypatch.setenv("SOCKCHECK_FALLBACK", "1")
    monkeypatch.setattr("sockcheck._api._warned", True)
    yield
