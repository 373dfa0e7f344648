#!/usr/bin/python3
"""Bearer-token issuer for the margo-agent test bed (Docker registry token auth).

Implements the "token" half of distribution's token authentication
(docs/content/spec/auth/token.md and oauth.md) well enough for CNCF
distribution 2.8 to accept the tokens:

  GET  <path>?service=S&scope=T:NAME:ACTIONS[&scope=...]   (Basic auth optional)
  POST <path>  form: grant_type=password&username&password&service&scope&client_id
       (OAuth2 password grant; answers 404 when overrides say "oauth2": false)
  GET  /healthz                                              -> 200 "ok"

Policy
  * A known user with the right password gets, per requested scope, the
    intersection of the requested actions and the user's allowed actions.
  * Wrong credentials (unknown user or bad password)       -> 401.
  * Anonymous requests, by default ("anonymous": "none")   -> 200 and a token
    whose access list is empty (the registry then answers 401 insufficient
    scope). "pull" grants anonymous pull; "deny" answers 401 instead.

Runtime knobs: the JSON file given by --overrides is re-read on every request
(missing file = defaults), so tests can change the behaviour of a running bed:
  {"expires_in": 5,          # seconds reported and put into exp (default: --expires-in,
                             #   itself defaulting to $MARGO_TB_TOKEN_EXPIRES_IN or 60)
   "strict_exp": true,       # subtract distribution's 60 s leeway from exp, so the
                             #   registry really rejects the token after expires_in
   "anonymous": "none|pull|deny",
   "oauth2": false,          # POST answers 404 (client must fall back to GET)
   "fail": 503}              # answer every token request with this status

Every token request is appended as one JSON line to --log (user, scopes,
granted access, status) so tests can count token fetches.

Only Debian's python3-cryptography is needed (run with /usr/bin/python3).
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import json
import os
import secrets
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

# distribution 2.8 accepts tokens up to this many seconds after "exp"
# (registry/auth/token/token.go: Leeway).
REGISTRY_LEEWAY = 60


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key) -> str:
    """Key ID in libtrust format: base32(sha256(DER SPKI)[:30]) in groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


class Signer:
    def __init__(self, key_path: str, chain_path: str):
        with open(key_path, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), password=None)
        with open(chain_path, "rb") as f:
            certs = x509.load_pem_x509_certificates(f.read()) if hasattr(
                x509, "load_pem_x509_certificates"
            ) else _load_pem_certs(f.read())
        if not certs:
            raise SystemExit(f"no certificate in {chain_path}")
        self.x5c = [
            base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii")
            for c in certs
        ]
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            if self.key.curve.name != "secp256r1":
                raise SystemExit("only P-256 EC keys are supported (ES256)")
            self.alg = "ES256"
        elif isinstance(self.key, rsa.RSAPrivateKey):
            self.alg = "RS256"
        else:
            raise SystemExit("signing key must be EC P-256 or RSA")
        self.kid = libtrust_key_id(self.key.public_key())

    def sign(self, claims: dict) -> str:
        header = {"typ": "JWT", "alg": self.alg, "kid": self.kid, "x5c": self.x5c}
        signing_input = (
            b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + b64url(json.dumps(claims, separators=(",", ":")).encode())
        ).encode("ascii")
        if self.alg == "ES256":
            der = self.key.sign(signing_input, ec.ECDSA(hashes.SHA256()))
            r, s = decode_dss_signature(der)
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode("ascii") + "." + b64url(sig)


def _load_pem_certs(data: bytes):
    """Fallback for cryptography < 39 (Debian 12 ships 38)."""
    certs = []
    marker = b"-----END CERTIFICATE-----"
    for part in data.split(marker):
        start = part.find(b"-----BEGIN CERTIFICATE-----")
        if start >= 0:
            certs.append(x509.load_pem_x509_certificate(part[start:] + marker + b"\n"))
    return certs


def parse_scope(scope: str):
    """'repository:org/app:pull,push' -> ('repository', 'org/app', ['pull','push']).

    The name may itself contain ':' only in theory (host:port prefixes are not
    part of repository names), so type is the first field and actions the last.
    """
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    rtype, actions = parts[0], parts[-1]
    name = ":".join(parts[1:-1])
    if not rtype or not name:
        return None
    return rtype, name, [a for a in actions.split(",") if a]


class Issuer:
    def __init__(self, args):
        self.args = args
        self.signer = Signer(args.sign_key, args.sign_chain)
        with open(args.users) as f:
            self.users = json.load(f)
        self.log_lock = threading.Lock()
        self.counter = 0

    def overrides(self) -> dict:
        if not self.args.overrides:
            return {}
        try:
            with open(self.args.overrides) as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            print(f"token_server: ignoring bad overrides file: {e}", file=sys.stderr)
            return {}

    def log(self, entry: dict):
        if not self.args.log:
            return
        line = json.dumps(entry, separators=(",", ":")) + "\n"
        with self.log_lock:
            with open(self.args.log, "a") as f:
                f.write(line)

    def authenticate(self, user, password, ov):
        """Returns (status, username or None, allowed actions)."""
        if user is None:
            anon = ov.get("anonymous", "none")
            if anon == "deny":
                return 401, None, []
            return 200, None, (["pull"] if anon == "pull" else [])
        rec = self.users.get(user)
        if rec is None or not secrets.compare_digest(
            str(rec.get("password", "")).encode(), password.encode()
        ):
            return 401, user, []
        return 200, user, list(rec.get("actions", []))

    def issue(self, user, allowed, service, scopes, ov):
        now = int(time.time())
        expires_in = int(ov.get("expires_in", self.args.expires_in))
        exp = now + expires_in
        if ov.get("strict_exp"):
            exp -= REGISTRY_LEEWAY
        access = []
        for s in scopes:
            parsed = parse_scope(s)
            if parsed is None:
                continue
            rtype, name, wanted = parsed
            if "*" in allowed:
                granted = wanted
            else:
                granted = [a for a in wanted if a in allowed]
            if granted:
                access.append({"type": rtype, "name": name, "actions": granted})
        claims = {
            "iss": self.args.issuer,
            "sub": user or "",
            "aud": service,
            "exp": exp,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        token = self.signer.sign(claims)
        issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
        body = {
            "token": token,
            "access_token": token,
            "expires_in": expires_in,
            "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        return body, access


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "margo-tb-token/1"
    issuer: Issuer = None  # set in main

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def send_json(self, status, obj, extra_headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra_headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def basic_credentials(self):
        """None if no Basic header; ('', '') for a malformed one."""
        h = self.headers.get("Authorization")
        if not h:
            return None
        scheme, _, value = h.partition(" ")
        if scheme.lower() != "basic":
            return ("", "")
        try:
            raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        user, sep, password = raw.partition(":")
        return (user, password) if sep else ("", "")

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/healthz":
            data = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if url.path != self.issuer.args.path:
            self.send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "unknown path"}]})
            return
        q = parse_qs(url.query, keep_blank_values=True)
        creds = self.basic_credentials()
        user, password = creds if creds is not None else (None, None)
        self.handle_token("GET", user, password, q.get("service", [""])[0], q.get("scope", []))

    def do_POST(self):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        ov = self.issuer.overrides()
        if url.path != self.issuer.args.path or ov.get("oauth2", True) is False:
            self.issuer.log({"ts": time.time(), "method": "POST", "status": 404})
            self.send_json(404, {"error": "not_found"})
            return
        form = parse_qs(body, keep_blank_values=True)
        grant = form.get("grant_type", [""])[0]
        if grant != "password":
            self.issuer.log({"ts": time.time(), "method": "POST", "grant_type": grant, "status": 400})
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        scopes = []
        for s in form.get("scope", []):
            scopes.extend(s.split(" "))  # OAuth2 scopes are space separated
        self.handle_token(
            "POST",
            form.get("username", [""])[0],
            form.get("password", [""])[0],
            form.get("service", [""])[0],
            [s for s in scopes if s],
            oauth=True,
        )

    def handle_token(self, method, user, password, service, scopes, oauth=False):
        iss = self.issuer
        ov = iss.overrides()
        entry = {"ts": time.time(), "method": method, "user": user, "service": service, "scopes": scopes}
        fail = ov.get("fail")
        if fail:
            entry["status"] = int(fail)
            iss.log(entry)
            self.send_json(int(fail), {"errors": [{"code": "UNAVAILABLE", "message": "injected failure"}]})
            return
        if service and service != iss.args.service:
            entry["status"] = 400
            iss.log(entry)
            self.send_json(400, {"errors": [{"code": "INVALID_SERVICE", "message": f"unknown service {service!r}"}]})
            return
        status, who, allowed = iss.authenticate(user, password, ov)
        if status != 200:
            entry["status"] = status
            iss.log(entry)
            self.send_json(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required" if user is None else "invalid credentials"}]},
                [("WWW-Authenticate", 'Basic realm="margo-tb-token"')],
            )
            return
        body, access = iss.issue(who, allowed, service or iss.args.service, scopes, ov)
        if oauth:
            body = {
                "access_token": body["access_token"],
                "token_type": "Bearer",
                "expires_in": body["expires_in"],
                "issued_at": body["issued_at"],
                "scope": " ".join(scopes),
            }
        entry.update({"status": 200, "granted": access, "expires_in": body["expires_in"]})
        iss.log(entry)
        self.send_json(200, body)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    ap.add_argument("--tls-cert", help="server certificate (PEM); plain HTTP if omitted")
    ap.add_argument("--tls-key")
    ap.add_argument("--sign-key", required=True, help="JWT signing key (PEM, EC P-256 or RSA)")
    ap.add_argument("--sign-chain", required=True, help="signing certificate chain (PEM, leaf first) -> x5c")
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--users", required=True, help='JSON {"user": {"password": "...", "actions": ["pull", ...]}}')
    ap.add_argument("--path", default="/token")
    ap.add_argument("--expires-in", type=int, default=int(os.environ.get("MARGO_TB_TOKEN_EXPIRES_IN", "60")))
    ap.add_argument("--overrides", help="JSON file re-read on every request")
    ap.add_argument("--log", help="append one JSON line per token request")
    args = ap.parse_args()

    host, _, port = args.listen.rpartition(":")
    Handler.issuer = Issuer(args)
    httpd = ThreadingHTTPServer((host, int(port)), Handler)
    httpd.daemon_threads = True
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        # handshake in the handler thread, not in accept()
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    print(f"token_server: listening on {'https' if args.tls_cert else 'http'}://{args.listen}{args.path}", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
