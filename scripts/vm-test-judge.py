#!/usr/bin/env python3
"""Judges one VM's console log for scripts/vm-test.sh, and prints the table.

    vm-test-judge.py KERNEL DIR      one JSON line: the kernel's results
    vm-test-judge.py --table FILE [MATRIX]
                                     the table of those lines; exit 1 on a
                                     failure; writes them to MATRIX as one
                                     JSON document (date, commit, rows)

DIR holds console.log (sections `@@@ begin NAME` ... `@@@ end NAME rc=N`
written by the VM's init, or by the checks run natively), seconds, accel,
and skipped (why the kernel was not booted) or native (why the checks ran
without a VM).

Which eBPF path each feature took comes from `doctor --json`'s `paths`
(the fd walk or iter/task_file, iter/tcp, the tracepoint or tp_btf,
PIDFD_THREAD), and is checked against what the checks saw: the path
SOCKCHECK_BPF_TRACE printed, the hook `watch` attached, the evidence of the
lingering listener.
"""
import datetime
import json
import os
import re
import subprocess
import sys


def sections(text):
    out, holders, kernel, done = {}, {}, None, False
    cur, buf = None, []
    for line in text.splitlines():
        m = re.match(r"^@@@ begin (\S+)$", line)
        if m:
            cur, buf = m.group(1), []
            continue
        m = re.match(r"^@@@ end (\S+) rc=(\d+)$", line)
        if m and cur == m.group(1):
            out[cur] = (int(m.group(2)), "\n".join(buf))
            cur = None
            continue
        m = re.match(r"^@@@ holder(?:-of)? (\S+) pid=(\d*)", line)
        if m:
            holders.setdefault(m.group(1), m.group(2))
            continue
        m = re.search(r"@@@ kernel (\S+)", line)  # after the BIOS's escapes
        if m:
            kernel = m.group(1)
            continue
        if line.startswith("@@@ done"):
            done = True
            continue
        if cur is not None:
            buf.append(line)
    return out, holders, kernel, done


def kver(release):
    m = re.match(r"(\d+)\.(\d+)", release or "")
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def judge(name, d):
    row = {"name": name, "kernel": None, "seconds": None, "passed": [], "skipped": {},
           "failed": {}, "paths": {}}
    try:
        row["skipped"]["all"] = open(f"{d}/skipped").read().strip()
        return row
    except FileNotFoundError:
        pass
    try:
        row["native"] = open(f"{d}/native").read().strip()
    except FileNotFoundError:
        pass
    try:
        row["accel"] = open(f"{d}/accel").read().strip()
        row["seconds"] = int(open(f"{d}/seconds").read())
    except (FileNotFoundError, ValueError):
        pass
    text = open(f"{d}/console.log", errors="replace").read()
    sec, holders, kernel, done = sections(text)
    row["kernel"] = kernel
    ver = kver(kernel)

    def ok(check):
        row["passed"].append(check)

    def bad(check, why):
        row["failed"][check] = why

    def skip(check, why):
        row["skipped"][check] = why

    def get(check):
        if check not in sec:
            bad(check, "no output (the VM stopped before it?)")
            return None
        return sec[check]

    def doc(check):
        s = get(check)
        if s is None:
            return None
        try:
            return json.loads(s[1])
        except ValueError as e:
            bad(check, f"rc={s[0]}, not JSON ({e}): {s[1][:200]!r} {err(check)[:300]!r}")
            return None

    def err(check):
        return sec.get(check + ".err", (0, ""))[1]

    def listeners(j):
        return [l for p in j["addresses"][0]["ports"] for l in p["listeners"]]

    def owner_pids(j):
        return {str(o["pid"]) for l in listeners(j) for o in l.get("owners", []) if not o.get("hidden")}

    def expect(check, cond, why):
        if cond:
            ok(check)
        else:
            bad(check, why)

    # --version
    s = get("version")
    if s:
        expect("version", s[0] == 0 and s[1].startswith("sockcheck "), f"rc={s[0]} {s[1]!r}")
    for who in ("", "nobody."):
        j = doc(who + "free")
        if j:
            v = j["addresses"][0]["verdict"]
            expect(who + "free", v == "free", f"verdict {v}")

    # listener shapes, /proc owners
    def shape(check, verdict, holder, extra=None):
        j = doc(check)
        if not j:
            return None
        v = j["addresses"][0]["verdict"]
        pids = owner_pids(j)
        why = []
        if v != verdict:
            why.append(f"verdict {v}, not {verdict}")
        if holder is not None and holders.get(holder) not in pids:
            why.append(f"owners {sorted(pids)}, not the holder {holders.get(holder)}")
        if extra:
            why += extra(j)
        expect(check, not why, "; ".join(why))
        return j

    shape("plain", "busy", "plain")
    # nobody: the owner is root's, so hidden; the verdict must not change.
    shape("nobody.plain", "busy", None,
          lambda j: [] if all(o.get("hidden") for l in listeners(j) for o in l["owners"])
          else ["root's owner not hidden from nobody"])
    shape("group", "busy", "group",
          lambda j: [] if len(listeners(j)) == 3 and all(l["reuseport"] for l in listeners(j))
          else [f"{len(listeners(j))} listeners, reuseport {[l['reuseport'] for l in listeners(j)]}"])
    j = shape("lingering", "busy", "lingering",
              lambda j: [] if all(f["via_tids"] for l in listeners(j) for o in l["owners"] for f in o["fds"])
              else ["no fd found through a thread (via_tids empty)"])
    # --bpf never --no-probe: only pidfd_getfd can tell SO_REUSEPORT here.
    if j:
        ev = listeners(j)[0]["reuseport_evidence"]
        if ev["source"] == "pidfd_getfd" or "pidfd" in ev["source"]:
            row["paths"]["pidfd_thread_seen"] = "yes"
            ok("pidfd.thread")
        else:
            row["paths"]["pidfd_thread_seen"] = "no"
            tried = "; ".join(ev.get("tried", []))[:160]
            if ver < (6, 9):
                skip("pidfd.thread", f"PIDFD_THREAD is 6.9+ ({tried})")
            else:
                bad("pidfd.thread", f"evidence {ev['source']}: {ev['detail']} ({tried})")
    # --bpf never --no-pidfd: the bind probe tells SO_REUSEPORT.
    shape("probe", "busy", "lingering",
          lambda j: [] if all(l["reuseport_evidence"]["source"] == "bind_probe" and l["reuseport"]
                              for l in listeners(j))
          else [f"evidence {[l['reuseport_evidence'] for l in listeners(j)]}"])
    shape("dualstack", "foreign", "dualstack")

    # eBPF
    def trace_path(check):
        e = err(check)
        if "iter/task: failed, iter/task_file instead" in e:
            return "iter_task_file"
        if "iter/task: attach and iterate" in e:
            return "fd_walk"
        if "iter/task_file: attach and iterate" in e:
            return "iter_task_file"
        return None

    for check, holder in (("bpf.plain", "plain"), ("bpf.lingering", "lingering")):
        j = shape(check, "busy", holder,
                  lambda j: [] if j["sources"]["bpf"]["status"] == "used"
                  else [f"bpf {j['sources']['bpf']}"])
        p = trace_path(check)
        if p:
            row["paths"].setdefault("traced_owners", p)
        if check == "bpf.lingering" and j:
            ev = listeners(j)[0]["reuseport_evidence"]
            if ev["source"] != "kernel":
                bad("bpf.lingering.reuseport", f"evidence {ev}")
            else:
                ok("bpf.lingering.reuseport")
    # As nobody --bpf always cannot load: it must say so and still answer.
    shape("nobody.bpf", "busy", None,
          lambda j: [] if j["sources"]["bpf"]["status"] == "unavailable" and j["sources"]["bpf"]["detail"]
          else [f"bpf as nobody: {j['sources']['bpf']}"])

    # doctor --json's paths: each feature's path, the one its kernel allows,
    # and the one the checks above took.
    def doctor_paths(paths):
        for feature, key in (("bpf_owners", "owners"), ("bpf_listeners", "listeners"),
                             ("bpf_watch", "watch"), ("pidfd_thread", "pidfd_thread")):
            p = paths.get(feature)
            if p is None:
                bad("doctor.paths", f"doctor --json has no path row {feature}")
                return
            row["paths"][key] = {k: p[k] for k in ("path", "fallback", "why")}
        owners = row["paths"]["owners"]
        want = "fd_walk" if ver >= (5, 17) else "iter_task_file"
        # A fallback says why in one line, with the verifier's first words
        # (5.10 printed its whole log once) and, before 5.17, bpf_loop's age.
        why_ok = want == "fd_walk" or ("\n" not in owners["why"] and "older than 5.17" in owners["why"])
        expect("doctor.owners", owners["path"] == want and owners["fallback"] == (want != "fd_walk") and why_ok,
               f"owners path {owners}, not {want} with a one-line reason (kernel {kernel})")
        traced = row["paths"].get("traced_owners")
        expect("doctor.owners.agree", traced == owners["path"],
               f"doctor names {owners['path']}, the check took {traced}")
        listeners_path = row["paths"]["listeners"]["path"]
        expect("doctor.listeners", listeners_path == "iter_tcp", f"iter/tcp: {row['paths']['listeners']}")
        w = row["paths"]["watch"]
        expect("doctor.watch", w["path"] == "tp_btf" and w["fallback"] and "tracefs is not mounted" in w["why"],
               f"without tracefs: {w}")
        t = row["paths"]["pidfd_thread"]
        want_thread = "pidfd_thread" if ver >= (6, 9) else None
        expect("doctor.pidfd_thread", t["path"] == want_thread
               and (t["path"] is not None) == (row["paths"].get("pidfd_thread_seen") == "yes"),
               f"PIDFD_THREAD {t} (kernel {kernel}; the lingering check: {row['paths'].get('pidfd_thread_seen')})")

    # doctor
    for check in ("doctor", "nobody.doctor", "doctor.tracefs"):
        j = doc(check)
        if not j:
            continue
        rows = {r["name"]: r for r in j["sources"]}
        paths = {p["feature"]: p for p in j.get("paths", [])}
        if check == "doctor":
            row["doctor"] = {n: (r["available"], r["why"]) for n, r in rows.items()}
            row["btf"] = j["btf"]
            it = rows["bpf_iter"]
            expect(check, it["available"] and rows["sock_diag"]["available"],
                   f"bpf_iter: {it['why']}; sock_diag: {rows['sock_diag']['why']}")
            doctor_paths(paths)
        elif check == "nobody.doctor":
            expect(check, not rows["bpf_iter"]["available"] and rows["sock_diag"]["available"],
                   f"as nobody: bpf_iter {rows['bpf_iter']}")
        else:
            w = paths.get("bpf_watch", {})
            row["paths"]["watch_tracefs"] = {k: w.get(k) for k in ("path", "fallback", "why")}
            expect(check, "tracepoint" in rows["bpf_watch"]["why"] and w.get("path") == "tracepoint",
                   f"with tracefs: {rows['bpf_watch']['why']}; paths: {w}")

    # watch
    for check in ("watch.tp_btf", "watch.tracepoint"):
        s = get(check)
        if not s:
            continue
        hook = re.search(r"\((tp_btf [^)]*|tracepoint [^)]*)\)", err(check))
        row["paths"][check] = hook.group(1) if hook else "?"
        want = "tp_btf" if check == "watch.tp_btf" else "tracepoint"
        if not row["paths"][check].startswith(want):
            bad(check + ".hook", f"attached {row['paths'][check]}, not {want}")
        events = [json.loads(l) for l in s[1].splitlines() if l.startswith("{")]
        pid = holders.get(check)
        expect(check, s[0] == 0 and events and str(events[0].get("pid")) == pid,
               f"rc={s[0]} events {s[1][:200]!r} (holder {pid}) stderr {err(check)[:200]!r}")
    s = get("nobody.watch")
    if s:
        expect("nobody.watch", s[0] != 0 and err("nobody.watch").strip(),
               f"watch as nobody: rc={s[0]} {err('nobody.watch')[:200]!r}")

    # leases
    for who, addr in (("", "127.0.0.10"), ("nobody.", "127.0.0.20")):
        a, l, r, after = (get(who + "lease." + x) for x in ("acquire", "list", "release", "after"))
        if not (a and l and r and after):
            continue
        why = []
        if a[0] != 0 or a[1].strip() != addr:
            why.append(f"acquire rc={a[0]} {a[1]!r} {err(who + 'lease.acquire')[:200]!r}")
        if addr not in l[1]:
            why.append(f"leases does not list {addr}: {l[1][:200]!r}")
        if r[0] != 0:
            why.append(f"release rc={r[0]} {err(who + 'lease.release')[:200]!r}")
        if addr in after[1]:
            why.append(f"still leased after release: {after[1][:200]!r}")
        expect(who + "lease", not why, "; ".join(why))

    if not done:
        bad("vm", "the VM did not run to the end (see console.log)")
    return row


PATH_NAMES = {"fd_walk": "fd walk", "iter_task_file": "iter/task_file", "iter_tcp": "iter/tcp",
              "tracepoint": "tracepoint", "tp_btf": "tp_btf", "pidfd_thread": "yes", None: "no"}


def short_why(why, limit=90):
    """The gist of a fallback's reason: the verifier's last words, not all of them."""
    why = " ".join((why or "").split())
    m = re.search(r"\(verifier: (.*?)\)(;|$)", why) or re.search(
        r"(unknown func \S+|invalid func \S+|EINVAL|tracefs is not mounted|Invalid argument)", why)
    if m and len(why) > limit:
        return m.group(1)
    return why if len(why) <= limit else why[: limit - 1] + "…"


def path_cell(p, key):
    got = p.get(key)
    if not isinstance(got, dict):
        return "?"
    name = PATH_NAMES.get(got["path"], got["path"])
    if got["path"] is None or got.get("fallback"):
        return f"{name} ({short_why(got['why'])})"
    return name


def where(r):
    if "native" in r:
        return "native, no VM (" + short_why(r["native"], 60) + ")"
    return f"VM ({r.get('accel', '?')})"


def table(path, matrix=None):
    rows = [json.loads(l) for l in open(path)]
    failed = False
    print()
    print("| kernel | where | time | passed | skipped | failed | owners via eBPF | iter/tcp | watch hook (no tracefs / tracefs) | PIDFD_THREAD |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "all" in r["skipped"]:
            print(f"| {r['name']} | - | - | - | skipped: {r['skipped']['all']} | - | - | - | - | - |")
            continue
        failed |= bool(r["failed"])
        p = r["paths"]
        sk = "; ".join(f"{k}: {v}" for k, v in r["skipped"].items()) or "0"
        fl = "; ".join(r["failed"]) or "0"
        print(f"| {r['name']} {r['kernel']} | {where(r)} | {r['seconds']}s | {len(r['passed'])} | "
              f"{len(r['skipped'])} ({sk}) | {len(r['failed'])} ({fl}) | {path_cell(p, 'owners')} | "
              f"{path_cell(p, 'listeners')} | {path_cell(p, 'watch')} / {path_cell(p, 'watch_tracefs')} | "
              f"{path_cell(p, 'pidfd_thread')} |")
    for r in rows:
        for k, v in r["failed"].items():
            print(f"FAILED {r['name']} {k}: {v}")
    if matrix:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        try:
            commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                                    capture_output=True, text=True).stdout.strip() or None
        except OSError:
            commit = None
        doc = {"schema": 1,
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
               "commit": commit, "rows": rows}
        with open(matrix, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        sys.exit(table(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None))
    print(json.dumps(judge(sys.argv[1], sys.argv[2])))
