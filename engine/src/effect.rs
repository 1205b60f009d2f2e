//! Effects: what a transition asks the runtime to persist alongside the new state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_workflows::{Operation, RetryPolicy};

use crate::action::ConnectorAction;
use crate::ids::{GrantId, OutboxId};
use crate::message::Notification;

/// A durable timer's purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerKind {
    /// The approval step's deadline.
    ApprovalDeadline,
    /// The next reminder to pending approvers.
    Reminder,
    /// The end of a wait step (grant expiry or a plain delay).
    Wait,
    /// Shortly before a grant expires: warn its holder.
    ExpiryWarning,
    /// An undecided approval step widens its approvers.
    Escalation,
    /// The next reminder to the operator of an open manual task.
    TaskReminder,
}

impl TimerKind {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApprovalDeadline => "approval_deadline",
            Self::Reminder => "reminder",
            Self::Wait => "wait",
            Self::ExpiryWarning => "expiry_warning",
            Self::Escalation => "escalation",
            Self::TaskReminder => "task_reminder",
        }
    }

    /// Parses the snake_case name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approval_deadline" => Some(Self::ApprovalDeadline),
            "reminder" => Some(Self::Reminder),
            "wait" => Some(Self::Wait),
            "expiry_warning" => Some(Self::ExpiryWarning),
            "escalation" => Some(Self::Escalation),
            "task_reminder" => Some(Self::TaskReminder),
            _ => None,
        }
    }
}

/// Something to persist with the transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Insert a timer for the run's current step.
    ScheduleTimer {
        /// Purpose.
        kind: TimerKind,
        /// When.
        due_at: DateTime<Utc>,
    },
    /// Delete every pending timer of the run (it left the step they belonged to).
    ClearTimers,
    /// Delete the run's pending timers of one kind (what they were for is over).
    ClearTimersOf(TimerKind),
    /// Insert an outbox item.
    Enqueue(Box<NewOutbox>),
    /// Move another grant's expiry (renewal) and the timer of the run waiting for it.
    ExtendGrant {
        /// The grant.
        grant_id: GrantId,
        /// New expiry.
        expires_at: DateTime<Utc>,
    },
    /// Make the grant's own run leave its expiry wait now (revoked by another run).
    WakeGrantRun {
        /// The grant.
        grant_id: GrantId,
    },
}

/// A side effect to perform after commit, at least once, by the outbox dispatcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewOutbox {
    /// Id.
    pub id: OutboxId,
    /// Stable across attempts; handed to the connector or channel.
    pub idempotency_key: String,
    /// Step that enqueued it (results for another step are stale).
    pub step_index: u32,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Not before this time (a revocation repeated after a failed verification waits a while);
    /// `None`: at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<chrono::DateTime<chrono::Utc>>,
    /// What to do.
    pub payload: OutboxPayload,
}

/// The work of an outbox item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived values on their way to or from a JSON column; boxing buys nothing measurable"
)]
pub enum OutboxPayload {
    /// Call the integration's connector.
    Action {
        /// The call (its `attempt` is set at dispatch).
        action: ConnectorAction,
    },
    /// Send a notification.
    Notify {
        /// The notification.
        notification: Notification,
        /// The channel that delivers it; the writer fans a notification out to every configured
        /// channel, one outbox item (with its own retries and key) each.
        #[serde(default)]
        channel: Option<String>,
    },
}

impl OutboxPayload {
    /// `action` or `notify`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Action { .. } => "action",
            Self::Notify { .. } => "notify",
        }
    }

    /// The connector operation, for actions.
    #[must_use]
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Self::Action { action } => Some(action.operation),
            Self::Notify { .. } => None,
        }
    }
}
