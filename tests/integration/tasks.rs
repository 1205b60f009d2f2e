//! Manual-connector tasks and grants from the API and the command line (issue 10): `GET
//! /v1/tasks` filters by status (`open` by default, `done`, `all`) and pages newest first like
//! every other list, operators see only their own tasks and admins all; `tollgate task
//! list|complete` and `tollgate grant list|show|revoke` drive the same through the real binary.

use serde_json::{Value, json};
use tollgate_tests::{ApiClient, CliOutput};

use crate::common::{self, PATIENCE, TestEnv, assert_error, id_of};

/// Two integrations whose connector is a manual task: for `admin`, and for `erin` (no admin).
const MANUAL_INTEGRATIONS: &str = r#"
[integrations.manual-app]
app = "manual"
environment = "staging"
owner = "bob"
scopes = [{ name = "read", risk = "low" }]
connector = { type = "manual", operator = "admin" }

[integrations.ops-app]
app = "ops"
environment = "staging"
owner = "bob"
scopes = [{ name = "read", risk = "low" }]
connector = { type = "manual", operator = "erin" }
"#;

async fn start() -> anyhow::Result<TestEnv> {
    common::start_with(|mut o| {
        o.extra_config.push_str(MANUAL_INTEGRATIONS);
        o
    })
    .await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap_or_else(|| panic!("no items: {page}")).iter().map(id_of).collect()
}

/// Alice asks for `integration`, Bob approves, and the grant call becomes a task for the
/// integration's operator, `as_operator`: returns (request id, task id).
async fn open_task(t: &TestEnv, integration: &str, as_operator: &ApiClient) -> anyhow::Result<(String, String)> {
    let alice = t.server.client("alice").await?;
    let bob = t.server.client("bob").await?;
    let request = id_of(
        &alice
            .create_request(&json!({
                "integration": integration, "scopes": ["read"], "duration": "1h", "justification": "a task"
            }))
            .await?,
    );
    let (st, body) = bob.decide(&request, "approve").await?;
    assert_eq!(st, 200, "{body}");
    let task = tollgate_tests::eventually("the grant task", PATIENCE, || async {
        let (st, page) = as_operator.get("/v1/tasks?status=all").await?;
        assert_eq!(st, 200, "{page}");
        let found = page["items"].as_array().and_then(|items| items.iter().find(|i| i["request"] == request.as_str()));
        Ok(found.map(id_of).ok_or_else(|| page.to_string()))
    })
    .await?;
    Ok((request, task))
}

fn json_of(out: &CliOutput) -> Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_listed_by_status_newest_first_in_pages_and_operators_see_only_their_own() -> anyhow::Result<()> {
    let t = start().await?;
    let (admin, erin, alice) =
        (t.server.client("admin").await?, t.server.client("erin").await?, t.server.client("alice").await?);
    let mut created = Vec::new();
    for _ in 0..3 {
        created.push(open_task(&t, "manual-app", &admin).await?.1);
    }
    let erins = open_task(&t, "ops-app", &erin).await?.1;
    created.push(erins.clone());
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    // Admins see every open task, newest first, in one page; the others only their own.
    let (st, page) = admin.get("/v1/tasks").await?;
    assert_eq!(st, 200, "{page}");
    assert_eq!(ids(&page), newest_first, "{page}");
    assert_eq!(page["next_cursor"], Value::Null, "{page}");
    let (_, page) = erin.get("/v1/tasks").await?;
    assert_eq!(ids(&page), [erins.as_str()], "{page}");
    let (_, page) = alice.get("/v1/tasks?status=all").await?;
    assert_eq!(ids(&page), Vec::<String>::new(), "{page}");

    // Pages: `limit`, and `next_cursor` only while there is more.
    let (st, first) = admin.get("/v1/tasks?limit=3").await?;
    assert_eq!(st, 200, "{first}");
    assert_eq!(ids(&first), newest_first[..3], "{first}");
    let cursor = first["next_cursor"].as_str().unwrap_or_else(|| panic!("no next_cursor: {first}")).to_owned();
    assert_eq!(cursor, newest_first[2]);
    let (_, second) = admin.get(&format!("/v1/tasks?limit=3&cursor={cursor}")).await?;
    assert_eq!(ids(&second), newest_first[3..], "{second}");
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
    let (_, exact) = admin.get("/v1/tasks?limit=4").await?;
    assert_eq!((ids(&exact).len(), &exact["next_cursor"]), (4, &Value::Null), "no empty last page: {exact}");

    // Resolved tasks leave the default list and show under `done` (done or failed).
    let (st, body) = admin.post(&format!("/v1/tasks/{}/complete", created[0]), &json!({ "outcome": "done" })).await?;
    assert_eq!(st, 200, "{body}");
    let (st, body) = erin.post(&format!("/v1/tasks/{erins}/complete"), &json!({ "outcome": "failed" })).await?;
    assert_eq!(st, 200, "{body}");
    for (query, want) in [
        ("", vec![created[2].clone(), created[1].clone()]),
        ("?status=open", vec![created[2].clone(), created[1].clone()]),
        ("?status=done", vec![erins.clone(), created[0].clone()]),
        ("?status=all", newest_first.clone()),
        ("?status=done&limit=1", vec![erins.clone()]),
    ] {
        let (st, page) = admin.get(&format!("/v1/tasks{query}")).await?;
        assert_eq!(st, 200, "{query}: {page}");
        assert_eq!(ids(&page), want, "{query}: {page}");
    }
    let (_, page) = erin.get("/v1/tasks").await?;
    assert_eq!(ids(&page), Vec::<String>::new(), "{page}");
    let (_, page) = erin.get("/v1/tasks?status=done").await?;
    assert_eq!(ids(&page), [erins.as_str()], "{page}");
    assert_eq!(page["items"][0]["status"], "failed", "{page}");

    // What does not parse is refused in the error envelope.
    for query in [
        "status=closed",
        "status=",
        "status=failed",
        "limit=0",
        "limit=201",
        "limit=x",
        "cursor=nope",
        "operator=admin",
    ] {
        let (st, body) = admin.get(&format!("/v1/tasks?{query}")).await?;
        assert_error(st, &body, 400, "invalid_query");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_grants_are_listed_resolved_and_revoked_from_the_command_line() -> anyhow::Result<()> {
    let t = start().await?;
    let (admin, alice) = (t.server.client("admin").await?, t.server.client("alice").await?);
    let (first_request, first_task) = open_task(&t, "manual-app", &admin).await?;
    let (_, second_task) = open_task(&t, "manual-app", &admin).await?;

    // `task list`: a table, ids only, the server's page; a page of one says there is more.
    let out = t.server.cli_as("admin", &["task", "list"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("ID "), "{}", out.stdout);
    assert!(out.stdout.lines().any(|l| l.starts_with(&first_task) && l.contains("open")), "{}", out.stdout);
    assert!(!out.stderr.contains("more rows"), "{}", out.stderr);
    let out = t.server.cli_as("admin", &["task", "list", "-q"]).await?;
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), [second_task.as_str(), first_task.as_str()], "{out:?}");
    let out = t.server.cli_as("admin", &["task", "list", "--limit", "1", "-q"]).await?;
    assert_eq!((out.code, out.stdout.trim()), (0, second_task.as_str()), "{out:?}");
    assert!(out.stderr.contains(&format!("more rows: --cursor {second_task}")), "{}", out.stderr);
    let out = t.server.cli_as("admin", &["task", "list", "--limit", "1", "--cursor", &second_task, "--json"]).await?;
    let page = json_of(&out);
    assert_eq!((ids(&page), &page["next_cursor"]), (vec![first_task.clone()], &Value::Null), "{page}");
    let out = t.server.cli_as("alice", &["task", "list", "--status", "all", "-q"]).await?;
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "alice operates nothing: {out:?}");
    let out = t.server.cli_as("admin", &["task", "list", "--status", "closed"]).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("400 invalid_query"), "{}", out.stderr);

    // `task complete`: only the operator (or an admin); then the grant is active.
    let out = t.server.cli_as("alice", &["task", "complete", &first_task]).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("403 forbidden"), "{}", out.stderr);
    let out = t.server.cli_as("admin", &["task", "complete", &first_task, "-m", "added alice"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l == "status      done"), "{}", out.stdout);
    assert!(out.stdout.contains("comment     added alice"), "{}", out.stdout);
    let out = t.server.cli_as("admin", &["task", "complete", &first_task]).await?;
    assert!(out.code != 0 && out.stderr.contains("409 task_resolved"), "{out:?}");
    let out = t
        .server
        .cli_as("admin", &["task", "complete", &second_task, "--failed", "-m", "no seat left", "--json"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let resolved = json_of(&out);
    assert_eq!(
        (resolved["items"][0]["status"].as_str(), resolved["items"][0]["comment"].as_str()),
        (Some("failed"), Some("no seat left")),
        "{resolved}"
    );
    let out = t.server.cli_as("admin", &["task", "list", "--status", "done", "-q"]).await?;
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), [second_task.as_str(), first_task.as_str()], "{out:?}");
    let view = alice.wait_status(&first_request, "active", PATIENCE).await?;
    let grant = view["grant"]["id"].as_str().unwrap_or_else(|| panic!("no grant: {view}")).to_owned();

    // `grant list` with the API's filters, `grant show`, `grant revoke`.
    let out = t.server.cli_as("alice", &["grant", "list", "--status", "active", "-q"]).await?;
    assert_eq!((out.code, out.stdout.trim()), (0, grant.as_str()), "{out:?}");
    let out = t.server.cli_as("alice", &["grant", "list"]).await?;
    assert!(
        out.stdout.lines().any(|l| l.starts_with(&grant) && l.contains("active") && l.contains("manual-app")),
        "{out:?}"
    );
    let out = t
        .server
        .cli_as("admin", &["grant", "list", "--principal", "alice", "--integration", "manual-app", "--json"])
        .await?;
    let page = json_of(&out);
    assert!(ids(&page).contains(&grant), "{page}");
    let out = t.server.cli_as("admin", &["grant", "list", "--principal", "bob", "-q"]).await?;
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");
    let out = t.server.cli_as("admin", &["grant", "list", "--integration", "ops-app", "-q"]).await?;
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out:?}");
    let out = t.server.cli_as("admin", &["grant", "list", "--limit", "1", "-q"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert!(out.stderr.contains("more rows: --cursor "), "two grants: {}", out.stderr);
    let out = t.server.cli_as("alice", &["grant", "show", &grant]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l == "status      active"), "{}", out.stdout);
    assert!(out.stdout.contains("holder      alice"), "{}", out.stdout);
    let out = t.server.cli_as("erin", &["grant", "show", &grant]).await?;
    assert!(out.code != 0 && out.stderr.contains("404 not_found"), "{out:?}");
    let out = t.server.cli_as("erin", &["grant", "revoke", &grant]).await?;
    assert!(out.code != 0 && out.stderr.contains("404 not_found"), "{out:?}");
    let out = t.server.cli_as("alice", &["grant", "revoke", &grant]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().any(|l| l == "status      revoking"), "{}", out.stdout);

    // The revocation is a task for the admin too; once confirmed, the grant is revoked.
    let revoke_task = tollgate_tests::eventually("the revoke task", PATIENCE, || async {
        let out = t.server.cli_as("admin", &["task", "list", "-q"]).await?;
        Ok(out.stdout.lines().next().map(str::to_owned).ok_or(out.stderr))
    })
    .await?;
    let out = t.server.cli_as("admin", &["task", "complete", &revoke_task]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    tollgate_tests::eventually("the grant revoked", PATIENCE, || async {
        let out = t.server.cli_as("alice", &["grant", "show", &grant, "--json"]).await?;
        Ok(if json_of(&out)["status"] == "revoked" { Ok(()) } else { Err(out.stdout) })
    })
    .await?;
    let out = t.server.cli_as("alice", &["grant", "list", "--status", "revoked", "-q"]).await?;
    assert_eq!(out.stdout.trim(), grant, "{out:?}");
    let out = t.server.cli_as("alice", &["grant", "revoke", &grant]).await?;
    assert!(out.code != 0 && out.stderr.contains("409 grant_not_active"), "{out:?}");
    Ok(())
}
