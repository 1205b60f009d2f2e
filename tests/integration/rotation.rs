//! Rotation with a grace period (issue 11), phase by phase through a webhook connector: mint the
//! new version keeping the old one valid, verify the new one, wait out the grace period, revoke
//! the old version and verify it is dead — the grant active throughout — and what a failure in
//! each phase leaves behind (docs/WEBHOOKS.md, "Rotation, phase by phase").

use serde_json::{Value, json};
use tollgate_tests::{ApiClient, Call, ServerOptions};

use crate::common::{self, PATIENCE, TestEnv, id_of};

/// Test-only sealing key for minted secrets.
const KEY: &str = "7c1e2d3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3";

/// The bundled rotation's shape, for wiki-staging, with a short grace period and fast retries.
fn workflow(grace: &str) -> String {
    format!(
        "key: quick-rotate
version: 1
kind: rotate
applies_to:
  integrations: [wiki-staging]
parameters:
  require_justification: false
steps:
  - approval:
      approvers:
        owner: true
      timeout: 5m
  - action: {{id: rotate, operation: rotate, retry: {{max_attempts: 2, backoff: 1s, max_backoff: 1s}}}}
  - action: {{id: verify-new, operation: verify, retry: {{max_attempts: 1}}}}
  - wait: {{id: grace, duration: {grace}}}
  - action: {{id: revoke-previous, operation: revoke, version: previous, retry: {{max_attempts: 2, backoff: 1s, max_backoff: 1s}}}}
  - action: {{id: verify-previous, operation: verify, version: previous, retry: {{max_attempts: 1}}}}
"
    )
}

async fn start(grace: &str) -> anyhow::Result<TestEnv> {
    let yaml = workflow(grace);
    let t = common::start_with(|o: ServerOptions| {
        let mut o = o.workflow("quick-rotate.yaml", &yaml);
        o.extra_config.push_str(&format!("\n[secrets]\nkey = \"{KEY}\"\n"));
        o
    })
    .await?;
    t.receiver.mint_secrets(&["grant", "rotate"]);
    Ok(t)
}

/// An active grant of `read` on wiki-staging for alice; its id.
async fn active_grant(t: &TestEnv, alice: &ApiClient) -> anyhow::Result<String> {
    let body = json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "rotation test" });
    let id = id_of(&alice.create_request(&body).await?);
    let (st, resp) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{resp}");
    let view = alice.wait_status(&id, "active", PATIENCE).await?;
    Ok(view["grant"]["id"].as_str().expect("grant id").to_owned())
}

/// Asks for a rotation of `gid` and has bob (the owner) approve it; the rotation's request id.
async fn rotate(t: &TestEnv, alice: &ApiClient, gid: &str) -> anyhow::Result<String> {
    let body = json!({ "integration": "wiki-staging", "kind": "rotate", "grant": gid });
    let id = id_of(&alice.create_request(&body).await?);
    let (st, resp) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{resp}");
    Ok(id)
}

/// The connector calls of run `id`, as (operation, version, expect, keep_previous).
fn phases(calls: &[Call], id: &str) -> Vec<(String, String, String, bool)> {
    common::of_run(calls, id)
        .filter(|c| c.path == "/connector")
        .map(|c| {
            let s = |k: &str| c.body[k].as_str().unwrap_or("-").to_owned();
            (s("operation"), s("version"), s("expect"), c.body["keep_previous"].as_bool().unwrap_or(false))
        })
        .collect()
}

fn phase(op: &str, version: &str, expect: &str, keep: bool) -> (String, String, String, bool) {
    (op.to_owned(), version.to_owned(), expect.to_owned(), keep)
}

async fn grant_status(alice: &ApiClient, gid: &str) -> anyhow::Result<Value> {
    let (st, g) = alice.get(&format!("/v1/grants/{gid}")).await?;
    assert_eq!(st, 200, "{g}");
    Ok(g["status"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_keeps_the_old_version_through_its_grace_period_then_ends_and_checks_it() -> anyhow::Result<()> {
    let t = start("2s").await?;
    let alice = t.server.client("alice").await?;
    let gid = active_grant(&t, &alice).await?;
    let id = rotate(&t, &alice, &gid).await?;
    let view = alice.wait_status(&id, "completed", PATIENCE).await?;
    assert_eq!(view["grant"]["status"], "active", "the grant keeps its (new) access: {view:#}");

    let calls = t.receiver.calls();
    assert_eq!(
        phases(&calls, &id),
        vec![
            phase("rotate", "-", "-", true),
            phase("verify", "-", "present", false),
            phase("revoke", "previous", "-", false),
            phase("verify", "previous", "absent", false),
        ],
    );
    // The old version was ended only after the grace period.
    let of = |op: &str, version: &str| {
        common::of_run(&calls, &id)
            .find(|c| c.body["operation"] == op && c.body["version"].as_str().unwrap_or("-") == version)
            .map(|c| c.at)
            .expect("call")
    };
    assert!(
        of("revoke", "previous") - of("verify", "-") >= std::time::Duration::from_secs(2),
        "grace period cut short"
    );

    // The holder picks up the rotation's new version, once.
    let minted = t.receiver.minted();
    let (st, secret) = alice.post(&format!("/v1/grants/{gid}/secret"), &json!({})).await?;
    assert_eq!(st, 200, "{secret}");
    assert_eq!(secret["secret"].as_str(), minted.last().map(|m| m.secret.as_str()), "the rotation's version");

    let audit = t.server.client("audrey").await?.audit(Some(&id)).await?;
    common::assert_in_order(
        &common::event_types(&audit),
        &["rotate_succeeded", "verify_succeeded", "previous_revoked", "previous_verified", "request_completed"],
    );
    let text = serde_json::to_string(&audit)?;
    for m in &minted {
        assert!(!text.contains(&m.secret), "a minted secret is in the audit trail");
    }
    assert_eq!(grant_status(&alice, &gid).await?, "active");
    Ok(())
}

/// A failed mint changes nothing (the old version stays in use, nothing is revoked); a new version
/// that does not verify stops the rotation before the old one is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_mint_or_check_of_the_new_version_leaves_the_old_one_in_place() -> anyhow::Result<()> {
    let t = start("1s").await?;
    let alice = t.server.client("alice").await?;

    let gid = active_grant(&t, &alice).await?;
    t.receiver.fail_next(Some("rotate"), 422, 1);
    let id = rotate(&t, &alice, &gid).await?;
    alice.wait_status(&id, "failed", PATIENCE).await?;
    assert_eq!(phases(&t.receiver.calls(), &id), vec![phase("rotate", "-", "-", true)]);
    assert_eq!(grant_status(&alice, &gid).await?, "active");

    let gid = active_grant(&t, &alice).await?;
    t.receiver.fail_next(Some("verify"), 422, 1);
    let id = rotate(&t, &alice, &gid).await?;
    let view = alice.wait_status(&id, "failed", PATIENCE).await?;
    t.server.wait_quiet(PATIENCE).await?;
    assert_eq!(
        phases(&t.receiver.calls(), &id),
        vec![phase("rotate", "-", "-", true), phase("verify", "-", "present", false)],
        "nothing revoked: {view:#}"
    );
    assert_eq!(grant_status(&alice, &gid).await?, "active");
    let audit = t.server.client("audrey").await?.audit(Some(&id)).await?;
    common::assert_in_order(&common::event_types(&audit), &["rotate_succeeded", "verify_failed"]);
    Ok(())
}

/// Ending the old version is never given up: while it fails the run shows `failed` with the
/// reason and the owner is alerted; it is retried at the slow revocation pace, and a later success
/// resumes the run. A check that finds the old version still alive ends the run failed, alerted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_the_old_version_is_retried_until_it_holds_and_a_live_old_version_is_reported() -> anyhow::Result<()> {
    let t = start("1s").await?;
    let alice = t.server.client("alice").await?;

    // Revocation of the old version: both attempts fail, then slow retries, until one succeeds.
    let gid = active_grant(&t, &alice).await?;
    t.receiver.fail_next(Some("revoke"), 503, 3);
    let id = rotate(&t, &alice, &gid).await?;
    // Two attempts, then slow retries every 2 s (the harness's revoke_retry_secs): the run shows
    // `failed` with the reason meanwhile (transient, so read from the durable trail).
    let auditor = t.server.client("audrey").await?;
    let failed = tollgate_tests::eventually("the old version's revocation given up", PATIENCE, || async {
        let audit = auditor.audit(Some(&id)).await?;
        let found = audit.into_iter().find(|r| r["event_type"] == "previous_revoke_failed");
        Ok(found.ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    assert_eq!(failed["outcome"], "failure", "{failed}");
    assert!(failed["details"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert_eq!(grant_status(&alice, &gid).await?, "active");
    let view = alice.wait_status(&id, "completed", 2 * PATIENCE).await?;
    assert_eq!(view["grant"]["status"], "active");
    let audit = auditor.audit(Some(&id)).await?;
    common::assert_in_order(
        &common::event_types(&audit),
        &["previous_revoke_failed", "previous_revoked", "previous_verified", "request_completed"],
    );
    let alerts = t.receiver.notifications();
    assert!(
        alerts.iter().any(|c| c.body["event"] == "revoke_failed" && c.body["request_id"] == id.as_str()),
        "the owner is alerted while the old version may still work"
    );

    // The old version still works after its revocation: reported, the run fails. (Only the
    // check of the old version expects absence.)
    let gid = active_grant(&t, &alice).await?;
    t.receiver.fail_next(Some("verify:absent"), 409, 1);
    let id = rotate(&t, &alice, &gid).await?;
    alice.wait_status(&id, "failed", PATIENCE).await?;
    let audit = auditor.audit(Some(&id)).await?;
    common::assert_in_order(&common::event_types(&audit), &["previous_revoked", "previous_verify_failed"]);
    assert_eq!(grant_status(&alice, &gid).await?, "active");
    Ok(())
}
