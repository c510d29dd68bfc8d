#!/usr/bin/env python3
"""Load generator for scripts/bench.sh: many processes holding many fds.

  bench-load.py hold --procs N --fds M --listeners L --established E \
                     --pidfile FILE [--net 98]
      Forks N holder processes, each holding about M open fds: a mix of
      regular files (/dev/null, a temp file), pipes, UNIX socketpairs and
      loopback TCP sockets. The first L holders each own one TCP listener on
      127.<net>.<i/250>.<i%250+1>:20000 and E established connections in
      total are spread over them (both ends held by the listener's process;
      the clients are bound to 127.<net-2>.x.y, ports 21000-25999).
      Writes every pid (its own first) to FILE, prints "ready pids=N fds=F"
      on stdout, then waits. It puts itself in a new process group, so the
      whole load can be killed with `kill -- -PID`; the holders also die with
      it (PR_SET_PDEATHSIG and an EOF on a pipe), so none can outlive it.

  bench-load.py timewait --count T --round R [--net 98]
      Leaves T TIME_WAIT sockets on 127.<net-1>.R.x and exits. TIME_WAIT
      lasts 60 s, so bench.sh calls this before each measurement.

Only 127.0.0.0/8 addresses are ever used, and every loop is bounded.
"""

import argparse
import ctypes
import os
import resource
import signal
import socket
import sys
import tempfile

LISTEN_PORT = 20000
CLIENT_PORT_BASE = 21000  # explicit client ports, below the ephemeral range
CLIENT_PORTS = 5000


def loopback(net: int, index: int) -> str:
    """A distinct 127.<net>.x.y address for index (0-based), never .0/.255."""
    if not 0 <= index < 250 * 250:
        raise SystemExit(f"bench-load: index {index} out of range")
    return f"127.{net}.{index // 250}.{index % 250 + 1}"


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            hard = need  # root may raise the hard limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def client_socket(net: int, index: int) -> socket.socket:
    """A TCP socket bound to an explicit, unique loopback source."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((loopback(net, index // CLIENT_PORTS), CLIENT_PORT_BASE + index % CLIENT_PORTS))
    return s


def fill(child: int, args, regular: str, conns: int, first_conn: int) -> list:
    """Opens this holder's fds; returns the objects that keep them open."""
    keep = []
    budget = args.fds - 4  # stdin/out/err and the hold pipe
    if child < args.listeners:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((loopback(args.net, child), LISTEN_PORT))
        server.listen(max(128, conns))
        keep.append(server)
        budget -= 1
        for k in range(conns):
            client = client_socket(args.net - 2, first_conn + k)
            client.connect(server.getsockname())
            accepted, _ = server.accept()
            keep += [client, accepted]
            budget -= 2
    # The rest: 40% /dev/null and a regular file, 30% pipes, 30% socketpairs.
    kind = 0
    while budget > 0:
        if kind % 10 < 4 or budget == 1:
            keep.append(os.open(regular if kind % 2 else "/dev/null", os.O_RDONLY))
            budget -= 1
        elif kind % 10 < 7:
            keep += list(os.pipe())
            budget -= 2
        else:
            keep += list(socket.socketpair())
            budget -= 2
        kind += 1
    return keep


def hold(args) -> None:
    os.setpgrp()
    raise_nofile(args.fds + 64)
    if args.listeners > args.procs:
        args.listeners = args.procs
    if args.established and not args.listeners:
        raise SystemExit("bench-load: --established needs --listeners > 0")
    fd, regular = tempfile.mkstemp(prefix="sockcheck-bench-")
    os.write(fd, b"x" * 4096)
    os.close(fd)
    ready_r, ready_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pids = []
    first_conn = 0
    try:
        for child in range(args.procs):
            conns = 0
            if child < args.listeners:
                conns = args.established // args.listeners
                if child < args.established % args.listeners:
                    conns += 1
            pid = os.fork()
            if pid == 0:
                try:
                    die_with_parent()
                    os.close(ready_r)
                    os.close(hold_w)
                    if os.getppid() == 1:
                        os._exit(1)
                    keep = fill(child, args, regular, conns, first_conn)
                    os.write(ready_w, b"r")
                    os.close(ready_w)
                    os.read(hold_r, 1)  # EOF when the generator goes away
                    del keep
                    os._exit(0)
                except BaseException as e:  # noqa: BLE001
                    try:
                        os.write(2, f"bench-load holder {child}: {e}\n".encode())
                        os.write(ready_w, b"e")
                    finally:
                        os._exit(1)
            pids.append(pid)
            first_conn += conns
        os.close(ready_w)
        os.close(hold_r)
        got = b""
        while len(got) < args.procs:
            chunk = os.read(ready_r, args.procs)
            if not chunk:
                break
            got += chunk
        if got.count(b"r") != args.procs:
            raise SystemExit(f"bench-load: only {got.count(b'r')} of {args.procs} holders ready")
        with open(args.pidfile + ".tmp", "w") as f:
            f.write("\n".join(str(p) for p in [os.getpid()] + pids) + "\n")
        os.rename(args.pidfile + ".tmp", args.pidfile)
        total = sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids)
        print(f"ready pids={len(pids)} fds={total}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    finally:
        os.unlink(regular)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass


def timewait(args) -> None:
    if not 0 <= args.round < 250:
        raise SystemExit("bench-load: --round must be 0..249")
    raise_nofile(3 * 1024 + 64)
    net = args.net - 1
    servers = []
    done = 0
    batch = 1000
    while done < args.count:
        n = min(batch, args.count - done)
        # A listener on its own address per batch; the accepted side closes
        # first, so TIME_WAIT stays on the listener's address.
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((f"127.{net}.{args.round}.{done // batch + 1}", LISTEN_PORT))
        server.listen(n)
        servers.append(server)
        pairs = []
        for k in range(n):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.bind((f"127.{net}.{args.round}.{200 + (done + k) // CLIENT_PORTS}", 0))
            client.connect(server.getsockname())
            accepted, _ = server.accept()
            pairs.append((client, accepted))
        for _, accepted in pairs:
            accepted.close()
        for client, _ in pairs:
            client.close()
        server.close()
        done += n
    print(f"timewait count={done}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--procs", type=int, required=True)
    h.add_argument("--fds", type=int, required=True)
    h.add_argument("--listeners", type=int, default=0)
    h.add_argument("--established", type=int, default=0)
    h.add_argument("--pidfile", required=True)
    h.add_argument("--net", type=int, default=98)
    t = sub.add_parser("timewait")
    t.add_argument("--count", type=int, required=True)
    t.add_argument("--round", type=int, required=True)
    t.add_argument("--net", type=int, default=98)
    args = p.parse_args()
    if not 3 <= args.net <= 250:
        raise SystemExit("bench-load: --net must be 3..250")
    if args.cmd == "hold":
        if not (1 <= args.procs <= 5000 and 8 <= args.fds <= 100000):
            raise SystemExit("bench-load: --procs 1..5000, --fds 8..100000")
        hold(args)
    else:
        if not 0 <= args.count <= 100000:
            raise SystemExit("bench-load: --count 0..100000")
        timewait(args)


if __name__ == "__main__":
    main()
