//! Requests refused by policy are evidence: the engine audits each as one `request_rejected`,
//! whatever path it came by (API, CLI; Slack in `slack.rs`). Input the requester corrects and
//! sends again is answered, not audited.

use serde_json::{Value, json};
use tollgate_tests::ApiClient;

use crate::common::{self, PATIENCE, assert_error, id_of};

/// `hr-staging`'s grant workflow: only bob may ask; carol approves.
const BOB_ASKS: &str = "key: bob-asks
version: 1
kind: grant
applies_to:
  integrations: [hr-staging]
parameters:
  default_duration: 1h
  max_duration: 1h
  requesters: {users: [bob]}
steps:
  - approval:
      id: carol
      approvers: {users: [carol]}
      timeout: 5m
  - action: {operation: grant}
  - wait: {until: expiry}
  - action: {operation: revoke}
";

async fn rejected(audrey: &ApiClient) -> anyhow::Result<Vec<Value>> {
    Ok(audrey.audit(None).await?.into_iter().filter(|r| r["event_type"] == "request_rejected").collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_by_policy_is_audited_once_on_every_path_and_input_errors_are_not() -> anyhow::Result<()> {
    let t = common::start_with(|o| o.workflow("bob-asks.yaml", BOB_ASKS)).await?;
    let (alice, bob, erin, audrey) = (
        t.server.client("alice").await?,
        t.server.client("bob").await?,
        t.server.client("erin").await?,
        t.server.client("audrey").await?,
    );
    let payroll = json!({ "integration": "hr-staging", "scopes": ["payroll"], "justification": "month end" });

    // Not a requester the workflow names: 403, and one record (it used to leave none).
    let (st, body) = alice.post("/v1/requests", &payroll).await?;
    assert_error(st, &body, 403, "forbidden");
    let records = rejected(&audrey).await?;
    assert_eq!(records.len(), 1, "{records:#?}");
    let r = &records[0];
    assert_eq!(
        (&r["actor"], &r["channel"], &r["outcome"], &r["subject"], &r["workflow_key"], &r["justification"]),
        (
            &json!("alice"),
            &json!("api"),
            &json!("rejected"),
            &json!("integration:hr-staging"),
            &json!("bob-asks"),
            &json!("month end")
        ),
        "{r:#}"
    );
    assert_eq!((&r["details"]["reason"], &r["details"]["grant_id"]), (&json!("forbidden"), &Value::Null), "{r:#}");
    assert!(r["details"]["detail"].as_str().is_some_and(|d| d.contains("may not request access")), "{r:#}");

    // The same through the CLI: one more, on its channel.
    let out =
        t.server.cli_as("alice", &["request", "create", "-i", "hr-staging", "-s", "payroll", "-j", "again"]).await?;
    assert!(out.code != 0 && out.stderr.contains("403 forbidden"), "{out:?}");
    let records = rejected(&audrey).await?;
    assert_eq!(records.len(), 2, "{records:#?}");
    assert_eq!((&records[1]["channel"], &records[1]["justification"]), (&json!("cli"), &json!("again")));

    // Someone else's grant: not theirs to revoke (erin), audited with the grant it named.
    let ask =
        json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "refusals" });
    let id = id_of(&alice.create_request(&ask).await?);
    let (st, body) = bob.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    let view = alice.wait_status(&id, "active", PATIENCE).await?;
    let grant = view["grant"]["id"].as_str().unwrap_or_default().to_owned();
    let revoke =
        json!({ "integration": "wiki-staging", "kind": "revoke", "grant": grant, "justification": "not mine" });
    let (st, body) = erin.post("/v1/requests", &revoke).await?;
    assert_error(st, &body, 403, "forbidden");
    let records = rejected(&audrey).await?;
    assert_eq!(records.len(), 3, "{records:#?}");
    assert_eq!(
        (&records[2]["actor"], &records[2]["details"]["kind"], &records[2]["details"]["grant_id"]),
        (&json!("erin"), &json!("revoke"), &json!(grant)),
        "{:#}",
        records[2]
    );

    // Input errors are answered, not audited.
    for (body, status, code) in [
        (json!({ "integration": "wiki-staging", "scopes": ["nope"], "justification": "typo" }), 422, "invalid_scope"),
        (
            json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "2h", "justification": "long" }),
            422,
            "duration_too_long",
        ),
        (
            json!({ "integration": "wiki-staging", "scopes": ["read"], "justification": "" }),
            422,
            "justification_required",
        ),
        (json!({ "integration": "nowhere", "scopes": ["read"], "justification": "where" }), 422, "unknown_integration"),
    ] {
        let (st, answer) = alice.post("/v1/requests", &body).await?;
        assert_error(st, &answer, status, code);
    }
    assert_eq!(rejected(&audrey).await?.len(), 3);

    // Allowed, the same request passes and leaves no refusal.
    bob.create_request(&payroll).await?;
    assert_eq!(rejected(&audrey).await?.len(), 3);
    Ok(())
}
