#!/usr/bin/env python3
"""Seeds the contract-test server with real objects through its API, and writes what
Schemathesis needs to reach them.

Usage: seed.py BASE_URL TOKENS_JSON OUT_DIR

TOKENS_JSON maps principal -> token. Writes to OUT_DIR:
  wfc.json           Web Fuzzing Commons auth document: one identity per principal (bearer header)
  seeded.json        the ids made here, by role (read by cross_user.py)
  dict/*.dict        Schemathesis dictionaries (libFuzzer format) of real ids and names, so
                     generated requests hit existing objects and not only 404s
"""

from __future__ import annotations

import json
import os
import sys

from api import Api


def main() -> None:
    base, tokens_path, out = sys.argv[1], sys.argv[2], sys.argv[3]
    tokens = json.load(open(tokens_path))
    as_ = {who: Api(base, tok) for who, tok in tokens.items()}
    alice, mallory, bob, admin = as_["alice"], as_["mallory"], as_["bob"], as_["admin"]

    def ask(who: Api, integration: str, scopes: list[str], duration: str = "30m") -> dict:
        body = {"integration": integration, "scopes": scopes, "duration": duration, "justification": "contract seed"}
        return who.expect(201, "POST", "/v1/requests", body)

    seeded: dict[str, str] = {}
    # Pending, medium risk: waits for bob (owner) or carol (security).
    seeded["alice_pending"] = ask(alice, "wiki-staging", ["edit"])["id"]
    seeded["mallory_pending"] = ask(mallory, "wiki-staging", ["edit"])["id"]
    # Low risk: no approval, the webhook connector grants at once.
    low = ask(alice, "wiki-staging", ["read"])["id"]
    seeded["alice_low"] = low
    got = alice.wait_for(f"/v1/requests/{low}", lambda r: r["status"] == "active", "active")
    seeded["alice_grant_low"] = got["grant"]["id"]
    # Approved by bob, granted by the webhook connector.
    approved = ask(alice, "wiki-staging", ["edit"], "1h")["id"]
    bob.expect(200, "POST", f"/v1/requests/{approved}/decisions", {"decision": "approve", "comment": "seed"})
    got = alice.wait_for(f"/v1/requests/{approved}", lambda r: r["status"] == "active", "active")
    seeded["alice_approved"] = approved
    seeded["alice_grant"] = got["grant"]["id"]
    # The same for mallory, so each requester holds a grant the other must not see or revoke.
    m_approved = ask(mallory, "wiki-staging", ["edit"], "1h")["id"]
    bob.expect(200, "POST", f"/v1/requests/{m_approved}/decisions", {"decision": "approve", "comment": "seed"})
    got = mallory.wait_for(f"/v1/requests/{m_approved}", lambda r: r["status"] == "active", "active")
    seeded["mallory_grant"] = got["grant"]["id"]
    # Manual connector: approved, then a task for admin that stays open.
    manual = ask(alice, "github-staging", ["contents:write"])["id"]
    bob.expect(200, "POST", f"/v1/requests/{manual}/decisions", {"decision": "approve"})
    tasks = admin.wait_for(
        "/v1/tasks", lambda p: any(t["request"] == manual for t in p["items"]), "showing the manual task"
    )
    seeded["alice_manual"] = manual
    seeded["task"] = next(t["id"] for t in tasks["items"] if t["request"] == manual)
    # Denied and cancelled: terminal states.
    denied = ask(alice, "github-staging", ["contents:write"])["id"]
    bob.expect(200, "POST", f"/v1/requests/{denied}/decisions", {"decision": "deny", "comment": "seed"})
    seeded["alice_denied"] = denied
    cancelled = ask(alice, "wiki-staging", ["edit"])["id"]
    alice.expect(200, "POST", f"/v1/requests/{cancelled}/cancel")
    seeded["alice_cancelled"] = cancelled

    with open(os.path.join(out, "seeded.json"), "w") as f:
        json.dump(seeded, f, indent=2)

    auth = [
        {"name": who, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {tok}"}]}
        for who, tok in tokens.items()
    ]
    with open(os.path.join(out, "wfc.json"), "w") as f:
        json.dump({"schemaVersion": "0.1.0", "auth": auth}, f)

    request_ids = [v for k, v in seeded.items() if "grant" not in k and k != "task"]
    grant_ids = [v for k, v in seeded.items() if "grant" in k]
    dictionaries = {
        "request-ids": request_ids,
        "grant-ids": grant_ids,
        "task-ids": [seeded["task"]],
        "integrations": ["wiki-staging", "github-staging"],
        "scopes": ["read", "edit", "contents:read", "contents:write"],
        "principals": list(tokens),
    }
    os.makedirs(os.path.join(out, "dict"), exist_ok=True)
    for name, values in dictionaries.items():
        with open(os.path.join(out, "dict", f"{name}.dict"), "w") as f:
            f.writelines(json.dumps(v) + "\n" for v in values)
    print(f"seeded {len(seeded)} objects: " + ", ".join(f"{k}={v}" for k, v in seeded.items()))


if __name__ == "__main__":
    main()
