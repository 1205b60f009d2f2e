//! Break-glass (issue 8): emergency access granted at once to the people a workflow names, then
//! reviewed by others; a denied or late review revokes it at once. Every use is audited
//! distinctly and shown as an emergency.

use serde_json::{Value, json};
use tollgate_tests::ApiClient;

use crate::common::{self, PATIENCE, TestEnv, assert_error, assert_in_order, event_types, has_action, id_of};

/// wiki-staging's grant workflow with break-glass for alice, reviewed by security within
/// `review_timeout`.
pub(crate) fn emergency_workflow(review_timeout: &str) -> String {
    format!(
        "key: emergency-grant
version: 1
kind: grant
applies_to:
  integrations: [wiki-staging]
parameters:
  default_duration: 1h
  max_duration: 1h
steps:
  - approval:
      approvers:
        owner: true
      timeout: 5m
  - action: {{operation: grant}}
  - wait: {{until: expiry}}
  - action: {{operation: revoke}}
break_glass:
  requesters:
    users: [alice]
  review:
    approvers:
      groups: [security]
    timeout: {review_timeout}
"
    )
}

async fn start(review_timeout: &str) -> anyhow::Result<TestEnv> {
    common::start_with(|o| o.workflow("emergency-grant.yaml", &emergency_workflow(review_timeout))).await
}

fn emergency() -> Value {
    json!({ "integration": "wiki-staging", "scopes": ["edit"], "justification": "INC-7: prod is down", "break_glass": true })
}

/// Alice breaks the glass: granted without any approval; returns the request once its grant is
/// active (the request awaits its review).
async fn break_glass(t: &TestEnv, alice: &ApiClient) -> anyhow::Result<(String, Value)> {
    let created = alice.create_request(&emergency()).await?;
    assert_eq!(created["break_glass"], true, "{created}");
    let id = id_of(&created);
    t.receiver.wait_for("the grant call", PATIENCE, |c| has_action(c, "grant", &id)).await?;
    let view = tollgate_tests::eventually("granted and under review", PATIENCE, || async {
        let view = alice.request_view(&id).await?;
        let ready = view["grant"]["status"] == "active" && view["status"] == "awaiting_approval";
        Ok(if ready { Ok(view) } else { Err(view.to_string()) })
    })
    .await?;
    Ok((id, view))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_grants_at_once_and_an_approved_review_keeps_the_access() -> anyhow::Result<()> {
    let t = start("5m").await?;
    let (alice, bob, carol) =
        (t.server.client("alice").await?, t.server.client("bob").await?, t.server.client("carol").await?);

    // Who may, and what for.
    let (st, body) = t.server.client("erin").await?.post("/v1/requests", &emergency()).await?;
    assert_error(st, &body, 403, "forbidden");
    let mut no_why = emergency();
    no_why["justification"] = json!("");
    let (st, body) = alice.post("/v1/requests", &no_why).await?;
    assert_error(st, &body, 422, "justification_required");
    let crm = json!({ "integration": "crm-prod", "scopes": ["read"], "justification": "x", "break_glass": true });
    let (st, body) = alice.post("/v1/requests", &crm).await?;
    assert_error(st, &body, 422, "break_glass_unavailable");

    let (id, view) = break_glass(&t, &alice).await?;
    assert_eq!(view["approvals"], json!([]), "granted before anyone approved");
    // The review: not the requester, not the owner (not a reviewer), and it cannot be cancelled.
    let (st, body) = alice.decide(&id, "approve").await?;
    assert_error(st, &body, 403, "self_approval");
    let (st, body) = bob.decide(&id, "approve").await?;
    assert_error(st, &body, 403, "not_an_approver");
    let (st, body) = alice.post(&format!("/v1/requests/{id}/cancel"), &json!({})).await?;
    assert_error(st, &body, 409, "access_granted");
    let (st, body) = carol.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    let active = alice.wait_status(&id, "active", PATIENCE).await?;
    assert_eq!(active["grant"]["status"], "active");

    t.server.wait_quiet(PATIENCE).await?;
    assert!(!has_action(&t.receiver.calls(), "revoke", &id), "an approved review keeps the access");
    let types = event_types(&t.server.client("audrey").await?.audit(Some(&id)).await?);
    assert_in_order(
        &types,
        &[
            "request_created",
            "break_glass_used",
            "step_skipped",
            "grant_succeeded",
            "review_requested",
            "review_approved",
        ],
    );
    assert!(!types.iter().any(|t| t == "approval_requested"), "{types:?}");
    // The owner was told at once, and the reviewers' request is marked as an emergency.
    let notes = t.receiver.notifications();
    let of_run =
        |event: &str| notes.iter().filter(|n| n.body["request_id"] == id.as_str() && n.event() == Some(event)).count();
    assert_eq!(of_run("break_glass_used"), 1);
    let review = notes
        .iter()
        .find(|n| n.body["request_id"] == id.as_str() && n.event() == Some("approval_requested"))
        .expect("the review request");
    assert_eq!(review.body["request"]["emergency"], true, "{}", review.body);
    assert!(review.body["text"].as_str().unwrap_or_default().starts_with("EMERGENCY (break-glass)"), "{}", review.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_review_revokes_the_access_at_once() -> anyhow::Result<()> {
    let t = start("5m").await?;
    let alice = t.server.client("alice").await?;
    let (id, _) = break_glass(&t, &alice).await?;
    let (st, body) = t
        .server
        .client("dave")
        .await?
        .post(&format!("/v1/requests/{id}/decisions"), &json!({ "decision": "deny", "comment": "not an incident" }))
        .await?;
    assert_eq!(st, 200, "{body}");
    t.receiver.wait_for("the revoke call", PATIENCE, |c| has_action(c, "revoke", &id)).await?;
    let done = alice.wait_status(&id, "completed", PATIENCE).await?;
    assert_eq!(done["grant"]["status"], "revoked", "{done:#}");
    let types = event_types(&t.server.client("audrey").await?.audit(Some(&id)).await?);
    assert_in_order(&types, &["review_requested", "denial_recorded", "review_denied", "revoke_succeeded"]);
    t.server.wait_quiet(PATIENCE).await?;
    let told: Vec<_> = t
        .receiver
        .notifications()
        .into_iter()
        .filter(|n| n.body["request_id"] == id.as_str() && n.event() == Some("break_glass_revoked"))
        .collect();
    assert_eq!(told.len(), 1, "the owner and the requester are told, as an emergency");
    let recipients: Vec<&str> =
        told[0].body["recipients"].as_array().into_iter().flatten().filter_map(|r| r["principal"].as_str()).collect();
    assert!(recipients.contains(&"bob") && recipients.contains(&"alice"), "{recipients:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_not_done_in_time_revokes_the_access() -> anyhow::Result<()> {
    let t = start("2s").await?;
    let alice = t.server.client("alice").await?;
    let (id, _) = break_glass(&t, &alice).await?;
    t.receiver.wait_for("the revoke after the review deadline", PATIENCE, |c| has_action(c, "revoke", &id)).await?;
    let done = alice.wait_status(&id, "completed", PATIENCE).await?;
    assert_eq!(done["grant"]["status"], "revoked", "{done:#}");
    let types = event_types(&t.server.client("audrey").await?.audit(Some(&id)).await?);
    assert_in_order(&types, &["review_requested", "review_expired", "revoke_succeeded"]);
    // Too late to approve now.
    let (st, body) = t.server.client("carol").await?.decide(&id, "approve").await?;
    assert_eq!(st, 409, "{body}");
    Ok(())
}
