//! Notification channels: how approval requests, reminders and outcomes reach people.

pub mod email;
pub mod webhook;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::connector::ConnectorError;
use crate::links::IssuedLink;

/// A notification, rendered by a channel. Contains no secrets by construction: only request
/// metadata that approvers are entitled to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Stable per (run, step, event, occurrence): receivers deduplicate on it.
    pub idempotency_key: String,
    /// Event name: `approval_requested`, `approval_reminder`, `approval_escalated`, `approved`, `denied`, `expired`,
    /// `cancelled`, `granted`, `expiring`, `revoked`, `revoke_failed`, `failed`, `message`.
    pub event: String,
    /// The request (run) concerned.
    pub request_id: Uuid,
    /// Who should receive it.
    pub recipients: Vec<RecipientInfo>,
    /// Request summary.
    pub request: RequestSummary,
    /// Human-readable text (already filled in from templates).
    pub text: String,
    /// Where the workflow sends it and what it is about, for channels that keep state (Slack).
    #[serde(default, skip_serializing_if = "Route::is_empty")]
    pub route: Route,
}

/// Routing and context of a notification beyond its text.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The approval step concerned (approval requests, reminders and their outcomes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// Who decided, cancelled or let it expire (`system`), for outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The channels the workflow routes it to; empty: every configured channel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
    /// A Slack channel id to post approval requests in, instead of messaging each approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack_channel: Option<String>,
}

impl Route {
    /// Whether nothing is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// A person to notify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientInfo {
    /// Principal id.
    pub principal: String,
    /// Display name.
    pub name: String,
    /// Email address, if known.
    pub email: Option<String>,
    /// Slack user id, if known.
    pub slack_user_id: Option<String>,
}

/// What a notification says about the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// Request kind.
    pub kind: String,
    /// Requester principal id.
    pub requester: String,
    /// Integration name.
    pub integration: String,
    /// Integration environment.
    pub environment: String,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// Requested duration in seconds.
    pub duration_secs: u64,
    /// The requester's justification, verbatim (channels must escape it).
    pub justification: String,
    /// Current status.
    pub status: String,
    /// Approvals still needed at the current step, if any.
    pub approvals_needed: Option<u32>,
    /// Approval deadline, if any.
    pub deadline: Option<DateTime<Utc>>,
    /// Grant expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A delivery channel.
#[async_trait::async_trait]
pub trait NotificationChannel: Send + Sync + std::fmt::Debug {
    /// Channel name used in the audit log (`webhook`, `log`, later `slack`, `email`).
    fn name(&self) -> &'static str;

    /// Delivers `notification`.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] for transient failures, [`ConnectorError::Permanent`] otherwise.
    async fn send(&self, notification: &Notification) -> Result<(), ConnectorError>;

    /// Delivers `notification` with access to the engine (approval links, message records).
    /// Channels that need nothing from the engine keep the default, [`Self::send`].
    ///
    /// # Errors
    /// As [`Self::send`].
    async fn deliver(&self, notification: &Notification, _ctx: &dyn DeliveryContext) -> Result<(), ConnectorError> {
        self.send(notification).await
    }
}

/// What a channel may ask of the engine while delivering one outbox item (of one run and step).
#[async_trait::async_trait]
pub trait DeliveryContext: Send + Sync {
    /// Issues single-use email approval links for `principals` at the item's approval step, in
    /// order; `None` for a principal who cannot decide there (the requester, no longer eligible,
    /// already voted) and for everyone once the step is over. Each link is stored (hashed)
    /// before this returns.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] when the links cannot be recorded now.
    async fn approval_links(&self, principals: &[String]) -> Result<Vec<Option<IssuedLink>>, ConnectorError>;

    /// The Slack messages already posted about this run, oldest first.
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] when they cannot be read now.
    async fn slack_messages(&self) -> Result<Vec<SlackMessageRef>, ConnectorError> {
        Ok(Vec::new())
    }

    /// Records a Slack message posted about this run (before anything else is posted, so a
    /// retried delivery skips it).
    ///
    /// # Errors
    /// [`ConnectorError::Retryable`] when it cannot be recorded now.
    async fn record_slack_message(&self, _message: &SlackMessageRef) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A Slack message posted about a run: an approval request, in a channel or a direct message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackMessageRef {
    /// The approval step it asks about.
    pub step_index: u32,
    /// Conversation id (`C…`, or `D…` for a direct message).
    pub channel_id: String,
    /// Message timestamp (Slack's message id).
    pub ts: String,
    /// The principal it was sent to, or empty for a shared channel.
    pub recipient: String,
}

/// A context that offers nothing: no links are issued (previews, tests, channels used alone).
#[derive(Debug, Default)]
pub struct NoContext;

#[async_trait::async_trait]
impl DeliveryContext for NoContext {
    async fn approval_links(&self, principals: &[String]) -> Result<Vec<Option<IssuedLink>>, ConnectorError> {
        Ok(vec![None; principals.len()])
    }
}

/// A channel that only logs that a notification was produced (used when none is configured).
#[derive(Debug, Default)]
pub struct LogChannel;

#[async_trait::async_trait]
impl NotificationChannel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn send(&self, n: &Notification) -> Result<(), ConnectorError> {
        tracing::info!(request.id = %n.request_id, event = %n.event, recipients = n.recipients.len(), "notification (no channel configured)");
        Ok(())
    }
}
