#!/usr/bin/env bash
# CI for the npm packages: type-check, pack, install the tarballs offline into
# a fresh project, and run the package's tests against that installed copy.
#
# Usage: npm/ci.sh BIN_X64 [BIN_ARM64]
#   BIN_X64    the sockcheck binary for @sockcheck/linux-x64 (the static musl
#              build for a release; target/release/sockcheck works for a test)
#   BIN_ARM64  the aarch64 binary, if built (packed; installed only on aarch64)
# Env: SOCKCHECK_HOLDER (else target/release/examples/sockcheck-holder, built
# with cargo if missing), SOCKCHECK_NPM_KEEP=1 keeps the temp dir.
#
# Prints PASS/FAIL per check; exits non-zero on the first failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
[ $# -ge 1 ] && [ $# -le 2 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
abs() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
bin_x64=$(abs "$1")
bin_arm64=${2:+$(abs "$2")}

checks=0
pass() { checks=$((checks + 1)); echo "PASS npm/ci.sh: $*"; }
fail() { echo "FAIL npm/ci.sh: $*" >&2; exit 1; }
step() { echo "==> npm/ci.sh: $*"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sockcheck-npm-ci.XXXXXX")
cleanup() {
  if [ "${SOCKCHECK_NPM_KEEP:-}" = 1 ]; then echo "npm/ci.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

version=$(awk '/^\[package\]/{p=1; next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$root/Cargo.toml")

step "dev tools (npm ci: typescript, @types/node, pinned by npm/package-lock.json)"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error) || fail "npm ci"
pass "npm ci"

step "tsc --noEmit (declarations, and TypeScript using the API from ESM and CommonJS)"
(cd "$here" && node_modules/.bin/tsc -p tsconfig.json --noEmit) || fail "tsc --noEmit in the repo"
pass "tsc --noEmit (repo)"

step "pack"
tarballs=$("$here/pack.sh" --out "$work/tarballs" "$bin_x64" ${bin_arm64:+"$bin_arm64"}) || fail "pack.sh"
echo "$tarballs"
main_tgz=$work/tarballs/sockcheck-$version.tgz
[ -f "$main_tgz" ] || fail "no $main_tgz"
case $(uname -m) in
  x86_64) host_tgz=$work/tarballs/sockcheck-linux-x64-$version.tgz ;;
  aarch64) host_tgz=$work/tarballs/sockcheck-linux-arm64-$version.tgz ;;
  *) host_tgz= ;;
esac
[ -n "$host_tgz" ] && [ -f "$host_tgz" ] || fail "no platform tarball for $(uname -m)"
# No install scripts, no runtime dependencies.
for t in $tarballs; do
  tar -xzOf "$t" package/package.json | node -e '
    const p = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const s = Object.keys(p.scripts || {}).filter((k) => /^(pre|post)?install$|^prepare$/.test(k));
    if (s.length) { console.error(`${p.name}: install scripts ${s}`); process.exit(1); }
    if (Object.keys(p.dependencies || {}).length) { console.error(`${p.name}: runtime dependencies`); process.exit(1); }
  ' || fail "$t has install scripts or dependencies"
done
pass "pack: $(echo "$tarballs" | wc -l) tarball(s), no install scripts, no dependencies"

step "install the tarballs offline into a fresh project"
proj=$work/project
mkdir -p "$proj"
printf '{\n  "name": "sockcheck-ci-project",\n  "private": true,\n  "type": "module"\n}\n' > "$proj/package.json"
install=(npm install --offline --no-audit --no-fund --loglevel=error "$main_tgz" "$host_tgz")
# An empty cache and a registry nobody listens on: nothing can come from
# elsewhere. Where we may, also cut the network off entirely (a new network
# namespace has none).
export npm_config_cache=$work/npm-cache npm_config_registry=http://127.0.0.1:9/
if unshare -n true 2>/dev/null; then
  (cd "$proj" && unshare -n "${install[@]}") || fail "offline install (no network namespace)"
  how="in a network namespace with no network"
else
  (cd "$proj" && "${install[@]}") || fail "offline install"
  how="offline, registry unreachable"
fi
[ -x "$proj/node_modules/@sockcheck/linux-$([ "$(uname -m)" = aarch64 ] && echo arm64 || echo x64)/bin/sockcheck" ] \
  || fail "the platform package's binary is not installed and executable"
[ -x "$proj/node_modules/.bin/sockcheck" ] || fail "node_modules/.bin/sockcheck is missing"
resolved=$(cd "$proj" && node -e 'console.log(require.resolve("sockcheck"))')
case $resolved in "$proj/node_modules/"*) ;; *) fail "sockcheck resolves to $resolved, not the installed copy" ;; esac
pass "offline install ($how): $(cd "$proj" && ls node_modules node_modules/@sockcheck | tr '\n' ' ')"

# From here on: the installed copy only, no SOCKCHECK_BIN, no repo binary on PATH.
unset SOCKCHECK_BIN SOCKCHECK_FALLBACK SOCKCHECK_STATE_DIR SOCKCHECK_POOL SOCKCHECK_PORTS
export npm_config_offline=true

step "npx sockcheck --version"
got=$(cd "$proj" && npx --no-install sockcheck --version) || fail "npx sockcheck --version exited $?"
[ "$got" = "sockcheck $version" ] || fail "npx sockcheck --version printed '$got'"
pass "npx sockcheck --version: $got"

step "npx sockcheck 127.0.0.2"
set +e
verdict=$(cd "$proj" && npx --no-install sockcheck 127.0.0.2)
status=$?
set -e
echo "$verdict"
[ $status -eq 0 ] || [ $status -eq 1 ] || fail "npx sockcheck 127.0.0.2 exited $status"
echo "$verdict" | grep -Eq '^127\.0\.0\.2 +(free|busy|foreign|conflict|unavailable)' || fail "no verdict for 127.0.0.2"
pass "npx sockcheck 127.0.0.2 (exit $status)"

step "tsc --noEmit against the installed copy"
cp -R "$here/sockcheck/tests" "$proj/tests"
cat > "$proj/tsconfig.json" <<EOF
{
  "compilerOptions": {
    "target": "ES2022", "lib": ["ES2022", "ESNext.Disposable"],
    "module": "NodeNext", "moduleResolution": "NodeNext",
    "strict": true, "noEmit": true,
    "types": ["node"], "typeRoots": ["$here/node_modules/@types"]
  },
  "files": ["tests/types.ts", "tests/types-cjs.cts"]
}
EOF
files=$(cd "$proj" && "$here/node_modules/.bin/tsc" -p tsconfig.json --noEmit --listFiles) \
  || { echo "$files" | grep -v '^/' >&2; fail "tsc --noEmit against the installed copy"; }
echo "$files" | grep -q "^$proj/node_modules/sockcheck/index.d.ts\$" \
  || fail "the TypeScript check did not use the installed declarations"
pass "tsc --noEmit (installed copy)"

step "the package's tests against the installed copy"
holder=${SOCKCHECK_HOLDER:-}
if [ -z "$holder" ]; then
  for h in "$root/target/release/examples/sockcheck-holder" "$root/target/release/sockcheck-holder"; do
    [ -x "$h" ] && { holder=$h; break; }
  done
fi
if [ -z "$holder" ] && command -v cargo >/dev/null; then
  (cd "$root" && cargo build --release --example sockcheck-holder) || fail "cargo build --example sockcheck-holder"
  holder=$root/target/release/examples/sockcheck-holder
fi
[ -x "$holder" ] || fail "no sockcheck-holder (set SOCKCHECK_HOLDER)"
(cd "$proj" && SOCKCHECK_REPO="$root" SOCKCHECK_HOLDER="$holder" SOCKCHECK_TEST_STRICT=1 \
  SOCKCHECK_TEST_EXPECT_FROM=package node --test tests/) || fail "node --test against the installed copy"
pass "node --test (ESM, CommonJS, fallback, launcher) against the installed copy"

echo "npm/ci.sh: all $checks checks passed"
