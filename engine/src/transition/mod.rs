//! Pure transitions: `(state, command, context) -> (new state, audit events, effects)`.
//!
//! Nothing here touches the database, the network or the wall clock; the runtime persists the
//! outcome, its audit records and its effects in one transaction. A transition that returns an
//! error has changed nothing.

// No arithmetic that can overflow or panic: counters saturate, times use checked operations
// (`advance::later`) and turn into `TransitionError::TimeOutOfRange`.
#![deny(clippy::arithmetic_side_effects)]

mod advance;
mod command;
mod start;

use chrono::{DateTime, Utc};
use tollgate_workflows::{Risk, WorkflowDefinition};

pub use advance::{in_review, pending_approval_in};
pub(crate) use command::may_decide;
pub use command::{Cast, Command, apply, is_retry};
pub use start::{MIN_DURATION, NewRequest, RequestError, start};

use crate::audit::AuditEvent;
use crate::directory::{Directory, Integration};
use crate::effect::Effect;
use crate::run::{Grant, Run, RunStatus, Vote};

/// What a transition reads besides the run's state.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The pinned workflow definition.
    pub definition: &'a WorkflowDefinition,
    /// The directory as it is now.
    pub directory: &'a Directory,
    /// The run's integration.
    pub integration: &'a Integration,
    /// The current time.
    pub now: DateTime<Utc>,
    /// Warn a grant's holder this long before it expires (none: no warning).
    pub expiry_warning: Option<chrono::Duration>,
    /// Where the ids the transition creates (grants, outbox items) come from.
    pub ids: &'a crate::ids::IdSource,
}

impl Context<'_> {
    fn scope_risks(&self, scopes: &[String]) -> Vec<Risk> {
        scopes.iter().map(|s| self.integration.scope(s).map_or(Risk::High, |d| d.risk)).collect()
    }
}

/// The result of a transition, for the runtime to persist in one transaction.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// New run state (version not yet incremented: the store does that on compare-and-set).
    pub run: Run,
    /// The run's grant, to upsert, when it changed.
    pub grant: Option<Grant>,
    /// Votes to insert.
    pub votes: Vec<Vote>,
    /// Audit events, in order.
    pub audit: Vec<AuditEvent>,
    /// Timers, outbox items and cross-run effects.
    pub effects: Vec<Effect>,
    /// Approvals recorded at the current step before this transition (for notification
    /// summaries); reset when the run leaves the step.
    pub prior_approvals: u32,
}

/// The audit record of a refused decision (a refusal is evidence too).
#[must_use]
pub fn refusal_event(run: &Run, actor: &str, decision: &str, channel: &str, err: &TransitionError) -> AuditEvent {
    // The caller of a request it may not see is told "not found"; the evidence says why.
    let reason = if *err == TransitionError::NotVisible { "not_visible" } else { err.code() };
    let details = serde_json::json!({ "decision": decision, "reason": reason, "status": run.status.as_str() });
    advance::event(run, "decision_rejected", actor, channel, "rejected", details)
}

/// Why a command was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The request already reached a decision or a final state.
    #[error("request is already decided (status {0})")]
    AlreadyDecided(RunStatus),
    /// The approval deadline passed.
    #[error("the approval deadline has passed")]
    Expired,
    /// The request was cancelled.
    #[error("the request was cancelled")]
    Cancelled,
    /// Requesters cannot approve their own requests (nor through a service they own).
    #[error("requesters cannot decide on their own requests")]
    SelfApproval,
    /// The request is not one the actor may see ([`crate::policy::may_view_request`]): answered
    /// as for a request that does not exist.
    #[error("request not found")]
    NotVisible,
    /// The principal is not an eligible approver for this step.
    #[error("{0} is not an eligible approver for this request")]
    NotAnApprover(String),
    /// The approver already voted on this step.
    #[error("{0} has already decided on this request")]
    AlreadyVoted(String),
    /// Only the requester or an admin may cancel.
    #[error("only the requester or an admin may cancel this request")]
    NotAllowed,
    /// The grant is not active, so it cannot be revoked or renewed now.
    #[error("grant is not active (status {0})")]
    GrantNotActive(String),
    /// The decision was cast on an approval step the run has left (a message or dialog from an
    /// earlier step).
    #[error("that approval step is over")]
    StepOver,
    /// The request cannot be created.
    #[error(transparent)]
    Invalid(#[from] start::RequestError),
    /// A deadline or expiry computed from the request would lie beyond the calendar.
    #[error("a computed time is out of range")]
    TimeOutOfRange,
    /// A break-glass request under review already has its access: it cannot be cancelled.
    #[error("the break-glass access is already granted: revoke the grant instead")]
    AccessGranted,
}

impl TransitionError {
    /// A stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlreadyDecided(_) => "already_decided",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::SelfApproval => "self_approval",
            Self::NotAnApprover(_) => "not_an_approver",
            Self::NotVisible => "not_found",
            Self::AlreadyVoted(_) => "already_voted",
            Self::NotAllowed => "forbidden",
            Self::GrantNotActive(_) => "grant_not_active",
            Self::StepOver => "step_over",
            Self::TimeOutOfRange => "time_out_of_range",
            Self::AccessGranted => "access_granted",
            Self::Invalid(e) => e.code(),
        }
    }

    /// The error a decision on a run in `status` gets.
    fn for_final(status: RunStatus) -> Self {
        match status {
            RunStatus::Expired => Self::Expired,
            RunStatus::Cancelled => Self::Cancelled,
            other => Self::AlreadyDecided(other),
        }
    }
}

#[cfg(test)]
mod tests;
