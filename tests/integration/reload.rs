//! Directory and workflow changes without a restart: on `SIGHUP` and through
//! `POST /v1/admin/reload`, validated whole first (a bad change leaves the running configuration
//! as it was), audited, applied on every replica; requests already running keep the workflow
//! version they were pinned to.

use serde_json::{Value, json};
use tollgate_tests::{Server, TestDb};

use crate::common::{self, PATIENCE, assert_error, id_of};

/// A second version of the test grant workflow: the owner alone approves (security no longer).
const GRANT_V2: &str = r#"key: test-grant
version: 2
kind: grant
description: The owner approves.
applies_to:
  integrations: ["*"]
parameters:
  default_duration: 2s
  max_duration: 1h
  require_justification: true
steps:
  - approval:
      id: owner
      approvers:
        owner: true
      timeout: 5m
  - action: { id: grant, operation: grant }
  - wait: { id: until-expiry, until: expiry }
  - action: { id: revoke, operation: revoke }
"#;

const FRANK: &str = "\n[principals.frank]\nname = \"Frank New\"\nemail = \"frank@example.com\"\n";

fn ask() -> Value {
    json!({ "integration": "wiki-staging", "scopes": ["edit"], "duration": "1h", "justification": "reload test" })
}

async fn principal_ids(server: &Server) -> anyhow::Result<Vec<String>> {
    let (st, body) = server.client("admin").await?.get("/v1/principals").await?;
    assert_eq!(st, 200, "{body}");
    Ok(body["items"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(str::to_owned)).collect())
}

async fn wait_for_principal(server: &Server, id: &str) -> anyhow::Result<()> {
    tollgate_tests::eventually(&format!("principal {id} on {}", server.url()), PATIENCE, || async {
        let ids = principal_ids(server).await?;
        Ok(if ids.iter().any(|p| p == id) { Ok(()) } else { Err(format!("{ids:?}")) })
    })
    .await
}

/// Adds `frank` and version 2 of the grant workflow to the server's files (not yet applied).
fn change_files(server: &mut Server) -> anyhow::Result<()> {
    server.reconfigure(|o| {
        o.extra_config.push_str(FRANK);
        o.workflows.push(("test-grant-v2.yaml".to_owned(), GRANT_V2.to_owned()));
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_principals_and_workflow_versions_and_running_requests_keep_theirs() -> anyhow::Result<()> {
    let mut t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let before = alice.create_request(&ask()).await?;
    assert_eq!(before["workflow"]["version"], 1, "{before}");

    change_files(&mut t.server)?;
    t.server.hangup()?;
    wait_for_principal(&t.server, "frank").await?;

    let after = alice.create_request(&ask()).await?;
    assert_eq!(after["workflow"]["version"], 2, "new requests use the new version: {after}");
    // The request made before keeps version 1: security (carol) may still approve it.
    let (st, body) = t.server.client("carol").await?.decide(&id_of(&before), "approve").await?;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["workflow"]["version"], 1);
    // Under version 2 carol is no longer an approver: the request is not even hers to see.
    let (st, body) = t.server.client("carol").await?.decide(&id_of(&after), "approve").await?;
    assert_error(st, &body, 404, "not_found");

    let audit = t.server.client("admin").await?.audit(None).await?;
    let reload = audit.iter().find(|r| r["event_type"] == "config_reloaded").expect("the reload is audited");
    assert_eq!(reload["channel"], "signal");
    assert!(audit.iter().any(|r| r["event_type"] == "principal_added" && r["subject"] == "principal:frank"));
    assert!(audit.iter().any(|r| r["event_type"] == "workflow_loaded" && r["workflow_version"] == 2));
    assert!(t.server.is_running(), "SIGHUP reloads; it does not stop the server");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_change_is_refused_whole_and_the_running_configuration_stays() -> anyhow::Result<()> {
    let mut t = common::start().await?;
    let admin = t.server.client("admin").await?;
    let (st, body) = t.server.client("alice").await?.post("/v1/admin/reload", &json!({})).await?;
    assert_error(st, &body, 403, "forbidden");

    // frank is fine, but the new workflow names a group nobody defined: nothing is applied.
    let dangling = GRANT_V2.replace("owner: true", "groups: [nobody-here]");
    t.server.reconfigure(|o| {
        o.extra_config.push_str(FRANK);
        o.workflows.push(("broken.yaml".to_owned(), dangling));
    })?;
    let (st, body) = admin.post("/v1/admin/reload", &json!({})).await?;
    assert_error(st, &body, 422, "invalid_config");
    let detail = body["error"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("broken.yaml") && detail.contains("nobody-here"), "{detail}");
    assert!(!principal_ids(&t.server).await?.contains(&"frank".to_owned()), "nothing of the change applied");
    let request = t.server.client("alice").await?.create_request(&ask()).await?;
    assert_eq!(request["workflow"]["version"], 1);
    let audit = admin.audit(None).await?;
    let refused = audit.iter().find(|r| r["event_type"] == "config_reload_refused").expect("the refusal is audited");
    assert_eq!((refused["actor"].as_str(), refused["outcome"].as_str()), (Some("admin"), Some("rejected")));
    assert!(!audit.iter().any(|r| r["event_type"] == "principal_added" && r["subject"] == "principal:frank"));

    // A SIGHUP with the same bad files leaves the server up and unchanged too.
    t.server.hangup()?;
    tollgate_tests::eventually("the refused SIGHUP audited", PATIENCE, || async {
        let n = admin.audit(None).await?.iter().filter(|r| r["event_type"] == "config_reload_refused").count();
        Ok(if n >= 2 { Ok(()) } else { Err(format!("{n} refusals")) })
    })
    .await?;
    assert!(t.server.is_running());

    // Fixed: applied, and the answer says what changed.
    t.server.reconfigure(|o| o.workflows.retain(|(n, _)| n != "broken.yaml"))?;
    let (st, body) = admin.post("/v1/admin/reload", &json!({})).await?;
    assert_eq!(st, 200, "{body}");
    let changes = body["changes"].as_array().cloned().unwrap_or_default();
    assert!(changes.contains(&json!({ "kind": "principal", "name": "frank", "change": "added" })), "{body}");
    assert!(principal_ids(&t.server).await?.contains(&"frank".to_owned()));
    // Reloading unchanged files changes nothing and says so.
    let (st, body) = admin.post("/v1/admin/reload", &json!({})).await?;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["changes"], json!([]), "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_on_one_replica_applies_on_every_replica() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    if !db.postgres_only("several replicas on one database") {
        return Ok(());
    }
    tollgate_tests::install_crypto_provider();
    let receiver = tollgate_tests::Receiver::start().await?;
    let opts = |node: &str| {
        let mut o = common::options(&receiver);
        o.node_id = node.to_owned();
        o
    };
    let mut a = Server::start(db.share(), opts("node-a")).await?;
    let mut b = Server::start(db.share(), opts("node-b")).await?;
    // Every replica reads the same configuration (one ConfigMap): change both copies, tell one.
    change_files(&mut a)?;
    change_files(&mut b)?;
    let (st, body) = a.client("admin").await?.post("/v1/admin/reload", &json!({})).await?;
    assert_eq!(st, 200, "{body}");
    wait_for_principal(&b, "frank").await?;
    let request = b.client("alice").await?.create_request(&ask()).await?;
    assert_eq!(request["workflow"]["version"], 2, "{request}");
    Ok(())
}
