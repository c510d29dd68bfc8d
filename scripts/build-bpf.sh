#!/usr/bin/env bash
# Build bpf/*.bpf.c into bpf/*.bpf.o (committed; embedded by src/bpf/loader.rs).
#
#   scripts/build-bpf.sh           rebuild the objects in place
#   scripts/build-bpf.sh --check   rebuild into a temp dir; exit 1 if any
#                                  committed object differs (or is missing)
#
# Installs clang/llvm from Debian when missing (needs root, as on CI).
# Output is deterministic: same sources + same clang => byte-identical
# objects, wherever the tree lives (paths are mapped to "." and the
# objects are stripped of DWARF; BTF and .BTF.ext, needed for CO-RE, stay).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=build
case "${1:-}" in
    "") ;;
    --check) mode=check ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if ! command -v clang >/dev/null || ! command -v llvm-strip >/dev/null; then
    echo "build-bpf: installing clang and llvm" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq clang llvm >/dev/null
fi

out="$root/bpf"
if [ "$mode" = check ]; then
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

cd "$root/bpf"
status=0
for src in *.bpf.c; do
    obj="${src%.c}.o"
    clang -target bpfel -mcpu=v3 -O2 -g \
        -Wall -Werror -nostdinc \
        -fdebug-prefix-map="$root/bpf"=. -fno-ident \
        -c "$src" -o "$out/$obj.tmp"
    llvm-strip -g "$out/$obj.tmp" -o "$out/$obj"
    rm -f "$out/$obj.tmp"
    if [ "$mode" = check ]; then
        if ! cmp -s "$out/$obj" "$root/bpf/$obj"; then
            echo "build-bpf --check: bpf/$obj is stale (differs from a fresh build of bpf/$src)" >&2
            status=1
        fi
    fi
done
if [ "$mode" = check ] && [ "$status" = 0 ]; then
    echo "build-bpf --check: objects up to date ($(clang --version | head -1))"
fi
exit "$status"
