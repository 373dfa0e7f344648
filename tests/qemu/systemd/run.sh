#!/usr/bin/env bash
# Systemd for real (opt-in; ~5-10 min): a debootstrap-built Debian 12 rootfs with systemd and
# Podman, booted under QEMU x86_64 (TCG), margo-agent installed with the project's unit and
# enabled. Checks: Type=notify readiness and STATUS=, a deployment converged through the
# guest's Podman (image pulled from the host's registry), structured fields in
# `journalctl -o json`, the watchdog restarting a hung (SIGSTOPped) agent, and a broken config
# failing once without a restart storm.
#
#   tests/qemu/systemd/run.sh BED_ENV_FILE STATIC_X86_64_BINARY
#
# The pristine rootfs is cached in $MARGO_QEMU_CACHE/debroot (default /var/cache/margo-qemu).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
ENV_FILE=$1 BIN=$2
CACHE=${MARGO_QEMU_CACHE:-/var/cache/margo-qemu}
WORK=${MARGO_SD_WORK:-$(mktemp -d /tmp/margo-sd.XXXXXX)}
HOST_BIN=${MARGO_HOST_BIN:-$REPO/target/debug/margo-agent}
REG=$(sed -n 's/^MARGO_TB_REG_PLAIN=//p' "$ENV_FILE" | tr -d '"')
PORT=${REG##*:}
GREG=10.0.2.2:$PORT
mkdir -p "$WORK"

# Kernel, modules and busybox (the same cache as tests/qemu/image.sh).
"$REPO/tests/qemu/image.sh" x86_64 "$BIN" "$WORK/image" >/dev/null
KDIR=$(ls -d "$CACHE"/x-amd64/lib/modules/* | head -1)

if [ ! -x "$CACHE/debroot/usr/bin/podman" ]; then
  tests_pkgs=(debootstrap)
  [ "$(dpkg-query -W -f='${db:Status-Status}' debootstrap 2>/dev/null || true)" = installed ] ||
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${tests_pkgs[@]}" >&2
  rm -rf "$CACHE/debroot"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,dbus,podman,runc,conmon,catatonit,netavark,aardvark-dns,iptables,iproute2,ca-certificates,kmod,systemd-resolved \
    bookworm "$CACHE/debroot" http://deb.debian.org/debian >&2
fi

echo "== rootfs" >&2
R=$WORK/root
rm -rf "$R"; cp -a "$CACHE/debroot" "$R"
mkdir -p "$R/lib/modules"; cp -a "$KDIR" "$R/lib/modules/"
# dpkg -x leaves no modules.dep/alias: without them udev and Podman (overlay) cannot load modules.
chroot "$R" /sbin/depmod "$(basename "$KDIR")"
install -m 0755 "$BIN" "$R/usr/bin/margo-agent"
install -m 0644 "$REPO/examples/systemd/margo-agent.service" "$R/etc/systemd/system/"
mkdir -p "$R/etc/systemd/system/margo-agent.service.d"
cat >"$R/etc/systemd/system/margo-agent.service.d/test.conf" <<CONF
# Test timings: a short watchdog (still above podman.call_timeout, 60 s: one blocking Podman
# call cannot ping), a short abort, quick restarts.
[Service]
WatchdogSec=75s
TimeoutAbortSec=5s
RestartSec=2s
CONF
install -m 0755 "$HERE/margo-check.sh" "$R/usr/local/bin/margo-check.sh"
cat >"$R/etc/systemd/system/margo-check.service" <<'UNIT'
[Unit]
Description=margo-agent checks (test)
After=margo-agent.service
[Service]
Type=oneshot
ExecStart=/usr/local/bin/margo-check.sh
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$R/etc/systemd/system/multi-user.target.wants" "$R/etc/systemd/system/sockets.target.wants" \
  "$R/etc/systemd/system/network-online.target.wants"
ln -sf /etc/systemd/system/margo-agent.service "$R/etc/systemd/system/multi-user.target.wants/"
ln -sf /etc/systemd/system/margo-check.service "$R/etc/systemd/system/multi-user.target.wants/"
ln -sf /lib/systemd/system/podman.socket "$R/etc/systemd/system/sockets.target.wants/"
ln -sf /lib/systemd/system/systemd-networkd.service "$R/etc/systemd/system/multi-user.target.wants/"
ln -sf /lib/systemd/system/systemd-networkd-wait-online.service "$R/etc/systemd/system/network-online.target.wants/"
mkdir -p "$R/etc/systemd/network"
printf '[Match]\nName=eth0\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' >"$R/etc/systemd/network/10-eth0.network"
mkdir -p "$R/etc/containers"
printf '[engine]\nruntime = "runc"\n' >"$R/etc/containers/containers.conf"
mkdir -p "$R/etc/margo-agent"
cat >"$R/etc/margo-agent/config.yaml" <<CFG
desired_state:
  reference: $GREG/margo/sd/desired:latest
  poll_interval: 5s
  poll_jitter: 0s
  retry_max: 10s
registries:
  - host: "$GREG"
    plain_http: true
CFG
echo margo-sd >"$R/etc/hostname"
: >"$R/etc/machine-id"
truncate -s 3G "$WORK/root.img"
mkfs.ext4 -q -F -d "$R" "$WORK/root.img"

echo "== initramfs" >&2
I=$WORK/initramfs
rm -rf "$I"; mkdir -p "$I/bin" "$I/modules" "$I/proc" "$I/sys" "$I/dev"
cp "$CACHE/x-amd64/bin/busybox" "$I/bin/"
for a in sh mount umount insmod sleep mkdir switch_root poweroff echo; do ln -s busybox "$I/bin/$a"; done
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
  cp "$(find "$KDIR" -name "$m.ko" | head -1)" "$I/modules/"
done
install -m 0755 "$HERE/initramfs-init" "$I/init"
(cd "$I" && find . | cpio -o -H newc --quiet | gzip -1 >"$WORK/initrd-sd.gz")

echo "== publish package and desired state to $REG" >&2
mkdir -p "$WORK/pkg"
cat >"$WORK/pkg/compose.yaml" <<YAML
services:
  web:
    image: $GREG/library/busybox:1.35
    command: ["httpd", "-f", "-p", "8080"]
YAML
"$HOST_BIN" publish --plain-http --package "$WORK/pkg" --to "$REG/margo/sd/pkg/web:1.0.0" >&2
cat >"$WORK/deployment.yaml" <<YAML
apiVersion: application.margo.org/v1alpha1
kind: ApplicationDeployment
metadata:
  name: sd-demo
  annotations:
    id: sd-demo
    applicationId: app-web
spec:
  applicationId: app-web
  deploymentProfile:
    type: compose
    components:
      - name: web
        properties:
          repository: oci://$GREG/margo/sd/pkg/web
          revision: 1.0.0
          wait: true
          timeout: 300s
YAML
"$HOST_BIN" publish --plain-http --to "$REG/margo/sd/desired:latest" "$WORK/deployment.yaml" >&2

echo "== boot (systemd under TCG; several minutes)" >&2
T0=$(date +%s)
timeout "${MARGO_SD_TIMEOUT:-900}" qemu-system-x86_64 -M q35 -cpu max -accel tcg -m 1536 -smp 2 \
  -nographic -no-reboot -kernel "$WORK/image/vmlinuz" -initrd "$WORK/initrd-sd.gz" \
  -append "console=ttyS0 quiet panic=-1 net.ifnames=0 systemd.show_status=0" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= \
  -drive file="$WORK/root.img",if=none,id=d0,format=raw -device virtio-blk-pci,drive=d0 \
  >"$WORK/console.log" 2>&1 || true
echo "== console: $WORK/console.log ($(( $(date +%s) - T0 )) s)" >&2
grep -a '^MARGO-SD' "$WORK/console.log" | tr -d '\r' >"$WORK/results.txt" || true
cat "$WORK/results.txt"

fail=0
check() { if grep -qE "$2" "$WORK/results.txt"; then echo "ok   $1"; else echo "FAIL $1"; fail=1; fi; }
check "Type=notify readiness: the unit became active" '^MARGO-SD ready active=active type=notify'
check "STATUS= line visible in systemctl" '^MARGO-SD status2=.+'
check "deployment converged through the guest's Podman" '^MARGO-SD phase=Installed'
check "journalctl -o json carries DEPLOYMENT_ID" '^MARGO-SD journal_deployment_entries=[1-9]'
check "watchdog restarted the hung agent" '^MARGO-SD after_hang restarts=[1-9][0-9]* newpid=[1-9][0-9]* active=active'
check "watchdog timeout in the journal" '^MARGO-SD watchdog_line=.*[Ww]atchdog timeout'
# (a manual `systemctl restart` resets NRestarts; 0 after 40 s means systemd did not retry)
check "broken config: failed, exit 3, no restart" '^MARGO-SD badconfig active=failed result=exit-code restarts_before=[0-9]+ restarts_after=0 exit=3$'
check "broken config: one clear line" '^MARGO-SD badconfig_lines=1$'
check "finished" '^MARGO-SD DONE'
exit $fail
