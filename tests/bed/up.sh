#!/bin/bash
# Brings up the margo-agent test bed on loopback, all state under DIR:
#   - a Podman API service with private storage/config (unix socket DIR/podman.sock)
#   - a busybox test image (built locally, pushed to the registries)
#   - three CNCF distribution registries: PLAIN (http), BASIC (https+htpasswd),
#     TOKEN (https+bearer tokens from token_server.py)
# and writes DIR/env (sourceable KEY=VALUE lines). Stop it with down.sh DIR.
#
# usage: up.sh DIR
# env:   MARGO_TB_TIMEOUT            readiness timeout in seconds (default 30)
#        MARGO_TB_TOKEN_EXPIRES_IN   token lifetime reported/issued (default 60)
#        MARGO_TB_NET_BACKEND        netavark (default) | cni
#        MARGO_TB_KEEP_ON_FAIL=1     leave a half-started bed running for debugging
#        MARGO_TB_SKIP_INSTALL=1     do not run install.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
T0=${EPOCHREALTIME/./}
LAST=$T0
step() { # print elapsed time (total and since last step)
  local now=${EPOCHREALTIME/./}
  printf '[bed %5d ms | +%4d ms] %s\n' $(((now - T0) / 1000)) $(((now - LAST) / 1000)) "$*"
  LAST=$now
}
die() { echo "up.sh: ERROR: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: up.sh DIR"
[ "$(id -u)" = 0 ] || die "must run as root (rootful Podman with private storage)"
DIR=$1
if [ -e "$DIR" ] && [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then
  die "$DIR exists and is not empty (use a fresh directory, or down.sh it first)"
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
[[ $DIR =~ ^[A-Za-z0-9/._+-]+$ ]] || die "DIR must contain only [A-Za-z0-9/._+-] (got '$DIR')"
SOCK=$DIR/podman.sock
[ ${#SOCK} -lt 100 ] || die "DIR path too long for a unix socket: $SOCK"
: >"$DIR/.margo-testbed" # marker: down.sh only deletes directories that carry it
: >"$DIR/pids"           # every started PID, appended as we go (down.sh reads it)
# iptables chains that exist before the bed (down.sh only removes idle chains not listed here)
for ipt in iptables ip6tables; do
  for t in nat filter; do $ipt -w 5 -t $t -S 2>/dev/null | sed -n "s/^-N /$ipt /p"; done
done >"$DIR/iptables.before" || true
iptables -w 5 -S INPUT 2>/dev/null | sed 's/^/iptables-rule /' >>"$DIR/iptables.before" || true
# host-wide CNI state directories that exist before the bed (CNI backend leaves empty ones behind)
find /var/lib/cni /run/containers/cni -maxdepth 2 -type d >"$DIR/hostdirs.before" 2>/dev/null || true
mkdir -p "$DIR/logs"

TIMEOUT=${MARGO_TB_TIMEOUT:-30}
EXPIRES_IN=${MARGO_TB_TOKEN_EXPIRES_IN:-60}
NET_BACKEND=${MARGO_TB_NET_BACKEND:-netavark}
USER_NAME=margo
USER_PASS=margo-pass
RO_USER=margo-ro
RO_PASS=margo-ro-pass
PY=/usr/bin/python3

OK=0
on_exit() {
  local rc=$?
  [ $OK = 1 ] && return 0
  set +e
  trap '' PIPE INT TERM # clean up even if our output pipe is gone
  echo "up.sh: bring-up FAILED (rc=$rc); last log lines:" >&2
  for f in "$DIR"/logs/*.log; do
    [ -s "$f" ] || continue
    [ "${f##*/}" = openssl.log ] && [ -s "$DIR/tls/token-chain.pem" ] && continue
    echo "---- $f" >&2
    tail -n 15 "$f" >&2
  done
  if [ "${MARGO_TB_KEEP_ON_FAIL:-0}" = 1 ]; then
    echo "up.sh: MARGO_TB_KEEP_ON_FAIL=1: leaving $DIR as is (clean up with down.sh $DIR)" >&2
  else
    "$HERE/down.sh" "$DIR" >&2 || true
  fi
}
trap on_exit EXIT

# ---------------------------------------------------------------- packages
if [ "${MARGO_TB_SKIP_INSTALL:-0}" != 1 ]; then
  MARGO_TB_NET_BACKEND=$NET_BACKEND "$HERE/install.sh"
fi
step "packages present"

# ---------------------------------------------------------------- ports
# Ask the kernel for free loopback ports (all bound at once so they differ).
read -r P_PLAIN P_BASIC P_TOKEN P_AUTH < <($PY - <<'EOF'
import socket
socks = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)
REG_PLAIN=127.0.0.1:$P_PLAIN
REG_BASIC=127.0.0.1:$P_BASIC
REG_TOKEN=127.0.0.1:$P_TOKEN
TOKEN_REALM=https://127.0.0.1:$P_AUTH/token
TOKEN_SERVICE=margo-tb-registry
TOKEN_ISSUER=margo-tb-token-issuer

# ---------------------------------------------------------------- TLS material
T=$DIR/tls
mkdir -p "$T"
(
  cd "$T"
  exec 2>>"$DIR/logs/openssl.log"
  openssl ecparam -name prime256v1 -genkey -noout -out ca.key
  openssl req -x509 -new -key ca.key -sha256 -days 30 -subj "/CN=margo test bed CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" -out ca.pem
  # registry / token-server TLS certificate
  openssl ecparam -name prime256v1 -genkey -noout -out server.key
  openssl req -new -key server.key -subj "/CN=127.0.0.1" -out server.csr
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
    "authorityKeyIdentifier=keyid" >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \
    -extfile server.ext -out server.pem
  # JWT signing certificate (its chain goes into the token's x5c header; the registry trusts ca.pem)
  openssl ecparam -name prime256v1 -genkey -noout -out token-sign.key
  openssl req -new -key token-sign.key -subj "/CN=margo test bed token signer" -out token-sign.csr
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "authorityKeyIdentifier=keyid" >token-sign.ext
  openssl x509 -req -in token-sign.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 -sha256 \
    -extfile token-sign.ext -out token-sign.pem
  cat token-sign.pem ca.pem >token-chain.pem
  rm -f ./*.csr ./*.ext ca.srl
)
CA=$T/ca.pem
step "test CA and certificates"

# ---------------------------------------------------------------- podman config
PROOT=$DIR/storage
PRUN=$DIR/run
CCONF=$DIR/containers.conf
mkdir -p "$PROOT" "$PRUN" "$DIR/networks" "$DIR/tmp" "$DIR/home" "$DIR/images"
BED_ID=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
BRIDGE=mtb$BED_ID
# A /16 pool of private subnets not used on this host, for the default network and
# for networks created without an explicit subnet (keeps parallel beds apart).
POOL_OCTET=$($PY - <<'EOF'
import random, subprocess
used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
used += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
cands = list(range(100, 250))
random.shuffle(cands)
for o in cands:
    if f" 10.{o}." not in used:
        print(o)
        break
else:
    print(199)
EOF
)
DEFAULT_SUBNET=10.$POOL_OCTET.255.0/24
DEFAULT_GW=10.$POOL_OCTET.255.1
if [ "$NET_BACKEND" = cni ]; then
  NETCONF_DIR=$DIR/cni
  mkdir -p "$NETCONF_DIR"
else
  NETCONF_DIR=$DIR/networks
fi
cat >"$CCONF" <<EOF
# margo-agent test bed: private Podman configuration (CONTAINERS_CONF)
[containers]
# crun cannot set the default RLIMIT_NOFILE/NPROC on these machines
default_ulimits = ["nofile=10000:10000", "nproc=5000:5000"]

[network]
network_backend = "$NET_BACKEND"
# private network definitions (instead of /etc/containers/networks or /etc/cni/net.d)
network_config_dir = "$NETCONF_DIR"
default_subnet = "$DEFAULT_SUBNET"
default_subnet_pools = [{"base" = "10.$POOL_OCTET.0.0/16", "size" = 24}]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$PRUN/libpod/events/events.log"
# file locks under tmp_dir instead of the host-wide /dev/shm/libpod_lock
lock_type = "file"
tmp_dir = "$PRUN/libpod"
static_dir = "$PROOT/libpod"
volume_path = "$PROOT/volumes"
EOF
cat >"$DIR/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$PROOT"
runroot = "$PRUN"
EOF
# No search registries: short names fail (the agent must use fully qualified refs).
cat >"$DIR/registries.conf" <<EOF
unqualified-search-registries = []
short-name-mode = "enforcing"
EOF
echo '{"auths":{}}' >"$DIR/auth.json"
# The default "podman" network, with a per-bed bridge name and subnet (the built-in
# one is podman0/10.88.0.0/16 with a fixed id, shared with every other Podman).
NOW=$(date -u +%Y-%m-%dT%H:%M:%S.000000000Z)
NET_ID=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
if [ "$NET_BACKEND" = cni ]; then
  cat >"$NETCONF_DIR/87-podman.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "podman",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}],
              "ranges": [[{"subnet": "$DEFAULT_SUBNET", "gateway": "$DEFAULT_GW"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "firewall"},
    {"type": "tuning"}
  ]
}
EOF
else
  cat >"$NETCONF_DIR/podman.json" <<EOF
{
  "name": "podman",
  "id": "$NET_ID",
  "driver": "bridge",
  "network_interface": "$BRIDGE",
  "created": "$NOW",
  "subnets": [{"subnet": "$DEFAULT_SUBNET", "gateway": "$DEFAULT_GW"}],
  "ipv6_enabled": false,
  "internal": false,
  "dns_enabled": false,
  "ipam_options": {"driver": "host-local"}
}
EOF
fi
# Registry CA for Podman: containers/image reads \$HOME/.config/containers/certs.d/<host:port>/ca.crt,
# and HOME is private to the bed for the service and podman.sh.
for hp in "127.0.0.1:$P_BASIC" "localhost:$P_BASIC" "127.0.0.1:$P_TOKEN" "localhost:$P_TOKEN"; do
  mkdir -p "$DIR/home/.config/containers/certs.d/$hp"
  cp "$CA" "$DIR/home/.config/containers/certs.d/$hp/ca.crt"
done
PODMAN_ENV=(
  CONTAINERS_CONF="$CCONF"
  CONTAINERS_STORAGE_CONF="$DIR/storage.conf"
  CONTAINERS_REGISTRIES_CONF="$DIR/registries.conf"
  REGISTRY_AUTH_FILE="$DIR/auth.json"
  HOME="$DIR/home"
  TMPDIR="$DIR/tmp"
)
PODMAN=(env "${PODMAN_ENV[@]}" podman --root "$PROOT" --runroot "$PRUN")

# ---------------------------------------------------------------- registries
mkreg() { # name port auth-yaml tls(0/1)
  local name=$1 port=$2 auth=$3 tls=$4 d=$DIR/reg/$1
  mkdir -p "$d/data"
  {
    echo "version: 0.1"
    echo "log:"
    echo "  level: info"
    echo "  formatter: text"
    echo "storage:"
    echo "  filesystem:"
    echo "    rootdirectory: $d/data"
    echo "  delete:"
    echo "    enabled: true"
    echo "  cache:"
    echo "    blobdescriptor: inmemory"
    echo "  maintenance:"
    echo "    uploadpurging:"
    echo "      enabled: false"
    echo "http:"
    echo "  addr: 127.0.0.1:$port"
    echo "  secret: $(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
    echo "  headers:"
    echo "    X-Content-Type-Options: [nosniff]"
    if [ "$tls" = 1 ]; then
      echo "  tls:"
      echo "    certificate: $T/server.pem"
      echo "    key: $T/server.key"
    fi
    printf '%s' "$auth"
  } >"$d/config.yml"
}
mkreg plain "$P_PLAIN" "" 0
mkreg basic "$P_BASIC" "auth:
  htpasswd:
    realm: margo-tb-basic
    path: $DIR/reg/basic/htpasswd
" 1
htpasswd -Bbc "$DIR/reg/basic/htpasswd" "$USER_NAME" "$USER_PASS" 2>/dev/null
mkreg token "$P_TOKEN" "auth:
  token:
    realm: $TOKEN_REALM
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $CA
" 1
mkdir -p "$DIR/token"
cat >"$DIR/token/users.json" <<EOF
{
  "$USER_NAME": {"password": "$USER_PASS", "actions": ["*"]},
  "$RO_USER": {"password": "$RO_PASS", "actions": ["pull"]}
}
EOF
step "configuration written"

# ---------------------------------------------------------------- start processes
start() { # name cmd... ; runs in its own session, PID appended to DIR/pids
  local name=$1
  shift
  setsid "$@" </dev/null >>"$DIR/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$DIR/pids"
}
start podman "${PODMAN[@]}" system service --time=0 "unix://$SOCK"
for r in plain basic token; do
  start "registry-$r" docker-registry serve "$DIR/reg/$r/config.yml"
done
start token-server $PY "$HERE/token_server.py" --listen "127.0.0.1:$P_AUTH" \
  --tls-cert "$T/server.pem" --tls-key "$T/server.key" \
  --sign-key "$T/token-sign.key" --sign-chain "$T/token-chain.pem" \
  --issuer "$TOKEN_ISSUER" --service "$TOKEN_SERVICE" --users "$DIR/token/users.json" \
  --expires-in "$EXPIRES_IN" --overrides "$DIR/token/overrides.json" --log "$DIR/token/requests.log"
step "processes started: $(awk '{printf "%s=%s ", $2, $1}' "$DIR/pids")"

# ---------------------------------------------------------------- test image (while services start)
IMG_DIR=$DIR/image
R=$IMG_DIR/rootfs
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,www,tmp,proc,sys,dev,root,var/run,home}
cp /bin/busybox "$R/bin/busybox"
# one symlink per applet, at busybox's own install path (bin/sh, usr/bin/wget, sbin/ip, ...)
/bin/busybox --list-full | $PY -c '
import os, sys
root = sys.argv[1]
for rel in sys.stdin.read().split():
    p = os.path.join(root, rel)
    if not os.path.lexists(p):
        os.symlink("/bin/busybox", p)
' "$R"
for a in sh sleep httpd wget nc cat echo env ls true false id hostname nslookup ping kill timeout test; do
  [ -e "$R/bin/$a" ] || [ -e "$R/usr/bin/$a" ] || [ -e "$R/sbin/$a" ] || [ -e "$R/usr/sbin/$a" ] ||
    die "busybox-static lacks applet $a"
done
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$R/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$R/etc/group"
echo 'margo test bed' >"$R/www/index.html"
echo 'ok' >"$R/www/healthz"
chmod 1777 "$R/tmp"
tar --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -C "$R" -cf "$IMG_DIR/rootfs.tar" .
IMAGE=$REG_PLAIN/library/busybox:1.35
"${PODMAN[@]}" import --quiet \
  --change 'CMD ["sh"]' \
  --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'LABEL org.opencontainers.image.title=margo-testbed-busybox' \
  "$IMG_DIR/rootfs.tar" "$IMAGE" >"$IMG_DIR/image-id" 2>>"$DIR/logs/podman-cli.log"
IMAGE_ID=$(cat "$IMG_DIR/image-id")
IMAGE_BASIC=$REG_BASIC/library/busybox:1.35
IMAGE_TOKEN=$REG_TOKEN/library/busybox:1.35
IMAGE_DOCKER=$REG_PLAIN/library/busybox:1.35-docker
"${PODMAN[@]}" tag "$IMAGE" "$REG_PLAIN/library/busybox:latest" "$IMAGE_BASIC" "$IMAGE_TOKEN" "$IMAGE_DOCKER"
step "test image built: $IMAGE ($IMAGE_ID)"

# ---------------------------------------------------------------- readiness
deadline=$(($(date +%s) + TIMEOUT))
wait_for() { # name check-command...
  local name=$1
  shift
  until "$@" >/dev/null 2>&1; do
    local pid
    pid=$(awk -v n="$name" '$2 == n {print $1}' "$DIR/pids")
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      die "$name (pid $pid) exited during start-up; see $DIR/logs/$name.log"
    fi
    [ "$(date +%s)" -lt "$deadline" ] || die "$name not ready after ${TIMEOUT}s; see $DIR/logs/$name.log"
    sleep 0.05
  done
}
http_code() { # expected-code curl-args...
  local want=$1
  shift
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@")" = "$want" ]
}
wait_for podman sh -c "curl -sf --max-time 2 --unix-socket '$SOCK' http://d/_ping | grep -qx OK"
wait_for registry-plain http_code 200 "http://$REG_PLAIN/v2/"
wait_for registry-basic http_code 401 --cacert "$CA" "https://$REG_BASIC/v2/"
wait_for registry-token http_code 401 --cacert "$CA" "https://$REG_TOKEN/v2/"
wait_for token-server http_code 200 --cacert "$CA" "https://127.0.0.1:$P_AUTH/healthz"
step "services ready"

# ---------------------------------------------------------------- push the test image
push() { # log-name podman-push-args...
  local name=$1
  shift
  "${PODMAN[@]}" push --quiet "$@" >>"$DIR/logs/push-$name.log" 2>&1 ||
    { echo "push $name failed:" >&2; cat "$DIR/logs/push-$name.log" >&2; return 1; }
}
(push plain --tls-verify=false "$IMAGE" && push plain --tls-verify=false "$REG_PLAIN/library/busybox:latest" &&
  push plain --tls-verify=false --format v2s2 "$IMAGE_DOCKER") &
p1=$!
push basic --creds "$USER_NAME:$USER_PASS" "$IMAGE_BASIC" &
p2=$!
push token --creds "$USER_NAME:$USER_PASS" "$IMAGE_TOKEN" &
p3=$!
"${PODMAN[@]}" save --quiet --format docker-archive -o "$DIR/images/busybox-1.35.docker.tar" "$IMAGE" \
  2>>"$DIR/logs/podman-cli.log" &
p4=$!
wait $p1 || die "push to PLAIN registry failed"
wait $p2 || die "push to BASIC registry failed"
wait $p3 || die "push to TOKEN registry failed"
wait $p4 || die "podman save failed"
step "image pushed to the three registries, archive saved"

# ---------------------------------------------------------------- token flow self-check
ACCEPT='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json'
get_token() { # scope [curl-args]
  local scope=$1
  shift
  curl -sf --cacert "$CA" "$@" -G "$TOKEN_REALM" --data-urlencode "service=$TOKEN_SERVICE" \
    --data-urlencode "scope=$scope" | $PY -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}
chal=$(curl -s --cacert "$CA" -D - -o /dev/null "https://$REG_TOKEN/v2/" | tr -d '\r' | grep -i '^www-authenticate:' || true)
[[ $chal == *"Bearer realm=\"$TOKEN_REALM\""* ]] || die "TOKEN registry challenge unexpected: $chal"
tok=$(get_token "repository:library/busybox:pull" -u "$USER_NAME:$USER_PASS") || die "token request failed"
http_code 200 --cacert "$CA" -H "Authorization: Bearer $tok" -H "$ACCEPT" \
  "https://$REG_TOKEN/v2/library/busybox/manifests/1.35" || die "pull with a bearer token failed"
tok=$(get_token "repository:tb-selftest/probe:pull,push" -u "$USER_NAME:$USER_PASS") || die "token request failed"
blob='{}'
dgst=sha256:$(printf '%s' "$blob" | sha256sum | cut -d' ' -f1)
loc=$(curl -sf --cacert "$CA" -H "Authorization: Bearer $tok" -X POST -H 'Content-Length: 0' -D - -o /dev/null \
  "https://$REG_TOKEN/v2/tb-selftest/probe/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:" {print $2}')
[ -n "$loc" ] || die "blob upload POST with a bearer token failed"
case $loc in http*) ;; *) loc=https://$REG_TOKEN$loc ;; esac
case $loc in *\?*) loc="$loc&digest=$dgst" ;; *) loc="$loc?digest=$dgst" ;; esac
http_code 201 --cacert "$CA" -H "Authorization: Bearer $tok" -X PUT -H 'Content-Type: application/octet-stream' \
  --data-binary "$blob" "$loc" || die "blob upload PUT with a bearer token failed"
manifest='{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.margo.testbed.probe","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"'$dgst'","size":2,"data":"e30="},"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":"'$dgst'","size":2}]}'
http_code 201 --cacert "$CA" -H "Authorization: Bearer $tok" -X PUT \
  -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary "$manifest" \
  "https://$REG_TOKEN/v2/tb-selftest/probe/manifests/v1" || die "manifest push with a bearer token failed"
step "token flow checked (challenge, pull, push)"

# ---------------------------------------------------------------- env file
PIDS=$(awk '{printf "%s%s", (NR > 1 ? " " : ""), $1}' "$DIR/pids")
pid_of() { awk -v n="$1" '$2 == n {print $1}' "$DIR/pids"; }
cat >"$DIR/env.tmp" <<EOF
MARGO_TB_DIR=$DIR
MARGO_TB_PODMAN_SOCK=$SOCK
MARGO_TB_PODMAN_URL=unix://$SOCK
MARGO_TB_CONTAINERS_CONF=$CCONF
MARGO_TB_STORAGE_CONF=$DIR/storage.conf
MARGO_TB_REGISTRIES_CONF=$DIR/registries.conf
MARGO_TB_AUTH_FILE=$DIR/auth.json
MARGO_TB_PODMAN_HOME=$DIR/home
MARGO_TB_PODMAN_TMPDIR=$DIR/tmp
MARGO_TB_PODMAN_ROOT=$PROOT
MARGO_TB_PODMAN_RUNROOT=$PRUN
MARGO_TB_NET_BACKEND=$NET_BACKEND
MARGO_TB_NET_CONFIG_DIR=$NETCONF_DIR
MARGO_TB_BRIDGE=$BRIDGE
MARGO_TB_DEFAULT_SUBNET=$DEFAULT_SUBNET
MARGO_TB_SUBNET_POOL=10.$POOL_OCTET.0.0/16
MARGO_TB_REG_PLAIN=$REG_PLAIN
MARGO_TB_REG_BASIC=$REG_BASIC
MARGO_TB_REG_TOKEN=$REG_TOKEN
MARGO_TB_TOKEN_REALM=$TOKEN_REALM
MARGO_TB_TOKEN_SERVICE=$TOKEN_SERVICE
MARGO_TB_TOKEN_ISSUER=$TOKEN_ISSUER
MARGO_TB_TOKEN_EXPIRES_IN=$EXPIRES_IN
MARGO_TB_TOKEN_OVERRIDES=$DIR/token/overrides.json
MARGO_TB_TOKEN_LOG=$DIR/token/requests.log
MARGO_TB_USER=$USER_NAME
MARGO_TB_PASS=$USER_PASS
MARGO_TB_RO_USER=$RO_USER
MARGO_TB_RO_PASS=$RO_PASS
MARGO_TB_CA=$CA
MARGO_TB_CA_KEY=$T/ca.key
MARGO_TB_IMAGE=$IMAGE
MARGO_TB_IMAGE_LATEST=$REG_PLAIN/library/busybox:latest
MARGO_TB_IMAGE_DOCKER=$IMAGE_DOCKER
MARGO_TB_IMAGE_BASIC=$IMAGE_BASIC
MARGO_TB_IMAGE_TOKEN=$IMAGE_TOKEN
MARGO_TB_IMAGE_ID=$IMAGE_ID
MARGO_TB_IMAGE_ARCHIVE=$DIR/images/busybox-1.35.docker.tar
MARGO_TB_PID_PODMAN=$(pid_of podman)
MARGO_TB_PID_REG_PLAIN=$(pid_of registry-plain)
MARGO_TB_PID_REG_BASIC=$(pid_of registry-basic)
MARGO_TB_PID_REG_TOKEN=$(pid_of registry-token)
MARGO_TB_PID_TOKEN_SERVER=$(pid_of token-server)
MARGO_TB_PIDS="$PIDS"
EOF
mv "$DIR/env.tmp" "$DIR/env"
OK=1
step "up: $DIR/env written"
echo "bed up in $(((${EPOCHREALTIME/./} - T0) / 1000)) ms: podman=unix://$SOCK plain=$REG_PLAIN basic=$REG_BASIC token=$REG_TOKEN realm=$TOKEN_REALM"
