//! Signed webhook delivery shared by the webhook connector and notification channel; it must never follow a redirect.
//!
//! [`WebhookSettings`] is how an endpoint is configured (URL, signing secret from exactly one
//! source, timeout); `SignedEndpoint` signs and POSTs a JSON envelope and classifies the answer:
//! 2xx succeeds, 408/429/5xx and transport failures are retryable (429/503 with `Retry-After`),
//! anything else is permanent. What the body means is the caller's business. Messages name the
//! host only: a URL's path and query often embed tokens.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{ConfigError, ConnectorError, MAX_RETRY_AFTER, Redacted, Timeout, read_secret_file};
use crate::clock::{Clock, SystemClock};
use crate::signing;

/// Timeout of one webhook call when the settings name none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

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
/// classifies the answer. Shared by the webhook connector and the webhook notification channel.
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

/// A loopback receiver for tests: verifies signatures, records requests, answers from a script.
#[cfg(test)]
pub(crate) mod test_receiver {
    /// Settings for a webhook at `url` signed with [`SECRET`], with an optional timeout.
    pub(crate) fn settings(url: &str, timeout: Option<&str>) -> super::WebhookSettings {
        super::WebhookSettings {
            url: url.to_owned(),
            secret: Some(secrecy::SecretString::from(SECRET)),
            secret_file: None,
            secret_env: None,
            timeout: timeout.map(|t| crate::outbound::Timeout::new(humantime::parse_duration(t).unwrap()).unwrap()),
        }
    }

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

    use super::test_receiver::{SECRET, settings};
    use super::*;

    /// Asserts that nothing that must stay private leaks into what the engine logs or stores.
    fn assert_clean(shown: &str) {
        for secret in ["CANARY", SECRET, "QUERYTOKEN", "/hooks/"] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
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
}
