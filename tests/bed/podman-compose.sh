#!/bin/bash
# podman-compose (PyPI, pinned) against the test bed's Podman, for the parity test and bench.
#
# usage: podman-compose.sh [--bed DIR] [--install] [PODMAN-COMPOSE ARGS...]
#   --bed DIR   the bed (default: $MARGO_TB_DIR)
#   --install   only make sure the venv exists, then exit (no bed needed)
#
# Installs podman-compose==1.6.0 (the pin benches/run.sh uses) into a venv on first use:
# tests/bed/venv, or $MARGO_TB_PC_VENV. Idempotent and safe to call concurrently (flock).
# Then runs it with `--podman-path tests/bed/podman.sh` (the podman CLI on the bed's private
# storage and configuration) and `--in-pod false` (one container per service, as
# margo-agent and docker compose create them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PIN=podman-compose==1.6.0
VENV=${MARGO_TB_PC_VENV:-$HERE/venv}

if [ "${1:-}" = --bed ]; then
  export MARGO_TB_DIR=$2
  shift 2
fi
INSTALL_ONLY=0
if [ "${1:-}" = --install ]; then
  INSTALL_ONLY=1
  shift
fi

# Complete when the pinned version is installed and runs.
"$HERE/venv.sh" "$VENV" \
  '[ "$("$VENV/bin/pip" show podman-compose | sed -n "s/^Version: //p")" = '"${PIN#*==}"' ] && "$VENV/bin/podman-compose" version >/dev/null' \
  "$PIN"
[ $INSTALL_ONLY = 1 ] && exit 0

: "${MARGO_TB_DIR:?set MARGO_TB_DIR to the bed directory (or pass --bed DIR)}"
export MARGO_TB_DIR
exec "$VENV/bin/podman-compose" --podman-path "$HERE/podman.sh" --in-pod false "$@"
