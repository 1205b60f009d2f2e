//! The webhook notification channel: POSTs each notification, signed, to a receiver.
//!
//! Same settings, signature and status classification as the webhook connector
//! ([`crate::outbound::webhook`]); the body is
//! `{"type": "tollgate.notification", ...notification fields, "sent_at"}` and the
//! `Idempotency-Key` is the notification's own key.

use std::sync::Arc;

use super::NotificationChannel;
use crate::clock::Clock;
use crate::message::Notification;
use crate::outbound::webhook::{SignedEndpoint, WebhookSettings};
use crate::outbound::{ConfigError, ConnectorError};

/// Delivers notifications to a signed webhook (see `docs/WEBHOOKS.md`).
#[derive(Debug)]
pub struct WebhookChannel {
    endpoint: SignedEndpoint,
}

impl WebhookChannel {
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
impl NotificationChannel for WebhookChannel {
    fn name(&self) -> &'static str {
        "webhook"
    }

    async fn send(&self, notification: &Notification) -> Result<(), ConnectorError> {
        // The response body is never read: a notification has no result to keep.
        self.endpoint.deliver("tollgate.notification", &notification.idempotency_key, notification).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use uuid::Uuid;

    use super::*;
    use crate::message::{RecipientInfo, RequestSummary};
    use crate::outbound::webhook::test_receiver::{Receiver, Reply, SECRET};

    fn channel(url: String) -> WebhookChannel {
        let settings = WebhookSettings {
            url,
            secret: Some(SecretString::from(SECRET)),
            secret_file: None,
            secret_env: None,
            timeout: None,
        };
        WebhookChannel::new(&settings, &crate::http::client(Duration::from_secs(5)).unwrap()).unwrap()
    }

    fn notification() -> Notification {
        Notification {
            idempotency_key: "run-7:step-1:approval_requested:1".to_owned(),
            event: "approval_requested".to_owned(),
            request_id: Uuid::from_u128(7),
            recipients: vec![RecipientInfo {
                principal: "carol".to_owned(),
                name: "Carol".to_owned(),
                email: Some("carol@example.com".to_owned()),
                slack_user_id: None,
            }],
            request: RequestSummary {
                kind: "grant".to_owned(),
                requester: "alice".to_owned(),
                integration: "salesforce-prod".to_owned(),
                environment: "production".to_owned(),
                scopes: vec!["api".to_owned()],
                duration_secs: 3600,
                justification: "INC-42 <@channel>".to_owned(),
                status: "pending".to_owned(),
                approvals_needed: Some(1),
                deadline: Some("2030-01-01T00:00:00Z".parse().unwrap()),
                expires_at: None,
                emergency: false,
            },
            text: "alice asks for api on salesforce-prod".to_owned(),
            route: crate::message::Route::default(),
        }
    }

    #[tokio::test]
    async fn notification_is_signed_and_classified_like_actions() {
        let receiver = Receiver::start([
            Reply::status(200).body(r#"{"reference":"ignored"}"#),
            Reply::status(500).body("CANARY"),
            Reply::status(429).header("retry-after", "7"),
            Reply::status(404),
        ])
        .await;
        let channel = channel(receiver.url());
        assert_eq!(channel.name(), "webhook");

        assert_eq!(channel.send(&notification()).await, Ok(()));
        let err = channel.send(&notification()).await.unwrap_err();
        assert_eq!(
            err,
            ConnectorError::Retryable { message: "webhook 127.0.0.1 answered 500".to_owned(), retry_after: None }
        );
        let err = channel.send(&notification()).await.unwrap_err();
        assert!(
            matches!(err, ConnectorError::Retryable { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
            "{err:?}"
        );
        let err = channel.send(&notification()).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Permanent { .. }), "{err:?}");

        let requests = receiver.requests();
        assert_eq!(requests.len(), 4);
        for request in &requests {
            assert_eq!(request.verified, Ok(()));
            assert_eq!(request.header("idempotency-key"), Some("run-7:step-1:approval_requested:1"));
        }
        let body = requests[0].json();
        assert!(body["sent_at"].is_string());
        assert_eq!(
            body,
            serde_json::json!({
                "type": "tollgate.notification",
                "idempotency_key": "run-7:step-1:approval_requested:1",
                "event": "approval_requested",
                "request_id": Uuid::from_u128(7),
                "recipients": [{"principal": "carol", "name": "Carol", "email": "carol@example.com", "slack_user_id": null}],
                "request": {
                    "kind": "grant", "requester": "alice", "integration": "salesforce-prod",
                    "environment": "production", "scopes": ["api"], "duration_secs": 3600,
                    "justification": "INC-42 <@channel>", "status": "pending", "approvals_needed": 1,
                    "deadline": "2030-01-01T00:00:00Z", "expires_at": null, "emergency": false
                },
                "text": "alice asks for api on salesforce-prod",
                "sent_at": body["sent_at"],
            })
        );
    }

    #[tokio::test]
    async fn unreachable_receiver_is_retryable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = channel(format!("http://127.0.0.1:{port}/n")).send(&notification()).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Retryable { .. }), "{err:?}");
    }
}
