#!/usr/bin/env bash
# margo-agent benchmarks, run on demand (not part of tests/run.sh or CI's pass/fail):
#   1. release binary size: x86_64 musl static (the firmware build) and x86_64 gnu
#   2. idle memory of the daemon after 3 unchanged polls, HTTP requests, Podman calls and
#      disk writes per unchanged poll
#   3. publish → all containers running for a 3-service example (median of 5)
#   4. the same compose file with podman-compose up -d, and the ratio
#   5. start-to-first-poll latency
# Brings up its own test bed (tests/bed/up.sh) and tears it down at the end; safe to re-run.
# Knobs: BENCH_RUNS (default 5), CARGO_TARGET_DIR (default ./target).
# See docs/bench.md for figures measured with it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RUNS=${BENCH_RUNS:-5}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
MUSL=x86_64-unknown-linux-musl

say() { printf '%s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
now_ns() { date +%s%N; }
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}'; }
kib_to_mib() { awk -v k="$1" 'BEGIN {printf "%.2f", k/1024}'; }
bytes_h() { awk -v b="$1" 'BEGIN {printf "%d bytes (%.2f MiB)", b, b/1048576}'; }

# ---------------------------------------------------------------- prerequisites and builds
tests/bed/install.sh musl-tools strace python3-venv >/dev/null
rustup target list --installed 2>/dev/null | grep -qx "$MUSL" || rustup target add "$MUSL" >/dev/null
section "build (release profile: opt-level z, LTO, codegen-units 1, panic abort, strip)"
cargo build --release --locked --quiet
# The firmware build: the same command and link arguments as device makers use.
cross/build.sh x86_64 >/dev/null
BIN_GNU=$TARGET_DIR/release/margo-agent
BIN=$TARGET_DIR/$MUSL/release/margo-agent

VENV=$TARGET_DIR/bench-venv
if ! "$VENV/bin/podman-compose" version >/dev/null 2>&1; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q podman-compose==1.6.0
fi

# ---------------------------------------------------------------- the bed
BED=$(mktemp -d /tmp/margo-bench.XXXXXX)
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null
  tests/bed/down.sh "$BED" >/dev/null 2>&1 || true
}
trap cleanup EXIT
MARGO_TB_SKIP_INSTALL=1 tests/bed/up.sh "$BED" >"$TARGET_DIR/bench-bed-up.log" 2>&1 ||
  { cat "$TARGET_DIR/bench-bed-up.log"; exit 1; }
# shellcheck disable=SC1091
. "$BED/env"
W=$BED/bench
mkdir -p "$W"
PLAIN=$MARGO_TB_REG_PLAIN
REGLOG=$BED/logs/registry-plain.log
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bedpodman() { tests/bed/podman.sh --bed "$BED" "$@"; }

# config DEVICE_DIR DEVICE_ID REFERENCE [STATE_FILE]
config() {
  cat >"$1/config.yaml" <<YAML
device_id: $2
desired_state:
  reference: $3
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
state_file: ${4:-$1/state.json}
work_dir: $1/work
log_level: debug
YAML
}
agent() { MARGO_AGENT_LOG=stderr "$BIN" "$@"; }

# deployment ID COMPONENT REPOSITORY GREETING
deployment() {
  cat <<YAML
apiVersion: application.margo.org/v1alpha1
kind: ApplicationDeployment
metadata:
  name: $1
  annotations:
    id: $1
    applicationId: app-$2
spec:
  applicationId: app-$2
  deploymentProfile:
    type: compose
    components:
      - name: $2
        properties:
          repository: $3
          revision: 1.0.0
          wait: true
          timeout: 60s
  parameters:
    greeting:
      value: "$4"
      targets:
        - pointer: GREETING
          components: ["$2"]
YAML
}

# The 3-service example: web (published port) → api → cache; every process exits on SIGTERM.
PORT=$(free_port)
mkdir -p "$W/shop/shop"
cat >"$W/shop/shop/compose.yaml" <<YAML
services:
  web:
    image: $MARGO_TB_IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"]
    environment:
      GREETING: "\${GREETING:-none}"
    ports:
      - "127.0.0.1:$PORT:80"
    depends_on: [api]
  api:
    image: $MARGO_TB_IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"]
    environment:
      GREETING: "\${GREETING:-none}"
    depends_on: [cache]
  cache:
    image: $MARGO_TB_IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
YAML
running_count() { # label=value
  bedpodman ps --filter "label=$1" --filter status=running --format '{{.ID}}' | wc -l
}

# ---------------------------------------------------------------- 1. sizes
section "1. release binary size"
say "x86_64 musl, static, stripped: $(bytes_h "$(stat -c %s "$BIN")")"
say "    file: $(file -b "$BIN" | cut -d, -f1-6)"
say "x86_64 gnu (glibc, dynamic), stripped: $(bytes_h "$(stat -c %s "$BIN_GNU")")"

# ---------------------------------------------------------------- 2. idle daemon
section "2. idle daemon: memory, requests, disk writes (musl binary, poll_interval 1s)"
D=$W/idle
mkdir -p "$D/pkg/idle"
config "$D" bench-idle "$PLAIN/bench/idle/desired:latest"
cat >"$D/pkg/idle/compose.yaml" <<YAML
services:
  main:
    image: $MARGO_TB_IMAGE
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
YAML
agent --config "$D/config.yaml" publish --package "$D/pkg/idle" --to "$PLAIN/bench/idle/idle:1.0.0" >/dev/null
deployment bench-idle-d1 idle "oci://$PLAIN/bench/idle/idle" x >"$D/deployment.yaml"
agent --config "$D/config.yaml" publish --to "$PLAIN/bench/idle/desired:latest" "$D/deployment.yaml" >/dev/null
# Started directly (not through a shell function), so that $! is the agent's own PID.
MARGO_AGENT_LOG=stderr "$BIN" --config "$D/config.yaml" run 2>"$D/daemon.log" &
DAEMON_PID=$!
[ "$(readlink "/proc/$DAEMON_PID/exe")" = "$(readlink -f "$BIN")" ] || { say "PID $DAEMON_PID is not the agent"; exit 1; }
installed() { "$BIN" --config "$D/config.yaml" status --json 2>/dev/null | grep -q '"phase": "Installed"'; }
for _ in $(seq 1 300); do installed && break; sleep 0.1; done
installed || { cat "$D/daemon.log"; say "deployment did not converge"; exit 1; }
heads() { grep -c '"HEAD /v2/bench/idle/desired/manifests/latest' "$REGLOG" || true; }
reqs() { grep '^127.0.0.1 - ' "$REGLOG" | grep -c '/v2/bench/idle/' || true; }
io() { awk -v k="$1:" '$1==k {print $2}' "/proc/$DAEMON_PID/io"; }
status_kib() { awk -v k="$1:" '$1==k {print $2}' "/proc/$DAEMON_PID/status"; }
sleep 1.5 # let the converging pass's last writes settle
H0=$(heads); R0=$(reqs); WB0=$(io write_bytes); WC0=$(io wchar); LOG0=$(stat -c %s "$D/daemon.log")
M0=$(stat -c %Y.%y "$D/state.json")
TRACE=$D/idle.strace
strace -f -qq -yy -e trace=write,writev,sendto,sendmsg,openat,rename,connect -p "$DAEMON_PID" -o "$TRACE" &
STRACE_PID=$!
for _ in $(seq 1 100); do [ "$(heads)" -ge $((H0 + 3)) ] && break; sleep 0.1; done
sleep 0.3
kill -INT "$STRACE_PID" 2>/dev/null; wait "$STRACE_PID" 2>/dev/null || true
H1=$(heads); R1=$(reqs); WB1=$(io write_bytes); WC1=$(io wchar); LOG1=$(stat -c %s "$D/daemon.log")
M1=$(stat -c %Y.%y "$D/state.json")
# Memory without the tracer attached, after one more unchanged poll.
for _ in $(seq 1 30); do [ "$(heads)" -ge $((H1 + 1)) ] && break; sleep 0.1; done
sleep 0.3
RSS=$(status_kib VmRSS); HWM=$(status_kib VmHWM)
POLLS=$((H1 - H0))
say "VmRSS after $((POLLS + 1)) unchanged polls: $RSS KiB ($(kib_to_mib "$RSS") MiB)   [budget 4 MiB]"
say "    of which RssAnon $(status_kib RssAnon) KiB (heap, stacks), RssFile $(status_kib RssFile) KiB (the mapped binary)"
say "VmHWM (peak, includes the converging pass): $HWM KiB ($(kib_to_mib "$HWM") MiB)   [budget 12 MiB]"
say "unchanged polls observed: $POLLS (HEADs of the tag in the plain registry's access log)"
say "HTTP requests per unchanged poll: $(awk -v r=$((R1 - R0)) -v p=$POLLS 'BEGIN {printf "%.2f", r/p}') ($((R1 - R0)) requests to /v2/bench/idle/ in $POLLS polls)   [budget 1 HEAD]"
PODMAN_IO=$(grep -cE '^[0-9]+ +(write|writev|sendto|sendmsg)\([0-9]+<UNIX-STREAM' "$TRACE" || true)
TCP_IO=$(grep -cE '^[0-9]+ +(write|writev|sendto|sendmsg)\([0-9]+<TCP' "$TRACE" || true)
OPEN_W=$(grep -E '^[0-9]+ +openat\(' "$TRACE" | grep -cE 'O_WRONLY|O_RDWR|O_CREAT' || true)
RENAMES=$(grep -cE '^[0-9]+ +rename' "$TRACE" || true)
say "Podman API writes per unchanged poll (strace, UNIX-STREAM sends): $((PODMAN_IO / POLLS))   [budget 0]"
say "registry socket sends per unchanged poll (strace, TCP): $(awk -v r="$TCP_IO" -v p=$POLLS 'BEGIN {printf "%.2f", r/p}')"
say "files opened for writing / renamed in $POLLS polls (strace): $OPEN_W / $RENAMES"
say "bytes written to disk per unchanged poll (/proc/PID/io write_bytes): $(( (WB1 - WB0) / POLLS ))   [budget 0]"
say "    (wchar, bytes passed to write(2) on any fd: $(( (WC1 - WC0) / POLLS ))/poll; debug log growth: $(( (LOG1 - LOG0) / POLLS )) bytes/poll)"
if [ "$M0" = "$M1" ]; then say "state file mtime: unchanged"; else say "state file mtime: CHANGED ($M0 -> $M1)"; fi
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=
cp "$D/state.json" "$W/seed-state.json"

# ---------------------------------------------------------------- 3. publish → running
section "3. publish → all 3 containers running (margo-agent publish + run --once), $RUNS runs"
A=$W/apply
mkdir -p "$A"
REF=$PLAIN/bench/apply/desired:latest
config "$A" bench-apply "$REF"
agent --config "$A/config.yaml" publish --package "$W/shop/shop" --to "$PLAIN/bench/apply/shop:1.0.0" >/dev/null
# Warm-up (untimed): the package download is cached by digest, as on a device.
deployment bench-apply-d1 shop "oci://$PLAIN/bench/apply/shop" warmup >"$A/d.yaml"
agent --config "$A/config.yaml" publish --to "$REF" "$A/d.yaml" >/dev/null
agent --config "$A/config.yaml" run --once 2>>"$A/agent.log"
: >"$A/times"
for i in $(seq 1 "$RUNS"); do
  # Reset (untimed): empty desired state, converged.
  agent --config "$A/config.yaml" publish --to "$REF" >/dev/null
  agent --config "$A/config.yaml" run --once 2>>"$A/agent.log"
  [ "$(running_count org.margo.device-id=bench-apply)" = 0 ] || { say "reset failed"; exit 1; }
  deployment bench-apply-d1 shop "oci://$PLAIN/bench/apply/shop" "run-$i" >"$A/d.yaml"
  t0=$(now_ns)
  agent --config "$A/config.yaml" publish --to "$REF" "$A/d.yaml" >/dev/null
  t1=$(now_ns)
  agent --config "$A/config.yaml" run --once 2>>"$A/agent.log"
  t2=$(now_ns)
  n=$(running_count org.margo.device-id=bench-apply)
  [ "$n" = 3 ] || { tail -30 "$A/agent.log"; say "run $i: $n containers running, expected 3"; exit 1; }
  say "run $i: publish $(( (t1 - t0) / 1000000 )) ms + run --once $(( (t2 - t1) / 1000000 )) ms = $(( (t2 - t0) / 1000000 )) ms"
  echo "$(( (t2 - t0) / 1000000 )) $(( (t2 - t1) / 1000000 ))" >>"$A/times"
done
MARGO_MED=$(cut -d' ' -f1 "$A/times" | median)
MARGO_ONCE_MED=$(cut -d' ' -f2 "$A/times" | median)
say "median publish + run --once: $MARGO_MED ms (run --once alone: $MARGO_ONCE_MED ms)"
agent --config "$A/config.yaml" publish --to "$REF" >/dev/null
agent --config "$A/config.yaml" run --once 2>>"$A/agent.log"

# ---------------------------------------------------------------- 4. podman-compose
section "4. podman-compose $("$VENV/bin/podman-compose" version 2>/dev/null | awk '/podman-compose version/ {print $NF; exit}') up -d, same compose file, same Podman, $RUNS runs"
cat >"$W/podman" <<SH
#!/bin/sh
exec "$REPO/tests/bed/podman.sh" --bed "$BED" "\$@"
SH
chmod +x "$W/podman"
pc() { "$VENV/bin/podman-compose" --podman-path "$W/podman" --in-pod false -p bench-pc -f "$W/shop/shop/compose.yaml" "$@"; }
: >"$W/pc-times"
for i in $(seq 1 "$RUNS"); do
  pc down -t 0 >/dev/null 2>&1 || true
  t0=$(now_ns)
  GREETING=run-$i pc up -d >>"$W/pc.log" 2>&1
  t1=$(now_ns)
  n=$(running_count com.docker.compose.project=bench-pc)
  [ "$n" = 3 ] || { tail -30 "$W/pc.log"; say "podman-compose run $i: $n containers running, expected 3"; exit 1; }
  say "run $i: podman-compose up -d $(( (t1 - t0) / 1000000 )) ms"
  echo "$(( (t1 - t0) / 1000000 ))" >>"$W/pc-times"
done
pc down -t 0 >/dev/null 2>&1 || true
PC_MED=$(median <"$W/pc-times")
say "median podman-compose up -d: $PC_MED ms"
say "ratio margo-agent (publish + run --once) / podman-compose: $(awk -v a="$MARGO_MED" -v b="$PC_MED" 'BEGIN {printf "%.2f", a/b}')"
say "ratio margo-agent (run --once alone) / podman-compose: $(awk -v a="$MARGO_ONCE_MED" -v b="$PC_MED" 'BEGIN {printf "%.2f", a/b}')"

# ---------------------------------------------------------------- 5. start → first poll
section "5. start-to-first-poll latency (musl binary, converged state file), $RUNS runs"
F=$W/first
mkdir -p "$F"
cat >"$F/config.tmpl" <<YAML
device_id: bench-first
desired_state:
  reference: 127.0.0.1:@PORT@/bench/first/desired:latest
  poll_interval: 60s
  poll_jitter: 0s
registries:
  - host: "127.0.0.1:@PORT@"
    plain_http: true
tls:
  ca_bundle: /etc/ssl/certs/ca-certificates.crt
  extra_ca: [$MARGO_TB_CA]
podman:
  socket: $MARGO_TB_PODMAN_SOCK
state_file: @STATE@
work_dir: $F/work
log_level: info
YAML
say "method A: exec (python subprocess, monotonic clock) → first HEAD request line received by a loopback listener"
python3 benches/first_poll.py "$BIN" "$F/config.tmpl" "$F/config.yaml" "$W/seed-state.json" "$RUNS" | tee "$F/a.txt" | sed 's/^/    /'
read -r _ A_MED A_MIN A_MAX < <(grep '^summary' "$F/a.txt")
say "median $A_MED ms (min $A_MIN, max $A_MAX)   [budget 50 ms]"
say "method B: strace -f -ttt, execve → first write of \"HEAD \" (ptrace slows syscalls, so this is an upper bound)"
: >"$F/b.txt"
for i in $(seq 1 "$RUNS"); do
  # The real plain registry this time (the tag does not exist there: a 404 is fine).
  sed -e "s|@PORT@|${PLAIN##*:}|g" -e "s|@STATE@|$F/b-state.json|" "$F/config.tmpl" >"$F/b.yaml"
  cp "$W/seed-state.json" "$F/b-state.json"
  MARGO_AGENT_LOG=stderr timeout -s TERM 2 strace -f -ttt -qq -s 8 \
    -e trace=execve,write,writev,sendto,sendmsg -o "$F/b.strace" \
    "$BIN" --config "$F/b.yaml" run 2>/dev/null || true
  # First line: strace's own execve of the agent; then the first request bytes.
  awk '/execve\(/ && !t0 {t0=$2} /"HEAD / && !t1 {t1=$2} END {if (t0 && t1) printf "%.1f\n", (t1-t0)*1000}' "$F/b.strace" >>"$F/b.txt"
  say "    run $i: $(tail -1 "$F/b.txt") ms"
done
say "median $(median <"$F/b.txt") ms"
