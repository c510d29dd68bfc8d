#!/usr/bin/env bash
# CI for the Python package: build the wheel around the static binary, install
# it offline into a fresh virtualenv, and run the package's tests, mypy
# --strict and the 64-test pytest-xdist suite against that installed copy.
#
# Usage: python/ci.sh
#   Builds with maturin (installed from PyPI into a build venv) for
#   x86_64-unknown-linux-musl with the flags and the target dir
#   scripts/dist.sh uses, so after scripts/dist.sh nothing is recompiled.
# Env: SOCKCHECK_PY_KEEP=1 keeps the temp dir; PYTHON (default python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=${PYTHON:-python3}
start=$SECONDS

pass() { echo "PASS python/ci.sh: $*"; }
fail() { echo "FAIL python/ci.sh: $*" >&2; exit 1; }
step() { echo "==> python/ci.sh: $* ($((SECONDS - start)) s)"; }

work=$(mktemp -d "${TMPDIR:-/tmp}/sockcheck-py-ci.XXXXXX")
cleanup() {
  if [ "${SOCKCHECK_PY_KEEP:-}" = 1 ]; then echo "python/ci.sh: kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

version=$(awk '/^\[package\]/{p=1; next} /^\[/{p=0} p && /^version *=/{gsub(/.*= *"|".*/, ""); print; exit}' "$root/Cargo.toml")
"$py" -c 'import sys; assert sys.version_info >= (3, 9), sys.version' || fail "$py is older than 3.9"
# Debian's python3 needs python3-venv for `-m venv`.
if ! "$py" -m venv --help >/dev/null 2>&1 || ! "$py" -c 'import ensurepip' 2>/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
fi

step "maturin (PyPI) into a build venv"
"$py" -m venv "$work/build-venv"
"$work/build-venv/bin/pip" install -q --disable-pip-version-check 'maturin>=1.5,<2' || fail "pip install maturin"
pass "$("$work/build-venv/bin/maturin" --version)"

step "the wheel (x86_64-unknown-linux-musl, static)"
target=x86_64-unknown-linux-musl
rustup target add "$target" >/dev/null
(cd "$here" && CARGO_TARGET_DIR="$root/target" \
  RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static -C strip=symbols" \
  "$work/build-venv/bin/maturin" build --release --target "$target" --out "$work/dist") || fail "maturin build"
wheel=$(ls "$work"/dist/sockcheck-"$version"-*.whl)
listing=$("$py" -m zipfile -l "$wheel")
echo "$listing"
# (grep reads a variable, not a pipe: grep -q closing a pipe early would
# fail the pipeline under pipefail.)
grep -q "^sockcheck-$version.data/scripts/sockcheck " <<<"$listing" || fail "the wheel has no scripts/sockcheck"
grep -q "^sockcheck/py.typed " <<<"$listing" || fail "the wheel has no py.typed"
pass "wheel: $(basename "$wheel")"

step "install it offline into a fresh virtualenv"
venv=$work/venv
"$py" -m venv "$venv"
PIP_CONFIG_FILE=/dev/null "$venv/bin/pip" install -q --disable-pip-version-check --no-index \
  --find-links "$work/dist" sockcheck || fail "offline install of the wheel"
bin=$venv/bin/sockcheck
[ -x "$bin" ] || fail "$bin is missing"
file -b "$bin" | grep -q "statically linked" || fail "$bin is not statically linked: $(file -b "$bin")"
got=$("$bin" --version)
[ "$got" = "sockcheck $version" ] || fail "sockcheck --version printed '$got'"
"$venv/bin/python" - "$venv" <<'PY' || fail "the module does not use the installed copy"
import sys, sockcheck
venv = sys.argv[1]
assert sockcheck.__file__.startswith(venv), sockcheck.__file__
assert sockcheck.find_binary() == ("wheel", f"{venv}/bin/sockcheck"), sockcheck.find_binary()
print("module", sockcheck.__file__, "version", sockcheck.__version__, "binary", sockcheck.find_binary())
PY
pass "offline install: $got, module and binary from $venv"

step "test tools (pytest, pytest-xdist, mypy from PyPI) into that venv"
"$venv/bin/pip" install -q --disable-pip-version-check pytest pytest-xdist mypy || fail "pip install pytest pytest-xdist mypy"

step "mypy --strict on the installed package"
(cd "$work" && "$venv/bin/mypy" --strict -p sockcheck) || fail "mypy --strict -p sockcheck"
pass "mypy --strict"

# From here on: the installed copy only, from outside the tree.
unset SOCKCHECK_BIN SOCKCHECK_FALLBACK SOCKCHECK_STATE_DIR SOCKCHECK_POOL SOCKCHECK_PORTS
cp -R "$here/tests" "$work/tests"
cp -R "$here/tests_xdist" "$work/tests_xdist"

step "the package's tests (pytest -n 4) against the installed copy"
# Strict: a test that needs the binary's port commands fails without them,
# unless this binary predates them (then they skip, saying so, and
# acquire_port uses the fallback's port tokens).
if ! grep -q '^  acquire-port ' <<<"$("$bin" --help)"; then
  echo "SKIP python/ci.sh: $bin has no acquire-port command: its tests skip, sockcheck_port uses the fallback"
  export SOCKCHECK_TEST_ALLOW_NO_PORTS=1
fi
(cd "$work" && SOCKCHECK_TEST_EXPECT_INSTALLED=1 SOCKCHECK_TEST_STRICT=1 \
  "$venv/bin/pytest" -n 4 -p no:cacheprovider -rs tests) || fail "pytest -n 4 tests"
pass "pytest -n 4 tests"

step "64 tests that each bind their sockcheck_port (pytest -n 8)"
(cd "$work" && "$venv/bin/pytest" -n 8 -p no:cacheprovider -q tests_xdist \
  --sockcheck-host 127.87.64.1 --sockcheck-port-range 46750-46799) || fail "pytest -n 8 tests_xdist"
pass "pytest -n 8 tests_xdist"

echo "python/ci.sh: all passed in $((SECONDS - start)) s"
