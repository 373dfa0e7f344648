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
#   CROSS_SKIP_UNAVAILABLE=1  skip a target that can be built neither way (below), reported
#                      as "unavailable", instead of failing
#
# Fallback (armv7 only): when `rustup target add armv7-unknown-linux-musleabihf` fails (some
# rustup mirrors answer 404 for its rust-std), the script says so in one stderr line and builds
# std itself from the rust-src component (installed with rustup if missing):
#   RUSTC_BOOTSTRAP=1 cargo build --release -Z build-std=std,panic_abort --target armv7-...
# with std's default features. A std built this way has no bundled ("self-contained") musl, so
# the C side comes from Debian: `dpkg --add-architecture armhf` and musl-dev:armhf (musl 1.2.3:
# crt1.o/crti.o/crtn.o, libc.a, headers and the arm-linux-musleabihf-gcc wrapper, which is CC for
# ring and the link driver), rustc links with -C link-self-contained=no, and the unwinder std
# references (libunwind.a) is gcc's libgcc_eh.a from gcc-arm-linux-gnueabihf, linked under that
# name from $CARGO_TARGET_DIR/build-std-<triple>/. With panic = "abort" nothing unwinds; the
# unwinder only serves backtraces. The result is static, like the rustup build.
# RUSTC_BOOTSTRAP=1 is set for that one cargo call only. When the fallback is impossible too
# (no rust-src, no package), the target is "unavailable".
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

# Installs the Debian packages given that are not installed yet.
apt_install() {
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "== apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # --no-install-recommends: the recommends of the cross compilers and QEMU pull in
  # versions that conflict with backported qemu-utils on these machines.
  apt-get -o DPkg::Lock::Timeout=600 -qq update >&2 || true
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
}

if [ "${CROSS_NO_INSTALL:-0}" != 1 ]; then
  pkgs=(qemu-user-static binutils-aarch64-linux-gnu binutils-arm-linux-gnueabihf)
  for t in "${targets[@]}"; do read -r pkg _ <<<"$(cc_for "$t")"; pkgs+=("$pkg"); done
  apt_install "${pkgs[@]}"
fi

dir=${CARGO_TARGET_DIR:-target}

# Fallback for a target whose rust-std rustup cannot install: build std from rust-src against a
# Debian multiarch musl. Per target: Debian architecture, musl gcc wrapper (from musl-dev:<arch>),
# the gcc whose libgcc_eh.a serves as libunwind.a.
build_std_for() {
  case "$1" in
    armv7-unknown-linux-musleabihf) echo "armhf arm-linux-musleabihf-gcc arm-linux-gnueabihf-gcc" ;;
    *) return 1 ;;
  esac
}

# Prepares the build-std fallback for $1, installing what is missing unless CROSS_NO_INSTALL=1.
# On success sets fb_cc (the musl gcc) and fb_libs (the directory holding libunwind.a); on
# failure sets fb_why (what is missing).
prepare_build_std() {
  local t=$1 spec arch gcc eh
  fb_why=
  spec=$(build_std_for "$t") || { fb_why="no build-std fallback is known for $t"; return 1; }
  read -r arch fb_cc gcc <<<"$spec"
  if [ ! -f "$(rustc --print sysroot)/lib/rustlib/src/rust/library/std/Cargo.toml" ]; then
    if [ "${CROSS_NO_INSTALL:-0}" = 1 ] || ! rustup component add rust-src >&2; then
      fb_why="the rust-src component is not installed"; return 1
    fi
  fi
  if [ "${CROSS_NO_INSTALL:-0}" != 1 ]; then
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
      dpkg --add-architecture "$arch" >&2 || { fb_why="dpkg --add-architecture $arch failed"; return 1; }
      apt-get -o DPkg::Lock::Timeout=600 -qq update >&2 || true
    fi
    apt_install "musl-dev:$arch" || { fb_why="musl-dev:$arch is not installable"; return 1; }
  fi
  command -v "$fb_cc" >/dev/null || { fb_why="$fb_cc (Debian musl-dev:$arch) is not installed"; return 1; }
  eh=$("$gcc" -print-file-name=libgcc_eh.a 2>/dev/null || true)
  [ -f "$eh" ] || { fb_why="$gcc has no libgcc_eh.a"; return 1; }
  fb_libs=$(realpath -m "$dir/build-std-$t")
  mkdir -p "$fb_libs" && ln -sf "$eh" "$fb_libs/libunwind.a" || { fb_why="cannot write $fb_libs"; return 1; }
}

installed=$(rustup target list --installed 2>/dev/null || true)
built=()
unavailable=()
declare -A via_build_std=()
# No call frame tables: with panic = "abort" nothing unwinds. --no-eh-frame-hdr drops the
# lookup table (~65 KB on aarch64), cross/no-eh-frame.ld the tables themselves (~320 KB).
size_flags="-C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$PWD/cross/no-eh-frame.ld"
for t in "${targets[@]}"; do
  build_std=0
  if ! grep -qx "$t" <<<"$installed"; then
    if [ "${CROSS_NO_INSTALL:-0}" = 1 ] || ! rustup target add "$t" >&2 2>/tmp/cross-rustup.$$; then
      why=$(grep -m1 -o 'http request[^)]*' /tmp/cross-rustup.$$ 2>/dev/null || echo 'not installed')
      if prepare_build_std "$t"; then
        echo "cross/build.sh: rust-std for $t is not installable here ($why); building std from rust-src instead (RUSTC_BOOTSTRAP=1 cargo -Z build-std, Debian's musl-dev)" >&2
        build_std=1
        via_build_std[$t]=1
      elif [ "${CROSS_SKIP_UNAVAILABLE:-0}" = 1 ]; then
        echo "cross/build.sh: rust-std for $t is not installable here ($why; $fb_why); skipping it" >&2
        unavailable+=("$t"); rm -f /tmp/cross-rustup.$$; continue
      else
        cat /tmp/cross-rustup.$$ >&2 2>/dev/null || true; rm -f /tmp/cross-rustup.$$
        echo "cross/build.sh: cannot install the rustup target $t ($fb_why)" >&2; exit 1
      fi
    fi
    rm -f /tmp/cross-rustup.$$
  fi
  read -r _ cc ar <<<"$(cc_for "$t")"
  up=$(echo "$t" | tr 'a-z-' 'A-Z_')
  low=$(echo "$t" | tr '-' '_')
  if [ "$build_std" = 1 ]; then
    # Debian's musl (headers for ring's C, crt objects and libc.a for the link) instead of the
    # self-contained musl a rustup rust-std would bring; libunwind.a = gcc's libgcc_eh.a.
    flags_var="CARGO_TARGET_${up}_RUSTFLAGS"
    flags="${!flags_var:-} -C link-self-contained=no -L native=$fb_libs $size_flags"
    echo "== cargo build --release --target $t -Z build-std=std,panic_abort (CC=$fb_cc)" >&2
    env RUSTC_BOOTSTRAP=1 "CC_$low=$fb_cc" "AR_$low=$ar" "CARGO_TARGET_${up}_LINKER=$fb_cc" \
      "$flags_var=${flags# }" \
      cargo build --release --locked --target "$t" -Z build-std=std,panic_abort >&2
    built+=("$t")
    continue
  fi
  echo "== cargo build --release --target $t (CC=$cc)" >&2
  # ring's C/assembly is compiled with the target's gcc; the Rust musl targets link
  # statically with their bundled musl (self-contained crt objects), gcc is only the driver.
  # x86_64: rustc's own musl link (self-contained crt, the host cc as driver); musl-gcc as
  # the linker would mix the system musl into it and crash at start.
  linker=()
  [ "$t" = x86_64-unknown-linux-musl ] || linker=("CARGO_TARGET_${up}_LINKER=$cc")
  flags_var="CARGO_TARGET_${up}_RUSTFLAGS"
  flags="${!flags_var:-} $size_flags"
  env "CC_$low=$cc" "AR_$low=$ar" "${linker[@]}" "$flags_var=${flags# }" \
    cargo build --release --locked --target "$t" >&2
  built+=("$t")
done

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
  note=
  if [ -n "${via_build_std[$t]:-}" ]; then
    # A std built here is less travelled: also parse the example configuration.
    if ! "${run[@]}" "$bin" --config examples/config.yaml check-config >/dev/null; then
      echo "cross/build.sh: $bin check-config examples/config.yaml failed" >&2; exit 1
    fi
    note=", std built from rust-src"
  fi
  printf '%-34s %12s  %s (%s%s)\n' "$t" "$size" "$bin" "${kind:-?}" "$note"
  if [ -n "${CROSS_OUT:-}" ]; then cp "$bin" "$CROSS_OUT/margo-agent-$t"; fi
done
for t in "${unavailable[@]}"; do printf '%-34s %12s  %s\n' "$t" "-" "rust-std not installable here, no build-std fallback"; done
