#!/bin/bash
# Stops a test bed started by up.sh DIR and removes DIR.
# Idempotent and best effort: a bed that is already (partly) down is fine.
#
# usage: down.sh DIR
# env:   MARGO_TB_KEEP_DIR=1       stop everything but keep DIR (logs) for inspection
#        MARGO_TB_KEEP_IPTABLES=1  do not remove idle netavark/CNI iptables chains
set -uo pipefail

DIR=${1:-}
[ -n "$DIR" ] || { echo "usage: down.sh DIR" >&2; exit 2; }
[ -d "$DIR" ] || exit 0 # already down
DIR=$(cd "$DIR" && pwd -P)
if [ ! -e "$DIR/.margo-testbed" ]; then
  echo "down.sh: $DIR has no .margo-testbed marker: not a test bed, not touching it" >&2
  exit 1
fi
say() { echo "down.sh: $*" >&2; }

# A process is ours if it is alive and its command line mentions DIR
# (guards against PID reuse).
is_ours() {
  local pid=$1 cmd
  [ -r "/proc/$pid/cmdline" ] || return 1
  cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$DIR/"* || $cmd == *"$DIR "* ]]
}
stop_pids() { # pids... : TERM, wait up to 5 s, then KILL
  local pids=() p i
  for p in "$@"; do is_ours "$p" && pids+=("$p"); done
  [ ${#pids[@]} -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null
  for i in $(seq 50); do
    local alive=()
    for p in "${pids[@]}"; do is_ours "$p" && alive+=("$p"); done
    [ ${#alive[@]} -gt 0 ] || return 0
    pids=("${alive[@]}")
    sleep 0.1
  done
  say "killing (SIGKILL) ${pids[*]}"
  kill -KILL "${pids[@]}" 2>/dev/null
  sleep 0.1
}

# ---------------------------------------------------------------- PIDs we started
PIDS=()
PODMAN_PID=
if [ -f "$DIR/pids" ]; then
  while read -r pid name; do
    [ -n "$pid" ] || continue
    PIDS+=("$pid")
    [ "$name" = podman ] && PODMAN_PID=$pid
  done <"$DIR/pids"
fi
if [ -f "$DIR/env" ]; then
  for p in $(sed -n 's/^MARGO_TB_PIDS="\(.*\)"$/\1/p' "$DIR/env"); do PIDS+=("$p"); done
fi

# 1. the API service first, so nothing new gets created while we clean up
[ -n "$PODMAN_PID" ] && stop_pids "$PODMAN_PID"

# 2. every container, pod, network, volume and image of the private Podman
#    (system reset stops containers, tears their networks down - bridges,
#    iptables rules, aardvark-dns entries - and deletes DIR/storage and DIR/run;
#    it only touches the paths configured in DIR/containers.conf, never /etc)
if [ -f "$DIR/containers.conf" ] && [ -d "$DIR/storage" ] && command -v podman >/dev/null; then
  PODMAN=(env CONTAINERS_CONF="$DIR/containers.conf" CONTAINERS_STORAGE_CONF="$DIR/storage.conf"
    CONTAINERS_REGISTRIES_CONF="$DIR/registries.conf" REGISTRY_AUTH_FILE="$DIR/auth.json"
    HOME="$DIR/home" TMPDIR="$DIR/tmp"
    podman --root "$DIR/storage" --runroot "$DIR/run")
  # kill containers right away (system reset would give each one its stop timeout)
  timeout 60 "${PODMAN[@]}" pod rm -af -t 0 >/dev/null 2>&1
  timeout 60 "${PODMAN[@]}" rm -af -v -t 0 >/dev/null 2>&1
  if ! out=$(timeout 120 "${PODMAN[@]}" system reset -f 2>&1); then
    say "podman system reset failed, removing objects one by one: $out"
    for n in $(timeout 30 "${PODMAN[@]}" network ls -q 2>/dev/null); do
      [ "$n" = podman ] || timeout 30 "${PODMAN[@]}" network rm -f "$n" >/dev/null 2>&1
    done
    timeout 60 "${PODMAN[@]}" volume rm -af >/dev/null 2>&1
  fi
fi

# 3. registries, token server, and anything left that we started
stop_pids "${PIDS[@]}"

# 4. stragglers still running from DIR (conmon, podman cleanup, ...): only
#    known executables whose command line references DIR
STRAY=()
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  [ "$pid" = $$ ] && continue
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case ${exe##*/} in
    conmon | podman | runc | docker-registry | python3*) is_ours "$pid" && STRAY+=("$pid") ;;
  esac
done
if [ ${#STRAY[@]} -gt 0 ]; then
  say "stopping leftover processes ${STRAY[*]}"
  stop_pids "${STRAY[@]}"
fi

# 5. the bed's default-network bridge, if the backend left it behind
BRIDGE=$(sed -n 's/^MARGO_TB_BRIDGE=//p' "$DIR/env" 2>/dev/null)
[ -n "$BRIDGE" ] || BRIDGE=$(sed -n 's/.*"network_interface": *"\([^"]*\)".*/\1/p' "$DIR/networks/podman.json" 2>/dev/null)
[ -n "$BRIDGE" ] || BRIDGE=$(sed -n 's/.*"bridge": *"\(mtb[^"]*\)".*/\1/p' "$DIR/cni/87-podman.conflist" 2>/dev/null)
if [ -n "$BRIDGE" ] && ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link del "$BRIDGE" 2>/dev/null || say "could not delete bridge $BRIDGE"
fi

# 6. netavark/CNI keep their shared chains (NETAVARK_FORWARD, NETAVARK-HOSTPORT-*,
#    CNI-HOSTPORT-*, ...) after the last network is torn down. Remove them only if
#    they did not exist before this bed came up and no network uses them any more.
cleanup_chains() { # iptables-binary prefix ; e.g. iptables NETAVARK
  local ipt=$1 prefix=$2 t rules mine
  for t in nat filter; do
    rules=$($ipt -w 5 -t "$t" -S 2>/dev/null) || return 0
    mine=$(grep -E "(^-A |-j )$prefix[-_]" <<<"$rules" || true)
    # any rule with an address or a port (a network's masquerade/forward rules,
    # a published port) means some network is still set up: leave everything
    if grep -Eq -- '[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+|[0-9a-fA-F]*:[0-9a-fA-F:]*/[0-9]+|--dport' <<<"$mine"; then return 0; fi
  done
  for t in nat filter; do
    rules=$($ipt -w 5 -t "$t" -S 2>/dev/null) || continue
    # delete jumps into the chains from other chains, then flush and delete them
    grep -E "^-A [^ ]+ .*-j $prefix[-_]" <<<"$rules" | grep -Ev "^-A $prefix[-_]" |
      while read -r line; do
        eval "$ipt -w 5 -t $t ${line/#-A/-D}" 2>/dev/null
      done
    for c in $(sed -n "s/^-N \($prefix[-_][^ ]*\)\$/\1/p" <<<"$rules"); do
      $ipt -w 5 -t "$t" -F "$c" 2>/dev/null
    done
    for c in $(sed -n "s/^-N \($prefix[-_][^ ]*\)\$/\1/p" <<<"$rules"); do
      $ipt -w 5 -t "$t" -X "$c" 2>/dev/null
    done
  done
}
if [ "${MARGO_TB_KEEP_IPTABLES:-0}" != 1 ] && [ -f "$DIR/iptables.before" ]; then
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    grep -q "^$ipt NETAVARK" "$DIR/iptables.before" || cleanup_chains $ipt NETAVARK
    grep -q "^$ipt CNI" "$DIR/iptables.before" || cleanup_chains $ipt CNI
  done
fi

# CNI leftovers: the dnsname plugin's INPUT rule for port 53 on a bridge that is gone,
# host-local IPAM dirs holding no reservation, and empty state dirs this bed created.
# (networks removed earlier with "podman network rm" leave the same debris, so all
# CNI bridges/dirs that appeared after up.sh and are now unused are considered)
if [ -f "$DIR/iptables.before" ] && command -v iptables >/dev/null; then
  iptables -w 5 -S INPUT 2>/dev/null | grep -E '^-A INPUT -i cni-[^ ]+ -p udp -m udp --dport 53 -j ACCEPT$' |
    while read -r rule; do
      b=$(awk '{print $4}' <<<"$rule")
      ip link show "$b" >/dev/null 2>&1 && continue
      grep -qxF "iptables-rule $rule" "$DIR/iptables.before" && continue
      iptables -w 5 -D INPUT -i "$b" -p udp -m udp --dport 53 -j ACCEPT 2>/dev/null
    done
fi
if [ -f "$DIR/hostdirs.before" ] && [ -d /var/lib/cni/networks ]; then
  for d in /var/lib/cni/networks/*; do
    [ -d "$d" ] || continue
    grep -qxF "$d" "$DIR/hostdirs.before" && continue
    # only "lock" and "last_reserved_ip.*": no container holds an address
    if [ -z "$(find "$d" -mindepth 1 ! -name lock ! -name 'last_reserved_ip.*' -print -quit)" ]; then
      rm -rf "$d"
    fi
  done
  for d in /var/lib/cni/networks /var/lib/cni/results /var/lib/cni /run/containers/cni/dnsname /run/containers/cni; do
    [ -d "$d" ] || continue
    grep -qxF "$d" "$DIR/hostdirs.before" && continue
    rmdir "$d" 2>/dev/null
  done
fi

# 7. anything still mounted below DIR (container rootfs, bind mounts), deepest first,
#    so that removing DIR can never reach through a mount
awk -v d="$DIR" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
  while read -r m; do umount -l "$m" 2>/dev/null || say "could not unmount $m"; done

# 8. the directory itself
if [ "${MARGO_TB_KEEP_DIR:-0}" = 1 ]; then
  rm -f "$DIR/env"
  say "stopped; kept $DIR (MARGO_TB_KEEP_DIR=1)"
else
  rm -rf --one-file-system "$DIR" 2>/dev/null || { sleep 0.5; rm -rf --one-file-system "$DIR"; } ||
    say "could not remove all of $DIR"
fi
exit 0
