//! The state of a run (one request moving through its workflow), its grant and its votes.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_workflows::{Operation, WorkflowKind};

use crate::ids::{GrantId, OutboxId, RunId, TaskId};

/// The status of a request, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting at an approval step.
    AwaitingApproval,
    /// An approver denied it.
    Denied,
    /// The approval deadline passed.
    Expired,
    /// The requester (or an admin) cancelled it.
    Cancelled,
    /// A connector call other than revoke is under way.
    Provisioning,
    /// Access is granted and waiting for its expiry.
    Active,
    /// Revocation is under way.
    Revoking,
    /// Every step ran.
    Completed,
    /// A step failed for good (see the grant for a revocation that keeps failing).
    Failed,
}

impl RunStatus {
    /// All statuses, in lifecycle order.
    pub const ALL: [Self; 9] = [
        Self::AwaitingApproval,
        Self::Denied,
        Self::Expired,
        Self::Cancelled,
        Self::Provisioning,
        Self::Active,
        Self::Revoking,
        Self::Completed,
        Self::Failed,
    ];

    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingApproval => "awaiting_approval",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Parses the snake_case name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// No further step will run (a failed revocation still retries in the background).
    #[must_use]
    pub fn is_final(self) -> bool {
        matches!(self, Self::Denied | Self::Expired | Self::Cancelled | Self::Completed | Self::Failed)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The status of a grant of access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantStatus {
    /// The grant call is under way.
    Provisioning,
    /// Access is in place.
    Active,
    /// The revoke call is under way.
    Revoking,
    /// Access was removed.
    Revoked,
    /// Revocation failed after its retry budget; still retried periodically. Never shown as
    /// revoked.
    RevokeFailed,
    /// Access was never granted.
    Failed,
}

impl GrantStatus {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Revoking => "revoking",
            Self::Revoked => "revoked",
            Self::RevokeFailed => "revoke_failed",
            Self::Failed => "failed",
        }
    }

    /// Parses the snake_case name.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Provisioning, Self::Active, Self::Revoking, Self::Revoked, Self::RevokeFailed, Self::Failed]
            .into_iter()
            .find(|x| x.as_str() == s)
    }

    /// Access may still be in place.
    #[must_use]
    pub fn may_hold_access(self) -> bool {
        matches!(self, Self::Active | Self::Revoking | Self::RevokeFailed)
    }
}

/// A run: one request moving through the workflow version it pinned at creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Id (also the request id).
    pub id: RunId,
    /// Request kind.
    pub kind: WorkflowKind,
    /// Workflow key.
    pub workflow_key: String,
    /// Pinned workflow version.
    pub workflow_version: u32,
    /// Status.
    pub status: RunStatus,
    /// Who asked.
    pub requester: String,
    /// Integration name.
    pub integration: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Requested duration, seconds.
    pub duration_secs: u64,
    /// Why.
    pub justification: String,
    /// The grant created (grant) or acted on (renew, rotate, revoke).
    pub grant_id: Option<GrantId>,
    /// Index of the current step; `steps.len()` once every step ran.
    pub step_index: u32,
    /// State of the current step.
    pub step: StepState,
    /// Compare-and-set version, incremented by every committed transition.
    pub version: i64,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last transition.
    pub updated_at: DateTime<Utc>,
    /// Why the run ended the way it did (denial comment, failure), if anything to say.
    pub reason: Option<String>,
    /// Emergency access: granted before its review (the workflow's `break_glass.review`).
    pub break_glass: bool,
}

/// State of the current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepState {
    /// Not in a waiting step (final, or between steps).
    Idle,
    /// Waiting for votes.
    Approval {
        /// When the step was reached.
        reached_at: DateTime<Utc>,
        /// When the step times out.
        deadline: DateTime<Utc>,
        /// Reminders sent so far.
        reminders: u32,
        /// Whether the step's escalation happened (its approvers may decide too).
        #[serde(default)]
        escalated: bool,
    },
    /// Waiting for a connector call.
    Action {
        /// The outbox item performing it.
        outbox_id: OutboxId,
        /// The operation.
        operation: Operation,
        /// The manual task the call became, once opened: its operator is reminded until done.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<TaskWait>,
    },
    /// Waiting for time to pass.
    Wait {
        /// Until when (moves when a renewal extends the grant).
        until: DateTime<Utc>,
        /// Whether this waits for the grant's expiry.
        expiry: bool,
    },
}

/// A manual task a run's action waits on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskWait {
    /// The task.
    pub id: TaskId,
    /// The principal who performs and confirms it.
    pub operator: String,
    /// Reminders sent so far.
    pub reminders: u32,
    /// Interval between reminders, in seconds (`None`: no reminders).
    pub remind_every_secs: Option<u64>,
}

/// An approver's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Approve.
    Approve,
    /// Deny.
    Deny,
}

impl Decision {
    /// The snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Deny => "deny",
        }
    }
}

/// A recorded vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    /// Step the vote belongs to.
    pub step_index: u32,
    /// Approver principal id.
    pub approver: String,
    /// Decision.
    pub decision: Decision,
    /// Comment or reason.
    pub comment: Option<String>,
    /// Where it was cast (`api`, `cli`, `slack`, `email`).
    pub channel: String,
    /// When.
    pub decided_at: DateTime<Utc>,
}

/// A grant of access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Id.
    pub id: GrantId,
    /// The grant run that created it and owns its expiry.
    pub run_id: RunId,
    /// Integration name.
    pub integration: String,
    /// Who holds the access.
    pub principal: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Status.
    pub status: GrantStatus,
    /// When access was put in place.
    pub granted_at: Option<DateTime<Utc>>,
    /// When access ends.
    pub expires_at: Option<DateTime<Utc>>,
    /// When access was removed.
    pub revoked_at: Option<DateTime<Utc>>,
    /// External reference returned by the connector (never a secret).
    pub reference: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Updated.
    pub updated_at: DateTime<Utc>,
}

/// Everything a transition reads about a run.
#[derive(Debug, Clone)]
pub struct RunState {
    /// The run.
    pub run: Run,
    /// Votes cast on this run, at every step (loaded while it awaits approval).
    pub votes: Vec<Vote>,
    /// The run's grant, if any.
    pub grant: Option<Grant>,
}
