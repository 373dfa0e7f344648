#!/usr/bin/env bash
# Parity bench (on demand, not part of tests/run.sh or CI's pass/fail): the largest project of
# the parity corpus (tests/data/compose/parity/, most services) applied on the same Podman
#   - by margo-agent, the real path: release binary, `publish` of the package and of a
#     deployment, then `run --once` (waits until every container runs and is healthy), and
#   - by `podman-compose up -d` (1.6.0, tests/bed/podman-compose.sh),
# BENCH_RUNS times each (default 5) from a clean state (no containers, networks or volumes of
# the project), after one untimed warm-up each; prints the medians and the ratio.
#
# Uses the bed at $MARGO_TB_DIR when set (left running), else brings one up and tears it down.
# Knobs: BENCH_RUNS, PARITY_CASE (a corpus directory name instead of the largest),
# MARGO_BIN (a prebuilt binary instead of `cargo build --release`), CARGO_TARGET_DIR.
# See docs/bench.md ("Parity bench") for figures measured with it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${BENCH_RUNS:-5}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
CORPUS=$REPO/tests/data/compose/parity
PC_VENV=${MARGO_TB_PC_VENV:-$REPO/tests/bed/venv}

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# ---------------------------------------------------------------- tools
tests/bed/podman-compose.sh --install
PC_VERSION=$("$PC_VENV/bin/pip" show podman-compose | sed -n 's/^Version: //p')
if [ -n "${MARGO_BIN:-}" ]; then
  BIN=$MARGO_BIN
else
  cargo build --release --locked --quiet
  BIN=$TARGET_DIR/release/margo-agent
fi

# Size of a project: services that run (no profiles), then networks + volumes + mounts.
# PyYAML comes with podman-compose.
project_size() {
  "$PC_VENV/bin/python" - "$1" <<'EOF'
import sys, yaml
with open(sys.argv[1]) as fh:
    f = yaml.safe_load(fh)
svcs = [s for s in f.get("services", {}).values() if not s.get("profiles")]
other = len(f.get("networks") or {}) + len(f.get("volumes") or {})
other += sum(len(s.get("volumes", [])) for s in svcs)
print(len(svcs), other)
EOF
}
# The largest app-shaped case; more-keys (a zoo of less common keys, meant to grow) and
# bugs/ (margo-agent bug fixtures, no compose.yaml at their top) are not app-shaped.
if [ -z "${PARITY_CASE:-}" ]; then
  PARITY_CASE=$(
    for d in "$CORPUS"/*/; do
      c=$(basename "$d")
      [ -f "$d/compose.yaml" ] && [ "$c" != more-keys ] || continue
      echo "$(project_size "$d/compose.yaml") $c"
    done | sort -k1,1n -k2,2n | tail -1 | cut -d' ' -f3
  )
fi
CASE=$PARITY_CASE
SRC=$CORPUS/$CASE
[ -f "$SRC/compose.yaml" ] || { say "no compose.yaml in $SRC"; exit 1; }
read -r SERVICES _ < <(project_size "$SRC/compose.yaml")

# ---------------------------------------------------------------- the bed
OWN_BED=0
if [ -n "${MARGO_TB_DIR:-}" ] && [ -r "$MARGO_TB_DIR/env" ]; then
  BED=$MARGO_TB_DIR
else
  OWN_BED=1
  BED=$(mktemp -d /tmp/margo-parity-bench.XXXXXX)
  MARGO_TB_SKIP_INSTALL=${MARGO_TB_SKIP_INSTALL:-0} tests/bed/up.sh "$BED" >"$BED.up.log" 2>&1 ||
    { cat "$BED.up.log"; exit 1; }
fi
# shellcheck disable=SC1091
. "$BED/env"
W=$(mktemp -d "$BED/parity-bench.XXXXXX")
bedpodman() { tests/bed/podman.sh --bed "$BED" "$@"; }
pc() {
  (cd "$W/pc/$CASE" && env -i PATH="$PATH" "${VARS[@]}" \
    "$REPO/tests/bed/podman-compose.sh" --bed "$BED" -p bench-pc "$@")
}
cleanup() {
  set +e
  pc down -v -t 0 >/dev/null 2>&1
  wipe_margo >/dev/null 2>&1
  if [ $OWN_BED = 1 ]; then
    tests/bed/down.sh "$BED" >/dev/null 2>&1
    rm -f "$BED.up.log"
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT
running_count() { bedpodman ps --filter "label=$1" --filter status=running --format '{{.ID}}' | wc -l; }

# Variables both tools get: the image and a free host port per ${…_PORT} of the file.
VARS=("IMAGE=$MARGO_TB_IMAGE")
for v in $(grep -o '\${[A-Z0-9_]*_PORT}' "$SRC/compose.yaml" | tr -d '${}' | sort -u); do
  VARS+=("$v=$(free_port)")
done

section "parity bench: case \"$CASE\" ($SERVICES services), $RUNS runs each, bed $BED"
say "margo-agent: $BIN ($(stat -c %s "$BIN") bytes); podman-compose $PC_VERSION; $(bedpodman --version)"
say "variables: ${VARS[*]}"

# ---------------------------------------------------------------- margo-agent
M=$W/margo
mkdir -p "$M/pkg"
cp -a "$SRC" "$M/pkg/$CASE"
PLAIN=$MARGO_TB_REG_PLAIN
REF=$PLAIN/bench/parity/desired:latest
cat >"$M/config.yaml" <<YAML
device_id: bench-parity
desired_state:
  reference: $REF
  poll_interval: 1s
  poll_jitter: 0s
  retry_max: 2s
registries:
  - host: "$PLAIN"
    plain_http: true
tls:
  ca_bundle: /nonexistent
  extra_ca: [$MARGO_TB_CA]
podman:
  socket: $MARGO_TB_PODMAN_SOCK
  call_timeout: 30s
  stop_timeout: 2s
state_file: $M/state.json
work_dir: $M/work
log_level: debug
YAML
agent() { MARGO_AGENT_LOG=stderr "$BIN" --config "$M/config.yaml" "$@"; }
agent publish --package "$M/pkg/$CASE" --to "$PLAIN/bench/parity/$CASE:1.0.0" >/dev/null
{
  cat <<YAML
apiVersion: application.margo.org/v1alpha1
kind: ApplicationDeployment
metadata:
  name: bench-parity
  annotations:
    id: bench-parity
    applicationId: app-$CASE
spec:
  applicationId: app-$CASE
  deploymentProfile:
    type: compose
    components:
      - name: $CASE
        properties:
          repository: oci://$PLAIN/bench/parity/$CASE
          revision: 1.0.0
          wait: true
          timeout: 120s
  parameters:
YAML
  for kv in "${VARS[@]}"; do
    k=${kv%%=*}
    cat <<YAML
    $(echo "$k" | tr 'A-Z_' 'a-z-'):
      value: "${kv#*=}"
      targets:
        - pointer: $k
          components: ["$CASE"]
YAML
  done
} >"$M/deployment.yaml"
# Clean state: empty desired state applied, and the project's named volumes removed (the
# agent keeps volumes when it removes a deployment, as they hold the workload's data).
wipe_margo() {
  agent publish --to "$REF" >/dev/null
  agent run --once 2>>"$M/agent.log"
  bedpodman volume ls -q --filter label=org.margo.device-id=bench-parity | xargs -r "$REPO/tests/bed/podman.sh" --bed "$BED" volume rm -f >/dev/null
}
# Warm-up (untimed): the package download is cached by digest, as on a device.
agent publish --to "$REF" "$M/deployment.yaml" >/dev/null
agent run --once 2>>"$M/agent.log" || { tail -30 "$M/agent.log"; say "margo-agent warm-up failed"; exit 1; }
: >"$M/times"
for i in $(seq 1 "$RUNS"); do
  wipe_margo
  [ "$(running_count org.margo.device-id=bench-parity)" = 0 ] || { say "reset failed"; exit 1; }
  t0=$(now_ns)
  agent publish --to "$REF" "$M/deployment.yaml" >/dev/null
  t1=$(now_ns)
  agent run --once 2>>"$M/agent.log" || { tail -30 "$M/agent.log"; say "run $i: run --once failed"; exit 1; }
  t2=$(now_ns)
  n=$(running_count org.margo.device-id=bench-parity)
  [ "$n" = "$SERVICES" ] || { tail -30 "$M/agent.log"; say "run $i: $n containers running, expected $SERVICES"; exit 1; }
  say "margo-agent run $i: publish $(( (t1 - t0) / 1000000 )) ms + run --once $(( (t2 - t1) / 1000000 )) ms = $(( (t2 - t0) / 1000000 )) ms"
  echo "$(( (t2 - t0) / 1000000 )) $(( (t2 - t1) / 1000000 ))" >>"$M/times"
done
wipe_margo
MARGO_MED=$(cut -d' ' -f1 "$M/times" | median)
MARGO_ONCE_MED=$(cut -d' ' -f2 "$M/times" | median)

# ---------------------------------------------------------------- podman-compose
mkdir -p "$W/pc"
cp -a "$SRC" "$W/pc/$CASE"
pc up -d >>"$W/pc.log" 2>&1 || { tail -30 "$W/pc.log"; say "podman-compose warm-up failed"; exit 1; }
: >"$W/pc-times"
for i in $(seq 1 "$RUNS"); do
  pc down -v -t 0 >>"$W/pc.log" 2>&1
  [ "$(running_count com.docker.compose.project=bench-pc)" = 0 ] || { say "reset failed"; exit 1; }
  t0=$(now_ns)
  pc up -d >>"$W/pc.log" 2>&1 || { tail -30 "$W/pc.log"; say "run $i: podman-compose up -d failed"; exit 1; }
  t1=$(now_ns)
  n=$(running_count com.docker.compose.project=bench-pc)
  [ "$n" = "$SERVICES" ] || { tail -30 "$W/pc.log"; say "run $i: $n containers running, expected $SERVICES"; exit 1; }
  say "podman-compose run $i: up -d $(( (t1 - t0) / 1000000 )) ms"
  echo "$(( (t1 - t0) / 1000000 ))" >>"$W/pc-times"
done
pc down -v -t 0 >>"$W/pc.log" 2>&1
PC_MED=$(median <"$W/pc-times")

# ---------------------------------------------------------------- result
section "result (medians of $RUNS)"
say "margo-agent publish + run --once (running and healthy): $MARGO_MED ms (run --once alone: $MARGO_ONCE_MED ms)"
say "podman-compose up -d (returns once started; ignores health conditions on Podman < 4.6): $PC_MED ms"
say "ratio margo-agent (publish + run --once) / podman-compose: $(awk -v a="$MARGO_MED" -v b="$PC_MED" 'BEGIN {printf "%.2f", a/b}')"
say "ratio margo-agent (run --once alone) / podman-compose: $(awk -v a="$MARGO_ONCE_MED" -v b="$PC_MED" 'BEGIN {printf "%.2f", a/b}')"
