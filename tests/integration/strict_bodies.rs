//! Strict request bodies (issue 16): every JSON body must be one UTF-8 JSON object, with no
//! repeated key and no unknown field, sent as `application/json`. serde reads a top-level array
//! positionally (`["approve"]` as `{"decision":"approve"}`), so without the check an array
//! decided requests, resolved tasks and created requests. Every refusal is a 4xx in the error
//! envelope and writes nothing.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_tests::{ApiClient, Reply};

use crate::common::{self, PATIENCE, TestEnv, assert_error, id_of};

/// An integration whose connector is a manual task for `admin`, so a task can be completed.
const MANUAL_INTEGRATION: &str = r#"
[integrations.manual-app]
app = "manual"
environment = "staging"
owner = "bob"
scopes = [{ name = "read", risk = "low" }]
connector = { type = "manual", operator = "admin" }
"#;

/// A server with a request awaiting bob's approval and an open task for admin.
struct Fixture {
    t: TestEnv,
    alice: ApiClient,
    bob: ApiClient,
    admin: ApiClient,
    /// Awaiting approval (bob may approve).
    pending: String,
    /// An open manual task.
    task: String,
}

impl Fixture {
    async fn start() -> anyhow::Result<Self> {
        let t = common::start_with(|mut o| {
            o.extra_config.push_str(MANUAL_INTEGRATION);
            o
        })
        .await?;
        let alice = t.server.client("alice").await?;
        let bob = t.server.client("bob").await?;
        let admin = t.server.client("admin").await?;
        let pending = id_of(
            &alice
                .create_request(&json!({
                    "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "pending"
                }))
                .await?,
        );
        let manual = id_of(
            &alice
                .create_request(&json!({
                    "integration": "manual-app", "scopes": ["read"], "duration": "1h", "justification": "task"
                }))
                .await?,
        );
        let (st, body) = bob.decide(&manual, "approve").await?;
        assert_eq!(st, 200, "{body}");
        // The approval's grant call becomes a task once the engine has performed it.
        t.server.wait_quiet(PATIENCE).await?;
        let (st, tasks) = admin.get("/v1/tasks").await?;
        assert_eq!(st, 200, "{tasks}");
        let task = tasks["items"]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["request"] == manual.as_str() && i["status"] == "open"))
            .map(id_of)
            .unwrap_or_else(|| panic!("no open task for {manual}: {tasks}"));
        Ok(Self { t, alice, bob, admin, pending, task })
    }

    fn decisions(&self) -> String {
        format!("/v1/requests/{}/decisions", self.pending)
    }

    fn complete(&self) -> String {
        format!("/v1/tasks/{}/complete", self.task)
    }

    /// What the API has written so far: requests, the API's audit records, the task.
    async fn written(&self) -> anyhow::Result<Value> {
        let (st, requests) = self.admin.get("/v1/requests").await?;
        assert_eq!(st, 200, "{requests}");
        let audit: Vec<Value> = self.admin.audit(None).await?.into_iter().filter(|r| r["channel"] == "api").collect();
        let (st, tasks) = self.admin.get("/v1/tasks").await?;
        assert_eq!(st, 200, "{tasks}");
        let task = tasks["items"].as_array().and_then(|t| t.iter().find(|t| t["id"] == self.task.as_str()).cloned());
        let requests: Vec<Value> = requests["items"]
            .as_array()
            .map(|items| items.iter().map(|r| json!([r["id"], r["status"], r["approvals"]])).collect())
            .unwrap_or_default();
        Ok(json!({ "requests": requests, "audit": audit, "task": task }))
    }

    /// Asserts nothing was written since `before`, and the pending request and task are as they were.
    async fn assert_unchanged(&self, before: &Value) -> anyhow::Result<()> {
        assert_eq!(&self.written().await?, before, "a refused body changed something");
        let pending = self.alice.request_view(&self.pending).await?;
        assert_eq!(pending["status"], "awaiting_approval", "{pending}");
        assert_eq!(pending["approvals"], json!([]), "{pending}");
        assert_eq!(before["task"]["status"], "open", "{before}");
        assert_eq!(self.t.server.db().count("runs").await?, 2);
        Ok(())
    }
}

/// `POST path` as `client` with these exact bytes and `Content-Type` (none when `None`).
async fn raw(client: &ApiClient, path: &str, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Reply {
    let mut req = client.request(Method::POST, path).body(body.into());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    client.send(req).await.expect("transport")
}

const JSON: Option<&str> = Some("application/json");

#[track_caller]
fn assert_refused(reply: &Reply, status: u16, code: &str, mentions: &str, case: &str) {
    assert_error(reply.status, &reply.body, status, code);
    let detail = reply.body["error"]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(mentions), "{case}: detail {detail:?} should mention {mentions:?}");
    eprintln!("ok: {case} -> {status} {code}: {detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_level_arrays_are_refused_not_read_positionally() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let before = f.written().await?;

    let reply = raw(&f.bob, &f.decisions(), JSON, r#"["approve"]"#).await;
    assert_refused(&reply, 422, "validation_failed", "must be a JSON object, not an array", "decision as an array");
    let reply = raw(&f.admin, &f.complete(), JSON, "[null,null]").await;
    assert_refused(&reply, 422, "validation_failed", "must be a JSON object, not an array", "task outcome as an array");
    let reply = raw(&f.alice, "/v1/requests", JSON, r#"["crm-prod",null,["read"],"1h","why"]"#).await;
    assert_refused(&reply, 422, "validation_failed", "must be a JSON object, not an array", "request as an array");
    let reply = raw(&f.alice, "/v1/requests", JSON, "[]").await;
    assert_refused(&reply, 422, "validation_failed", "not an array", "empty array");
    f.assert_unchanged(&before).await?;

    // The same content as objects is accepted: the refusals were about the shape alone.
    let (st, body) = f.bob.post(&f.decisions(), &json!({ "decision": "approve" })).await?;
    assert_eq!(st, 200, "{body}");
    let (st, body) = f.admin.post(&f.complete(), &json!({ "outcome": "done" })).await?;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["items"][0]["status"], "done", "{body}");
    Ok(())
}

/// A refused body: (case, bytes, content type, status, code, what the detail mentions).
type BadBody = (&'static str, Vec<u8>, Option<&'static str>, u16, &'static str, &'static str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_malformed_body_gets_a_clear_4xx_and_writes_nothing() -> anyhow::Result<()> {
    let f = Fixture::start().await?;
    let before = f.written().await?;
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let deep_field = format!(r#"{{"decision":{}}}"#, deep(40));

    let cases: Vec<BadBody> = vec![
        ("string", br#""approve""#.to_vec(), JSON, 422, "validation_failed", "not a string"),
        ("number", b"42".to_vec(), JSON, 422, "validation_failed", "not a number"),
        ("boolean", b"true".to_vec(), JSON, 422, "validation_failed", "not a boolean"),
        ("null", b"null".to_vec(), JSON, 422, "validation_failed", "not null"),
        (
            "duplicate key",
            br#"{"decision":"deny","decision":"approve"}"#.to_vec(),
            JSON,
            422,
            "validation_failed",
            "duplicate",
        ),
        (
            "duplicate unknown key",
            br#"{"decision":"approve","x":1,"x":2}"#.to_vec(),
            JSON,
            422,
            "validation_failed",
            "duplicate key \"x\"",
        ),
        (
            "unknown field",
            br#"{"decision":"approve","sudo":true}"#.to_vec(),
            JSON,
            422,
            "validation_failed",
            "unknown field `sudo`",
        ),
        ("wrong type", br#"{"decision":["approve"]}"#.to_vec(), JSON, 422, "validation_failed", "decision"),
        ("missing field", br#"{"comment":"hi"}"#.to_vec(), JSON, 422, "validation_failed", "missing field `decision`"),
        ("deeply nested array", deep(10_000).into_bytes(), JSON, 400, "invalid_request", "deeper than"),
        ("deeply nested field", deep_field.into_bytes(), JSON, 400, "invalid_request", "deeper than"),
        ("not UTF-8", b"{\"decision\":\"appr\xffove\"}".to_vec(), JSON, 400, "invalid_request", "UTF-8"),
        ("Latin-1 in a key", b"{\"d\xe9cision\":\"approve\"}".to_vec(), JSON, 400, "invalid_request", "UTF-8"),
        ("empty", Vec::new(), JSON, 400, "invalid_request", "empty"),
        ("whitespace only", b"  \n".to_vec(), JSON, 400, "invalid_request", "empty"),
        ("trailing data", br#"{"decision":"approve"} {}"#.to_vec(), JSON, 400, "invalid_request", "not valid JSON"),
        (
            "two objects",
            br#"{"decision":"approve"}{"decision":"deny"}"#.to_vec(),
            JSON,
            400,
            "invalid_request",
            "not valid JSON",
        ),
        ("truncated", br#"{"decision":"appr"#.to_vec(), JSON, 400, "invalid_request", "not valid JSON"),
        (
            "no content type",
            br#"{"decision":"approve"}"#.to_vec(),
            None,
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "text/plain",
            br#"{"decision":"approve"}"#.to_vec(),
            Some("text/plain"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "text/json",
            br#"{"decision":"approve"}"#.to_vec(),
            Some("text/json"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "form",
            b"decision=approve".to_vec(),
            Some("application/x-www-form-urlencoded"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "multipart",
            b"--b\r\ncontent-disposition: form-data; name=\"decision\"\r\n\r\napprove\r\n--b--\r\n".to_vec(),
            Some("multipart/form-data; boundary=b"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
        (
            "JSON in Latin-1",
            br#"{"decision":"approve"}"#.to_vec(),
            Some("application/json; charset=iso-8859-1"),
            415,
            "unsupported_media_type",
            "utf-8",
        ),
        (
            "not a media type",
            br#"{"decision":"approve"}"#.to_vec(),
            Some("json"),
            415,
            "unsupported_media_type",
            "application/json",
        ),
    ];
    for (case, bytes, content_type, status, code, mentions) in cases {
        let reply = raw(&f.bob, &f.decisions(), content_type, bytes).await;
        assert_refused(&reply, status, code, mentions, &format!("decision: {case}"));
    }

    // The other two bodies go through the same extractor.
    let request_cases: Vec<(&str, &str, u16, &str)> = vec![
        ("null", "null", 422, "not null"),
        (
            "duplicate scopes",
            r#"{"integration":"wiki-staging","scopes":["read"],"scopes":["edit"],"duration":"1h","justification":"why"}"#,
            422,
            "duplicate",
        ),
        (
            "duplicate nested key",
            r#"{"integration":"wiki-staging","grant":null,"x":{"a":1,"a":2}}"#,
            422,
            "duplicate key \"a\"",
        ),
        (
            "unknown field",
            r#"{"integration":"wiki-staging","scopes":["read"],"justification":"why","sudo":true}"#,
            422,
            "unknown field",
        ),
    ];
    for (case, body, status, mentions) in request_cases {
        let reply = raw(&f.alice, "/v1/requests", JSON, body).await;
        assert_refused(&reply, status, "validation_failed", mentions, &format!("request: {case}"));
    }
    let task_cases: Vec<(&str, &str, &str)> = vec![
        ("string", r#""done""#, "not a string"),
        ("null", "null", "not null"),
        ("duplicate outcome", r#"{"outcome":"failed","outcome":"done"}"#, "duplicate"),
        ("unknown field", r#"{"outcome":"done","force":true}"#, "unknown field `force`"),
    ];
    for (case, body, mentions) in task_cases {
        let reply = raw(&f.admin, &f.complete(), JSON, body).await;
        assert_refused(&reply, 422, "validation_failed", mentions, &format!("task: {case}"));
    }
    // A task's comment has the limit of a decision's comment (the same engine rule).
    let long = json!({ "outcome": "done", "comment": "é".repeat(2001) }).to_string();
    let reply = raw(&f.admin, &f.complete(), JSON, long).await;
    assert_refused(&reply, 422, "validation_failed", "at most 2000 characters", "task: comment too long");
    let reply = raw(&f.admin, &f.complete(), Some("text/plain"), r#"{"outcome":"done"}"#).await;
    assert_refused(&reply, 415, "unsupported_media_type", "application/json", "task: text/plain");

    f.assert_unchanged(&before).await?;

    // A `+json` media type and an explicit UTF-8 charset are JSON.
    let reply = raw(&f.bob, &f.decisions(), Some("application/json; charset=UTF-8"), r#"{"decision":"approve"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let reply = raw(&f.admin, &f.complete(), Some("application/vnd.tollgate+json"), r#"{"outcome":"done"}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    Ok(())
}
