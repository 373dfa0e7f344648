#!/bin/bash
# A pinned Python venv for test tools (podman-compose, the OTLP decoder), made once and shared.
#
# usage: venv.sh DIR CHECK PIN...
#   DIR     the venv directory
#   CHECK   a shell command that succeeds when the venv is complete (run with $VENV set)
#   PIN...  the pip requirements (`name==version`)
#
# Idempotent and safe to call concurrently (flock on DIR.lock); installs python3-venv through
# tests/bed/install.sh when the interpreter lacks it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VENV=$1 CHECK=$2
shift 2
export VENV
installed() { bash -c "$CHECK" 2>/dev/null; }
installed && exit 0
mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.lock"
flock -w 300 9 || { echo "venv.sh: timed out waiting for $VENV.lock" >&2; exit 1; }
installed && exit 0
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null; then
  "$HERE/install.sh" python3-venv
fi
echo "venv.sh: installing $* into $VENV" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "$@" >&2
installed || { echo "venv.sh: $* did not install into $VENV" >&2; exit 1; }
