#!/usr/bin/env python3
"""A test Workload Fleet Manager for margo-agent's end-to-end tests.

It speaks the Margo 2025 draft Device API over HTTPS (its own test CA) under a path prefix
(`/api/v1`), and checks every request it gets against the draft's shapes: path ids, required
fields, enums, bearer tokens, and each X-Payload-Signature, verified with Python's
`cryptography` package (an implementation independent of the agent's ring). A request that
does not conform is answered 400 and recorded with `"valid": false`; tests assert there are
none.

    wfm.py DIR --port N [--token-ttl SECONDS] [--rogue-cert]

DIR keeps everything across restarts (the test stops and starts the process to simulate an
outage): ca.pem (the WFM root CA handed out at onboarding), rogue-ca.pem (another CA, for the
"certificate not signed by the pinned CA" case), clients.json, requests.jsonl (every request,
one JSON object per line), reports.jsonl (accepted deployment statuses, in arrival order),
capabilities.json. DIR/mode, re-read on every request, switches misbehaviour:

    normal | slow | 500 | status-400 | token-html | token-401 | huge | onboard-missing

and an existing DIR/revoke makes it forget every token it issued (once).
"""
import argparse, base64, datetime, hashlib, json, os, secrets, ssl, sys, threading, time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.exceptions import InvalidSignature

PREFIX = "/api/v1"
STATES = {"Pending", "Installing", "Installed", "Failed", "Removing", "Removed"}
ROLES = {"Standalone Device", "Standalone Cluster", "Cluster Leader", "Cluster Worker"}
IFACE_TYPES = {"ethernet", "wifi", "cellular", "other"}
LOCK = threading.Lock()


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert):
    import ipaddress
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-wfm")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def pem(obj):
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def ensure_certs(d):
    """CA + leaf for the WFM, and a rogue CA + leaf; created once, kept across restarts."""
    for name in ("ca", "rogue-ca"):
        if not os.path.exists(os.path.join(d, name + ".pem")):
            k, c = make_ca("margo test " + name)
            lk, lc = make_leaf(k, c)
            open(os.path.join(d, name + ".pem"), "wb").write(pem(c))
            open(os.path.join(d, name + "-leaf.pem"), "wb").write(pem(lc) + pem(c))
            open(os.path.join(d, name + "-leaf.key"), "wb").write(pem(lk))


def load_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def verify_signature(header, body, expected_pk=None):
    """Returns (public key b64, None) or (None, reason)."""
    if not header:
        return None, "X-Payload-Signature missing"
    parts = header.split(";")
    if len(parts) != 2:
        return None, "X-Payload-Signature is not <public key>;<signature>"
    try:
        pk_der = base64.b64decode(parts[0], validate=True)
        sig = base64.b64decode(parts[1], validate=True)
        key = serialization.load_der_public_key(pk_der)
    except Exception as e:  # noqa: BLE001
        return None, f"X-Payload-Signature undecodable: {e}"
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        return None, "public key is not P-256"
    try:
        key.verify(sig, body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return None, "signature does not verify over SHA-256 of the body"
    if expected_pk is not None and parts[0] != expected_pk:
        return None, "public key differs from the one presented at onboarding"
    return parts[0], None


def require(obj, key, typ, where):
    if not isinstance(obj, dict) or key not in obj:
        raise ValueError(f"{where}.{key} missing")
    if not isinstance(obj[key], typ):
        raise ValueError(f"{where}.{key} has the wrong type")
    return obj[key]


def check_error(e, where):
    if e is None:
        return
    require(e, "code", str, where)
    require(e, "message", str, where)


def check_status(body, device_id, dep_id):
    if require(body, "apiVersion", str, "body") != "deployment.margo/v1":
        raise ValueError("apiVersion is not deployment.margo/v1")
    if require(body, "kind", str, "body") != "DeploymentStatus":
        raise ValueError("kind is not DeploymentStatus")
    if require(body, "deploymentId", str, "body") != dep_id:
        raise ValueError("deploymentId differs from the path")
    st = require(body, "status", dict, "body")
    if require(st, "state", str, "status") not in STATES:
        raise ValueError(f"status.state {st['state']!r} not in {sorted(STATES)}")
    check_error(st.get("error"), "status.error")
    comps = require(body, "components", list, "body")
    for i, c in enumerate(comps):
        require(c, "name", str, f"components[{i}]")
        if require(c, "state", str, f"components[{i}]") not in STATES:
            raise ValueError(f"components[{i}].state not in enum")
        check_error(c.get("error"), f"components[{i}].error")


def check_capabilities(body, device_id):
    if require(body, "apiVersion", str, "body") != "device.margo/v1":
        raise ValueError("apiVersion is not device.margo/v1")
    if require(body, "kind", str, "body") != "DeviceCapabilities":
        raise ValueError("kind is not DeviceCapabilities")
    p = require(body, "properties", dict, "body")
    if require(p, "id", str, "properties") != device_id:
        raise ValueError("properties.id differs from the path")
    for k in ("vendor", "modelNumber", "serialNumber"):
        require(p, k, str, "properties")
    roles = require(p, "roles", list, "properties")
    if not roles or any(r not in ROLES for r in roles):
        raise ValueError(f"roles {roles} not within {sorted(ROLES)}")
    r = require(p, "resources", dict, "properties")
    cpu = require(r, "cpu", dict, "resources")
    if not isinstance(cpu.get("cores"), int) or cpu["cores"] < 1:
        raise ValueError("resources.cpu.cores must be a positive integer")
    require(cpu, "architecture", str, "resources.cpu")
    require(r, "memory", str, "resources")
    require(r, "storage", str, "resources")
    for i, n in enumerate(require(r, "interfaces", list, "resources")):
        if require(n, "type", str, f"interfaces[{i}]") not in IFACE_TYPES:
            raise ValueError(f"interfaces[{i}].type not in {sorted(IFACE_TYPES)}")
    for i, x in enumerate(require(r, "peripherals", list, "resources")):
        require(x, "type", str, f"peripherals[{i}]")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-wfm"

    def setup(self):
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle + delayed ACK add
        # 40 ms to every answer, which would be the test WFM's latency, not the agent's.
        import socket
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):
        sys.stderr.write("wfm: " + (fmt % args) + "\n")

    # --- helpers
    def mode(self):
        try:
            return open(os.path.join(self.server.dir, "mode")).read().strip() or "normal"
        except OSError:
            return "normal"

    def record(self, status, valid=True, error=None, extra=None):
        rec = {"t": time.time(), "method": self.command, "path": self.path, "status": status,
               "valid": valid}
        if error:
            rec["error"] = error
        if extra:
            rec.update(extra)
        with LOCK, open(os.path.join(self.server.dir, "requests.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")

    def reply(self, status, body=b"", ctype="application/json", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def invalid(self, why):
        self.record(400, valid=False, error=why)
        self.reply(400, {"type": "about:blank", "title": "invalid request", "detail": why},
                   "application/problem+json")

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def clients(self):
        return load_json(os.path.join(self.server.dir, "clients.json"), {})

    def bearer_client(self):
        # DIR/revoke: forget every issued token once (the next call with one gets 401).
        revoke = os.path.join(self.server.dir, "revoke")
        if os.path.exists(revoke):
            os.remove(revoke)
            self.server.tokens.clear()
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        tok = self.server.tokens.get(auth[7:])
        if not tok or tok[1] < time.time():
            return None
        return tok[0]

    # --- dispatch
    def do_GET(self):
        self.body = self.read_body()
        mode = self.mode()
        if mode == "slow":
            time.sleep(10)
        if self.path == PREFIX + "/onboarding/certificate":
            ca = open(os.path.join(self.server.dir, "ca.pem"), "rb").read()
            self.record(200)
            return self.reply(200, {"certificate": base64.b64encode(ca).decode()})
        self.record(404)
        self.reply(404, {"title": "not found"}, "application/problem+json")

    def do_PUT(self):
        self.do_POST()

    def do_POST(self):
        body = self.read_body()
        mode = self.mode()
        if mode == "slow":
            time.sleep(10)
        if mode == "500":
            self.record(500)
            return self.reply(500, b"internal error", "text/plain", {"Retry-After": "7"})
        if mode == "huge":
            self.record(200, extra={"huge": True})
            big = b"{\"pad\":\"" + b"x" * (8 * 1024 * 1024) + b"\"}"
            return self.reply(200, big)
        path = self.path
        if not path.startswith(PREFIX + "/"):
            self.record(404)
            return self.reply(404, {"title": "not found"}, "application/problem+json")
        rest = path[len(PREFIX):]
        if rest in ("/onboarding", "/onboarding/") and self.command == "POST":
            return self.onboarding(body, mode)
        if rest == "/token" and self.command == "POST":
            return self.token(body, mode)
        parts = rest.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "device" and parts[2] == "capabilities":
            return self.capabilities(parts[1], body)
        if len(parts) == 5 and parts[0] == "device" and parts[2] == "deployment" and parts[4] == "status" \
                and self.command == "POST":
            return self.status(parts[1], parts[3], body, mode)
        self.record(404)
        self.reply(404, {"title": "not found"}, "application/problem+json")

    def onboarding(self, body, mode):
        pk, err = verify_signature(self.headers.get("X-Payload-Signature"), body)
        if err:
            return self.invalid(err)
        try:
            req = json.loads(body)
            if require(req, "kind", str, "body") != "OnboardingRequest":
                raise ValueError("kind is not OnboardingRequest")
            require(req, "apiVersion", str, "body")
            dev = require(req, "deviceId", str, "body")
            if require(req, "publicKey", str, "body") != pk:
                raise ValueError("publicKey differs from the signing key")
        except ValueError as e:
            return self.invalid(str(e))
        cid = "client-" + secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        with LOCK:
            cl = self.clients()
            cl[cid] = {"secret": secret, "deviceId": dev, "publicKey": pk}
            json.dump(cl, open(os.path.join(self.server.dir, "clients.json"), "w"))
        answer = {"clientId": cid, "clientSecret": secret,
                  "tokenEndpointUrl": f"https://127.0.0.1:{self.server.server_port}{PREFIX}/token"}
        ds = load_json(os.path.join(self.server.dir, "desired.json"), None)
        if ds:
            answer["desiredState"] = ds
        if mode == "onboard-missing":
            del answer["clientSecret"]
        self.record(201, extra={"deviceId": dev})
        self.reply(201, answer)

    def token(self, body, mode):
        if mode == "token-html":
            self.record(200, extra={"html": True})
            return self.reply(200, b"<html><body>Sign in</body></html>", "text/html")
        form = urllib.parse.parse_qs(body.decode(errors="replace"))
        if self.headers.get("Content-Type", "").split(";")[0] != "application/x-www-form-urlencoded":
            return self.invalid("token request is not form-encoded")
        if form.get("grant_type") != ["client_credentials"]:
            return self.invalid("grant_type is not client_credentials")
        cid = (form.get("client_id") or [""])[0]
        c = self.clients().get(cid)
        if mode == "token-401" or not c or (form.get("client_secret") or [""])[0] != c["secret"]:
            self.record(401, extra={"token": "refused"})
            return self.reply(401, {"error": "invalid_client"})
        tok = secrets.token_urlsafe(16)
        self.server.tokens[tok] = (cid, time.time() + self.server.ttl)
        self.record(200, extra={"token": "issued"})
        self.reply(200, {"access_token": tok, "token_type": "Bearer", "expires_in": self.server.ttl})

    def authorised(self, device_id, body):
        """The token's client, onboarded as device_id, with a valid signature by its key."""
        cid = self.bearer_client()
        if cid is None:
            self.record(401, extra={"auth": "token"})
            self.reply(401, {"title": "token missing or expired"}, "application/problem+json",
                       {"WWW-Authenticate": "Bearer error=\"invalid_token\""})
            return None
        c = self.clients().get(cid, {})
        if c.get("deviceId") != device_id:
            self.invalid(f"path device id {device_id!r} is not the token's device {c.get('deviceId')!r}")
            return None
        _, err = verify_signature(self.headers.get("X-Payload-Signature"), body, c.get("publicKey"))
        if err:
            self.invalid(err)
            return None
        return cid

    def capabilities(self, device_id, body):
        if self.authorised(device_id, body) is None:
            return
        try:
            doc = json.loads(body)
            check_capabilities(doc, device_id)
        except ValueError as e:
            return self.invalid(str(e))
        path = os.path.join(self.server.dir, "capabilities.json")
        exists = os.path.exists(path)
        if self.command == "POST" and exists:
            self.record(409)
            return self.reply(409, {"title": "capabilities exist; use PUT"}, "application/problem+json")
        if self.command == "PUT" and not exists:
            self.record(404)
            return self.reply(404, {"title": "no capabilities yet; use POST"}, "application/problem+json")
        json.dump(doc, open(path, "w"))
        self.record(201 if self.command == "POST" else 200)
        self.reply(201 if self.command == "POST" else 200, b"{}")

    def status(self, device_id, dep_id, body, mode):
        if self.authorised(device_id, body) is None:
            return
        try:
            doc = json.loads(body)
            check_status(doc, device_id, dep_id)
        except ValueError as e:
            return self.invalid(str(e))
        if mode == "status-400":
            self.record(400, extra={"problem": True})
            return self.reply(400, {"type": "https://wfm.example/problems/unknown-deployment",
                                    "title": "unknown deployment", "status": 400,
                                    "detail": f"deployment {dep_id} is not assigned to this device"},
                              "application/problem+json")
        with LOCK, open(os.path.join(self.server.dir, "reports.jsonl"), "a") as f:
            f.write(json.dumps({"t": time.time(), "deploymentId": dep_id,
                                "state": doc["status"]["state"], "body": doc}) + "\n")
        self.record(200)
        self.reply(200, b"{}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--token-ttl", type=int, default=3600)
    ap.add_argument("--rogue-cert", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    ensure_certs(a.dir)
    leaf = "rogue-ca-leaf" if a.rogue_cert else "ca-leaf"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(a.dir, leaf + ".pem"), os.path.join(a.dir, leaf + ".key"))
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.dir, srv.ttl, srv.tokens = a.dir, a.token_ttl, {}
    open(os.path.join(a.dir, "ready"), "w").write(str(os.getpid()))
    srv.serve_forever()


if __name__ == "__main__":
    main()
