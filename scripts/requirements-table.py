#!/usr/bin/env python3
"""Fills the "tested on" column of README.md's Requirements table from a
kernel-matrix run (target/vm-test/matrix.json, written by scripts/vm-test.sh).

    scripts/requirements-table.py [MATRIX [README]]
    scripts/vm-test.sh --update-readme [KERNEL...]     runs the matrix, then this

The table lies between `<!-- tested-on:begin -->` and `<!-- tested-on:end -->`.
Its first three columns (part, kernel, privileges) are written by hand and
kept; the fourth is rewritten from the run: for each part, the kernels whose
checks of that part passed, grouped by the eBPF path they took and with the
reason of each fallback, the kernels where a check was skipped (with why) or
failed; and a last line with the run's date, commit and kernels. A part no
row of the run covers says "not tested". Exit 1 if the markers are missing.
"""
import json
import re
import sys

BEGIN, END = "<!-- tested-on:begin -->", "<!-- tested-on:end -->"

# Each row of the table (found by a piece of its first cell): the checks of
# scripts/vm-test.sh that test it, and the doctor path it depends on.
PARTS = [
    ("the verdict", ["version", "free", "nobody.free", "plain", "nobody.plain", "group",
                     "dualstack", "lease", "nobody.lease"], None),
    ("`pidfd_getfd`", ["lingering", "pidfd.thread"], "pidfd_thread"),
    ("`bind_probe`", ["probe"], None),
    ("eBPF, all of it", ["doctor", "nobody.doctor", "nobody.bpf", "nobody.watch"], None),
    ("`iter/tcp`", ["bpf.lingering.reuseport", "doctor.listeners"], "listeners"),
    ("eBPF owners", ["bpf.plain", "bpf.lingering", "doctor.owners", "doctor.owners.agree"], "owners"),
    ("eBPF `watch`", ["watch.tp_btf", "watch.tracepoint", "watch.tp_btf.hook",
                      "watch.tracepoint.hook", "doctor.watch", "doctor.tracefs"], "watch"),
]

PATH_NAMES = {"fd_walk": "the fd walk", "iter_task_file": "`iter/task_file`",
              "iter_tcp": "`iter/tcp`", "tp_btf": "`tp_btf`", "tracepoint": "the tracepoint",
              "pidfd_thread": "with PIDFD_THREAD"}


def kernel_name(r):
    k = re.sub(r"-(amd64|arm64)$", "", r.get("kernel") or r["name"])
    if "native" in r:
        return f"{k} (this machine's, no VM)"
    return f"{k} ({'bookworm, arm64' if r['name'] == 'arm64' else r['name']})"


def owners_fallback(why):
    """Why the fd walk fell back, short: the verifier's first line and the
    kernel's age, as doctor --json gave them."""
    m = re.search(r"\(verifier: (.*?)\)(;|$)", why or "")
    older = re.search(r"this kernel \(([\d.]+)\) is older than 5\.17", why or "")
    if not m:
        return gist(why)
    out = f"the verifier rejects the fd walk: {m.group(1)}"
    if older:
        out += f"; {older.group(1)} predates `bpf_loop` (5.17)"
    return out


def gist(why, limit=80):
    why = " ".join((why or "").split())
    m = re.search(r"(unknown func \S+|invalid func \S+|EINVAL)", why)
    if m and len(why) > limit:
        pre = why.split(":")[0]
        return f"{pre}: {m.group(1)}" if len(pre) < 40 else m.group(1)
    return why if len(why) <= limit else why[: limit - 1] + "…"


def cell(rows, checks, path_key):
    groups = {}  # description -> kernels, in the order met
    for r in rows:
        if "all" in r["skipped"]:
            continue
        failed = [c for c in checks if c in r["failed"]]
        skipped = [c for c in checks if c in r["skipped"]]
        passed = [c for c in checks if c in r["passed"]]
        if failed:
            desc = "**failed** (" + ", ".join(failed) + ")"
        elif not passed and not skipped:
            continue
        else:
            p = r["paths"].get(path_key) if path_key else None
            if path_key == "watch":
                desc = "`tp_btf` without tracefs, the tracepoint with it"
            elif path_key == "pidfd_thread":
                if p and p["path"]:
                    desc = "with PIDFD_THREAD"
                else:
                    errno = re.search(r"\((E[A-Z]+)", (p or {}).get("why") or "")
                    desc = ("without PIDFD_THREAD (pidfd_open: " + (errno.group(1) if errno else "failed")
                            + "): a zombie leader's SO_REUSEPORT comes from `iter/tcp` or the bind probe")
                    skipped = []  # the skip is this: said once
            elif isinstance(p, dict) and p["path"]:
                desc = PATH_NAMES.get(p["path"], p["path"])
                if p.get("fallback"):
                    why = owners_fallback(p["why"]) if path_key == "owners" else gist(p["why"])
                    desc += " (" + why + ")"
            else:
                desc = "passed"
            if skipped:
                desc += "; skipped " + ", ".join(f"{c}: {gist(r['skipped'][c], 60)}" for c in skipped)
        groups.setdefault(desc, []).append(kernel_name(r))
    if not groups:
        return "not tested"
    return "; ".join(f"{', '.join(ks)}: {d}" for d, ks in groups.items())


def main():
    matrix = sys.argv[1] if len(sys.argv) > 1 else "target/vm-test/matrix.json"
    readme = sys.argv[2] if len(sys.argv) > 2 else "README.md"
    doc = json.load(open(matrix))
    rows = doc["rows"]
    text = open(readme).read()
    if BEGIN not in text or END not in text:
        print(f"requirements-table: no {BEGIN} ... {END} in {readme}", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    body, tail = rest.split(END, 1)
    out = []
    for line in body.strip("\n").splitlines():
        if not line.startswith("|"):
            continue  # the old run line: rewritten below
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        first = cells[0]
        if first == "part":
            out.append("| part | kernel | privileges | tested on |")
            continue
        if set(first) <= {"-"}:
            out.append("|---|---|---|---|")
            continue
        part = next((p for p in PARTS if p[0] in first), None)
        tested = cell(rows, part[1], part[2]) if part else "not tested"
        out.append("| " + " | ".join(cells[:3] + [tested]) + " |")
    ran = [r for r in rows if "all" not in r["skipped"]]
    counts = "; ".join(f"{kernel_name(r)}: {len(r['passed'])} passed, {len(r['skipped'])} skipped, "
                       f"{len(r['failed'])} failed" for r in ran)
    skipped = "".join(f"; {r['name']} not run: {r['skipped']['all']}" for r in rows if "all" in r["skipped"])
    out.append("")
    out.append(f"\"tested on\" is generated by `scripts/vm-test.sh --update-readme` from its run of "
               f"{doc['date']} at {doc.get('commit') or 'an uncommitted tree'} "
               f"(Debian's kernels in qemu, x86-64 and arm64, this machine's own natively; the checks are listed in "
               f"the script's header, each kernel's paths come from `sockcheck doctor --json`): "
               f"{counts}{skipped}.")
    open(readme, "w").write(head + BEGIN + "\n" + "\n".join(out) + "\n" + END + tail)
    return 0


if __name__ == "__main__":
    sys.exit(main())
