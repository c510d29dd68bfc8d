#!/usr/bin/env bash
# Benchmark sockcheck against ss, lsof and fuser under a realistic load.
#
#   scripts/bench.sh            full mode: 350 processes, ~90,000 open fds,
#                               100 listeners, 2,000 established connections,
#                               2,000 TIME_WAIT; 200/15 runs (fast/slow tools).
#                               Takes about 4 minutes on 2 cores.
#   scripts/bench.sh --quick    60 processes, ~15,000 fds, few runs: ~15 s.
#   scripts/bench.sh --leases-only
#                               only the lease stage (below): about 2 minutes.
#
# Options (each also as an environment variable):
#   --quick                       small load and few runs
#   --no-build                    use target/release as it is (BENCH_NO_BUILD=1)
#   --procs N                     load processes              (BENCH_PROCS, 350)
#   --small-procs N               second, smaller load size   (BENCH_SMALL_PROCS, 50)
#   --total-fds N                 open fds over --procs       (BENCH_TOTAL_FDS, 90000)
#   --listeners N                 TCP listeners in the load   (BENCH_LISTENERS, 100)
#   --established N               established connections     (BENCH_ESTABLISHED, 2000)
#   --timewait N                  TIME_WAIT sockets           (BENCH_TIMEWAIT, 2000)
#   --runs N / --slow-runs N      hyperfine runs for sockcheck and ss -Htln / for
#                                 ss -p, lsof, fuser  (BENCH_RUNS 200, BENCH_SLOW_RUNS 15)
#   --warmup N                    hyperfine warmup runs       (BENCH_WARMUP, 5)
#   --out DIR                     results                     (BENCH_OUT, target/bench)
#   --leases-only                 run only the lease stage    (BENCH_LEASES_ONLY=1)
#   --no-leases                   skip the lease stage        (BENCH_NO_LEASES=1)
#   BENCH_LEASES_ARGS             arguments of scripts/bench-leases.py stage
#                                 (default --agent-leases 8000; see its --help)
#
# Each load process holds the same number of fds (total-fds / procs), so the
# small load has proportionally fewer fds too.
#
# Scenarios (test-only addresses and ports; the script refuses to start if
# anything already uses them):
#   free       127.99.0.1:47900  nothing there
#   busy       127.99.0.2:47901  sockcheck-holder group (4 SO_REUSEPORT listeners)
#   lingering  127.99.0.3:47902  sockcheck-holder lingering (zombie leader, 2 workers)
# The load uses 127.98.0.0/16 (listeners, port 20000), 127.97.0.0/16
# (TIME_WAIT) and 127.96.0.0/16 (clients, ports 21000-25999). Only loopback.
#
# Stages: no load (as root: busy with the default path and with --bpf
# always, the fixed cost of eBPF), the small load, the full load, and the
# full load plus as many processes again without TCP sockets; then, with the
# load gone, the lease stage (scripts/bench-leases.py, which runs
# scripts/bench-storm.mjs with node): 16 acquire/release loops against 16
# check loops, 65,536 existing leases, a /16 pool with 60,000 addresses
# held, a waiting acquire after a release, and 8 CI shards x 15 tests
# through the npm package against Harper 0.6.2's pool. It uses
# 127.90.0.0/16-127.93.0.0/16 and ports 47960-47969, private state
# directories, and writes leases-budget.txt, leases.json and storm.json to
# OUT/leases; its budget lines are appended to the budget. Last, the scale
# stage (scripts/bench-scale.py): list with 20,000 listeners against
# ss -tlnp, and scan -q of a /16 on 64 ports (127.78.0.0/16, 47810-47874).
#
# Tools timed (hyperfine -N, medians): sockcheck --ports P ADDR, ss -tlnp,
# ss -Htln (no -p), lsof -nP -iTCP:P -sTCP:LISTEN, fuser -n tcp P; for busy
# also sockcheck and ss -tlnp as nobody (hyperfine itself is started through
# setpriv --reuid=65534 --regid=65534 --clear-groups, so no setpriv exec is
# timed). Peak RSS: /usr/bin/time -f %M, the largest of 5 runs. "names holder"
# says whether the tool's output contains the holder's pid.
#
# Needs root (lingering holder, setpriv, installing hyperfine/time with apt).
# Writes hyperfine JSON, the table (table.md), the budget (budget.txt), the
# machine and load description (env.txt), TIME_WAIT counts (timewait.txt),
# RSS (rss.txt) and holder checks (owners.txt) to the output directory.
# Exits non-zero only on a real error (a tool missing, a scenario not in
# place, a failed build); a missed budget line is printed as MISS and does
# not fail the run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
QUICK=0
NO_BUILD=${BENCH_NO_BUILD:-0}
PROCS=${BENCH_PROCS:-}
SMALL_PROCS=${BENCH_SMALL_PROCS:-}
TOTAL_FDS=${BENCH_TOTAL_FDS:-}
LISTENERS=${BENCH_LISTENERS:-}
ESTABLISHED=${BENCH_ESTABLISHED:-}
TIMEWAIT=${BENCH_TIMEWAIT:-}
RUNS=${BENCH_RUNS:-}
SLOW_RUNS=${BENCH_SLOW_RUNS:-}
WARMUP=${BENCH_WARMUP:-}
OUT=${BENCH_OUT:-$ROOT/target/bench}
LEASES_ONLY=${BENCH_LEASES_ONLY:-0}
NO_LEASES=${BENCH_NO_LEASES:-0}

die() { echo "bench: $*" >&2; exit 2; }
need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --no-build) NO_BUILD=1 ;;
        --procs) need_value "$@"; PROCS=$2; shift ;;
        --small-procs) need_value "$@"; SMALL_PROCS=$2; shift ;;
        --total-fds) need_value "$@"; TOTAL_FDS=$2; shift ;;
        --listeners) need_value "$@"; LISTENERS=$2; shift ;;
        --established) need_value "$@"; ESTABLISHED=$2; shift ;;
        --timewait) need_value "$@"; TIMEWAIT=$2; shift ;;
        --runs) need_value "$@"; RUNS=$2; shift ;;
        --slow-runs) need_value "$@"; SLOW_RUNS=$2; shift ;;
        --warmup) need_value "$@"; WARMUP=$2; shift ;;
        --out) need_value "$@"; OUT=$2; shift ;;
        --leases-only) LEASES_ONLY=1 ;;
        --no-leases) NO_LEASES=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done
if [[ $QUICK == 1 ]]; then
    : "${PROCS:=60}" "${SMALL_PROCS:=20}" "${TOTAL_FDS:=15000}" "${LISTENERS:=30}"
    : "${ESTABLISHED:=300}" "${TIMEWAIT:=300}" "${RUNS:=20}" "${SLOW_RUNS:=3}" "${WARMUP:=2}"
else
    : "${PROCS:=350}" "${SMALL_PROCS:=50}" "${TOTAL_FDS:=90000}" "${LISTENERS:=100}"
    : "${ESTABLISHED:=2000}" "${TIMEWAIT:=2000}" "${RUNS:=200}" "${SLOW_RUNS:=15}" "${WARMUP:=5}"
fi
for v in PROCS SMALL_PROCS TOTAL_FDS LISTENERS ESTABLISHED TIMEWAIT RUNS SLOW_RUNS WARMUP; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a number, got '${!v}'"
done
((PROCS >= 1 && PROCS <= 5000)) || die "--procs must be 1..5000"
((SMALL_PROCS >= 1 && SMALL_PROCS <= PROCS)) || die "--small-procs must be 1..--procs"
((RUNS >= 2 && SLOW_RUNS >= 2)) || die "--runs and --slow-runs must be at least 2"
FDS_PER_PROC=$(( (TOTAL_FDS + PROCS - 1) / PROCS ))
((FDS_PER_PROC >= 16)) || FDS_PER_PROC=16
((FDS_PER_PROC <= 100000)) || die "too many fds per process ($FDS_PER_PROC)"
((TIMEWAIT <= 100000 && ESTABLISHED <= 60000)) || die "--timewait/--established too large"

[[ $(id -u) == 0 ]] || die "run as root (lingering holder, setpriv, apt-get)"

# The scenarios.
NET=99
FREE_ADDR=127.$NET.0.1  FREE_PORT=47900
BUSY_ADDR=127.$NET.0.2  BUSY_PORT=47901
LING_ADDR=127.$NET.0.3  LING_PORT=47902
LOAD_NET=98  # 127.98 listeners, 127.97 TIME_WAIT, 127.96 clients

# --- tools -------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null || die "$1 is missing and there is no apt-get to install it"
    if [[ $APT_UPDATED == 0 ]]; then
        echo "bench: apt-get update" >&2
        apt-get update -qq >&2 || die "apt-get update failed"
        APT_UPDATED=1
    fi
    echo "bench: apt-get install -y $1" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >&2 || die "could not install $1"
}
if [[ $LEASES_ONLY != 1 ]]; then
    command -v hyperfine >/dev/null || apt_install hyperfine
    [[ -x /usr/bin/time ]] || apt_install time
    for tool in lsof fuser; do
        command -v "$tool" >/dev/null || die "$tool is required"
    done
    hyperfine -N --help >/dev/null 2>&1 || die "hyperfine is too old (needs -N, 1.13+)"
fi
for tool in ss setpriv; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3) || die "python3 is required"
if [[ $NO_LEASES != 1 ]]; then
    command -v node >/dev/null || die "node is required for the lease stage's CI storm (or --no-leases)"
fi

SOCKCHECK=$ROOT/target/release/sockcheck
HOLDER=$ROOT/target/release/examples/sockcheck-holder
LOADGEN=$ROOT/scripts/bench-load.py
if [[ $NO_BUILD != 1 ]]; then
    echo "bench: cargo build --release" >&2
    (cd "$ROOT" && cargo build --release --bin sockcheck --example sockcheck-holder) >&2 || die "cargo build failed"
fi
[[ -x $SOCKCHECK && -x $HOLDER ]] || die "no $SOCKCHECK or $HOLDER (build first)"
NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups)
"${NOBODY[@]}" "$SOCKCHECK" --help >/dev/null 2>&1 ||
    die "nobody (65534) cannot run $SOCKCHECK (directory permissions?)"

# Enough fds for one load process and for the TIME_WAIT maker: raise the soft
# limit (and the hard one, if it is lower and we may).
NOFILE=$((FDS_PER_PROC + 1024))
((NOFILE >= 4096)) || NOFILE=4096
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((hard < NOFILE)); then
    ulimit -Hn "$NOFILE" 2>/dev/null || die "cannot raise RLIMIT_NOFILE to $NOFILE (hard limit $hard)"
fi
ulimit -Sn "$NOFILE"

mkdir -p "$OUT"
[[ $LEASES_ONLY == 1 ]] || rm -f "$OUT"/*.json "$OUT"/*.md "$OUT"/*.txt
rm -rf "$OUT/leases"
WORK=$(mktemp -d /tmp/sockcheck-bench.XXXXXX)
chmod 711 "$WORK"
mkdir "$WORK/nobody"
chown 65534:65534 "$WORK/nobody"

# --- cleanup: every process this script starts, by pid ----------------------
HOLDER_PIDS=()
LOAD_PID=
LOAD_PIDFILE=
LEASE_PID=
EXTRA_PID=
EXTRA_PIDFILE=
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local pids=()
    if [[ -n $LOAD_PID ]]; then
        # The generator leads its own process group; its holders die with it.
        kill -TERM -- "-$LOAD_PID" 2>/dev/null
        [[ -s $LOAD_PIDFILE ]] && mapfile -t pids <"$LOAD_PIDFILE"
    fi
    if [[ -n $EXTRA_PID ]]; then
        kill -TERM -- "-$EXTRA_PID" 2>/dev/null
        [[ -s $EXTRA_PIDFILE ]] && mapfile -t -O "${#pids[@]}" pids <"$EXTRA_PIDFILE"
        pids+=("$EXTRA_PID")
    fi
    for pid in "${HOLDER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
    pids+=("${HOLDER_PIDS[@]}")
    if [[ -n $LEASE_PID ]]; then
        # The lease stage ends the processes it started on TERM.
        kill -TERM "$LEASE_PID" 2>/dev/null
        pids+=("$LEASE_PID")
    fi
    [[ -n $LOAD_PID ]] && pids+=("$LOAD_PID")
    local deadline=$((SECONDS + 5)) alive
    while :; do
        alive=()
        for pid in "${pids[@]}"; do
            [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && alive+=("$pid")
        done
        ((${#alive[@]} == 0 || SECONDS >= deadline)) && break
        sleep 0.1
    done
    for pid in "${alive[@]}"; do kill -KILL "$pid" 2>/dev/null; done
    [[ -n $LOAD_PID ]] && kill -KILL -- "-$LOAD_PID" 2>/dev/null
    wait 2>/dev/null
    HOLDER_PIDS=()
    LOAD_PID=
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- preflight: the test addresses must be unused ---------------------------
# (TIME_WAIT left by an earlier run is harmless: it is not counted.)
in_use=$(ss -Htan exclude time-wait | awk -v n="127.$NET.0." -v lo="$FREE_PORT" -v hi="$LING_PORT" \
    -v a="127.$LOAD_NET." -v b="127.$((LOAD_NET - 1))." -v c="127.$((LOAD_NET - 2))." '
    { split($4, hp, ":"); port = hp[length(hp)] + 0 }
    (index($4, n) == 1 && port >= lo && port <= hi) || index($4, a) == 1 ||
    index($4, b) == 1 || index($4, c) == 1 { if (++k <= 5) print }')
[[ -z $in_use ]] || die "test addresses already in use (an earlier run?):
$in_use"

# --- the lease stage ----------------------------------------------------------
# scripts/bench-leases.py measures and prints its budget lines (PASS/MISS)
# to stdout; progress goes to stderr.
lease_stage() {
    local dir=$OUT/leases
    mkdir -p "$dir"
    {
        echo "sockcheck $("$SOCKCHECK" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src npm 2>/dev/null || echo ', src or npm modified'))"
        echo "node $(node --version); nproc $(nproc); kernel $(uname -r)"
        echo "loadavg_before $(cut -d' ' -f1-3 /proc/loadavg)"
    } >"$dir/env.txt"
    echo "bench: lease stage" >&2
    "$PY" "$ROOT/scripts/bench-leases.py" stage --bin "$SOCKCHECK" --holder "$HOLDER" --out "$dir" \
        ${BENCH_LEASES_ARGS:---agent-leases 8000} >"$dir/stage.log" &
    LEASE_PID=$!
    wait "$LEASE_PID" || die "lease stage failed: $(tail -5 "$dir/stage.log")"
    LEASE_PID=
    echo "loadavg_after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$dir/env.txt"
}

if [[ $LEASES_ONLY == 1 ]]; then
    START=$SECONDS
    if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
        echo "bench: warning: load average $(cut -d' ' -f1 /proc/loadavg): something else is running; timings will be noisy" >&2
    fi
    lease_stage
    cat "$OUT/leases/leases-budget.txt"
    echo
    cat "$OUT/leases/env.txt"
    echo "bench: done in $((SECONDS - START)) s; results in $OUT/leases" >&2
    exit 0
fi

# --- load ---------------------------------------------------------------------
TW_ROUND=$((RANDOM % 200))
TW_LAST=-1000
# TIME_WAIT lasts 60 s: top it up when the last batch is 40 s old, so every
# measurement sees between 1x and 2x --timewait of them (logged per run).
refresh_timewait() {
    ((TIMEWAIT > 0)) || return 0
    ((SECONDS - TW_LAST >= 40)) || return 0
    TW_LAST=$SECONDS
    ((TW_ROUND < 250)) || TW_ROUND=0
    "$PY" "$LOADGEN" timewait --count "$TIMEWAIT" --round "$TW_ROUND" --net "$LOAD_NET" >/dev/null ||
        die "could not create TIME_WAIT sockets"
    TW_ROUND=$((TW_ROUND + 1))
}

start_load() {  # procs
    local procs=$1 listeners=$LISTENERS established=$ESTABLISHED
    ((listeners <= procs)) || listeners=$procs
    ((listeners > 0)) || established=0
    LOAD_PIDFILE=$WORK/load-$procs.pids
    "$PY" "$LOADGEN" hold --procs "$procs" --fds "$FDS_PER_PROC" --listeners "$listeners" \
        --established "$established" --pidfile "$LOAD_PIDFILE" --net "$LOAD_NET" \
        >"$WORK/load-$procs.out" 2>&1 &
    LOAD_PID=$!
    local deadline=$((SECONDS + 120))
    until grep -q '^ready' "$WORK/load-$procs.out"; do
        kill -0 "$LOAD_PID" 2>/dev/null || die "load generator failed: $(cat "$WORK/load-$procs.out")"
        ((SECONDS < deadline)) || die "load generator not ready after 120 s"
        sleep 0.1
    done
    echo "bench: load: $(cat "$WORK/load-$procs.out")" >&2
}

stop_group() {  # leader-pid pidfile: TERM the group, then KILL what stays
    kill -TERM -- "-$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    local pid deadline=$((SECONDS + 5))
    while read -r pid; do
        while kill -0 "$pid" 2>/dev/null; do
            if ((SECONDS >= deadline)); then kill -KILL "$pid" 2>/dev/null || true; fi
            sleep 0.05
        done
    done <"$2"
}

stop_load() {
    [[ -n $LOAD_PID ]] || return 0
    stop_group "$LOAD_PID" "$LOAD_PIDFILE"
    LOAD_PID=
}

# A second load of processes that hold fds but no TCP socket: the same
# sockets, many more processes.
EXTRA_PID=
EXTRA_PIDFILE=
start_extra() {  # procs
    EXTRA_PIDFILE=$WORK/extra-$1.pids
    "$PY" "$LOADGEN" hold --procs "$1" --fds "$FDS_PER_PROC" --listeners 0 --established 0 \
        --pidfile "$EXTRA_PIDFILE" --net "$LOAD_NET" >"$WORK/extra-$1.out" 2>&1 &
    EXTRA_PID=$!
    local deadline=$((SECONDS + 120))
    until grep -q '^ready' "$WORK/extra-$1.out"; do
        kill -0 "$EXTRA_PID" 2>/dev/null || die "extra load failed: $(cat "$WORK/extra-$1.out")"
        ((SECONDS < deadline)) || die "extra load not ready after 120 s"
        sleep 0.1
    done
}

stop_extra() {
    [[ -n $EXTRA_PID ]] || return 0
    stop_group "$EXTRA_PID" "$EXTRA_PIDFILE"
    EXTRA_PID=
}

start_holder() {  # shape addr port n
    local out=$WORK/holder-$1.out
    "$HOLDER" "$@" >"$out" 2>&1 &
    HOLDER_PIDS+=($!)
    local deadline=$((SECONDS + 10))
    until grep -q '^ready' "$out"; do
        ((SECONDS < deadline)) || die "sockcheck-holder $* did not start: $(cat "$out")"
        sleep 0.05
    done
    echo "bench: holder $*: $(cat "$out")" >&2
}

# --- checks that each scenario is what it claims to be ------------------------
check_scenario() {  # name expected-verdict port addr [as-nobody]
    local name=$1 want=$2 port=$3 addr=$4 prefix=()
    [[ ${5:-} == nobody ]] && prefix=("${NOBODY[@]}")
    local rc=0
    "${prefix[@]}" "$SOCKCHECK" --json --ports "$port" "$addr" >"$WORK/check.json" || rc=$?
    "$PY" - "$name" "$want" "$rc" "${HOLDER_PIDS[*]}" "$WORK/check.json" <<'EOF' ||
import json, sys
name, want, rc, holders = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].split()
doc = json.load(open(sys.argv[5]))
a = doc["addresses"][0]
ok = a["verdict"] == want and rc == (0 if want == "free" else 1)
if want == "busy":
    owners = [o.get("pid") for l in a["ports"][0]["listeners"] for o in l["owners"]]
    ok = ok and len(a["ports"][0]["listeners"]) >= 2
    ok = ok and (any(str(p) in holders for p in owners) or any(o is None for o in owners))
if not ok:
    print(f"bench: scenario {name}: verdict {a['verdict']} exit {rc}, expected {want}", file=sys.stderr)
    print(json.dumps(a, indent=1)[:3000], file=sys.stderr)
    sys.exit(1)
EOF
        die "scenario $name is not in place"
}

# --- measuring ------------------------------------------------------------------
# hf NAME RUNS LABEL CMD [LABEL CMD ...]
# With HF_NOBODY=1, hyperfine itself runs as nobody (through setpriv), so the
# commands run unprivileged without paying for a setpriv exec each.
hf() {
    local name=$1 runs=$2 warm=$WARMUP
    shift 2
    ((runs > 20)) || warm=$((warm < 2 ? warm : 2))
    local args=()
    while [[ $# -gt 0 ]]; do args+=(-n "$1" "$2"); shift 2; done
    refresh_timewait
    echo "$name time_wait=$(ss -Htn state time-wait | wc -l)" >>"$OUT/timewait.txt"
    echo "bench: hyperfine $name ($runs runs)" >&2
    local json=$OUT/$name.json prefix=()
    if [[ ${HF_NOBODY:-0} == 1 ]]; then
        json=$WORK/nobody/$name.json
        prefix=("${NOBODY[@]}")
    fi
    (cd / && "${prefix[@]}" hyperfine -N -i --style basic --warmup "$warm" --runs "$runs" \
        --export-json "$json" "${args[@]}") >"$WORK/$name.log" 2>&1 ||
        die "hyperfine $name failed: $(tail -5 "$WORK/$name.log")"
    [[ $json == "$OUT/$name.json" ]] || cp "$json" "$OUT/$name.json"
}

# Whether a tool's output names the holder's pid: owners.txt gets "LABEL yes|no".
names_holder() {  # label pid cmd...
    local label=$1 pid=$2 out
    shift 2
    out=$("$@" 2>&1) || true
    if grep -qw -- "$pid" <<<"$out"; then echo "$label yes"; else echo "$label no"; fi >>"$OUT/owners.txt"
}

# Peak RSS (KiB) of a command: the maximum of /usr/bin/time's %M over 5 runs.
rss() {  # label cmd...
    local label=$1 max=0 kb
    shift
    for _ in 1 2 3 4 5; do
        /usr/bin/time -f %M -o "$WORK/rss" "$@" >/dev/null 2>&1 || true
        kb=$(tail -1 "$WORK/rss")
        [[ $kb =~ ^[0-9]+$ ]] || die "no RSS from /usr/bin/time for $label: $(cat "$WORK/rss")"
        ((kb > max)) && max=$kb
    done
    echo "$label $max" >>"$OUT/rss.txt"
}

snapshot_env() {  # label
    {
        echo "[$1]"
        echo "processes $(find /proc -maxdepth 1 -name '[0-9]*' | wc -l)"
        echo "fd_entries $("$PY" -c '
import os
n = 0
for p in os.listdir("/proc"):
    if p.isdigit():
        try: n += len(os.listdir(f"/proc/{p}/fd"))
        except OSError: pass
print(n)')"
        echo "file_handles $(cut -f1 /proc/sys/fs/file-nr)"
        echo "tcp_listeners $(ss -Htln | wc -l)"
        echo "tcp_established $(ss -Htn state established | wc -l)"
        echo "tcp_time_wait $(ss -Htn state time-wait | wc -l)"
    } >>"$OUT/env.txt"
}

SC() { echo "$SOCKCHECK --ports $1 $2"; }
NB="setpriv --reuid=65534 --regid=65534 --clear-groups"

{
    echo "nproc $(nproc)"
    echo "kernel $(uname -r)"
    echo "memory_kib $(awk '/^MemTotal/ {print $2}' /proc/meminfo)"
    echo "cpu $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "sockcheck $("$SOCKCHECK" --version 2>/dev/null || echo '?') ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- src 2>/dev/null || echo ', src modified'))"
    echo "tools $(hyperfine --version); $(ss -V 2>&1 | head -1); lsof $(lsof -v 2>&1 | awk '/revision:/ {print $2; exit}'); $(fuser -V 2>&1 | head -1)"
    echo "mode $([[ $QUICK == 1 ]] && echo quick || echo full) procs=$PROCS small_procs=$SMALL_PROCS fds_per_proc=$FDS_PER_PROC listeners=$LISTENERS established=$ESTABLISHED timewait=$TIMEWAIT runs=$RUNS slow_runs=$SLOW_RUNS warmup=$WARMUP"
} >"$OUT/env.txt"

echo "loadavg_before $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
if awk '{exit !($1 > 0.5)}' /proc/loadavg; then
    echo "bench: warning: load average $(cut -d' ' -f1 /proc/loadavg): something else is running; timings will be noisy" >&2
fi

START=$SECONDS
start_holder group "$BUSY_ADDR" "$BUSY_PORT" 4
GROUP_PID=${HOLDER_PIDS[-1]}
start_holder lingering "$LING_ADDR" "$LING_PORT" 2
LING_PID=${HOLDER_PIDS[-1]}

# No load: the fixed cost of eBPF (issue 10: --bpf always at most 25 ms
# above the default path on a busy address of an idle machine).
snapshot_env "no load"
check_scenario busy busy "$BUSY_PORT" "$BUSY_ADDR"
if [[ $(id -u) == 0 ]]; then
    hf idle-busy "$RUNS" \
        "idle/busy/sockcheck" "$(SC "$BUSY_PORT" "$BUSY_ADDR")" \
        "idle/busy/sockcheck --bpf always" "$SOCKCHECK --bpf always --ports $BUSY_PORT $BUSY_ADDR"
    rss idle/busy "$SOCKCHECK" --ports "$BUSY_PORT" "$BUSY_ADDR"
    rss "idle/busy --bpf always" "$SOCKCHECK" --bpf always --ports "$BUSY_PORT" "$BUSY_ADDR"
fi

# Small load: the free-address check (and the busy one, for contrast).
start_load "$SMALL_PROCS"
refresh_timewait
snapshot_env "small load"
check_scenario free free "$FREE_PORT" "$FREE_ADDR"
check_scenario busy busy "$BUSY_PORT" "$BUSY_ADDR"
hf small-free "$RUNS" \
    "small/free/sockcheck" "$(SC "$FREE_PORT" "$FREE_ADDR")" \
    "small/free/ss -Htln" "ss -Htln 'sport = :$FREE_PORT'"
hf small-busy "$RUNS" \
    "small/busy/sockcheck" "$(SC "$BUSY_PORT" "$BUSY_ADDR")"
rss small/free "$SOCKCHECK" --ports "$FREE_PORT" "$FREE_ADDR"
rss small/busy "$SOCKCHECK" --ports "$BUSY_PORT" "$BUSY_ADDR"
stop_load

# Full load: every tool, every scenario.
start_load "$PROCS"
refresh_timewait
snapshot_env "full load"
check_scenario free free "$FREE_PORT" "$FREE_ADDR"
check_scenario busy busy "$BUSY_PORT" "$BUSY_ADDR"
check_scenario lingering busy "$LING_PORT" "$LING_ADDR"
check_scenario busy-nobody busy "$BUSY_PORT" "$BUSY_ADDR" nobody
for pair in "free $FREE_PORT $FREE_ADDR" "busy $BUSY_PORT $BUSY_ADDR" "lingering $LING_PORT $LING_ADDR"; do
    read -r name port addr <<<"$pair"
    hf "full-$name-fast" "$RUNS" \
        "full/$name/sockcheck" "$(SC "$port" "$addr")" \
        "full/$name/ss -Htln" "ss -Htln 'sport = :$port'"
    hf "full-$name-slow" "$SLOW_RUNS" \
        "full/$name/ss -tlnp" "ss -tlnp 'sport = :$port'" \
        "full/$name/lsof" "lsof -nP -iTCP:$port -sTCP:LISTEN" \
        "full/$name/fuser" "fuser -n tcp $port"
    rss "full/$name" "$SOCKCHECK" --ports "$port" "$addr"
    [[ $name == busy ]] && pid=$GROUP_PID
    [[ $name == lingering ]] && pid=$LING_PID
    if [[ $name != free ]]; then
        # Opt-in eBPF: owners from iter/task_file, the kernel's reuseport bit.
        if [[ $(id -u) == 0 ]]; then
            hf "full-$name-bpf" "$SLOW_RUNS" \
                "full/$name/sockcheck --bpf always" "$SOCKCHECK --bpf always --ports $port $addr"
            rss "full/$name --bpf always" "$SOCKCHECK" --bpf always --ports "$port" "$addr"
        fi
        names_holder "full/$name/sockcheck" "$pid" "$SOCKCHECK" --ports "$port" "$addr"
        names_holder "full/$name/ss -tlnp" "$pid" ss -tlnp "sport = :$port"
        names_holder "full/$name/lsof" "$pid" lsof -nP "-iTCP:$port" -sTCP:LISTEN
        names_holder "full/$name/fuser" "$pid" fuser -n tcp "$port"
    fi
done
HF_NOBODY=1 hf full-busy-nobody "$RUNS" \
    "full/busy/sockcheck (nobody)" "$(SC "$BUSY_PORT" "$BUSY_ADDR")" \
    "full/busy/ss -tlnp (nobody)" "ss -tlnp 'sport = :$BUSY_PORT'"
rss "full/busy (nobody)" "${NOBODY[@]}" "$SOCKCHECK" --ports "$BUSY_PORT" "$BUSY_ADDR"
# Same sockets, twice the processes and fds: the free check must not notice.
# Both measurements run back to back (no TIME_WAIT top-up in between).
TW_LAST=$SECONDS
hf procs-free-base "$RUNS" "procs/free/sockcheck" "$(SC "$FREE_PORT" "$FREE_ADDR")"
start_extra "$PROCS"
snapshot_env "full load + $PROCS processes without TCP sockets"
hf procs-free-more "$RUNS" "procs/free/sockcheck (+$PROCS processes)" "$(SC "$FREE_PORT" "$FREE_ADDR")"
stop_extra
snapshot_env "full load, end"
echo "loadavg_after $(cut -d' ' -f1-3 /proc/loadavg)" >>"$OUT/env.txt"
stop_load

# The lease stage, with the load gone (its budget lines join the budget).
[[ $NO_LEASES == 1 ]] || lease_stage

# Issue 17's scale lines (list at 20,000 listeners against ss -tlnp in the
# same run; scan -q RSS of a /16 on 64 ports), with the load gone.
echo "bench: scale stage" >&2
"$PY" "$ROOT/scripts/bench-scale.py" --bin "$SOCKCHECK" --runs 7 >"$OUT/scale-budget.txt" ||
    die "scale stage failed"

# --- the table and the budget -------------------------------------------------
"$PY" - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
res = {}
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    for r in json.load(open(path))["results"]:
        times = sorted(r["times"])
        res[r["command"]] = {"median": r["median"] * 1e3, "mean": r["mean"] * 1e3,
                             "min": r["min"] * 1e3, "max": r["max"] * 1e3,
                             "cpu": (r["user"] + r["system"]) * 1e3, "sys": r["system"] * 1e3,
                             "runs": len(times)}
names = {}
if os.path.exists(os.path.join(out, "owners.txt")):
    for line in open(os.path.join(out, "owners.txt")):
        label, yes = line.rsplit(" ", 1)
        names[label] = yes.strip()
rss = {}
for line in open(os.path.join(out, "rss.txt")):
    label, kb = line.rsplit(" ", 1)
    rss[label] = int(kb)

def base_of(key):
    load, scen, tool = key.split("/", 2)
    return f"{load}/{scen}/sockcheck (nobody)" if "(nobody)" in tool else f"{load}/{scen}/sockcheck"

LOADS = ["idle", "small", "full", "procs"]
SCENARIOS = ["free", "busy", "lingering"]
TOOLS = ["sockcheck", "sockcheck --bpf always", "ss -Htln", "ss -tlnp", "lsof", "fuser", "sockcheck (nobody)", "ss -tlnp (nobody)"]
def order(key):
    load, scen, tool = key.split("/", 2)
    rank = lambda seq, x: seq.index(x) if x in seq else len(seq)
    return (rank(LOADS, load), rank(SCENARIOS, scen), rank(TOOLS, tool), tool)

def fmt_ratio(x):
    return f"{x:.2f}x" if x < 10 else f"{x:.0f}x"

lines = ["| load | scenario | tool | median ms | min–max ms | runs | CPU ms (sys) | ratio tool/sockcheck | names holder | sockcheck peak RSS |",
         "|---|---|---|---:|---:|---:|---:|---:|:-:|---:|"]
for key in sorted(res, key=order):
    r = res[key]
    load, scen, tool = key.split("/", 2)
    base = res.get(base_of(key))
    ratio = fmt_ratio(r["median"] / base["median"]) if base else "–"
    if tool in ("sockcheck", "sockcheck (nobody)"):
        ratio = "1.0"
    mem = ""
    if tool.startswith("sockcheck"):
        label = f"{load}/{scen}" + (" (nobody)" if "(nobody)" in tool else "") + (" --bpf always" if "--bpf" in tool else "")
        mem = f"{rss[label] / 1024:.1f} MiB" if label in rss else ""
    lines.append(f"| {load} | {scen} | {tool} | {r['median']:.2f} | {r['min']:.2f}–{r['max']:.2f} "
                 f"| {r['runs']} | {r['cpu']:.1f} ({r['sys']:.1f}) | {ratio} | {names.get(key, '')} | {mem} |")
table = "\n".join(lines)

def med(key):
    return res[key]["median"]

budget = []
def line(ok, text):
    budget.append(f"{'PASS' if ok else 'MISS'}  {text}")

sc, ssp = med("full/free/sockcheck"), med("full/free/ss -tlnp")
line(ssp / sc >= 100, f"free: >=100x faster than ss -tlnp: {ssp:.2f} / {sc:.2f} ms = {ssp / sc:.0f}x")
ssn = med("full/free/ss -Htln")
line(sc <= ssn, f"free: no slower than ss -Htln: sockcheck {sc:.2f} ms vs ss -Htln {ssn:.2f} ms ({sc / ssn:.2f}x)")
sc, ssp = med("full/busy/sockcheck"), med("full/busy/ss -tlnp")
line(ssp / sc >= 10, f"busy (root): >=10x faster than ss -tlnp: {ssp:.2f} / {sc:.2f} ms = {ssp / sc:.2f}x")
sc, ssp = med("full/busy/sockcheck (nobody)"), med("full/busy/ss -tlnp (nobody)")
line(ssp / sc >= 2, f"busy (nobody): >=2x faster than ss -tlnp: {ssp:.2f} / {sc:.2f} ms = {ssp / sc:.2f}x")
default_rss = {k: v for k, v in rss.items() if "--bpf" not in k}
peak = max(default_rss.values())
worst = max(default_rss, key=default_rss.get)
line(peak < 16 * 1024, f"peak RSS < 16 MiB (default --bpf auto): max {peak / 1024:.1f} MiB ({worst})")
if "idle/busy/sockcheck --bpf always" in res:
    sb, sd = med("idle/busy/sockcheck --bpf always"), med("idle/busy/sockcheck")
    line(sb - sd <= 25, f"--bpf always fixed cost <= 25 ms (busy, no load): {sb:.2f} - {sd:.2f} ms = {sb - sd:.2f} ms")
    bpf_rss = {k: v for k, v in rss.items() if "--bpf" in k}
    worst = max(bpf_rss, key=bpf_rss.get)
    line(bpf_rss[worst] < 16 * 1024, f"peak RSS < 16 MiB (--bpf always): max {bpf_rss[worst] / 1024:.1f} MiB ({worst})")
if "full/busy/sockcheck --bpf always" in res:
    sb = med("full/busy/sockcheck --bpf always")
    ssp = med("full/busy/ss -tlnp")
    bpf_rss = max(v for k, v in rss.items() if "--bpf" in k)
    budget.append(f"info  busy with --bpf always: {ssp / sb:.1f}x faster than ss -tlnp "
                  f"({sb:.2f} ms), peak RSS {bpf_rss / 1024:.1f} MiB")
base = med("procs/free/sockcheck")
more_key = next(k for k in res if k.startswith("procs/free/sockcheck (+"))
more = med(more_key)
line(more <= base * 1.2 + 0.1,
     f"free cost flat in process count (same sockets, +{more_key.split('+')[1].split()[0]} processes "
     f"holding fds): {more:.2f} ms vs {base:.2f} ms ({more / base:.2f}x)")
small, full = med("small/free/sockcheck"), med("full/free/sockcheck")
budget.append(f"info  free at the two load sizes (which also differ in sockets: listeners, "
              f"TIME_WAIT): {small:.2f} ms (small) vs {full:.2f} ms (full)")

open(os.path.join(out, "table.md"), "w").write(table + "\n")
open(os.path.join(out, "budget.txt"), "w").write("\n".join(budget) + "\n")
print(table)
print()
print("\n".join(budget))
EOF
if [[ $NO_LEASES != 1 ]]; then
    cat "$OUT/leases/leases-budget.txt" | tee -a "$OUT/budget.txt"
fi
tee -a "$OUT/budget.txt" <"$OUT/scale-budget.txt"
echo
cat "$OUT/env.txt"
echo
for pid in "${HOLDER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${HOLDER_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
HOLDER_PIDS=()
echo "bench: done in $((SECONDS - START)) s; results in $OUT" >&2
leftover=$(ss -Htln | grep -E " 127\.($NET|$LOAD_NET)\." || true)
[[ -z $leftover ]] || echo "bench: warning: listeners still present: $leftover" >&2
