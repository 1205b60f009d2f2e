//! What operators read (issue 10): one info line per HTTP request (method, route template,
//! status, latency, request id) and one per lifecycle event, never a secret or a link token; a
//! warning for a `TOLLGATE_*` variable that matches no configuration key.

use reqwest::Method;
use serde_json::json;

use crate::common::{self, PATIENCE, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_and_each_lifecycle_event_is_one_info_line() -> anyhow::Result<()> {
    let t = common::start().await?;
    let (alice, bob) = (t.server.client("alice").await?, t.server.client("bob").await?);
    let body = json!({ "integration": "wiki-staging", "scopes": ["read"], "justification": "quarterly close" });
    let id = id_of(&alice.create_request(&body).await?);
    let (st, _) = bob.decide(&id, "approve").await?;
    assert_eq!(st, 200);
    alice.wait_status(&id, "active", PATIENCE).await?;

    let reply = alice.send(alice.request(Method::GET, "/v1/me").header("x-request-id", "req-log-test-42")).await?;
    assert_eq!((reply.status, reply.header("x-request-id")), (200, Some("req-log-test-42")), "the id comes back");
    let fresh = alice.send(alice.request(Method::GET, "/v1/me")).await?;
    assert!(fresh.header("x-request-id").is_some_and(|v| v.len() >= 32), "every response gets an id");

    let line = tollgate_tests::eventually("the request's log line", PATIENCE, || async {
        let log = t.server.log();
        let found = log.lines().find(|l| l.contains("req-log-test-42") && l.contains("finished processing request"));
        Ok(found.map(str::to_owned).ok_or_else(|| "not yet".to_owned()))
    })
    .await?;
    assert!(line.contains(" INFO ") && line.contains("route=/v1/me") && line.contains("status=200"), "{line}");
    assert!(line.contains("latency="), "{line}");
    let log = t.server.log();
    let decided = log.lines().find(|l| l.contains("route=/v1/requests/{id}/decisions") && l.contains("status=200"));
    assert!(decided.is_some(), "routes are logged by template, not by id:\n{log}");
    for event in ["request_created", "approval_recorded", "grant_succeeded"] {
        assert!(
            log.lines()
                .any(|l| l.contains("tollgate::audit") && l.contains(&format!("event={event}")) && l.contains(&id)),
            "{event} logged once committed:\n{log}"
        );
    }
    assert!(!log.contains("quarterly close"), "justifications stay in the audit log, out of the server log");
    let token = t.server.token("alice").await?;
    assert!(!log.contains(&token), "no bearer token in the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_tollgate_variable_is_warned_about() -> anyhow::Result<()> {
    let t = common::start().await?;
    let config = t.server.config_path().display().to_string();
    let out = t.server.cli(&["migrate", "--config", &config], &[("TOLLGATE_LISTN", "127.0.0.1:9")]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: environment variable TOLLGATE_LISTN matches no configuration key")
            && out.stderr.contains("did you mean TOLLGATE_LISTEN?"),
        "{}",
        out.stderr
    );
    Ok(())
}
