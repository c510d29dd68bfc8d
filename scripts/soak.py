#!/usr/bin/env python3
"""Soak the lease space the way an adversary would (issues 9 and 16).

Two attacks against one private state directory, with real sockcheck
processes:

1. Contention: WORKERS threads acquire and release addresses of one pool for
   CYCLES acquire/release cycles in all, and check their own ledger: an
   address handed to two workers at once is a duplicate.
2. SIGKILL: KILLS acquire and release processes are SIGKILLed at a random
   moment of their work. Every lease an acquire confirmed (it printed the
   address) must still be leased afterwards, to its owner: one that is
   missing is lost. A killed release may or may not have released.

A lease is a token (an abstract AF_UNIX name) that the lease agent holds
(docs/leases.md); there is no state file. What is leased is what
`sockcheck leases --json POOL` lists: one row per token of the pool, with
the owner (pid, start_ticks, alive), the holder's pid and uid from
SO_PEERCRED, the backend and the further holders. A confirmed lease is
lost when its row is missing, or is no longer owned by the attack's owner.
Afterwards: leftover temporary files in the state directory, and the
listing itself (no address listed twice, every row owned by a live owner).
Prints one summary line and the acquire latency (p50, p99); exits 1 if
duplicates, lost leases or leftover temp files are not all 0.

Not part of .ci/run (it takes a minute or more). Needs nothing but a built
sockcheck; run as any user:

    cargo build --release
    scripts/soak.py --workers 16 --cycles 10000 --kills 1000

Owns 127.97.0.0/16 and TCP port 47950 (nothing listens there: the addresses
are inspected, never bound by this script). At the end it ends the lease
agent its acquires started (by pid, after the owner of the SIGKILL attack's
leases has exited), so no process of it is left.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--cycles", type=int, default=10000, help="acquire/release cycles in all")
    ap.add_argument("--kills", type=int, default=1000, help="SIGKILLs mid-operation")
    ap.add_argument("--pool", default="127.97.1.0/27", help="pool of the contention attack")
    ap.add_argument("--kill-pool", default="127.97.2.0/26", help="pool of the SIGKILL attack")
    ap.add_argument("--ports", default="47950")
    ap.add_argument("--bin", default=os.environ.get("SOCKCHECK_BIN", str(ROOT / "target/release/sockcheck")))
    ap.add_argument("--seed", type=int, default=9)
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit(f"soak: no sockcheck at {args.bin} (cargo build --release, or --bin)")
    random.seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="sockcheck-soak-") as tmp:
        state = Path(tmp) / "state"
        base = [args.bin, "--state-dir", str(state)]
        args.acquire = base + ["--ports", args.ports, "acquire"]
        agents = set()
        try:
            contention = contend(base, args)
            killing = kill_attack(base, args, agents)
            temp_files = sorted(p.name for p in state.iterdir()
                                if p.name.startswith(".") or ".tmp" in p.name)
            leases = []
            for pool in (args.pool, args.kill_pool):
                rows = listing(base, pool)
                agents |= holder_pids(rows)
                leases += rows
            addresses = [l["address"] for l in leases]
            twice = len(addresses) - len(set(addresses))
            # The SIGKILL attack's owner has exited: its leases are ended
            # (the agent watches its pidfd); none may be left to a dead owner.
            stale = [l["address"] for l in leases if not (l.get("owner") or {}).get("alive", True)]
            if stale:
                print(f"soak: leases of exited owners still listed: {stale[:5]}", file=sys.stderr)
        finally:
            stop_agents(agents, state)
    lat = sorted(contention["latencies"])
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")
    duplicates = contention["duplicates"] + twice
    print(f"soak: {contention['cycles']} cycles by {args.workers} workers on {args.pool}, "
          f"{killing['kills']} SIGKILLs ({killing['confirmed']} leases confirmed, "
          f"{killing['orphans']} unconfirmed leases cleaned up)")
    print(f"soak: duplicates {duplicates}, lost leases {killing['lost']}, "
          f"leftover temp files {len(temp_files)}"
          + (f" {temp_files[:5]}" if temp_files else "")
          + f", acquire failures {contention['failures']}")
    print(f"soak: acquire p50 {p50:.1f} ms, p99 {p99:.1f} ms ({len(lat)} acquires)")
    sys.exit(1 if duplicates or killing["lost"] or temp_files else 0)


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def contend(base, args):
    """WORKERS threads, CYCLES acquire/release cycles, one ledger."""
    ledger = {}  # address -> worker
    lock = threading.Lock()
    out = {"duplicates": 0, "failures": 0, "release_failures": 0, "latencies": [], "cycles": 0}
    per_worker = args.cycles // args.workers
    owner = str(os.getpid())

    def worker(n):
        rng = random.Random(args.seed * 1000 + n)
        for _ in range(per_worker):
            started = time.monotonic()
            r = run(args.acquire + [args.pool, "--owner", owner, "--wait", "30s"])
            took = time.monotonic() - started
            address = r.stdout.strip()
            with lock:
                out["latencies"].append(took)
                out["cycles"] += 1
                if r.returncode != 0 or not address:
                    out["failures"] += 1
                    continue
                if address in ledger:
                    out["duplicates"] += 1
                    print(f"soak: DUPLICATE {address}: worker {n} and worker {ledger[address]}",
                          file=sys.stderr)
                ledger[address] = n
            time.sleep(rng.random() * 0.002)
            with lock:
                if ledger.get(address) == n:
                    del ledger[address]
            rel = run(base + ["release", address])
            if rel.returncode != 0:
                with lock:
                    out["failures"] += 1
                    out["release_failures"] += 1
                    if out["release_failures"] <= 3:
                        print(f"soak: release {address} failed ({rel.returncode}): "
                              f"{rel.stderr.strip()[:300]}", file=sys.stderr)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def kill_attack(base, args, agents):
    """KILLS acquires and releases SIGKILLed at a random moment."""
    sleeper = subprocess.Popen(["sleep", "100000"])
    owner = str(sleeper.pid)
    confirmed = set()
    out = {"kills": 0, "lost": 0, "orphans": 0, "confirmed": 0}
    rng = random.Random(args.seed)
    try:
        while out["kills"] < args.kills:
            if confirmed and rng.random() < 0.4:
                address = rng.choice(sorted(confirmed))
                argv = base + ["release", address]
            else:
                address = None
                argv = args.acquire + [args.kill_pool, "--owner", owner]
            p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            time.sleep(rng.random() * 0.03)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                out["kills"] += 1
            stdout, _ = p.communicate()
            if p.returncode == 0:
                if address is None and stdout.strip():
                    confirmed.add(stdout.strip())
                    out["confirmed"] += 1
                elif address is not None:
                    confirmed.discard(address)
            elif address is not None and p.returncode == -signal.SIGKILL:
                # A killed release may have released: find out.
                if address not in held(base, args.kill_pool, owner, agents):
                    confirmed.discard(address)
            # Every confirmed lease must still be there.
            if out["kills"] % 50 == 0 or len(confirmed) > 40:
                leased = held(base, args.kill_pool, owner, agents)
                lost = confirmed - leased
                if lost:
                    out["lost"] += len(lost)
                    print(f"soak: LOST {sorted(lost)}", file=sys.stderr)
                    confirmed -= lost
                # Leases written by an acquire killed before it printed
                # (unconfirmed): give them back so the pool does not fill.
                for orphan in sorted(leased - confirmed):
                    out["orphans"] += 1
                    run(base + ["release", orphan])
                if len(confirmed) > 40:
                    for address in sorted(confirmed)[:20]:
                        run(base + ["release", address])
                        confirmed.discard(address)
        lost = confirmed - held(base, args.kill_pool, owner, agents)
        out["lost"] += len(lost)
        if lost:
            print(f"soak: LOST {sorted(lost)}", file=sys.stderr)
    finally:
        sleeper.kill()
        sleeper.wait()
        # The agent ends the sleeper's leases when its pidfd turns readable.
        deadline = time.monotonic() + 5
        while listing(base, args.kill_pool) and time.monotonic() < deadline:
            time.sleep(0.05)
    return out


def listing(base, pool):
    """The leases of POOL: `sockcheck leases --json POOL`'s rows."""
    r = run(base + ["leases", "--json", pool])
    if r.returncode not in (0, 1) or not r.stdout.strip():
        raise SystemExit(f"soak: sockcheck leases {pool} failed ({r.returncode}): {r.stderr.strip()[:300]}")
    return json.loads(r.stdout).get("leases", [])


def held(base, pool, owner, agents=None):
    """Addresses of POOL leased to OWNER now (tokens listed with OWNER as
    their owner). Notes the holders' pids (the lease agent) in AGENTS."""
    rows = listing(base, pool)
    if agents is not None:
        agents |= holder_pids(rows)
    return {l["address"] for l in rows if str(owner_pid(l)) == owner}


def owner_pid(lease):
    owner = lease.get("owner")
    if isinstance(owner, dict):
        return owner.get("pid")
    return lease.get("owner_pid")


def holder_pids(rows):
    """The pids holding the binary's tokens: the lease agent (SO_PEERCRED)."""
    return {(l.get("holder") or {}).get("pid") for l in rows
            if l.get("backend") == "binary" and (l.get("holder") or {}).get("pid")}


def stop_agents(pids, state):
    """Ends the lease agents this soak's acquires started, by pid (they
    would leave a few seconds after their last lease anyway): the holders
    its listings named, and any `sockcheck __lease-agent STATE`."""
    pids = set(pids)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"__lease-agent" in argv and str(state).encode() in argv:
                pids.add(int(entry))
    for pid in sorted(pids):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"__lease-agent" not in f.read():
                    continue
            os.kill(pid, signal.SIGTERM)
        except (OSError, ProcessLookupError):
            pass


if __name__ == "__main__":
    main()
