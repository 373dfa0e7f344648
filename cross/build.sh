#!/usr/bin/env bash
# Builds stripped, static release binaries of margo-agent for the firmware targets and prints
# their sizes. One command:
#
#   cross/build.sh                      # all three targets
#   cross/build.sh aarch64              # only some (x86_64 | aarch64 | armv7, or full triples)
#
# It installs what it needs on Debian (root): the rustup targets, the C cross compilers ring's
# assembly/C parts need (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, musl-tools), and
# qemu-user-static (to smoke-test foreign binaries). Output: target/<triple>/release/margo-agent
# (or $CARGO_TARGET_DIR/...), plus cross/out/margo-agent-<triple> copies when CROSS_OUT is set.
#
# Environment:
#   CARGO_TARGET_DIR   where cargo builds (default: ./target)
#   CROSS_OUT          directory to copy the binaries to (optional)
#   CROSS_NO_INSTALL=1 do not run apt-get / rustup (everything already present)
#   CROSS_SKIP_UNAVAILABLE=1  skip a target whose rustup component cannot be downloaded
#                      (reported as "unavailable") instead of failing
set -euo pipefail
cd "$(dirname "$0")/.."

ALL=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)
targets=()
for a in "${@:-${ALL[@]}}"; do
  case "$a" in
    x86_64|amd64) targets+=(x86_64-unknown-linux-musl) ;;
    aarch64|arm64) targets+=(aarch64-unknown-linux-musl) ;;
    armv7|armhf) targets+=(armv7-unknown-linux-musleabihf) ;;
    *-*) targets+=("$a") ;;
    *) echo "cross/build.sh: unknown target $a (x86_64, aarch64, armv7 or a full triple)" >&2; exit 2 ;;
  esac
done

# Debian package and C compiler per target.
cc_for() {
  case "$1" in
    x86_64-unknown-linux-musl) echo "musl-tools musl-gcc ar" ;;
    aarch64-unknown-linux-musl) echo "gcc-aarch64-linux-gnu aarch64-linux-gnu-gcc aarch64-linux-gnu-ar" ;;
    armv7-unknown-linux-musleabihf) echo "gcc-arm-linux-gnueabihf arm-linux-gnueabihf-gcc arm-linux-gnueabihf-ar" ;;
    *) echo "cross/build.sh: no C compiler known for $1" >&2; exit 2 ;;
  esac
}

if [ "${CROSS_NO_INSTALL:-0}" != 1 ]; then
  pkgs=(qemu-user-static binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf)
  for t in "${targets[@]}"; do read -r pkg _ <<<"$(cc_for "$t")"; pkgs+=("$pkg"); done
  missing=()
  for p in "${pkgs[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== apt-get install ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends: the recommends of the cross compilers and QEMU pull in
    # versions that conflict with backported qemu-utils on these machines.
    apt-get -o DPkg::Lock::Timeout=600 -qq update >&2 || true
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
fi

installed=$(rustup target list --installed 2>/dev/null || true)
built=()
unavailable=()
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$installed"; then
    if [ "${CROSS_NO_INSTALL:-0}" = 1 ] || ! rustup target add "$t" >&2 2>/tmp/cross-rustup.$$; then
      if [ "${CROSS_SKIP_UNAVAILABLE:-0}" = 1 ]; then
        echo "cross/build.sh: rust-std for $t is not installable here ($(grep -m1 -o 'http request[^)]*' /tmp/cross-rustup.$$ 2>/dev/null || echo 'not installed')); skipping it" >&2
        unavailable+=("$t"); rm -f /tmp/cross-rustup.$$; continue
      fi
      cat /tmp/cross-rustup.$$ >&2 2>/dev/null || true; rm -f /tmp/cross-rustup.$$
      echo "cross/build.sh: cannot install the rustup target $t" >&2; exit 1
    fi
    rm -f /tmp/cross-rustup.$$
  fi
  read -r _ cc ar <<<"$(cc_for "$t")"
  up=$(echo "$t" | tr 'a-z-' 'A-Z_')
  low=$(echo "$t" | tr '-' '_')
  echo "== cargo build --release --target $t (CC=$cc)" >&2
  # ring's C/assembly is compiled with the target's gcc; the Rust musl targets link
  # statically with their bundled musl (self-contained crt objects), gcc is only the driver.
  # x86_64: rustc's own musl link (self-contained crt, the host cc as driver); musl-gcc as
  # the linker would mix the system musl into it and crash at start.
  linker=()
  [ "$t" = x86_64-unknown-linux-musl ] || linker=("CARGO_TARGET_${up}_LINKER=$cc")
  # No .eh_frame_hdr: with panic = "abort" nothing unwinds; the table only served backtraces
  # (RUST_BACKTRACE) and costs ~65 KB on aarch64.
  flags_var="CARGO_TARGET_${up}_RUSTFLAGS"
  flags="${!flags_var:-} -C link-arg=-Wl,--no-eh-frame-hdr"
  env "CC_$low=$cc" "AR_$low=$ar" "${linker[@]}" "$flags_var=${flags# }" \
    cargo build --release --locked --target "$t" >&2
  built+=("$t")
done

dir=${CARGO_TARGET_DIR:-target}
[ -n "${CROSS_OUT:-}" ] && mkdir -p "$CROSS_OUT"
printf '%-34s %12s  %s\n' TARGET BYTES FILE
for t in "${built[@]}"; do
  bin="$dir/$t/release/margo-agent"
  size=$(stat -c %s "$bin")
  kind=$(file -b "$bin" 2>/dev/null | grep -o 'statically linked\|static-pie linked\|dynamically linked' || true)
  if [ "$kind" = "dynamically linked" ]; then
    echo "cross/build.sh: $bin is dynamically linked; a static binary was expected" >&2; exit 1
  fi
  # Smoke test: the binary starts (foreign architectures under qemu-user).
  case "$t" in
    x86_64-*) run=() ;; aarch64-*) run=(qemu-aarch64-static) ;; armv7-*) run=(qemu-arm-static) ;;
  esac
  if ! "${run[@]}" "$bin" --version >/dev/null; then
    echo "cross/build.sh: $bin --version failed" >&2; exit 1
  fi
  printf '%-34s %12s  %s (%s)\n' "$t" "$size" "$bin" "${kind:-?}"
  if [ -n "${CROSS_OUT:-}" ]; then cp "$bin" "$CROSS_OUT/margo-agent-$t"; fi
done
for t in "${unavailable[@]}"; do printf '%-34s %12s  %s\n' "$t" "-" "rust-std not installable here"; done
