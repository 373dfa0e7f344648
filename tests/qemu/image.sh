#!/usr/bin/env bash
# Builds a small bootable image for QEMU: a Debian cloud kernel and an initramfs holding the
# static busybox, the virtio modules, the margo-agent binary and tests/qemu/init.
#
#   tests/qemu/image.sh ARCH BINARY OUTDIR      ARCH = x86_64 | aarch64
#
# Writes OUTDIR/vmlinuz and OUTDIR/initrd.gz. Kernel and busybox packages are fetched with
# `apt-get download` into $MARGO_QEMU_CACHE (default /var/cache/margo-qemu) the first time;
# QEMU, cpio and the arm64 architecture are installed/added when missing (root).
set -euo pipefail
ARCH=$1 BIN=$2 OUT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${MARGO_QEMU_CACHE:-/var/cache/margo-qemu}
case "$ARCH" in
  x86_64) DEB=amd64 QPKG=qemu-system-x86 ;;
  aarch64) DEB=arm64 QPKG=qemu-system-arm ;;
  *) echo "image.sh: ARCH must be x86_64 or aarch64" >&2; exit 2 ;;
esac
mkdir -p "$CACHE" "$OUT"

need=()
for p in "$QPKG" cpio e2fsprogs; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  # --no-install-recommends: QEMU's recommends conflict with backported qemu-utils here.
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >&2
fi

# The cloud kernel the machine's own metapackage points at (one ABI for both arches).
if ! ls "$CACHE"/x-$DEB/boot/vmlinuz-* >/dev/null 2>&1 || [ ! -x "$CACHE/x-$DEB/bin/busybox" ]; then
  if [ "$DEB" = arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  fi
  kpkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9.-]*-cloud\)-amd64.*/\1/p' | head -1)
  [ -n "$kpkg" ] || { echo "image.sh: cannot find the cloud kernel package" >&2; exit 1; }
  bpkg=busybox-static
  [ "$DEB" = arm64 ] && bpkg=busybox-static:arm64
  (cd "$CACHE" && chown _apt . 2>/dev/null; apt-get download -qq "$kpkg-$DEB:$DEB" "$bpkg" >&2)
  for d in "$CACHE"/"$kpkg"-"$DEB"_*.deb "$CACHE"/busybox-static_*_"$DEB".deb; do
    dpkg -x "$d" "$CACHE/x-$DEB"
  done
fi
KDIR=$(ls -d "$CACHE"/x-$DEB/lib/modules/* | head -1)
cp "$(ls "$CACHE"/x-$DEB/boot/vmlinuz-* | head -1)" "$OUT/vmlinuz"

R=$(mktemp -d)
trap 'rm -rf "$R"' EXIT
mkdir -p "$R"/{bin,sbin,etc/margo-agent,proc,sys,dev,tmp,run,modules,var/lib/margo-agent,usr/bin}
cp "$CACHE/x-$DEB/bin/busybox" "$R/bin/busybox"
for a in sh mount umount insmod ip sleep cat echo ls mkdir rm sync poweroff reboot kill \
         sed grep date uptime head tail tr wc dmesg printf test true false seq; do
  ln -s busybox "$R/bin/$a"
done
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci \
         failover net_failover virtio_net virtio_blk; do
  f=$(find "$KDIR" -name "$m.ko" | head -1)
  [ -n "$f" ] || { echo "image.sh: module $m not found in $KDIR" >&2; exit 1; }
  cp "$f" "$R/modules/"
done
install -m 0755 "$BIN" "$R/usr/bin/margo-agent"
install -m 0755 "$HERE/init" "$R/init"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -1 >"$OUT/initrd.gz")
echo "$OUT/vmlinuz $OUT/initrd.gz"
