#!/usr/bin/env python3
"""The lease stage of scripts/bench.sh (issue 16 "One lease space", item 5).

Measures the lease space's budget lines with the real binary, from a Python
driver (time.perf_counter around each call), and prints each as PASS/MISS
with its figure, in bench.sh's style:

  loops    16 concurrent acquire/release loops (each its own long-lived
           process, --owner itself) against 16 concurrent `sockcheck check`
           loops: acquire p50 and p99 each <= 1.3x check's.
  many     acquire with 65,536 existing leases <= 2x an acquire with none.
           The 65,536 leases are tokens (abstract AF_UNIX names) bound by
           Python holder processes: they are leases for every acquirer,
           exactly as the agent's are, and take 65,536 binds instead of
           65,536 acquires (about 10 minutes). The agent's own scaling is
           measured separately with --agent-leases real binary leases
           (info line).
  pool16   a /16 pool whose first 60,000 addresses are leased (30,000
           tokens, even offsets) or busy (30,000 TCP listeners on the lease
           port, odd offsets): one acquire <= 5x a single-address acquire
           (of the pool's first free address, same kernel state).
  wait     a waiting acquire (--wait) gets a released address within 5 ms
           of `sockcheck release` returning (p95 over --wait-trials); also,
           as info, within how long of a token holder closing the token.
  storm    8 shards x 15 tests (scripts/bench-storm.mjs): real servers,
           half the tests leaving lingering SO_REUSEPORT workers, acquire
           through the npm package (npm/sockcheck, SOCKCHECK_BIN set)
           against an in-process JS pool with Harper 0.6.2's algorithm, in
           the same run: sockcheck's wall and p95 below Harper's, median
           within 2x. Then the npm per-call floor, broken down.

Resources (test-only, loopback): 127.90.0.0/16 (loops, many, wait, storm),
127.91.0.0/16 (Harper's pool in the storm), 127.92.0.0/16 (the 65,536
tokens), 127.93.0.0/16 (the /16 pool), TCP ports 47960-47969, private state
directories under a temporary directory. Every process it starts is ended
by pid. Holders raise RLIMIT_NOFILE as far as they may and spread their
sockets over as many processes as the hard limit needs (20,000 here, and
no CAP_SYS_RESOURCE to raise it). bench.sh runs it as root.

    scripts/bench-leases.py --bin target/release/sockcheck \\
        --holder target/release/examples/sockcheck-holder --out target/bench
"""

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORT = 47960                 # the lease port (canary) of loops, many, pool16, wait
STORM_PORTS = (47961, 47962)  # the storm's servers
PREFIX = b"sockcheck/v1/lease/"


def token_name(address):
    """A token's abstract name: NUL, then the name padded with NULs to the
    whole of sun_path (107 bytes), as src/lease/token.rs binds it."""
    return b"\0" + (PREFIX + address.encode()).ljust(107, b"\0")
NOFILE = 200_000


def pct(values, q):
    """The q-th percentile (nearest rank) of values."""
    v = sorted(values)
    if not v:
        return float("nan")
    k = max(0, min(len(v) - 1, int(round(q / 100 * len(v) + 0.5)) - 1))
    return v[k]


def ms(x):
    return x * 1000


def raise_nofile(n=NOFILE):
    """Soft and hard RLIMIT_NOFILE to n (as root) or as far as allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def addr(base, i):
    """base (a.b.0.0) plus offset i, as dotted text."""
    a, b = base.split(".")[:2]
    return f"{a}.{b}.{i >> 8}.{i & 255}"


# --- helper processes (run as `bench-leases.py tokens|listeners|loop ...`) --

def helper_tokens(args):
    """Bind abstract lease tokens for offsets of --base, listen, wait."""
    raise_nofile()
    held = []
    for i in range(args.start, args.start + args.count * args.step, args.step):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(token_name(addr(args.base, i)))
        s.listen(8)
        held.append(s)
    print(f"ready tokens={len(held)}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def helper_listeners(args):
    """TCP listeners on offsets of --base, port --port; wait."""
    raise_nofile()
    held = []
    for i in range(args.start, args.start + args.count * args.step, args.step):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((addr(args.base, i), args.port))
        s.listen(1)
        held.append(s)
    print(f"ready listeners={len(held)}", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def helper_loop(args):
    """One loop of the loops stage: waits for 'go' on stdin, then runs
    --iterations calls, timing each; prints the times (s) as JSON."""
    me = str(os.getpid())
    times, failures = [], 0
    sys.stdin.readline()
    for _ in range(args.iterations):
        if args.mode == "check":
            argv = [args.bin, "--ports", str(PORT), args.address]
            t0 = time.perf_counter()
            r = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t0)
            failures += r.returncode != 0
        else:
            argv = [args.bin, "--state-dir", args.state, "--ports", str(PORT),
                    "acquire", args.pool, "--owner", me, "--wait", "10s"]
            t0 = time.perf_counter()
            r = subprocess.run(argv, capture_output=True, text=True)
            times.append(time.perf_counter() - t0)
            got = r.stdout.strip()
            if r.returncode != 0 or not got:
                failures += 1
                continue
            rel = subprocess.run([args.bin, "--state-dir", args.state, "release", got],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            failures += rel.returncode != 0
    print(json.dumps({"times": times, "failures": failures}), flush=True)


# --- the driver ------------------------------------------------------------------

class Procs:
    """Every process the stage starts, ended by pid."""

    def __init__(self):
        self.procs = []

    def start(self, argv, ready=True, **kw):
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, **kw)
        self.procs.append(p)
        if ready:
            line = p.stdout.readline()
            if not line.startswith("ready"):
                self.stop(p)
                raise SystemExit(f"bench-leases: {argv[:4]} did not start: {line!r}")
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p)


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = Path(tmp)
        self.procs = Procs()
        self.budget = []
        self.results = {}
        self.me = str(os.getpid())

    def line(self, ok, text):
        self.budget.append(f"{'PASS' if ok else 'MISS'}  {text}")
        print(self.budget[-1], flush=True)

    def info(self, text):
        self.budget.append(f"info  {text}")
        print(self.budget[-1], flush=True)

    def state(self, name):
        return str(self.tmp / name)

    def sc(self, *argv, **kw):
        return subprocess.run([self.args.bin, *argv], capture_output=True, text=True, **kw)

    def acquire_timed(self, state, pool, owner=None, extra=()):
        argv = [self.args.bin, "--state-dir", state, "--ports", str(PORT), "acquire", pool,
                "--owner", owner or self.me, *extra]
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True)
        took = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"bench-leases: acquire {pool} failed ({r.returncode}): {r.stderr.strip()[:500]}")
        return took, r.stdout.strip()

    def release(self, state, address):
        r = self.sc("--state-dir", state, "release", address)
        if r.returncode != 0:
            raise SystemExit(f"bench-leases: release {address} failed: {r.stderr.strip()[:300]}")

    def series(self, state, pool, n, extra=()):
        """n acquire+release of pool, sequential; acquire times (s)."""
        times = []
        for _ in range(n):
            took, got = self.acquire_timed(state, pool, extra=extra)
            times.append(took)
            self.release(state, got)
        return times

    # -- a: 16 loops ------------------------------------------------------------
    def loops(self):
        a = self.args
        n = a.loops
        pool = "127.90.1.0/27"
        state = self.state("loops")
        # Start the agent once, outside the timing.
        self.series(state, pool, 2)
        per_phase = max(2, a.loop_iterations // 2)
        acc = {"check": [], "acquire": []}
        fails = {"check": 0, "acquire": 0}
        agent_cpu = 0.0
        for phase in ("check", "acquire", "check", "acquire"):
            cpu0 = agent_cpu_s(state)
            workers = []
            for i in range(n):
                argv = [sys.executable, __file__, "loop", "--mode", phase, "--bin", a.bin,
                        "--iterations", str(per_phase), "--state", state, "--pool", pool,
                        "--address", f"127.90.1.{i + 1}"]
                workers.append(self.procs.start(argv, ready=False, stdin=subprocess.PIPE))
            time.sleep(0.3)  # every interpreter up before any loop starts
            for w in workers:
                w.stdin.write("go\n")
                w.stdin.flush()
            for w in workers:
                out = json.loads(w.stdout.readline() or "{}")
                acc[phase] += out.get("times", [])
                fails[phase] += out.get("failures", 1)
                w.wait()
                self.procs.procs.remove(w)
            if phase == "acquire":
                agent_cpu += agent_cpu_s(state) - cpu0
        c, q = acc["check"], acc["acquire"]
        cp50, cp99, ap50, ap99 = (ms(pct(c, 50)), ms(pct(c, 99)), ms(pct(q, 50)), ms(pct(q, 99)))
        self.results["loops"] = {"check_ms": [ms(x) for x in c], "acquire_ms": [ms(x) for x in q],
                                 "failures": fails}
        tail = f" ({len(q)} acquires, {len(c)} checks, failures {fails['acquire']}/{fails['check']})"
        self.line(ap50 <= 1.3 * cp50,
                  f"{n} loops: acquire p50 <= 1.3x check p50: {ap50:.1f} ms vs {cp50:.1f} ms "
                  f"({ap50 / cp50:.2f}x){tail}")
        self.line(ap99 <= 1.3 * cp99,
                  f"{n} loops: acquire p99 <= 1.3x check p99: {ap99:.1f} ms vs {cp99:.1f} ms "
                  f"({ap99 / cp99:.2f}x)")
        self.info(f"{n} loops: the lease agent's CPU time per acquire+release cycle: "
                  f"{agent_cpu / max(1, len(q)) * 1e6:.0f} us ({agent_cpu:.2f} s for {len(q)} cycles)")

    # -- b: 65,536 existing leases ------------------------------------------------
    def many(self):
        a = self.args
        pool = "127.90.2.0/30"
        state = self.state("many")
        self.series(state, pool, 2)
        none = self.series(state, pool, a.trials)
        t0 = time.perf_counter()
        holders = self.spread("tokens", "127.92.0.0", 0, 1, a.tokens)
        made = time.perf_counter() - t0
        ntok = self.count_tokens("127.92.")
        many = self.series(state, pool, a.trials)
        for h in holders:
            self.procs.stop(h)
        n0, n1 = ms(statistics.median(none)), ms(statistics.median(many))
        self.results["many"] = {"none_ms": [ms(x) for x in none], "many_ms": [ms(x) for x in many],
                                "tokens": ntok, "holder_start_s": made}
        self.line(n1 <= 2 * n0,
                  f"acquire with {ntok:,} existing leases <= 2x with none: {n1:.2f} ms vs {n0:.2f} ms "
                  f"({n1 / n0:.2f}x; medians of {a.trials}; tokens held by {len(holders)} Python processes, bound in {made:.1f} s)")
        if a.agent_leases > 0:
            self.agent_scaling(a.agent_leases)

    def spread(self, kind, base, start, step, count, *extra):
        """count tokens or listeners at offsets start, start+step, ... of
        base, in as many processes as RLIMIT_NOFILE requires (20,000 here,
        hard, and no CAP_SYS_RESOURCE to raise it)."""
        per = max(1000, resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 2000)
        started = []
        done = 0
        while done < count:
            n = min(per, count - done)
            started.append(self.procs.start([sys.executable, __file__, kind, "--base", base,
                                             "--start", str(start + done * step), "--step", str(step),
                                             "--count", str(n), *extra]))
            done += n
        return started

    def count_tokens(self, prefix):
        """Bound, unconnected lease tokens of addresses starting with prefix."""
        n = 0
        want = b"@sockcheck/v1/lease/" + prefix.encode()
        with open("/proc/net/unix", "rb") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 8 and fields[5] == b"01" and fields[7].startswith(want):
                    n += 1
        return n

    def agent_scaling(self, count):
        """count real binary leases in one agent (single-address acquires,
        4 at a time), then the same acquire with and without them."""
        a = self.args
        state = self.state("agent")
        pool = "127.90.2.0/30"
        # The first acquire of the state dir starts the agent, which raises
        # its soft limit to the hard one it inherits (20,000 here: with no
        # CAP_SYS_RESOURCE, prlimit cannot raise it; a lease takes 2 fds).
        first = subprocess.run([a.bin, "--state-dir", state,
                                "--ports", str(PORT), "acquire", "127.90.2.100", "--owner", self.me],
                               capture_output=True, text=True)
        if first.returncode != 0:
            self.info(f"agent scaling: first acquire failed: {first.stderr.strip()[:200]}")
            return
        base = self.series(state, pool, a.trials)
        t0 = time.perf_counter()
        addrs = [f"127.90.{16 + (i >> 8)}.{i & 255}" for i in range(count)]
        lock = threading.Lock()
        failed = []
        it = iter(addrs)

        def work():
            while True:
                with lock:
                    x = next(it, None)
                if x is None:
                    return
                r = subprocess.run([a.bin, "--state-dir", state, "--ports", str(PORT), "acquire", x,
                                    "--owner", self.me], capture_output=True, text=True)
                if r.returncode != 0:
                    with lock:
                        failed.append(r.stderr.strip()[:200])

        ts = [threading.Thread(target=work) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        fill = time.perf_counter() - t0
        loaded = self.series(state, pool, a.trials)
        b0, b1 = ms(statistics.median(base)), ms(statistics.median(loaded))
        t0 = time.perf_counter()
        listed = self.sc("--state-dir", state, "leases", "--json")
        lt = time.perf_counter() - t0
        nrows = len(json.loads(listed.stdout or "{}").get("leases", []))
        self.results["agent"] = {"count": count, "none_ms": [ms(x) for x in base],
                                 "loaded_ms": [ms(x) for x in loaded], "fill_s": fill,
                                 "failed": len(failed), "leases_json_s": lt}
        self.info(f"agent scaling: acquire with {count - len(failed):,} binary leases in one agent: "
                  f"{b1:.2f} ms vs {b0:.2f} ms ({b1 / b0:.2f}x); making them took {fill:.1f} s "
                  f"({ms(fill) / count * 4:.1f} ms per acquire, 4 at a time); "
                  f"`leases --json` listed {nrows:,} in {ms(lt):.0f} ms"
                  + (f"; {len(failed)} failed: {failed[0]}" if failed else ""))
        # Their owner is this driver: end them all at once by ending the
        # agent that holds them (by pid; the kernel frees the tokens).
        stop_agents(state)

    # -- c: a /16 pool, 60,000 held ------------------------------------------------
    def pool16(self):
        a = self.args
        state = self.state("pool16")
        held = a.pool_held
        half = held // 2
        first_free = addr("127.93.0.0", held)
        self.series(state, first_free, 2)
        idle_single = self.series(state, first_free, a.trials)
        t0 = time.perf_counter()
        holders = self.spread("tokens", "127.93.0.0", 0, 2, held - half)
        holders += self.spread("listeners", "127.93.0.0", 1, 2, half, "--port", str(PORT))
        made = time.perf_counter() - t0
        whole, single = [], []
        for _ in range(max(3, a.trials // 2)):
            took, got = self.acquire_timed(state, "127.93.0.0/16")
            if got != first_free:
                raise SystemExit(f"bench-leases: /16 acquire got {got}, expected {first_free}")
            whole.append(took)
            self.release(state, got)
            single += self.series(state, first_free, 1)
        for h in holders:
            self.procs.stop(h)
        w, s, s0 = (ms(statistics.median(whole)), ms(statistics.median(single)),
                    ms(statistics.median(idle_single)))
        self.results["pool16"] = {"whole_ms": [ms(x) for x in whole], "single_ms": [ms(x) for x in single],
                                  "idle_single_ms": [ms(x) for x in idle_single], "setup_s": made}
        self.line(w <= 5 * s,
                  f"/16 pool, first {held:,} leased ({held - half:,}) or busy ({half:,} listeners): acquire "
                  f"<= 5x a single-address acquire: {w:.1f} ms vs {s:.2f} ms ({w / s:.1f}x; single-address "
                  f"with nothing held: {s0:.2f} ms)")

    # -- d: waiting acquire ------------------------------------------------------------
    def wait(self):
        a = self.args
        state = self.state("wait")
        address = "127.90.3.1"
        self.series(state, address, 2)
        after_release, after_close, waiter_total = [], [], []
        for trial in range(a.wait_trials):
            # A lease held by the agent, released with `sockcheck release`.
            _, got = self.acquire_timed(state, address)
            w, stamp = self.waiter(state, address)
            time.sleep(0.15)  # it has looked, found the address leased, and waits
            t_rel0 = time.perf_counter()
            self.release(state, got)
            t_rel = time.perf_counter()
            line = self.finish_waiter(w, stamp)
            after_release.append(line - t_rel)
            waiter_total.append(line - t_rel0)
            self.release(state, address)
        for trial in range(a.wait_trials // 2):
            # A token this driver holds: closed at a known instant.
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(token_name(address))
            s.listen(8)
            w, stamp = self.waiter(state, address)
            time.sleep(0.15)
            t_close = time.perf_counter()
            s.close()
            line = self.finish_waiter(w, stamp)
            after_close.append(line - t_close)
            self.release(state, address)
        p95, p50 = ms(pct(after_release, 95)), ms(pct(after_release, 50))
        c95, c50 = ms(pct(after_close, 95)), ms(pct(after_close, 50))
        r95 = ms(pct(waiter_total, 95))
        self.results["wait"] = {"after_release_ms": [ms(x) for x in after_release],
                                "after_close_ms": [ms(x) for x in after_close],
                                "from_release_start_ms": [ms(x) for x in waiter_total]}
        self.line(p95 <= 5,
                  f"waiting acquire prints within 5 ms of `sockcheck release` returning: p95 {p95:.2f} ms "
                  f"(p50 {p50:.2f} ms, {len(after_release)} trials; from the release's start: p95 {r95:.2f} ms)")
        self.info(f"waiting acquire after the holder closes its token: p95 {c95:.2f} ms, p50 {c50:.2f} ms "
                  f"({len(after_close)} trials)")

    def waiter(self, state, address):
        argv = [self.args.bin, "--state-dir", state, "--ports", str(PORT), "acquire", address,
                "--owner", self.me, "--wait", "20s"]
        w = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.procs.append(w)
        stamp = {}

        def read():
            stamp["line"] = w.stdout.readline()
            stamp["t"] = time.perf_counter()

        t = threading.Thread(target=read)
        t.start()
        stamp["thread"] = t
        return w, stamp

    def finish_waiter(self, w, stamp):
        stamp["thread"].join(30)
        w.wait(30)
        self.procs.procs.remove(w)
        if w.returncode != 0 or not stamp.get("line", "").strip():
            raise SystemExit(f"bench-leases: waiting acquire failed ({w.returncode}): {w.stderr.read()[:300]}")
        return stamp["t"]

    # -- e: the storm ----------------------------------------------------------------------
    def storm(self):
        a = self.args
        script = ROOT / "scripts/bench-storm.mjs"
        out = Path(a.out) / "storm.json"
        argv = [a.node, str(script), "--bin", a.bin, "--holder", a.holder, "--state-dir",
                self.state("storm"), "--tmp", str(self.tmp), "--shards", str(a.shards),
                "--tests", str(a.tests), "--out", str(out), "--ports", ",".join(map(str, STORM_PORTS))]
        p = self.procs.start(argv, ready=False, stderr=None)
        text, _ = p.communicate()
        self.procs.procs.remove(p)
        if p.returncode != 0:
            raise SystemExit(f"bench-leases: storm failed ({p.returncode}): {text[-800:]}")
        doc = json.loads(out.read_text())
        self.results["storm"] = doc
        s, h = doc["sockcheck"], doc["harper"]
        self.line(s["wall_s"] < h["wall_s"],
                  f"storm {a.shards}x{a.tests}: sockcheck wall below Harper's: {s['wall_s']:.1f} s vs {h['wall_s']:.1f} s")
        self.line(s["p95_ms"] < h["p95_ms"],
                  f"storm: sockcheck acquire p95 below Harper's: {s['p95_ms']:.0f} ms vs {h['p95_ms']:.0f} ms")
        self.line(s["median_ms"] <= 2 * h["median_ms"],
                  f"storm: sockcheck acquire median within 2x Harper's: {s['median_ms']:.1f} ms vs "
                  f"{h['median_ms']:.1f} ms ({s['median_ms'] / h['median_ms']:.2f}x)")
        self.info(f"storm: bind conflicts (a leased address already bound): sockcheck {s['conflicts']}, "
                  f"Harper {h['conflicts']}; Harper: {h.get('sleeps', 0)} pool-exhausted 1-s sleeps, "
                  f"{h.get('lock_waits', 0)} 1-s lock retries, {h.get('canary_skips', 0)} canary skips; "
                  f"acquires that waited >= 100 ms: sockcheck {s.get('waited')}, Harper {h.get('waited')}; "
                  f"time in acquire, all shards: sockcheck {s.get('acquire_total_s', 0):.1f} s, "
                  f"Harper {h.get('acquire_total_s', 0):.1f} s; release median: sockcheck "
                  f"{s.get('release_median_ms', float('nan')):.1f} ms (a process), Harper "
                  f"{h.get('release_median_ms', float('nan')):.1f} ms")
        if "sockcheck-no-v" in doc:
            n = doc["sockcheck-no-v"]
            self.info(f"storm, npm with -v taken out of acquire's arguments: wall {n['wall_s']:.1f} s, "
                      f"median {n['median_ms']:.1f} ms ({n['median_ms'] / h['median_ms']:.2f}x Harper's), "
                      f"p95 {n['p95_ms']:.0f} ms")
        for name in ("sockcheck", "sockcheck-no-v"):
            q = doc.get(name, {}).get("quick_breakdown_ms")
            if q:
                self.info(f"storm, {name}: npm acquire that did not wait (median of "
                          f"{doc[name]['quick_n']}): " + ", ".join(f"{k} {v:.2f} ms" for k, v in q.items())
                          + f"; node spawn /bin/true under the storm: median "
                          f"{doc[name]['spawn_true_under_load_ms']['median']:.2f} ms")
        if "floor" in doc:
            f = doc["floor"]
            self.info("npm per-call floor (idle, medians): " +
                      ", ".join(f"{k} {v:.1f} ms" for k, v in f.items()))

    def preflight(self):
        """Refuse to start when anything already uses our ranges (an
        earlier run?): lease tokens or TCP sockets on 127.90-127.93."""
        ours = tuple(f"127.{n}." for n in (90, 91, 92, 93))
        found = []
        with open("/proc/net/unix") as f:
            for line in f:
                name = line.split()[-1] if line.strip() else ""
                if name.startswith("@sockcheck/v1/lease/127.9") and name[20:].startswith(ours):
                    found.append(name)
        ss = subprocess.run(["ss", "-Htan", "exclude", "time-wait"], capture_output=True, text=True).stdout
        for line in ss.splitlines():
            f = line.split()
            if len(f) >= 4 and f[3].startswith(ours):
                found.append(line)
        if found:
            raise SystemExit("bench-leases: test addresses already in use (an earlier run?):\n" +
                             "\n".join(found[:5]))

    def run(self):
        self.preflight()
        self.info(f"lease stage: load average {open('/proc/loadavg').read().split()[0]} at the start, "
                  f"{os.cpu_count()} cpus")
        stages = self.args.only.split(",")
        for name in stages:
            print(f"bench-leases: stage {name}", file=sys.stderr, flush=True)
            getattr(self, name)()
        self.info(f"lease stage: load average {open('/proc/loadavg').read().split()[0]} at the end")


def agent_cpu_s(state):
    """User+system CPU seconds of the lease agent of state (0 if none)."""
    tick = os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            if b"__lease-agent" in argv and state.encode() in argv:
                stat = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                return (int(stat[11]) + int(stat[12])) / tick
        except OSError:
            continue
    return 0.0


def stop_agents(tmp):  # tmp: a directory path (str); agents of state dirs under it
    """The lease agents our acquires started (one per state directory
    under tmp), ended by pid: they would go a few seconds after their last
    lease anyway."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if b"__lease-agent" in argv and any(a.startswith(tmp.encode()) for a in argv):
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
            for _ in range(100):
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.02)


def next_locked(it, lock):
    with lock:
        return next(it, None)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    t = sub.add_parser("tokens")
    t.add_argument("--base", required=True)
    t.add_argument("--start", type=int, default=0)
    t.add_argument("--step", type=int, default=1)
    t.add_argument("--count", type=int, required=True)
    l = sub.add_parser("listeners")
    l.add_argument("--base", required=True)
    l.add_argument("--start", type=int, default=0)
    l.add_argument("--step", type=int, default=1)
    l.add_argument("--count", type=int, required=True)
    l.add_argument("--port", type=int, required=True)
    lp = sub.add_parser("loop")
    lp.add_argument("--mode", choices=["check", "acquire"], required=True)
    lp.add_argument("--bin", required=True)
    lp.add_argument("--iterations", type=int, required=True)
    lp.add_argument("--state", required=True)
    lp.add_argument("--pool", required=True)
    lp.add_argument("--address", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--bin", default=str(ROOT / "target/release/sockcheck"))
    s.add_argument("--holder", default=str(ROOT / "target/release/examples/sockcheck-holder"))
    s.add_argument("--node", default="node")
    s.add_argument("--out", default=str(ROOT / "target/bench"))
    s.add_argument("--only", default="loops,many,pool16,wait,storm")
    s.add_argument("--loops", type=int, default=16)
    s.add_argument("--loop-iterations", type=int, default=60, help="per loop and mode")
    s.add_argument("--trials", type=int, default=30)
    s.add_argument("--tokens", type=int, default=65536)
    s.add_argument("--agent-leases", type=int, default=0,
                   help="also fill one agent with this many binary leases (info)")
    s.add_argument("--pool-held", type=int, default=60000)
    s.add_argument("--wait-trials", type=int, default=50)
    s.add_argument("--shards", type=int, default=8)
    s.add_argument("--tests", type=int, default=15)
    args = ap.parse_args()
    if args.cmd == "tokens":
        return helper_tokens(args)
    if args.cmd == "listeners":
        return helper_listeners(args)
    if args.cmd == "loop":
        return helper_loop(args)
    if args.cmd != "stage":
        ap.error("a command: stage (the others are its helpers)")
    args.bin = str(Path(args.bin).resolve())
    args.holder = str(Path(args.holder).resolve())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    raise_nofile(65536)
    with tempfile.TemporaryDirectory(prefix="sockcheck-bench-leases-") as tmp:
        os.chmod(tmp, 0o700)
        bench = Bench(args, tmp)
        old = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        try:
            bench.run()
        finally:
            bench.procs.stop_all()
            signal.signal(signal.SIGTERM, old)
            (Path(args.out) / "leases.json").write_text(json.dumps(bench.results) + "\n")
            (Path(args.out) / "leases-budget.txt").write_text("\n".join(bench.budget) + "\n")
            stop_agents(tmp)


if __name__ == "__main__":
    main()
