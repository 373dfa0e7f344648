#!/usr/bin/env bash
# The main job, end to end, on a fresh machine: start a local registry and Podman (the test
# bed), build margo-agent, publish an example Compose package and a desired state naming it,
# and let the agent converge it. Prints the agent's status and the demo web page.
# KEEP=1 leaves everything running (stop it with tests/bed/down.sh DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

tests/bed/install.sh
cargo build --release
BIN=$REPO/target/release/margo-agent

BED=$(mktemp -d /tmp/margo-demo.XXXXXX)
if [ "${KEEP:-0}" != 1 ]; then
  trap 'tests/bed/down.sh "$BED" >/dev/null 2>&1 || true' EXIT
fi
MARGO_TB_SKIP_INSTALL=1 tests/bed/up.sh "$BED"
# shellcheck disable=SC1091
. "$BED/env"

WORK=$BED/demo
mkdir -p "$WORK/hello"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# The device's config: registry over plain HTTP (local demo only), the bed's Podman socket.
cat > "$WORK/config.yaml" <<YAML
device_id: demo-device
desired_state:
  reference: $MARGO_TB_REG_PLAIN/fleet/demo-device/desired-state:latest
  poll_interval: 5s
registries:
  - host: "$MARGO_TB_REG_PLAIN"
    plain_http: true
podman:
  socket: $MARGO_TB_PODMAN_SOCK
state_file: $WORK/state.json
work_dir: $WORK/work
YAML

# An example Compose package: a web page (busybox httpd) and a worker, with a parameter.
sed -e "s|@IMAGE@|$MARGO_TB_IMAGE|g" -e "s|@PORT@|$PORT|g" examples/demo/compose.yaml > "$WORK/hello/compose.yaml"
"$BIN" --config "$WORK/config.yaml" publish --package "$WORK/hello" \
  --to "$MARGO_TB_REG_PLAIN/apps/hello:1.0.0"

# The desired state: one ApplicationDeployment naming that package.
sed -e "s|@REPO@|oci://$MARGO_TB_REG_PLAIN/apps/hello|g" examples/demo/deployment.yaml > "$WORK/deployment.yaml"
"$BIN" --config "$WORK/config.yaml" publish --version 1 \
  --to "$MARGO_TB_REG_PLAIN/fleet/demo-device/desired-state:latest" "$WORK/deployment.yaml"

echo "== margo-agent run --once"
MARGO_AGENT_LOG=stderr "$BIN" --config "$WORK/config.yaml" run --once
echo "== margo-agent status"
"$BIN" --config "$WORK/config.yaml" status
echo "== http://127.0.0.1:$PORT/"
for _ in $(seq 1 20); do
  if out=$(curl -fsS "http://127.0.0.1:$PORT/" 2>/dev/null); then echo "$out"; break; fi
  sleep 0.5
done
echo "== a second pass: one HEAD request, nothing else (exit code 0, no log lines)"
MARGO_AGENT_LOG=stderr "$BIN" --config "$WORK/config.yaml" run --once
echo "exit code: $?"
if [ "${KEEP:-0}" = 1 ]; then
  echo "left running; stop with: tests/bed/down.sh $BED"
fi
