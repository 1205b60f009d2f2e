//! The webhook connector: POSTs a signed JSON action to a receiver that performs it on the SaaS.
//!
//! The receiver answers 2xx (optionally with `{"reference": "..."}`, and for grant, renew and
//! rotate a credential minted for the holder: `{"secret": "...", "expires_at": "..."}`) once the
//! effect is in place, 4xx when retrying cannot help, and 408/429/5xx when it can. The signed delivery and the status
//! classification live in [`crate::outbound::webhook`], shared with the notification webhook
//! channel; this module adds only what an action's answer means.

use std::sync::Arc;

use secrecy::SecretString;
use serde::Deserialize;
use tollgate_workflows::Operation;

use super::{ActionOutcome, Connector, Minted};
use crate::action::ConnectorAction;
use crate::clock::Clock;
use crate::outbound::webhook::SignedEndpoint;
use crate::outbound::webhook::WebhookSettings;
use crate::outbound::{ConfigError, ConnectorError};

/// Most bytes of a 2xx response body that are read to look for `reference`.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest `reference` kept, in characters.
pub const MAX_REFERENCE_CHARS: usize = 200;

/// Longest minted `secret` taken from an answer, in bytes.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// What a 2xx answer yields: a sane `reference`, and — for grant, renew and rotate — a credential
/// minted for the grant's holder (`secret`, optional `expires_at`).
///
/// Reads at most [`MAX_RESPONSE_BYTES`]. The effect already happened, so a body that is too large,
/// malformed or cut off yields nothing rather than an error. Other fields are skipped by the
/// parser and never stored: a receiver may echo credentials.
async fn read_answer(mut response: reqwest::Response, mints: bool) -> (Option<String>, Option<Minted>) {
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        reference: Option<serde_json::Value>,
        #[serde(default)]
        secret: Option<serde_json::Value>,
        #[serde(default)]
        expires_at: Option<serde_json::Value>,
    }

    let limit = u64::try_from(MAX_RESPONSE_BYTES).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|n| n > limit) {
        return (None, None);
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return (None, None);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => return (None, None),
        }
    }
    let Ok(reply) = serde_json::from_slice::<Reply>(&body) else { return (None, None) };
    let reference = reply.reference.as_ref().and_then(serde_json::Value::as_str).and_then(|reference| {
        let reference = reference.trim();
        // Control characters would let a receiver forge log lines or confuse a terminal.
        (!reference.is_empty() && !reference.chars().any(char::is_control))
            .then(|| reference.chars().take(MAX_REFERENCE_CHARS).collect())
    });
    let minted = match reply.secret {
        Some(serde_json::Value::String(value)) if mints && !value.is_empty() && value.len() <= MAX_SECRET_BYTES => {
            let expires_at = reply
                .expires_at
                .as_ref()
                .and_then(serde_json::Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&chrono::Utc)));
            Some(Minted { value: SecretString::from(value), expires_at })
        }
        _ => None,
    };
    (reference, minted)
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

    fn verifies(&self) -> bool {
        true
    }

    async fn execute(&self, action: &ConnectorAction) -> Result<ActionOutcome, ConnectorError> {
        let response = self.endpoint.deliver("tollgate.action", &action.idempotency_key, action).await?;
        let mints = matches!(action.operation, Operation::Grant | Operation::Renew | Operation::Rotate);
        let (reference, minted) = read_answer(response, mints).await;
        Ok(ActionOutcome::Done { reference, minted })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use secrecy::ExposeSecret as _;
    use tollgate_workflows::Operation;
    use uuid::Uuid;

    use super::*;
    use crate::action::IntegrationRef;
    use crate::outbound::MAX_RETRY_AFTER;
    use crate::outbound::webhook::test_receiver::{Receiver, Reply, SECRET, settings};

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
            expect: None,
            version: None,
            keep_previous: false,
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
        let receiver = Receiver::start([Reply::status(200)
            .body(r#"{"reference":"abc","credential":{"secret":"CANARY"},"nested":{"token":"CANARY"}}"#)])
        .await;
        let outcome = connector(&receiver.url(), None).execute(&action(1)).await.unwrap();

        assert_eq!(outcome, ActionOutcome::Done { reference: Some("abc".to_owned()), minted: None });
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
        assert_eq!(second, ActionOutcome::Done { reference: None, minted: None });
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
        assert_eq!(next(), Ok(ActionOutcome::Done { reference: None, minted: None }), "204");
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
            assert_eq!(got, ActionOutcome::Done { reference: want, minted: None });
        }
    }

    #[tokio::test]
    async fn a_secret_minted_by_grant_renew_or_rotate_is_handed_on_redacted() {
        let minted = r#"{"reference":"r1","secret":"gho_CANARY","expires_at":"2030-01-02T03:04:05Z"}"#;
        let cases = [
            (Operation::Grant, Reply::status(200).body(minted), Some((Some("2030-01-02T03:04:05Z"), "gho_CANARY"))),
            (Operation::Renew, Reply::status(200).body(r#"{"secret":"gho_CANARY"}"#), Some((None, "gho_CANARY"))),
            (
                Operation::Rotate,
                Reply::status(201).body(r#"{"secret":"gho_CANARY","expires_at":"soon"}"#),
                Some((None, "gho_CANARY")),
            ),
            (Operation::Revoke, Reply::status(200).body(minted), None),
            (Operation::Verify, Reply::status(200).body(minted), None),
            (Operation::Grant, Reply::status(200).body(r#"{"secret":""}"#), None),
            (Operation::Grant, Reply::status(200).body(r#"{"secret":{"value":"CANARY"}}"#), None),
            (Operation::Grant, Reply::status(200).body(r#"{"secret":42}"#), None),
        ];
        let expected: Vec<_> = cases.iter().map(|(op, _, want)| (*op, *want)).collect();
        let receiver = Receiver::start(cases.into_iter().map(|(_, reply, _)| reply)).await;
        let webhook = connector(&receiver.url(), None);
        for (operation, want) in expected {
            let mut call = action(1);
            call.operation = operation;
            let ActionOutcome::Done { minted, .. } = webhook.execute(&call).await.unwrap() else {
                panic!("{operation:?}: not done");
            };
            assert_clean(&format!("{minted:?}"));
            let got = minted.map(|m| (m.expires_at, m.value.expose_secret().to_owned()));
            let want = want.map(|(at, v)| (at.map(|t: &str| t.parse::<DateTime<Utc>>().unwrap()), v.to_owned()));
            assert_eq!(got, want, "{operation:?}");
        }
        let huge = format!(r#"{{"secret":"{}"}}"#, "s".repeat(MAX_SECRET_BYTES + 1));
        let receiver = Receiver::start([Reply::status(200).body(huge)]).await;
        let outcome = connector(&receiver.url(), None).execute(&action(1)).await;
        assert_eq!(outcome.unwrap(), ActionOutcome::Done { reference: None, minted: None }, "too long a secret");
    }

    #[test]
    fn connector_debug_redacts_secret_and_url_path() {
        let http = crate::http::client(Duration::from_secs(1)).unwrap();
        let connector =
            WebhookConnector::new(&settings("https://hooks.example.com/p?token=QUERYTOKEN", None), &http).unwrap();
        let shown = format!("{connector:?}");
        assert!(!shown.contains(SECRET) && !shown.contains("QUERYTOKEN"), "{shown}");
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
