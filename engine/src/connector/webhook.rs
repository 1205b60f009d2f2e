//! The webhook connector: POSTs a signed JSON action to a receiver that performs it on the SaaS.
//!
//! The receiver answers 2xx (optionally with `{"reference": "..."}`) once the effect is in place,
//! 4xx when retrying cannot help, and 408/429/5xx when it can. The signed delivery and the status
//! classification are shared with the notification webhook channel.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{ActionOutcome, ConfigError, Connector, ConnectorAction, ConnectorError, Redacted, read_secret_file};
use crate::clock::{Clock, SystemClock};
use crate::signing;

/// Timeout of one webhook call when the settings name none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest configurable timeout; longer waits belong in the receiver (answer 2xx, work async).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Most bytes of a 2xx response body that are read to look for `reference`.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest `reference` kept, in characters.
pub const MAX_REFERENCE_CHARS: usize = 200;
/// Longest `Retry-After` honoured; a receiver cannot park a call for longer than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Settings of a webhook endpoint, shared by the webhook connector and the webhook notification
/// channel. Exactly one of `secret`, `secret_file` and `secret_env` must be set.
///
/// `Debug` shows neither the secret nor the URL's path and query (which often embed tokens).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// Receiver URL, `https://` (or `http://` on a trusted network).
    pub url: String,
    /// The signing secret itself (prefer `secret_file` or `secret_env`).
    #[serde(default)]
    pub secret: Option<SecretString>,
    /// A file holding the signing secret (e.g. a container secret); one trailing newline is
    /// ignored.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// The name of an environment variable holding the signing secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Timeout of one call: `"10s"`, `"1m"`, `"500ms"` or a number of seconds. Default 10 s.
    #[serde(default)]
    pub timeout: Option<Timeout>,
}

impl WebhookSettings {
    /// Reads the signing secret from whichever of `secret`, `secret_file`, `secret_env` is set.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field when none or several are set, the file or
    /// variable cannot be read, or the secret is empty. The secret never appears in the error.
    pub fn resolve_secret(&self) -> Result<SecretString, ConfigError> {
        self.resolve_secret_with(|name| std::env::var(name))
    }

    /// [`Self::resolve_secret`] with the environment lookup injected (tests cannot set variables
    /// without `unsafe`).
    fn resolve_secret_with(
        &self,
        env: impl FnOnce(&str) -> Result<String, std::env::VarError>,
    ) -> Result<SecretString, ConfigError> {
        let (field, secret) = match (&self.secret, &self.secret_file, &self.secret_env) {
            (Some(secret), None, None) => ("secret", secret.clone()),
            (None, Some(path), None) => ("secret_file", read_secret_file("secret_file", path)?),
            (None, None, Some(name)) => ("secret_env", read_secret_env(name, env)?),
            (secret, file, var) => {
                let set: Vec<&str> =
                    [("secret", secret.is_some()), ("secret_file", file.is_some()), ("secret_env", var.is_some())]
                        .into_iter()
                        .filter_map(|(field, present)| present.then_some(field))
                        .collect();
                let found = if set.is_empty() { "none is".to_owned() } else { format!("`{}` are", set.join("`, `")) };
                return Err(ConfigError::SecretSource { found });
            }
        };
        if secret.expose_secret().is_empty() {
            return Err(ConfigError::invalid(field, "the signing secret is empty"));
        }
        if secret.expose_secret().len() < 16 {
            tracing::warn!(
                config.field = field,
                "webhook signing secret is shorter than 16 bytes; use 32 random bytes"
            );
        }
        Ok(secret)
    }

    /// The configured timeout, or [`DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, Timeout::as_duration)
    }
}

/// Reads a secret from the environment variable `name` through `env`.
fn read_secret_env(
    name: &str,
    env: impl FnOnce(&str) -> Result<String, std::env::VarError>,
) -> Result<SecretString, ConfigError> {
    if name.is_empty() {
        return Err(ConfigError::invalid("secret_env", "the variable name is empty"));
    }
    let value = env(name).map_err(|e| ConfigError::Invalid {
        field: "secret_env",
        reason: match e {
            std::env::VarError::NotPresent => format!("environment variable {name} is not set"),
            std::env::VarError::NotUnicode(_) => {
                format!("environment variable {name} is not valid UTF-8")
            }
        },
    })?;
    Ok(SecretString::from(value))
}

impl fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("url", &redacted_url(&self.url))
            .field("secret", &self.secret.as_ref().map(|_| Redacted))
            .field("secret_file", &self.secret_file)
            .field("secret_env", &self.secret_env)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A webhook call timeout, written `"10s"`, `"1m 30s"`, `"500ms"` or as a number of seconds;
/// greater than zero and at most [`MAX_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// Checks the bounds.
    ///
    /// # Errors
    /// A message when `duration` is zero or longer than [`MAX_TIMEOUT`].
    pub fn new(duration: Duration) -> Result<Self, String> {
        if duration.is_zero() {
            Err("the timeout must be greater than zero".to_owned())
        } else if duration > MAX_TIMEOUT {
            Err(format!("the timeout must be at most {}", humantime::format_duration(MAX_TIMEOUT)))
        } else {
            Ok(Self(duration))
        }
    }

    /// The duration.
    #[must_use]
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timeout;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10s\" or \"500ms\", or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timeout, E> {
                let v = v.trim();
                // Environment variables arrive as text: "10" means seconds there too.
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    let secs = v.parse().unwrap_or(u64::MAX);
                    return Timeout::new(Duration::from_secs(secs)).map_err(E::custom);
                }
                let d = humantime::parse_duration(v)
                    .map_err(|e| E::custom(format!("invalid timeout {v:?}: {e} (write e.g. \"10s\")")))?;
                Timeout::new(d).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timeout, E> {
                Timeout::new(Duration::from_secs(v)).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timeout, E> {
                let secs = u64::try_from(v).map_err(|_| E::custom("the timeout must be greater than zero"))?;
                self.visit_u64(secs)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `scheme://host[:port]` plus `/…` when a path or query was cut: safe to print.
fn redacted_url(url: &str) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return "[invalid url]".to_owned();
    };
    let mut shown = format!("{}://{}", parsed.scheme(), parsed.host_str().unwrap_or(""));
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    if parsed.path() != "/" || parsed.query().is_some() {
        shown.push_str("/…");
    }
    shown
}

/// A validated webhook endpoint with its resolved secret: signs and POSTs JSON bodies and
/// classifies the answer. Shared by [`WebhookConnector`] and the notification channel.
pub(crate) struct SignedEndpoint {
    url: Url,
    /// For messages: the URL's host only (paths and queries may embed tokens).
    host: String,
    secret: SecretString,
    timeout: Duration,
    http: reqwest::Client,
    /// Source of `sent_at` and the signature timestamp; the system clock unless a test injects one.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for SignedEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedEndpoint")
            .field("host", &self.host)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The JSON envelope: `type`, the payload's own fields, then `sent_at`.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    payload: &'a T,
    sent_at: DateTime<Utc>,
}

impl SignedEndpoint {
    /// Validates `settings` and resolves the secret.
    pub(crate) fn new(settings: &WebhookSettings, http: &reqwest::Client) -> Result<Self, ConfigError> {
        let url = Url::parse(&settings.url)
            .map_err(|e| ConfigError::Invalid { field: "url", reason: format!("not a valid URL: {e}") })?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(ConfigError::invalid("url", "the scheme must be https or http"));
        }
        let host = match url.host_str() {
            Some(host) if !host.is_empty() => host.to_owned(),
            _ => return Err(ConfigError::invalid("url", "the URL has no host")),
        };
        Ok(Self {
            url,
            host,
            secret: settings.resolve_secret()?,
            timeout: settings.timeout(),
            http: http.clone(),
            clock: Arc::new(SystemClock),
        })
    }

    /// Replaces the clock. Receivers compare the timestamp with their own clock, so only tests
    /// whose receiver shares the clock should do this.
    pub(crate) fn set_clock(&mut self, clock: Arc<dyn Clock>) {
        self.clock = clock;
    }

    /// Signs and POSTs `{"type": kind, ...payload, "sent_at"}` with `Idempotency-Key`, and returns
    /// the response if it is a 2xx.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] for timeouts, connection failures, 408, 429 and 5xx;
    /// [`ConnectorError::Permanent`] otherwise. Messages name the status and host only.
    pub(crate) async fn deliver<T: Serialize>(
        &self,
        kind: &'static str,
        idempotency_key: &str,
        payload: &T,
    ) -> Result<reqwest::Response, ConnectorError> {
        let key = HeaderValue::from_str(idempotency_key)
            .ok()
            .filter(|_| !idempotency_key.is_empty())
            .ok_or_else(|| self.permanent("the idempotency key is not a usable HTTP header value"))?;
        let sent_at = self.clock.now();
        let body = serde_json::to_vec(&Envelope { kind, payload, sent_at })
            .map_err(|_| self.permanent("cannot encode the request body"))?;
        let timestamp = sent_at.timestamp();
        let signature = signing::sign(self.secret.expose_secret().as_bytes(), timestamp, &body);

        let response = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(signing::TIMESTAMP_HEADER, timestamp)
            .header(signing::SIGNATURE_HEADER, signature)
            .header(signing::IDEMPOTENCY_KEY_HEADER, key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;

        let status = response.status();
        tracing::debug!(webhook.host = %self.host, http.status = status.as_u16(), "webhook answered");
        self.classify(status, response.headers())?;
        Ok(response)
    }

    /// Maps a non-2xx status to an error.
    fn classify(&self, status: StatusCode, headers: &HeaderMap) -> Result<(), ConnectorError> {
        if status.is_success() {
            return Ok(());
        }
        let code = status.as_u16();
        let message = format!("webhook {} answered {code}", self.host);
        match code {
            408 | 429 | 500..=599 => {
                let retry_after = matches!(code, 429 | 503).then(|| retry_after(headers)).flatten();
                Err(ConnectorError::Retryable { message, retry_after })
            }
            300..=399 => Err(ConnectorError::Permanent {
                message: format!("{message}; redirects are not followed, configure the final URL"),
            }),
            _ => Err(ConnectorError::Permanent { message }),
        }
    }

    /// Describes a failed send without reqwest's `Display`, which prints the full URL.
    fn transport_error(&self, e: &reqwest::Error) -> ConnectorError {
        let host = &self.host;
        if e.is_builder() {
            return self.permanent("invalid request");
        }
        let message = if e.is_timeout() {
            format!("webhook {host} timed out after {}", humantime::format_duration(self.timeout))
        } else {
            // The innermost cause ("Connection refused", "invalid peer certificate: …",
            // "connection closed before message completed") helps operators and holds no URL:
            // only reqwest's outermost layer prints that.
            let what = if e.is_connect() { "connection failed" } else { "request failed" };
            match root_cause(e) {
                Some(cause) => format!("webhook {host}: {what}: {cause}"),
                None => format!("webhook {host}: {what}"),
            }
        };
        ConnectorError::Retryable { message, retry_after: None }
    }

    fn permanent(&self, what: &str) -> ConnectorError {
        ConnectorError::Permanent { message: format!("webhook {}: {what}", self.host) }
    }
}

/// The innermost error below reqwest's own, if any.
fn root_cause(e: &reqwest::Error) -> Option<String> {
    let mut cause = std::error::Error::source(e)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

/// `Retry-After` in delay-seconds form, capped at [`MAX_RETRY_AFTER`]. The HTTP-date form is
/// ignored: the engine's own backoff applies instead.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = value.parse::<u64>().unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of a 2xx body and keeps only a sane `reference`.
///
/// The effect already happened, so a body that is too large, malformed or cut off yields no
/// reference rather than an error. Other fields are skipped by the parser and never stored: a
/// receiver may echo credentials.
async fn read_reference(mut response: reqwest::Response) -> Option<String> {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        reference: Option<String>,
    }

    let limit = u64::try_from(MAX_RESPONSE_BYTES).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|n| n > limit) {
        return None;
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    let reference = serde_json::from_slice::<Reply>(&body).ok()?.reference?;
    let reference = reference.trim();
    // Control characters would let a receiver forge log lines or confuse a terminal.
    if reference.is_empty() || reference.chars().any(char::is_control) {
        return None;
    }
    Some(reference.chars().take(MAX_REFERENCE_CHARS).collect())
}

/// Performs actions by POSTing them, signed, to a receiver (see `docs/WEBHOOKS.md`).
#[derive(Debug)]
pub struct WebhookConnector {
    endpoint: SignedEndpoint,
}

impl WebhookConnector {
    /// Validates `settings`, resolves the secret and binds the shared HTTP client
    /// ([`crate::http::client`]).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field.
    pub fn new(settings: &WebhookSettings, http: &reqwest::Client) -> Result<Self, ConfigError> {
        Ok(Self { endpoint: SignedEndpoint::new(settings, http)? })
    }

    /// Uses `clock` for `sent_at` and the signature timestamp instead of the system clock.
    /// Receivers reject timestamps more than a few minutes from their own clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.endpoint.set_clock(clock);
        self
    }
}

#[async_trait::async_trait]
impl Connector for WebhookConnector {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    async fn execute(&self, action: &ConnectorAction) -> Result<ActionOutcome, ConnectorError> {
        let response = self.endpoint.deliver("tollgate.action", &action.idempotency_key, action).await?;
        Ok(ActionOutcome::Done { reference: read_reference(response).await })
    }
}

/// A loopback receiver for tests: verifies signatures, records requests, answers from a script.
#[cfg(test)]
pub(crate) mod test_receiver {
    use std::collections::VecDeque;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};

    use crate::clock::{Clock, SystemClock};
    use crate::signing::{self, SignatureError};

    /// The secret the receiver verifies with.
    pub(crate) const SECRET: &str = "test-signing-secret-0123456789ab";

    /// One request as received.
    #[derive(Debug, Clone)]
    pub(crate) struct Recorded {
        pub(crate) headers: HeaderMap,
        pub(crate) body: Bytes,
        pub(crate) verified: Result<(), SignatureError>,
    }

    impl Recorded {
        pub(crate) fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }

        pub(crate) fn json(&self) -> serde_json::Value {
            serde_json::from_slice(&self.body).unwrap()
        }
    }

    /// One scripted answer.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Reply {
        pub(crate) status: u16,
        pub(crate) headers: Vec<(&'static str, String)>,
        pub(crate) body: String,
        pub(crate) delay: Duration,
    }

    impl Reply {
        pub(crate) fn status(status: u16) -> Self {
            Self { status, ..Self::default() }
        }

        pub(crate) fn header(mut self, name: &'static str, value: &str) -> Self {
            self.headers.push((name, value.to_owned()));
            self
        }

        pub(crate) fn body(mut self, body: impl Into<String>) -> Self {
            self.body = body.into();
            self
        }

        pub(crate) fn delay(mut self, delay: Duration) -> Self {
            self.delay = delay;
            self
        }
    }

    #[derive(Clone, Default)]
    struct Shared {
        requests: Arc<Mutex<Vec<Recorded>>>,
        script: Arc<Mutex<VecDeque<Reply>>>,
    }

    /// A running receiver on `127.0.0.1:<random port>`; answers 200 with an empty body once the
    /// script is exhausted.
    pub(crate) struct Receiver {
        pub(crate) addr: SocketAddr,
        shared: Shared,
    }

    impl Receiver {
        pub(crate) async fn start(script: impl IntoIterator<Item = Reply>) -> Self {
            let shared = Shared::default();
            shared.script.lock().unwrap().extend(script);
            let app = axum::Router::new().fallback(handle).with_state(shared.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            Self { addr, shared }
        }

        /// The URL to configure, with a query token that must never show up in messages.
        pub(crate) fn url(&self) -> String {
            format!("http://{}/hooks/tollgate?token=QUERYTOKEN", self.addr)
        }

        pub(crate) fn requests(&self) -> Vec<Recorded> {
            self.shared.requests.lock().unwrap().clone()
        }
    }

    async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let verified = signing::verify(
            SECRET.as_bytes(),
            &text(signing::TIMESTAMP_HEADER),
            &text(signing::SIGNATURE_HEADER),
            &body,
            SystemClock.now().timestamp(),
            signing::DEFAULT_TOLERANCE_SECS,
        );
        shared.requests.lock().unwrap().push(Recorded { headers: headers.clone(), body, verified });
        let reply = shared.script.lock().unwrap().pop_front().unwrap_or_else(|| Reply::status(200));
        tokio::time::sleep(reply.delay).await;
        let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
        for (name, value) in reply.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tollgate_workflows::Operation;
    use uuid::Uuid;

    use super::test_receiver::{Receiver, Reply, SECRET};
    use super::*;
    use crate::connector::IntegrationRef;

    fn settings(url: &str, timeout: Option<&str>) -> WebhookSettings {
        WebhookSettings {
            url: url.to_owned(),
            secret: Some(SecretString::from(SECRET)),
            secret_file: None,
            secret_env: None,
            timeout: timeout.map(|t| Timeout::new(humantime::parse_duration(t).unwrap()).unwrap()),
        }
    }

    fn connector(url: &str, timeout: Option<&str>) -> WebhookConnector {
        let http = crate::http::client(Duration::from_secs(30)).unwrap();
        WebhookConnector::new(&settings(url, timeout), &http).unwrap()
    }

    fn action(attempt: u32) -> ConnectorAction {
        ConnectorAction {
            operation: Operation::Grant,
            idempotency_key: "run-0190:step-2:grant".to_owned(),
            run_id: Uuid::from_u128(1),
            grant_id: Uuid::from_u128(2),
            integration: IntegrationRef {
                name: "salesforce-prod".to_owned(),
                app: "salesforce".to_owned(),
                environment: "production".to_owned(),
            },
            principal: "alice@example.com".to_owned(),
            scopes: vec!["api".to_owned(), "refresh_token".to_owned()],
            expires_at: Some("2030-01-02T03:04:05Z".parse().unwrap()),
            attempt,
        }
    }

    /// Asserts that nothing that must stay private leaks into what the engine logs or stores.
    fn assert_clean(shown: &str) {
        for secret in ["CANARY", SECRET, "QUERYTOKEN", "/hooks/"] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
    }

    #[tokio::test]
    async fn signed_action_is_delivered_and_only_the_reference_is_kept() {
        let receiver = Receiver::start([
            Reply::status(200).body(r#"{"reference":"abc","secret":"CANARY","nested":{"token":"CANARY"}}"#)
        ])
        .await;
        let outcome = connector(&receiver.url(), None).execute(&action(1)).await.unwrap();

        assert_eq!(outcome, ActionOutcome::Done { reference: Some("abc".to_owned()) });
        assert_clean(&format!("{outcome:?}"));
        let [request] = receiver.requests().try_into().unwrap();
        assert_eq!(request.verified, Ok(()));
        assert_eq!(request.header("idempotency-key"), Some("run-0190:step-2:grant"));
        assert_eq!(request.header("content-type"), Some("application/json"));
        assert_eq!(request.header("user-agent"), Some(crate::http::USER_AGENT));
        let body = request.json();
        let sent_at: DateTime<Utc> = body["sent_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(request.header("tollgate-timestamp"), Some(sent_at.timestamp().to_string().as_str()));
        assert_eq!(
            body,
            serde_json::json!({
                "type": "tollgate.action",
                "operation": "grant",
                "idempotency_key": "run-0190:step-2:grant",
                "run_id": Uuid::from_u128(1),
                "grant_id": Uuid::from_u128(2),
                "integration": {"name": "salesforce-prod", "app": "salesforce", "environment": "production"},
                "principal": "alice@example.com",
                "scopes": ["api", "refresh_token"],
                "expires_at": "2030-01-02T03:04:05Z",
                "attempt": 1,
                "sent_at": body["sent_at"],
            })
        );
    }

    #[tokio::test]
    async fn retries_carry_the_same_idempotency_key() {
        let receiver = Receiver::start([Reply::status(500).body("CANARY stack trace")]).await;
        let connector = connector(&receiver.url(), None);

        let first = connector.execute(&action(1)).await.unwrap_err();
        let second = connector.execute(&action(2)).await.unwrap();

        assert!(matches!(first, ConnectorError::Retryable { retry_after: None, .. }), "{first:?}");
        assert_eq!(first.to_string(), "retryable connector failure: webhook 127.0.0.1 answered 500");
        assert_clean(&format!("{first} {first:?}"));
        assert_eq!(second, ActionOutcome::Done { reference: None });
        let requests = receiver.requests();
        assert_eq!(requests.len(), 2);
        assert!(requests.iter().all(|r| r.verified.is_ok()));
        assert_eq!(requests[0].header("idempotency-key"), requests[1].header("idempotency-key"));
        assert_eq!(requests[0].json()["idempotency_key"], requests[1].json()["idempotency_key"]);
        assert_eq!(requests[0].json()["attempt"], 1);
        assert_eq!(requests[1].json()["attempt"], 2);
    }

    #[tokio::test]
    async fn status_codes_are_classified() {
        let receiver = Receiver::start([
            Reply::status(429).header("retry-after", "7").body("CANARY"),
            Reply::status(503).header("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
            Reply::status(503).header("retry-after", "99999999999999999999999"),
            Reply::status(500).header("retry-after", "7"),
            Reply::status(408),
            Reply::status(404).body(r#"{"error":"CANARY"}"#),
            Reply::status(400),
            Reply::status(302).header("location", "http://127.0.0.1:9/elsewhere"),
            Reply::status(204),
        ])
        .await;
        let connector = connector(&receiver.url(), None);
        let retryable = |after: Option<u64>| {
            move |r: Result<ActionOutcome, ConnectorError>| match r {
                Err(ConnectorError::Retryable { retry_after, .. }) => retry_after == after.map(Duration::from_secs),
                _ => false,
            }
        };
        let permanent = |r: Result<ActionOutcome, ConnectorError>| matches!(r, Err(ConnectorError::Permanent { .. }));

        let results = {
            let mut results = Vec::new();
            for _ in 0..9 {
                results.push(connector.execute(&action(1)).await);
            }
            results
        };
        for result in &results {
            match result {
                Ok(outcome) => assert_clean(&format!("{outcome:?}")),
                Err(e) => {
                    assert_clean(&format!("{e} {e:?}"));
                    assert!(e.to_string().contains("127.0.0.1"), "{e}");
                }
            }
        }
        let mut results = results.into_iter();
        let mut next = || results.next().unwrap();
        let r = next();
        assert!(retryable(Some(7))(r.clone()), "429: {r:?}");
        let r = next();
        assert!(retryable(None)(r.clone()), "503 with a date: {r:?}");
        let r = next();
        assert!(retryable(Some(MAX_RETRY_AFTER.as_secs()))(r.clone()), "503 huge: {r:?}");
        let r = next();
        assert!(retryable(None)(r.clone()), "500 ignores Retry-After: {r:?}");
        let r = next();
        assert!(retryable(None)(r.clone()), "408: {r:?}");
        let r = next();
        assert!(permanent(r.clone()), "404: {r:?}");
        assert_eq!(r.unwrap_err().to_string(), "permanent connector failure: webhook 127.0.0.1 answered 404");
        let r = next();
        assert!(permanent(r.clone()), "400: {r:?}");
        let r = next();
        assert!(permanent(r.clone()), "302: {r:?}");
        assert_eq!(next(), Ok(ActionOutcome::Done { reference: None }), "204");
        // The redirect was not followed.
        assert_eq!(receiver.requests().len(), 9);
    }

    #[tokio::test]
    async fn timestamp_comes_from_the_clock_and_stale_ones_fail_verification() {
        let receiver = Receiver::start([]).await;
        let an_hour_ago = crate::clock::SystemClock.now() - chrono::Duration::hours(1);
        let clock = Arc::new(crate::clock::ManualClock::new(an_hour_ago));
        let connector = connector(&receiver.url(), None).with_clock(clock);
        connector.execute(&action(1)).await.unwrap();

        let [request] = receiver.requests().try_into().unwrap();
        assert_eq!(
            request.verified,
            Err(crate::signing::SignatureError::TimestampOutOfTolerance { tolerance_secs: 300 })
        );
        assert_eq!(request.header("tollgate-timestamp"), Some(an_hour_ago.timestamp().to_string().as_str()));
    }

    #[tokio::test]
    async fn slow_receiver_is_retryable() {
        let receiver = Receiver::start([Reply::status(200).delay(Duration::from_secs(5))]).await;
        let started = std::time::Instant::now();
        let err = connector(&receiver.url(), Some("300ms")).execute(&action(1)).await.unwrap_err();

        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            err,
            ConnectorError::Retryable {
                message: "webhook 127.0.0.1 timed out after 300ms".to_owned(),
                retry_after: None
            }
        );
    }

    #[tokio::test]
    async fn connection_refused_is_retryable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let url = format!("http://127.0.0.1:{port}/hooks/x?token=QUERYTOKEN");
        let err = connector(&url, None).execute(&action(1)).await.unwrap_err();

        let ConnectorError::Retryable { message, retry_after: None } = &err else {
            panic!("{err:?}");
        };
        assert!(
            message.starts_with("webhook 127.0.0.1: connection failed: ") && message.contains("refused"),
            "{message}"
        );
        assert_clean(&format!("{err} {err:?}"));
    }

    #[tokio::test]
    async fn tls_failure_is_retryable_and_goes_through_rustls_on_ring() {
        // A plain-HTTP receiver cannot complete a TLS handshake: this drives the preconfigured
        // rustls client (ring provider, platform verifier) up to the point of failure.
        let receiver = Receiver::start([]).await;
        let url = format!("https://{}/hooks/x?token=QUERYTOKEN", receiver.addr);
        let err = connector(&url, None).execute(&action(1)).await.unwrap_err();

        let ConnectorError::Retryable { message, .. } = &err else {
            panic!("{err:?}");
        };
        assert!(message.starts_with("webhook 127.0.0.1: connection failed"), "{message}");
        assert_clean(&format!("{err} {err:?}"));
    }

    #[tokio::test]
    async fn odd_success_bodies_yield_no_reference() {
        let long = "r".repeat(500);
        let huge = format!(r#"{{"reference":"abc","pad":"{}"}}"#, "x".repeat(MAX_RESPONSE_BYTES));
        let cases = [
            (Reply::status(200).body(format!(r#"{{"reference":"{long}"}}"#)), Some("r".repeat(200))),
            (Reply::status(200).body(huge), None),
            (Reply::status(200).body(r#"{"reference":42}"#), None),
            (Reply::status(200).body(r#"{"reference":"a\nforged log line"}"#), None),
            (Reply::status(200).body(r#"{"reference":"   "}"#), None),
            (Reply::status(200).body("reference=abc"), None),
            (Reply::status(201).body(r#"{"reference":" ok-1 ","id":7}"#), Some("ok-1".to_owned())),
        ];
        let expected: Vec<_> = cases.iter().map(|(_, r)| r.clone()).collect();
        let receiver = Receiver::start(cases.into_iter().map(|(reply, _)| reply)).await;
        let connector = connector(&receiver.url(), None);
        for want in expected {
            let got = connector.execute(&action(1)).await.unwrap();
            assert_eq!(got, ActionOutcome::Done { reference: want });
        }
    }

    #[test]
    fn settings_debug_redacts_secret_and_url_path() {
        let shown = format!(
            "{:?}",
            settings("https://hooks.example.com/services/T0/B0/XYZSECRETPATH?token=QUERYTOKEN", Some("5s"))
        );
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("XYZSECRETPATH"), "{shown}");
        assert!(!shown.contains("QUERYTOKEN"), "{shown}");
        assert!(shown.contains("https://hooks.example.com/…"), "{shown}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let http = crate::http::client(Duration::from_secs(1)).unwrap();
        let connector =
            WebhookConnector::new(&settings("https://hooks.example.com/p?token=QUERYTOKEN", None), &http).unwrap();
        let shown = format!("{connector:?}");
        assert!(!shown.contains(SECRET) && !shown.contains("QUERYTOKEN"), "{shown}");
    }

    #[test]
    fn settings_deserialize_strictly() {
        let parse = |v: serde_json::Value| serde_json::from_value::<WebhookSettings>(v);
        let s =
            parse(serde_json::json!({"url": "https://x.example", "secret_env": "HOOK_SECRET", "timeout": 5})).unwrap();
        assert_eq!(s.timeout(), Duration::from_secs(5));
        let s = parse(serde_json::json!({"url": "https://x.example", "secret": "s", "timeout": "1m 30s"})).unwrap();
        assert_eq!(s.timeout(), Duration::from_secs(90));
        let s = parse(serde_json::json!({"url": "https://x.example", "secret": "s", "timeout": " 15 "})).unwrap();
        assert_eq!(s.timeout(), Duration::from_secs(15));
        let s = parse(serde_json::json!({"url": "https://x.example", "secret": "s"})).unwrap();
        assert_eq!(s.timeout(), DEFAULT_TIMEOUT);
        for (bad, needle) in [
            (serde_json::json!({"url": "u", "secret": "s", "sekret": "x"}), "unknown field `sekret`"),
            (serde_json::json!({"url": "u", "secret": "s", "timeout": 0}), "greater than zero"),
            (serde_json::json!({"url": "u", "secret": "s", "timeout": -1}), "greater than zero"),
            (serde_json::json!({"url": "u", "secret": "s", "timeout": "10 parsecs"}), "invalid timeout"),
            (serde_json::json!({"url": "u", "secret": "s", "timeout": "1h"}), "at most 5m"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn secret_comes_from_exactly_one_source() {
        let base = WebhookSettings { secret: None, ..settings("https://x.example", None) };
        let env_ok = |_: &str| Ok("from-env-0123456789".to_owned());

        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"from-file-0123456789\r\n").unwrap();
        let from_file = WebhookSettings { secret_file: Some(file.path().to_owned()), ..base.clone() };
        assert_eq!(from_file.resolve_secret().unwrap().expose_secret(), "from-file-0123456789");

        let from_env = WebhookSettings { secret_env: Some("HOOK_SECRET".to_owned()), ..base.clone() };
        assert_eq!(from_env.resolve_secret_with(env_ok).unwrap().expose_secret(), "from-env-0123456789");
        // The real environment: cargo sets this variable for test processes.
        let real = WebhookSettings { secret_env: Some("CARGO_MANIFEST_DIR".to_owned()), ..base.clone() };
        assert_eq!(real.resolve_secret().unwrap().expose_secret(), env!("CARGO_MANIFEST_DIR"));

        let err = |s: &WebhookSettings| s.resolve_secret_with(env_ok).unwrap_err().to_string();
        assert_eq!(err(&base), "set exactly one of `secret`, `secret_file` or `secret_env`: none is set");
        let both = WebhookSettings { secret: Some(SecretString::from("inline-CANARY")), ..from_env.clone() };
        assert_eq!(
            err(&both),
            "set exactly one of `secret`, `secret_file` or `secret_env`: `secret`, `secret_env` are set"
        );
        let missing = WebhookSettings { secret_file: Some("/nonexistent/tollgate-secret".into()), ..base.clone() };
        assert!(
            err(&missing).starts_with("`secret_file`: cannot read /nonexistent/tollgate-secret:"),
            "{}",
            err(&missing)
        );
        let unset = from_env.resolve_secret_with(|_| Err(std::env::VarError::NotPresent)).unwrap_err();
        assert_eq!(unset.to_string(), "`secret_env`: environment variable HOOK_SECRET is not set");
        let empty_file = tempfile::NamedTempFile::new().unwrap();
        let empty = WebhookSettings { secret_file: Some(empty_file.path().to_owned()), ..base.clone() };
        assert_eq!(err(&empty), "`secret_file`: the signing secret is empty");

        let mut canary = tempfile::NamedTempFile::new().unwrap();
        canary.write_all(b"CANARY").unwrap();
        let conflicting = WebhookSettings { secret_file: Some(canary.path().to_owned()), ..both };
        assert_clean(&format!("{:?} {:?}", conflicting, conflicting.resolve_secret_with(env_ok).unwrap_err()));
    }

    #[test]
    fn bad_urls_are_rejected_naming_the_field() {
        let http = crate::http::client(Duration::from_secs(1)).unwrap();
        for url in ["not a url", "ftp://x.example/", "file:///etc/passwd", "http://"] {
            let err = WebhookConnector::new(&settings(url, None), &http).unwrap_err();
            assert!(err.to_string().starts_with("`url`: "), "{url}: {err}");
        }
    }
}
