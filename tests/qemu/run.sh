#!/usr/bin/env bash
# Firmware-integration tests run by tests/run.sh (CI), against the test bed's plain registry:
#
#   1. tests/firmware/check.py: Yocto layer, recipe, crate list vs Cargo.lock, kas, boards
#   2. aarch64: cross/build.sh aarch64 (release, stripped, static) once; `--version` and
#      `check-config` under qemu-aarch64-static; QEMU boot: smoke + read-only state disk;
#      power cuts ($MARGO_QEMU_CUTS, default 20)
#   3. x86_64: a static musl build (debug profile unless MARGO_QEMU_X86_RELEASE=1, to keep CI
#      short); QEMU boot: smoke + read-only state disk
#
#   tests/qemu/run.sh BED_ENV_FILE
#
# Figures (JSON lines) go to $CARGO_TARGET_DIR/qemu/figures.jsonl; console logs beside them.
set -euo pipefail
cd "$(dirname "$0")/../.."
ENV_FILE=$1
T0=$(date +%s)
TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
OUT=$TARGET_DIR/qemu
rm -rf "$OUT"; mkdir -p "$OUT"
REG=$(sed -n 's/^MARGO_TB_REG_PLAIN=//p' "$ENV_FILE" | tr -d '"')
[ -n "$REG" ] || { echo "tests/qemu/run.sh: no MARGO_TB_REG_PLAIN in $ENV_FILE" >&2; exit 1; }
HOST_BIN=$TARGET_DIR/debug/margo-agent

tests/bed/install.sh python3-yaml qemu-user-static cpio e2fsprogs file >&2
echo "== firmware files (layer, recipe, crates, kas, boards)"
python3 tests/firmware/check.py --binary "$HOST_BIN"

echo "== cross build aarch64 (release, static, stripped)"
cross/build.sh aarch64
A64=$TARGET_DIR/aarch64-unknown-linux-musl/release/margo-agent
qemu-aarch64-static "$A64" --version
qemu-aarch64-static "$A64" --config board/qemu-arm64/config.yaml check-config >/dev/null
# The release binary's OpenPGP reader on the target architecture: the RSA (2048/3072/4096) and
# Ed25519 keys' self-signatures verify; an ECDSA key is refused by name (exit 3).
keys_cfg() {
  python3 - "$@" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open("board/qemu-arm64/config.yaml"))
cfg.setdefault("signatures", {})["trusted_keys"] = sys.argv[2:]
open(sys.argv[1], "w").write(yaml.safe_dump(cfg))
PY
}
K=$PWD/tests/data/pgp
keys_cfg "$OUT/keys.yaml" "$K/key-rsa2048.asc" "$K/key-rsa3072.asc" "$K/key-rsa4096.asc" "$K/key-a.asc" "$K/key-subkey.asc"
qemu-aarch64-static "$A64" --config "$OUT/keys.yaml" check-config >/dev/null
keys_cfg "$OUT/ecdsa.yaml" "$K/key-rsa3072.asc" "$K/key-p256.asc"
rc=0; qemu-aarch64-static "$A64" --config "$OUT/ecdsa.yaml" check-config >/dev/null 2>"$OUT/ecdsa.err" || rc=$?
if [ "$rc" != 3 ] || ! grep -q "ECDSA keys are not supported" "$OUT/ecdsa.err"; then
  echo "tests/qemu/run.sh: an ECDSA trusted key was not refused (exit $rc): $(cat "$OUT/ecdsa.err")" >&2; exit 1
fi
echo "qemu-aarch64-static: --version, check-config and OpenPGP keys ok"

echo "== QEMU aarch64: boot, poll, record, no Podman; read-only state disk"
python3 tests/qemu/boot_test.py smoke --arch aarch64 --binary "$A64" --publisher "$HOST_BIN" \
  --registry "$REG" --work "$OUT/a64-smoke" --json "$OUT/figures.jsonl"
echo "== QEMU aarch64: ${MARGO_QEMU_CUTS:-20} power cuts"
python3 tests/qemu/boot_test.py powercut --arch aarch64 --binary "$A64" --publisher "$HOST_BIN" \
  --registry "$REG" --cuts "${MARGO_QEMU_CUTS:-20}" --work "$OUT/a64-cut" --json "$OUT/figures.jsonl"

echo "== x86_64 musl build"
if [ "${MARGO_QEMU_X86_RELEASE:-0}" = 1 ]; then
  cross/build.sh x86_64
  X86=$TARGET_DIR/x86_64-unknown-linux-musl/release/margo-agent
else
  rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
  tests/bed/install.sh musl-tools >&2
  cargo build -q --locked --target x86_64-unknown-linux-musl --bin margo-agent
  # Without debug info: the debug binary (>100 MB) would not unpack in the guest's RAM.
  strip -o "$OUT/margo-agent-x86_64" "$TARGET_DIR/x86_64-unknown-linux-musl/debug/margo-agent"
  X86=$OUT/margo-agent-x86_64
fi
echo "== QEMU x86_64: boot, poll, record, no Podman; read-only state disk"
python3 tests/qemu/boot_test.py smoke --arch x86_64 --binary "$X86" --publisher "$HOST_BIN" \
  --registry "$REG" --work "$OUT/x86-smoke" --json "$OUT/figures.jsonl"
echo "== firmware tests passed in $(( $(date +%s) - T0 )) s"
