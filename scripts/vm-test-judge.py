#!/usr/bin/env python3
"""Judges one VM's console log for scripts/vm-test.sh, and prints the table.

    vm-test-judge.py KERNEL DIR      one JSON line: the kernel's results
    vm-test-judge.py --table FILE    the table of those lines; exit 1 on a failure

DIR holds console.log (sections `@@@ begin NAME` ... `@@@ end NAME rc=N`
written by the VM's init), seconds, or skipped (why the kernel was not booted).
"""
import json
import re
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
            row["paths"]["pidfd_thread"] = "yes"
            ok("pidfd.thread")
        else:
            row["paths"]["pidfd_thread"] = "no"
            tried = "; ".join(ev.get("tried", []))[:160]
            if ver < (6, 9):
                skip("pidfd.thread", f"PIDFD_THREAD is 6.9+ ({tried})")
            else:
                bad("pidfd.thread", f"evidence {ev['source']}: {ev['detail']} ({tried})")
    shape("dualstack", "foreign", "dualstack")

    # eBPF
    def trace_path(check):
        e = err(check)
        if "iter/task: failed, iter/task_file instead" in e:
            return "iter/task_file"
        if "iter/task: attach and iterate" in e:
            return "fd walk (iter/task)"
        if "iter/task_file: attach and iterate" in e:
            return "iter/task_file"
        return None

    for check, holder in (("bpf.plain", "plain"), ("bpf.lingering", "lingering")):
        j = shape(check, "busy", holder,
                  lambda j: [] if j["sources"]["bpf"]["status"] == "used"
                  else [f"bpf {j['sources']['bpf']}"])
        p = trace_path(check)
        if p:
            row["paths"].setdefault("owners", p)
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

    # doctor
    for check in ("doctor", "nobody.doctor", "doctor.tracefs"):
        j = doc(check)
        if not j:
            continue
        rows = {r["name"]: r for r in j["sources"]}
        if check == "doctor":
            row["doctor"] = {n: (r["available"], r["why"]) for n, r in rows.items()}
            row["btf"] = j["btf"]
            it, wt = rows["bpf_iter"], rows["bpf_watch"]
            expect(check, it["available"] and rows["sock_diag"]["available"],
                   f"bpf_iter: {it['why']}; sock_diag: {rows['sock_diag']['why']}")
            row["paths"]["doctor_watch"] = wt["why"]
        elif check == "nobody.doctor":
            expect(check, not rows["bpf_iter"]["available"] and rows["sock_diag"]["available"],
                   f"as nobody: bpf_iter {rows['bpf_iter']}")
        else:
            expect(check, "tracepoint" in rows["bpf_watch"]["why"],
                   f"with tracefs: {rows['bpf_watch']['why']}")

    # watch
    for check in ("watch.tp_btf", "watch.tracepoint"):
        s = get(check)
        if not s:
            continue
        hook = re.search(r"\((tp_btf [^)]*|tracepoint [^)]*)\)", err(check))
        row["paths"][check] = hook.group(1) if hook else "?"
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


def yn(r, source):
    got = r.get("doctor", {}).get(source)
    return "?" if got is None else ("yes" if got[0] else "no: " + got[1][:60])


def table(path):
    rows = [json.loads(l) for l in open(path)]
    failed = False
    print()
    print("| kernel | time | passed | skipped | failed | doctor: bpf_iter, bpf_watch, pidfd_getfd | owners via eBPF | watch hook (no tracefs / tracefs) | pidfd thread |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "all" in r["skipped"]:
            print(f"| {r['name']} | - | - | skipped: {r['skipped']['all']} | - | - | - | - | - |")
            continue
        failed |= bool(r["failed"])
        p = r["paths"]
        sk = "; ".join(f"{k}: {v}" for k, v in r["skipped"].items()) or "0"
        fl = "; ".join(r["failed"]) or "0"
        print(f"| {r['name']} {r['kernel']} | {r['seconds']}s {r.get('accel', '')} | {len(r['passed'])} | "
              f"{len(r['skipped'])} ({sk}) | {len(r['failed'])} ({fl}) | {yn(r, 'bpf_iter')}, {yn(r, 'bpf_watch')}, {yn(r, 'pidfd_getfd')} | {p.get('owners', '?')} | "
              f"{p.get('watch.tp_btf', '?')} / {p.get('watch.tracepoint', '?')} | {p.get('pidfd_thread', '?')} |")
    for r in rows:
        for k, v in r["failed"].items():
            print(f"FAILED {r['name']} {k}: {v}")
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1] == "--table":
        sys.exit(table(sys.argv[2]))
    print(json.dumps(judge(sys.argv[1], sys.argv[2])))
