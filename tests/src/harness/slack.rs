//! A local fake of the Slack Web API, and builders for the signed requests Slack sends to Tollgate.
//!
//! [`FakeSlack`] speaks Slack's HTTP contract closely enough for slack-morphism to talk to it: bearer-token
//! auth, `{"ok":…}` envelopes on HTTP 200, `429` + `Retry-After` when rate limited, JSON, form and
//! query-string parameters. It records every call, tracks posted messages through `chat.update`, and
//! can be scripted to fail.
//!
//! The free functions ([`block_action`], [`view_submission`], [`slash_command`]) build the requests
//! Slack makes to an app: form bodies in Slack's exact shape, signed with the `v0` scheme.
//!
//! ```ignore
//! # async fn demo() -> anyhow::Result<()> {
//! # use tollgate_tests::slack::*;
//! let slack = FakeSlack::start("xoxb-test").await;
//! slack.add_user("alice@example.com", "U0ALICE", "T0FAKETEAM");
//! // … point Tollgate at `slack.api_url()`, make it post …
//! let posts = slack.wait_for("chat.postMessage", 1, std::time::Duration::from_secs(5)).await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::sync::Notify;

/// The legacy verification token put in the `token` field of every request built here.
pub const VERIFICATION_TOKEN: &str = "gIkuvaNzQIHg97ATvDxqgjtO";

/// The workspace domain put in the `team.domain` / `team_domain` fields of requests built here.
pub const TEAM_DOMAIN: &str = "tollgate-test";

/// The Web API methods the fake implements.
const KNOWN_METHODS: [&str; 6] = [
    "chat.postMessage",
    "chat.update",
    "chat.postEphemeral",
    "views.open",
    "users.lookupByEmail",
    "conversations.open",
];

/// Parameters Slack accepts as JSON-encoded strings in form bodies; the fake decodes them.
const JSON_STRING_PARAMS: [&str; 4] = ["blocks", "attachments", "view", "metadata"];

// ---------------------------------------------------------------------------------------------
// Fake Web API
// ---------------------------------------------------------------------------------------------

/// One call the fake received (including rejected and failure-injected ones).
#[derive(Debug, Clone, PartialEq)]
pub struct SlackCall {
    /// The Web API method, e.g. `chat.postMessage`.
    pub method: String,
    /// The HTTP method (`GET` or `POST`).
    pub http_method: String,
    /// The request's `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The parameters as a JSON object: the JSON body, or form / query fields as strings (query fields
    /// fill in what the body lacks). `blocks`, `attachments`, `view` and `metadata` given as JSON strings
    /// are decoded. A body that is not valid JSON despite a JSON content type is kept as a string.
    pub body: Value,
    /// When the call arrived (wall clock).
    pub at: DateTime<Utc>,
    /// The HTTP status the fake answered with.
    pub status: u16,
    /// The JSON body the fake answered with.
    pub response: Value,
}

impl SlackCall {
    /// Whether the call succeeded (HTTP 200 and `"ok": true`).
    #[must_use]
    pub fn ok(&self) -> bool {
        self.status == 200 && self.response["ok"] == Value::Bool(true)
    }

    /// The Slack error code (`"error"` field) of a failed call.
    #[must_use]
    pub fn error(&self) -> Option<&str> {
        self.response["error"].as_str()
    }

    /// A string parameter of the call.
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.body[name].as_str()
    }
}

/// The current state of a message posted with `chat.postMessage` (after any `chat.update`s).
#[derive(Debug, Clone, PartialEq)]
pub struct PostedMessage {
    /// The channel id the message lives in (a `D…` id for messages posted to a user id).
    pub channel: String,
    /// The message's `ts`.
    pub ts: String,
    /// The parent's `ts`, for thread replies.
    pub thread_ts: Option<String>,
    /// The (fallback) text; empty if none was given.
    pub text: String,
    /// The Block Kit blocks; empty if none were given.
    pub blocks: Vec<Value>,
    /// How many successful `chat.update`s the message received.
    pub updates: u32,
}

/// A failure the fake can be scripted to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// HTTP 429, `Retry-After: {retry_after_secs}`, body `{"ok":false,"error":"ratelimited"}`.
    RateLimited {
        /// The `Retry-After` header's value, in seconds.
        retry_after_secs: u64,
    },
    /// The given HTTP status (e.g. 500, 503) with body `{"ok":false,"error":"internal_error"}`.
    ServerError(u16),
    /// HTTP 200 with `{"ok":false,"error":…}`.
    SlackError(String),
}

/// A local fake of the Slack Web API, served on `127.0.0.1` until dropped.
#[derive(Debug)]
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeSlack {
    /// The workspace id the fake reports for itself (views, default user team).
    pub const TEAM_ID: &'static str = "T0FAKETEAM";
    /// The bot id on messages the fake posts.
    pub const BOT_ID: &'static str = "B0FAKE";
    /// The bot's user id on messages the fake posts.
    pub const BOT_USER_ID: &'static str = "U0FAKEBOT";
    /// The app id the fake reports.
    pub const APP_ID: &'static str = "A0FAKEAPP";

    /// Starts the fake on `127.0.0.1:0`, accepting `Authorization: Bearer {bot_token}`.
    ///
    /// # Panics
    /// If the listener cannot be bound; see [`FakeSlack::try_start`].
    pub async fn start(bot_token: &str) -> FakeSlack {
        match Self::try_start(bot_token).await {
            Ok(fake) => fake,
            Err(err) => panic!("starting the fake Slack: {err:#}"),
        }
    }

    /// Starts the fake on `127.0.0.1:0`, accepting `Authorization: Bearer {bot_token}`.
    ///
    /// # Errors
    /// If the listener cannot be bound.
    pub async fn try_start(bot_token: &str) -> anyhow::Result<FakeSlack> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the fake Slack")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            bot_token: bot_token.to_owned(),
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeSlack { addr, shared, task })
    }

    /// The Web API base URL, `http://127.0.0.1:{port}/api/` (with a trailing slash).
    ///
    /// slack-morphism joins it as `{base}/{method}`, so its requests arrive as `/api//chat.postMessage`;
    /// the fake accepts any number of slashes after `/api/`.
    #[must_use]
    pub fn api_url(&self) -> String {
        format!("http://{}/api/", self.addr)
    }

    /// The `[slack]` configuration for a server using this fake: its token and API URL, the
    /// fake's workspace and app, `signing_secret`, and `approvals_channel` when given (without
    /// one, approval requests go by DM).
    #[must_use]
    pub fn config(&self, signing_secret: &str, approvals_channel: Option<&str>) -> String {
        let channel = approvals_channel.map(|c| format!("approvals_channel = \"{c}\"\n")).unwrap_or_default();
        format!(
            "\n[slack]\nbot_token = \"{token}\"\nsigning_secret = \"{signing_secret}\"\napi_url = \"{api}\"\n\
             team_id = \"{team}\"\napp_id = \"{app}\"\n{channel}",
            token = self.bot_token(),
            api = self.api_url().trim_end_matches('/'),
            team = Self::TEAM_ID,
            app = Self::APP_ID,
        )
    }

    /// The address the fake listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bot token the fake accepts.
    #[must_use]
    pub fn bot_token(&self) -> &str {
        &self.shared.bot_token
    }

    /// Every call received so far, in arrival order.
    #[must_use]
    pub fn calls(&self) -> Vec<SlackCall> {
        self.shared.lock().calls.clone()
    }

    /// The calls to one method, in arrival order.
    #[must_use]
    pub fn calls_to(&self, method: &str) -> Vec<SlackCall> {
        self.shared.lock().calls.iter().filter(|c| c.method == method).cloned().collect()
    }

    /// Waits until at least `count` successful calls of `method` were recorded and returns all of them.
    ///
    /// # Errors
    /// On timeout, listing every call seen.
    pub async fn wait_for(&self, method: &str, count: usize, timeout: Duration) -> anyhow::Result<Vec<SlackCall>> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.notify.notified();
            let ok: Vec<SlackCall> = self.calls_to(method).into_iter().filter(SlackCall::ok).collect();
            if ok.len() >= count {
                return Ok(ok);
            }
            let now = Instant::now();
            if now >= deadline {
                let seen: Vec<String> = self.calls().iter().map(describe_call).collect();
                bail!(
                    "timed out after {timeout:?} waiting for {count} successful {method} call(s), got {}; saw [{}]",
                    ok.len(),
                    seen.join(", ")
                );
            }
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(100)), notified).await;
        }
    }

    /// Every message posted so far, in posting order, as it stands after updates.
    #[must_use]
    pub fn messages(&self) -> Vec<PostedMessage> {
        self.shared.lock().messages.clone()
    }

    /// The message at `(channel, ts)`, as it stands after updates.
    #[must_use]
    pub fn message(&self, channel: &str, ts: &str) -> Option<PostedMessage> {
        self.shared.lock().messages.iter().find(|m| m.channel == channel && m.ts == ts).cloned()
    }

    /// Every view opened with `views.open`, as the fake returned it (with `id`, `hash`, … added).
    #[must_use]
    pub fn opened_views(&self) -> Vec<Value> {
        self.shared.lock().views.clone()
    }

    /// Makes `users.lookupByEmail` find `email` (case-insensitively) as `user_id` in `team_id`.
    pub fn add_user(&self, email: &str, user_id: &str, team_id: &str) {
        let user = FakeUser { email: email.to_owned(), id: user_id.to_owned(), team_id: team_id.to_owned() };
        self.shared.lock().users.insert(email.to_lowercase(), user);
    }

    /// The stable `D…` channel id of the bot's DM with `user_id` (as `conversations.open` and
    /// `chat.postMessage` to a user id report it).
    #[must_use]
    pub fn dm_channel(&self, user_id: &str) -> String {
        self.shared.lock().im_channel(user_id)
    }

    /// Makes `channel` unknown: posting or updating there answers `channel_not_found`.
    pub fn set_missing_channel(&self, channel: &str) {
        self.shared.lock().missing_channels.insert(channel.to_owned());
    }

    /// Answers the next `times` authenticated calls of `method` with `failure` (queued after earlier
    /// `fail_next`s). `method` `"*"` matches every method.
    pub fn fail_next(&self, method: &str, failure: Failure, times: u32) {
        if times > 0 {
            self.shared.lock().next_failures.entry(method.to_owned()).or_default().push_back((failure, times));
        }
    }

    /// Answers every authenticated call of `method` with `failure` until [`FakeSlack::heal`]
    /// (`fail_next` failures go first). `method` `"*"` matches every method.
    pub fn fail_always(&self, method: &str, failure: Failure) {
        self.shared.lock().always_failures.insert(method.to_owned(), failure);
    }

    /// Drops every scripted failure and missing channel.
    pub fn heal(&self) {
        let mut inner = self.shared.lock();
        inner.next_failures.clear();
        inner.always_failures.clear();
        inner.missing_channels.clear();
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Debug)]
struct Shared {
    bot_token: String,
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Clone)]
struct FakeUser {
    email: String,
    id: String,
    team_id: String,
}

#[derive(Debug, Default)]
struct Inner {
    calls: Vec<SlackCall>,
    messages: Vec<PostedMessage>,
    views: Vec<Value>,
    /// Lower-cased email → user.
    users: HashMap<String, FakeUser>,
    /// User id (or sorted, comma-joined user ids) → `D…` / `G…` id.
    ims: HashMap<String, String>,
    /// Channel name → `C…` id.
    named_channels: HashMap<String, String>,
    /// Conversations already opened with `conversations.open`.
    opened: HashSet<String>,
    missing_channels: HashSet<String>,
    next_failures: HashMap<String, VecDeque<(Failure, u32)>>,
    always_failures: HashMap<String, Failure>,
    last_ts_micros: i64,
    next_id: u64,
}

/// What the fake answers.
struct Outcome {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Value,
}

impl Outcome {
    fn ok(fields: Value) -> Outcome {
        let mut body = Map::new();
        body.insert("ok".to_owned(), Value::Bool(true));
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        Outcome { status: StatusCode::OK, retry_after: None, body: Value::Object(body) }
    }

    fn error(error: &str) -> Outcome {
        Outcome { status: StatusCode::OK, retry_after: None, body: json!({"ok": false, "error": error}) }
    }

    fn failure(failure: Failure) -> Outcome {
        match failure {
            Failure::RateLimited { retry_after_secs } => Outcome {
                status: StatusCode::TOO_MANY_REQUESTS,
                retry_after: Some(retry_after_secs),
                body: json!({"ok": false, "error": "ratelimited"}),
            },
            Failure::ServerError(code) => Outcome {
                status: StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                retry_after: None,
                body: json!({"ok": false, "error": "internal_error"}),
            },
            Failure::SlackError(error) => Outcome::error(&error),
        }
    }
}

impl IntoResponse for Outcome {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    http_method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(method) = uri.path().strip_prefix("/api/").map(|m| m.trim_start_matches('/')) else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let params = parse_params(content_type.as_deref(), uri.query(), &body);
    let outcome = {
        let mut inner = shared.lock();
        let outcome = match &params {
            Ok(params) => inner.dispatch(&shared.bot_token, method, authorization, params),
            Err(()) => Outcome::error("invalid_json"),
        };
        let recorded = match params {
            Ok(params) => Value::Object(params),
            Err(()) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        };
        inner.calls.push(SlackCall {
            method: method.to_owned(),
            http_method: http_method.as_str().to_owned(),
            content_type,
            body: recorded,
            at: wall_clock(),
            status: outcome.status.as_u16(),
            response: outcome.body.clone(),
        });
        outcome
    };
    shared.notify.notify_waiters();
    outcome.into_response()
}

/// The request's parameters: the JSON body, or the form body, plus query fields the body lacks.
fn parse_params(content_type: Option<&str>, query: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, ()> {
    let is_json = content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    let mut params = Map::new();
    if is_json && !body.iter().all(u8::is_ascii_whitespace) {
        match serde_json::from_slice(body) {
            Ok(Value::Object(object)) => params = object,
            _ => return Err(()),
        }
    } else {
        for (key, value) in form_urlencoded::parse(body) {
            params.insert(key.into_owned(), Value::String(value.into_owned()));
        }
    }
    for (key, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        params.entry(key.into_owned()).or_insert_with(|| Value::String(value.into_owned()));
    }
    for key in JSON_STRING_PARAMS {
        if let Some(Value::String(raw)) = params.get(key)
            && let Ok(decoded @ (Value::Array(_) | Value::Object(_))) = serde_json::from_str::<Value>(raw)
        {
            params.insert(key.to_owned(), decoded);
        }
    }
    Ok(params)
}

/// A non-empty string parameter.
fn str_param<'p>(params: &'p Map<String, Value>, key: &str) -> Option<&'p str> {
    params.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// A non-empty array parameter.
fn array_param(params: &Map<String, Value>, key: &str) -> Option<Vec<Value>> {
    params.get(key).and_then(Value::as_array).filter(|a| !a.is_empty()).cloned()
}

/// A boolean parameter, as JSON `true` or form `true` / `1`.
fn bool_param(params: &Map<String, Value>, key: &str) -> bool {
    match params.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true" || s == "1",
        _ => false,
    }
}

/// Whether the message parameters carry any content (Slack answers `no_text` otherwise).
fn has_content(params: &Map<String, Value>) -> bool {
    str_param(params, "text").is_some()
        || str_param(params, "markdown_text").is_some()
        || array_param(params, "blocks").is_some()
        || array_param(params, "attachments").is_some()
}

/// Whether `s` looks like a Slack id (`C0123ABC`): a letter, then upper-case letters and digits.
fn looks_like_id(s: &str) -> bool {
    s.len() >= 2 && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn describe_call(call: &SlackCall) -> String {
    match call.error() {
        Some(error) => format!("{} {} {error}", call.method, call.status),
        None => format!("{} {}", call.method, call.status),
    }
}

impl Inner {
    fn dispatch(
        &mut self,
        bot_token: &str,
        method: &str,
        authorization: Option<&str>,
        params: &Map<String, Value>,
    ) -> Outcome {
        if !KNOWN_METHODS.contains(&method) {
            return Outcome::error("unknown_method");
        }
        let token = authorization.and_then(|a| a.strip_prefix("Bearer ")).map(str::trim).unwrap_or_default();
        if token.is_empty() {
            return Outcome::error("not_authed");
        }
        if token != bot_token {
            return Outcome::error("invalid_auth");
        }
        if let Some(failure) = self.take_failure(method) {
            return Outcome::failure(failure);
        }
        match method {
            "chat.postMessage" => self.post_message(params),
            "chat.update" => self.update_message(params),
            "chat.postEphemeral" => self.post_ephemeral(params),
            "views.open" => self.open_view(params),
            "users.lookupByEmail" => self.lookup_by_email(params),
            "conversations.open" => self.open_conversation(params),
            _ => Outcome::error("unknown_method"),
        }
    }

    fn take_failure(&mut self, method: &str) -> Option<Failure> {
        for key in [method, "*"] {
            if let Some(queue) = self.next_failures.get_mut(key)
                && let Some((failure, remaining)) = queue.front_mut()
            {
                let failure = failure.clone();
                *remaining -= 1;
                if *remaining == 0 {
                    queue.pop_front();
                }
                return Some(failure);
            }
        }
        [method, "*"].iter().find_map(|key| self.always_failures.get(*key).cloned())
    }

    fn next_id(&mut self, prefix: char) -> String {
        self.next_id += 1;
        format!("{prefix}0{:08X}", self.next_id)
    }

    /// A fresh `ts`: the wall clock in microseconds, bumped to stay strictly increasing.
    fn next_ts(&mut self) -> String {
        let micros = wall_clock().timestamp_micros().max(self.last_ts_micros + 1);
        self.last_ts_micros = micros;
        format!("{}.{:06}", micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000))
    }

    fn im_channel(&mut self, users: &str) -> String {
        if let Some(id) = self.ims.get(users) {
            return id.clone();
        }
        let id = self.next_id(if users.contains(',') { 'G' } else { 'D' });
        self.ims.insert(users.to_owned(), id.clone());
        id
    }

    /// The channel id a message to `channel` lands in: user ids go to the bot's DM, names get a
    /// stable `C…` id, ids are kept.
    fn resolve_channel(&mut self, channel: &str) -> String {
        if looks_like_id(channel) {
            if channel.starts_with('U') || channel.starts_with('W') {
                return self.im_channel(channel);
            }
            return channel.to_owned();
        }
        let name = channel.trim_start_matches('#').to_owned();
        if let Some(id) = self.named_channels.get(&name) {
            return id.clone();
        }
        let id = self.next_id('C');
        self.named_channels.insert(name, id.clone());
        id
    }

    fn bot_message(ts: &str, text: &str, blocks: &[Value], thread_ts: Option<&str>) -> Map<String, Value> {
        let mut message = Map::new();
        message.insert("type".to_owned(), json!("message"));
        message.insert("user".to_owned(), json!(FakeSlack::BOT_USER_ID));
        message.insert("bot_id".to_owned(), json!(FakeSlack::BOT_ID));
        message.insert("app_id".to_owned(), json!(FakeSlack::APP_ID));
        message.insert("team".to_owned(), json!(FakeSlack::TEAM_ID));
        message.insert("text".to_owned(), json!(text));
        message.insert("ts".to_owned(), json!(ts));
        if !blocks.is_empty() {
            message.insert("blocks".to_owned(), Value::Array(blocks.to_vec()));
        }
        if let Some(thread_ts) = thread_ts {
            message.insert("thread_ts".to_owned(), json!(thread_ts));
        }
        message
    }

    fn post_message(&mut self, params: &Map<String, Value>) -> Outcome {
        let Some(channel) = str_param(params, "channel") else {
            return Outcome::error("channel_not_found");
        };
        if self.missing_channels.contains(channel) {
            return Outcome::error("channel_not_found");
        }
        if !has_content(params) {
            return Outcome::error("no_text");
        }
        let channel = self.resolve_channel(channel);
        let ts = self.next_ts();
        let thread_ts = str_param(params, "thread_ts").map(str::to_owned);
        let text = str_param(params, "text").unwrap_or_default().to_owned();
        let blocks = array_param(params, "blocks").unwrap_or_default();
        let message = Self::bot_message(&ts, &text, &blocks, thread_ts.as_deref());
        self.messages.push(PostedMessage {
            channel: channel.clone(),
            ts: ts.clone(),
            thread_ts,
            text,
            blocks,
            updates: 0,
        });
        Outcome::ok(json!({"channel": channel, "ts": ts, "message": message}))
    }

    fn update_message(&mut self, params: &Map<String, Value>) -> Outcome {
        let Some(channel) = str_param(params, "channel") else {
            return Outcome::error("channel_not_found");
        };
        if self.missing_channels.contains(channel) {
            return Outcome::error("channel_not_found");
        }
        let Some(ts) = str_param(params, "ts") else {
            return Outcome::error("message_not_found");
        };
        if !has_content(params) {
            return Outcome::error("no_text");
        }
        let edit_ts = self.next_ts();
        let Some(posted) = self.messages.iter_mut().find(|m| m.channel == channel && m.ts == ts) else {
            return Outcome::error("message_not_found");
        };
        if let Some(text) = params.get("text").and_then(Value::as_str) {
            text.clone_into(&mut posted.text);
        }
        if let Some(blocks) = params.get("blocks").and_then(Value::as_array) {
            posted.blocks.clone_from(blocks);
        }
        posted.updates += 1;
        let mut message = Self::bot_message(ts, &posted.text, &posted.blocks, posted.thread_ts.as_deref());
        message.remove("ts");
        message.insert("edited".to_owned(), json!({"user": FakeSlack::BOT_USER_ID, "ts": edit_ts}));
        let mut fields = json!({"channel": channel, "ts": ts, "text": posted.text, "message": message});
        if let Some(thread_ts) = &posted.thread_ts {
            fields["thread_ts"] = json!(thread_ts);
        }
        Outcome::ok(fields)
    }

    fn post_ephemeral(&mut self, params: &Map<String, Value>) -> Outcome {
        let Some(channel) = str_param(params, "channel") else {
            return Outcome::error("channel_not_found");
        };
        if self.missing_channels.contains(channel) {
            return Outcome::error("channel_not_found");
        }
        if str_param(params, "user").is_none() {
            return Outcome::error("user_not_found");
        }
        if !has_content(params) {
            return Outcome::error("no_text");
        }
        Outcome::ok(json!({"message_ts": self.next_ts()}))
    }

    fn open_view(&mut self, params: &Map<String, Value>) -> Outcome {
        if str_param(params, "trigger_id").is_none() {
            return Outcome::error("invalid_trigger_id");
        }
        let Some(Value::Object(submitted)) = params.get("view") else {
            return Outcome::error("invalid_arguments");
        };
        if submitted.get("type").and_then(Value::as_str) != Some("modal")
            || !submitted.get("title").is_some_and(Value::is_object)
            || !submitted.get("blocks").is_some_and(Value::is_array)
        {
            return Outcome::error("invalid_arguments");
        }
        let id = self.next_id('V');
        let hash = format!("{}.{}", wall_clock().timestamp(), &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut view = submitted.clone();
        let defaults = [
            ("private_metadata", json!("")),
            ("callback_id", json!("")),
            ("external_id", json!("")),
            ("close", Value::Null),
            ("submit", Value::Null),
            ("clear_on_close", json!(false)),
            ("notify_on_close", json!(false)),
        ];
        for (key, value) in defaults {
            view.entry(key).or_insert(value);
        }
        let added = [
            ("id", json!(id)),
            ("team_id", json!(FakeSlack::TEAM_ID)),
            ("state", json!({"values": {}})),
            ("hash", json!(hash)),
            ("previous_view_id", Value::Null),
            ("root_view_id", json!(id)),
            ("app_id", json!(FakeSlack::APP_ID)),
            ("app_installed_team_id", json!(FakeSlack::TEAM_ID)),
            ("bot_id", json!(FakeSlack::BOT_ID)),
        ];
        for (key, value) in added {
            view.insert(key.to_owned(), value);
        }
        let view = Value::Object(view);
        self.views.push(view.clone());
        Outcome::ok(json!({"view": view}))
    }

    fn lookup_by_email(&self, params: &Map<String, Value>) -> Outcome {
        let Some(email) = str_param(params, "email") else {
            return Outcome::error("invalid_arguments");
        };
        let Some(user) = self.users.get(&email.to_lowercase()) else {
            return Outcome::error("users_not_found");
        };
        let name = user.email.split('@').next().unwrap_or_default();
        Outcome::ok(json!({"user": {
            "id": user.id,
            "team_id": user.team_id,
            "name": name,
            "deleted": false,
            "real_name": name,
            "tz": "Etc/UTC",
            "tz_label": "Coordinated Universal Time",
            "tz_offset": 0,
            "is_admin": false,
            "is_owner": false,
            "is_primary_owner": false,
            "is_restricted": false,
            "is_ultra_restricted": false,
            "is_bot": false,
            "is_app_user": false,
            "profile": {
                "email": user.email,
                "real_name": name,
                "real_name_normalized": name,
                "display_name": name,
                "display_name_normalized": name,
                "team": user.team_id,
            },
        }}))
    }

    fn open_conversation(&mut self, params: &Map<String, Value>) -> Outcome {
        if let Some(channel) = str_param(params, "channel") {
            if self.missing_channels.contains(channel) {
                return Outcome::error("channel_not_found");
            }
            return Outcome::ok(json!({"no_op": true, "already_open": true, "channel": {"id": channel}}));
        }
        let mut users: Vec<String> = match params.get("users") {
            Some(Value::String(list)) => list.split(',').map(str::trim).map(str::to_owned).collect(),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        users.retain(|u| !u.is_empty());
        users.sort();
        users.dedup();
        if users.is_empty() {
            return Outcome::error("users_list_not_supplied");
        }
        let key = users.join(",");
        let id = self.im_channel(&key);
        let already_open = !self.opened.insert(id.clone());
        let mut channel = json!({"id": id});
        if bool_param(params, "return_im") {
            let is_im = users.len() == 1;
            channel = json!({
                "id": id,
                "created": wall_clock().timestamp(),
                "is_im": is_im,
                "is_mpim": !is_im,
                "is_org_shared": false,
                "is_open": true,
                "last_read": "0000000000.000000",
                "unread_count": 0,
                "unread_count_display": 0,
                "priority": 0,
            });
            if is_im {
                channel["user"] = json!(key);
            }
        }
        let mut fields = json!({"channel": channel});
        if already_open {
            fields["no_op"] = json!(true);
            fields["already_open"] = json!(true);
        }
        Outcome::ok(fields)
    }
}

/// The wall clock. The harness reads real time here on purpose: Tollgate runs as a child process on
/// the real clock, and Slack's `ts` values are wall-clock based.
#[expect(clippy::disallowed_methods, reason = "the fake stands in for a remote service on the wall clock")]
fn wall_clock() -> DateTime<Utc> {
    Utc::now()
}

// ---------------------------------------------------------------------------------------------
// Signed requests (Slack → Tollgate)
// ---------------------------------------------------------------------------------------------

/// Slack's request signature: `v0=` + lower-case hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
#[must_use]
pub fn sign(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// A request as Slack would send it to the app: a form body with its `v0` signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The `application/x-www-form-urlencoded` body.
    pub body: String,
    /// `X-Slack-Request-Timestamp`, Unix seconds.
    pub timestamp: i64,
    /// `X-Slack-Signature`.
    pub signature: String,
    secret: String,
}

impl SignedRequest {
    /// Signs `body` at `timestamp` with `secret`.
    #[must_use]
    pub fn new(secret: &str, timestamp: i64, body: String) -> SignedRequest {
        let signature = sign(secret, timestamp, &body);
        SignedRequest { body, timestamp, signature, secret: secret.to_owned() }
    }

    /// The headers Slack sends: timestamp, signature and content type.
    #[must_use]
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            ("X-Slack-Request-Timestamp", self.timestamp.to_string()),
            ("X-Slack-Signature", self.signature.clone()),
            ("Content-Type", "application/x-www-form-urlencoded".to_owned()),
        ]
    }

    /// POSTs the request to `url` with Slack's headers (and its `User-Agent`).
    ///
    /// # Errors
    /// If the request cannot be sent.
    pub async fn post(&self, client: &reqwest::Client, url: &str) -> anyhow::Result<reqwest::Response> {
        let mut request =
            client.post(url).header(reqwest::header::USER_AGENT, "Slackbot 1.0 (+https://api.slack.com/robots)");
        for (name, value) in self.headers() {
            request = request.header(name, value);
        }
        request.body(self.body.clone()).send().await.with_context(|| format!("POST {url}"))
    }

    /// The same body, timestamped and re-signed at `timestamp` (for expired / future requests).
    #[must_use]
    pub fn with_timestamp(self, timestamp: i64) -> SignedRequest {
        SignedRequest::new(&self.secret, timestamp, self.body)
    }

    /// The same body and timestamp, signed with another secret (a forged request).
    #[must_use]
    pub fn signed_with(self, secret: &str) -> SignedRequest {
        SignedRequest::new(secret, self.timestamp, self.body)
    }

    /// One body byte changed, signature kept. The byte is the last of the legacy `token` value when
    /// present, so the body still parses and only the signature check can reject it.
    #[must_use]
    pub fn tampered(mut self) -> SignedRequest {
        let at = self.body.find(VERIFICATION_TOKEN).map(|i| i + VERIFICATION_TOKEN.len() - 1).or_else(|| {
            let bytes = self.body.as_bytes();
            (0..bytes.len()).rev().find(|&i| {
                bytes[i].is_ascii_alphanumeric()
                    && !((i >= 1 && bytes[i - 1] == b'%') || (i >= 2 && bytes[i - 2] == b'%'))
            })
        });
        match at {
            Some(i) => {
                let replacement = match self.body.as_bytes()[i] {
                    b'z' => 'a',
                    b'Z' => 'A',
                    b'9' => '0',
                    b => char::from(b + 1),
                };
                self.body.replace_range(i..=i, replacement.encode_utf8(&mut [0; 4]));
            }
            None => self.body.push('x'),
        }
        self
    }

    /// A form field of the body, decoded.
    #[must_use]
    pub fn form_field(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.body.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// The decoded `payload` JSON of an interaction request.
    #[must_use]
    pub fn payload(&self) -> Option<Value> {
        self.form_field("payload").and_then(|p| serde_json::from_str(&p).ok())
    }
}

/// The Slack user an inbound request comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackActor {
    /// `U…` user id.
    pub user_id: String,
    /// `T…` workspace id.
    pub team_id: String,
    /// `A…` app id the request is for.
    pub api_app_id: String,
}

impl SlackActor {
    /// An actor from its ids.
    #[must_use]
    pub fn new(user_id: &str, team_id: &str, api_app_id: &str) -> SlackActor {
        SlackActor { user_id: user_id.to_owned(), team_id: team_id.to_owned(), api_app_id: api_app_id.to_owned() }
    }

    /// The user's handle (the lower-cased user id).
    #[must_use]
    pub fn user_name(&self) -> String {
        self.user_id.to_lowercase()
    }

    fn user_json(&self) -> Value {
        let name = self.user_name();
        json!({"id": self.user_id, "username": name, "name": name, "team_id": self.team_id})
    }

    fn team_json(&self) -> Value {
        json!({"id": self.team_id, "domain": TEAM_DOMAIN})
    }
}

/// The kind and value of one input in a view's `state.values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputKind {
    /// `plain_text_input` with a value.
    PlainText(String),
    /// `plain_text_input` left empty (`"value": null`).
    EmptyPlainText,
    /// `static_select` with the option of that value selected.
    StaticSelect(String),
    /// `static_select` with nothing selected (`"selected_option": null`).
    EmptyStaticSelect,
    /// `multi_static_select` with the options of those values selected.
    MultiStaticSelect(Vec<String>),
    /// `checkboxes` with the options of those values ticked.
    Checkboxes(Vec<String>),
}

fn option_json(value: &str) -> Value {
    json!({"text": {"type": "plain_text", "text": value, "emoji": true}, "value": value})
}

/// One input's `state.values` entry, `{block_id: {action_id: {"type": …, …}}}`, in Slack's shape.
/// Combine several with [`merge_values`].
#[must_use]
pub fn input_value(block_id: &str, action_id: &str, kind: InputKind) -> Value {
    let state = match kind {
        InputKind::PlainText(value) => json!({"type": "plain_text_input", "value": value}),
        InputKind::EmptyPlainText => json!({"type": "plain_text_input", "value": null}),
        InputKind::StaticSelect(value) => json!({"type": "static_select", "selected_option": option_json(&value)}),
        InputKind::EmptyStaticSelect => json!({"type": "static_select", "selected_option": null}),
        InputKind::MultiStaticSelect(values) => json!({
            "type": "multi_static_select",
            "selected_options": values.iter().map(|v| option_json(v)).collect::<Vec<_>>(),
        }),
        InputKind::Checkboxes(values) => json!({
            "type": "checkboxes",
            "selected_options": values.iter().map(|v| option_json(v)).collect::<Vec<_>>(),
        }),
    };
    json!({ block_id: { action_id: state } })
}

/// Merges `state.values` objects (from [`input_value`]) into one, block by block.
#[must_use]
pub fn merge_values(parts: impl IntoIterator<Item = Value>) -> Value {
    let mut merged = Map::new();
    for part in parts {
        let Value::Object(blocks) = part else { continue };
        for (block_id, actions) in blocks {
            let entry = merged.entry(block_id).or_insert_with(|| Value::Object(Map::new()));
            if let (Value::Object(into), Value::Object(actions)) = (entry, actions) {
                into.extend(actions);
            }
        }
    }
    Value::Object(merged)
}

static SEQUENCE: AtomicU64 = AtomicU64::new(1);

fn random_hex(len: usize) -> String {
    let mut hex = uuid::Uuid::new_v4().simple().to_string();
    hex.truncate(len);
    hex
}

/// A unique trigger id shaped like Slack's (`398738663015.47445629121.803a0bc8…`).
fn trigger_id(now: DateTime<Utc>) -> String {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{}{:03}.{}.{}", now.timestamp(), n % 1000, 47_445_629_121_u64 + n, random_hex(32))
}

fn response_url(kind: &str, team_id: &str) -> String {
    let n = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("https://hooks.slack.com/{kind}/{team_id}/{}/{}", 397_700_885_554_u64 + n, random_hex(24))
}

fn slack_ts(now: DateTime<Utc>) -> String {
    format!("{}.{:06}", now.timestamp(), now.timestamp_subsec_micros())
}

fn channel_name(channel_id: &str) -> String {
    if channel_id.starts_with('D') { "directmessage".to_owned() } else { channel_id.to_lowercase() }
}

fn form_body(payload: &Value) -> String {
    form_urlencoded::Serializer::new(String::new()).append_pair("payload", &payload.to_string()).finish()
}

/// A `block_actions` interaction: `actor` clicked the button `action_id` (carrying `value`) on the bot's
/// message `message_ts` in `channel_id`.
#[must_use]
pub fn block_action(
    secret: &str,
    actor: &SlackActor,
    action_id: &str,
    value: &str,
    channel_id: &str,
    message_ts: &str,
    now: DateTime<Utc>,
) -> SignedRequest {
    let button = json!({"action_id": action_id, "block_id": "actions", "text": action_id});
    block_action_payload(secret, actor, &button, value, channel_id, message_ts, "", &[], now)
}

/// A `block_actions` interaction on a message the fake recorded: the payload carries the message's
/// text and blocks, and the button's `block_id`, text and style are taken from the block holding
/// `action_id` (an `actions` block's element or a section's accessory).
#[must_use]
pub fn block_action_on(
    secret: &str,
    actor: &SlackActor,
    action_id: &str,
    value: &str,
    message: &PostedMessage,
    now: DateTime<Utc>,
) -> SignedRequest {
    let mut button = json!({"action_id": action_id, "block_id": "actions", "text": action_id});
    for block in &message.blocks {
        let mut elements = block["elements"].as_array().into_iter().flatten().chain(Some(&block["accessory"]));
        if let Some(element) = elements.find(|e| e["action_id"] == action_id) {
            button["block_id"] = block["block_id"].clone();
            if element["text"]["text"].is_string() {
                button["text"] = element["text"]["text"].clone();
            }
            button["style"] = element["style"].clone();
            break;
        }
    }
    block_action_payload(
        secret,
        actor,
        &button,
        value,
        &message.channel,
        &message.ts,
        &message.text,
        &message.blocks,
        now,
    )
}

#[expect(clippy::too_many_arguments, reason = "private helper behind the two public builders")]
fn block_action_payload(
    secret: &str,
    actor: &SlackActor,
    button: &Value,
    value: &str,
    channel_id: &str,
    message_ts: &str,
    text: &str,
    blocks: &[Value],
    now: DateTime<Utc>,
) -> SignedRequest {
    let mut action = json!({
        "action_id": button["action_id"],
        "block_id": button["block_id"],
        "text": {"type": "plain_text", "text": button["text"], "emoji": true},
        "value": value,
        "type": "button",
        "action_ts": slack_ts(now),
    });
    if button["style"].is_string() {
        action["style"] = button["style"].clone();
    }
    let payload = json!({
        "type": "block_actions",
        "user": actor.user_json(),
        "api_app_id": actor.api_app_id,
        "token": VERIFICATION_TOKEN,
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel_id, "is_ephemeral": false},
        "trigger_id": trigger_id(now),
        "team": actor.team_json(),
        "enterprise": null,
        "is_enterprise_install": false,
        "channel": {"id": channel_id, "name": channel_name(channel_id)},
        "message": {
            "type": "message",
            "user": FakeSlack::BOT_USER_ID,
            "bot_id": FakeSlack::BOT_ID,
            "app_id": actor.api_app_id,
            "team": actor.team_id,
            "text": text,
            "ts": message_ts,
            "blocks": blocks,
        },
        "state": {"values": {}},
        "response_url": response_url("actions", &actor.team_id),
        "actions": [action],
    });
    SignedRequest::new(secret, now.timestamp(), form_body(&payload))
}

/// A `view_submission` interaction: `actor` submitted a modal with `callback_id` and
/// `private_metadata` whose inputs hold `values` (see [`input_value`] / [`merge_values`]).
#[must_use]
pub fn view_submission(
    secret: &str,
    actor: &SlackActor,
    callback_id: &str,
    private_metadata: &str,
    values: Value,
    now: DateTime<Utc>,
) -> SignedRequest {
    let view_id = format!("V0{}", random_hex(9).to_uppercase());
    let view = json!({
        "id": view_id,
        "type": "modal",
        "blocks": [],
        "private_metadata": private_metadata,
        "callback_id": callback_id,
        "title": {"type": "plain_text", "text": "Tollgate", "emoji": true},
        "submit": {"type": "plain_text", "text": "Submit", "emoji": true},
        "close": null,
    });
    view_submission_payload(secret, actor, view, values, now)
}

/// A `view_submission` of a view the fake opened (from [`FakeSlack::opened_views`]): its id, callback
/// id, private metadata, title and blocks are carried over, `state.values` is `values`.
#[must_use]
pub fn view_submission_of(
    secret: &str,
    actor: &SlackActor,
    opened_view: &Value,
    values: Value,
    now: DateTime<Utc>,
) -> SignedRequest {
    view_submission_payload(secret, actor, opened_view.clone(), values, now)
}

fn view_submission_payload(
    secret: &str,
    actor: &SlackActor,
    mut view: Value,
    values: Value,
    now: DateTime<Utc>,
) -> SignedRequest {
    let view_id = view["id"].clone();
    let defaults = [
        ("team_id", json!(actor.team_id)),
        ("private_metadata", json!("")),
        ("callback_id", json!("")),
        ("clear_on_close", json!(false)),
        ("notify_on_close", json!(false)),
        ("close", Value::Null),
        ("submit", Value::Null),
        ("previous_view_id", Value::Null),
        ("root_view_id", view_id),
        ("app_id", json!(actor.api_app_id)),
        ("external_id", json!("")),
        ("app_installed_team_id", json!(actor.team_id)),
        ("bot_id", json!(FakeSlack::BOT_ID)),
    ];
    if let Value::Object(fields) = &mut view {
        for (key, value) in defaults {
            fields.entry(key).or_insert(value);
        }
        fields.insert("state".to_owned(), json!({"values": values}));
        fields.insert("hash".to_owned(), json!(format!("{}.{}", now.timestamp(), random_hex(8))));
    }
    let payload = json!({
        "type": "view_submission",
        "team": actor.team_json(),
        "user": actor.user_json(),
        "api_app_id": actor.api_app_id,
        "token": VERIFICATION_TOKEN,
        "trigger_id": trigger_id(now),
        "view": view,
        "response_urls": [],
        "is_enterprise_install": false,
        "enterprise": null,
    });
    SignedRequest::new(secret, now.timestamp(), form_body(&payload))
}

/// A slash command: `actor` typed `{command} {text}` in `channel_id`. The form fields come in Slack's
/// order.
#[must_use]
pub fn slash_command(
    secret: &str,
    actor: &SlackActor,
    command: &str,
    text: &str,
    channel_id: &str,
    now: DateTime<Utc>,
) -> SignedRequest {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", VERIFICATION_TOKEN)
        .append_pair("team_id", &actor.team_id)
        .append_pair("team_domain", TEAM_DOMAIN)
        .append_pair("channel_id", channel_id)
        .append_pair("channel_name", &channel_name(channel_id))
        .append_pair("user_id", &actor.user_id)
        .append_pair("user_name", &actor.user_name())
        .append_pair("command", command)
        .append_pair("text", text)
        .append_pair("api_app_id", &actor.api_app_id)
        .append_pair("is_enterprise_install", "false")
        .append_pair("response_url", &response_url("commands", &actor.team_id))
        .append_pair("trigger_id", &trigger_id(now))
        .finish();
    SignedRequest::new(secret, now.timestamp(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "xoxb-test-token";
    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    fn client() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn actor() -> SlackActor {
        SlackActor::new("U0ALICE", "T0ACME", "A0TOLLGATE")
    }

    /// POSTs a JSON body the way slack-morphism does.
    async fn post_json(fake: &FakeSlack, method: &str, body: Value) -> (u16, Value) {
        let response = client()
            .post(format!("{}{method}", fake.api_url()))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// POSTs a form body.
    async fn post_form(fake: &FakeSlack, method: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response =
            client().post(format!("{}{method}", fake.api_url())).bearer_auth(TOKEN).form(form).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    #[test]
    fn sign_matches_slacks_known_answer() {
        let body = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&\
                    channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&\
                    response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgc\
                    ZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            sign(SECRET, 1_531_420_618, body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }

    #[test]
    fn signed_requests_verify_with_slack_morphism_unless_forged() {
        use slack_morphism::prelude::SlackSigningSecret;
        use slack_morphism::signature_verifier::SlackEventSignatureVerifier;

        let verifier = SlackEventSignatureVerifier::new(&SlackSigningSecret::new(SECRET.to_owned()));
        let verify = |r: &SignedRequest| verifier.verify(&r.signature, &r.body, &r.timestamp.to_string()).is_ok();
        let now = wall_clock();
        let request = slash_command(SECRET, &actor(), "/tollgate", "approve 42", "C0REVIEW", now);
        assert!(verify(&request));
        let headers = request.headers();
        assert_eq!(headers[0], ("X-Slack-Request-Timestamp", now.timestamp().to_string()));
        assert_eq!(headers[1], ("X-Slack-Signature", request.signature.clone()));
        assert_eq!(headers[2], ("Content-Type", "application/x-www-form-urlencoded".to_owned()));

        let tampered = request.clone().tampered();
        assert_eq!(tampered.body.len(), request.body.len());
        assert_eq!(tampered.body.bytes().zip(request.body.bytes()).filter(|(a, b)| a != b).count(), 1);
        assert_eq!(tampered.form_field("text").as_deref(), Some("approve 42"), "still parses");
        assert!(!verify(&tampered));
        assert!(!verify(&request.clone().signed_with("another-secret")));

        let expired = request.clone().with_timestamp(now.timestamp() - 600);
        assert_eq!(expired.signature, sign(SECRET, now.timestamp() - 600, &request.body));
        assert!(!verify(&expired), "slack-morphism rejects requests older than 5 minutes");

        let action = block_action(SECRET, &actor(), "approve", "req-1", "C0REVIEW", "1764470000.000100", now);
        assert!(verify(&action));
        let tampered = action.tampered();
        assert!(!verify(&tampered));
        assert!(tampered.payload().is_some(), "tampered payload still parses");
    }

    #[test]
    fn slash_command_has_slacks_fields_in_slacks_order() {
        let now = wall_clock();
        let request = slash_command(SECRET, &actor(), "/tollgate", "approve 42", "C0REVIEW", now);
        let fields: Vec<(String, String)> =
            form_urlencoded::parse(request.body.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "token",
                "team_id",
                "team_domain",
                "channel_id",
                "channel_name",
                "user_id",
                "user_name",
                "command",
                "text",
                "api_app_id",
                "is_enterprise_install",
                "response_url",
                "trigger_id"
            ]
        );
        assert!(request.body.contains("command=%2Ftollgate&text=approve+42&"), "{}", request.body);
        assert!(request.body.contains("response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT0ACME%2F"));
        let as_json: Map<String, Value> = fields.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        let event: slack_morphism::prelude::SlackCommandEvent = serde_json::from_value(Value::Object(as_json)).unwrap();
        assert_eq!(event.user_id.0, "U0ALICE");
        assert_eq!(event.command.0, "/tollgate");
        assert_eq!(event.text.as_deref(), Some("approve 42"));
        let other = slash_command(SECRET, &actor(), "/tollgate", "", "C0REVIEW", now);
        assert_ne!(other.form_field("trigger_id"), request.form_field("trigger_id"));
    }

    #[test]
    fn interaction_payloads_deserialize_as_slack_morphism_events() {
        use slack_morphism::prelude::{SlackInteractionActionContainer, SlackInteractionEvent};

        let now = wall_clock();
        let request = block_action(SECRET, &actor(), "approve", "req-1", "C0REVIEW", "1764470000.000100", now);
        assert!(request.body.starts_with("payload=%7B%22"), "{}", request.body);
        let payload = request.payload().unwrap();
        assert_eq!(payload["type"], "block_actions");
        assert_eq!(payload["enterprise"], Value::Null);
        assert_eq!(payload["is_enterprise_install"], false);
        assert_eq!(payload["user"]["team_id"], "T0ACME");
        let trigger = payload["trigger_id"].as_str().unwrap();
        assert_eq!(trigger.split('.').count(), 3);
        assert!(payload["response_url"].as_str().unwrap().starts_with("https://hooks.slack.com/actions/T0ACME/"));
        let SlackInteractionEvent::BlockActions(event) = serde_json::from_value(payload).unwrap() else {
            panic!("not block_actions")
        };
        assert_eq!(event.user.unwrap().id.0, "U0ALICE");
        assert_eq!(event.api_app_id.0, "A0TOLLGATE");
        let SlackInteractionActionContainer::Message(container) = event.container else { panic!("container") };
        assert_eq!(container.message_ts.0, "1764470000.000100");
        assert_eq!(container.channel_id.unwrap().0, "C0REVIEW");
        let action = &event.actions.unwrap()[0];
        assert_eq!(action.action_id.0, "approve");
        assert_eq!(action.value.as_deref(), Some("req-1"));

        let values = merge_values([
            input_value("reason", "reason_input", InputKind::PlainText("ship it".to_owned())),
            input_value("ttl", "ttl_select", InputKind::StaticSelect("1h".to_owned())),
            input_value("reason", "note", InputKind::EmptyPlainText),
            input_value("scopes", "scopes_select", InputKind::MultiStaticSelect(vec!["a".to_owned(), "b".to_owned()])),
            input_value("env", "env_select", InputKind::EmptyStaticSelect),
        ]);
        assert_eq!(values["reason"]["reason_input"], json!({"type": "plain_text_input", "value": "ship it"}));
        assert_eq!(values["reason"]["note"], json!({"type": "plain_text_input", "value": null}));
        assert_eq!(
            values["ttl"]["ttl_select"],
            json!({"type": "static_select", "selected_option": {
                "text": {"type": "plain_text", "text": "1h", "emoji": true}, "value": "1h"}})
        );
        assert_eq!(values["scopes"]["scopes_select"]["selected_options"][1]["value"], "b");
        let request = view_submission(SECRET, &actor(), "tollgate_reject", "{\"request\":42}", values, now);
        let payload = request.payload().unwrap();
        assert_eq!(payload["type"], "view_submission");
        assert_eq!(payload["view"]["type"], "modal");
        assert_eq!(payload["view"]["private_metadata"], "{\"request\":42}");
        assert_eq!(payload["response_urls"], json!([]));
        let SlackInteractionEvent::ViewSubmission(event) = serde_json::from_value(payload).unwrap() else {
            panic!("not view_submission")
        };
        let state = event.view.state_params.state.unwrap();
        assert_eq!(state.values[&"ttl".into()][&"ttl_select".into()].selected_option.as_ref().unwrap().value, "1h");
        assert_eq!(state.values[&"scopes".into()][&"scopes_select".into()].selected_options.as_ref().unwrap().len(), 2);
        let slack_morphism::prelude::SlackView::Modal(modal) = event.view.view else { panic!("modal") };
        assert_eq!(modal.callback_id.unwrap().0, "tollgate_reject");
    }

    #[tokio::test]
    async fn auth_is_checked_like_slack() {
        let fake = FakeSlack::start(TOKEN).await;
        let url = format!("{}chat.postMessage", fake.api_url());
        let body = json!({"channel": "C0REVIEW", "text": "hi"});
        let none: Value = client().post(&url).json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(none, json!({"ok": false, "error": "not_authed"}));
        let wrong = client().post(&url).bearer_auth("xoxb-wrong").json(&body).send().await.unwrap();
        assert_eq!(wrong.status(), 200);
        assert_eq!(wrong.json::<Value>().await.unwrap(), json!({"ok": false, "error": "invalid_auth"}));
        let calls = fake.calls();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].error(), Some("not_authed"));
        assert_eq!(calls[1].error(), Some("invalid_auth"));
        assert_eq!(calls[1].body["text"], "hi");
        assert!(fake.messages().is_empty());
        let (_, unknown) = post_json(&fake, "chat.delete", json!({})).await;
        assert_eq!(unknown, json!({"ok": false, "error": "unknown_method"}));
    }

    #[tokio::test]
    async fn post_message_and_update_are_tracked() {
        let fake = FakeSlack::start(TOKEN).await;
        let blocks = json!([{"type": "section", "block_id": "b1", "text": {"type": "mrkdwn", "text": "*hi*"}}]);
        let (status, first) =
            post_json(&fake, "chat.postMessage", json!({"channel": "C0REVIEW", "text": "hi", "blocks": blocks})).await;
        assert_eq!(status, 200);
        assert_eq!(first["ok"], true);
        assert_eq!(first["channel"], "C0REVIEW");
        let ts = first["ts"].as_str().unwrap().to_owned();
        let (secs, micros) = ts.split_once('.').unwrap();
        assert_eq!((secs.len(), micros.len()), (10, 6), "{ts}");
        assert_eq!(first["message"]["ts"], ts.as_str());
        assert_eq!(first["message"]["type"], "message");
        assert_eq!(first["message"]["bot_id"], FakeSlack::BOT_ID);
        assert_eq!(first["message"]["blocks"], blocks);

        // Form body, blocks as a JSON string, a thread reply.
        let (_, reply) = post_form(
            &fake,
            "chat.postMessage",
            &[("channel", "C0REVIEW"), ("thread_ts", &ts), ("blocks", &blocks.to_string())],
        )
        .await;
        assert_eq!(reply["ok"], true);
        assert!(reply["ts"].as_str().unwrap() > ts.as_str(), "ts values increase");
        assert_eq!(reply["message"]["thread_ts"], ts.as_str());
        assert_eq!(fake.calls_to("chat.postMessage")[1].body["blocks"], blocks, "decoded");

        // DM to a user id lands in a D channel.
        let (_, dm) = post_json(&fake, "chat.postMessage", json!({"channel": "U0ALICE", "text": "psst"})).await;
        assert_eq!(dm["channel"], fake.dm_channel("U0ALICE"));
        assert!(dm["channel"].as_str().unwrap().starts_with('D'));

        let (_, updated) = post_form(
            &fake,
            "chat.update",
            &[("channel", "C0REVIEW"), ("ts", &ts), ("text", "approved"), ("blocks", "[]")],
        )
        .await;
        assert_eq!(updated["ok"], true, "{updated}");
        assert_eq!(updated["channel"], "C0REVIEW");
        assert_eq!(updated["ts"], ts.as_str());
        assert_eq!(updated["text"], "approved");
        assert_eq!(updated["message"]["text"], "approved");
        assert_eq!(updated["message"]["edited"]["user"], FakeSlack::BOT_USER_ID);

        let messages = fake.messages();
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].text, "approved");
        assert!(messages[0].blocks.is_empty());
        assert_eq!(messages[0].updates, 1);
        assert_eq!(messages[1].thread_ts.as_deref(), Some(ts.as_str()));
        assert_eq!(messages[1].blocks, blocks.as_array().unwrap().clone());
        assert_eq!(fake.message("C0REVIEW", &ts).unwrap().updates, 1);

        let (_, missing) = post_json(&fake, "chat.update", json!({"channel": "C0OTHER", "ts": ts, "text": "x"})).await;
        assert_eq!(missing, json!({"ok": false, "error": "message_not_found"}));
        let (_, no_text) = post_json(&fake, "chat.postMessage", json!({"channel": "C0REVIEW"})).await;
        assert_eq!(no_text["error"], "no_text");
        fake.set_missing_channel("C0GONE");
        let (_, gone) = post_json(&fake, "chat.postMessage", json!({"channel": "C0GONE", "text": "x"})).await;
        assert_eq!(gone, json!({"ok": false, "error": "channel_not_found"}));

        let (_, ephemeral) =
            post_json(&fake, "chat.postEphemeral", json!({"channel": "C0REVIEW", "user": "U0ALICE", "text": "x"}))
                .await;
        assert_eq!(ephemeral["ok"], true);
        assert!(ephemeral["message_ts"].as_str().unwrap().contains('.'));
        assert_eq!(fake.messages().len(), 3, "ephemeral messages are not posted messages");
    }

    #[tokio::test]
    async fn views_users_and_conversations() {
        let fake = FakeSlack::start(TOKEN).await;
        let view = json!({
            "type": "modal",
            "callback_id": "tollgate_reject",
            "private_metadata": "42",
            "title": {"type": "plain_text", "text": "Reject"},
            "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why"},
                        "element": {"type": "plain_text_input", "action_id": "reason_input"}}],
        });
        let (_, no_trigger) = post_json(&fake, "views.open", json!({"view": view})).await;
        assert_eq!(no_trigger, json!({"ok": false, "error": "invalid_trigger_id"}));
        let (_, opened) =
            post_form(&fake, "views.open", &[("trigger_id", "1.2.abc"), ("view", &view.to_string())]).await;
        assert_eq!(opened["ok"], true, "{opened}");
        let v = &opened["view"];
        assert!(v["id"].as_str().unwrap().starts_with('V'));
        assert_eq!(v["team_id"], FakeSlack::TEAM_ID);
        assert_eq!(v["callback_id"], "tollgate_reject");
        assert_eq!(v["private_metadata"], "42");
        assert_eq!(v["blocks"], view["blocks"]);
        assert_eq!(v["state"], json!({"values": {}}));
        assert!(v["hash"].is_string());
        assert_eq!(fake.opened_views(), vec![v.clone()]);

        let submission = view_submission_of(
            SECRET,
            &actor(),
            v,
            input_value("reason", "reason_input", InputKind::PlainText("no".to_owned())),
            wall_clock(),
        );
        let payload = submission.payload().unwrap();
        assert_eq!(payload["view"]["id"], v["id"]);
        assert_eq!(payload["view"]["callback_id"], "tollgate_reject");
        assert_eq!(payload["view"]["state"]["values"]["reason"]["reason_input"]["value"], "no");

        fake.add_user("Alice@Example.com", "U0ALICE", "T0ACME");
        let found: Value = client()
            .get(format!("{}users.lookupByEmail?email=alice%40example.com", fake.api_url()))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(found["ok"], true);
        assert_eq!(found["user"]["id"], "U0ALICE");
        assert_eq!(found["user"]["team_id"], "T0ACME");
        assert_eq!(found["user"]["profile"]["email"], "Alice@Example.com");
        assert_eq!(fake.calls_to("users.lookupByEmail")[0].http_method, "GET");
        assert_eq!(fake.calls_to("users.lookupByEmail")[0].body, json!({"email": "alice@example.com"}));
        let (_, missing) = post_form(&fake, "users.lookupByEmail", &[("email", "bob@example.com")]).await;
        assert_eq!(missing, json!({"ok": false, "error": "users_not_found"}));

        let (_, first) = post_form(&fake, "conversations.open", &[("users", "U0ALICE")]).await;
        let id = first["channel"]["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with('D'));
        assert_eq!(first, json!({"ok": true, "channel": {"id": id}}));
        let (_, again) = post_json(&fake, "conversations.open", json!({"users": ["U0ALICE"]})).await;
        assert_eq!(again, json!({"ok": true, "no_op": true, "already_open": true, "channel": {"id": id}}));
        let (_, group) = post_json(&fake, "conversations.open", json!({"users": "U0BOB,U0ALICE"})).await;
        assert!(group["channel"]["id"].as_str().unwrap().starts_with('G'));
        let (_, none) = post_json(&fake, "conversations.open", json!({})).await;
        assert_eq!(none["error"], "users_list_not_supplied");
    }

    #[tokio::test]
    async fn failures_can_be_injected() {
        let fake = FakeSlack::start(TOKEN).await;
        let body = json!({"channel": "C0REVIEW", "text": "hi"});
        fake.fail_next("chat.postMessage", Failure::RateLimited { retry_after_secs: 7 }, 2);
        fake.fail_next("chat.postMessage", Failure::ServerError(503), 1);
        for _ in 0..2 {
            let response = client()
                .post(format!("{}chat.postMessage", fake.api_url()))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 429);
            assert_eq!(response.headers()["retry-after"], "7");
            assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
            assert_eq!(response.json::<Value>().await.unwrap(), json!({"ok": false, "error": "ratelimited"}));
        }
        assert_eq!(post_json(&fake, "chat.postMessage", body.clone()).await.0, 503);
        assert_eq!(post_json(&fake, "chat.postMessage", body.clone()).await.1["ok"], true);

        fake.fail_always("*", Failure::SlackError("fatal_error".to_owned()));
        assert_eq!(post_json(&fake, "chat.update", json!({})).await.1["error"], "fatal_error");
        assert_eq!(post_json(&fake, "chat.postMessage", body.clone()).await.1["error"], "fatal_error");
        fake.heal();
        assert_eq!(post_json(&fake, "chat.postMessage", body.clone()).await.1["ok"], true);

        let statuses: Vec<u16> = fake.calls_to("chat.postMessage").iter().map(|c| c.status).collect();
        assert_eq!(statuses, [429, 429, 503, 200, 200, 200]);
        let ok = fake.wait_for("chat.postMessage", 2, Duration::from_millis(50)).await.unwrap();
        assert_eq!(ok.len(), 2);
        let err = fake.wait_for("chat.postMessage", 3, Duration::from_millis(200)).await.unwrap_err().to_string();
        assert!(err.contains("got 2") && err.contains("chat.postMessage 429 ratelimited"), "{err}");
    }

    #[tokio::test]
    async fn wait_for_wakes_up_on_a_new_call() {
        let fake = FakeSlack::start(TOKEN).await;
        let url = format!("{}chat.postMessage", fake.api_url());
        let post = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            client().post(url).bearer_auth(TOKEN).form(&[("channel", "C1"), ("text", "x")]).send().await.unwrap();
        });
        let calls = fake.wait_for("chat.postMessage", 1, Duration::from_secs(5)).await.unwrap();
        assert_eq!(calls[0].body, json!({"channel": "C1", "text": "x"}));
        assert_eq!(calls[0].content_type.as_deref(), Some("application/x-www-form-urlencoded"));
        post.await.unwrap();
    }

    #[tokio::test]
    async fn block_action_on_a_posted_message_carries_its_button() {
        let fake = FakeSlack::start(TOKEN).await;
        let blocks = json!([
            {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "Deploy?"}},
            {"type": "actions", "block_id": "decide", "elements": [
                {"type": "button", "action_id": "approve", "text": {"type": "plain_text", "text": "Approve"},
                 "style": "primary", "value": "req-1"},
                {"type": "button", "action_id": "reject", "text": {"type": "plain_text", "text": "Reject"},
                 "style": "danger", "value": "req-1"}]}
        ]);
        post_json(&fake, "chat.postMessage", json!({"channel": "C0REVIEW", "text": "Deploy?", "blocks": blocks})).await;
        let message = &fake.messages()[0];
        let request = block_action_on(SECRET, &actor(), "reject", "req-1", message, wall_clock());
        let payload = request.payload().unwrap();
        let action = &payload["actions"][0];
        assert_eq!(action["block_id"], "decide");
        assert_eq!(action["style"], "danger");
        assert_eq!(action["text"], json!({"type": "plain_text", "text": "Reject", "emoji": true}));
        assert_eq!(payload["message"]["ts"], message.ts.as_str());
        assert_eq!(payload["message"]["blocks"], blocks);
        assert_eq!(payload["container"]["channel_id"], "C0REVIEW");
        let event: slack_morphism::prelude::SlackInteractionEvent = serde_json::from_value(payload).unwrap();
        assert!(matches!(event, slack_morphism::prelude::SlackInteractionEvent::BlockActions(_)));
    }

    /// Drives the fake through slack-morphism itself, so the response shapes are proven to deserialize.
    #[tokio::test]
    async fn slack_morphism_client_understands_the_fake() {
        use slack_morphism::errors::SlackClientError;
        use slack_morphism::prelude::*;

        let _ = rustls::crypto::ring::default_provider().install_default();
        let fake = FakeSlack::start(TOKEN).await;
        fake.add_user("alice@example.com", "U0ALICE", "T0ACME");
        let connector = SlackClientHyperConnector::with_connector(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .unwrap()
                .https_or_http()
                .enable_http1()
                .build(),
        )
        .with_slack_api_url(&fake.api_url());
        let client = SlackClient::new(connector);
        let token = SlackApiToken::new(SlackApiTokenValue::new(TOKEN.to_owned()));
        let session = client.open_session(&token);

        let blocks: Vec<SlackBlock> = serde_json::from_value(json!([
            {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "*Deploy?*"}},
            {"type": "actions", "block_id": "decide", "elements": [
                {"type": "button", "action_id": "approve", "text": {"type": "plain_text", "text": "Approve"},
                 "style": "primary", "value": "req-1"}]}
        ]))
        .unwrap();
        let content = SlackMessageContent::new().with_text("Deploy?".to_owned()).with_blocks(blocks.clone());
        let posted = session
            .chat_post_message(&SlackApiChatPostMessageRequest::new("C0REVIEW".into(), content.clone()))
            .await
            .unwrap();
        assert_eq!(posted.channel.0, "C0REVIEW");
        assert_eq!(posted.message.content.blocks.as_ref().map(Vec::len), Some(2));
        assert_eq!(posted.message.sender.bot_id.as_ref().unwrap().0, FakeSlack::BOT_ID);
        let call = &fake.calls_to("chat.postMessage")[0];
        assert_eq!(call.content_type.as_deref(), Some("application/json; charset=utf-8"));
        assert_eq!(call.http_method, "POST");

        let dm = session
            .chat_post_message(
                &SlackApiChatPostMessageRequest::new("U0ALICE".into(), content.clone())
                    .with_thread_ts(posted.ts.clone()),
            )
            .await
            .unwrap();
        assert_eq!(dm.channel.0, fake.dm_channel("U0ALICE"));
        assert_eq!(dm.message.origin.thread_ts, Some(posted.ts.clone()));

        let updated = session
            .chat_update(&SlackApiChatUpdateRequest::new(
                posted.channel.clone(),
                SlackMessageContent::new().with_text("Approved".to_owned()).with_blocks(vec![]),
                posted.ts.clone(),
            ))
            .await
            .unwrap();
        assert_eq!(updated.ts, posted.ts);
        assert_eq!(updated.message.content.text.as_deref(), Some("Approved"));
        assert_eq!(fake.message("C0REVIEW", &posted.ts.0).unwrap().updates, 1);
        let err = session
            .chat_update(&SlackApiChatUpdateRequest::new(
                "C0REVIEW".into(),
                SlackMessageContent::new().with_text("x".to_owned()),
                "1.000001".into(),
            ))
            .await
            .unwrap_err();
        assert!(matches!(&err, SlackClientError::ApiError(e) if e.code == "message_not_found"), "{err:?}");

        session
            .chat_post_ephemeral(&SlackApiChatPostEphemeralRequest::new(
                "C0REVIEW".into(),
                "U0ALICE".into(),
                SlackMessageContent::new().with_text("only you".to_owned()),
            ))
            .await
            .unwrap();

        let view: SlackView = serde_json::from_value(json!({
            "type": "modal",
            "callback_id": "tollgate_reject",
            "private_metadata": "42",
            "title": {"type": "plain_text", "text": "Reject"},
            "submit": {"type": "plain_text", "text": "Reject"},
            "blocks": [{"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Why"},
                        "element": {"type": "plain_text_input", "action_id": "reason_input"}}],
        }))
        .unwrap();
        let opened = session.views_open(&SlackApiViewsOpenRequest::new("1.2.abc".into(), view.clone())).await.unwrap();
        assert!(opened.view.state_params.id.0.starts_with('V'));
        let SlackView::Modal(modal) = opened.view.view else { panic!("modal") };
        assert_eq!(modal.private_metadata.as_deref(), Some("42"));
        let err = session.views_open(&SlackApiViewsOpenRequest::new("".into(), view)).await.unwrap_err();
        assert!(matches!(&err, SlackClientError::ApiError(e) if e.code == "invalid_trigger_id"), "{err:?}");

        let user = session
            .users_lookup_by_email(&SlackApiUsersLookupByEmailRequest::new(EmailAddress(
                "alice@example.com".to_owned(),
            )))
            .await
            .unwrap();
        assert_eq!(user.user.id.0, "U0ALICE");
        assert_eq!(user.user.profile.unwrap().email.unwrap().0, "alice@example.com");
        let lookup = &fake.calls_to("users.lookupByEmail")[0];
        assert_eq!((lookup.http_method.as_str(), lookup.content_type.as_deref()), ("GET", None));
        let err = session
            .users_lookup_by_email(&SlackApiUsersLookupByEmailRequest::new(EmailAddress("bob@example.com".to_owned())))
            .await
            .unwrap_err();
        assert!(matches!(&err, SlackClientError::ApiError(e) if e.code == "users_not_found"), "{err:?}");

        let open = SlackApiConversationsOpenRequest::new().with_users(vec!["U0ALICE".into()]);
        let conversation = session.conversations_open(&open).await.unwrap();
        assert_eq!(conversation.channel.id.0, fake.dm_channel("U0ALICE"));
        let full = session.conversations_open_full(&open).await.unwrap();
        assert_eq!(full.channel.id, conversation.channel.id);
        assert_eq!(full.already_open, Some(true));
        assert_eq!(fake.calls_to("conversations.open")[0].body["users"], json!(["U0ALICE"]));

        fake.fail_next("chat.postMessage", Failure::RateLimited { retry_after_secs: 7 }, 1);
        let request = SlackApiChatPostMessageRequest::new("C0REVIEW".into(), content.clone());
        match session.chat_post_message(&request).await {
            Err(SlackClientError::RateLimitError(e)) => {
                assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
                assert_eq!(e.code.as_deref(), Some("ratelimited"));
            }
            other => panic!("expected a rate limit error, got {other:?}"),
        }
        fake.fail_next("chat.postMessage", Failure::ServerError(503), 1);
        let err = session.chat_post_message(&request).await.unwrap_err();
        assert!(matches!(&err, SlackClientError::HttpError(e) if e.status_code == 503), "{err:?}");
        fake.fail_next("chat.postMessage", Failure::SlackError("channel_is_archived".to_owned()), 1);
        let err = session.chat_post_message(&request).await.unwrap_err();
        assert!(matches!(&err, SlackClientError::ApiError(e) if e.code == "channel_is_archived"), "{err:?}");
        session.chat_post_message(&request).await.unwrap();

        let wrong = SlackApiToken::new(SlackApiTokenValue::new("xoxb-wrong".to_owned()));
        let err = client.open_session(&wrong).chat_post_message(&request).await.unwrap_err();
        assert!(matches!(&err, SlackClientError::ApiError(e) if e.code == "invalid_auth"), "{err:?}");

        // slack-morphism joins `{base}/{method}`, so the trailing slash doubles up.
        assert!(fake.calls().iter().all(|c| KNOWN_METHODS.contains(&c.method.as_str())));
    }
}
