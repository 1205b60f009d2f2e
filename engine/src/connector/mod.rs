//! Connectors: the adapters that perform grant/renew/revoke/rotate/verify on a SaaS; they never touch a run's state.
//!
//! Every call carries an idempotency key derived from the run and the step, identical on every
//! attempt, so a connector (or the system behind it) can make the effect happen exactly once even
//! though the engine delivers at least once.

pub mod github_app;
pub mod manual;
pub mod oauth2;
pub mod webhook;

use crate::action::ConnectorAction;
use crate::outbound::{ConfigError, ConnectorError};

/// A successful call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionOutcome {
    /// The effect happened; `reference` is an optional external id (never a secret).
    Done {
        /// External reference returned by the SaaS side, at most 200 chars, no secrets.
        reference: Option<String>,
        /// A credential the call minted for the grant's holder (an access token, an installation
        /// token), to hand over once; never logged, audited or shown anywhere else.
        minted: Option<Minted>,
    },
    /// A person must perform the action (manual connector); the engine creates a task.
    AwaitingOperator {
        /// The principal who must confirm.
        operator: String,
        /// What to do, shown to the operator.
        instructions: String,
        /// How often the operator is reminded while the task is open (`None`: never).
        remind_every: Option<std::time::Duration>,
    },
}

/// A credential minted by a connector for a grant's holder.
#[derive(Clone)]
pub struct Minted {
    /// The secret itself.
    pub value: secrecy::SecretString,
    /// When the SaaS side expires it, if it says.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted").field("value", &"[redacted]").field("expires_at", &self.expires_at).finish()
    }
}

impl PartialEq for Minted {
    fn eq(&self, other: &Self) -> bool {
        use secrecy::ExposeSecret as _;
        self.value.expose_secret() == other.value.expose_secret() && self.expires_at == other.expires_at
    }
}

impl Eq for Minted {}

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

    /// Whether `verify` is answered by the target itself, unattended: such integrations' grants
    /// are checked by drift reconciliation. (A manual connector would open a task per grant.)
    fn verifies(&self) -> bool {
        false
    }

    /// Whether `renew`, `rotate`, `revoke` and `verify` need the credential an earlier call
    /// minted for the grant (`ActionOutcome::Done::minted`; e.g. RFC 7009 revocation and
    /// RFC 7662 introspection take the token itself). For such connectors the engine keeps its
    /// own sealed copy of the latest minted credential of each grant (apart from the copy handed
    /// to the holder once, which is destroyed on retrieval) until that credential has expired (or,
    /// without an expiry, an hour after the grant's revocation), and calls
    /// [`Connector::execute_with_credential`] with it. Once it has expired, the engine answers
    /// `revoke` and an absence `verify` itself, without a call, and passes `None` to the others
    /// (see `crate::feature::grant_secrets`).
    fn needs_credential(&self) -> bool {
        false
    }

    /// [`Connector::execute`] with `credential`: the latest credential minted for
    /// `action.grant_id`, when the engine holds one (see [`Connector::needs_credential`]). It is
    /// never part of the [`ConnectorAction`], which is stored in the outbox and sent to webhooks.
    ///
    /// # Errors
    /// As [`Connector::execute`].
    async fn execute_with_credential(
        &self,
        action: &ConnectorAction,
        credential: Option<&secrecy::SecretString>,
    ) -> Result<ActionOutcome, ConnectorError> {
        let _ = credential;
        self.execute(action).await
    }
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
    Webhook(crate::outbound::webhook::WebhookSettings),
    /// Ask a person to do it ([`manual::ManualConnector`]).
    Manual(manual::ManualSettings),
    /// Mint, revoke and introspect OAuth 2.0 access tokens ([`oauth2::OAuth2Connector`]).
    Oauth2(Box<oauth2::OAuth2Settings>),
    /// Mint, revoke and check GitHub App installation access tokens
    /// ([`github_app::GithubAppConnector`]).
    GithubApp(Box<github_app::GithubAppSettings>),
}

impl ConnectorConfig {
    /// The connector type as written in `type`: `webhook`, `manual`, `oauth2` or `github_app`.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Webhook(_) => "webhook",
            Self::Manual(_) => "manual",
            Self::Oauth2(_) => "oauth2",
            Self::GithubApp(_) => "github_app",
        }
    }
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
        ConnectorConfig::Oauth2(settings) => std::sync::Arc::new(oauth2::OAuth2Connector::new(settings, http)?),
        ConnectorConfig::GithubApp(settings) => {
            std::sync::Arc::new(github_app::GithubAppConnector::new(settings, http)?)
        }
    })
}

#[cfg(test)]
mod config_tests {
    use std::time::Duration;

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
