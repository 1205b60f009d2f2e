//! The HTTP edge, in process: the real router (`tollgate::app::router`) over a real engine on a
//! temporary SQLite database, driven with `tower::ServiceExt::oneshot` (no socket, no binary).
//! The end-to-end suite (`tests/integration`) covers the same API through the real binary.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tollgate_engine::Engine;
use tollgate_engine::clock::SystemClock;
use tower::ServiceExt as _;

/// Body limit of the router under test (the default configuration's).
const MAX_BODY: usize = 64 * 1024;

/// A router over an engine on a fresh SQLite database, with one token per principal.
struct App {
    router: Router,
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

/// `alice` asks; `bob` owns `github-staging` (manual connector, operated by `admin`) and is the
/// `security` group the bundled workflows name (so `serve` would accept this configuration).
fn config_toml(db: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
node_id = "router-test"

[database]
url = "sqlite://{db}?mode=rwc"
max_connections = 4

[workflows]
bundled = true

[email]
enabled = false

[principals.alice]
name = "Alice"

[principals.bob]
name = "Bob"

[principals.admin]
name = "Admin"
roles = ["admin"]

[groups.security]
members = ["bob"]

[integrations.github-staging]
app = "github"
environment = "staging"
owner = "bob"
scopes = [{{ name = "contents:read", risk = "low" }}, {{ name = "contents:write", risk = "medium" }}]
connector = {{ type = "manual", operator = "admin" }}
"#
    )
}

fn token(principal: &str) -> String {
    format!("tg_router_test_{principal}_0123456789abcdef")
}

impl App {
    async fn start() -> App {
        let dir = tempfile::tempdir().expect("temporary directory");
        let db = dir.path().join("tollgate.db");
        let file = dir.path().join("tollgate.toml");
        std::fs::write(&file, config_toml(&db.display().to_string())).expect("write config");
        let config = tollgate::config::load(Some(&file), &[]).expect("valid configuration");
        // What `serve` checks besides: every group and principal the workflows name exists.
        let sources = tollgate::server::workflow_sources(&config).expect("bundled workflows");
        let dangling = tollgate::server::dangling_references(&file, &sources).expect("references checked");
        assert!(dangling.is_empty(), "a configuration serve would refuse: {dangling:?}");
        let engine =
            tollgate::server::build_engine(&config, Arc::new(SystemClock), true, None).await.expect("engine starts");
        for principal in ["alice", "bob", "admin"] {
            engine.register_token(principal, "test", &token(principal), "system", "test").await.expect("token");
        }
        let router = tollgate::app::router(engine.clone(), MAX_BODY, "http://127.0.0.1:0", None);
        App { router, engine, _dir: dir }
    }

    /// Sends one request through the router.
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.expect("the router is infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("response body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, headers, text: String::from_utf8_lossy(&bytes).into_owned(), body }
    }

    async fn get(&self, principal: Option<&str>, path: &str) -> Reply {
        self.send(req(Method::GET, path, principal).body(Body::empty()).expect("request")).await
    }

    async fn post_json(&self, principal: &str, path: &str, body: &Value) -> Reply {
        self.send(
            req(Method::POST, path, Some(principal))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .expect("request"),
        )
        .await
    }

    async fn stop(self) {
        self.engine.shutdown().await;
    }
}

fn req(method: Method, path: &str, principal: Option<&str>) -> axum::http::request::Builder {
    let b = Request::builder().method(method).uri(path);
    match principal {
        Some(p) => b.header(header::AUTHORIZATION, format!("Bearer {}", token(p))),
        None => b,
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    body: Value,
}

impl Reply {
    /// Asserts the one error envelope: exactly `{"error": {"code", "detail"}}`, detail non-empty.
    #[track_caller]
    fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()),
            Some("application/json"),
            "{}",
            self.text
        );
        let outer: Vec<&String> = self.body.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        assert_eq!(outer, ["error"], "{}", self.text);
        let mut inner: Vec<&String> = self.body["error"].as_object().map(|o| o.keys().collect()).unwrap_or_default();
        inner.sort();
        assert_eq!(inner, ["code", "detail"], "{}", self.text);
        assert_eq!(self.body["error"]["code"], code, "{}", self.text);
        assert!(self.body["error"]["detail"].as_str().is_some_and(|d| !d.is_empty()), "{}", self.text);
    }
}

fn some_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_is_required_and_bad_tokens_are_refused() {
    let app = App::start().await;
    let overlong = format!("Bearer {}", "t".repeat(300));
    let cases = [
        ("no header", None),
        ("unknown token", Some("Bearer tg_nobody_0123456789")),
        ("empty token", Some("Bearer ")),
        ("basic auth", Some("Basic YWxpY2U6cHc=")),
        ("overlong token", Some(overlong.as_str())),
    ];
    for (case, authorization) in cases {
        for (method, path) in [
            (Method::GET, "/v1/requests".to_owned()),
            (Method::GET, "/v1/me".to_owned()),
            (Method::GET, "/v1/audit/verify".to_owned()),
            (Method::GET, format!("/v1/grants/{}", some_id())),
            (Method::POST, format!("/v1/requests/{}/decisions", some_id())),
        ] {
            let mut b = Request::builder().method(method.clone()).uri(&path);
            if let Some(a) = authorization {
                b = b.header(header::AUTHORIZATION, a);
            }
            // Authentication comes before the body is looked at.
            let reply = app.send(b.body(Body::from("not json")).expect("request")).await;
            reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
            assert_eq!(
                reply.headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
                Some(&b"Bearer"[..]),
                "{case}"
            );
        }
    }
    let me = app.get(Some("alice"), "/v1/me").await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    assert_eq!(me.body["id"], "alice");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_edge_answers_in_the_error_envelope() {
    let app = App::start().await;

    app.get(Some("alice"), "/v1/nope").await.assert_error(StatusCode::NOT_FOUND, "not_found");
    app.get(None, "/nope").await.assert_error(StatusCode::NOT_FOUND, "not_found");
    app.send(req(Method::DELETE, "/v1/requests", Some("alice")).body(Body::empty()).expect("request"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    app.send(req(Method::PUT, "/healthz", None).body(Body::empty()).expect("request"))
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");

    for path in ["/v1/requests/not-a-uuid", "/v1/grants/42", "/v1/requests/%00"] {
        app.get(Some("alice"), path).await.assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    }
    app.post_json("bob", "/v1/requests/42/decisions", &json!({ "decision": "approve" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
    app.post_json("admin", "/v1/tasks/xyz/complete", &json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");

    let good = json!({ "integration": "github-staging", "scopes": ["contents:read"], "duration": "30m", "justification": "why" });
    let raw = |content_type: Option<&str>, body: Body| {
        let mut b = req(Method::POST, "/v1/requests", Some("alice"));
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        b.body(body).expect("request")
    };
    app.send(raw(None, Body::from(good.to_string())))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    app.send(raw(Some("text/plain"), Body::from(good.to_string())))
        .await
        .assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    app.send(raw(Some("application/json"), Body::from(r#"{"integration": "github-staging","#)))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    let big = format!(
        r#"{{"integration":"github-staging","scopes":["contents:read"],"justification":"{}"}}"#,
        "x".repeat(MAX_BODY)
    );
    app.send(raw(Some("application/json"), Body::from(big)))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    app.get(Some("alice"), "/v1/requests?bogus=1").await.assert_error(StatusCode::BAD_REQUEST, "invalid_query");

    // None of that created anything.
    let list = app.get(Some("admin"), "/v1/requests").await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    assert_eq!(list.body["items"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_the_served_document() {
    let app = App::start().await;
    for path in ["/healthz", "/readyz"] {
        let reply = app.get(None, path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {}", reply.text);
        assert_eq!(reply.body, json!({ "status": "ok" }), "{path}");
    }
    let doc = app.get(None, "/openapi.json").await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()), Some(&b"application/json"[..]));
    assert_eq!(doc.text, tollgate::app::openapi_json(), "the served document is the generated one, byte for byte");
    app.stop().await;
}

/// Every operation the document says takes a JSON body goes through the strict extractor: a
/// top-level array (which serde would otherwise read field by field) and an unknown field are
/// refused before anything is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_json_body_is_read_strictly() {
    let app = App::start().await;
    let doc = tollgate::app::openapi();
    let mut checked = 0;
    for (path, item) in &doc.paths.paths {
        let ops = [(Method::POST, &item.post), (Method::PUT, &item.put), (Method::PATCH, &item.patch)];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            if op.request_body.is_none() {
                continue;
            }
            let uri = path.replace("{id}", &some_id());
            for (body, want) in [("[\"approve\"]", "not an array"), (r#"{"zzz":1}"#, "unknown field `zzz`")] {
                let reply = app
                    .send(
                        req(method.clone(), &uri, Some("admin"))
                            .header(header::CONTENT_TYPE, "application/json")
                            .body(Body::from(body))
                            .expect("request"),
                    )
                    .await;
                reply.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
                let detail = reply.body["error"]["detail"].as_str().unwrap_or_default();
                assert!(detail.contains(want), "{method} {path} {body}: {detail}");
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked, 6,
        "POST /v1/requests, /v1/requests/{{id}}/decisions, /v1/tasks/{{id}}/complete, /v1/tokens, /v1/credentials, \
         /v1/credentials/import"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_created_and_approved_by_its_owner() {
    let app = App::start().await;
    let created = app
        .post_json(
            "alice",
            "/v1/requests",
            &json!({ "integration": "github-staging", "scopes": ["contents:write"], "duration": "30m", "justification": "hotfix" }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    assert_eq!(created.body["status"], "awaiting_approval", "{}", created.text);
    assert_eq!(created.body["requester"], "alice");
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        created.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("/v1/requests/{id}").as_str())
    );

    let decisions = format!("/v1/requests/{id}/decisions");
    app.post_json("alice", &decisions, &json!({ "decision": "approve" }))
        .await
        .assert_error(StatusCode::FORBIDDEN, "self_approval");
    let approved = app.post_json("bob", &decisions, &json!({ "decision": "approve", "comment": "ok" })).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    assert_ne!(approved.body["status"], "awaiting_approval", "{}", approved.text);
    let votes = approved.body["approvals"].as_array().expect("approvals");
    assert_eq!(votes.len(), 1, "{}", approved.text);
    assert_eq!(votes[0]["approver"], "bob");
    assert_eq!(votes[0]["decision"], "approve");
    assert_eq!(votes[0]["channel"], "api");

    let shown = app.get(Some("alice"), &format!("/v1/requests/{id}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.text);
    assert_eq!(shown.body["approvals"], approved.body["approvals"]);
    app.stop().await;
}

/// The statuses the document lists for `method path` (`"401"`, …).
fn documented_statuses(doc: &Value, path: &str, method: &str) -> Vec<String> {
    doc["paths"][path][method]["responses"].as_object().map(|r| r.keys().cloned().collect()).unwrap_or_default()
}

/// Every documented operation, as `(path, method, operation)`.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

/// Inputs that provoke each error class the extractors answer, sent to every documented
/// operation they apply to: each answer must be the expected status and code, and a status the
/// document lists for that operation. The document can therefore not drop an error the server
/// answers, nor the server start answering one the document does not list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_the_extractors_answer_is_documented() {
    let app = App::start().await;
    let doc: Value = serde_json::from_str(&tollgate::app::openapi_json()).expect("the document is JSON");
    let mut provoked = 0;
    for (path, method, op) in operations(&doc) {
        let documented = documented_statuses(&doc, &path, &method);
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let uuid_path = params.iter().any(|p| p["in"] == "path" && p["schema"]["format"] == "uuid");
        let has_query = params.iter().any(|p| p["in"] == "query");
        let has_body = op.get("requestBody").is_some();
        let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
        let uri = path.replace("{id}", &if uuid_path { some_id() } else { "github-staging".to_owned() });
        let json_body = |principal: Option<&str>, uri: &str, content_type: &str, body: String| {
            req(m.clone(), uri, principal)
                .header(header::CONTENT_TYPE, content_type)
                .body(Body::from(body))
                .expect("request")
        };
        let mut cases: Vec<(&str, Request<Body>, StatusCode, &str)> = Vec::new();
        if secured {
            let r = if has_body {
                json_body(None, &uri, "application/json", "{}".to_owned())
            } else {
                req(m.clone(), &uri, None).body(Body::empty()).expect("request")
            };
            cases.push(("no token", r, StatusCode::UNAUTHORIZED, "unauthenticated"));
        }
        if uuid_path {
            let bad = path.replace("{id}", "not-a-uuid");
            let r = if has_body {
                json_body(Some("admin"), &bad, "application/json", "{}".to_owned())
            } else {
                req(m.clone(), &bad, Some("admin")).body(Body::empty()).expect("request")
            };
            cases.push(("non-UUID id", r, StatusCode::BAD_REQUEST, "invalid_id"));
        }
        if has_query {
            for q in ["bogus=1", "limit=0", "limit=100000"] {
                let r = req(m.clone(), &format!("{uri}?{q}"), Some("admin")).body(Body::empty()).expect("request");
                cases.push(("bad query", r, StatusCode::BAD_REQUEST, "invalid_query"));
            }
        }
        if has_body {
            let oversized = format!(r#"{{"comment":"{}"}}"#, "x".repeat(MAX_BODY));
            cases.extend([
                (
                    "text/plain",
                    json_body(Some("admin"), &uri, "text/plain", "{}".to_owned()),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                ),
                (
                    "malformed",
                    json_body(Some("admin"), &uri, "application/json", r#"{"a":"#.to_owned()),
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                ),
                (
                    "oversized",
                    json_body(Some("admin"), &uri, "application/json", oversized),
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                ),
                (
                    "array",
                    json_body(Some("admin"), &uri, "application/json", "[]".to_owned()),
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                ),
            ]);
        }
        for (what, request, status, code) in cases {
            let reply = app.send(request).await;
            reply.assert_error(status, code);
            assert!(
                documented.contains(&status.as_u16().to_string()),
                "{method} {path} ({what}) answered {status}, which the document does not list: {documented:?}"
            );
            provoked += 1;
        }
    }
    assert!(provoked > 40, "only {provoked} cases provoked");
    app.stop().await;
}

/// The statuses issue 16 found missing are listed, each error in the envelope, with its codes.
#[test]
fn the_document_lists_every_status_issue_16_found_missing() {
    let doc: Value = serde_json::from_str(&tollgate::app::openapi_json()).expect("the document is JSON");
    let has =
        |path: &str, method: &str, status: &str| documented_statuses(&doc, path, method).iter().any(|s| s == status);
    let writes = [
        "/v1/requests",
        "/v1/requests/{id}/decisions",
        "/v1/requests/{id}/cancel",
        "/v1/grants/{id}/revoke",
        "/v1/tasks/{id}/complete",
    ];
    for path in writes {
        for status in ["401", "500", "503"] {
            assert!(has(path, "post", status), "POST {path}: {status}");
        }
    }
    for path in ["/v1/audit/verify", "/v1/grants/{id}"] {
        assert!(has(path, "get", "401"), "GET {path}: 401");
    }
    for (path, method, _) in operations(&doc) {
        if path.contains("{id}") && !path.starts_with("/v1/integrations") {
            assert!(has(&path, &method, "400"), "{method} {path}: 400 invalid_id");
        }
    }
    for path in ["/v1/requests", "/v1/requests/{id}/decisions", "/v1/tasks/{id}/complete"] {
        for status in ["400", "413", "415", "422"] {
            assert!(has(path, "post", status), "POST {path}: {status}");
        }
    }
    assert!(has("/v1/audit", "get", "400"), "GET /v1/audit: 400 invalid_query");

    // Each error response is the envelope (directly or through a shared response) and names its codes.
    let shared = &doc["components"]["responses"];
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            let response = match response["$ref"].as_str() {
                Some(r) => &shared[r.trim_start_matches("#/components/responses/")],
                None => response,
            };
            let content = &response["content"]["application/json"];
            assert_eq!(content["schema"]["$ref"], "#/components/schemas/ErrorBody", "{method} {path} {status}");
            let description = response["description"].as_str().unwrap_or_default();
            assert!(description.contains("- `"), "{method} {path} {status}: codes not described: {description:?}");
            assert!(
                content["examples"].as_object().is_some_and(|e| !e.is_empty()),
                "{method} {path} {status}: no example"
            );
        }
    }

    // Constraints come from the constants the server checks.
    let params = &doc["paths"]["/v1/audit"]["get"]["parameters"];
    let limit = params.as_array().and_then(|p| p.iter().find(|p| p["name"] == "limit")).expect("limit");
    assert_eq!((limit["schema"]["minimum"].as_u64(), limit["schema"]["maximum"].as_u64()), (Some(1), Some(1000)));
    let kind = &doc["components"]["schemas"]["RequestIn"]["properties"]["kind"]["enum"];
    assert_eq!(kind, &json!(["grant", "renew", "rotate", "revoke", null]));
}

/// `Idempotency-Key` is what the document's pattern says: 1–255 visible ASCII characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_visible_ascii_as_documented() {
    let app = App::start().await;
    let body = json!({ "integration": "github-staging", "scopes": ["contents:read"], "duration": "30m", "justification": "why" });
    let send = |key: &str| {
        req(Method::POST, "/v1/requests", Some("alice"))
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .expect("request")
    };
    for bad in ["a b".to_owned(), "k".repeat(256)] {
        app.send(send(&bad)).await.assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let first = app.send(send("retry-1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = app.send(send("retry-1")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text);
    assert_eq!(again.headers.get("idempotent-replayed").map(|v| v.as_bytes()), Some(&b"true"[..]));
    assert_eq!(again.body["id"], first.body["id"]);
    app.stop().await;
}
