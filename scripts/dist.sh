#!/usr/bin/env bash
# Build static Linux release binaries and pack them for download.
#
#   scripts/dist.sh                  x86_64-unknown-linux-musl only
#   scripts/dist.sh --all            also aarch64-unknown-linux-musl
#   scripts/dist.sh TARGET...        the named musl targets
#   DIST_TARGETS="T1 T2" scripts/dist.sh     the same, from the environment
#
# For each target it writes
#   target/dist/sockcheck-VERSION-TARGET.tar.gz          sockcheck, README.md,
#                                                        docs/ (the README links to it),
#                                                        LICENSE-MIT, LICENSE-APACHE
#   target/dist/sockcheck-VERSION-TARGET.tar.gz.sha256   check with
#                         (cd target/dist && sha256sum -c sockcheck-*.sha256)
# and the binary itself stays at target/TARGET/release/sockcheck (what
# SOCKCHECK_BIN should point at to run the test suite against it).
#
# The binary is static (musl, crt-static) and not position-independent, so
# `file` reports "statically linked" (a default musl build is "static-pie
# linked"); the script fails if it does not. The BPF objects are inside it
# (include_bytes in src/bpf/loader.rs). Symbols are stripped.
#
# Installs what it needs, as CI runs on a fresh machine: the pinned toolchain
# and the targets (rustup), a C toolchain for the host build scripts and
# `file` (apt-get, when missing). A target of another architecture links with
# rust-lld, shipped with rustc, against the target's self-contained musl: no
# cross gcc. It is then run under qemu-user (installed from Debian) for a
# `--version` smoke test; DIST_NO_QEMU=1 skips that. qemu-user cannot run a
# check (it refuses NETLINK_SOCK_DIAG sockets): scripts/vm-aarch64.sh runs
# the aarch64 binary's checks on a real arm64 kernel in a qemu-system VM.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

default_targets="x86_64-unknown-linux-musl"
all_targets="x86_64-unknown-linux-musl aarch64-unknown-linux-musl"
targets=()
for arg in "$@"; do
    case "$arg" in
        --all) read -r -a targets <<<"$all_targets" ;;
        -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "usage: $0 [--all] [TARGET...]" >&2; exit 2 ;;
        *) targets+=("$arg") ;;
    esac
done
if [ ${#targets[@]} -eq 0 ]; then
    read -r -a targets <<<"$(echo "${DIST_TARGETS:-$default_targets}" | tr , ' ')"
fi
for t in "${targets[@]}"; do
    case "$t" in
        *-linux-musl) ;;
        *) echo "dist: $t: only *-linux-musl targets give a static binary" >&2; exit 2 ;;
    esac
done

log() { echo "dist: $*" >&2; }

apt_install() {
    log "installing $*"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${dist_apt_updated:-}" ]; then
        apt-get update -qq
        dist_apt_updated=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- tools -----------------------------------------------------------------
missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v file >/dev/null || missing+=(file)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# The toolchain pinned by rust-toolchain.toml, with its components and
# targets. rustup does not add a missing target to an installed toolchain by
# itself (and installs nothing when RUSTUP_AUTO_INSTALL=0), so ask it.
# With no argument (rustup >= 1.28), `toolchain install` installs the one in
# rust-toolchain.toml; an older rustup installs it on `rustup show`.
rustup toolchain install >/dev/null 2>&1 || rustup show >/dev/null
rustup target add "${targets[@]}" >/dev/null

host=$(rustc -vV | sed -n 's/^host: //p')
pkgid=$(cargo pkgid --quiet)
version=${pkgid##*[#@]}
[ -n "$version" ] || { log "no version from 'cargo pkgid': $pkgid"; exit 1; }
# Archive timestamps from the last commit, so the same tree packs the same.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

dist="$root/target/dist"
mkdir -p "$dist"

for target in "${targets[@]}"; do
    start=$SECONDS
    arch=${target%%-*}
    env_target=$(echo "$target" | tr 'a-z-' 'A-Z_')
    # Static, and not PIE: rustc links a crt-static executable as static-pie
    # unless the relocation model is static. RUSTFLAGS with --target applies
    # to the target crates only, not to build scripts or proc macros.
    flags="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols"
    if [ "$arch" != "${host%%-*}" ]; then
        export "CARGO_TARGET_${env_target}_LINKER=rust-lld"
    fi
    log "building $target (sockcheck $version)"
    RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }$flags" \
        cargo build --release --locked --target "$target" --bin sockcheck
    bin="$root/target/$target/release/sockcheck"

    what=$(file -b "$bin")
    log "file: $what"
    case "$what" in
        *"statically linked"*) ;;
        *) log "$bin is not statically linked"; exit 1 ;;
    esac

    if [ "$arch" = "${host%%-*}" ]; then
        runner=()
    elif [ -n "${DIST_NO_QEMU:-}" ]; then
        runner=(skip)
    else
        command -v "qemu-$arch" >/dev/null || apt_install qemu-user
        runner=("qemu-$arch")
    fi
    if [ "${runner[*]-}" != skip ]; then
        said=$("${runner[@]}" "$bin" --version)
        log "${runner[*]:+${runner[*]} }sockcheck --version: $said"
        case "$said" in
            *" $version") ;;
            *) log "expected version $version"; exit 1 ;;
        esac
    fi

    name="sockcheck-$version-$target"
    stage="$dist/$name"
    rm -rf "$stage"
    mkdir -p "$stage"
    cp "$bin" "$stage/sockcheck"
    for doc in README.md LICENSE-MIT LICENSE-APACHE; do
        if [ -f "$doc" ]; then
            cp "$doc" "$stage/"
        else
            log "warning: $doc is missing; not packed"
        fi
    done
    if [ -d docs ]; then
        mkdir "$stage/docs" && cp docs/*.md "$stage/docs/"
    else
        log "warning: docs/ is missing; not packed"
    fi
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
        -C "$dist" -cf - "$name" | gzip -9n >"$dist/$name.tar.gz"
    rm -rf "$stage"
    (cd "$dist" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256" && sha256sum -c --quiet "$name.tar.gz.sha256")
    log "$target: $(stat -c %s "$bin") bytes binary, $(stat -c %s "$dist/$name.tar.gz") bytes tar.gz, $((SECONDS - start)) s"
    echo "$dist/$name.tar.gz"
done
