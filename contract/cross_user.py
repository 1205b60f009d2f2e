#!/usr/bin/env python3
"""Object-level authorization between two requesters, checked explicitly on the seeded objects
(Schemathesis' `object_level_authorization` check probes what its own runs create; this covers
every id-taking operation deterministically).

alice and mallory are plain requesters, neither an approver of the other's requests. Each must
get 404 (or 403) for the other's request and grant, on every read and every write, and must not
find them in a listing; the objects must be unchanged afterwards.

Usage: cross_user.py BASE_URL TOKENS_JSON SEEDED_JSON
"""

from __future__ import annotations

import json
import sys

from api import Api

DENIED = (403, 404)


def main() -> None:
    base, tokens_path, seeded_path = sys.argv[1:4]
    tokens = json.load(open(tokens_path))
    seeded = json.load(open(seeded_path))
    alice, mallory = Api(base, tokens["alice"]), Api(base, tokens["mallory"])
    failures: list[str] = []
    checked = 0

    def denied(who: str, api: Api, method: str, path: str, body: object | None = None) -> None:
        nonlocal checked
        checked += 1
        status, answer = api.call(method, path, body)
        if status not in DENIED:
            failures.append(f"{who}: {method} {path} {json.dumps(body) if body else ''} -> {status} {answer}")

    def unlisted(who: str, api: Api, path: str, ids: list[str]) -> None:
        nonlocal checked
        checked += 1
        status, page = api.call("GET", path)
        listed = {item.get("id") for item in (page or {}).get("items", [])} if status == 200 else set()
        leaked = sorted(set(ids) & listed)
        if status != 200 or leaked:
            failures.append(f"{who}: GET {path} -> {status}; lists the other requester's {leaked}")

    alice_requests = [seeded[k] for k in ("alice_pending", "alice_approved", "alice_manual", "alice_denied")]
    alice_grants = [seeded["alice_grant"], seeded["alice_grant_low"]]
    before = {rid: alice.expect(200, "GET", f"/v1/requests/{rid}")["status"] for rid in alice_requests}

    for rid in alice_requests:
        denied("mallory", mallory, "GET", f"/v1/requests/{rid}")
    denied("mallory", mallory, "POST", f"/v1/requests/{seeded['alice_pending']}/cancel")
    for decision in ("approve", "deny"):
        denied("mallory", mallory, "POST", f"/v1/requests/{seeded['alice_pending']}/decisions",
               {"decision": decision, "comment": "not mine"})
    for gid in alice_grants:
        denied("mallory", mallory, "GET", f"/v1/grants/{gid}")
        denied("mallory", mallory, "POST", f"/v1/grants/{gid}/revoke")
    # Renewing, rotating or revoking someone else's grant through a new request.
    for kind in ("renew", "rotate", "revoke"):
        checked += 1
        body = {"integration": "wiki-staging", "kind": kind, "grant": seeded["alice_grant"],
                "justification": "not mine"}
        status, answer = mallory.call("POST", "/v1/requests", body)
        if status not in (403, 404, 422):
            failures.append(f"mallory: POST /v1/requests {json.dumps(body)} -> {status} {answer}")
    denied("mallory", mallory, "POST", f"/v1/tasks/{seeded['task']}/complete", {"outcome": "done"})
    unlisted("mallory", mallory, "/v1/requests?limit=200", alice_requests)
    unlisted("mallory", mallory, "/v1/requests?requester=alice&limit=200", alice_requests)
    unlisted("mallory", mallory, "/v1/grants?limit=200", alice_grants)
    unlisted("mallory", mallory, "/v1/grants?principal=alice&limit=200", alice_grants)
    unlisted("mallory", mallory, "/v1/tasks", [seeded["task"]])

    # And the other way round.
    denied("alice", alice, "GET", f"/v1/requests/{seeded['mallory_pending']}")
    denied("alice", alice, "POST", f"/v1/requests/{seeded['mallory_pending']}/cancel")
    denied("alice", alice, "GET", f"/v1/grants/{seeded['mallory_grant']}")
    denied("alice", alice, "POST", f"/v1/grants/{seeded['mallory_grant']}/revoke")
    unlisted("alice", alice, "/v1/requests?limit=200", [seeded["mallory_pending"]])
    unlisted("alice", alice, "/v1/grants?limit=200", [seeded["mallory_grant"]])

    after = {rid: alice.expect(200, "GET", f"/v1/requests/{rid}")["status"] for rid in alice_requests}
    for rid in alice_requests:
        if before[rid] != after[rid]:
            failures.append(f"alice's request {rid} changed from {before[rid]} to {after[rid]} by mallory's calls")
    grant = alice.expect(200, "GET", f"/v1/grants/{seeded['alice_grant']}")
    if grant["status"] != "active":
        failures.append(f"alice's grant {seeded['alice_grant']} is {grant['status']} after mallory's calls")

    for f in failures:
        print("FAIL " + f)
    print(f"cross-user: {checked - len(failures)} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
