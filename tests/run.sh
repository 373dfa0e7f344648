#!/usr/bin/env bash
# Sets up everything margo-agent's tests need on a fresh Debian machine and runs the whole
# suite: formatting, lints, unit tests, and end-to-end tests against a real Podman service and
# real CNCF distribution registries (tests/bed/up.sh), torn down afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)

tests/bed/install.sh
tests/bed/otlp-venv.sh >/dev/null   # the OTLP receiver's decoder (tests/telemetry.rs)
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== no merge conflict markers"
if git grep -n -E '^(<<<<<<<|=======|>>>>>>>)( |$)' -- . ':!target' 2>/dev/null; then
  echo "tests/run.sh: merge conflict markers left in the files above" >&2; exit 1
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps -q
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "== installing cargo-deny"
  cargo install cargo-deny --locked -q
fi
echo "== cargo deny (licenses, bans, sources; the advisory database is not reachable from these machines)"
cargo deny check licenses bans sources
echo "== build"
cargo build --all-targets

BED=$(mktemp -d /tmp/margo-bed.XXXXXX)
cleanup() { tests/bed/down.sh "$BED" >/dev/null 2>&1 || true; }
trap cleanup EXIT
MARGO_TB_SKIP_INSTALL=1 tests/bed/up.sh "$BED"
export MARGO_TESTBED="$BED/env"

echo "== cargo test"
cargo test --all-targets -- --test-threads=2
echo "== cargo test --features tpm (device key in swtpm)"
cargo test --features tpm --test e2e_tpm
echo "== firmware: cross build, Yocto layer checks, QEMU-booted tests (tests/qemu/run.sh)"
tests/qemu/run.sh "$BED/env"
echo "== all tests passed in $(( $(date +%s) - T0 )) s"
