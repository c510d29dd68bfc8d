#!/usr/bin/env bash
# Run the aarch64 static binary on a real arm64 kernel, in a qemu-system VM.
#
#   scripts/vm-aarch64.sh [BIN]
#       BIN defaults to target/aarch64-unknown-linux-musl/release/sockcheck
#       (scripts/dist.sh --all builds it)
#
# qemu-user (what dist.sh uses for `--version`) cannot run a check: it
# refuses socket(AF_NETLINK, NETLINK_SOCK_DIAG) with EPROTONOSUPPORT (it
# passes through only NETLINK_ROUTE, _KOBJECT_UEVENT and _AUDIT), and it
# does not emulate bpf(2). So this boots Debian's arm64 kernel (TCG, no KVM
# needed) with an initramfs of busybox-static and BIN, and runs: --version; a
# check of a free address; a check with a wildcard listener (busybox nc),
# which must be `foreign` with nc as the owner, from /proc and again from the
# BPF iterators (--bpf always); and doctor. About 20 s once the packages are
# there. Needs root: installs qemu-system-arm and cpio, and fetches the arm64
# kernel and busybox-static .debs with a private apt state under
# target/vm-aarch64 (the machine's dpkg architectures are left alone).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$(realpath "${1:-$root/target/aarch64-unknown-linux-musl/release/sockcheck}")
[ -f "$bin" ] || { echo "vm-aarch64: $bin: no such file (scripts/dist.sh --all builds it)" >&2; exit 2; }
file -b "$bin" | grep -q 'ARM aarch64.*statically linked' \
    || { echo "vm-aarch64: $bin is not a static aarch64 executable" >&2; exit 2; }

log() { echo "vm-aarch64: $*" >&2; }
export DEBIAN_FRONTEND=noninteractive
missing=()
command -v qemu-system-aarch64 >/dev/null || missing+=(qemu-system-arm)
command -v cpio >/dev/null || missing+=(cpio)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work="$root/target/vm-aarch64"
mkdir -p "$work/apt/lists/partial" "$work/apt/cache/archives/partial" "$work/debs"
touch "$work/apt/status"
apt_arm64=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64
    -o Dir::State::Lists="$work/apt/lists" -o Dir::Cache="$work/apt/cache"
    -o Dir::State::status="$work/apt/status")
if ! ls "$work"/debs/linux-image-*-arm64_*.deb >/dev/null 2>&1; then
    log "fetching Debian's arm64 kernel and busybox-static"
    apt-get "${apt_arm64[@]}" update -qq
    kpkg=$(apt-cache "${apt_arm64[@]}" depends linux-image-arm64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*-arm64\)$/\1/p' | head -1)
    [ -n "$kpkg" ] || { log "no arm64 kernel package found"; exit 1; }
    (cd "$work/debs" && apt-get "${apt_arm64[@]}" download "$kpkg" busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
fi
rm -rf "$work/k" "$work/bb" "$work/ir"
dpkg-deb -x "$(ls "$work"/debs/linux-image-*-arm64_*.deb | head -1)" "$work/k"
dpkg-deb -x "$(ls "$work"/debs/busybox-static_*.deb | head -1)" "$work/bb"
kernel=$(ls "$work"/k/boot/vmlinuz-* | head -1)

ir="$work/ir"
mkdir -p "$ir/bin" "$ir/proc" "$ir/sys" "$ir/dev" "$ir/tmp" "$ir/mods"
cp "$work/bb/bin/busybox" "$ir/bin/"
for applet in sh mount ip insmod nc sleep poweroff echo kill uname; do
    ln -s busybox "$ir/bin/$applet"
done
# sock_diag for TCP is modular in Debian's kernel.
for mod in inet_diag tcp_diag; do
    cp "$(find "$work/k/lib/modules" -name "$mod.ko*" | head -1)" "$ir/mods/"
done
cp "$bin" "$ir/bin/sockcheck"
cat >"$ir/init" <<'EOF'
#!/bin/sh
export PATH=/bin NO_COLOR=1
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
ip link set lo up
for m in /mods/*; do insmod "$m"; done
echo "=== $(uname -m) $(uname -r)"
echo "=== sockcheck --version"; sockcheck --version
echo "=== free"; sockcheck --ports 45990 127.0.0.2; echo "exit $?"
nc -l -p 45990 & nc=$!; sleep 1
echo "=== wildcard listener: busybox nc, pid $nc"
sockcheck -v --ports 45990 127.0.0.2; echo "exit $?"
echo "=== --bpf always"; sockcheck --bpf always -v --ports 45990 127.0.0.2; echo "exit $?"
kill $nc
echo "=== doctor"; sockcheck doctor; echo "exit $?"
echo "=== end"
poweroff -f
EOF
chmod +x "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initrd.gz")

log "booting $(basename "$kernel") (TCG)"
out="$work/console.log"
timeout 600 qemu-system-aarch64 -M virt -cpu max -m 1024 -smp 2 -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyAMA0 rdinit=/init quiet panic=-1" </dev/null | tr -d '\r' >"$out" || true
sed -n '/^=== /,$p' "$out" | grep -v '^\[ *[0-9.]*\]'

fail=0
expect() {
    if grep -qE "$1" "$out"; then log "ok: $2"; else log "FAILED: $2"; fail=1; fi
}
expect '^sockcheck [0-9]' "--version"
expect '^127\.0\.0\.2  free' "a free address is free"
expect '^127\.0\.0\.2  foreign' "a wildcard listener makes it foreign"
expect 'owner: pid [0-9]+ nc ' "the listener's owner is found (nc)"
expect 'read by the BPF tcp iterator' "the BPF tcp iterator runs"
expect "owners came from the kernel's fd tables through BPF" "the BPF fd-table walk runs"
expect '^=== end' "the VM ran to the end"
exit $fail
