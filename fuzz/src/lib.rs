//! What the in-process targets (`api_body`, `slack`, `email_link`) share: the real router over a
//! real engine on a temporary SQLite database, built the way `api/tests/router.rs` builds it, once
//! per fuzzing process, with a few requests, a manual-connector task and email approval links
//! already in place so that fuzz inputs reach the code behind the lookups.
//!
//! The engine runs with its workers (timers, outbox): notifications go to `.eml` files in the
//! temporary directory and to a Slack API URL where nothing listens (the calls fail at once and
//! are retried later; nothing waits for them).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tollgate_engine::Engine;
use tollgate_engine::clock::SystemClock;
use tower::ServiceExt as _;
use uuid::Uuid;

/// Body limit of the router (the default configuration's).
pub const MAX_BODY: usize = 64 * 1024;
/// The Slack signing secret of the configuration.
pub const SLACK_SECRET: &str = "fuzz-signing-secret-0123456789abcdef";
/// Slack workspace and app of the configuration.
pub const SLACK_TEAM: &str = "T0FUZZ";
/// Slack app id of the configuration.
pub const SLACK_APP: &str = "A0FUZZ";
/// `bob`'s Slack user id.
pub const SLACK_BOB: &str = "U0BOB";
/// Value of the anti-CSRF cookie the `email_link` target presents (22 base64url characters).
pub const LINK_COOKIE: &str = "fuzzfuzzfuzzfuzzfuzz01";
/// Public URL of the configuration.
pub const PUBLIC_URL: &str = "http://127.0.0.1:9";

/// The API token of `principal`.
#[must_use]
pub fn token(principal: &str) -> String {
    format!("tg_fuzz_{principal}_0123456789abcdef0123456789")
}

/// A link token with the form value its page hands out for [`LINK_COOKIE`].
#[derive(Debug, Clone)]
pub struct Link {
    /// The token (43 characters).
    pub token: String,
    /// The hidden `csrf` value of the page, for [`LINK_COOKIE`].
    pub csrf: String,
}

/// The application under test, built once per process.
pub struct App {
    /// The runtime everything runs on.
    pub rt: tokio::runtime::Runtime,
    /// The real router.
    pub router: Router,
    /// The engine behind it.
    pub engine: Arc<Engine>,
    /// Requests by `alice` on `github-staging` that `bob` may decide (at start-up all await
    /// approval; fuzz inputs may decide them).
    pub runs: Vec<Uuid>,
    /// Open manual-connector tasks of operator `admin`.
    pub tasks: Vec<Uuid>,
    /// `bob`'s link to a two-person approval he has approved through the API after its page was
    /// read. A deny through it is refused (already voted); an approve is his own vote again,
    /// answered as a retry (recorded once, the link consumed). Either way the run keeps one vote.
    pub voted_link: Link,
    /// The run of [`App::voted_link`].
    pub voted_run: Uuid,
    /// Links of `bob` nobody has used yet: a decision through one of them consumes it.
    pub fresh_links: Mutex<Vec<Link>>,
    _dir: tempfile::TempDir,
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text, for messages.
    #[must_use]
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether this is the API's one error envelope: `Content-Type: application/json` and exactly
    /// `{"error": {"code", "detail"}}` with a non-empty code and detail.
    #[must_use]
    pub fn is_error_envelope(&self) -> bool {
        let json_type = self.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) == Some("application/json");
        let Ok(Value::Object(outer)) = serde_json::from_slice::<Value>(&self.body) else { return false };
        let Some(Value::Object(inner)) = outer.get("error") else { return false };
        let nonempty = |k: &str| inner.get(k).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
        json_type && outer.len() == 1 && inner.len() == 2 && nonempty("code") && nonempty("detail")
    }

    /// Panics unless the status is below 500 and every 4xx is the error envelope.
    #[track_caller]
    pub fn assert_api_contract(&self, what: &str) {
        assert!(!self.status.is_server_error(), "{what}: {} {}", self.status, self.text());
        if self.status.is_client_error() {
            assert!(self.is_error_envelope(), "{what}: {} without the error envelope: {}", self.status, self.text());
        }
    }
}

impl App {
    /// Sends one request through the router.
    pub fn send(&self, req: Request<Body>) -> Reply {
        self.rt.block_on(send(&self.router, req))
    }

    /// `GET /v1/requests/{run}` as `admin`: the request as the API shows it.
    #[must_use]
    pub fn request_view(&self, run: Uuid) -> Value {
        let reply = self.rt.block_on(get(&self.router, "admin", &format!("/v1/requests/{run}")));
        assert_eq!(reply.status, StatusCode::OK, "the request {run}: {}", reply.text());
        serde_json::from_slice(&reply.body).expect("JSON")
    }
}

async fn send(router: &Router, req: Request<Body>) -> Reply {
    let resp = router.clone().oneshot(req).await.expect("the router is infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = to_bytes(resp.into_body(), usize::MAX).await.expect("response body").to_vec();
    Reply { status, headers, body }
}

/// The application, built on first use.
pub fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(build)
}

fn config_toml(dir: &std::path::Path, slack_url: &str) -> String {
    let db = dir.join("tollgate.db");
    format!(
        r#"
listen = "127.0.0.1:0"
node_id = "fuzz"
public_url = "{PUBLIC_URL}"

[database]
url = "sqlite://{db}?mode=rwc"
max_connections = 4

[workflows]
bundled = true
dir = "{workflows}"

[email]
enabled = true
from = "Tollgate <tollgate@localhost>"
outbox_dir = "{outbox}"

[slack]
bot_token = "xoxb-fuzz"
signing_secret = "{SLACK_SECRET}"
api_url = "{slack_url}"
team_id = "{SLACK_TEAM}"
app_id = "{SLACK_APP}"
timeout = "1s"

[principals.alice]
name = "Alice"
email = "alice@example.com"
slack_user_id = "U0ALICE"

[principals.bob]
name = "Bob"
email = "bob@example.com"
slack_user_id = "{SLACK_BOB}"

[principals.carol]
name = "Carol"
email = "carol@example.com"

[principals.dave]
name = "Dave"
email = "dave@example.com"

[principals.admin]
name = "Admin"
email = "admin@example.com"
roles = ["admin"]

[groups.security]
members = ["carol", "dave"]

[integrations.github-staging]
app = "github"
environment = "staging"
owner = "bob"
scopes = [{{ name = "contents:read", risk = "low" }}, {{ name = "contents:write", risk = "medium" }}]
connector = {{ type = "manual", operator = "admin" }}

[integrations.fuzz-links]
app = "links"
environment = "staging"
owner = "bob"
scopes = [{{ name = "write", risk = "medium" }}]
connector = {{ type = "manual", operator = "admin" }}
"#,
        db = db.display(),
        workflows = dir.join("workflows").display(),
        outbox = dir.join("outbox").display(),
    )
}

/// Two approvals from the owner or security, so that one approval leaves the step pending.
const TWO_PERSON: &str = r#"key: fuzz-two-person
version: 1
kind: grant
description: Two approvals; links of an approver who already voted stay usable.
applies_to:
  integrations: [fuzz-links]
parameters:
  default_duration: 1h
  max_duration: 8h
  require_justification: false
steps:
  - approval:
      id: two
      approvers:
        owner: true
        groups: [security]
      quorum: 2
      deny_quorum: 2
      timeout: 7d
  - action:
      id: grant
      operation: grant
  - wait:
      until: expiry
  - action:
      id: revoke
      operation: revoke
"#;

/// Number of unused links made at start-up.
const FRESH_LINKS: usize = 6;

fn build() -> App {
    tollgate::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // tmpfs when there is one: SQLite syncs on every commit.
    let dir = match std::path::Path::new("/dev/shm") {
        shm if shm.is_dir() => tempfile::Builder::new().prefix("tollgate-fuzz-").tempdir_in(shm),
        _ => tempfile::Builder::new().prefix("tollgate-fuzz-").tempdir(),
    }
    .expect("a temporary directory");
    let app = rt.block_on(setup(dir.path()));
    let (router, engine, runs, tasks, (voted_link, voted_run), fresh) = app;
    App { rt, router, engine, runs, tasks, voted_link, voted_run, fresh_links: Mutex::new(fresh), _dir: dir }
}

type Setup = (Router, Arc<Engine>, Vec<Uuid>, Vec<Uuid>, (Link, Uuid), Vec<Link>);

async fn setup(dir: &std::path::Path) -> Setup {
    std::fs::create_dir_all(dir.join("workflows")).expect("workflows dir");
    std::fs::write(dir.join("workflows/fuzz-two-person.yaml"), TWO_PERSON).expect("workflow");
    // A port where nothing listens: Slack calls fail at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let slack_url = format!("http://{}/api/", closed.local_addr().expect("address"));
    drop(closed);
    let file = dir.join("tollgate.toml");
    std::fs::write(&file, config_toml(dir, &slack_url)).expect("write config");
    let config = tollgate::config::load(Some(&file), &[]).expect("valid configuration");
    let settings = config.slack().expect("slack settings").expect("slack enabled");
    let slack = (Arc::new(tollgate_engine::slack::SlackApi::new(&settings).expect("slack client")), settings);
    let engine = tollgate::server::build_engine(&config, Arc::new(SystemClock), true, Some(&slack))
        .await
        .expect("the engine starts");
    for principal in ["alice", "bob", "carol", "admin"] {
        engine.register_token(principal, "fuzz", &token(principal), "system", "fuzz").await.expect("token");
    }
    let router = tollgate::app::router(engine.clone(), MAX_BODY, PUBLIC_URL, Some(&slack));

    let create = |integration: &'static str, scope: &'static str| {
        let router = router.clone();
        async move {
            let body = json!({"integration": integration, "scopes": [scope], "duration": "1h", "justification": "fuzz"});
            let reply = post_json(&router, "alice", "/v1/requests", &body).await;
            assert_eq!(reply.status, StatusCode::CREATED, "create a request: {}", reply.text());
            let v: Value = serde_json::from_slice(&reply.body).expect("JSON");
            v["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()).expect("request id")
        }
    };
    let decide = |id: Uuid| {
        let router = router.clone();
        async move {
            let reply =
                post_json(&router, "bob", &format!("/v1/requests/{id}/decisions"), &json!({"decision": "approve"})).await;
            assert_eq!(reply.status, StatusCode::OK, "approve: {}", reply.text());
        }
    };

    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(create("github-staging", "contents:write").await);
    }
    // One more, approved: its grant becomes a task for `admin`.
    let provisioned = create("github-staging", "contents:write").await;
    decide(provisioned).await;

    // Links: one to vote on through the API first, then fresh ones.
    let outbox = dir.join("outbox");
    let voted_run = create("fuzz-links", "write").await;
    let voted_token = wait_links(&outbox, &[], 1).await.remove(0);
    // Its page (and CSRF value) before the vote: once bob has voted, the page says the link
    // cannot be used, but a form posted from the earlier page still reaches the decision rule.
    let voted_link = link(&router, voted_token.clone()).await;
    decide(voted_run).await;
    for _ in 0..FRESH_LINKS {
        create("fuzz-links", "write").await;
    }
    let fresh_tokens = wait_links(&outbox, std::slice::from_ref(&voted_token), FRESH_LINKS).await;
    let mut fresh = Vec::new();
    for t in fresh_tokens {
        fresh.push(link(&router, t).await);
    }

    let deadline = Instant::now() + Duration::from_secs(60);
    let tasks = loop {
        let reply = get(&router, "admin", "/v1/tasks").await;
        let v: Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        let tasks: Vec<Uuid> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["id"].as_str().and_then(|s| s.parse().ok()))
            .collect();
        if !tasks.is_empty() {
            break tasks;
        }
        assert!(Instant::now() < deadline, "no task for admin after 60 s: {}", reply.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (router, engine, runs, tasks, (voted_link, voted_run), fresh)
}

fn request(method: Method, path: &str, principal: Option<&str>) -> axum::http::request::Builder {
    let b = Request::builder().method(method).uri(path);
    match principal {
        Some(p) => b.header(header::AUTHORIZATION, format!("Bearer {}", token(p))),
        None => b,
    }
}

async fn post_json(router: &Router, principal: &str, path: &str, body: &Value) -> Reply {
    let req = request(Method::POST, path, Some(principal))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    send(router, req).await
}

async fn get(router: &Router, principal: &str, path: &str) -> Reply {
    send(router, request(Method::GET, path, Some(principal)).body(Body::empty()).expect("request")).await
}

/// Waits for `n` link tokens addressed to `bob` about requests on `fuzz-links` in the outbox that
/// are not in `known` (bob also gets links for the `github-staging` requests, one of which he
/// decides at once, which makes its link unusable).
async fn wait_links(outbox: &std::path::Path, known: &[String], n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut found: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(outbox).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".eml") || !name.contains("bob@example.com") {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else { continue };
            if !String::from_utf8_lossy(&bytes).contains("grant on fuzz-links") {
                continue;
            }
            for t in link_tokens(&bytes) {
                if !known.contains(&t) && !found.contains(&t) {
                    found.push(t);
                }
            }
        }
        if found.len() >= n {
            found.truncate(n);
            return found;
        }
        assert!(Instant::now() < deadline, "only {} of {n} approval links after 60 s", found.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The approval-link tokens in an `.eml` file.
fn link_tokens(eml: &[u8]) -> Vec<String> {
    let Some(message) = mail_parser::MessageParser::default().parse(eml) else { return Vec::new() };
    let text = message.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    text.split(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '(' | ')'))
        .filter_map(|w| w.split_once("/approvals/email/").map(|(_, t)| t))
        .map(|t| t.trim_end_matches(['.', ',']).to_owned())
        .filter(|t| tollgate_engine::links::is_well_formed(t))
        .collect()
}

/// The page of `token` for [`LINK_COOKIE`], and its hidden `csrf` value.
async fn link(router: &Router, token: String) -> Link {
    let req = Request::builder()
        .uri(format!("/approvals/email/{token}"))
        .header(header::COOKIE, format!("tollgate_csrf={LINK_COOKIE}"))
        .body(Body::empty())
        .expect("request");
    let reply = send(router, req).await;
    assert_eq!(reply.status, StatusCode::OK, "the link page: {}", reply.text());
    let page = reply.text();
    let csrf = page
        .split_once(r#"name="csrf" value=""#)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_owned())
        .expect("the page carries a csrf value");
    Link { token, csrf }
}

/// Replaces every `@RUN@` in `data` by the id of one of the app's requests (chosen by `pick`),
/// so that hand-written inputs can name a request that exists in this process.
#[must_use]
pub fn with_run_ids(data: &[u8], app: &App, pick: u8) -> Vec<u8> {
    const MARK: &[u8] = b"@RUN@";
    let id = app.runs[usize::from(pick) % app.runs.len()].to_string();
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while let Some(at) = rest.windows(MARK.len()).position(|w| w == MARK) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(id.as_bytes());
        rest = &rest[at + MARK.len()..];
    }
    out.extend_from_slice(rest);
    out
}
