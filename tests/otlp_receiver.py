#!/usr/bin/env python3
"""A minimal OTLP/HTTP metrics receiver for margo-agent's tests.

Decodes every POST /v1/metrics with the official OpenTelemetry proto definitions (PyPI
opentelemetry-proto): protobuf with ParseFromString, JSON with google.protobuf.json_format.Parse
(strict: an unknown or misspelt field fails), gzip when Content-Encoding says so. Checks the
shapes the OTLP specification requires of a request (content type, one data kind per metric,
non-empty data points, cumulative temporality) and appends one JSON line per request to the log:

  {"n", "t", "path", "content_type", "content_encoding", "wire_bytes", "raw_bytes",
   "status", "error", "request"}   (request = MessageToDict of the decoded message)

Answers are scripted through the control file (JSON list, re-read per request; the first entry
is used and removed): {"status": 429, "headers": {"Retry-After": "3"}, "body": "...",
"body_size": N (a body of N bytes), "content_type": "text/html", "partial": [rejected, "msg"],
"close": true (drop the connection without an answer)}. Without an entry: 200 and an empty
ExportMetricsServiceResponse in the request's encoding.

usage: otlp_receiver.py PORT LOG CONTROL [CERT KEY [CLIENT_CA]]
  CERT KEY: serve HTTPS with this certificate; CLIENT_CA: require a client certificate it signed
"""
import gzip
import json
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms

PORT, LOG, CONTROL = int(sys.argv[1]), sys.argv[2], sys.argv[3]
MAX_BODY = 64 * 1024 * 1024
COUNT = [0]


def next_answer():
    try:
        with open(CONTROL) as f:
            script = json.load(f)
    except (OSError, ValueError):
        return {}
    if not script:
        return {}
    first, rest = script[0], script[1:]
    tmp = CONTROL + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rest, f)
    os.replace(tmp, CONTROL)
    return first


def check(req):
    """Shape rules of the OTLP specification a collector relies on."""
    if not req.resource_metrics:
        return "empty request (no resource_metrics)"
    for rm in req.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind not in ("gauge", "sum", "histogram"):
                    return f"metric {m.name}: data kind {kind}"
                points = getattr(m, kind).data_points
                if not points:
                    return f"metric {m.name}: no data points"
                if kind in ("sum", "histogram") and getattr(m, kind).aggregation_temporality != 2:
                    return f"metric {m.name}: temporality is not CUMULATIVE"
                for p in points:
                    if p.time_unix_nano == 0:
                        return f"metric {m.name}: a point without time_unix_nano"
                    if kind == "histogram" and len(p.bucket_counts) != len(p.explicit_bounds) + 1:
                        return f"metric {m.name}: bucket_counts/explicit_bounds mismatch"
    return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        COUNT[0] += 1
        entry = {"n": COUNT[0], "t": time.time(), "path": self.path,
                 "content_type": self.headers.get("Content-Type", ""),
                 "content_encoding": self.headers.get("Content-Encoding", ""),
                 "headers": {k.lower(): v for k, v in self.headers.items()},
                 "error": None, "request": None}
        length = int(self.headers.get("Content-Length", "0"))
        wire = self.rfile.read(min(length, MAX_BODY))
        entry["wire_bytes"] = len(wire)
        req = ms.ExportMetricsServiceRequest()
        try:
            raw = gzip.decompress(wire) if entry["content_encoding"] == "gzip" else wire
            entry["raw_bytes"] = len(raw)
            if self.path != "/v1/metrics":
                raise ValueError(f"path {self.path}")
            if entry["content_type"] == "application/x-protobuf":
                req.ParseFromString(raw)
            elif entry["content_type"] == "application/json":
                json_format.Parse(raw.decode("utf-8"), req)
            else:
                raise ValueError(f"content type {entry['content_type']!r}")
            entry["error"] = check(req)
            entry["request"] = json_format.MessageToDict(req)
        except Exception as e:  # noqa: BLE001 - any decoding failure is the finding
            entry["error"] = f"{type(e).__name__}: {e}"
        answer = next_answer()
        if entry["error"] and not answer:
            answer = {"status": 400, "body": entry["error"], "content_type": "text/plain"}
        entry["status"] = answer.get("status", 200)
        with open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")
        if answer.get("close"):
            self.close_connection = True
            return
        ctype = answer.get("content_type", entry["content_type"] or "application/x-protobuf")
        if "body_size" in answer:
            body = b"<html>" + b"x" * answer["body_size"]
        elif "body" in answer:
            body = answer["body"].encode()
        else:
            resp = ms.ExportMetricsServiceResponse()
            if "partial" in answer:
                resp.partial_success.rejected_data_points = answer["partial"][0]
                resp.partial_success.error_message = answer["partial"][1]
            if ctype == "application/json":
                body = json_format.MessageToJson(resp).encode()
            else:
                body = resp.SerializeToString()
        self.send_response(entry["status"])
        for k, v in answer.get("headers", {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent reads a capped prefix of large answers and hangs up


HTTPServer.allow_reuse_address = True
server = HTTPServer(("127.0.0.1", PORT), Handler)
if len(sys.argv) > 5:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    if len(sys.argv) > 6:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(sys.argv[6])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
server.serve_forever()
