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
"$HERE/venv.sh" "$VENV" \
  '"$VENV/bin/python" -c "import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2, google.protobuf.json_format"' \
  "${PINS[@]}"
echo "$VENV/bin/python"
