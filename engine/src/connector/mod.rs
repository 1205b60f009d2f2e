//! Connectors: the adapters that perform grant/renew/revoke/rotate/verify on a SaaS.
//!
//! Every call carries an idempotency key derived from the run and the step, identical on every
//! attempt, so a connector (or the system behind it) can make the effect happen exactly once even
//! though the engine delivers at least once.

pub mod manual;
pub mod webhook;

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use tollgate_workflows::Operation;
use uuid::Uuid;

/// What a connector is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorAction {
    /// The operation.
    pub operation: Operation,
    /// Same on every attempt of this (run, step); receivers deduplicate on it.
    pub idempotency_key: String,
    /// The run that asked.
    pub run_id: Uuid,
    /// The grant concerned.
    pub grant_id: Uuid,
    /// The integration acted on.
    pub integration: IntegrationRef,
    /// The principal who receives (or loses) access.
    pub principal: String,
    /// Scopes concerned.
    pub scopes: Vec<String>,
    /// When the access ends (grant, renew).
    pub expires_at: Option<DateTime<Utc>>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// The integration as a connector sees it (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationRef {
    /// Registry name.
    pub name: String,
    /// SaaS application.
    pub app: String,
    /// Environment.
    pub environment: String,
}

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The effect happened; `reference` is an optional external id (never a secret).
    Done {
        /// External reference returned by the SaaS side, at most 200 chars, no secrets.
        reference: Option<String>,
    },
    /// A person must perform the action (manual connector); the engine creates a task.
    AwaitingOperator {
        /// The principal who must confirm.
        operator: String,
        /// What to do, shown to the operator.
        instructions: String,
    },
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Worth retrying (timeouts, connection errors, 5xx, 408, 429).
    #[error("retryable connector failure: {message}")]
    Retryable {
        /// Short description, safe to log (no secrets, no bodies).
        message: String,
        /// Minimum wait the far side asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (4xx other than 408/429, invalid configuration).
    #[error("permanent connector failure: {message}")]
    Permanent {
        /// Short description, safe to log.
        message: String,
    },
}

impl ConfigError {
    /// [`ConfigError::Invalid`] for `field`.
    pub(crate) fn invalid(field: &'static str, reason: &str) -> Self {
        Self::Invalid { field, reason: reason.to_owned() }
    }
}

/// Reads a secret file named by the setting `field`, dropping one trailing newline (editors and
/// `echo` add one). The error names the file and the kind of failure, never any content.
pub(crate) fn read_secret_file(field: &'static str, path: &std::path::Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid { field, reason: format!("cannot read {}: {}", path.display(), e.kind()) })?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    Ok(SecretString::from(text.to_owned()))
}

/// Stands in for a secret in `Debug` output.
pub(crate) struct Redacted;

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A connector instance bound to one integration's settings.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + std::fmt::Debug {
    /// The connector type, e.g. `webhook`.
    fn kind(&self) -> &'static str;

    /// Performs `action`. Must be idempotent by `action.idempotency_key`.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] or [`ConnectorError::Permanent`].
    async fn execute(&self, action: &ConnectorAction) -> Result<ActionOutcome, ConnectorError>;
}

/// How an integration's connector is configured, tagged by `type`:
///
/// ```yaml
/// connector:
///   type: webhook
///   url: https://provisioner.internal/tollgate
///   secret_file: /run/secrets/tollgate-webhook
///   timeout: 10s
/// ```
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ConnectorConfig {
    /// POST signed actions to a receiver ([`webhook::WebhookConnector`]).
    Webhook(webhook::WebhookSettings),
    /// Ask a person to do it ([`manual::ManualConnector`]).
    Manual(manual::ManualSettings),
}

impl ConnectorConfig {
    /// The connector type as written in `type`: `webhook` or `manual`.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Manual(_) => "manual",
        }
    }
}

/// An invalid connector or webhook configuration. Messages name the offending field and never
/// contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field has an unusable value.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field, as written in the configuration.
        field: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// None, or more than one, of `secret`, `secret_file` and `secret_env` is set.
    #[error("set exactly one of `secret`, `secret_file` or `secret_env`: {found} set")]
    SecretSource {
        /// Which were set, e.g. "none is" or "`secret`, `secret_env` are".
        found: String,
    },
}

/// Builds the connector described by `config`; `http` is the shared client from
/// [`crate::http::client`]. Secrets are resolved now, so a bad configuration fails at start-up.
///
/// # Errors
/// [`ConfigError`] naming the offending field.
pub fn build(config: &ConnectorConfig, http: &reqwest::Client) -> Result<std::sync::Arc<dyn Connector>, ConfigError> {
    Ok(match config {
        ConnectorConfig::Webhook(settings) => std::sync::Arc::new(webhook::WebhookConnector::new(settings, http)?),
        ConnectorConfig::Manual(settings) => std::sync::Arc::new(manual::ManualConnector::new(settings)?),
    })
}

#[cfg(test)]
mod config_tests {
    use super::*;

    #[test]
    fn config_is_tagged_by_type_and_strict() {
        let http = crate::http::client(Duration::from_secs(1)).unwrap();
        let webhook: ConnectorConfig = serde_json::from_value(serde_json::json!({
            "type": "webhook", "url": "https://hooks.example.com/x", "secret": "0123456789abcdef0123", "timeout": "3s"
        }))
        .unwrap();
        assert_eq!(webhook.type_name(), "webhook");
        assert_eq!(build(&webhook, &http).unwrap().kind(), "webhook");
        let manual: ConnectorConfig =
            serde_json::from_value(serde_json::json!({"type": "manual", "operator": "it-admin"})).unwrap();
        assert_eq!(manual.type_name(), "manual");
        assert_eq!(build(&manual, &http).unwrap().kind(), "manual");

        let unknown = serde_json::from_value::<ConnectorConfig>(serde_json::json!({
            "type": "webhook", "url": "https://x.example", "secret": "s", "retries": 3
        }))
        .unwrap_err();
        assert!(unknown.to_string().contains("unknown field `retries`"), "{unknown}");
        let no_type = serde_json::from_value::<ConnectorConfig>(serde_json::json!({"operator": "x"})).unwrap_err();
        assert!(no_type.to_string().contains("missing field `type`"), "{no_type}");

        let no_secret: ConnectorConfig =
            serde_json::from_value(serde_json::json!({"type": "webhook", "url": "https://x.example"})).unwrap();
        let err = build(&no_secret, &http).unwrap_err();
        assert_eq!(err, ConfigError::SecretSource { found: "none is".to_owned() });
    }
}
