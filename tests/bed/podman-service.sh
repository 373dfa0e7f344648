#!/bin/bash
# Stops, starts or "reboots" the Podman API service of a test bed started by up.sh DIR.
#
# usage: podman-service.sh DIR stop|start|restart|reboot
#   stop     the API service is killed (SIGKILL); containers keep running, as when the
#            service crashes or is restarted by systemd
#   start    the API service is started again, as up.sh starts it; returns once it answers
#   restart  stop, then start
#   reboot   a device reboot: the API service, every conmon and every container process
#            are killed (no stop), the runtime directory (DIR/run, a tmpfs on a real
#            device) and the runtime's state in /run/runc are wiped, and the service is
#            started again. Podman then finds a fresh boot and "refreshes" its containers:
#            running ones become "created", exited ones keep their exit state, and nothing is
#            restarted (podman-restart.service is not part of the bed).
set -euo pipefail
DIR=${1:?usage: podman-service.sh DIR stop|start|restart|reboot}
CMD=${2:?usage: podman-service.sh DIR stop|start|restart|reboot}
DIR=$(cd "$DIR" && pwd -P)
[ -e "$DIR/.margo-testbed" ] || { echo "podman-service.sh: $DIR is not a test bed" >&2; exit 1; }
ENV_FILE=$DIR/env
set -a
# shellcheck disable=SC1090
. "$ENV_FILE"
set +a
is_ours() {
  local cmd
  cmd=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$DIR/"* || $cmd == *"$DIR "* ]]
}
stop_service() { # the API service (its PID is the line tagged "podman" in DIR/pids)
  local old p
  old=$(awk '$2 == "podman" {print $1}' "$DIR/pids")
  for p in $old; do
    if is_ours "$p"; then
      kill -KILL "$p" 2>/dev/null || true
      while [ -e "/proc/$p" ]; do sleep 0.05; done
    fi
  done
  rm -f "$MARGO_TB_PODMAN_SOCK"
}
wipe_runtime() {
# conmon (its command line names DIR) and everything below it: the containers
for d in /proc/[0-9]*; do
  pid=${d#/proc/}
  exe=$(readlink "$d/exe" 2>/dev/null) || continue
  case ${exe##*/} in
    conmon | aardvark-dns | podman) is_ours "$pid" || continue ;;
    *) continue ;;
  esac
  kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
  kill -KILL "$pid" $kids 2>/dev/null || true
done
sleep 0.3
# mounts below the runtime dir and container rootfs mounts, then the runtime dir
awk -v d="$DIR" 'index($5, d "/run") == 1 || index($5, d "/storage/overlay/") == 1 {print $5}' \
  /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
rm -rf --one-file-system "$DIR/run"
# runc keeps its container state in /run/runc on the host (wiped by a real reboot): drop
# the entries of this bed's containers only
for d in /run/runc/*/; do
  [ -f "$d/state.json" ] && grep -q "\"$DIR/" "$d/state.json" && rm -rf "$d"
done
mkdir -p "$DIR/run"
}
start_service() {
grep -v ' podman$' "$DIR/pids" >"$DIR/pids.new" || true
setsid env CONTAINERS_CONF="$MARGO_TB_CONTAINERS_CONF" CONTAINERS_STORAGE_CONF="$MARGO_TB_STORAGE_CONF" \
  CONTAINERS_REGISTRIES_CONF="$MARGO_TB_REGISTRIES_CONF" REGISTRY_AUTH_FILE="$MARGO_TB_AUTH_FILE" \
  HOME="$MARGO_TB_PODMAN_HOME" TMPDIR="$MARGO_TB_PODMAN_TMPDIR" \
  podman --root "$MARGO_TB_PODMAN_ROOT" --runroot "$MARGO_TB_PODMAN_RUNROOT" \
  system service --time=0 "unix://$MARGO_TB_PODMAN_SOCK" </dev/null >>"$DIR/logs/podman.log" 2>&1 &
echo "$! podman" >>"$DIR/pids.new"
mv "$DIR/pids.new" "$DIR/pids"
for _ in $(seq 100); do
  curl -sf --unix-socket "$MARGO_TB_PODMAN_SOCK" http://d/_ping >/dev/null 2>&1 && return 0
  sleep 0.1
done
echo "podman-service.sh: the Podman API service did not come back" >&2
return 1
}
case $CMD in
  stop) stop_service ;;
  start) start_service ;;
  restart) stop_service; start_service ;;
  reboot) stop_service; wipe_runtime; start_service ;;
  *) echo "podman-service.sh: unknown command $CMD" >&2; exit 2 ;;
esac
