#!/usr/bin/env python3
"""A tiny stand-in for the SaaS automation behind the contract server's webhook integration.

It checks the Tollgate signature (docs/WEBHOOKS.md) on every POST and answers 200 with a
`reference` to connector actions and 200 to notifications; an unsigned or badly signed call gets
401. It prints nothing but a line per call to stderr (the run's log), never a body.

Usage: receiver.py PORT_FILE SECRET   (binds 127.0.0.1:0 and writes the port it got to PORT_FILE)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOLERANCE_SECS = 300


def verify(secret: bytes, headers, raw_body: bytes) -> bool:
    timestamp = headers.get("Tollgate-Timestamp", "")
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(int(time.time()) - int(timestamp)) > TOLERANCE_SECS:
        return False
    expected = "v1=" + hmac.new(secret, timestamp.encode() + b"." + raw_body, hashlib.sha256).hexdigest()
    candidates = [s.strip() for s in headers.get("Tollgate-Signature", "").split(",")]
    return any(hmac.compare_digest(expected, c) for c in candidates if c.startswith("v1="))


class Handler(BaseHTTPRequestHandler):
    secret = b""
    lock = threading.Lock()
    seen: dict[str, str] = {}

    def log_message(self, fmt, *args):  # one short line per call, no bodies
        sys.stderr.write("receiver: " + (fmt % args) + "\n")

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # health probe for run.sh
        self._answer(200, {"ok": True})

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if not verify(self.secret, self.headers, raw):
            self._answer(401, {"error": "bad signature"})
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._answer(400, {"error": "not json"})
            return
        key = self.headers.get("Idempotency-Key", "")
        if body.get("type") == "tollgate.action":
            # Same key, same answer (at-least-once delivery).
            with self.lock:
                reference = self.seen.setdefault(key, f"contract-{body.get('operation')}-{len(self.seen) + 1}")
            self._answer(200, {"reference": reference})
        else:
            self._answer(200, {})


def main() -> None:
    port_file, secret = sys.argv[1], sys.argv[2]
    Handler.secret = secret.encode()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(port_file + ".tmp", port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
