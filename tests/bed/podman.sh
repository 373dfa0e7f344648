#!/bin/bash
# Runs the podman CLI against a running test bed's private storage and config
# (the same storage the bed's API service uses), e.g.
#   MARGO_TB_DIR=/tmp/bed tests/bed/podman.sh ps -a
#   tests/bed/podman.sh --bed /tmp/bed images
# The bed is taken from --bed DIR (first argument) or $MARGO_TB_DIR.
set -euo pipefail
if [ "${1:-}" = --bed ]; then
  MARGO_TB_DIR=$2
  shift 2
fi
: "${MARGO_TB_DIR:?set MARGO_TB_DIR to the bed directory (or pass --bed DIR)}"
ENV_FILE=$MARGO_TB_DIR/env
[ -r "$ENV_FILE" ] || { echo "podman.sh: $ENV_FILE not found (is the bed up?)" >&2; exit 1; }
# shellcheck disable=SC1090
set -a
. "$ENV_FILE"
set +a
exec env CONTAINERS_CONF="$MARGO_TB_CONTAINERS_CONF" CONTAINERS_STORAGE_CONF="$MARGO_TB_STORAGE_CONF" \
  CONTAINERS_REGISTRIES_CONF="$MARGO_TB_REGISTRIES_CONF" REGISTRY_AUTH_FILE="$MARGO_TB_AUTH_FILE" \
  HOME="$MARGO_TB_PODMAN_HOME" TMPDIR="$MARGO_TB_PODMAN_TMPDIR" \
  podman --root "$MARGO_TB_PODMAN_ROOT" --runroot "$MARGO_TB_PODMAN_RUNROOT" "$@"
