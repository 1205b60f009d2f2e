//! Issue 10, references are checked: a workflow or directory entry naming a group or principal
//! that does not exist stops start-up (and `tollgate workflows validate --config`) with every
//! such name listed; a request whose approval nobody could pass is refused at creation
//! (`no_eligible_approver`); and the request view names who may still approve and how many
//! approvals are still needed.

use serde_json::{Value, json};
use tollgate_tests::{Receiver, Server, TestDb};

use crate::common::{self, assert_error, id_of};

/// A grant workflow for `hr-staging` (naming the integration beats `test-reminder`'s app) whose
/// one approval step names `approvers` (a YAML flow mapping).
fn hr_workflow(key: &str, version: u32, approvers: &str) -> String {
    format!(
        "key: {key}
version: {version}
kind: grant
applies_to:
  integrations: [hr-staging]
parameters:
  default_duration: 1h
  max_duration: 1h
steps:
  - approval:
      id: named
      approvers: {approvers}
      timeout: 5m
  - action: {{operation: grant}}
  - wait: {{until: expiry}}
  - action: {{operation: revoke}}
"
    )
}

fn payroll() -> Value {
    json!({ "integration": "hr-staging", "scopes": ["payroll"], "justification": "month end" })
}

/// The test directory's `security` group, with an extra member nobody defined.
const GHOST_MEMBER: (&str, &str) = (r#"members = ["carol", "dave"]"#, r#"members = ["carol", "dave", "ghost"]"#);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_naming_groups_or_principals_nobody_defined_refuses_to_start_and_lists_them_all() -> anyhow::Result<()>
{
    tollgate_tests::install_crypto_provider();
    let receiver = Receiver::start().await?;
    let dangling = hr_workflow("dangling", 1, "{groups: [secops], users: [bob, zed]}");
    let mut options = common::options(&receiver).workflow("dangling.yaml", &dangling);
    options.directory_patches.push((GHOST_MEMBER.0.to_owned(), GHOST_MEMBER.1.to_owned()));
    let mut server = Server::configure(TestDb::new().await?, options)?;
    let err = format!("{:#}", server.restart().await.expect_err("the server must refuse to start"));
    let config = server.config_path().display().to_string();
    let file = server.workflows_dir().join("dangling.yaml").display().to_string();
    let dangling_names = [
        format!(r#"{config}: groups.security.members: unknown principal "ghost""#),
        format!(r#"{file}:12:28: workflow dangling v1: steps[0].approval.approvers.groups: unknown group "secops""#),
        format!(r#"{file}:12:50: workflow dangling v1: steps[0].approval.approvers.users: unknown principal "zed""#),
    ];
    assert!(err.contains("3 reference(s) to groups or principals the directory does not define"), "{err}");
    for needle in &dangling_names {
        assert!(err.contains(needle.as_str()), "the start-up error names {needle:?}: {err}");
    }
    assert!(!server.is_running());
    // Refused before anything was stored.
    assert_eq!(server.db().count("workflow_definitions").await?, 0);
    assert_eq!(server.db().count("directory_entries").await?, 0);
    assert_eq!(server.db().count("audit_log").await?, 0);

    // The same check offline, with the configuration's directory; without it, as before.
    let dir = server.workflows_dir().display().to_string();
    let out = server.cli(&["workflows", "validate", &dir, "--config", &config], &[]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    for needle in &dangling_names {
        assert!(out.stderr.contains(&format!("error: {needle}")), "validate names {needle:?}: {out:?}");
    }
    let out = server.cli(&["workflows", "validate", &dir, "--config", &config, "--json"], &[]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    let body: Value = serde_json::from_str(&out.stdout)?;
    assert!(body["error"]["detail"].as_str().is_some_and(|d| d.contains(r#"unknown group "secops""#)), "{body}");
    let out = server.cli(&["workflows", "validate", &dir], &[]).await?;
    assert_eq!(out.code, 0, "without --config the directory is not consulted: {out:?}");

    // Once every name exists, validation and start-up pass.
    server
        .restart_with(|o| {
            o.directory_patches.retain(|(from, _)| from != GHOST_MEMBER.0);
            o.workflows.retain(|(n, _)| n != "dangling.yaml");
            o.workflows.push(("dangling.yaml".to_owned(), hr_workflow("dangling", 1, "{groups: [security]}")));
        })
        .await
        .map_err(|e| anyhow::anyhow!("fixed, the server starts: {e:#}"))?;
    let out = server.cli(&["workflows", "validate", &dir, "--config", &config], &[]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("definition(s) valid"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_stored_version_naming_someone_removed_only_warns_but_the_latest_must_resolve() -> anyhow::Result<()> {
    let frank = "[principals.frank]\nname = \"Frank\"\nemail = \"frank@example.com\"\n";
    let erin = "[principals.erin]\nname = \"Erin Bystander\"\nemail = \"erin@example.com\"\n";
    let mut t = common::start_with(|o| {
        let mut o = o.workflow("pinned.yaml", &hr_workflow("pinned", 1, "{users: [erin]}"));
        o.extra_config.push_str(frank);
        o
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let old = id_of(&alice.create_request(&payroll()).await?);
    assert_eq!(alice.request_view(&old).await?["steps"][0]["eligible"], json!(["erin"]));

    // Version 2 names frank; erin leaves. Version 1, pinned by the request above, only warns.
    t.server
        .restart_with(|o| {
            o.workflows.retain(|(n, _)| n != "pinned.yaml");
            o.workflows.push(("pinned.yaml".to_owned(), hr_workflow("pinned", 2, "{users: [frank]}")));
            o.directory_patches.push((erin.to_owned(), String::new()));
        })
        .await?;
    let log = t.server.log();
    assert!(
        log.contains(r#"workflow pinned v1: steps[0].approval.approvers.users: unknown principal "erin""#)
            && log.contains("an older version"),
        "a warning names the stored version: {log}"
    );
    let view = alice.request_view(&old).await?;
    assert_eq!((view["status"].as_str(), view["workflow"]["version"].as_u64()), (Some("awaiting_approval"), Some(1)));
    assert_eq!(view["steps"][0]["eligible"], json!([]), "nobody is left to approve it: {view}");
    let new = alice.create_request(&payroll()).await?;
    assert_eq!(new["workflow"]["version"], 2);

    // The latest version is what new requests use: only the database holds it now, and it names
    // someone who left. That stops start-up.
    std::fs::remove_file(t.server.workflows_dir().join("pinned.yaml"))?;
    let err = t
        .server
        .restart_with(|o| {
            o.workflows.retain(|(n, _)| n != "pinned.yaml");
            o.extra_config = o.extra_config.replace(frank, "");
        })
        .await
        .expect_err("the latest version must resolve");
    let err = format!("{err:#}");
    // The log of every start is in the error: look at the last one.
    let last = err.rsplit("===== start").next().unwrap_or_default();
    assert!(
        last.contains("invalid configuration: 1 reference(s)")
            && last.contains(
                r#"stored in the database: workflow pinned v2: steps[0].approval.approvers.users: unknown principal "frank""#
            ),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_nobody_could_approve_is_refused_at_creation_and_audited() -> anyhow::Result<()> {
    let t = common::start_with(|o| o.workflow("alice-only.yaml", &hr_workflow("alice-only", 1, "{users: [alice]}")))
        .await?;
    let alice = t.server.client("alice").await?;
    let (status, body) = alice.post("/v1/requests", &payroll()).await?;
    assert_error(status, &body, 422, "no_eligible_approver");
    let detail = body["error"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(r#"approval steps[0] ("named") has no eligible approver"#), "{detail}");
    assert_eq!(t.server.db().count("runs").await?, 0, "nothing was created");

    // The refusal is evidence.
    let audit = t.server.client("audrey").await?.audit(None).await?;
    let rejected: Vec<&Value> = audit.iter().filter(|r| r["event_type"] == "request_rejected").collect();
    assert_eq!(rejected.len(), 1, "{audit:#?}");
    let r = rejected[0];
    assert_eq!(
        (&r["actor"], &r["outcome"], &r["subject"], &r["workflow_key"], &r["details"]["reason"]),
        (
            &json!("alice"),
            &json!("rejected"),
            &json!("integration:hr-staging"),
            &json!("alice-only"),
            &json!("no_eligible_approver")
        ),
        "{r:#}"
    );

    // Anyone else may ask: alice approves.
    let bob = t.server.client("bob").await?;
    let id = id_of(&bob.create_request(&payroll()).await?);
    assert_eq!(alice.request_view(&id).await?["steps"][0]["eligible"], json!(["alice"]));

    // The CLI shows the same refusal.
    let out =
        t.server.cli_as("alice", &["request", "create", "-i", "hr-staging", "-s", "payroll", "-j", "again"]).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("no_eligible_approver"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_view_names_who_may_still_approve_and_how_many_approvals_remain() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    // crm-prod: test-two-person, two approvals from the owner (bob) or security (carol, dave).
    let ask = json!({ "integration": "crm-prod", "scopes": ["write"], "justification": "audit fix" });
    let created = alice.create_request(&ask).await?;
    let id = id_of(&created);
    let eligible = |v: &Value| v["steps"][0]["eligible"].clone();
    let remaining = |v: &Value| v["steps"][0]["remaining"].clone();
    assert_eq!(eligible(&created), json!(["bob", "carol", "dave"]), "{created:#}");
    assert_eq!(remaining(&created), json!(2));

    let bob = t.server.client("bob").await?;
    let (st, decided) = bob.decide(&id, "approve").await?;
    assert_eq!((st, decided["status"].as_str()), (200, Some("awaiting_approval")), "{decided:#}");
    // Anyone who may see the request sees the same: the requester, and an approver.
    for who in [&alice, &t.server.client("carol").await?] {
        let view = who.request_view(&id).await?;
        assert_eq!(eligible(&view), json!(["carol", "dave"]), "bob decided already: {view:#}");
        assert_eq!(remaining(&view), json!(1), "{view:#}");
        for step in view["steps"].as_array().into_iter().flatten().skip(1) {
            assert_eq!((&step["eligible"], &step["remaining"]), (&Value::Null, &Value::Null), "not approvals: {step}");
        }
    }
    let (_, listed) = alice.get("/v1/requests?integration=crm-prod").await?;
    assert_eq!(listed["items"][0]["steps"][0]["remaining"], 1, "{listed:#}");

    let carol = t.server.client("carol").await?;
    let (st, approved) = carol.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{approved:#}");
    assert_eq!((eligible(&approved), remaining(&approved)), (json!([]), json!(0)), "done: {approved:#}");
    Ok(())
}
