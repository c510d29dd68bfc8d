#!/usr/bin/env python3
"""Issue 17's scale budget lines, for scripts/bench.sh (a benchmark, not a
test): sockcheck must stay linear in sockets plus addresses.

1. `sockcheck list` with 20,000 listeners: at most 2x `ss -tlnp` in the
   same run (medians of --runs each, alternating).
2. `sockcheck scan -q` of a /16 on 64 ports: peak RSS under 64 MiB
   (/usr/bin/time's %M), with its wall time.

Owns 127.78.0.0/16 and ports 47810-47874 (47810 carries the listeners;
the scan's 64 ports are 47811-47874). Every process it starts is ended by
pid. Prints one PASS or MISS line per budget, and exits non-zero only on a
real error.

    scripts/bench-scale.py --bin target/release/sockcheck [--listeners 20000] [--runs 7]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

LISTEN_PORT = 47810
SCAN_PORTS = "47811-47874"
NET = "127.78"

HOLDER = r"""
import socket, sys, time
first, count, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
held = []
for i in range(first, first + count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((f"127.78.{i // 250}.{i % 250 + 1}", port))
    s.listen(1)
    held.append(s)
print("ready", flush=True)
time.sleep(3600)
"""


def timed(argv, env=None):
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - start) * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--listeners", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    per = 4000  # under the 20,000 open-files limit of one process here
    holders = []
    try:
        for first in range(0, args.listeners, per):
            count = min(per, args.listeners - first)
            proc = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(first), str(count), str(LISTEN_PORT)],
                stdout=subprocess.PIPE,
                text=True,
            )
            holders.append(proc)
            if proc.stdout.readline().strip() != "ready":
                sys.exit("bench-scale: a listener holder did not start")
        env = dict(os.environ, NO_COLOR="1")
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(timed([args.bin, "list", "--ports", str(LISTEN_PORT)], env))
            theirs.append(timed(["ss", "-tlnp"]))
        a, b = statistics.median(ours), statistics.median(theirs)
        verdict = "PASS" if a <= 2 * b else "MISS"
        print(
            f"{verdict}  list with {args.listeners:,} listeners <= 2x ss -tlnp: "
            f"{a:.0f} ms vs {b:.0f} ms ({a / b:.2f}x; medians of {args.runs})"
        )
    finally:
        for proc in holders:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    start = time.perf_counter()
    out = subprocess.run(
        ["/usr/bin/time", "-f", "%M", args.bin, "scan", "-q", f"{NET}.0.0/16", "--ports", SCAN_PORTS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - start
    rss_kib = int(out.stderr.strip().splitlines()[-1])
    verdict = "PASS" if rss_kib < 64 * 1024 else "MISS"
    print(
        f"{verdict}  scan -q of a /16 x 64 ports: peak RSS < 64 MiB: "
        f"{rss_kib / 1024:.1f} MiB ({wall:.1f} s, exit {out.returncode})"
    )


if __name__ == "__main__":
    main()
