#!/usr/bin/env bash
# Fleet Manager figures (docs/bench.md, "WFM"): WFM requests and bytes per hour at idle with a
# WFM configured, and how long 100 reports queued during a 1-hour outage take to arrive.
# Brings up its own test bed and the test WFM (tests/wfm/wfm.py); on demand only, needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
tests/bed/install.sh >/dev/null
BED=$(mktemp -d /tmp/margo-bench-wfm.XXXXXX)
trap 'tests/bed/down.sh "$BED" >/dev/null 2>&1 || true' EXIT
MARGO_TB_SKIP_INSTALL=1 tests/bed/up.sh "$BED" >/dev/null
MARGO_TESTBED="$BED/env" cargo test -q --test e2e_wfm bench_ -- --ignored --nocapture 2>&1 \
  | grep '^BENCH'
