//! Notifications as plain values, and the record of a message sent: never rendering, delivery or I/O.
//!
//! Transitions build a [`Notification`] (with its [`Route`], recipients and request summary), the
//! writer stores it in an outbox row, and the dispatcher hands it to each notification channel.
//! [`SlackMessageRef`] is what the store keeps about a message posted in Slack. These types live
//! in the core, not with the channels, so that transitions, effects and the store depend on no
//! adapter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
    /// Break-glass: emergency access granted before its review. Channels show it as an
    /// emergency.
    #[serde(default)]
    pub emergency: bool,
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

/// A freshly issued link token. `Debug` never shows the token.
#[derive(Clone)]
pub struct IssuedLink {
    /// The link's id (recorded in the audit log; not secret).
    pub id: Uuid,
    /// The token: goes into the email and nowhere else.
    pub token: String,
    /// When the link stops working (the approval's deadline).
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for IssuedLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedLink").field("id", &self.id).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}
