#!/bin/bash
# The Python venv of tests/otlp_receiver.py: the official OpenTelemetry proto definitions
# (PyPI opentelemetry-proto, pinned) and protobuf, to decode what margo-agent exports.
#
# usage: otlp-venv.sh          make sure the venv exists, print its python path
#
# Installs into tests/bed/venv-otlp (or $MARGO_TB_OTLP_VENV) on first use. Idempotent and safe
# to call concurrently (flock).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PINS=(opentelemetry-proto==1.45.2)
VENV=${MARGO_TB_OTLP_VENV:-$HERE/venv-otlp}
PY=/usr/bin/python3

installed() {
  "$VENV/bin/python" -c 'import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2, google.protobuf.json_format' 2>/dev/null
}
if ! installed; then
  mkdir -p "$(dirname "$VENV")"
  exec 9>"$VENV.lock"
  flock -w 300 9 || { echo "otlp-venv.sh: timed out waiting for $VENV.lock" >&2; exit 1; }
  if ! installed; then
    [ -x "$PY" ] || PY=$(command -v python3)
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
      "$HERE/install.sh" python3-venv
    fi
    echo "otlp-venv.sh: installing ${PINS[*]} into $VENV" >&2
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PINS[@]}" >&2
    installed || { echo "otlp-venv.sh: ${PINS[*]} did not install into $VENV" >&2; exit 1; }
  fi
  exec 9>&-
fi
echo "$VENV/bin/python"
