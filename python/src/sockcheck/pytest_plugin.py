"""The pytest plugin (entry point ``pytest11``, loaded wherever the package is
installed).

Fixtures:

- ``sockcheck_port``: an int, a TCP port leased for the test (free on
  ``--sockcheck-host``, leased to nobody else), released at teardown.
- ``sockcheck_address``: a :class:`sockcheck.Lease` (``.address``,
  ``.ports``) from ``--sockcheck-pool`` on ``--sockcheck-ports``.

Every lease belongs to the process that runs the test (under pytest-xdist,
the worker): a worker that crashes leaks nothing, as its leases end with it.

At teardown (after every fixture that used the lease) the plugin checks the
leased address or port once more; at the end of the session the terminal
summary has one line for each that a test left a listener on, naming its
pid. Under pytest-xdist each worker sends its lines to the controller.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, Optional

import pytest

from . import _api
from ._api import Lease, PortLease, acquire, acquire_port
from ._errors import SockcheckError

_LEFTOVERS = pytest.StashKey[list[dict[str, Any]]]()
_WORKER_KEY = "sockcheck_leftovers"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sockcheck", "sockcheck leases (fixtures sockcheck_port, sockcheck_address)")
    group.addoption("--sockcheck-pool", dest="sockcheck_pool", default=None, metavar="POOL",
                    help="pool sockcheck_address leases from: a range, a CIDR or a comma list "
                         "(default: $SOCKCHECK_POOL, else 127.0.0.2-127.0.0.33)")
    group.addoption("--sockcheck-ports", dest="sockcheck_ports", default=None, metavar="P,..",
                    help="ports that must be free on a sockcheck_address lease "
                         "(default: $SOCKCHECK_PORTS, else 9925,9926)")
    group.addoption("--sockcheck-port-range", dest="sockcheck_port_range", default=None, metavar="RANGE",
                    help="where sockcheck_port comes from: P, P-Q or a comma list "
                         "(default: 15000-32767 less the kernel's ephemeral and reserved ports)")
    group.addoption("--sockcheck-host", dest="sockcheck_host", default="127.0.0.1", metavar="ADDR",
                    help="the host a sockcheck_port must be free on (default: 127.0.0.1)")
    group.addoption("--sockcheck-wait", dest="sockcheck_wait", default="60s", metavar="DURATION",
                    help="how long a fixture waits for a free address or port (default: 60s)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_LEFTOVERS] = []


def _pids(doc: dict[str, Any]) -> list[int]:
    out: list[int] = []
    for a in doc.get("addresses") or []:
        for p in a.get("ports") or []:
            for listener in p.get("listeners") or []:
                for owner in listener.get("owners") or []:
                    pid = owner.get("pid") if isinstance(owner, dict) else None
                    if isinstance(pid, int) and pid not in out:
                        out.append(pid)
    return out


def _listening(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The reasons that say a listener holds the address (not TIME_WAIT and
    the like, which a new server binds beside)."""
    out: list[dict[str, Any]] = []
    for a in doc.get("addresses") or []:
        for reason in a.get("reasons") or []:
            if reason.get("code") in ("listener", "mapped_listener"):
                out.append(reason)
    return out


def _left_listener(config: pytest.Config, nodeid: str, kind: str, host: str, ports: list[int]) -> None:
    try:
        doc = _api.check(host, ports)
    except SockcheckError as e:
        config.stash[_LEFTOVERS].append({"nodeid": nodeid, "kind": kind, "where": host, "ports": ports,
                                         "pids": [], "message": f"could not check: {e}"})
        return
    reasons = _listening(doc)
    if not reasons:
        return
    pids = _pids(doc)
    config.stash[_LEFTOVERS].append({
        "nodeid": nodeid, "kind": kind, "where": host, "ports": sorted({int(r.get("port") or 0) for r in reasons}),
        "pids": pids, "message": "; ".join(str(r.get("message")) for r in reasons),
    })


def _wait(config: pytest.Config) -> Optional[str]:
    value = config.getoption("sockcheck_wait")
    return str(value) if value else None


@pytest.fixture
def sockcheck_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A TCP port leased to this test (and this process) until its teardown."""
    config = request.config
    lease: PortLease = acquire_port(config.getoption("sockcheck_port_range"),
                                    host=config.getoption("sockcheck_host"), wait=_wait(config))
    try:
        yield lease.port
    finally:
        try:
            _left_listener(config, request.node.nodeid, "port", lease.host, lease.ports)
        finally:
            lease.release()


@pytest.fixture
def sockcheck_address(request: pytest.FixtureRequest) -> Iterator[Lease]:
    """A loopback address leased to this test (and this process) until its teardown."""
    config = request.config
    lease = acquire(config.getoption("sockcheck_pool"), config.getoption("sockcheck_ports"), _wait(config))
    try:
        yield lease
    finally:
        try:
            _left_listener(config, request.node.nodeid, "address", lease.address, lease.ports)
        finally:
            lease.release()


# ------------------------------------------------------------ xdist and the summary


def pytest_sessionfinish(session: pytest.Session) -> None:
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports
        workeroutput[_WORKER_KEY] = json.dumps(session.config.stash[_LEFTOVERS])


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist: a worker finished (or crashed); take its lines."""
    output = getattr(node, "workeroutput", None) or {}
    text = output.get(_WORKER_KEY)
    if not text:
        return
    try:
        rows = json.loads(text)
    except ValueError:
        return
    node.config.stash[_LEFTOVERS].extend(r for r in rows if isinstance(r, dict))


def _line(row: dict[str, Any]) -> str:
    where = row["where"]
    ports = ",".join(map(str, row.get("ports") or []))
    at = f"{where}:{ports}" if ports else where
    what = "leased port" if row["kind"] == "port" else "leased address"
    pids = row.get("pids") or []
    who = f"pid {','.join(map(str, pids))}" if pids else "pid unknown"
    return f"{what} {at} has a listener left by {row['nodeid']}: {who} ({row.get('message')})"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_LEFTOVERS, [])
    if not rows or getattr(config, "workeroutput", None) is not None:
        return
    terminalreporter.section("sockcheck: listeners left after teardown", yellow=True)
    for row in rows:
        terminalreporter.line(_line(row))
