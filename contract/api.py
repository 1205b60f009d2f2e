"""A few lines of stdlib HTTP shared by the contract scripts (seed, cross-user check)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class Api:
    """JSON over HTTP as one principal."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: object | None = None, headers: dict | None = None):
        """Returns (status, parsed JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            req.add_header(name, value)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return status, parsed

    def expect(self, expected: int, method: str, path: str, body: object | None = None) -> dict:
        status, parsed = self.call(method, path, body)
        if status != expected:
            raise SystemExit(f"{method} {path}: expected {expected}, got {status}: {parsed}")
        return parsed

    def wait_for(self, path: str, pred, what: str, timeout: float = 30.0) -> dict:
        """Polls GET `path` until `pred(body)` holds."""
        deadline = time.monotonic() + timeout
        body = None
        while time.monotonic() < deadline:
            status, body = self.call("GET", path)
            if status == 200 and pred(body):
                return body
            time.sleep(0.1)
        raise SystemExit(f"GET {path}: still not {what} after {timeout:.0f}s: {body}")
