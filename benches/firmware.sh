#!/usr/bin/env bash
# Firmware bench: stripped static binary sizes per target, boot-to-first-poll in QEMU (TCG),
# and the power-cut run in bench mode (200 cuts by default).
#
#   benches/firmware.sh                 # needs root (packages, a test bed of its own)
#   MARGO_BENCH_CUTS=50 benches/firmware.sh
#   MARGO_BENCH_SKIP_BUILD=1 …          # reuse the binaries already built
#
# Prints a table and writes $CARGO_TARGET_DIR/bench-firmware/figures.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
OUT=$TARGET_DIR/bench-firmware
mkdir -p "$OUT"; : >"$OUT/figures.jsonl"
CUTS=${MARGO_BENCH_CUTS:-200}

if [ "${MARGO_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  CROSS_SKIP_UNAVAILABLE=1 cross/build.sh | tee "$OUT/sizes.txt"
fi
cargo build -q --bin margo-agent
HOST_BIN=$TARGET_DIR/debug/margo-agent

BED=$(mktemp -d /tmp/margo-bench-fw.XXXXXX)
trap 'tests/bed/down.sh "$BED" >/dev/null 2>&1 || true' EXIT
tests/bed/up.sh "$BED" >/dev/null
REG=$(sed -n 's/^MARGO_TB_REG_PLAIN=//p' "$BED/env" | tr -d '"')

for arch in x86_64 aarch64; do
  bin=$TARGET_DIR/$arch-unknown-linux-musl/release/margo-agent
  for i in 1 2 3; do
    python3 tests/qemu/boot_test.py smoke --arch "$arch" --binary "$bin" --publisher "$HOST_BIN" \
      --registry "$REG" --work "$OUT/smoke-$arch-$i" --json "$OUT/figures.jsonl" >/dev/null
  done
done
python3 tests/qemu/boot_test.py powercut --arch aarch64 \
  --binary "$TARGET_DIR/aarch64-unknown-linux-musl/release/margo-agent" --publisher "$HOST_BIN" \
  --registry "$REG" --cuts "$CUTS" --work "$OUT/cut-aarch64" --json "$OUT/figures.jsonl" >/dev/null

python3 - "$OUT/figures.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
for arch in ["x86_64", "aarch64"]:
    s = [r for r in rows if r["mode"] == "smoke" and r["arch"] == arch]
    if s:
        poll = statistics.median(r["boot_to_first_record_s"] for r in s)
        start = statistics.median(r["boot_to_agent_start_s"] for r in s)
        print(f"{arch}: QEMU start → agent started {start:.2f} s, → first poll recorded {poll:.2f} s (median of {len(s)})")
for r in rows:
    if r["mode"] == "powercut":
        print(f"power cut {r['arch']}: {r['cuts']} cuts, {r['corrupt_states']} corrupt states, "
              f"convergence {r['convergence_rate']:.0%}, final converged {r['final_converged']}, "
              f"{r['revisions_recorded_seen']} revisions recorded, {r['wall_s']} s")
PY
