#!/bin/bash
# Checks that a running test bed really works (takes ~10 s):
#   Podman API (ping, info, pull from the three registries, create/start with a
#   published port, exit codes, healthcheck, DNS between containers on a
#   dns_enabled network, events), the podman CLI helper, and the three
#   registries (no auth, basic auth, bearer token flow incl. denials and expiry).
# Cleans up what it creates, so it can be run repeatedly.
#
# usage: check.sh DIR       (or MARGO_TB_DIR=DIR check.sh)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export MARGO_TB_DIR=${1:-${MARGO_TB_DIR:?usage: check.sh DIR}}
set -a
# shellcheck disable=SC1091
. "$MARGO_TB_DIR/env"
set +a
PY=/usr/bin/python3
SOCK=$MARGO_TB_PODMAN_SOCK
API=http://d/v4.0.0/libpod
SFX=$$
PODMAN=("$HERE/podman.sh")
FAILS=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
check() { # description command...
  local d=$1
  shift
  if "$@"; then pass "$d"; else fail "$d"; fi
}
api() { curl -sS --max-time 60 --unix-socket "$SOCK" "$@"; }
jget() { $PY -c 'import json,sys; d=json.load(sys.stdin); exec("for k in sys.argv[1:]: d = d[int(k)] if isinstance(d, list) else d[k]"); print(d if not isinstance(d,(dict,list)) else json.dumps(d))' "$@"; }
b64url() { $PY -c 'import base64,sys; print(base64.urlsafe_b64encode(sys.argv[1].encode()).decode())' "$1"; }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  "${PODMAN[@]}" rm -f -t 0 "tbc-web-$SFX" "tbc-api-$SFX" "tbc-a-$SFX" "tbc-b-$SFX" "tbc-hc-$SFX" "tbc-exit-$SFX" >/dev/null 2>&1 || true
  "${PODMAN[@]}" network rm -f "tbc-net-$SFX" >/dev/null 2>&1 || true
  rm -f "$MARGO_TB_TOKEN_OVERRIDES"
}
trap cleanup EXIT

# ------------------------------------------------------------------ podman API
check "libpod _ping answers OK" test "$(api $API/_ping)" = OK
check "/_ping carries Libpod-API-Version" sh -c "curl -s -D - -o /dev/null --unix-socket '$SOCK' http://d/_ping | grep -qi '^Libpod-API-Version: 4\.'"
info=$(api $API/info)
check "network backend is $MARGO_TB_NET_BACKEND" test "$(jget host networkBackend <<<"$info")" = "$MARGO_TB_NET_BACKEND"
check "OCI runtime is runc" test "$(jget host ociRuntime name <<<"$info")" = runc
check "cgroup manager is cgroupfs" test "$(jget host cgroupManager <<<"$info")" = cgroupfs
check "event logger is file" test "$(jget host eventLogger <<<"$info")" = file
check "storage graph root is private" test "$(jget store graphRoot <<<"$info")" = "$MARGO_TB_PODMAN_ROOT"
check "test image present in the service's storage" test "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" "$API/images/$MARGO_TB_IMAGE/exists")" = 204

pull() { # reference tlsVerify [X-Registry-Auth]
  local ref=$1 tls=$2 auth=${3:-} out
  local args=(-X POST "$API/images/pull?reference=$($PY -c 'import sys,urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$ref")&policy=always&tlsVerify=$tls")
  [ -n "$auth" ] && args+=(-H "X-Registry-Auth: $auth")
  out=$(api "${args[@]}")
  if grep -q '"error"' <<<"$out"; then echo "$out" >&2; return 1; fi
  grep -q '"images"' <<<"$out"
}
AUTH_BASIC=$(b64url "{\"username\":\"$MARGO_TB_USER\",\"password\":\"$MARGO_TB_PASS\",\"serveraddress\":\"$MARGO_TB_REG_BASIC\"}")
AUTH_TOKEN=$(b64url "{\"username\":\"$MARGO_TB_USER\",\"password\":\"$MARGO_TB_PASS\",\"serveraddress\":\"$MARGO_TB_REG_TOKEN\"}")
AUTH_BAD=$(b64url "{\"username\":\"$MARGO_TB_USER\",\"password\":\"wrong\",\"serveraddress\":\"$MARGO_TB_REG_BASIC\"}")
check "API pull from PLAIN (tlsVerify=false)" pull "$MARGO_TB_IMAGE" false
check "API pull of the Docker-v2s2 variant" pull "$MARGO_TB_IMAGE_DOCKER" false
check "API pull from BASIC with X-Registry-Auth (TLS verified via bed CA)" pull "$MARGO_TB_IMAGE_BASIC" true "$AUTH_BASIC"
check "API pull from TOKEN with X-Registry-Auth (TLS verified via bed CA)" pull "$MARGO_TB_IMAGE_TOKEN" true "$AUTH_TOKEN"
pull_fails() { ! pull "$@" 2>/dev/null; }
check "API pull from BASIC with a wrong password fails (error line, HTTP 200)" pull_fails "$MARGO_TB_IMAGE_BASIC" true "$AUTH_BAD"

# create + start through the API with a published port
PORT=$(free_port)
body=$(cat <<EOF
{"name":"tbc-api-$SFX","image":"$MARGO_TB_IMAGE","command":["httpd","-f","-p","80","-h","/www"],
 "labels":{"margo.test":"check-$SFX"},"netns":{"nsmode":"bridge"},
 "portmappings":[{"host_ip":"127.0.0.1","host_port":$PORT,"container_port":80,"protocol":"tcp"}]}
EOF
)
cid=$(api -X POST -H 'Content-Type: application/json' -d "$body" "$API/containers/create" | jget Id)
check "API create returns an Id" test -n "$cid"
check "API start answers 204" test "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" -X POST "$API/containers/$cid/start")" = 204
http_ok() { local i; for i in $(seq 50); do curl -sf --max-time 2 "$1" >/dev/null && return 0; sleep 0.1; done; return 1; }
check "httpd in an API-created container answers on 127.0.0.1:$PORT" http_ok "http://127.0.0.1:$PORT/"
lst=$(api -G "$API/containers/json" --data-urlencode 'all=true' --data-urlencode "filters={\"label\":[\"margo.test=check-$SFX\"]}")
check "label filter lists exactly that container" test "$(jget 0 Id <<<"$lst")" = "$cid"

# the CLI helper on the same storage
PORT2=$(free_port)
"${PODMAN[@]}" run -d --name "tbc-web-$SFX" -p "127.0.0.1:$PORT2:80" "$MARGO_TB_IMAGE" httpd -f -p 80 -h /www >/dev/null
check "podman.sh run -p 127.0.0.1:$PORT2:80 httpd is reachable" http_ok "http://127.0.0.1:$PORT2/"
check "API sees the CLI-created container" test "$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" "$API/containers/tbc-web-$SFX/exists")" = 204

# exit code
"${PODMAN[@]}" run --name "tbc-exit-$SFX" "$MARGO_TB_IMAGE" sh -c 'exit 3' >/dev/null 2>&1 || true
check "exit code 3 is reported by inspect" test "$(api "$API/containers/tbc-exit-$SFX/json" | jget State ExitCode)" = 3

# healthcheck (run on demand: there is no systemd to run it on a timer)
"${PODMAN[@]}" run -d --name "tbc-hc-$SFX" --health-cmd 'test -f /tmp/healthy' --health-retries 1 \
  --health-interval 1h "$MARGO_TB_IMAGE" sleep 300 >/dev/null
st=$(api "$API/containers/tbc-hc-$SFX/healthcheck" | jget Status)
check "failing healthcheck reports unhealthy (got $st)" test "$st" = unhealthy
"${PODMAN[@]}" exec "tbc-hc-$SFX" touch /tmp/healthy
st=$(api "$API/containers/tbc-hc-$SFX/healthcheck" | jget Status)
check "healthcheck turns healthy (got $st)" test "$st" = healthy

# DNS between containers on a dns_enabled network
net=$(api -X POST -H 'Content-Type: application/json' -d "{\"name\":\"tbc-net-$SFX\",\"driver\":\"bridge\",\"dns_enabled\":true}" "$API/networks/create")
check "network create with dns_enabled" test "$(jget dns_enabled <<<"$net")" = True
mk() { # name command...
  local n=$1
  shift
  local cmd
  cmd=$($PY -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")
  local id
  id=$(api -X POST -H 'Content-Type: application/json' \
    -d "{\"name\":\"$n\",\"image\":\"$MARGO_TB_IMAGE\",\"command\":$cmd,\"netns\":{\"nsmode\":\"bridge\"},\"Networks\":{\"tbc-net-$SFX\":{\"aliases\":[\"alias-$n\"]}}}" \
    "$API/containers/create" | jget Id)
  api -X POST "$API/containers/$id/start" >/dev/null
}
mk "tbc-a-$SFX" httpd -f -p 80 -h /www
mk "tbc-b-$SFX" sleep 300
resolve() { "${PODMAN[@]}" exec "tbc-b-$SFX" timeout 3 wget -q -O - "http://$1/" 2>/dev/null | grep -q 'margo test bed'; }
retry() { local i; for i in $(seq 30); do "$@" && return 0; sleep 0.2; done; return 1; }
check "container b reaches container a by name" retry resolve "tbc-a-$SFX"
check "container b reaches container a by network alias" retry resolve "alias-tbc-a-$SFX"

# events (file logger)
ev=$(api -G "$API/events" --data-urlencode stream=false --data-urlencode since=5m \
  --data-urlencode "filters={\"container\":[\"tbc-exit-$SFX\"],\"event\":[\"died\"]}")
check "events report the died container with its exit code" grep -q '"containerExitCode":"3"' <<<"$ev"

# ------------------------------------------------------------------ registries
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
OCI='Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json'
check "PLAIN /v2/ 200" test "$(code "http://$MARGO_TB_REG_PLAIN/v2/")" = 200
check "PLAIN manifest with OCI Accept 200" test "$(code -H "$OCI" "http://$MARGO_TB_REG_PLAIN/v2/library/busybox/manifests/1.35")" = 200
check "PLAIN OCI manifest without OCI Accept 404 (distribution 2.8 quirk)" test "$(code "http://$MARGO_TB_REG_PLAIN/v2/library/busybox/manifests/1.35")" = 404
check "BASIC /v2/ without credentials 401" test "$(code --cacert "$MARGO_TB_CA" "https://$MARGO_TB_REG_BASIC/v2/")" = 401
check "BASIC /v2/ with -u 200" test "$(code --cacert "$MARGO_TB_CA" -u "$MARGO_TB_USER:$MARGO_TB_PASS" "https://$MARGO_TB_REG_BASIC/v2/")" = 200
check "BASIC /v2/ wrong password 401" test "$(code --cacert "$MARGO_TB_CA" -u "$MARGO_TB_USER:nope" "https://$MARGO_TB_REG_BASIC/v2/")" = 401
check "BASIC manifest 200" test "$(code --cacert "$MARGO_TB_CA" -u "$MARGO_TB_USER:$MARGO_TB_PASS" -H "$OCI" "https://$MARGO_TB_REG_BASIC/v2/library/busybox/manifests/1.35")" = 200
check "BASIC certificate valid for localhost too" test "$(code --cacert "$MARGO_TB_CA" "https://localhost:${MARGO_TB_REG_BASIC#*:}/v2/")" = 401

chal=$(curl -s --cacert "$MARGO_TB_CA" -D - -o /dev/null "https://$MARGO_TB_REG_TOKEN/v2/" | tr -d '\r' | grep -i '^www-authenticate:')
check "TOKEN /v2/ challenge names realm and service" grep -q "Bearer realm=\"$MARGO_TB_TOKEN_REALM\",service=\"$MARGO_TB_TOKEN_SERVICE\"" <<<"$chal"
token() { # scope [curl args]; prints the token (fails on non-200)
  local scope=$1
  shift
  curl -sf --cacert "$MARGO_TB_CA" "$@" -G "$MARGO_TB_TOKEN_REALM" --data-urlencode "service=$MARGO_TB_TOKEN_SERVICE" \
    --data-urlencode "scope=$scope" | jget token
}
MAN=https://$MARGO_TB_REG_TOKEN/v2/library/busybox/manifests/1.35
t=$(token repository:library/busybox:pull -u "$MARGO_TB_USER:$MARGO_TB_PASS")
check "TOKEN pull with a user token 200" test "$(code --cacert "$MARGO_TB_CA" -H "Authorization: Bearer $t" -H "$OCI" "$MAN")" = 200
reply=$(curl -s --cacert "$MARGO_TB_CA" -u "$MARGO_TB_USER:$MARGO_TB_PASS" -G "$MARGO_TB_TOKEN_REALM" --data-urlencode "service=$MARGO_TB_TOKEN_SERVICE" --data-urlencode scope=repository:x/y:pull)
check "token reply has token, access_token, expires_in=$MARGO_TB_TOKEN_EXPIRES_IN, issued_at" \
  $PY -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["token"]==d["access_token"] and d["expires_in"]==int(sys.argv[2]) and d["issued_at"].endswith("Z")' "$reply" "$MARGO_TB_TOKEN_EXPIRES_IN"
check "token request with wrong password 401" test "$(code --cacert "$MARGO_TB_CA" -u "$MARGO_TB_USER:nope" "$MARGO_TB_TOKEN_REALM?service=$MARGO_TB_TOKEN_SERVICE&scope=repository:library/busybox:pull")" = 401
t=$(token repository:library/busybox:pull)
check "anonymous token has no access: manifest 401" test "$(code --cacert "$MARGO_TB_CA" -H "Authorization: Bearer $t" -H "$OCI" "$MAN")" = 401
t=$(token repository:library/busybox:pull,push -u "$MARGO_TB_RO_USER:$MARGO_TB_RO_PASS")
check "read-only user: pull 200" test "$(code --cacert "$MARGO_TB_CA" -H "Authorization: Bearer $t" -H "$OCI" "$MAN")" = 200
check "read-only user: push 401" test "$(code --cacert "$MARGO_TB_CA" -H "Authorization: Bearer $t" -X POST -H 'Content-Length: 0' "https://$MARGO_TB_REG_TOKEN/v2/library/busybox/blobs/uploads/")" = 401
t=$(token repository:library/busybox:pull,push -u "$MARGO_TB_USER:$MARGO_TB_PASS")
check "user: blob upload POST 202" test "$(code --cacert "$MARGO_TB_CA" -H "Authorization: Bearer $t" -X POST -H 'Content-Length: 0' "https://$MARGO_TB_REG_TOKEN/v2/library/busybox/blobs/uploads/")" = 202
check "OAuth2 POST password grant" sh -c "curl -sf --cacert '$MARGO_TB_CA' -d grant_type=password -d username='$MARGO_TB_USER' -d password='$MARGO_TB_PASS' -d service='$MARGO_TB_TOKEN_SERVICE' -d client_id=check -d scope=repository:library/busybox:pull '$MARGO_TB_TOKEN_REALM' | grep -q access_token"
echo '{"expires_in": 2, "strict_exp": true}' >"$MARGO_TB_TOKEN_OVERRIDES"
t=$(token repository:library/busybox:pull -u "$MARGO_TB_USER:$MARGO_TB_PASS")
check "short-lived token works at first" test "$(code --cacert "$MARGO_TB_CA" -H "Authorization: Bearer $t" -H "$OCI" "$MAN")" = 200
sleep 3
check "short-lived token (strict_exp) rejected after expiry" test "$(code --cacert "$MARGO_TB_CA" -H "Authorization: Bearer $t" -H "$OCI" "$MAN")" = 401
echo '{"oauth2": false, "fail": 0}' >"$MARGO_TB_TOKEN_OVERRIDES"
check "overrides: oauth2=false makes POST 404" test "$(code --cacert "$MARGO_TB_CA" -d grant_type=password "$MARGO_TB_TOKEN_REALM")" = 404
rm -f "$MARGO_TB_TOKEN_OVERRIDES"
check "token request log is written" test -s "$MARGO_TB_TOKEN_LOG"

echo
if [ $FAILS -eq 0 ]; then echo "check.sh: all checks passed"; else echo "check.sh: $FAILS check(s) FAILED"; exit 1; fi
