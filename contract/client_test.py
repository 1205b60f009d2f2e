"""A client generated from api/openapi.json works: one full lifecycle through it.

openapi-python-client generates a Python package from the committed document into a temporary
directory; it is installed into the contract venv and drives, against the server contract/run.sh
started: alice asks for a medium-risk scope, cannot approve herself, bob (the integration's
owner, the only approver needed under the bundled standard-grant workflow) approves, the webhook
connector grants, alice reads her grant and revokes it, the request completes; an auditor reads
the request's audit trail and verifies the chain. Every call goes through the generated code with
`raise_on_unexpected_status=True`, so an undocumented status fails, and every documented answer
must parse into the generated model.

Run by contract/run.sh (`python -m pytest contract/client_test.py`), which sets CONTRACT_URL,
CONTRACT_TOKENS (JSON: principal -> token) and CONTRACT_WORK (a scratch directory).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
import typing
from http import HTTPStatus
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = Path(os.environ.get("CONTRACT_OPENAPI", ROOT / "api" / "openapi.json"))
PACKAGE = "tollgate_client"


def generate_and_install(work: Path) -> Path:
    """Generates the client package from the document, pip-installs it into this venv, and
    returns the generated package's directory."""
    out = work / "generated-client"
    subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(DOCUMENT),
         "--output-path", str(out), "--meta", "setup", "--overwrite", "--fail-on-warning"],
        check=True,
        # Its post-generation hook runs ruff, installed next to this interpreter.
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    # Offline and pinned: its two dependencies (httpx, attrs) are in contract/requirements.txt.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--force-reinstall", str(out)],
        check=True,
    )
    importlib.invalidate_caches()
    return out / PACKAGE


class Operations:
    """The generated module of each operation, found by the method and URL its code sends (so a
    renamed operationId or tag does not break the test; only a changed route does)."""

    def __init__(self, package_dir: Path) -> None:
        self.modules: dict[tuple[str, str], typing.Any] = {}
        for file in sorted((package_dir / "api").rglob("*.py")):
            text = file.read_text()
            method = re.search(r'"method": "(\w+)"', text)
            url = re.search(r'"url": f?"([^"]+)"', text)
            if method and url:
                name = ".".join(file.relative_to(package_dir.parent).with_suffix("").parts)
                self.modules[(method.group(1).upper(), _shape(url.group(1)))] = importlib.import_module(name)

    def __call__(self, method: str, path: str):
        found = self.modules.get((method, _shape(path)))
        assert found is not None, f"the generated client has no operation {method} {path}"
        return found


def _shape(path: str) -> str:
    """`/v1/requests/{id}` and the generator's `/v1/requests/{quote(str(id), safe='')}` alike."""
    return re.sub(r"\{[^/]*\}", "{}", path)


def body_model(module):
    """The generated model class of an operation's JSON body."""
    return typing.get_type_hints(module.sync_detailed)["body"]


def call(module, expected: HTTPStatus, **kwargs):
    """Calls an operation; asserts the status and that the answer parsed into a generated model."""
    response = module.sync_detailed(**kwargs)
    assert response.status_code == expected, (
        f"{module.__name__}: expected {expected.value}, got {response.status_code.value}: {response.content!r}"
    )
    assert response.parsed is not None and hasattr(response.parsed, "to_dict"), (
        f"{module.__name__}: a {expected.value} answer did not parse into a generated model: {response.content!r}"
    )
    return response


def wait_until(fetch, pred, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if pred(value):
            return value
        assert time.monotonic() < deadline, f"still not {what} after {timeout:.0f}s: {value}"
        time.sleep(0.1)


def test_full_lifecycle_through_the_generated_client() -> None:
    base = os.environ["CONTRACT_URL"]
    tokens = json.loads(Path(os.environ["CONTRACT_TOKENS"]).read_text())
    package_dir = generate_and_install(Path(os.environ["CONTRACT_WORK"]))

    from tollgate_client import AuthenticatedClient

    def client(principal: str) -> AuthenticatedClient:
        return AuthenticatedClient(base_url=base, token=tokens[principal], raise_on_unexpected_status=True)

    alice, bob, audrey = client("alice"), client("bob"), client("audrey")
    op = Operations(package_dir)
    create = op("POST", "/v1/requests")
    show = op("GET", "/v1/requests/{id}")
    decide = op("POST", "/v1/requests/{id}/decisions")
    show_grant = op("GET", "/v1/grants/{id}")
    revoke = op("POST", "/v1/grants/{id}/revoke")
    list_requests = op("GET", "/v1/requests")
    audit = op("GET", "/v1/audit")
    verify = op("GET", "/v1/audit/verify")
    RequestIn, DecisionIn = body_model(create), body_model(decide)

    # alice asks: medium risk, so an approval is needed.
    created = call(
        create, HTTPStatus.CREATED, client=alice,
        body=RequestIn.from_dict({"integration": "wiki-staging", "scopes": ["edit"], "duration": "30m",
                                  "justification": "contract test: generated client"}),
    )
    request = created.parsed.to_dict()
    rid = request["id"]
    assert request["status"] == "awaiting_approval", request
    assert request["requester"] == "alice" and request["scopes"] == ["edit"], request
    assert created.headers.get("location") == f"/v1/requests/{rid}", created.headers

    # She cannot approve her own request.
    denied = decide.sync_detailed(id=rid, client=alice, body=DecisionIn.from_dict({"decision": "approve"}))
    assert denied.status_code == HTTPStatus.FORBIDDEN, denied.content
    assert denied.parsed is not None and denied.parsed.to_dict()["error"]["code"] == "self_approval", denied.content

    # bob, the owner, approves; the webhook connector grants.
    decided = call(decide, HTTPStatus.OK, id=rid, client=bob,
                   body=DecisionIn.from_dict({"decision": "approve", "comment": "ok for the contract test"}))
    assert decided.parsed.to_dict()["status"] in ("provisioning", "active"), decided.content
    request = wait_until(lambda: call(show, HTTPStatus.OK, id=rid, client=alice).parsed.to_dict(),
                         lambda r: r["status"] == "active", "active")
    assert [a["approver"] for a in request["approvals"]] == ["bob"], request
    gid = request["grant"]["id"]

    grant = call(show_grant, HTTPStatus.OK, id=gid, client=alice).parsed.to_dict()
    assert grant["status"] == "active" and grant["principal"] == "alice", grant
    assert grant["request"] == rid and grant["expires_at"], grant
    assert (grant.get("reference") or "").startswith("contract-grant-"), grant

    listed = call(list_requests, HTTPStatus.OK, client=alice).parsed.to_dict()
    assert rid in [r["id"] for r in listed["items"]], listed

    # alice ends her access early.
    revoked = call(revoke, HTTPStatus.ACCEPTED, id=gid, client=alice).parsed.to_dict()
    assert revoked["status"] in ("revoking", "revoked"), revoked
    grant = wait_until(lambda: call(show_grant, HTTPStatus.OK, id=gid, client=alice).parsed.to_dict(),
                       lambda g: g["status"] == "revoked", "revoked")
    assert grant["revoked_at"], grant
    request = wait_until(lambda: call(show, HTTPStatus.OK, id=rid, client=alice).parsed.to_dict(),
                         lambda r: r["status"] == "completed", "completed")

    # Revoking again is a conflict, documented as such.
    again = revoke.sync_detailed(id=gid, client=alice)
    assert again.status_code == HTTPStatus.CONFLICT, again.content

    # The auditor sees the whole story, and the chain verifies.
    records = call(audit, HTTPStatus.OK, client=audrey, request=rid).parsed.to_dict()["items"]
    assert records and all(r.get("run_id") == rid for r in records), records
    assert call(verify, HTTPStatus.OK, client=audrey).parsed is not None
