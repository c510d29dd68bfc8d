#!/usr/bin/env bash
# Build the npm tarballs: sockcheck, and @sockcheck/linux-x64 and
# @sockcheck/linux-arm64 for each binary given.
#
# Usage: npm/pack.sh [--out DIR] [--x64 BIN] [--arm64 BIN]
#        npm/pack.sh [--out DIR] BIN_X64 [BIN_ARM64]
#   BIN_X64, BIN_ARM64  the static sockcheck binaries (scripts/dist.sh builds
#                       target/x86_64-unknown-linux-musl/release/sockcheck);
#                       also $SOCKCHECK_BIN_X64 / $SOCKCHECK_BIN_ARM64.
#                       A platform package is packed only when its binary is given.
#   --out DIR           where the tarballs go (default: target/npm, or $SOCKCHECK_NPM_OUT)
#
# The version is the crate's (Cargo.toml): the package.json files under npm/
# are synced to it first (a change shows in git). The packages are staged in a
# temporary directory with the binary copied in; nothing else in the tree
# changes. Prints the tarball paths, one a line, on stdout.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${SOCKCHECK_NPM_OUT:-$root/target/npm}
bin_x64=${SOCKCHECK_BIN_X64:-}
bin_arm64=${SOCKCHECK_BIN_ARM64:-}
positional=()
while [ $# -gt 0 ]; do
  case $1 in
    --out) out=$2; shift 2 ;;
    --x64) bin_x64=$2; shift 2 ;;
    --arm64) bin_arm64=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    -*) echo "pack.sh: unknown option $1" >&2; exit 2 ;;
    *) positional+=("$1"); shift ;;
  esac
done
[ ${#positional[@]} -ge 1 ] && bin_x64=${positional[0]}
[ ${#positional[@]} -ge 2 ] && bin_arm64=${positional[1]}
[ ${#positional[@]} -le 2 ] || { echo "pack.sh: at most two binaries (x64, arm64)" >&2; exit 2; }

say() { echo "pack.sh: $*" >&2; }

version=$(awk '/^\[package\]/{p=1; next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$root/Cargo.toml")
[ -n "$version" ] || { say "no version in Cargo.toml"; exit 1; }

# Sync the committed package.json files to the crate's version.
node - "$here" "$version" <<'EOF'
const fs = require('node:fs');
const path = require('node:path');
const [dir, version] = process.argv.slice(2);
for (const pkg of ['sockcheck', 'linux-x64', 'linux-arm64']) {
  const file = path.join(dir, pkg, 'package.json');
  const text = fs.readFileSync(file, 'utf8');
  const json = JSON.parse(text);
  const before = JSON.stringify(json);
  json.version = version;
  for (const dep of Object.keys(json.optionalDependencies || {})) {
    if (dep.startsWith('@sockcheck/')) json.optionalDependencies[dep] = version;
  }
  if (JSON.stringify(json) !== before) {
    fs.writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
    console.error(`pack.sh: ${pkg}/package.json synced to version ${version}`);
  }
}
EOF

# Check a binary: an ELF executable for the package's CPU. Warn when it is
# not static (a glibc build is fine for a local test, not for publishing).
check_binary() { # BIN MACHINE(62 x86-64, 183 aarch64) NAME
  local bin=$1 machine=$2 name=$3
  [ -f "$bin" ] && [ -x "$bin" ] || { say "$name: $bin is not an executable file"; exit 1; }
  node - "$bin" "$machine" "$name" <<'EOF'
const fs = require('node:fs');
const [bin, machine, name] = process.argv.slice(2);
const b = fs.readFileSync(bin);
const fail = (m) => { console.error(`pack.sh: ${name}: ${bin}: ${m}`); process.exit(1); };
if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46) fail('not an ELF file');
if (b[4] !== 2 || b[5] !== 1) fail('not a 64-bit little-endian ELF file');
const m = b.readUInt16LE(18);
if (m !== Number(machine)) fail(`built for ELF machine ${m}, not ${machine}`);
// PT_INTERP (3) in the program headers: dynamically linked.
const phoff = Number(b.readBigUInt64LE(32));
const phentsize = b.readUInt16LE(54);
const phnum = b.readUInt16LE(56);
let interp = false;
for (let i = 0; i < phnum; i++) if (b.readUInt32LE(phoff + i * phentsize) === 3) interp = true;
if (interp) console.error(`pack.sh: warning: ${name}: ${bin} is dynamically linked (fine for a local test; publish the static musl build)`);
EOF
}

host_machine=$(uname -m)
mkdir -p "$out"
out=$(cd "$out" && pwd)
stage=$(mktemp -d "${TMPDIR:-/tmp}/sockcheck-pack.XXXXXX")
trap 'rm -rf "$stage"' EXIT

pack() { # DIR: npm pack it into $out; print the tarball's path
  local dir=$1 file
  file=$(cd "$dir" && npm pack --silent --pack-destination "$out" 2>/dev/null | tail -n 1)
  [ -n "$file" ] && [ -f "$out/$file" ] || { say "npm pack failed in $dir"; exit 1; }
  echo "$out/$file"
}

packed=0
for arch in x64 arm64; do
  case $arch in
    x64) bin=$bin_x64 machine=62 uname=x86_64 ;;
    arm64) bin=$bin_arm64 machine=183 uname=aarch64 ;;
  esac
  if [ -z "$bin" ]; then
    say "@sockcheck/linux-$arch: no binary given, not packed"
    continue
  fi
  check_binary "$bin" "$machine" "linux-$arch"
  if [ "$host_machine" = "$uname" ]; then
    got=$("$bin" --version 2>/dev/null || true)
    [ "$got" = "sockcheck $version" ] || { say "linux-$arch: $bin --version says '$got', not 'sockcheck $version'"; exit 1; }
  fi
  cp -R "$here/linux-$arch" "$stage/linux-$arch"
  rm -rf "$stage/linux-$arch/bin"
  mkdir -p "$stage/linux-$arch/bin"
  cp "$bin" "$stage/linux-$arch/bin/sockcheck"
  chmod 0755 "$stage/linux-$arch/bin/sockcheck"
  pack "$stage/linux-$arch"
  packed=$((packed + 1))
done

mkdir -p "$stage/sockcheck"
# What the package.json "files" field names (and package.json), so an entry
# added there (sockcheck/get-port) is packed without a second list here.
mapfile -t files < <(cd "$here/sockcheck" && node -e 'for (const f of require("./package.json").files) console.log(f.replace(/\/$/, ""))')
(cd "$here/sockcheck" && tar -cf - package.json "${files[@]}") | (cd "$stage/sockcheck" && tar -xf -)
pack "$stage/sockcheck"
say "packed sockcheck $version and $packed platform package(s) into $out"
