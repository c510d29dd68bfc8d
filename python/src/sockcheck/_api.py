"""The API: leases of addresses and ports, and checks, through the binary or
the fallback."""

from __future__ import annotations

import os
import threading
import warnings
from types import TracebackType
from typing import Any, Optional, Sequence, Union

from . import _fallback
from ._binary import MARGIN_SECONDS, failure, find_binary, has_command, parse_json, run
from ._errors import SockcheckError, SockcheckFallbackWarning
from ._util import (
    DEFAULT_PORTS,
    Duration,
    Ports,
    canonical_address,
    duration_arg,
    duration_seconds,
    pool_list,
    port_list,
    ports_arg,
)

__all__ = ["Lease", "PortLease", "acquire", "acquire_port", "check", "backend"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_warned = False
_warn_lock = threading.Lock()


def backend() -> tuple[str, Optional[str], str]:
    """Which backend a call uses, without warning: ``("sockcheck", path,
    where)`` or ``("fallback", None, why)``."""
    forced = os.environ.get("SOCKCHECK_FALLBACK", "").strip().lower()
    if forced in _TRUE:
        return ("fallback", None, "forced by SOCKCHECK_FALLBACK=1")
    found = find_binary()
    if found:
        return ("sockcheck", found[1], found[0])
    import sys

    why = ("no sockcheck binary: none beside this Python's scripts (the wheel's), SOCKCHECK_BIN is not set "
           "and sockcheck is not on PATH") if sys.platform.startswith("linux") else \
        f"no sockcheck binary for {sys.platform} (sockcheck runs on Linux)"
    return ("fallback", None, why)


def _bin(sub: str) -> Optional[str]:
    """The binary to run, or None for the fallback (which is announced once)."""
    global _warned
    source, path, why = backend()
    if source == "sockcheck" and path is not None:
        if has_command(path, sub):
            return path
        # An older binary without this command: the fallback takes the same
        # tokens, so its leases and the binary's still never overlap.
        why = f"this sockcheck binary ({path}) has no `{sub}` command"
    if os.environ.get("SOCKCHECK_FALLBACK", "").strip().lower() in _FALSE:
        raise SockcheckError(f"sockcheck {sub}: {why}, and SOCKCHECK_FALLBACK=0 forbids the fallback",
                             code="SOCKCHECK_NOT_RUN")
    with _warn_lock:
        if not _warned:
            _warned = True
            leases = ("Leases share one lease space with the binary (abstract unix tokens "
                      "@sockcheck/v1/lease/ADDRESS and @sockcheck/v1/port/PORT, held by this process), so no two "
                      "acquirers, binary or fallback, any user, get the same address or port."
                      if _fallback.ABSTRACT_TOKENS else
                      "Leases are plain binds (UDP sockets held by this process) that only other fallback processes see.")
            warnings.warn(
                f"sockcheck: {why}; using the Python fallback (a plain-bind canary and a connect probe). {leases} "
                "What the fallback cannot see: the owners of listeners (no holder pids) and SO_REUSEPORT.",
                SockcheckFallbackWarning, stacklevel=3)
    return None


class _Releasable:
    source: str
    _bin: Optional[str]
    _released: bool
    _lock: threading.Lock

    def __init__(self, bin_path: Optional[str]) -> None:
        self._bin = bin_path
        self._released = False
        self._lock = threading.Lock()

    def _release(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def released(self) -> bool:
        """True once release() has succeeded."""
        return self._released

    def release(self) -> None:
        """Give the lease back. Safe to call more than once."""
        with self._lock:
            if self._released:
                return
            self._release()
            self._released = True

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()


class Lease(_Releasable):
    """A leased loopback address (``with acquire() as lease:`` releases it)."""

    address: str
    ports: list[int]
    owner: Optional[dict[str, Any]]
    state_dir: Optional[str]
    source: str

    def __init__(self, address: str, ports: Sequence[int], *, source: str, owner: Optional[dict[str, Any]] = None,
                 state_dir: Optional[str] = None, bin_path: Optional[str] = None) -> None:
        self.address = address
        self.ports = list(ports)
        self.owner = owner
        self.state_dir = state_dir
        self.source = source
        super().__init__(bin_path)

    def __enter__(self) -> Lease:
        return self

    def _release(self) -> None:
        if self._bin is None:
            _fallback.release("address", self.address)
            return
        args = ["release"]
        if self.state_dir:
            args += ["--state-dir", self.state_dir]
        r = run(self._bin, [*args, "--", self.address], "release", MARGIN_SECONDS)
        if r.status not in (0, 1):  # 1: not leased any more (reclaimed): nothing to give back
            raise failure("release", r)

    def __str__(self) -> str:
        return self.address

    def __repr__(self) -> str:
        return f"Lease(address={self.address!r}, ports={self.ports!r}, source={self.source!r})"


class PortLease(_Releasable):
    """Leased TCP ports (``with acquire_port() as lease:`` releases them).
    A port lease is per port, for every host."""

    host: str
    ports: list[int]
    owner: Optional[dict[str, Any]]
    state_dir: Optional[str]
    source: str

    def __init__(self, host: str, ports: Sequence[int], *, source: str, owner: Optional[dict[str, Any]] = None,
                 state_dir: Optional[str] = None, bin_path: Optional[str] = None) -> None:
        self.host = host
        self.ports = list(ports)
        self.owner = owner
        self.state_dir = state_dir
        self.source = source
        super().__init__(bin_path)

    @property
    def port(self) -> int:
        """The first leased port."""
        return self.ports[0]

    def __enter__(self) -> PortLease:
        return self

    def _release(self) -> None:
        if self._bin is None:
            for p in self.ports:
                _fallback.release("port", str(p))
            return
        args = ["release-port", "--host", self.host]
        if self.state_dir:
            args += ["--state-dir", self.state_dir]
        r = run(self._bin, [*args, "--", *map(str, self.ports)], "release-port", MARGIN_SECONDS)
        if r.status not in (0, 1):  # 1: some not leased any more: nothing to give back
            raise failure("release-port", r)

    def __int__(self) -> int:
        return self.port

    def __repr__(self) -> str:
        return f"PortLease(host={self.host!r}, ports={self.ports!r}, source={self.source!r})"


def _format_candidates(skipped: Sequence[dict[str, Any]], key: str) -> str:
    if not skipped:
        return ""
    rows = [(str(s.get(key)), str(s.get("reason")), s.get("pids") or [], str(s.get("message") or ""))
            for s in skipped]
    w = max(len(r[0]) for r in rows)
    out = []
    for what, reason, pids, message in rows[:32]:
        who = f"pid {','.join(map(str, pids))}" if pids else "no pid"
        out.append(f"\n  {what.ljust(w)}  {reason.ljust(11)}  {who}{': ' + message if message else ''}")
    if len(rows) > 32:
        out.append(f"\n  ... and {len(rows) - 32} more (see .candidates)")
    return "".join(out)


def _candidates(doc: Optional[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    skipped = doc.get("skipped") if doc else None
    out: list[dict[str, Any]] = []
    for s in skipped if isinstance(skipped, list) else []:
        if isinstance(s, dict):
            out.append({**s, key: s.get(key), "reason": s.get("reason"),
                        "pids": s.get("pids") if isinstance(s.get("pids"), list) else [],
                        "message": s.get("message") or ""})
    return out


def _timeout(wait: Optional[Duration]) -> float:
    return (duration_seconds(wait, "wait") if wait is not None else 0.0) + MARGIN_SECONDS


def acquire(pool: Optional[str] = None, ports: Optional[Ports] = None, wait: Optional[Duration] = None) -> Lease:
    """Lease the first free address of ``pool`` (default: ``$SOCKCHECK_POOL``,
    else the binary's default pool, 127.0.0.2-127.0.0.33) on ``ports``
    (default: ``$SOCKCHECK_PORTS``, else 9925,9926), waiting up to ``wait``
    (seconds, or a duration string such as ``"30s"``) for one.

    The lease belongs to this process: it ends on ``release()``, at the end
    of a ``with`` block, or when this process exits, however it exits.

    Raises SockcheckError: ``SOCKCHECK_NO_FREE_ADDRESS`` (``candidates``: per
    address, why it was skipped and who holds it), ``SOCKCHECK_USAGE``,
    ``SOCKCHECK_STATE``, ...
    """
    bin_path = _bin("acquire")
    if bin_path is None:
        return _acquire_fallback(pool, ports, wait)
    args = ["acquire", "--json", "--owner", str(os.getpid())]
    if ports is not None:
        args += ["--ports", ports_arg(ports)]
    if wait is not None:
        args += ["--wait", duration_arg(wait, "wait")]
    if pool is not None:
        args += ["--", str(pool)]
    r = run(bin_path, args, "acquire", _timeout(wait))
    if r.status == 0:
        doc = parse_json("acquire", r)
        if not isinstance(doc.get("address"), str) or not isinstance(doc.get("ports"), list):
            raise SockcheckError(f"sockcheck acquire: unexpected output: {r.stdout.strip()[:200]}",
                                 code="SOCKCHECK_BAD_OUTPUT", argv=r.argv)
        return Lease(doc["address"], doc["ports"], source="sockcheck", owner=doc.get("owner"),
                     state_dir=doc.get("state_dir"), bin_path=bin_path)
    if r.status == 1:
        doc = parse_json("acquire", r)
        cands = _candidates(doc, "address")
        error = doc.get("error") or "no free address"
        raise SockcheckError(f"sockcheck acquire: {error}{_format_candidates(cands, 'address')}",
                             code="SOCKCHECK_NO_FREE_ADDRESS", exit_status=1, stderr=r.stderr.strip(),
                             argv=r.argv, candidates=cands, report=doc, state_dir=doc.get("state_dir"),
                             source="sockcheck")
    raise failure("acquire", r)


def _env_ports(ports: Optional[Ports]) -> list[int]:
    if ports is not None:
        return port_list(ports)
    env = os.environ.get("SOCKCHECK_PORTS", "").strip()
    return port_list(env, "SOCKCHECK_PORTS") if env else list(DEFAULT_PORTS)


def _acquire_fallback(pool: Optional[str], ports: Optional[Ports], wait: Optional[Duration]) -> Lease:
    addresses = pool_list(pool)
    port_values = _env_ports(ports)
    seconds = duration_seconds(wait, "wait") if wait is not None else 0.0
    address, skipped, hopeless = _fallback.acquire(addresses, port_values, seconds)
    if address is None:
        n = len(addresses)
        error = f"no free address in the pool ({n} address{'' if n == 1 else 'es'})"
        if hopeless:
            error += ": every address is foreign or not local, waiting cannot help"
        raise SockcheckError(f"sockcheck acquire (fallback): {error}{_format_candidates(skipped, 'address')}",
                             code="SOCKCHECK_NO_FREE_ADDRESS", candidates=skipped, source="fallback")
    return Lease(address, port_values, source="fallback", owner={"pid": os.getpid(), "start_ticks": None})


RangeSpec = Union[str, int, Sequence[int]]


def acquire_port(range: Optional[RangeSpec] = None, host: str = "127.0.0.1", count: int = 1, *,
                 wait: Optional[Duration] = None) -> PortLease:
    """Lease ``count`` free TCP ports: free on ``host`` (a canary bind) and
    leased to nobody else, for every host. ``range``: ``"P"``, ``"P-Q"`` or a
    comma list of those (or an int, or a list of ports); default
    15000-32767 less the kernel's ephemeral range and reserved ports.

    The lease belongs to this process (``release()``, a ``with`` block, or
    this process's exit ends it). Raises SockcheckError
    ``SOCKCHECK_NO_FREE_PORT`` (``candidates``: per port, why) and the others.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise SockcheckError(f"sockcheck acquire-port: count {count!r} is not a positive integer",
                             code="SOCKCHECK_USAGE")
    range_arg: Optional[str] = None
    if range is not None:
        range_arg = range if isinstance(range, str) else ports_arg(range, "range")
    bin_path = _bin("acquire-port")
    if bin_path is None:
        return _acquire_port_fallback(range_arg, host, count, wait)
    args = ["acquire-port", "--json", "--owner", str(os.getpid()), "--host", str(host), "--count", str(count)]
    if wait is not None:
        args += ["--wait", duration_arg(wait, "wait")]
    if range_arg is not None:
        args += ["--", range_arg]
    r = run(bin_path, args, "acquire-port", _timeout(wait))
    if r.status == 0:
        doc = parse_json("acquire-port", r)
        got = doc.get("ports")
        if not isinstance(got, list) or not got or not all(isinstance(p, int) for p in got):
            raise SockcheckError(f"sockcheck acquire-port: unexpected output: {r.stdout.strip()[:200]}",
                                 code="SOCKCHECK_BAD_OUTPUT", argv=r.argv)
        return PortLease(str(doc.get("host") or host), got, source="sockcheck", owner=doc.get("owner"),
                         state_dir=doc.get("state_dir"), bin_path=bin_path)
    if r.status == 1:
        doc = parse_json("acquire-port", r)
        cands = _candidates(doc, "port")
        error = doc.get("error") or "not enough free ports"
        raise SockcheckError(f"sockcheck acquire-port: {error}{_format_candidates(cands, 'port')}",
                             code="SOCKCHECK_NO_FREE_PORT", exit_status=1, stderr=r.stderr.strip(),
                             argv=r.argv, candidates=cands, report=doc, state_dir=doc.get("state_dir"),
                             source="sockcheck")
    raise failure("acquire-port", r)


def _acquire_port_fallback(range_arg: Optional[str], host: str, count: int, wait: Optional[Duration]) -> PortLease:
    host = canonical_address(host, "host")
    candidates = port_list(range_arg, "range") if range_arg is not None else _fallback.default_port_range()
    seconds = duration_seconds(wait, "wait") if wait is not None else 0.0
    if count > len(candidates):
        raise SockcheckError(f"sockcheck acquire-port (fallback): {count} ports asked, the range has {len(candidates)}",
                             code="SOCKCHECK_USAGE")
    got, skipped = _fallback.acquire_ports(candidates, host, count, seconds)
    if got is None:
        n = len(candidates)
        raise SockcheckError(
            f"sockcheck acquire-port (fallback): not enough free ports ({count} asked, {n} in the range)"
            f"{_format_candidates(skipped, 'port')}",
            code="SOCKCHECK_NO_FREE_PORT", candidates=skipped, source="fallback")
    return PortLease(host, got, source="fallback", owner={"pid": os.getpid(), "start_ticks": None})


def check(addresses: Union[str, Sequence[str]], ports: Optional[Ports] = None) -> dict[str, Any]:
    """Inspect addresses: the parsed ``sockcheck check --json`` document, plus
    ``source`` (``"sockcheck"`` or ``"fallback"``) and ``free`` (every address
    free). An address that is not free is not an error: each has its verdict
    and reasons (and, from the binary, the listeners' owners)."""
    addrs = [addresses] if isinstance(addresses, str) else [str(a) for a in addresses]
    if not addrs:
        raise SockcheckError("sockcheck check: no address given", code="SOCKCHECK_USAGE")
    bin_path = _bin("check")
    if bin_path is None:
        return _fallback.check([canonical_address(a) for a in addrs], _env_ports(ports))
    args = ["check", "--json"]
    if ports is not None:
        args += ["--ports", ports_arg(ports)]
    r = run(bin_path, [*args, "--", *addrs], "check", MARGIN_SECONDS)
    if r.status not in (0, 1):
        raise failure("check", r)
    doc = parse_json("check", r)
    if not isinstance(doc.get("addresses"), list):
        raise SockcheckError(f"sockcheck check: unexpected output: {r.stdout.strip()[:200]}",
                             code="SOCKCHECK_BAD_OUTPUT", argv=r.argv)
    doc["source"] = "sockcheck"
    doc["free"] = r.status == 0
    return doc
