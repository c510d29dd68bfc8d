"""The fallback where no sockcheck binary runs (another OS, no binary found,
or ``SOCKCHECK_FALLBACK=1``): a plain-bind canary plus a connect probe, and
leases held by this Python process itself.

On Linux a lease is the binary's own token (docs/leases.md): an AF_UNIX
stream socket bound to the abstract name ``\\0sockcheck/v1/lease/ADDRESS``
(``\\0sockcheck/v1/port/PORT`` for a port), padded with NULs to the whole of
``sun_path``, listening with a backlog of 128. ``bind`` on a taken name
fails with EADDRINUSE whoever holds it (the binary's lease agent, another
fallback, any user), so fallback and binary leases never overlap, and the
kernel frees the name when this process exits, however it exits. A daemon
thread answers each connection with the info line and keeps it open until
the lease ends (a waiting binary acquirer wakes on that EOF).

Elsewhere (no abstract names) a lease is a plain bind: a UDP socket on
ADDRESS:9924 (``SOCKCHECK_LEASE_PORT``) for an address, on HOST:PORT for a
port, which only other fallback processes honour.

What it cannot do: name the owners of listeners, read SO_REUSEPORT, or see
a listener that a canary bind does not collide with.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import selectors
import socket
import struct
import sys
import threading
import time
from typing import Any, Optional, Sequence

from ._errors import SockcheckError

ABSTRACT_TOKENS = sys.platform.startswith("linux")
SUN_PATH_BYTES = 108
DEFAULT_LEASE_PORT = 9924
#: How long a taken token's holder has to write its info line.
HOLDER_ANSWER_SECONDS = 0.2
#: Accepted connections a token keeps open at once (a waiter each).
TOKEN_MAX_CONNECTIONS = 256
PROBE_SECONDS = 0.5
DEFAULT_PORT_RANGE = (15000, 32767)

_SEVERITY = {"free": 0, "unavailable": 1, "conflict": 2, "busy": 3, "foreign": 4}


def token_name(kind: str, key: str) -> bytes:
    """The abstract name of a lease token, padded to the whole of sun_path."""
    word = "lease" if kind == "address" else "port"
    return b"\0" + f"sockcheck/v1/{word}/{key}".encode().ljust(SUN_PATH_BYTES - 1, b"\0")


def token_shown(kind: str, key: str) -> str:
    return f"@sockcheck/v1/{'lease' if kind == 'address' else 'port'}/{key}"


def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e))


def host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


# ------------------------------------------------------------------ tokens


class Token:
    """A held lease token. ``close()`` ends the lease (idempotent)."""

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class AbstractToken(Token):
    """The abstract unix token, listening; a daemon thread serves it."""

    def __init__(self, sock: socket.socket, line: bytes) -> None:
        self._sock = sock
        self._line = line
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="sockcheck-lease-token", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        conns: set[socket.socket] = set()
        try:
            sel.register(self._sock, selectors.EVENT_READ, "listen")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            while True:
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    if key.data == "listen":
                        try:
                            conn, _addr = self._sock.accept()
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            time.sleep(0.01)  # EMFILE and the like: try again later
                            continue
                        if len(conns) >= TOKEN_MAX_CONNECTIONS:
                            conn.close()
                            continue
                        conn.setblocking(False)
                        try:
                            conn.send(self._line)
                        except OSError:
                            conn.close()
                            continue
                        conns.add(conn)
                        sel.register(conn, selectors.EVENT_READ, "conn")
                    else:
                        # What a peer writes is never a command (the fallback
                        # has no release over the token): read only to notice
                        # a hang-up and close its end.
                        peer = key.fileobj
                        assert isinstance(peer, socket.socket)
                        try:
                            data = peer.recv(4096)
                        except (BlockingIOError, InterruptedError):
                            continue
                        except OSError:
                            data = b""
                        if not data:
                            sel.unregister(peer)
                            conns.discard(peer)
                            peer.close()
        finally:
            for conn in conns:
                conn.close()
            sel.close()
            self._sock.close()
            self._wake_r.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._wake_w.send(b"x")
            finally:
                self._wake_w.close()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)


class BoundToken(Token):
    """A plain bind (no abstract names): a UDP socket, never connected."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def close(self) -> None:
        self._sock.close()


def bind_abstract(name: bytes, info: dict[str, Any]) -> AbstractToken:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(name)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return AbstractToken(sock, (json.dumps(info, separators=(",", ":")) + "\n").encode())


def bind_udp(address: str, port: int) -> BoundToken:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return BoundToken(sock)


_BACKENDS = {"binary": "sockcheck binary", "fallback": "fallback"}


def token_holder(name: bytes) -> tuple[list[int], str]:
    """Who holds a taken token: (pids, one phrase). The pid and uid of the
    process that listens come from the kernel (SO_PEERCRED); the owner from
    the info line it writes."""
    not_answering = "leased (its token is bound but not yet answering)"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(HOLDER_ANSWER_SECONDS)
    try:
        try:
            sock.connect(name)
        except OSError:
            return [], not_answering
        peer: Optional[tuple[int, int]] = None
        so_peercred = getattr(socket, "SO_PEERCRED", None)
        if so_peercred is not None:
            try:
                pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, so_peercred, 12))
                peer = (pid, uid)
            except OSError:
                peer = None
        data = b""
        deadline = time.monotonic() + HOLDER_ANSWER_SECONDS
        while b"\n" not in data and len(data) < 4096 and time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    line = data.split(b"\n", 1)[0]
    try:
        info = json.loads(line)
    except ValueError:
        info = None
    if not isinstance(info, dict) or info.get("sockcheck_lease") != 1:
        if peer:
            return [peer[0]], f"leased (its token is held by pid {peer[0]}, uid {peer[1]}, which does not answer with a lease line)"
        return [], not_answering
    owner = info.get("owner")
    pid = owner.get("pid") if isinstance(owner, dict) else None
    pids: list[int] = [pid] if isinstance(pid, int) else []
    holders = [h.get("pid") if isinstance(h, dict) else h for h in info.get("holders") or []]
    pids += [h for h in holders if isinstance(h, int) and h not in pids]
    who = []
    uid = peer[1] if peer else info.get("uid")
    if isinstance(uid, int):
        who.append(f"uid {uid}")
    backend = info.get("backend")
    if isinstance(backend, str):
        who.append(_BACKENDS.get(backend, f"backend {backend[:40]}"))
    if peer and peer[0] not in pids:
        who.append(f"held by pid {peer[0]}")
        pids.append(peer[0])
    lead = f"leased to pid {pid}" if isinstance(pid, int) else "leased"
    return pids, lead + (f" ({', '.join(who)})" if who else "")


# ------------------------------------------------------------------ probes


def canary(address: str, port: int) -> str:
    """Bind ADDRESS:PORT as a plain server does (SO_REUSEADDR on, SO_REUSEPORT
    off), closed at once, never listened on: ``ok`` or the errno's name."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        return "ok"
    except OSError as e:
        return _errname(e)
    finally:
        sock.close()


def connect_probe(address: str, port: int, timeout: float = PROBE_SECONDS) -> str:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((address, port))
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return "refused" if e.errno == errno.ECONNREFUSED else _errname(e)
    finally:
        sock.close()


def _sentinel(address: str) -> Optional[str]:
    """On Linux every 127/8 address is local, so a wildcard listener shows on
    a sentinel address of the same port too: that tells foreign from busy."""
    if not sys.platform.startswith("linux") or not address.startswith("127.") or ":" in address:
        return None
    return "127.255.255.253" if address == "127.255.255.254" else "127.255.255.254"


def inspect_port(address: str, port: int) -> tuple[dict[str, Any], str, Optional[dict[str, Any]]]:
    entry: dict[str, Any] = {"port": port, "canary": {"result": canary(address, port)}, "listeners": []}
    c = entry["canary"]["result"]
    verdict = "free"
    reason: Optional[dict[str, Any]] = None
    where = host_port(address, port)
    if c == "ok":
        if not sys.platform.startswith("linux"):
            entry["connect"] = {"result": connect_probe(address, port)}
            if entry["connect"]["result"] == "connected":
                verdict = "foreign"
                reason = {"code": "wildcard", "message": f"{where} accepts connections although a plain bind succeeds: a wildcard listener covers it"}
    elif c == "EADDRINUSE":
        sentinel = _sentinel(address)
        if sentinel and canary(sentinel, port) == "EADDRINUSE" and connect_probe(sentinel, port) in ("connected", "timeout"):
            verdict = "foreign"
            reason = {"code": "wildcard", "message": f"a wildcard listener on port {port} covers {address} ({sentinel}:{port} is in use too; owner unknown: fallback)"}
        else:
            probe = connect_probe(address, port)
            entry["connect"] = {"result": probe}
            if probe in ("connected", "timeout"):
                verdict = "busy"
                reason = {"code": "listener", "message": f"{where} is in use by a listener (owner unknown: fallback)"}
            else:
                verdict = "conflict"
                reason = {"code": "canary_failed", "message": f"the canary bind on {where} fails with EADDRINUSE, but nothing listens there (a bound socket that is not listening?)"}
    elif c == "EADDRNOTAVAIL":
        verdict = "unavailable"
        reason = {"code": "not_local", "message": f"{address} is not a local address (EADDRNOTAVAIL)"}
    else:
        verdict = "conflict"
        reason = {"code": "canary_failed", "message": f"the canary bind on {where} fails with {c}"}
    if reason is not None:
        reason = {**reason, "port": port, "verdict": verdict}
    return entry, verdict, reason


def inspect_address(address: str, ports: Sequence[int]) -> dict[str, Any]:
    verdict = "free"
    reasons: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for port in ports:
        entry, v, reason = inspect_port(address, port)
        entries.append(entry)
        if _SEVERITY[v] > _SEVERITY[verdict]:
            verdict = v
        if reason:
            reasons.append(reason)
    return {"address": address, "verdict": verdict, "reasons": reasons, "notes": [], "ports": entries}


SOURCES = {
    "canary": {"status": "used", "detail": "fallback: a plain bind (SO_REUSEADDR, no SO_REUSEPORT) on every port, closed at once"},
    "connect_probe": {"status": "used", "detail": "fallback: a TCP connect where the canary alone cannot tell"},
    "sock_diag": {"status": "unavailable", "detail": "fallback: no sockcheck binary (no listeners, no owners, no SO_REUSEPORT evidence)"},
    "proc": {"status": "unavailable", "detail": "fallback: no sockcheck binary"},
}


def check(addresses: Sequence[str], ports: Sequence[int]) -> dict[str, Any]:
    docs = [inspect_address(a, ports) for a in addresses]
    return {
        "schema": 1,
        "sockcheck": None,
        "source": "fallback",
        "free": all(d["verdict"] == "free" for d in docs),
        "ports": list(ports),
        "addresses": docs,
        "sources": SOURCES,
    }


# ------------------------------------------------------------------ leases

#: Leases held by this process: (kind, key) -> token.
_held: dict[tuple[str, str], Token] = {}
_held_lock = threading.Lock()


def _info(kind: str, address: str, ports: Sequence[int]) -> dict[str, Any]:
    return {
        "sockcheck_lease": 1,
        "address": address,
        "kind": kind,
        "backend": "fallback",
        "owner": {"pid": os.getpid(), "start_ticks": None},
        "holders": [],
        "uid": os.getuid() if hasattr(os, "getuid") else None,
        "acquired": int(time.time()),
        "ports": list(ports),
    }


def lease_port_of() -> int:
    value = os.environ.get("SOCKCHECK_LEASE_PORT", "").strip() or str(DEFAULT_LEASE_PORT)
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SockcheckError(f"sockcheck (fallback): SOCKCHECK_LEASE_PORT {value!r} is not a UDP port (1-65535)",
                             code="SOCKCHECK_USAGE")
    return int(value)


def _take(kind: str, key: str, address: str, ports: Sequence[int], udp: tuple[str, int]) -> tuple[Optional[Token], Optional[dict[str, Any]]]:
    """Bind the token of (kind, key). Returns (token, None) or (None, skipped-entry)."""
    with _held_lock:
        if (kind, key) in _held:
            return None, {"reason": "leased", "pids": [os.getpid()], "message": f"leased to this process (pid {os.getpid()})"}
    try:
        if ABSTRACT_TOKENS:
            token: Token = bind_abstract(token_name(kind, key), _info(kind, address, ports))
        else:
            token = bind_udp(*udp)
    except OSError as e:
        if e.errno == errno.EADDRINUSE and ABSTRACT_TOKENS:
            pids, message = token_holder(token_name(kind, key))
            return None, {"reason": "leased", "pids": pids, "message": message}
        if e.errno == errno.EADDRINUSE:
            return None, {"reason": "leased", "pids": [], "message": f"leased to another process (the lease socket {host_port(*udp)}/udp is bound; pid unknown: fallback)"}
        if e.errno == errno.EADDRNOTAVAIL:
            return None, {"reason": "unavailable", "pids": [], "message": f"{udp[0]} is not a local address (EADDRNOTAVAIL)"}
        return None, {"reason": "conflict", "pids": [], "message": f"the lease token cannot be bound: {_errname(e)}"}
    with _held_lock:
        _held[(kind, key)] = token
    return token, None


def release(kind: str, key: str) -> bool:
    """End a lease this process holds; False if it held none."""
    with _held_lock:
        token = _held.pop((kind, key), None)
    if token is None:
        return False
    token.close()
    return True


def acquire(pool: Sequence[str], ports: Sequence[int], wait: float) -> tuple[Optional[str], list[dict[str, Any]], bool]:
    """Lease the first free address of the pool. Returns (address, [], False),
    or (None, skipped, hopeless)."""
    deadline = time.monotonic() + wait
    lease_port = 0 if ABSTRACT_TOKENS else lease_port_of()
    while True:
        skipped: list[dict[str, Any]] = []
        for address in pool:
            token, skip = _take("address", address, address, ports, (address, lease_port))
            if token is None:
                assert skip is not None
                skipped.append({"address": address, "verdict": skip["reason"] if skip["reason"] != "leased" else None, **skip})
                continue
            # Holding the token first makes the check and the lease one step.
            doc = inspect_address(address, ports)
            if doc["verdict"] == "free":
                return address, [], False
            release("address", address)
            skipped.append({"address": address, "reason": doc["verdict"], "verdict": doc["verdict"], "pids": [],
                            "message": "; ".join(r["message"] for r in doc["reasons"])})
        hopeless = bool(skipped) and all(s["reason"] in ("foreign", "unavailable") for s in skipped)
        if hopeless or time.monotonic() >= deadline:
            return None, skipped, hopeless
        time.sleep(min(0.1, max(0.001, deadline - time.monotonic())))


def local_port_exclusions() -> set[int]:
    """The kernel's ephemeral range and reserved ports (Linux), which the
    default port range leaves out, as the binary does."""
    out: set[int] = set()
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split()[:2])
        out.update(range(lo, hi + 1))
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/sys/net/ipv4/ip_local_reserved_ports") as f:
            text = f.read().strip()
        for part in filter(None, (p.strip() for p in text.split(","))):
            a, _, b = part.partition("-")
            out.update(range(int(a), int(b or a) + 1))
    except (OSError, ValueError):
        pass
    return out


def default_port_range() -> list[int]:
    skip = local_port_exclusions()
    return [p for p in range(DEFAULT_PORT_RANGE[0], DEFAULT_PORT_RANGE[1] + 1) if p not in skip]


def acquire_ports(candidates: Sequence[int], host: str, count: int, wait: float) -> tuple[Optional[list[int]], list[dict[str, Any]]]:
    """Lease ``count`` free ports of ``candidates`` (per port, all hosts)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SockcheckError(f"sockcheck acquire-port (fallback): host {host!r} is not an IP address",
                             code="SOCKCHECK_USAGE") from None
    deadline = time.monotonic() + wait
    while True:
        got: list[int] = []
        skipped: list[dict[str, Any]] = []
        for port in candidates:
            token, skip = _take("port", str(port), host, [port], (host, port))
            if token is None:
                assert skip is not None
                skipped.append({"port": port, **skip})
                if skip["reason"] == "unavailable":
                    break  # the host is not local: no port will do
                continue
            c = canary(host, port)
            if c == "ok":
                got.append(port)
                if len(got) == count:
                    return got, []
                continue
            release("port", str(port))
            reason = {"EADDRINUSE": "busy", "EADDRNOTAVAIL": "unavailable"}.get(c, "conflict")
            skipped.append({"port": port, "reason": reason, "pids": [],
                            "message": f"the canary bind on {host_port(host, port)} fails with {c} (owner unknown: fallback)"})
            if reason == "unavailable":
                break
        for port in got:
            release("port", str(port))
        if time.monotonic() >= deadline or any(s["reason"] == "unavailable" for s in skipped):
            return None, skipped
        time.sleep(min(0.1, max(0.001, deadline - time.monotonic())))
