//! The whole life of a request: ask, notify approvers, approve, grant, expire, revoke, audit —
//! over the API and through the CLI.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::common::{self, PATIENCE, assert_in_order, event_types, has_action, id_of, of_run};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

fn principals(recipients: &Value) -> Vec<String> {
    let mut p: Vec<String> = recipients
        .as_array()
        .unwrap_or_else(|| panic!("recipients: {recipients}"))
        .iter()
        .map(|r| r["principal"].as_str().unwrap_or_default().to_owned())
        .collect();
    p.sort();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_request_is_granted_then_revoked_at_expiry_with_a_verifiable_audit_trail() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let bob = t.server.client("bob").await?;
    let audrey = t.server.client("audrey").await?;

    // Ask.
    let created = alice
        .create_request(&json!({
            "integration": "wiki-staging", "scopes": ["edit"], "duration": "2s",
            "justification": "INC-1: fix the runbook",
        }))
        .await?;
    let id = id_of(&created);
    assert_eq!(created["status"], "awaiting_approval", "{created:#}");
    assert_eq!(created["workflow"], json!({ "key": "test-grant", "version": 1 }));
    assert_eq!((created["requester"].as_str(), created["duration_secs"].as_u64()), (Some("alice"), Some(2)));
    assert_eq!(created["steps"][0]["state"], "current");
    assert_eq!(created["steps"][0]["quorum"], 1);

    // The approvers hear about it; the requester does not.
    let calls = t
        .receiver
        .wait_for("approval_requested notification", PATIENCE, |c| {
            of_run(c, &id).any(|c| c.event() == Some("approval_requested"))
        })
        .await?;
    let note = of_run(&calls, &id).find(|c| c.event() == Some("approval_requested")).unwrap();
    assert_eq!(note.path, "/notify");
    assert!(note.signature_ok);
    assert_eq!(principals(&note.body["recipients"]), ["bob", "carol", "dave"]);
    assert_eq!(note.idempotency_key(), note.body["idempotency_key"].as_str());
    let summary = &note.body["request"];
    assert_eq!(
        (summary["requester"].as_str(), summary["integration"].as_str(), summary["status"].as_str()),
        (Some("alice"), Some("wiki-staging"), Some("awaiting_approval"))
    );
    assert_eq!(summary["approvals_needed"], 1);
    assert_eq!(summary["justification"], "INC-1: fix the runbook");
    assert!(t.receiver.grants().is_empty(), "nothing may be granted before approval");

    // Approve.
    let (status, approved) = bob.decide(&id, "approve").await?;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["approvals"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        (approved["approvals"][0]["approver"].as_str(), approved["approvals"][0]["channel"].as_str()),
        (Some("bob"), Some("api"))
    );

    // The grant call: signed, keyed, and about the right access.
    let calls = t.receiver.wait_for("grant call", PATIENCE, |c| has_action(c, "grant", &id)).await?;
    let grant_call = of_run(&calls, &id).find(|c| c.operation() == Some("grant")).unwrap().clone();
    assert_eq!(grant_call.path, "/connector");
    assert!(grant_call.signature_ok);
    let key = grant_call.idempotency_key().expect("Idempotency-Key header").to_owned();
    assert_eq!(grant_call.body["idempotency_key"], key.as_str());
    assert!(grant_call.header("tollgate-timestamp").is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit())));
    assert!(grant_call.header("user-agent").is_some_and(|ua| ua.starts_with("tollgate/")));
    let b = &grant_call.body;
    assert_eq!(b["principal"], "alice");
    assert_eq!(b["scopes"], json!(["edit"]));
    assert_eq!(b["integration"], json!({ "name": "wiki-staging", "app": "wiki", "environment": "staging" }));
    assert_eq!(b["attempt"], 1);

    // Active, for exactly the requested two seconds.
    let active = alice.wait_status(&id, "active", PATIENCE).await?;
    let grant = &active["grant"];
    assert_eq!(grant["status"], "active", "{active:#}");
    assert_eq!(grant["id"], b["grant_id"]);
    assert_eq!(grant["principal"], "alice");
    assert_eq!(grant["reference"], format!("ref-{key}"), "the connector's reference is kept");
    let (granted_at, expires_at) = (time(&grant["granted_at"]), time(&grant["expires_at"]));
    assert_eq!(expires_at - granted_at, chrono::Duration::seconds(2));

    // Expiry: the revoke call comes, once, after the grant expired.
    let calls = t.receiver.wait_for("revoke call", PATIENCE, |c| has_action(c, "revoke", &id)).await?;
    let revoke_call = of_run(&calls, &id).find(|c| c.operation() == Some("revoke")).unwrap().clone();
    assert!(revoke_call.signature_ok);
    assert!(revoke_call.at_utc >= expires_at, "revoked at {} before expiry {expires_at}", revoke_call.at_utc);
    assert_eq!(revoke_call.body["grant_id"], grant["id"]);
    assert_eq!(revoke_call.body["principal"], "alice");
    assert_eq!(revoke_call.idempotency_key(), revoke_call.body["idempotency_key"].as_str());

    let done = alice.wait_status(&id, "completed", PATIENCE).await?;
    assert_eq!(done["grant"]["status"], "revoked", "{done:#}");
    assert!(time(&done["grant"]["revoked_at"]) >= expires_at);
    assert!(done["steps"].as_array().unwrap().iter().all(|s| s["state"] == "done"), "{done:#}");

    // Requester and owner are told it ended.
    let calls = t
        .receiver
        .wait_for("revoked notification", PATIENCE, |c| {
            of_run(c, &id)
                .any(|c| c.event() == Some("revoked") && c.body["text"].as_str().is_some_and(|t| t.contains("revoked")))
        })
        .await?;
    let messages: Vec<_> = of_run(&calls, &id).filter(|c| matches!(c.event(), Some("granted" | "revoked"))).collect();
    assert_eq!(messages.len(), 2, "granted + revoked notifications");
    assert_eq!((messages[0].event(), messages[1].event()), (Some("granted"), Some("revoked")));
    assert_eq!(principals(&messages[0].body["recipients"]), ["alice"]);
    assert!(messages[0].body["text"].as_str().unwrap().contains(&format!("Request: {id}")));
    assert_eq!(principals(&messages[1].body["recipients"]), ["alice", "bob"]);

    // Exactly once, each — checked once the engine is quiet, so a second call would have come.
    t.server.wait_quiet(PATIENCE).await?;
    assert_eq!(t.receiver.distinct_keys("grant", Some(&id)).len(), 1);
    assert_eq!(t.receiver.distinct_keys("revoke", Some(&id)).len(), 1);
    assert_eq!(t.receiver.grants().len(), 1);
    assert_eq!(t.receiver.revokes().len(), 1);
    assert!(t.receiver.calls().iter().all(|c| c.signature_ok));
    assert_eq!(t.receiver.rejected(), 0);

    // The receiver really checks signatures: a tampered copy of the grant call is refused.
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in grant_call.headers.iter().filter(|(k, _)| k != "content-length" && k != "host") {
        headers.insert(reqwest::header::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
    }
    let tampered = String::from_utf8(grant_call.raw.clone())?.replace("\"alice\"", "\"mallory\"");
    let http = tollgate_engine::http::client(std::time::Duration::from_secs(5))?;
    let resp = http.post(t.receiver.connector_url()).headers(headers).body(tampered).send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(t.receiver.rejected(), 1);

    // The audit trail: verifies, and tells the story in order.
    let (status, verify) = audrey.get("/v1/audit/verify").await?;
    assert_eq!(status, 200);
    assert_eq!(verify["ok"], true, "{verify}");
    assert!(verify["broken_at"].is_null());
    let cli = t.server.cli_config(&["audit", "verify"]).await?;
    assert_eq!(cli.code, 0, "{cli:?}");
    assert!(cli.stdout.contains("audit chain OK"), "{cli:?}");
    assert!(cli.stdout.contains(&format!("head sequence {}", verify["head_seq"])), "{cli:?} vs {verify}");

    let records = audrey.audit(Some(&id)).await?;
    let types = event_types(&records);
    let story = [
        "request_created",
        "approval_requested",
        "approval_recorded",
        "request_approved",
        "grant_succeeded",
        "access_expired",
        "revoke_succeeded",
        "request_completed",
    ];
    assert_in_order(&types, &story);
    for r in records.iter().filter(|r| story.contains(&r["event_type"].as_str().unwrap_or_default())) {
        assert_eq!(r["workflow_key"], "test-grant", "{r}");
        assert_eq!(r["workflow_version"], 1, "{r}");
        assert_eq!(r["run_id"], id.as_str(), "{r}");
        assert_eq!(r["justification"], "INC-1: fix the runbook", "{r}");
    }
    for t in &story {
        assert_eq!(types.iter().filter(|x| x == t).count(), 1, "{t} once: {types:?}");
    }
    let by_type = |t: &str| records.iter().find(|r| r["event_type"] == t).unwrap();
    assert_eq!(by_type("request_created")["actor"], "alice");
    let vote = by_type("approval_recorded");
    assert_eq!((vote["actor"].as_str(), vote["channel"].as_str()), (Some("bob"), Some("api")));
    assert_eq!(by_type("request_approved")["actor"], "bob");
    assert_eq!(by_type("grant_succeeded")["subject"], format!("grant:{}", grant["id"].as_str().unwrap()));
    assert_eq!(by_type("access_expired")["actor"], "system");
    assert!(!types.iter().any(|t| t == "decision_rejected"));

    // The whole log as served is one unbroken chain.
    let all = audrey.audit(None).await?;
    assert_eq!(all.len() as u64, verify["records"].as_u64().unwrap());
    for (i, pair) in all.windows(2).enumerate() {
        assert_eq!(pair[1]["seq"].as_i64(), Some(i as i64 + 2));
        assert_eq!(pair[1]["prev_hash"], pair[0]["hash"], "link {} -> {}", pair[0]["seq"], pair[1]["seq"]);
    }
    assert_eq!(all.last().unwrap()["hash"], verify["head_hash"]);

    // The log is for auditors only.
    let (status, body) = alice.get("/v1/audit").await?;
    common::assert_error(status, &body, 403, "forbidden");
    let (status, body) = alice.get("/v1/audit/verify").await?;
    common::assert_error(status, &body, 403, "forbidden");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_creates_shows_and_approves_requests() -> anyhow::Result<()> {
    let t = common::start().await?;
    let json = |out: &tollgate_tests::CliOutput| -> Value {
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
    };

    let out = t
        .server
        .cli_as(
            "alice",
            &["request", "create", "-i", "wiki-staging", "-s", "read", "-d", "1h", "-j", "read the docs", "--json"],
        )
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let created = json(&out);
    let id = id_of(&created);
    assert_eq!(created["status"], "awaiting_approval");
    assert_eq!(created["duration_secs"], 3600);

    let out = t.server.cli_as("alice", &["request", "show", &id, "--json"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json(&out)["id"], id.as_str());

    let out = t.server.cli_as("bob", &["approve", &id, "-m", "looks fine", "--json"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    let approved = json(&out);
    let vote = &approved["approvals"][0];
    assert_eq!(
        (vote["approver"].as_str(), vote["channel"].as_str(), vote["comment"].as_str()),
        (Some("bob"), Some("cli"), Some("looks fine"))
    );

    t.receiver.wait_for("grant call", PATIENCE, |c| has_action(c, "grant", &id)).await?;
    t.server.client("alice").await?.wait_status(&id, "active", PATIENCE).await?;
    let out = t.server.cli_as("alice", &["request", "show", &id]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l.starts_with("status") && l.ends_with("active")), "{}", out.stdout);
    assert!(out.stdout.contains("decision    approve by bob"), "{}", out.stdout);

    let out = t.server.cli_as("alice", &["request", "list", "--json"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(json(&out)["items"].as_array().unwrap().iter().any(|r| r["id"] == id.as_str()));

    // Refusals surface as a non-zero exit with the server's code.
    let out = t.server.cli_as("carol", &["approve", &id]).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("409 already_decided"), "{out:?}");
    let out = t.server.cli(&["request", "show", &id], &[("TOLLGATE_URL", &t.server.url())]).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("TOLLGATE_TOKEN"), "{out:?}");

    // Deny through the CLI, with a reason.
    let out = t
        .server
        .cli_as("alice", &["request", "create", "-i", "wiki-staging", "-s", "edit", "-j", "more", "--json"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let second = id_of(&json(&out));
    let out = t.server.cli_as("carol", &["deny", &second, "-r", "not during the freeze", "--json"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    let denied = json(&out);
    assert_eq!((denied["status"].as_str(), denied["reason"].as_str()), (Some("denied"), Some("not during the freeze")));

    // The audit log records the CLI as the channel.
    let records = t.server.client("audrey").await?.audit(Some(&id)).await?;
    let vote = records.iter().find(|r| r["event_type"] == "approval_recorded").expect("approval_recorded");
    assert_eq!((vote["actor"].as_str(), vote["channel"].as_str()), (Some("bob"), Some("cli")));
    let created = records.iter().find(|r| r["event_type"] == "request_created").expect("request_created");
    assert_eq!(created["channel"], "cli");
    Ok(())
}
