//! Bad input: broken workflow files stop the server with a precise message; invalid requests get
//! the one error envelope and leave nothing behind; `Idempotency-Key` replays instead of
//! duplicating.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Barrier;
use tollgate_tests::{Receiver, Server, TestDb};

use crate::common::{self, assert_error, id_of};

/// `approval.timout` (a typo) is on line 10, column 7.
const TYPO: &str = "key: broken
version: 1
kind: grant
parameters:
  max_duration: 1h
steps:
  - approval:
      approvers:
        owner: true
      timout: 5m
  - action: {operation: grant}
  - wait: {until: expiry}
  - action: {operation: revoke}
";

/// Well-formed YAML breaking a rule: the reminder (line 11) would never fire.
const NEVER_REMINDS: &str = "key: never-reminds
version: 1
kind: grant
parameters:
  max_duration: 1h
steps:
  - approval:
      approvers:
        owner: true
      timeout: 5m
      reminder: 5m
  - action: {operation: grant}
  - wait: {until: expiry}
  - action: {operation: revoke}
";

/// "Access first, review later" (issue 8, item 4): a denied, timed-out or cancelled review ended
/// the run with the grant active past its expiry forever. Refused now, like any step that can end
/// a run between the grant and its revocation.
const ACCESS_FIRST: &str = "key: access-first
version: 1
kind: grant
parameters:
  max_duration: 1h
steps:
  - action: {operation: grant}
  - approval:
      approvers:
        owner: true
      timeout: 30m
  - wait: {until: expiry}
  - action: {operation: revoke}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_workflow_files_are_rejected_with_file_line_column_and_field() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let receiver = Receiver::start().await?;

    let mut server = Server::configure(TestDb::new().await?, common::options(&receiver).workflow("broken.yaml", TYPO))?;
    let err = server.restart().await.expect_err("the server must refuse to start").to_string();
    assert!(err.contains("broken.yaml:10:7: steps[0].approval.timout: unknown field `timout`"), "{err}");
    assert!(!server.is_running());
    assert_eq!(server.db().count("runs").await?, 0);
    assert_eq!(server.db().count("audit_log WHERE event_type = 'request_created'").await?, 0);

    // The same check offline, file by file.
    let wf = server.workflows_dir();
    let out = server.cli(&["workflows", "validate", &wf.join("broken.yaml").display().to_string()], &[]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("broken.yaml:10:7: steps[0].approval.timout: unknown field `timout`"), "{out:?}");
    std::fs::write(wf.join("never-reminds.yaml"), NEVER_REMINDS)?;
    let out = server.cli(&["workflows", "validate", &wf.join("never-reminds.yaml").display().to_string()], &[]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("never-reminds.yaml:11:"), "{out:?}");
    assert!(out.stderr.contains("steps[0].approval.reminder: reminder 5m is not shorter than timeout 5m"), "{out:?}");
    std::fs::write(wf.join("access-first.yaml"), ACCESS_FIRST)?;
    let out = server.cli(&["workflows", "validate", &wf.join("access-first.yaml").display().to_string()], &[]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("access-first.yaml:8:5: steps[1].approval: approval step between the grant"),
        "{out:?}"
    );
    let out = server.cli(&["workflows", "validate", &wf.join("test-grant.yaml").display().to_string()], &[]).await?;
    assert_eq!(out.code, 0, "{out:?}");

    // The shipped examples are valid.
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows/examples");
    let out = server.cli(&["workflows", "validate", examples], &[]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("4 definition(s) valid"), "{out:?}");
    for key in ["standard-grant", "standard-renew", "standard-rotate", "standard-revoke"] {
        assert!(out.stdout.contains(key), "{key}: {out:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_the_error_envelope_and_leave_no_trace() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let admin = t.server.client("admin").await?;
    let good = json!({ "integration": "wiki-staging", "scopes": ["edit"], "duration": "1h", "justification": "why" });
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };

    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("unknown integration", with("integration", json!("nope")), 422, "unknown_integration"),
        ("scope not offered", with("scopes", json!(["admin"])), 422, "invalid_scope"),
        ("no scopes", with("scopes", json!([])), 422, "invalid_scope"),
        ("duration above max", with("duration", json!("2h")), 422, "duration_too_long"),
        ("invalid duration", with("duration", json!("5 parsecs")), 422, "invalid_duration"),
        ("zero duration", with("duration", json!("0s")), 422, "invalid_duration"),
        ("bare number", with("duration", json!("5")), 422, "invalid_duration"),
        ("no justification", with("justification", json!("  ")), 422, "justification_required"),
        // Text that shows otherwise than it says (issue 10); a NUL used to be a 503 on PostgreSQL.
        ("zero-width justification", with("justification", json!("\u{200B}")), 422, "validation_failed"),
        ("bidi override", with("justification", json!("ok \u{202E}gnp.exe")), 422, "validation_failed"),
        ("NUL in justification", with("justification", json!("a\u{0}b")), 422, "validation_failed"),
        ("unknown field", with("sudo", json!(true)), 422, "validation_failed"),
        ("wrong type", with("scopes", json!("edit")), 422, "validation_failed"),
        ("unknown kind", with("kind", json!("steal")), 422, "validation_failed"),
        ("grant on a grant request", with("grant", json!(uuid::Uuid::now_v7())), 422, "invalid_grant"),
        ("huge justification", with("justification", json!("x".repeat(2001))), 422, "validation_failed"),
    ];
    for (case, body, status, code) in &cases {
        let (st, resp) = alice.post("/v1/requests", body).await?;
        assert_error(st, &resp, *status, code);
        eprintln!("ok: {case} -> {st} {code}");
    }

    let raw = |method: Method, path: &str, body: &'static str, content_type: Option<&str>| {
        let mut req = alice.request(method, path).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        req
    };
    let json_ct = Some("application/json");
    let big =
        format!(r#"{{"integration":"wiki-staging","scopes":["edit"],"justification":"{}"}}"#, "x".repeat(70 * 1024));
    let raw_cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "body over 64 KiB",
            alice.request(Method::POST, "/v1/requests").header("content-type", "application/json").body(big),
            413,
            "payload_too_large",
        ),
        (
            "malformed JSON",
            raw(Method::POST, "/v1/requests", r#"{"integration": "wiki-staging","#, json_ct),
            400,
            "invalid_request",
        ),
        (
            "not JSON at all",
            raw(Method::POST, "/v1/requests", "integration=wiki-staging", json_ct),
            400,
            "invalid_request",
        ),
        (
            "no content type",
            raw(Method::POST, "/v1/requests", r#"{"integration":"wiki-staging"}"#, None),
            415,
            "unsupported_media_type",
        ),
        ("invalid id", alice.request(Method::GET, "/v1/requests/not-a-uuid"), 400, "invalid_id"),
        (
            "invalid id in decision",
            raw(Method::POST, "/v1/requests/42/decisions", r#"{"decision":"approve"}"#, json_ct),
            400,
            "invalid_id",
        ),
        ("invalid grant id", alice.request(Method::POST, "/v1/grants/xyz/revoke"), 400, "invalid_id"),
        (
            "unknown request",
            alice.request(Method::GET, &format!("/v1/requests/{}", uuid::Uuid::now_v7())),
            404,
            "not_found",
        ),
        ("unknown route", alice.request(Method::GET, "/v1/nope"), 404, "not_found"),
        ("unknown route outside /v1", alice.request(Method::GET, "/admin"), 404, "not_found"),
        ("wrong method", alice.request(Method::DELETE, "/v1/requests"), 405, "method_not_allowed"),
        ("unknown query parameter", alice.request(Method::GET, "/v1/requests?bogus=1"), 400, "invalid_query"),
        ("limit out of range", alice.request(Method::GET, "/v1/requests?limit=0"), 400, "invalid_query"),
        (
            "overlong Idempotency-Key",
            alice.request(Method::POST, "/v1/requests").header("idempotency-key", "k".repeat(300)).json(&good),
            400,
            "invalid_request",
        ),
        (
            "unauthenticated create",
            t.server.anonymous()?.request(Method::POST, "/v1/requests").json(&good),
            401,
            "unauthenticated",
        ),
        ("unauthenticated read", t.server.anonymous()?.request(Method::GET, "/v1/requests"), 401, "unauthenticated"),
        (
            "invalid token",
            alice.with_token(Some("tg_0000")).request(Method::POST, "/v1/requests").json(&good),
            401,
            "unauthenticated",
        ),
        (
            "basic auth",
            t.server.anonymous()?.request(Method::GET, "/v1/me").basic_auth("alice", Some("pw")),
            401,
            "unauthenticated",
        ),
    ];
    for (case, req, status, code) in raw_cases {
        let reply = alice.send(req).await?;
        assert_error(reply.status, &reply.body, status, code);
        if status == 401 {
            assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
        }
        eprintln!("ok: {case} -> {status} {code}");
    }

    // A bad decision on a request that does not exist is not a way to create one either.
    let (st, body) = alice
        .post(&format!("/v1/requests/{}/decisions", uuid::Uuid::now_v7()), &json!({ "decision": "maybe" }))
        .await?;
    assert_error(st, &body, 422, "validation_failed");

    // Nothing was persisted.
    let (st, list) = admin.get("/v1/requests").await?;
    assert_eq!(st, 200);
    assert_eq!(list["items"], json!([]), "{list}");
    let audit = admin.audit(None).await?;
    assert!(!common::event_types(&audit).iter().any(|e| e == "request_created"));
    assert_eq!(t.server.db().count("runs").await?, 0);
    assert!(t.receiver.calls().is_empty(), "no notification for a refused request");

    // The valid request still works afterwards.
    let (st, body) = alice.post("/v1/requests", &good).await?;
    assert_eq!(st, 201, "{body}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_replays_the_first_response_and_refuses_a_different_body() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let bob = t.server.client("bob").await?;
    let body =
        json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "retry-safe" });
    let post = |client: &tollgate_tests::ApiClient, key: &str, body: &Value| {
        client.request(Method::POST, "/v1/requests").header("Idempotency-Key", key).json(body)
    };

    let first = alice.send(post(&alice, "key-1", &body)).await?;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.header("idempotent-replayed"), None);
    let id = id_of(&first.body);
    assert_eq!(first.header("location"), Some(format!("/v1/requests/{id}").as_str()));
    let again = alice.send(post(&alice, "key-1", &body)).await?;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.body, first.body, "a replay returns the first response");
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let mut other = body.clone();
    other["scopes"] = json!(["edit"]);
    let reused = alice.send(post(&alice, "key-1", &other)).await?;
    assert_error(reused.status, &reused.body, 422, "idempotency_key_reused");

    // Keys are per principal: bob's "key-1" is his own request.
    let bobs = bob.send(post(&bob, "key-1", &body)).await?;
    assert_eq!(bobs.status, 201, "{}", bobs.text);
    assert_ne!(id_of(&bobs.body), id);

    // A burst of retries with one key creates one request.
    let barrier = Arc::new(Barrier::new(8));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (alice, barrier, body) = (alice.clone(), barrier.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            alice.send(alice.request(Method::POST, "/v1/requests").header("Idempotency-Key", "key-2").json(&body)).await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    for task in tasks {
        let r = task.await??;
        assert_eq!(r.status, 201, "{}", r.text);
        ids.insert(id_of(&r.body));
    }
    assert_eq!(ids.len(), 1, "one request for one key: {ids:?}");

    let admin = t.server.client("admin").await?;
    let (_, list) = admin.get("/v1/requests").await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3), "{list:#}");
    let created = common::event_types(&admin.audit(None).await?).iter().filter(|e| *e == "request_created").count();
    assert_eq!(created, 3);
    assert_eq!(t.server.db().count("runs").await?, 3);
    Ok(())
}
