//! One grant, one revocation (issue 8, I3 and I4): however many callers ask at once, a grant is
//! revoked once; renew and rotate act only on a grant still active when they are performed.

use serde_json::{Value, json};
use tollgate_tests::ApiClient;

use crate::common::{self, PATIENCE, TestEnv, assert_error, id_of};

/// Requests `read` on wiki-staging for an hour, has bob approve, waits until active; the grant.
async fn active_grant(t: &TestEnv, alice: &ApiClient) -> anyhow::Result<Value> {
    let body = json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "revocation test" });
    let id = id_of(&alice.create_request(&body).await?);
    let (st, resp) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{resp}");
    Ok(alice.wait_status(&id, "active", PATIENCE).await?["grant"].clone())
}

/// Audit records of `event_type` about grant `gid`.
fn about_grant<'a>(records: &'a [Value], event_type: &'a str, gid: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    let subject = format!("grant:{gid}");
    records.iter().filter(move |r| r["event_type"] == event_type && r["subject"] == subject.as_str())
}

/// Issue 8, item 6: one early revoke plus 15 concurrent revoke requests used to create several
/// revoke runs and several `revoke_succeeded` records for one grant (the create path checked a
/// copy of the grant read before the writer's transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_revocations_revoke_a_grant_once() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let grant = active_grant(&t, &alice).await?;
    let gid = grant["id"].as_str().expect("grant id").to_owned();

    let mut calls = tokio::task::JoinSet::new();
    let early = alice.clone();
    let path = format!("/v1/grants/{gid}/revoke");
    calls.spawn(async move { (true, early.post(&path, &json!({})).await) });
    for _ in 0..15 {
        let alice = alice.clone();
        let body = json!({ "integration": "wiki-staging", "kind": "revoke", "grant": gid });
        calls.spawn(async move { (false, alice.post("/v1/requests", &body).await) });
    }
    let mut runs = std::collections::BTreeSet::new();
    while let Some(joined) = calls.join_next().await {
        let (early, answer) = joined?;
        let (st, body) = answer?;
        match (early, st) {
            (true, 202) => assert!(matches!(body["status"].as_str(), Some("revoking" | "revoked")), "{body}"),
            (false, 200 | 201) => {
                runs.insert(id_of(&body));
            }
            _ => assert_error(st, &body, 409, "grant_not_active"),
        }
    }
    assert!(runs.len() <= 1, "one revocation per grant, not {} revoke requests: {runs:?}", runs.len());

    let (st, g) = alice.get(&format!("/v1/grants/{gid}")).await?;
    assert_eq!(st, 200, "{g}");
    t.server.wait_quiet(PATIENCE).await?;
    let (_, g) = alice.get(&format!("/v1/grants/{gid}")).await?;
    assert_eq!(g["status"], "revoked", "{g}");
    let revokes: Vec<_> = t.receiver.revokes().into_iter().filter(|c| c.body["grant_id"] == gid.as_str()).collect();
    assert_eq!(revokes.len(), 1, "one revoke call: {revokes:?}");
    let audit = t.server.client("audrey").await?.audit(None).await?;
    assert_eq!(about_grant(&audit, "revoke_succeeded", &gid).count(), 1, "one revoke_succeeded per grant");
    Ok(())
}

/// A revoke workflow for wiki-staging that the owner approves.
const APPROVED_REVOKE: &str = "key: approved-revoke
version: 1
kind: revoke
applies_to:
  integrations: [wiki-staging]
parameters:
  require_justification: false
steps:
  - approval:
      approvers:
        owner: true
      timeout: 5m
  - action: {operation: revoke}
";

/// While a revoke request for a grant awaits approval, further revoke requests for the grant
/// attach to it (200, the same request) instead of opening more revocations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_requests_attach_to_the_revocation_already_asked_for() -> anyhow::Result<()> {
    let t = common::start_with(|o| o.workflow("approved-revoke.yaml", APPROVED_REVOKE)).await?;
    let (alice, admin) = (t.server.client("alice").await?, t.server.client("admin").await?);
    let grant = active_grant(&t, &alice).await?;
    let gid = grant["id"].as_str().expect("grant id").to_owned();
    let ask = json!({ "integration": "wiki-staging", "kind": "revoke", "grant": gid });

    let first = alice.create_request(&ask).await?;
    let first_id = id_of(&first);
    assert_eq!(first["status"], "awaiting_approval", "{first}");
    let mut calls = tokio::task::JoinSet::new();
    for caller in [alice.clone(), alice.clone(), admin.clone(), alice.clone()] {
        let ask = ask.clone();
        calls.spawn(async move { caller.post("/v1/requests", &ask).await });
    }
    while let Some(joined) = calls.join_next().await {
        let (st, body) = joined??;
        assert_eq!(st, 200, "attached, not created: {body}");
        assert_eq!(id_of(&body), first_id, "{body}");
        assert_eq!(body["kind"], "revoke");
    }
    // Someone who may not revoke the grant learns nothing from it.
    let (st, body) = t.server.client("erin").await?.post("/v1/requests", &ask).await?;
    assert_error(st, &body, 403, "forbidden");

    let (st, body) = t.server.client("bob").await?.decide(&first_id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    alice.wait_status(&first_id, "completed", PATIENCE).await?;
    t.server.wait_quiet(PATIENCE).await?;
    let revokes: Vec<_> = t.receiver.revokes().into_iter().filter(|c| c.body["grant_id"] == gid.as_str()).collect();
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    let (_, list) = admin.get("/v1/requests?limit=100").await?;
    let revoke_runs = list["items"].as_array().expect("items").iter().filter(|r| r["kind"] == "revoke").count();
    assert_eq!(revoke_runs, 1, "{list:#}");
    Ok(())
}

/// Issue 8, item 2: a renewal approved after its grant was revoked used to call the connector's
/// `renew` after its `revoke` and give the revoked grant a new expiry, with no revocation ever
/// scheduled again. Renew acts on an active grant only, checked when it is performed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_approved_after_the_grant_was_revoked_does_nothing() -> anyhow::Result<()> {
    let t = common::start().await?;
    let (alice, bob) = (t.server.client("alice").await?, t.server.client("bob").await?);
    let grant = active_grant(&t, &alice).await?;
    let gid = grant["id"].as_str().expect("grant id").to_owned();
    let renewal = alice
        .create_request(&json!({ "integration": "wiki-staging", "kind": "renew", "grant": gid, "duration": "2h", "justification": "more" }))
        .await?;
    let renewal_id = id_of(&renewal);
    assert_eq!(renewal["status"], "awaiting_approval", "{renewal}");

    let (st, body) = alice.post(&format!("/v1/grants/{gid}/revoke"), &json!({})).await?;
    assert_eq!(st, 202, "{body}");
    t.server.wait_quiet(PATIENCE).await?;
    let (_, revoked) = alice.get(&format!("/v1/grants/{gid}")).await?;
    assert_eq!(revoked["status"], "revoked", "{revoked}");

    let (st, body) = bob.decide(&renewal_id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    let failed = alice.wait_status(&renewal_id, "failed", PATIENCE).await?;
    assert!(failed["reason"].as_str().unwrap_or_default().contains("grant_not_active"), "{failed:#}");
    t.server.wait_quiet(PATIENCE).await?;
    assert!(t.receiver.actions("renew").is_empty(), "renew reached the connector after the revoke");
    let (_, after) = alice.get(&format!("/v1/grants/{gid}")).await?;
    assert_eq!(after["status"], "revoked", "{after}");
    assert_eq!(after["expires_at"], revoked["expires_at"], "a revoked grant's expiry does not move");
    let audit = t.server.client("audrey").await?.audit(Some(&renewal_id)).await?;
    let refused: Vec<_> = audit.iter().filter(|r| r["event_type"] == "action_refused").collect();
    assert_eq!(refused.len(), 1, "{audit:#?}");
    assert_eq!(refused[0]["details"]["code"], "grant_not_active", "{:#}", refused[0]);
    Ok(())
}

/// A grant workflow for wiki-staging whose revocation is verified (the owner approves).
const VERIFIED_GRANT: &str = "key: verified-grant
version: 1
kind: grant
applies_to:
  integrations: [wiki-staging]
parameters:
  default_duration: 1h
  max_duration: 1h
  require_justification: false
steps:
  - approval:
      approvers:
        owner: true
      timeout: 5m
  - action: {operation: grant}
  - wait: {until: expiry}
  - action:
      operation: revoke
      retry: {max_attempts: 2, backoff: 100ms, max_backoff: 200ms}
  - action:
      operation: verify
      retry: {max_attempts: 1, backoff: 100ms, max_backoff: 2s}
";

/// Issue 8, item 5 (I1): a verification after a revocation that finds the access still there
/// used to leave the grant shown `revoked` with nothing revoking it again. Now the grant is
/// `revoke_failed` (never `revoked` while access may be there), the revocation is sent again with
/// a new idempotency key after a pause, and verified again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_verification_after_a_revoke_revokes_again() -> anyhow::Result<()> {
    let t = common::start_with(|o| o.workflow("verified-grant.yaml", VERIFIED_GRANT)).await?;
    let alice = t.server.client("alice").await?;
    let grant = active_grant(&t, &alice).await?;
    let gid = grant["id"].as_str().expect("grant id").to_owned();
    let of_grant = |op: &'static str, calls: &[tollgate_tests::Call]| -> Vec<tollgate_tests::Call> {
        calls.iter().filter(|c| c.operation() == Some(op) && c.body["grant_id"] == gid.as_str()).cloned().collect()
    };

    // The target "forgets" the revoke: the verification finds the access still there.
    t.receiver.fail_next(Some("verify"), 409, 1);
    let (st, body) = alice.post(&format!("/v1/grants/{gid}/revoke"), &json!({})).await?;
    assert_eq!(st, 202, "{body}");
    let calls = t.receiver.wait_for("a verify call", PATIENCE, |c| !of_grant("verify", c).is_empty()).await?;
    t.receiver.hold("revoke");
    assert_eq!(of_grant("verify", &calls)[0].body["expect"], "absent", "verify states what it expects");
    assert!(of_grant("revoke", &calls)[0].body.get("expect").is_none(), "only verify carries expect");

    // Until the revocation holds again, the grant is revoke_failed, never revoked.
    let failed = tollgate_tests::eventually("the grant to show revoke_failed", PATIENCE, || async {
        let (_, g) = alice.get(&format!("/v1/grants/{gid}")).await?;
        assert_ne!(g["status"], "revoked", "shown revoked although the verification failed: {g}");
        Ok(if g["status"] == "revoke_failed" { Ok(g) } else { Err(g.to_string()) })
    })
    .await?;
    assert!(failed["revoked_at"].is_null(), "{failed}");
    let calls = t.receiver.wait_for("the revoke sent again", PATIENCE, |c| of_grant("revoke", c).len() == 2).await?;
    let keys: Vec<_> = of_grant("revoke", &calls).iter().map(|c| c.idempotency_key().map(str::to_owned)).collect();
    assert_ne!(keys[0], keys[1], "a new key: the receiver already answered the first");
    t.receiver.release();
    t.receiver.wait_for("verified again", PATIENCE, |c| of_grant("verify", c).len() == 2).await?;
    t.server.wait_quiet(PATIENCE).await?;
    let (_, g) = alice.get(&format!("/v1/grants/{gid}")).await?;
    assert_eq!(g["status"], "revoked", "{g}");

    let audit = t.server.client("audrey").await?.audit(None).await?;
    assert_eq!(about_grant(&audit, "revoke_succeeded", &gid).count(), 1, "one revoke_succeeded per grant");
    let failed: Vec<_> = about_grant(&audit, "verify_failed", &gid).collect();
    assert_eq!(failed.len(), 1, "{audit:#?}");
    assert_eq!(failed[0]["details"]["expect"], "absent");
    assert_eq!(about_grant(&audit, "revoke_repeated", &gid).count(), 1);
    assert_eq!(about_grant(&audit, "verify_succeeded", &gid).count(), 1);
    // The requester and the owner were told.
    let told = t.receiver.notifications().iter().filter(|n| n.event() == Some("revoke_failed")).count();
    assert_eq!(told, 1, "one revoke_failed notification");
    Ok(())
}

/// Drift reconciliation: a receiver that "forgets" a revoke (its access is still there when a
/// reconciliation tick verifies the revoked grant) is detected on the next tick, audited as
/// `drift_detected`, and revoked again at once with a new idempotency key; ticks are claimed
/// once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_revokes_again_access_the_target_still_has() -> anyhow::Result<()> {
    let t = common::start_with(|mut o| {
        o.reconcile_schedule = "* * * * * *".to_owned(); // every second
        o
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let grant = active_grant(&t, &alice).await?;
    let gid = grant["id"].as_str().expect("grant id").to_owned();
    let of_grant = |op: &'static str, calls: &[tollgate_tests::Call]| -> Vec<tollgate_tests::Call> {
        calls.iter().filter(|c| c.operation() == Some(op) && c.body["grant_id"] == gid.as_str()).cloned().collect()
    };
    // An active grant is checked for presence.
    let calls = t.receiver.wait_for("a presence check", PATIENCE, |c| !of_grant("verify", c).is_empty()).await?;
    assert_eq!(of_grant("verify", &calls)[0].body["expect"], "present");

    // The target forgets the revoke: the next absence check finds the access.
    t.receiver.fail_next(Some("verify:absent"), 409, 1);
    let (st, body) = alice.post(&format!("/v1/grants/{gid}/revoke"), &json!({})).await?;
    assert_eq!(st, 202, "{body}");
    let calls = t.receiver.wait_for("the revoke sent again", PATIENCE, |c| of_grant("revoke", c).len() == 2).await?;
    let revokes = of_grant("revoke", &calls);
    assert_ne!(revokes[0].idempotency_key(), revokes[1].idempotency_key(), "{revokes:?}");
    assert_eq!(revokes[1].body["scopes"], json!(["read"]), "the grant's whole scope set");
    let auditor = t.server.client("audrey").await?;
    let audit = tollgate_tests::eventually("the revocation repeated", PATIENCE, || async {
        let audit = auditor.audit(None).await?;
        let repeated = about_grant(&audit, "revoke_repeated", &gid).count();
        Ok(if repeated == 1 { Ok(audit) } else { Err(format!("{repeated} revoke_repeated for {gid}")) })
    })
    .await?;
    let drift: Vec<_> = about_grant(&audit, "drift_detected", &gid).collect();
    assert_eq!(drift.len(), 1, "{drift:#?}");
    assert_eq!(drift[0]["details"]["expected"], "absent");
    assert_eq!(about_grant(&audit, "revoke_succeeded", &gid).count(), 1, "one revoke_succeeded per grant");
    let (_, g) = alice.get(&format!("/v1/grants/{gid}")).await?;
    assert_eq!(g["status"], "revoked", "{g}");

    // Every tick was claimed once.
    let ticks: Vec<&Value> =
        audit.iter().filter(|r| r["event_type"] == "reconcile_started").map(|r| &r["details"]["tick"]).collect();
    let distinct: std::collections::BTreeSet<String> = ticks.iter().map(|t| t.to_string()).collect();
    assert!(!ticks.is_empty());
    assert_eq!(distinct.len(), ticks.len(), "a tick ran twice: {ticks:?}");
    Ok(())
}
