//! The Slack Web API client: posts and updates approval messages, answers ephemerally, opens
//! modals and DMs, and looks people up by email.
//!
//! slack-morphism does the HTTP and the request models; its rate controller (throttling and
//! automatic retries on 429) stays off, because every call runs inside the outbox, which retries
//! with back-off and honours `Retry-After`. Each call is bounded by the configured timeout, and
//! failures become [`ConnectorError`]s whose messages hold the method and Slack's error code or
//! the kind of failure — never the token, request content or response bodies.
//!
//! A call that times out may still have taken effect at Slack (`chat.postMessage` has no
//! idempotency key), so a retried post can show twice; that is preferred to losing it.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use slack_morphism::errors::SlackClientError;
use slack_morphism::prelude::*;

use crate::outbound::{ConfigError, ConnectorError, MAX_RETRY_AFTER};

use super::settings::ResolvedSlack;

/// Slack error codes worth retrying (Slack's side is overloaded or failing); every other
/// `ok: false` answer is permanent.
const RETRYABLE_CODES: &[&str] =
    &["ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"];
/// Longest transport error detail kept in a message, in characters.
const MAX_DETAIL_CHARS: usize = 120;

/// Where `chat.postMessage` put a message: what `chat.update` and thread replies need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    /// The channel id (a `D…` id for a DM, even when posted to a user id).
    pub channel: String,
    /// The message timestamp, Slack's message id within the channel.
    pub ts: String,
}

/// A Slack Web API client authenticated with the bot token.
///
/// `Debug` shows neither the token nor the HTTP client.
pub struct SlackApi {
    client: SlackClient<SlackClientHyperHttpsConnector>,
    token: SlackApiToken,
    api_url: String,
    timeout: Duration,
}

impl fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackApi")
            .field("api_url", &self.api_url)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SlackApi {
    /// Builds the client: rustls on the ring provider with the platform's certificate verifier
    /// (as [`crate::http`] does, so the same trust store and private CAs apply), HTTP/1.1
    /// and HTTP/2, `http://` allowed only because `api_url` says so (a local fake in tests).
    /// Nothing is sent yet.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] on `api_url` when TLS cannot be set up (no usable root
    /// certificates).
    pub fn new(settings: &ResolvedSlack) -> Result<Self, ConfigError> {
        let tls_error =
            |e: rustls::Error| ConfigError::Invalid { field: "api_url", reason: format!("cannot set up TLS: {e}") };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider.clone()).map_err(tls_error)?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .dangerous() // not dangerous: this installs the platform verifier
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        // slack-morphism appends "/{method}" itself; our normalized base ends with '/'. No
        // `with_rate_control`: throttling and retries belong to the outbox.
        let connector =
            SlackClientHyperConnector::with_connector(https).with_slack_api_url(settings.api_url.trim_end_matches('/'));
        Ok(Self {
            client: SlackClient::new(connector),
            token: SlackApiToken::new(settings.bot_token.expose_secret().into()),
            api_url: settings.api_url.clone(),
            timeout: settings.timeout,
        })
    }

    /// `chat.postMessage`: posts `content` to `channel` (a channel id, or a user id for the
    /// app's DM), in the thread of `thread_ts` if given. Links are not unfurled and names are
    /// not turned into mentions.
    ///
    /// # Errors
    /// [`ConnectorError`] as classified by [`classify`].
    pub async fn post_message(
        &self,
        channel: &str,
        content: SlackMessageContent,
        thread_ts: Option<&str>,
    ) -> Result<PostedMessage, ConnectorError> {
        #[derive(Deserialize)]
        struct Posted {
            channel: String,
            ts: String,
        }
        let request = SlackApiChatPostMessageRequest::new(channel.into(), content)
            .opt_thread_ts(thread_ts.map(SlackTs::from))
            .with_link_names(false)
            .with_unfurl_links(false)
            .with_unfurl_media(false);
        let posted: Posted = self.post("chat.postMessage", &request).await?;
        Ok(PostedMessage { channel: posted.channel, ts: posted.ts })
    }

    /// `chat.update`: replaces the message `ts` in `channel` with `content` (give its blocks new
    /// block ids).
    ///
    /// # Errors
    /// [`ConnectorError`] as classified by [`classify`].
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        content: SlackMessageContent,
    ) -> Result<(), ConnectorError> {
        let request = SlackApiChatUpdateRequest::new(channel.into(), content, ts.into()).with_link_names(false);
        self.post::<_, Ignored>("chat.update", &request).await.map(drop)
    }

    /// `chat.postEphemeral`: shows `text` (mrkdwn, escape user input) to `user` only, in `channel`.
    ///
    /// # Errors
    /// [`ConnectorError`] as classified by [`classify`].
    pub async fn post_ephemeral(&self, channel: &str, user: &str, text: &str) -> Result<(), ConnectorError> {
        let content = SlackMessageContent::new().with_text(text.to_owned());
        let request =
            SlackApiChatPostEphemeralRequest::new(channel.into(), user.into(), content).with_link_names(false);
        self.post::<_, Ignored>("chat.postEphemeral", &request).await.map(drop)
    }

    /// `views.open`: opens `view` for the interaction that produced `trigger_id` (valid for 3 s).
    ///
    /// # Errors
    /// [`ConnectorError`] as classified by [`classify`].
    pub async fn open_view(&self, trigger_id: &str, view: SlackView) -> Result<(), ConnectorError> {
        let request = SlackApiViewsOpenRequest::new(trigger_id.into(), view);
        self.post::<_, Ignored>("views.open", &request).await.map(drop)
    }

    /// `users.lookupByEmail`: the user id and team id of the Slack user with `email`, `None` when
    /// there is none (`users_not_found`). Needs the `users:read.email` scope.
    ///
    /// # Errors
    /// [`ConnectorError`] as classified by [`classify`].
    pub async fn lookup_user_by_email(&self, email: &str) -> Result<Option<(String, Option<String>)>, ConnectorError> {
        #[derive(Deserialize)]
        struct Found {
            user: FoundUser,
        }
        #[derive(Deserialize)]
        struct FoundUser {
            id: String,
            #[serde(default)]
            team_id: Option<String>,
        }
        const METHOD: &str = "users.lookupByEmail";
        // A GET with the address in the query: mark the URL sensitive so slack-morphism's debug
        // log shows a hash instead of the address.
        let span = tracing::debug_span!("slack users.lookupByEmail");
        let context = SlackClientApiCallContext {
            rate_control_params: None,
            token: Some(&self.token),
            tracing_span: &span,
            is_sensitive_url: true,
        };
        let params = [("email", Some(email))];
        let call = self.client.http_api.connector.http_get::<Answer<Found>, _, _>(METHOD, &params, context);
        match self.bounded(METHOD, call).await? {
            Ok(answer) => {
                let found = answer.into_body(METHOD)?;
                Ok(Some((found.user.id, found.user.team_id)))
            }
            Err(SlackClientError::ApiError(e)) if e.code == "users_not_found" => Ok(None),
            Err(e) => Err(classify(METHOD, &e)),
        }
    }

    /// `conversations.open`: the id of the app's DM channel with `user_id`.
    ///
    /// # Errors
    /// [`ConnectorError`] as classified by [`classify`].
    pub async fn open_dm(&self, user_id: &str) -> Result<String, ConnectorError> {
        #[derive(Deserialize)]
        struct Opened {
            channel: OpenedChannel,
        }
        #[derive(Deserialize)]
        struct OpenedChannel {
            id: String,
        }
        let request = SlackApiConversationsOpenRequest::new().with_users(vec![user_id.into()]);
        let opened: Opened = self.post("conversations.open", &request).await?;
        Ok(opened.channel.id)
    }

    /// POSTs `request` as JSON to `method` and decodes only the fields we use, so an answer that
    /// took effect is never reported as a failure because some unrelated field did not parse.
    async fn post<RQ, RS>(&self, method: &'static str, request: &RQ) -> Result<RS, ConnectorError>
    where
        RQ: Serialize + Send + Sync,
        RS: DeserializeOwned + Send,
    {
        let session = self.client.open_session(&self.token);
        let call = session.http_session_api.http_post::<RQ, Answer<RS>>(method, request, None);
        self.bounded(method, call).await?.map_err(|e| classify(method, &e))?.into_body(method)
    }

    /// Runs `call` within the timeout; the inner result is slack-morphism's.
    async fn bounded<RS>(
        &self,
        method: &str,
        call: impl Future<Output = Result<RS, SlackClientError>>,
    ) -> Result<Result<RS, SlackClientError>, ConnectorError> {
        tokio::time::timeout(self.timeout, call).await.map_err(|_| ConnectorError::Retryable {
            message: format!("slack {method}: no answer within {}", humantime::format_duration(self.timeout)),
            retry_after: None,
        })
    }
}

/// A Web API answer. slack-morphism reports `ok: false` only when `error` is present, and
/// decodes a 200 answer that is not JSON as `{}`; requiring and checking `ok` catches both.
#[derive(Deserialize)]
struct Answer<T> {
    ok: bool,
    #[serde(flatten)]
    body: T,
}

impl<T> Answer<T> {
    fn into_body(self, method: &str) -> Result<T, ConnectorError> {
        if self.ok {
            Ok(self.body)
        } else {
            Err(ConnectorError::Permanent { message: format!("slack {method}: answer without ok") })
        }
    }
}

/// An answer whose content we do not need.
#[derive(Deserialize)]
struct Ignored {}

/// Maps a slack-morphism error to a [`ConnectorError`]: HTTP 429 → retryable with Slack's
/// `Retry-After` (capped at [`MAX_RETRY_AFTER`]); HTTP 5xx and 408, connection and transport
/// failures, and the error codes `ratelimited`, `internal_error`, `fatal_error`,
/// `service_unavailable`, `request_timeout` → retryable; any other Slack error code
/// (`channel_not_found`, `not_in_channel`, `invalid_auth`, …), other HTTP statuses and
/// undecodable answers → permanent.
///
/// The message is `"slack {method}: {code or kind}"`: never a response body, request content or
/// the token.
#[must_use]
pub fn classify(method: &str, error: &SlackClientError) -> ConnectorError {
    let retryable = |what: &str, retry_after: Option<Duration>| ConnectorError::Retryable {
        message: format!("slack {method}: {what}"),
        retry_after,
    };
    let permanent = |what: &str| ConnectorError::Permanent { message: format!("slack {method}: {what}") };
    match error {
        SlackClientError::RateLimitError(e) => {
            retryable("rate limited (HTTP 429)", e.retry_after.map(|d| d.min(MAX_RETRY_AFTER)))
        }
        SlackClientError::ApiError(e) => {
            let code = safe_code(&e.code);
            if RETRYABLE_CODES.contains(&code) { retryable(code, None) } else { permanent(code) }
        }
        SlackClientError::HttpError(e) => {
            let status = e.status_code.as_u16();
            let what = format!("HTTP {status}");
            if e.status_code.is_server_error() || status == 408 { retryable(&what, None) } else { permanent(&what) }
        }
        SlackClientError::HttpProtocolError(e) => {
            let detail = e.cause.as_deref().map(|c| format!(": {}", innermost(c))).unwrap_or_default();
            retryable(&format!("connection failed{detail}"), None)
        }
        SlackClientError::SystemError(e) => {
            let detail = e.cause.as_deref().map(|c| format!(": {}", innermost(c))).unwrap_or_default();
            retryable(&format!("transport error{detail}"), None)
        }
        SlackClientError::EndOfStream(_) => retryable("connection closed", None),
        // The body is in the error; only the fact is reported.
        SlackClientError::ProtocolError(_) => permanent("undecodable answer"),
        SlackClientError::SocketModeProtocolError(_) => permanent("socket mode error"),
    }
}

/// Slack's error code if it looks like one (`snake_case`, short), so a misbehaving proxy or fake
/// cannot put arbitrary text into our messages.
fn safe_code(code: &str) -> &str {
    let plausible = !code.is_empty()
        && code.len() <= 64
        && code.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.'));
    if plausible { code } else { "unrecognised error code" }
}

/// The innermost cause's message, shortened: "Connection refused (os error 111)", "invalid peer
/// certificate: UnknownIssuer". Transport errors carry neither headers nor bodies.
fn innermost(error: &(dyn std::error::Error + Send + Sync + 'static)) -> String {
    let mut current: &(dyn std::error::Error + 'static) = error;
    while let Some(source) = current.source() {
        current = source;
    }
    super::blocks::truncate(&current.to_string(), MAX_DETAIL_CHARS)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use axum::Json;
    use axum::body::Bytes;
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use secrecy::SecretString;
    use serde_json::{Value, json};

    use super::*;

    const TOKEN: &str = "xoxb-test-0123456789-abcdef";

    /// One request as the fake Slack saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        authorization: Option<String>,
        query: HashMap<String, String>,
        body: Value,
    }

    type Log = Arc<Mutex<Vec<Seen>>>;

    /// A fake Slack Web API. The channel (or email) in the request picks the answer.
    async fn fake_slack(
        State(log): State<Log>,
        Path(method): Path<String>,
        Query(query): Query<HashMap<String, String>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let authorization = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
        log.lock().unwrap().push(Seen {
            method: method.clone(),
            authorization,
            query: query.clone(),
            body: body.clone(),
        });
        let channel = body["channel"].as_str().unwrap_or_default().to_owned();
        match (method.as_str(), channel.as_str()) {
            (_, "C_RATE") => (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "7")],
                Json(json!({"ok": false, "error": "ratelimited"})),
            )
                .into_response(),
            (_, "C_RATE_LONG") => {
                (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "999999")], "slow down").into_response()
            }
            (_, "C_GONE") => Json(json!({"ok": false, "error": "channel_not_found"})).into_response(),
            (_, "C_BUSY") => Json(json!({"ok": false, "error": "internal_error"})).into_response(),
            (_, "C_ODD") => Json(json!({"ok": false, "error": "Token xoxb-leak is <bad>"})).into_response(),
            (_, "C_DOWN") => (StatusCode::SERVICE_UNAVAILABLE, "upstream body with details").into_response(),
            (_, "C_FORBIDDEN") => (StatusCode::FORBIDDEN, "no").into_response(),
            (_, "C_HTML") => ([("content-type", "text/html")], "<html>captive portal</html>").into_response(),
            (_, "C_NOT_OK") => Json(json!({"ok": false})).into_response(),
            (_, "C_SLOW") => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Json(json!({"ok": true})).into_response()
            }
            ("chat.postMessage", _) => Json(json!({
                "ok": true, "channel": channel, "ts": "1700000000.000100",
                "message": {"type": "message", "subtype": "bot_message", "text": "x", "ts": "1700000000.000100",
                            "blocks": [{"type": "future_block", "anything": [1, 2]}]}
            }))
            .into_response(),
            ("chat.update", _) => {
                Json(json!({"ok": true, "channel": channel, "ts": body["ts"], "text": "x"})).into_response()
            }
            ("chat.postEphemeral", _) => Json(json!({"ok": true, "message_ts": "1700000000.000200"})).into_response(),
            ("views.open", _) => Json(json!({"ok": true, "view": {"id": "V1", "type": "modal"}})).into_response(),
            ("users.lookupByEmail", _) => match query.get("email").map(String::as_str) {
                Some("ada@example.com") => {
                    Json(json!({"ok": true, "user": {"id": "U1", "team_id": "T1", "name": "ada"}})).into_response()
                }
                _ => Json(json!({"ok": false, "error": "users_not_found"})).into_response(),
            },
            ("conversations.open", _) => {
                Json(json!({"ok": true, "channel": {"id": "D1"}, "already_open": true})).into_response()
            }
            _ => Json(json!({"ok": false, "error": "unknown_method"})).into_response(),
        }
    }

    async fn spawn_fake() -> (SocketAddr, Log) {
        let log = Log::default();
        let app = axum::Router::new()
            .route("/api/{method}", axum::routing::post(fake_slack).get(fake_slack))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, log)
    }

    fn settings(addr: SocketAddr, timeout: Duration) -> ResolvedSlack {
        ResolvedSlack {
            bot_token: SecretString::from(TOKEN),
            signing_secret: SecretString::from("signing-secret"),
            api_url: format!("http://{addr}/api/"),
            team_id: None,
            app_id: None,
            approvals_channel: None,
            lookup_by_email: true,
            timeout,
        }
    }

    async fn api() -> (SlackApi, Log) {
        let (addr, log) = spawn_fake().await;
        (SlackApi::new(&settings(addr, Duration::from_secs(5))).unwrap(), log)
    }

    fn text(s: &str) -> SlackMessageContent {
        SlackMessageContent::new().with_text(s.to_owned())
    }

    #[tokio::test]
    async fn calls_send_the_bot_token_and_decode_what_we_use() {
        let (api, log) = api().await;
        let posted = api.post_message("C1", text("hello"), Some("1699999999.000001")).await.unwrap();
        assert_eq!(posted, PostedMessage { channel: "C1".to_owned(), ts: "1700000000.000100".to_owned() });
        api.update_message("C1", &posted.ts, text("decided")).await.unwrap();
        api.post_ephemeral("C1", "U1", "only you").await.unwrap();
        api.open_view("trigger-1", super::super::blocks::request_modal(&[], None)).await.unwrap();
        assert_eq!(
            api.lookup_user_by_email("ada@example.com").await.unwrap(),
            Some(("U1".to_owned(), Some("T1".to_owned())))
        );
        assert_eq!(api.lookup_user_by_email("nobody@example.com").await.unwrap(), None);
        assert_eq!(api.open_dm("U1").await.unwrap(), "D1");

        let seen = log.lock().unwrap().clone();
        let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
        assert_eq!(
            methods,
            [
                "chat.postMessage",
                "chat.update",
                "chat.postEphemeral",
                "views.open",
                "users.lookupByEmail",
                "users.lookupByEmail",
                "conversations.open"
            ]
        );
        let bearer = format!("Bearer {TOKEN}");
        assert!(seen.iter().all(|s| s.authorization.as_deref() == Some(bearer.as_str())), "{seen:?}");
        let post = &seen[0].body;
        assert_eq!(post["channel"], "C1");
        assert_eq!(post["text"], "hello");
        assert_eq!(post["thread_ts"], "1699999999.000001");
        assert_eq!((post["unfurl_links"].clone(), post["unfurl_media"].clone()), (json!(false), json!(false)));
        assert_eq!(post["link_names"], false);
        assert_eq!(seen[1].body["ts"], "1700000000.000100");
        assert_eq!(seen[2].body["user"], "U1");
        assert_eq!(seen[3].body["trigger_id"], "trigger-1");
        assert_eq!(seen[3].body["view"]["type"], "modal");
        assert_eq!(seen[4].query.get("email").map(String::as_str), Some("ada@example.com"));
        assert_eq!(seen[6].body["users"], json!(["U1"]));
    }

    #[tokio::test]
    async fn failures_are_classified_for_the_outbox() {
        let (api, _log) = api().await;
        let post = |channel: &'static str| {
            let api = &api;
            async move { api.post_message(channel, text("x"), None).await.unwrap_err() }
        };
        let retryable = |message: &str, retry_after: Option<u64>| ConnectorError::Retryable {
            message: format!("slack chat.postMessage: {message}"),
            retry_after: retry_after.map(Duration::from_secs),
        };
        let permanent =
            |message: &str| ConnectorError::Permanent { message: format!("slack chat.postMessage: {message}") };

        assert_eq!(post("C_RATE").await, retryable("rate limited (HTTP 429)", Some(7)));
        assert_eq!(
            post("C_RATE_LONG").await,
            ConnectorError::Retryable {
                message: "slack chat.postMessage: rate limited (HTTP 429)".to_owned(),
                retry_after: Some(MAX_RETRY_AFTER)
            }
        );
        assert_eq!(post("C_GONE").await, permanent("channel_not_found"));
        assert_eq!(post("C_BUSY").await, retryable("internal_error", None));
        assert_eq!(post("C_ODD").await, permanent("unrecognised error code"));
        assert_eq!(post("C_DOWN").await, retryable("HTTP 503", None));
        assert_eq!(post("C_FORBIDDEN").await, permanent("HTTP 403"));
        assert_eq!(post("C_HTML").await, permanent("undecodable answer"));
        // `{"ok": false}` without an error code is not a success.
        let err = api.update_message("C_NOT_OK", "1.2", text("x")).await.unwrap_err();
        assert_eq!(err, ConnectorError::Permanent { message: "slack chat.update: answer without ok".to_owned() });
        // A 200 that is not JSON is not a success either (slack-morphism would decode it as `{}`).
        let err = api.update_message("C_HTML", "1.2", text("x")).await.unwrap_err();
        assert_eq!(err, ConnectorError::Permanent { message: "slack chat.update: undecodable answer".to_owned() });
    }

    #[tokio::test]
    async fn timeouts_and_unreachable_servers_are_retryable() {
        let (addr, _log) = spawn_fake().await;
        let api = SlackApi::new(&settings(addr, Duration::from_millis(200))).unwrap();
        let err = api.post_message("C_SLOW", text("x"), None).await.unwrap_err();
        assert_eq!(
            err,
            ConnectorError::Retryable {
                message: "slack chat.postMessage: no answer within 200ms".to_owned(),
                retry_after: None
            }
        );

        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let api = SlackApi::new(&settings(closed, Duration::from_secs(5))).unwrap();
        match api.open_dm("U1").await.unwrap_err() {
            ConnectorError::Retryable { message, retry_after: None } => {
                assert!(message.starts_with("slack conversations.open: connection failed"), "{message}");
                assert!(!message.contains(TOKEN));
            }
            other => panic!("expected a retryable error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn debug_and_errors_never_show_the_token() {
        let (api, _log) = api().await;
        let debug = format!("{api:?}");
        assert!(!debug.contains(TOKEN) && debug.contains("api_url"), "{debug}");
        for channel in ["C_RATE", "C_GONE", "C_ODD", "C_DOWN", "C_HTML"] {
            let err = api.post_message(channel, text("secret request content"), None).await.unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains("xoxb-") && !shown.contains("secret request content"), "{shown}");
            assert!(!shown.contains("upstream body") && !shown.contains("captive portal"), "{shown}");
        }
    }
}
