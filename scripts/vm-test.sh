#!/usr/bin/env bash
# Run sockcheck's kernel-facing checks on the kernels users run: Debian's
# 5.10 (bullseye), 6.1 (bookworm) and 6.12 (trixie) in a qemu-system-x86_64
# VM (KVM when /dev/kvm is usable, else TCG), Debian bookworm's arm64 6.1 in
# a qemu-system-aarch64 VM (TCG), and the host's own kernel (in a VM when
# /boot has its image, else natively in private namespaces).
#
#   scripts/vm-test.sh [--update-readme] [KERNEL...]
#       KERNEL: bullseye, bookworm, trixie, host, arm64
#       none: bullseye bookworm trixie host arm64
#       --update-readme: then fill README's "tested on" column from this run
#       (scripts/requirements-table.py)
#
#   SOCKCHECK_BIN   the static sockcheck to test [target/x86_64-unknown-linux-musl/
#                   release/sockcheck, else the one under /work/main/target]
#   HOLDER_BIN      a static sockcheck-holder [built here as a static musl example]
#   ARM64_BIN, ARM64_HOLDER  the aarch64 ones [both built here with rust-lld,
#                   as scripts/dist.sh does; the arm64 row is skipped, saying
#                   why, when the aarch64-unknown-linux-musl target is not had]
#   VM_TIMEOUT      seconds a VM may run [60 with KVM, 600 with TCG, 1200 arm64]
#   VM_ACCEL        kvm or tcg [KVM when /dev/kvm opens and the CPU shows
#                   vmx or svm, else TCG]
#   VM_KVM_PROBE    seconds KVM gets to reach init before TCG is used [20]
#   VM_HOST_NATIVE  set: the host row runs natively even with a /boot image
#
# Prints one row per kernel: its version, where it ran (VM and accelerator,
# or natively and why), the checks passed, skipped (with the reason) and
# failed, and which path each feature took: owners through the fd walk or
# iter/task_file, iter/tcp, the watch hook without and with tracefs (tp_btf
# or the tracepoint), PIDFD_THREAD, each with the reason it fell back. The
# paths are doctor --json's `paths`, checked against the kernel version and
# against what the checks themselves took. Exits 1 if any check failed or a
# VM did not run to the end. The rows go to target/vm-test/matrix.json (with
# the date and commit); console logs stay in target/vm-test/KERNEL/console.log.
#
# The kernel: Debian's `linux-image-amd64` (`-arm64`) of the suite, fetched
# with a private apt state under target/vm-test/apt-SUITE[-ARCH] (its own
# sources list and dpkg status: the machine's apt and dpkg are left alone),
# downloaded only and unpacked with `dpkg-deb -x`. The .debs stay in
# target/vm-test/debs as a cache. `host` boots /boot/vmlinuz-$(uname -r) with
# /lib/modules of the running kernel; where that image is not readable (a
# container, or a VM whose kernel was given by its hypervisor, as on the
# development machine) the same checks run natively under `unshare --mount
# --net --pid`, with tmpfs on /tmp and /run: the row says so.
#
# The root filesystem is an initramfs built here: busybox-static (arm64: the
# arm64 package's), the static sockcheck and sockcheck-holder, /etc/passwd
# with root and nobody, and the sock_diag modules from the same kernel
# package (inet_diag, tcp_diag, udp_diag, unix_diag: modular in Debian's
# kernels), decompressed on the host since busybox insmod does not read
# .ko.xz. Chosen over the host's root over 9p/virtiofs because everything
# under test is static: the initramfs needs no modules to mount it (9p and
# virtio would have to be loaded from the package in the right order first),
# boots in a second, and cannot touch the host's files.
#
# What runs (checks.sh, the same in every row): the part of the suite that
# depends on the kernel, not on sockcheck's own logic (cargo test covers that
# on the host):
#   version      --version: the binary starts on this kernel
#   free         a free address is `free` (sock_diag, the canary bind)
#   plain        one listener (holder plain): busy, owner = the holder (/proc)
#   group        a SO_REUSEPORT group of 3 in one process: 3 listeners,
#                reuseport true, owner = the holder
#   lingering    a worker thread holds a SO_REUSEPORT listener, the leader is
#                a zombie: owner found through the thread's fd table; with
#                --bpf never --no-probe the SO_REUSEPORT evidence must come
#                from pidfd_getfd on a thread (PIDFD_THREAD, Linux 6.9+):
#                pidfd.thread, a skip before 6.9
#   probe        the same listener with --bpf never --no-pidfd: SO_REUSEPORT
#                from the bind probe
#   dualstack    a [::] listener with IPV6_V6ONLY off makes 127.0.0.2
#                `foreign`, owner = the holder
#   bpf          --bpf always on the plain and lingering listeners: owners
#                and SO_REUSEPORT from eBPF; SOCKCHECK_BPF_TRACE says whether
#                the fd walk (iter/task, 5.17+) ran or iter/task_file
#   doctor       doctor --json: sock_diag and the BPF iterators available
#                (as nobody: not, with the reason); with tracefs mounted it
#                must name the tracepoint. doctor.*: its `paths` rows name
#                the fd walk from 5.17 (else iter/task_file, with the
#                verifier's reason), iter/tcp, tp_btf without tracefs,
#                PIDFD_THREAD from 6.9, and agree with the bpf, watch and
#                lingering checks
#   watch        watch --count 1 sees a listener appear, once without tracefs
#                (tp_btf) and once with tracefs mounted (a tracepoint)
#   lease        acquire (owner: a sleep), leases, release (pidfds, abstract
#                AF_UNIX names, unix_diag)
# and as nobody (busybox su: Debian's busybox has no setuidgid or chpst):
# version, free, plain (the owner is another user's: hidden, the verdict
# still busy), doctor, lease, and --bpf always (eBPF `unavailable` with the
# reason, the verdict still right) and watch (exits non-zero saying why).
#
# Installs what it needs with apt-get (qemu-system-x86, qemu-system-arm for
# arm64, busybox-static, cpio, python3 for the table) when missing; kills its
# VMs by pid and removes the unpacked kernels and initramfs trees on exit.
# Times: CONTRIBUTING.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work="$root/target/vm-test"
log() { echo "vm-test: $*" >&2; }

kernels=()
update_readme=
for k in "$@"; do
    case "$k" in
        bullseye | bookworm | trixie | host | arm64) kernels+=("$k") ;;
        --update-readme) update_readme=1 ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--update-readme] [bullseye|bookworm|trixie|host|arm64]..." >&2; exit 2 ;;
    esac
done
[ ${#kernels[@]} -gt 0 ] || kernels=(bullseye bookworm trixie host arm64)

# ---------------------------------------------------------------- the binaries
# This checkout's static binary (never another checkout's: the matrix and
# the README's "tested on" column describe this commit), built here when
# absent; scripts/dist.sh is a no-op for cargo when it is fresh.
bin=${SOCKCHECK_BIN:-}
if [ -z "$bin" ]; then
    bin="$root/target/x86_64-unknown-linux-musl/release/sockcheck"
    log "building the static sockcheck (scripts/dist.sh)"
    (cd "$root" && CARGO_TARGET_DIR="$root/target" scripts/dist.sh) >&2 || { log "scripts/dist.sh failed"; exit 2; }
fi
[ -n "$bin" ] && [ -x "$bin" ] || { log "no static sockcheck: scripts/dist.sh builds it, or set SOCKCHECK_BIN"; exit 2; }
static_x86() { file -b "$1" | grep -q 'x86-64.*statically linked'; }

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v cpio >/dev/null || missing+=(cpio)
command -v file >/dev/null || missing+=(file)
command -v python3 >/dev/null || missing+=(python3)
[ -x /bin/busybox ] && static_x86 /bin/busybox 2>/dev/null || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
static_x86 "$bin" || { log "$bin is not a static x86-64 executable"; exit 2; }

holder=${HOLDER_BIN:-}
if [ -z "$holder" ]; then
    holder="$root/target/x86_64-unknown-linux-musl/release/examples/sockcheck-holder"
    log "building sockcheck-holder (static musl example; cargo: a no-op when fresh)"
    (cd "$root" && RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols" \
        CARGO_TARGET_DIR="$root/target" \
        cargo build --release --locked --target x86_64-unknown-linux-musl --example sockcheck-holder) >&2
fi
static_x86 "$holder" || { log "$holder is not a static x86-64 executable"; exit 2; }

# KVM when /dev/kvm opens and the CPU has vmx/svm, unless VM_ACCEL says. A
# nested KVM can open and still not boot a kernel (inside a Firecracker VM
# with no vmx flag, SeaBIOS runs and the kernel then hangs silently): a VM
# that has not reached init within VM_KVM_PROBE seconds (20) is killed and
# booted again with TCG, and the kernels after it go straight to TCG.
accel_kind=${VM_ACCEL:-auto}
[ "$accel_kind" = auto ] || forced=1
[ "$accel_kind" = tcg ] || accel_kind=kvm
if [ "$accel_kind" = kvm ] && ! python3 -c 'import os; os.close(os.open("/dev/kvm", os.O_RDWR))' 2>/dev/null; then
    log "/dev/kvm is not usable: TCG"
    accel_kind=tcg
fi
if [ "$accel_kind" = kvm ] && [ -z "${forced:-}" ] && ! grep -qwE 'vmx|svm' /proc/cpuinfo; then
    log "/dev/kvm opens but the CPU shows no vmx/svm flag: TCG (VM_ACCEL=kvm to try anyway)"
    accel_kind=tcg
fi
kvm_probe=${VM_KVM_PROBE:-20}
accel_args() {
    if [ "$1" = kvm ]; then echo "-enable-kvm -cpu host"; else echo "-accel tcg -cpu max"; fi
}
vm_timeout() {
    if [ "$1" = kvm ]; then echo "${VM_TIMEOUT:-60}"; else echo "${VM_TIMEOUT:-600}"; fi
}

# ------------------------------------------------------------------ cleanup
vm_pids=()
tmp_dirs=()
cleanup() {
    local p
    for p in "${vm_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${tmp_dirs[@]}"; do rm -rf "$p"; done
}
trap cleanup EXIT

# --------------------------------------------------------- Debian's kernels
mkdir -p "$work/debs"
# Prints the path of the suite's linux-image .deb, fetching it if not cached.
fetch_kernel() {
    local suite=$1 arch=${2:-amd64} a="$work/apt-$1" pkg deb
    [ "$arch" = amd64 ] || a="$work/apt-$1-$arch"
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/parts" "$a/prefs"
    touch "$a/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$a/sources.list"
    local opts=(-o Dir::Etc::SourceList="$a/sources.list" -o Dir::Etc::SourceParts="$a/parts"
        -o Dir::Etc::Preferences="$a/prefs/none" -o Dir::Etc::PreferencesParts="$a/prefs"
        -o Dir::State::Lists="$a/lists" -o Dir::Cache="$a/cache" -o Dir::State::status="$a/status"
        -o APT::Architecture="$arch" -o APT::Architectures::="$arch")
    if [ -f "$a/kpkg" ] && deb=$(ls "$work/debs/$(cat "$a/kpkg")"_*.deb 2>/dev/null | head -1) && [ -n "$deb" ]; then
        echo "$deb"; return
    fi
    log "$suite: apt-get update (private state in $a)"
    apt-get "${opts[@]}" update -qq >&2
    pkg=$(apt-cache "${opts[@]}" depends "linux-image-$arch" | sed -n "s/^ *Depends: \(linux-image-[0-9][^ ]*-$arch\)\$/\1/p" | head -1)
    [ -n "$pkg" ] || { log "$suite: no linux-image-*-$arch behind linux-image-$arch"; return 1; }
    log "$suite: downloading $pkg"
    (cd "$work/debs" && apt-get "${opts[@]}" download "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    # Another architecture's busybox-static for the initramfs, from the same suite.
    if [ "$arch" != amd64 ]; then
        (cd "$work/debs" && apt-get "${opts[@]}" download "busybox-static:$arch" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    fi
    echo "$pkg" >"$a/kpkg"
    deb=$(ls "$work/debs/${pkg}"_*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || { log "$suite: download of $pkg failed"; return 1; }
    echo "$deb"
}

# ------------------------------------------------------------- the VM's init
# The VM's /init: mounts, the sock_diag modules, then the checks.
write_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
export PATH=/bin NO_COLOR=1 HOME=/tmp
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp; mkdir -p /run; mount -t tmpfs run /run; chmod 1777 /tmp
echo 1 >/proc/sys/kernel/printk
ip link set lo up
for m in inet_diag tcp_diag udp_diag raw_diag unix_diag; do
    [ -f /mods/$m.ko ] && insmod /mods/$m.ko 2>/dev/null
done
. /checks.sh
poweroff -f
EOF
    chmod +x "$1"
}

# The checks, the same in a VM and on the host (sourced by /init, or run in
# private namespaces by run_host). Everything they start runs from PATH.
write_checks() {
    cat >"$1" <<'EOF'
# One section per check, for the host to judge: @@@ begin NAME / output /
# @@@ end NAME rc=N. stderr goes to NAME.err, shown as its own section.
run() {
    name=$1; shift
    echo "@@@ begin $name"; "$@" 2>/tmp/err; rc=$?
    echo "@@@ end $name rc=$rc"
    echo "@@@ begin $name.err"; cat /tmp/err; echo "@@@ end $name.err rc=0"
}
# holder SHAPE ADDR PORT [N]: starts it, waits for its ready line, sets $hp.
holder() {
    rm -f /tmp/h.out
    sockcheck-holder "$@" >/tmp/h.out 2>&1 &
    i=0; while ! grep -q ready /tmp/h.out 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    hp=$(sed -n 's/^ready pid=\([0-9]*\).*/\1/p' /tmp/h.out)
    echo "@@@ holder $1 pid=$hp $(cat /tmp/h.out)"
}
as_nobody() { su -s /bin/sh nobody -c "$*"; }
echo "@@@ kernel $(uname -r)"
run version sockcheck --version
run free sockcheck --json --bpf never --ports 45990 127.0.0.2
holder plain 127.0.0.2 45991; plain=$hp
run plain sockcheck --json --bpf never --ports 45991 127.0.0.2
run nobody.plain as_nobody sockcheck --json --bpf never --ports 45991 127.0.0.2
holder group 127.0.0.3 45992 3; group=$hp
run group sockcheck --json --bpf never --ports 45992 127.0.0.3
holder lingering 127.0.0.4 45993 1; lingering=$hp
run lingering sockcheck --json --bpf never --no-probe --ports 45993 127.0.0.4
run probe sockcheck --json --bpf never --no-pidfd --ports 45993 127.0.0.4
holder dualstack - 45994; dual=$hp
run dualstack sockcheck --json --bpf never --ports 45994 127.0.0.2
export SOCKCHECK_BPF_TRACE=1
run bpf.plain sockcheck --json --bpf always --ports 45991 127.0.0.2
run bpf.lingering sockcheck --json --bpf always --no-probe --no-pidfd --ports 45993 127.0.0.4
run nobody.bpf as_nobody sockcheck --json --bpf always --ports 45991 127.0.0.2
unset SOCKCHECK_BPF_TRACE
kill $plain $group $lingering $dual 2>/dev/null
run doctor sockcheck doctor --json
run nobody.doctor as_nobody sockcheck doctor --json
# watch, without tracefs (tp_btf), then with it (a tracepoint)
watch_once() {
    name=$1 addr=$2 port=$3
    # The files go first: the background shell truncates them only when it
    # gets to run, and a stale "watching" line would start the holder early.
    rm -f /tmp/w.out /tmp/w.err
    sockcheck watch --json --count 1 --timeout 10 --ports $port >/tmp/w.out 2>/tmp/w.err & w=$!
    i=0; while ! grep -q . /tmp/w.err 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    holder plain $addr $port; h=$hp
    wait $w; rc=$?
    kill $h 2>/dev/null
    echo "@@@ begin $name"; cat /tmp/w.out; echo "@@@ end $name rc=$rc"
    echo "@@@ begin $name.err"; cat /tmp/w.err; echo "@@@ end $name.err rc=0"
    echo "@@@ holder-of $name pid=$h"
}
watch_once watch.tp_btf 127.0.0.5 45995
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
run doctor.tracefs sockcheck doctor --json
watch_once watch.tracepoint 127.0.0.6 45996
umount /sys/kernel/tracing 2>/dev/null
run nobody.watch as_nobody sockcheck watch --count 1 --timeout 2 --ports 45997
# leases, as root and as nobody
sleep 600 & owner=$!
run lease.acquire sockcheck acquire --owner $owner --ports 45998 127.0.0.10-127.0.0.12
run lease.list sockcheck leases
run lease.release sockcheck release 127.0.0.10
run lease.after sockcheck leases
as_nobody sleep 600 & nowner=$!
run nobody.lease.acquire as_nobody sockcheck acquire --owner $nowner --ports 45998 127.0.0.20-127.0.0.22
run nobody.lease.list as_nobody sockcheck leases
run nobody.lease.release as_nobody sockcheck release 127.0.0.20
run nobody.lease.after as_nobody sockcheck leases
run nobody.version as_nobody sockcheck --version
run nobody.free as_nobody sockcheck --json --ports 45990 127.0.0.2
kill $owner $nowner 2>/dev/null
echo "@@@ done"
EOF
}

# ----------------------------------------------------------------- one kernel
# boot NAME VMLINUZ MODDIR: builds the initramfs, boots, leaves console.log.
boot() {
    local name=$1 kernel=$2 moddir=$3 d="$work/$1" ir m f
    ir="$d/ir"
    rm -rf "$ir"; tmp_dirs+=("$ir")
    mkdir -p "$ir/bin" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/tmp" "$ir/mods" "$ir/etc"
    cp "$vm_busybox" "$ir/bin/busybox"
    for applet in sh mount umount ip insmod sleep poweroff echo kill uname grep sed cat rm mkdir chmod su; do
        ln -s busybox "$ir/bin/$applet"
    done
    cp "$vm_bin" "$ir/bin/sockcheck"
    cp "$vm_holder" "$ir/bin/sockcheck-holder"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' >"$ir/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$ir/etc/group"
    for m in inet_diag tcp_diag udp_diag raw_diag unix_diag; do
        f=$(find "$moddir" -name "$m.ko*" 2>/dev/null | head -1 || true)
        [ -n "$f" ] || continue   # built in, or absent
        case "$f" in
            *.ko) cp "$f" "$ir/mods/$m.ko" ;;
            *.ko.xz) xz -dc "$f" >"$ir/mods/$m.ko" ;;
            *.ko.zst) zstd -qdc "$f" >"$ir/mods/$m.ko" ;;
            *.ko.gz) gzip -dc "$f" >"$ir/mods/$m.ko" ;;
        esac
    done
    write_init "$ir/init"
    write_checks "$ir/checks.sh"
    (cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1 >"$d/initrd.gz")
    rm -rf "$ir"
    local start=$SECONDS kind
    local kinds="$accel_kind tcg"
    [ "$vm_arch" = amd64 ] || kinds=tcg
    for kind in $kinds; do
        local timeout_s qpid waited=0 stalled=0
        timeout_s=$(vm_timeout "$kind")
        [ "$vm_arch" = amd64 ] || timeout_s=${VM_TIMEOUT:-1200}
        log "$name: booting $(basename "$kernel") ($kind, timeout ${timeout_s}s)"
        if [ "$vm_arch" = amd64 ]; then
            # shellcheck disable=SC2046
            qemu-system-x86_64 $(accel_args "$kind") -m 1024 -smp 2 -nographic -no-reboot -nic none \
                -kernel "$kernel" -initrd "$d/initrd.gz" \
                -append "console=ttyS0 rdinit=/init quiet loglevel=1 panic=-1" \
                </dev/null >"$d/console.raw" 2>"$d/qemu.err" &
        else
            qemu-system-aarch64 -M virt -accel tcg -cpu max -m 1024 -smp 2 -nographic -no-reboot -nic none \
                -kernel "$kernel" -initrd "$d/initrd.gz" \
                -append "console=ttyAMA0 rdinit=/init quiet loglevel=1 panic=-1" \
                </dev/null >"$d/console.raw" 2>"$d/qemu.err" &
        fi
        qpid=$!
        vm_pids+=("$qpid")
        while kill -0 "$qpid" 2>/dev/null && [ $waited -lt $((timeout_s * 10)) ]; do
            sleep 0.1; waited=$((waited + 1))
            if [ "$kind" = kvm ] && [ $waited -ge $((kvm_probe * 10)) ] && ! grep -q '^@@@ kernel' "$d/console.raw"; then
                stalled=1; break
            fi
        done
        if kill -0 "$qpid" 2>/dev/null; then
            if [ $stalled = 1 ]; then
                log "$name: no output from init after ${kvm_probe}s under KVM (a nested KVM that cannot run this kernel?): killing pid $qpid, TCG from now on"
            else
                log "$name: the VM is still running after ${timeout_s}s: killing pid $qpid"
            fi
            kill "$qpid" 2>/dev/null || true
        fi
        wait "$qpid" 2>/dev/null || true
        echo "$kind" >"$d/accel"
        if [ $stalled = 1 ]; then accel_kind=tcg; start=$SECONDS; continue; fi
        break
    done
    tr -d '\r' <"$d/console.raw" >"$d/console.log"
    rm -f "$d/console.raw" "$d/initrd.gz"
    echo $((SECONDS - start)) >"$d/seconds"
}

# --------------------------------------------------------------- arm64 (TCG)
# The aarch64 static sockcheck and holder (ARM64_BIN, ARM64_HOLDER, else
# built here with rust-lld, as scripts/dist.sh does) and qemu-system-aarch64.
# Writes DIR/skipped and fails when the aarch64 target cannot be had.
arm64_bin=${ARM64_BIN:-$root/target/aarch64-unknown-linux-musl/release/sockcheck}
arm64_holder=${ARM64_HOLDER:-$root/target/aarch64-unknown-linux-musl/release/examples/sockcheck-holder}
static_arm64() { file -b "$1" 2>/dev/null | grep -q 'ARM aarch64.*statically linked'; }
arm64_ready() {
    if [ -z "${ARM64_BIN:-}" ] || [ -z "${ARM64_HOLDER:-}" ]; then
        if ! (cd "$root" && rustup target add aarch64-unknown-linux-musl) >&2; then
            echo "no aarch64-unknown-linux-musl target (rustup target add failed)" >"$1/skipped"
            return 1
        fi
        local what=(--example sockcheck-holder)
        [ -n "${ARM64_BIN:-}" ] || what+=(--bin sockcheck)
        log "arm64: building ${what[*]} for aarch64-unknown-linux-musl (cargo: a no-op when fresh)"
        if ! (cd "$root" && CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
            RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols" \
            CARGO_TARGET_DIR="$root/target" cargo build --release --locked \
            --target aarch64-unknown-linux-musl "${what[@]}") >&2; then
            echo "building the aarch64 binaries failed" >"$1/skipped"
            return 1
        fi
    fi
    if ! static_arm64 "$arm64_bin" || ! static_arm64 "$arm64_holder"; then
        echo "$arm64_bin or $arm64_holder is not a static aarch64 executable" >"$1/skipped"
        return 1
    fi
    if ! command -v qemu-system-aarch64 >/dev/null; then
        log "installing qemu-system-arm"
        apt-get install -y -qq --no-install-recommends qemu-system-arm >/dev/null || true
    fi
    command -v qemu-system-aarch64 >/dev/null || { echo "no qemu-system-aarch64" >"$1/skipped"; return 1; }
}

# ------------------------------------------------------- the host, natively
# The same checks on the running kernel without a VM, where it has no /boot
# image: in new mount, network and pid namespaces (unshare), so the mounts
# (tmpfs on /tmp and /run, tracefs), the addresses, the leases and the pids
# are the checks' own and nothing of the host's is touched. busybox, the
# static sockcheck and the holder are copied into the namespace's /tmp/bin,
# from the row's directory entered before the tmpfs goes over /tmp: a
# checkout under /tmp (a CI clone) is hidden by it.
run_host() {
    local d="$work/host" hb="$work/host/bin" start=$SECONDS applet rc=0
    rm -rf "$hb"; mkdir -p "$hb"; tmp_dirs+=("$hb")
    cp /bin/busybox "$hb/"
    for applet in sh mount umount ip sleep echo kill uname grep sed cat rm mkdir chmod su; do
        ln -s busybox "$hb/$applet"
    done
    cp "$bin" "$hb/sockcheck"
    cp "$holder" "$hb/sockcheck-holder"
    write_checks "$d/checks.sh"
    log "host: running the checks natively on $(uname -r)"
    timeout "${VM_TIMEOUT:-600}" unshare --mount --net --pid --fork --mount-proc --propagation private \
        env -i NO_COLOR=1 HOME=/tmp PATH=/tmp/bin "$hb/busybox" sh -c "
            cd '$d' &&
            mount -t tmpfs tmp /tmp && chmod 1777 /tmp && mkdir -p /run && mount -t tmpfs run /run &&
            cp -a bin /tmp/bin && ip link set lo up && . ./checks.sh" \
        </dev/null >"$d/console.log" 2>"$d/host.err" || rc=$?
    [ $rc = 0 ] || log "host: the checks exited with $rc (stderr in $d/host.err)"
    echo native >"$d/accel"
    echo $((SECONDS - start)) >"$d/seconds"
    rm -rf "$hb" "$d/checks.sh"
}

# What boot() puts in the initramfs and which qemu it runs (arm64 sets its own).
vm_arch=amd64 vm_busybox=/bin/busybox vm_bin=$bin vm_holder=$holder

results="$work/results.jsonl"
mkdir -p "$work"
: >"$results"
for k in "${kernels[@]}"; do
    d="$work/$k"
    mkdir -p "$d"
    rm -f "$d/console.log" "$d/skipped" "$d/native"
    if [ "$k" = host ]; then
        img="/boot/vmlinuz-$(uname -r)"
        if [ -r "$img" ] && [ -z "${VM_HOST_NATIVE:-}" ]; then
            boot host "$img" "/lib/modules/$(uname -r)"
        else
            why="no readable $img (the running kernel was not booted from this filesystem's /boot: a container, or a VM whose hypervisor supplies the kernel)"
            [ -r "$img" ] && why="VM_HOST_NATIVE is set"
            echo "$why" >"$d/native"
            log "host: $why: the same checks run natively, in private mount, network and pid namespaces"
            run_host
        fi
    elif [ "$k" = arm64 ]; then
        if ! arm64_ready "$d"; then
            log "arm64: skipped: $(cat "$d/skipped")"
        elif ! deb=$(fetch_kernel bookworm arm64); then
            echo "could not fetch Debian bookworm's arm64 kernel" >"$d/skipped"
        else
            kdir="$d/k"; bb="$d/bb"; rm -rf "$kdir" "$bb"; tmp_dirs+=("$kdir" "$bb")
            dpkg-deb -x "$deb" "$kdir"
            dpkg-deb -x "$(ls "$work"/debs/busybox-static_*_arm64.deb | head -1)" "$bb"
            vm_arch=arm64 vm_busybox="$bb/bin/busybox" vm_bin=$arm64_bin vm_holder=$arm64_holder \
                boot arm64 "$(ls "$kdir"/boot/vmlinuz-* | head -1)" "$kdir"
            rm -rf "$kdir" "$bb"
        fi
    else
        if ! deb=$(fetch_kernel "$k"); then
            echo "could not fetch Debian $k's kernel" >"$d/skipped"
        else
            kdir="$d/k"; rm -rf "$kdir"; tmp_dirs+=("$kdir")
            dpkg-deb -x "$deb" "$kdir"
            # trixie's package has merged /usr: its modules are in usr/lib/modules
            vm_arch=amd64 vm_busybox=/bin/busybox vm_bin=$bin vm_holder=$holder \
                boot "$k" "$(ls "$kdir"/boot/vmlinuz-* | head -1)" "$kdir"
            rm -rf "$kdir"
        fi
    fi
    python3 "$root/scripts/vm-test-judge.py" "$k" "$d" >>"$results"
done
status=0
python3 "$root/scripts/vm-test-judge.py" --table "$results" "$work/matrix.json" || status=$?
log "results: $work/matrix.json"
if [ -n "$update_readme" ]; then
    python3 "$root/scripts/requirements-table.py" "$work/matrix.json" "$root/README.md"
fi
exit $status
