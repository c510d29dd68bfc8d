#!/usr/bin/env bash
# Run the aarch64 static binary on a real arm64 kernel, in a qemu-system VM:
# now the `arm64` row of scripts/vm-test.sh (Debian bookworm's arm64 6.1
# kernel under TCG, the same checks as every other kernel, about 40 s), kept
# under this name for those who know it.
#
#   scripts/vm-aarch64.sh [BIN]
#       BIN: the aarch64 sockcheck [built by vm-test.sh, as scripts/dist.sh
#       --all does]; the holder is built for aarch64 either way unless
#       ARM64_HOLDER names one
#
# qemu-user (what dist.sh uses for `--version`) cannot run a check: it
# refuses socket(AF_NETLINK, NETLINK_SOCK_DIAG) with EPROTONOSUPPORT and does
# not emulate bpf(2); hence a VM.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ $# -gt 0 ]; then
    ARM64_BIN=$(realpath "$1")
    export ARM64_BIN
fi
exec "$root/scripts/vm-test.sh" arm64
