//! Creating a run from a request: every check a request must pass before anything is written.

use tollgate_workflows::{Duration, MAX_DURATION, WorkflowDefinition, WorkflowKind};

use super::{Context, Outcome, TransitionError, advance};
use crate::audit::AuditEvent;
use crate::ids::{GrantId, RunId};
use crate::policy;
use crate::run::{Grant, GrantStatus, Run, RunStatus, StepState};

/// A request as submitted (already authenticated).
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Pre-allocated id.
    pub id: RunId,
    /// Authenticated requester.
    pub requester: String,
    /// Kind.
    pub kind: WorkflowKind,
    /// Integration name.
    pub integration: String,
    /// Scopes (for renew/rotate/revoke: empty means the grant's scopes).
    pub scopes: Vec<String>,
    /// Requested duration (default from the workflow when absent).
    pub duration: Option<Duration>,
    /// Why.
    pub justification: String,
    /// The existing grant, for renew/rotate/revoke.
    pub grant: Option<Grant>,
    /// Channel it came through (`api`, `cli`, `slack`).
    pub channel: String,
    /// Emergency access: granted at once, reviewed after (the workflow's `break_glass`).
    pub break_glass: bool,
}

/// The shortest access a request may ask for (`"1ms"` would otherwise be a zero-second grant).
pub const MIN_DURATION: std::time::Duration = std::time::Duration::from_secs(1);

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// A scope the integration does not offer.
    #[error("scope {0:?} cannot be requested on this integration")]
    UnknownScope(String),
    /// No scopes given.
    #[error("at least one scope is required")]
    NoScopes,
    /// Longer than the workflow allows.
    #[error("duration {asked} exceeds the maximum of {max}")]
    DurationTooLong {
        /// Asked.
        asked: Duration,
        /// Allowed.
        max: Duration,
    },
    /// The workflow has no default and none was given.
    #[error("a duration is required")]
    DurationRequired,
    /// Justification required but empty.
    #[error("a justification is required")]
    JustificationRequired,
    /// The requester may not use this workflow.
    #[error("{0} may not request access through this workflow")]
    RequesterNotAllowed(String),
    /// Renew/rotate/revoke without a grant.
    #[error("a grant id is required for {0} requests")]
    GrantRequired(WorkflowKind),
    /// Grant requests must not name a grant.
    #[error("grant requests must not name an existing grant")]
    GrantNotExpected,
    /// The grant belongs to another integration.
    #[error("the grant belongs to integration {0:?}")]
    GrantIntegrationMismatch(String),
    /// The grant cannot be acted on.
    #[error("grant is not active (status {0})")]
    GrantNotActive(&'static str),
    /// Renew, rotate and revoke act on the grant's whole scope set: another set (wider, which
    /// would escalate past the grant workflow, or narrower, which would revoke less than was
    /// granted while the grant showed `revoked`) is refused.
    #[error(
        "a {kind} request acts on the grant's whole scope set [{held}]: name exactly those scopes, \
         or none (more access is a new grant request)",
        held = .held.join(", ")
    )]
    ScopeMismatch {
        /// The request's kind.
        kind: WorkflowKind,
        /// The grant's scopes.
        held: Vec<String>,
    },
    /// A renewal past the grant's lifetime (the renew workflow's `max_lifetime` from when the
    /// grant was made): renewals cannot keep access going for ever.
    #[error(
        "this renewal would keep the grant past its lifetime of {lifetime} (until {until}); ask \
         for less, or request a new grant"
    )]
    LifetimeExceeded {
        /// The renew workflow's lifetime.
        lifetime: Duration,
        /// When the grant's lifetime ends.
        until: chrono::DateTime<chrono::Utc>,
    },
    /// Access shorter than [`MIN_DURATION`].
    #[error("duration {0} is shorter than the minimum of 1s")]
    DurationTooShort(Duration),
    /// Someone else's grant (only its holder or an admin may renew/rotate/revoke it).
    #[error("only the grant's holder or an admin may ask for this")]
    NotGrantHolder,
    /// Break-glass asked of a workflow that offers none (or of a renew, rotate or revoke).
    #[error("the workflow governing this request offers no break-glass access")]
    BreakGlassUnavailable,
    /// The requester is not among the workflow's `break_glass.requesters`.
    #[error("{0} may not use break-glass access through this workflow")]
    BreakGlassNotAllowed(String),
    /// An approval the request would reach has fewer people who may approve it than its quorum
    /// (often nobody: the workflow names only the requester, or a group with no enabled member),
    /// escalation included ([`crate::policy::check_approvable`]): the request would wait for
    /// nobody until its deadline.
    #[error("{}", no_eligible_approver(.step, *.quorum, .requester, .eligible))]
    NoEligibleApprover {
        /// The approval: `steps[0] ("owner")` or `break_glass.review`.
        step: String,
        /// Its quorum.
        quorum: u32,
        /// Who asked.
        requester: String,
        /// Who may approve at it (fewer than `quorum`).
        eligible: Vec<String>,
    },
}

fn no_eligible_approver(step: &str, quorum: u32, requester: &str, eligible: &[String]) -> String {
    let fix = "the workflow or the directory must change before such a request can be made";
    if eligible.is_empty() {
        format!(
            "approval {step} has no eligible approver: none of the approvers it names is an enabled person \
             other than the requester ({requester}); {fix}"
        )
    } else {
        format!(
            "approval {step} needs {quorum} approvals from distinct people, but only {} may approve a request by \
             {requester}; {fix}",
            eligible.join(", ")
        )
    }
}

impl RequestError {
    /// A stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownScope(_) | Self::NoScopes => "invalid_scope",
            Self::DurationTooLong { .. } => "duration_too_long",
            Self::DurationTooShort(_) => "duration_too_short",
            Self::LifetimeExceeded { .. } => "lifetime_exceeded",
            Self::ScopeMismatch { .. } => "scope_mismatch",
            Self::DurationRequired => "duration_required",
            Self::JustificationRequired => "justification_required",
            Self::RequesterNotAllowed(_) | Self::NotGrantHolder | Self::BreakGlassNotAllowed(_) => "forbidden",
            Self::BreakGlassUnavailable => "break_glass_unavailable",
            Self::GrantRequired(_) | Self::GrantNotExpected | Self::GrantIntegrationMismatch(_) => "invalid_grant",
            Self::GrantNotActive(_) => "grant_not_active",
            Self::NoEligibleApprover { .. } => "no_eligible_approver",
        }
    }

    /// Whether a request refused for this reason is audited (`request_rejected`, by
    /// `CreateRequest` in the engine, so on every path: API, CLI, Slack).
    ///
    /// Audited: a request that is valid input but refused by policy — the workflow does not let
    /// this requester ask ([`Self::RequesterNotAllowed`]) or take break-glass access
    /// ([`Self::BreakGlassNotAllowed`]), the grant to renew, rotate or revoke is someone else's
    /// ([`Self::NotGrantHolder`]), or nobody could approve the request
    /// ([`Self::NoEligibleApprover`], a configuration someone must fix). Each is an attempt at
    /// access that policy refused: evidence, as a refused decision is.
    ///
    /// Not audited: input the requester corrects and sends again (scopes, durations and the
    /// grant's lifetime, a missing justification, the grant named, break-glass asked of a
    /// workflow that offers none) and a grant that is no longer active (its state, not a
    /// policy): the caller is told why, and recording every typo would bury the refusals that
    /// matter. Requests refused before the workflow is known (an unknown integration, no
    /// workflow, a field out of its limits) are input errors too, and not audited.
    #[must_use]
    pub fn is_audited(&self) -> bool {
        match self {
            Self::RequesterNotAllowed(_)
            | Self::BreakGlassNotAllowed(_)
            | Self::NotGrantHolder
            | Self::NoEligibleApprover { .. } => true,
            Self::UnknownScope(_)
            | Self::NoScopes
            | Self::DurationTooLong { .. }
            | Self::DurationRequired
            | Self::DurationTooShort(_)
            | Self::LifetimeExceeded { .. }
            | Self::JustificationRequired
            | Self::GrantRequired(_)
            | Self::GrantNotExpected
            | Self::GrantIntegrationMismatch(_)
            | Self::GrantNotActive(_)
            | Self::ScopeMismatch { .. }
            | Self::BreakGlassUnavailable => false,
        }
    }
}

impl NewRequest {
    /// The audit record of this request refused by policy ([`RequestError::is_audited`]) under
    /// `definition`: `request_rejected`, outcome `rejected`, by the requester through the
    /// request's channel. No request exists, so its subject is the integration; `details` hold
    /// the refusal's `reason` (its error code) and `detail` (its message), and what was asked
    /// (`kind`, `integration`, `scopes`, `break_glass`, `grant_id`).
    #[must_use]
    pub fn rejection_event(&self, definition: &WorkflowDefinition, err: &RequestError) -> AuditEvent {
        AuditEvent {
            event_type: "request_rejected".to_owned(),
            channel: self.channel.clone(),
            outcome: "rejected".to_owned(),
            actor: self.requester.clone(),
            subject: format!("integration:{}", self.integration),
            run_id: None,
            justification: Some(self.justification.clone()),
            workflow_key: Some(definition.key.clone()),
            workflow_version: i32::try_from(definition.version).ok(),
            details: serde_json::json!({
                "reason": err.code(),
                "detail": err.to_string(),
                "kind": self.kind.as_str(),
                "integration": self.integration,
                "scopes": self.scopes,
                "break_glass": self.break_glass,
                "grant_id": self.grant.as_ref().map(|g| g.id.to_string()),
            }),
        }
    }
}

/// Validates a request and builds the new run, entering its first waiting step.
///
/// `requester_is_admin` lets admins act on grants they do not hold.
///
/// # Errors
/// [`TransitionError::Invalid`] naming the first problem.
pub fn start(req: NewRequest, requester_is_admin: bool, ctx: &Context<'_>) -> Result<Outcome, TransitionError> {
    let def = ctx.definition;
    let params = &def.parameters;
    if !ctx.directory.may_request(&req.requester, &params.requesters) {
        return Err(RequestError::RequesterNotAllowed(req.requester).into());
    }
    if params.require_justification && req.justification.trim().is_empty() {
        return Err(RequestError::JustificationRequired.into());
    }
    if req.break_glass {
        let Some(b) = def.break_glass.as_ref().filter(|_| req.kind == WorkflowKind::Grant) else {
            return Err(RequestError::BreakGlassUnavailable.into());
        };
        if !ctx.directory.may_request(&req.requester, &b.requesters) {
            return Err(RequestError::BreakGlassNotAllowed(req.requester).into());
        }
        // An emergency is no reason to skip saying why: the review needs it.
        if req.justification.trim().is_empty() {
            return Err(RequestError::JustificationRequired.into());
        }
    }
    let (grant_id, scopes, grant) = match (req.kind, req.grant) {
        (WorkflowKind::Grant, Some(_)) => return Err(RequestError::GrantNotExpected.into()),
        (WorkflowKind::Grant, None) => {
            if req.scopes.is_empty() {
                return Err(RequestError::NoScopes.into());
            }
            (ctx.ids.next::<GrantId>(ctx.now), req.scopes, None)
        }
        (kind, None) => return Err(RequestError::GrantRequired(kind).into()),
        (_, Some(grant)) => {
            if grant.integration != req.integration {
                return Err(RequestError::GrantIntegrationMismatch(grant.integration).into());
            }
            if grant.principal != req.requester && !requester_is_admin {
                return Err(RequestError::NotGrantHolder.into());
            }
            if grant.status != GrantStatus::Active {
                return Err(RequestError::GrantNotActive(grant.status.as_str()).into());
            }
            let asked: std::collections::BTreeSet<&str> = req.scopes.iter().map(String::as_str).collect();
            let held: std::collections::BTreeSet<&str> = grant.scopes.iter().map(String::as_str).collect();
            if !asked.is_empty() && asked != held {
                return Err(RequestError::ScopeMismatch { kind: req.kind, held: grant.scopes.clone() }.into());
            }
            (grant.id, grant.scopes.clone(), Some(grant))
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for s in &scopes {
        if ctx.integration.scope(s).is_none() {
            return Err(RequestError::UnknownScope(s.clone()).into());
        }
        seen.insert(s.clone());
    }
    let scopes: Vec<String> = seen.into_iter().collect();
    // One bound for every kind, whatever the workflow says (a renew or rotate workflow may
    // state none): no requested duration reaches time arithmetic unchecked.
    let max = params.max_duration.map_or(MAX_DURATION, |m| m.min(MAX_DURATION));
    let duration = match (req.duration, params.default_duration, params.max_duration) {
        (Some(d), _, _) if d > max => {
            return Err(RequestError::DurationTooLong { asked: d, max }.into());
        }
        (Some(d), _, _) => Some(d),
        (None, Some(d), _) => Some(d),
        (None, None, Some(max)) => Some(max),
        (None, None, None) => None,
    };
    if let Some(d) = duration
        && d.as_std() < MIN_DURATION
    {
        return Err(RequestError::DurationTooShort(d).into());
    }
    if req.kind == WorkflowKind::Renew
        && let (Some(g), Some(d), Some(lifetime)) = (&grant, duration, params.lifetime())
    {
        let until = advance::lifetime_end(g, lifetime)?;
        if advance::later(ctx.now, d.as_std())? > until {
            return Err(RequestError::LifetimeExceeded { lifetime, until }.into());
        }
    }
    let duration_secs = match (req.kind, duration) {
        (WorkflowKind::Grant | WorkflowKind::Renew, None) => return Err(RequestError::DurationRequired.into()),
        (_, d) => d.map_or(0, Duration::as_secs),
    };
    // Last: who may approve depends on nothing the requester can fix by asking differently.
    policy::check_approvable(def, ctx.directory, ctx.integration, &req.requester, &scopes, req.break_glass).map_err(
        |u| RequestError::NoEligibleApprover {
            step: u.step,
            quorum: u.quorum,
            requester: req.requester.clone(),
            eligible: u.eligible,
        },
    )?;

    let run = Run {
        id: req.id,
        kind: req.kind,
        workflow_key: def.key.clone(),
        workflow_version: def.version,
        status: RunStatus::Provisioning,
        requester: req.requester,
        integration: req.integration,
        scopes,
        duration_secs,
        justification: req.justification,
        grant_id: Some(grant_id),
        step_index: 0,
        step: StepState::Idle,
        version: 0,
        created_at: ctx.now,
        updated_at: ctx.now,
        reason: None,
        break_glass: req.break_glass,
    };
    let mut out = Outcome { run, grant, votes: Vec::new(), audit: Vec::new(), effects: Vec::new(), prior_approvals: 0 };
    let created = AuditEvent {
        event_type: "request_created".to_owned(),
        channel: req.channel,
        outcome: "success".to_owned(),
        actor: out.run.requester.clone(),
        subject: format!("request:{}", out.run.id),
        run_id: Some(out.run.id.0),
        justification: Some(out.run.justification.clone()),
        workflow_key: Some(def.key.clone()),
        workflow_version: i32::try_from(def.version).ok(),
        details: serde_json::json!({
            "kind": out.run.kind.as_str(),
            "integration": out.run.integration,
            "scopes": out.run.scopes,
            "duration_secs": out.run.duration_secs,
            "grant_id": grant_id.to_string(),
        }),
    };
    out.audit.push(created);
    if out.run.break_glass {
        advance::break_glass_used(&mut out, ctx);
    }
    advance::enter_step(&mut out, ctx)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tollgate_workflows::{Duration, WorkflowKind};

    use super::RequestError;

    #[test]
    fn refusals_of_authority_and_of_configuration_are_audited_input_errors_are_not() {
        let hour = Duration::from_secs(3600);
        let table = [
            (RequestError::RequesterNotAllowed("alice".into()), true),
            (RequestError::BreakGlassNotAllowed("alice".into()), true),
            (RequestError::NotGrantHolder, true),
            (
                RequestError::NoEligibleApprover {
                    step: "steps[0]".into(),
                    quorum: 1,
                    requester: "alice".into(),
                    eligible: vec![],
                },
                true,
            ),
            (RequestError::UnknownScope("x".into()), false),
            (RequestError::NoScopes, false),
            (RequestError::DurationTooLong { asked: hour, max: hour }, false),
            (RequestError::DurationRequired, false),
            (RequestError::DurationTooShort(hour), false),
            (RequestError::LifetimeExceeded { lifetime: hour, until: chrono::DateTime::UNIX_EPOCH }, false),
            (RequestError::JustificationRequired, false),
            (RequestError::GrantRequired(WorkflowKind::Renew), false),
            (RequestError::GrantNotExpected, false),
            (RequestError::GrantIntegrationMismatch("x".into()), false),
            (RequestError::GrantNotActive("revoked"), false),
            (RequestError::ScopeMismatch { kind: WorkflowKind::Revoke, held: vec![] }, false),
            (RequestError::BreakGlassUnavailable, false),
        ];
        for (err, audited) in table {
            assert_eq!(err.is_audited(), audited, "{err:?}");
        }
    }
}
