#!/bin/bash
# Installs the Debian packages the margo-agent test bed needs.
# Idempotent: runs `apt-get update` at most once, and only when something is missing.
# Extra packages can be requested as arguments: install.sh pkg1 pkg2 ...
set -euo pipefail

PKGS=(
  podman runc conmon catatonit         # container engine (runc: crun fails on these machines)
  netavark aardvark-dns                # Podman network backend + container DNS (dns_enabled networks)
  containernetworking-plugins          # CNI plugins (only used with MARGO_TB_NET_BACKEND=cni)
  iptables iproute2                    # netavark/CNI port forwarding and masquerade
  busybox-static                       # the test image's only binary
  docker-registry                      # CNCF distribution 2.8 (the three registries)
  apache2-utils                        # htpasswd -B
  skopeo                               # copying images between registries/archives (tests, debugging)
  gnupg                                # signing test packages (e2e_packages.rs)
  faketime                             # a device clock far in the past (tests/service.rs)
  openssl ca-certificates curl         # test CA, readiness probes
  python3 python3-cryptography         # token_server.py, tests/wfm/wfm.py (run with /usr/bin/python3)
  libtss2-dev swtpm pkg-config         # feature `tpm`: tpm2-tss to link, a software TPM to test against
)
if [ "${MARGO_TB_NET_BACKEND:-netavark}" = cni ]; then
  # CNI has no built-in DNS: the dnsname plugin (runs dnsmasq) provides name resolution.
  PKGS+=(golang-github-containernetworking-plugin-dnsname dnsmasq-base)
fi
PKGS+=("$@")

missing=()
for p in "${PKGS[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  echo "install.sh: missing packages (${missing[*]}) and not root" >&2
  exit 1
fi
echo "install.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
for i in 1 2 3; do
  apt-get "${APT_OPTS[@]}" update -qq >&2 && break
  [ $i = 3 ] && { echo "install.sh: apt-get update failed" >&2; exit 1; }
  sleep 5
done
apt-get "${APT_OPTS[@]}" install -y -qq "${missing[@]}" >&2
