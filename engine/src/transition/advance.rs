//! Moving a run forward: entering steps until one waits (approval, action, wait) or none is left.

use chrono::{DateTime, Utc};
use tollgate_workflows::{
    ActionStep, ApprovalStep, CredentialVersion, Operation, Recipient, RequestFacts, RetryPolicy, Step, WaitUntil,
};

use std::time::Duration;

use super::{Context, Outcome, TransitionError};
use crate::action::{ConnectorAction, Expect, IntegrationRef};
use crate::audit::AuditEvent;
use crate::effect::{Effect, NewOutbox, OutboxPayload, TimerKind};
use crate::ids::OutboxId;
use crate::message::{Notification, RecipientInfo, RequestSummary, Route};
use crate::run::{Grant, GrantStatus, Run, RunStatus, StepState};

/// Retry policy for notifications: they must not hang a run, but must not be dropped lightly.
pub(crate) const NOTIFY_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 8,
    backoff: tollgate_workflows::Duration::from_secs(1),
    max_backoff: tollgate_workflows::Duration::from_secs(300),
};

/// An audit event about `run`, attributed to `actor`.
pub(crate) fn event(
    run: &Run,
    event_type: &str,
    actor: &str,
    channel: &str,
    outcome: &str,
    details: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        event_type: event_type.to_owned(),
        channel: channel.to_owned(),
        outcome: outcome.to_owned(),
        actor: actor.to_owned(),
        subject: format!("request:{}", run.id),
        run_id: Some(run.id.0),
        justification: Some(run.justification.clone()),
        workflow_key: Some(run.workflow_key.clone()),
        workflow_version: i32::try_from(run.workflow_version).ok(),
        details,
    }
}

/// The current step of the run, if any is left.
pub(crate) fn current_step<'a>(run: &Run, ctx: &Context<'a>) -> Option<&'a Step> {
    ctx.definition.steps.get(run.step_index as usize)
}

/// Leaves the current step (clearing its timers) and enters the following ones.
pub(crate) fn complete_step(out: &mut Outcome, ctx: &Context<'_>) -> Result<(), TransitionError> {
    clear_timers(out);
    out.prior_approvals = 0;
    out.run.step_index = out.run.step_index.saturating_add(1);
    out.run.step = StepState::Idle;
    enter_step(out, ctx)
}

/// Drops the timers of the step being left; only approval and wait steps have any.
fn clear_timers(out: &mut Outcome) {
    if matches!(out.run.step, StepState::Approval { .. } | StepState::Wait { .. }) {
        out.effects.push(Effect::ClearTimers);
    }
}

/// Ends the run in `status`.
pub(crate) fn finish(out: &mut Outcome, status: RunStatus, reason: Option<String>) {
    clear_timers(out);
    out.run.status = status;
    out.run.step = StepState::Idle;
    out.run.reason = reason;
}

/// Enters the step at `run.step_index`, skipping steps whose guard does not admit the request
/// and running notify steps inline, until a step waits or the workflow ends.
///
/// # Errors
/// [`TransitionError::TimeOutOfRange`] when a deadline it computes is beyond the calendar.
pub(crate) fn enter_step(out: &mut Outcome, ctx: &Context<'_>) -> Result<(), TransitionError> {
    let risks = ctx.scope_risks(&out.run.scopes);
    let facts = RequestFacts { environment: &ctx.integration.environment, scope_risks: &risks };
    // Set once this run skipped a revoke step because another run revokes (or revoked) the
    // grant: a verification after it would check someone else's revocation, perhaps before it
    // happened, and a failure would start a second revocation (I1, I3). That run verifies its own.
    let mut revoked_elsewhere = false;
    loop {
        let Some(step) = current_step(&out.run, ctx) else {
            out.run.status = RunStatus::Completed;
            out.run.step = StepState::Idle;
            let ev = event(&out.run, "request_completed", "system", "engine", "success", serde_json::json!({}));
            out.audit.push(ev);
            return Ok(());
        };
        let index = out.run.step_index;
        if !step.guard().admits(&facts) {
            record_skip(out, step, None);
            out.run.step_index = out.run.step_index.saturating_add(1);
            continue;
        }
        match step {
            // Break-glass: the approvals before the grant become the review after it.
            Step::Approval(_) if out.run.break_glass && out.grant.is_none() => {
                record_skip(out, step, Some("break-glass: access first, review after".to_owned()));
                out.run.step_index = out.run.step_index.saturating_add(1);
            }
            Step::Approval(a) => return enter_approval(out, a, ctx, None),
            Step::Action(a) => {
                if let Some(status) = inactive_grant(out, a) {
                    refuse_action(out, a.operation, status, ctx);
                    return Ok(());
                }
                if a.operation == Operation::Verify && revoked_elsewhere {
                    let reason = "the grant's revocation belongs to another run, which verifies it";
                    record_skip(out, step, Some(reason.to_owned()));
                    out.run.step_index = out.run.step_index.saturating_add(1);
                    continue;
                }
                if enter_action(out, a, ctx)? {
                    return Ok(());
                }
                revoked_elsewhere |= a.operation == Operation::Revoke;
                out.run.step_index = out.run.step_index.saturating_add(1);
            }
            Step::Wait(w) => {
                let (until, expiry) = match (w.duration, w.until) {
                    (Some(d), _) => (later(ctx.now, d.as_std())?, false),
                    (None, Some(WaitUntil::Expiry)) => {
                        let expires = out.grant.as_ref().and_then(|g| g.expires_at).unwrap_or(ctx.now);
                        (expires, true)
                    }
                    (None, None) => (ctx.now, false),
                };
                if out.grant.as_ref().is_some_and(|g| g.status == GrantStatus::Active) {
                    out.run.status = RunStatus::Active;
                }
                out.run.step = StepState::Wait { until, expiry };
                out.effects.push(Effect::ScheduleTimer { kind: TimerKind::Wait, due_at: until });
                if let Some(warn_at) = ctx.expiry_warning.filter(|_| expiry).and_then(|l| until.checked_sub_signed(l))
                    && warn_at > ctx.now
                {
                    out.effects.push(Effect::ScheduleTimer { kind: TimerKind::ExpiryWarning, due_at: warn_at });
                }
                return Ok(());
            }
            Step::Notify(n) => {
                let recipients = recipients(&out.run, &n.to, ctx);
                let text = fill(&n.message, &out.run, out.grant.as_ref());
                let key = format!("{}:{}:notify", out.run.id, index);
                let event = n.event.as_deref().unwrap_or("message");
                enqueue_notification(out, ctx, event, recipients, text, key);
                out.run.step_index = out.run.step_index.saturating_add(1);
            }
        }
    }
}

/// Enters an approval: an approval step, or (`review_until` = the grant's expiry) the review of
/// a break-glass grant, whose deadline is its timeout or the expiry, whichever comes first.
fn enter_approval(
    out: &mut Outcome,
    a: &ApprovalStep,
    ctx: &Context<'_>,
    review_until: Option<DateTime<Utc>>,
) -> Result<(), TransitionError> {
    let mut deadline = later(ctx.now, a.timeout.as_std())?;
    if let Some(until) = review_until {
        deadline = deadline.min(until);
    }
    out.run.status = RunStatus::AwaitingApproval;
    out.run.step = StepState::Approval { reached_at: ctx.now, deadline, reminders: 0, escalated: false };
    out.effects.push(Effect::ScheduleTimer { kind: TimerKind::ApprovalDeadline, due_at: deadline });
    if let Some(e) = &a.escalation {
        let due = later(ctx.now, e.after.as_std())?;
        if due < deadline {
            out.effects.push(Effect::ScheduleTimer { kind: TimerKind::Escalation, due_at: due });
        }
    }
    if let Some(every) = a.reminder {
        let due = later(ctx.now, every.as_std())?;
        if due < deadline {
            out.effects.push(Effect::ScheduleTimer { kind: TimerKind::Reminder, due_at: due });
        }
    }
    let approvers = ctx.directory.eligible_approvers(&a.approvers, ctx.integration, &out.run.requester);
    let ev = event(
        &out.run,
        if review_until.is_some() { "review_requested" } else { "approval_requested" },
        "system",
        "engine",
        "success",
        serde_json::json!({
            "step": out.run.step_index, "quorum": a.quorum, "deadline": deadline, "approvers": approvers,
        }),
    );
    out.audit.push(ev);
    let emergency = if review_until.is_some() {
        "EMERGENCY (break-glass): access is already granted and must be reviewed now. "
    } else {
        ""
    };
    let text = format!(
        "{emergency}{}",
        format_args!(
            "{} asks for {} access to {} ({}) for {}: {}",
            out.run.requester,
            out.run.scopes.join(", "),
            out.run.integration,
            ctx.integration.environment,
            humantime::format_duration(std::time::Duration::from_secs(out.run.duration_secs)),
            out.run.justification
        )
    );
    let recipients = people(&approvers, ctx);
    let key = format!("{}:{}:approval_requested", out.run.id, out.run.step_index);
    enqueue_notification(out, ctx, "approval_requested", recipients, text, key);
    route_last(out, approval_route(a, out.run.step_index));
    Ok(())
}

/// The route of an approval step's requests and reminders.
pub(crate) fn approval_route(a: &ApprovalStep, step: u32) -> Route {
    Route { step: Some(step), actor: None, channels: a.channels.clone(), slack_channel: a.slack_channel.clone() }
}

/// The approval the run awaits: its current approval step, or — a break-glass run whose grant is
/// in place — the workflow's `break_glass.review`.
pub(crate) fn pending_approval<'a>(run: &Run, ctx: &Context<'a>) -> Option<&'a ApprovalStep> {
    pending_approval_in(run, ctx.definition)
}

/// [`pending_approval`] against a definition.
#[must_use]
pub fn pending_approval_in<'a>(run: &Run, def: &'a tollgate_workflows::WorkflowDefinition) -> Option<&'a ApprovalStep> {
    if !matches!(run.step, StepState::Approval { .. }) {
        return None;
    }
    match def.steps.get(run.step_index as usize) {
        Some(Step::Approval(a)) => Some(a),
        Some(_) if run.break_glass => def.break_glass.as_ref().map(|b| &b.review),
        _ => None,
    }
}

/// Whether the run is a break-glass run awaiting its review (its access is in place).
#[must_use]
pub fn in_review(run: &Run, def: &tollgate_workflows::WorkflowDefinition) -> bool {
    run.break_glass
        && matches!(run.step, StepState::Approval { .. })
        && !matches!(def.steps.get(run.step_index as usize), Some(Step::Approval(_)))
}

/// Records a break-glass request (`break_glass_used`) and tells the integration's owner at once,
/// in the review's Slack channel too when it names one.
pub(crate) fn break_glass_used(out: &mut Outcome, ctx: &Context<'_>) {
    let Some(b) = ctx.definition.break_glass.as_ref() else { return };
    let channel = out.audit.first().map_or_else(|| "api".to_owned(), |e| e.channel.clone());
    let ev = event(
        &out.run,
        "break_glass_used",
        &out.run.requester.clone(),
        &channel,
        "success",
        serde_json::json!({ "integration": out.run.integration, "scopes": out.run.scopes, "duration_secs": out.run.duration_secs }),
    );
    out.audit.push(ev);
    let text = format!(
        "EMERGENCY (break-glass): {} is taking {} access to {} ({}) for {} without prior approval: {}. \
         A review follows; a denied or late review revokes the access at once.",
        out.run.requester,
        out.run.scopes.join(", "),
        out.run.integration,
        ctx.integration.environment,
        humantime::format_duration(std::time::Duration::from_secs(out.run.duration_secs)),
        out.run.justification
    );
    let recipients = people(std::slice::from_ref(&ctx.integration.owner), ctx);
    let key = format!("{}:break_glass_used", out.run.id);
    enqueue_notification(out, ctx, "break_glass_used", recipients, text, key);
    route_last(out, Route { slack_channel: b.review.slack_channel.clone(), ..Route::default() });
}

/// A break-glass grant is in place: its review starts (the run stays on its grant step, awaiting
/// the review's approval, with the grant's expiry as the latest deadline).
pub(crate) fn enter_review(out: &mut Outcome, ctx: &Context<'_>) -> Result<(), TransitionError> {
    let Some(b) = ctx.definition.break_glass.as_ref() else { return complete_step(out, ctx) };
    clear_timers(out);
    out.prior_approvals = 0;
    let until = out.grant.as_ref().and_then(|g| g.expires_at).unwrap_or(ctx.now);
    enter_approval(out, &b.review, ctx, Some(until))
}

/// Ends a break-glass review that was denied or not done in time: the access is revoked now (the
/// run moves to its revoke step; validation guarantees one follows the grant), and the owner and
/// the requester are told, as an emergency.
pub(crate) fn revoke_after_review(
    out: &mut Outcome,
    event_type: &str,
    actor: &str,
    channel: &str,
    comment: Option<String>,
    ctx: &Context<'_>,
) -> Result<(), TransitionError> {
    let grant_id = out.run.grant_id.map(|g| g.to_string()).unwrap_or_default();
    let outcome = if event_type == "review_denied" { "denied" } else { "expired" };
    let mut ev = event(
        &out.run,
        event_type,
        actor,
        channel,
        outcome,
        serde_json::json!({ "step": out.run.step_index, "grant_id": grant_id, "comment": comment }),
    );
    ev.subject = format!("grant:{grant_id}");
    out.audit.push(ev);
    let why = if event_type == "review_denied" { format!("denied by {actor}") } else { "not done in time".to_owned() };
    let text = format!(
        "EMERGENCY (break-glass): the review of {}'s {} access to {} was {why}; the access is being revoked now.",
        out.run.requester,
        out.run.scopes.join(", "),
        out.run.integration
    );
    let mut notify = vec![ctx.integration.owner.clone(), out.run.requester.clone()];
    notify.dedup();
    let recipients = people(&notify, ctx);
    let key = format!("{}:{}:{event_type}", out.run.id, out.run.step_index);
    let slack_channel = ctx.definition.break_glass.as_ref().and_then(|b| b.review.slack_channel.clone());
    enqueue_notification(out, ctx, "break_glass_revoked", recipients, text, key);
    route_last(out, Route { slack_channel, ..Route::default() });
    let from = (out.run.step_index as usize).saturating_add(1);
    let revoke = ctx
        .definition
        .steps
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, s)| matches!(s, Step::Action(a) if a.operation == Operation::Revoke))
        .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX));
    clear_timers(out);
    out.prior_approvals = 0;
    out.run.step = StepState::Idle;
    out.run.reason = comment;
    out.run.step_index = revoke.unwrap_or(u32::MAX);
    enter_step(out, ctx)
}

/// Audits that the current step, `step`, is skipped (`step_skipped`), and why when it is not
/// its guard.
fn record_skip(out: &mut Outcome, step: &Step, reason: Option<String>) {
    record_skip_of(out, step.type_name(), step.id(), reason);
}

fn record_skip_of(out: &mut Outcome, type_name: &str, id: Option<&str>, reason: Option<String>) {
    let mut details = serde_json::json!({ "step": out.run.step_index, "type": type_name, "id": id });
    if let Some(reason) = reason {
        details["reason"] = serde_json::json!(reason);
    }
    let ev = event(&out.run, "step_skipped", "system", "engine", "success", details);
    out.audit.push(ev);
}

/// Enters an action step. Returns false when the step has nothing to do and was skipped.
fn enter_action(out: &mut Outcome, a: &ActionStep, ctx: &Context<'_>) -> Result<bool, TransitionError> {
    let Some(grant_id) = out.run.grant_id else { return Ok(false) };
    let index = out.run.step_index;
    if a.version == CredentialVersion::Previous {
        // The version a rotation replaced: revoked, or checked dead, after the grace period. The
        // grant keeps its current access and its status, whatever it is by now (a grant revoked
        // meanwhile still needs its old version ended).
        out.run.status = RunStatus::Provisioning;
        let expect = (a.operation == Operation::Verify).then_some(Expect::Absent);
        let call = Call {
            operation: a.operation,
            key: format!("{}:{index}", out.run.id),
            expires_at: None,
            expect,
            retry: a.retry,
            not_before: None,
            version: Some(CredentialVersion::Previous),
            keep_previous: false,
        };
        call_connector(out, call, ctx);
        return Ok(true);
    }
    let (key, expires_at) = match a.operation {
        Operation::Grant => {
            let expires = later(ctx.now, Duration::from_secs(out.run.duration_secs))?;
            out.grant = Some(Grant {
                id: grant_id,
                run_id: out.run.id,
                integration: out.run.integration.clone(),
                principal: out.run.requester.clone(),
                scopes: out.run.scopes.clone(),
                status: GrantStatus::Provisioning,
                granted_at: None,
                expires_at: Some(expires),
                revoked_at: None,
                reference: None,
                created_at: ctx.now,
                updated_at: ctx.now,
            });
            out.run.status = RunStatus::Provisioning;
            (format!("{}:{index}", out.run.id), Some(expires))
        }
        Operation::Revoke => {
            let Some(grant) = out.grant.as_mut() else { return Ok(false) };
            // One revocation per grant (I3): a grant already revoking (another run's revocation,
            // which keeps retrying until it succeeds) or revoked is not revoked again.
            if grant.status != GrantStatus::Active {
                let reason = match grant.status {
                    GrantStatus::Revoking | GrantStatus::RevokeFailed => {
                        format!("grant is {}: its revocation is under way", grant.status.as_str())
                    }
                    other => format!("grant is {}", other.as_str()),
                };
                record_skip_of(out, "action", a.id.as_deref(), Some(reason));
                return Ok(false);
            }
            grant.status = GrantStatus::Revoking;
            grant.updated_at = ctx.now;
            out.run.status = RunStatus::Revoking;
            // One revocation per grant, whichever run performs it: the key is the grant's.
            (format!("{grant_id}:revoke"), None)
        }
        Operation::Renew => {
            let expires = renewed_expiry(out.grant.as_ref(), out.run.duration_secs, ctx)?;
            out.run.status = RunStatus::Provisioning;
            (format!("{}:{index}", out.run.id), Some(expires))
        }
        Operation::Rotate => {
            out.run.status = RunStatus::Provisioning;
            (format!("{}:{index}", out.run.id), out.grant.as_ref().and_then(|g| g.expires_at))
        }
        Operation::Verify => {
            out.run.status = if expectation(out.grant.as_ref()) == Expect::Absent {
                RunStatus::Revoking
            } else {
                RunStatus::Provisioning
            };
            (format!("{}:{index}", out.run.id), out.grant.as_ref().and_then(|g| g.expires_at))
        }
    };
    let expect = (a.operation == Operation::Verify).then(|| expectation(out.grant.as_ref()));
    let keep_previous = a.operation == Operation::Rotate && revokes_previous_later(out.run.step_index, ctx);
    let call = Call {
        operation: a.operation,
        key,
        expires_at,
        expect,
        retry: a.retry,
        not_before: None,
        version: None,
        keep_previous,
    };
    call_connector(out, call, ctx);
    Ok(true)
}

/// What a verification of `grant` expects at the target: absent once its revocation began,
/// present otherwise.
fn expectation(grant: Option<&Grant>) -> Expect {
    if expects_absence(grant) { Expect::Absent } else { Expect::Present }
}

/// Whether a verification of `grant` checks that its access is gone.
pub(crate) fn expects_absence(grant: Option<&Grant>) -> bool {
    grant.is_some_and(|g| matches!(g.status, GrantStatus::Revoking | GrantStatus::RevokeFailed | GrantStatus::Revoked))
}

/// Whether the next step the run will perform after its current one (notify steps and steps
/// whose guard does not admit the request aside) is a verification: a revocation followed by one
/// is not complete until it succeeds.
pub(crate) fn verification_follows(run: &Run, ctx: &Context<'_>) -> bool {
    let risks = ctx.scope_risks(&run.scopes);
    let facts = RequestFacts { environment: &ctx.integration.environment, scope_risks: &risks };
    let next = ctx
        .definition
        .steps
        .iter()
        .skip((run.step_index as usize).saturating_add(1))
        .find(|s| !matches!(s, Step::Notify(_)) && s.guard().admits(&facts));
    matches!(next, Some(Step::Action(a)) if a.operation == Operation::Verify)
}

/// Whether a step after `index` revokes the version a rotation replaces: then the rotation keeps
/// it valid for the grace period in between (`ConnectorAction::keep_previous`). Validation
/// refuses a guard on that step, so it always runs.
fn revokes_previous_later(index: u32, ctx: &Context<'_>) -> bool {
    ctx.definition.steps.iter().skip((index as usize).saturating_add(1)).any(|s| {
        matches!(s, Step::Action(a) if a.operation == Operation::Revoke && a.version == CredentialVersion::Previous)
    })
}

/// Whether the run's current step acts on the version a rotation replaced.
pub(crate) fn on_previous_version(run: &Run, ctx: &Context<'_>) -> bool {
    matches!(current_step(run, ctx), Some(Step::Action(a)) if a.version == CredentialVersion::Previous)
}

/// A connector call to queue for the run's current step.
pub(crate) struct Call {
    pub(crate) operation: Operation,
    pub(crate) key: String,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) expect: Option<Expect>,
    pub(crate) retry: RetryPolicy,
    pub(crate) not_before: Option<DateTime<Utc>>,
    /// `Some(Previous)` for a call on the version a rotation replaced.
    pub(crate) version: Option<CredentialVersion>,
    /// For a rotation: keep the replaced version valid until a later step revokes it.
    pub(crate) keep_previous: bool,
}

/// Queues `call` through the outbox; the run's current step waits for its result.
pub(crate) fn call_connector(out: &mut Outcome, call: Call, ctx: &Context<'_>) {
    let grant_id = out.run.grant_id.map_or(uuid::Uuid::nil(), |g| g.0);
    let principal = out.grant.as_ref().map_or_else(|| out.run.requester.clone(), |g| g.principal.clone());
    let id: OutboxId = ctx.ids.next(ctx.now);
    let action = ConnectorAction {
        operation: call.operation,
        idempotency_key: call.key.clone(),
        run_id: out.run.id.0,
        grant_id,
        integration: IntegrationRef {
            name: ctx.integration.name.clone(),
            app: ctx.integration.app.clone(),
            environment: ctx.integration.environment.clone(),
        },
        principal,
        scopes: out.run.scopes.clone(),
        expires_at: call.expires_at,
        attempt: 0,
        expect: call.expect,
        version: call.version,
        keep_previous: call.keep_previous,
    };
    out.run.step = StepState::Action { outbox_id: id, operation: call.operation, task: None };
    out.effects.push(Effect::Enqueue(Box::new(NewOutbox {
        not_before: call.not_before,
        id,
        idempotency_key: call.key,
        step_index: out.run.step_index,
        retry: call.retry,
        payload: OutboxPayload::Action { action },
    })));
}

/// A verification after a revocation found the access still there (or could not tell): the
/// revocation did not hold, so the grant is `revoke_failed` (never shown as revoked: I1), the
/// requester and the integration's owner are alerted, and the revocation is sent again after
/// `retry`'s longest backoff (a new idempotency key: the receiver already answered the last one),
/// then verified again (the run stays on the verification step).
pub(crate) fn revoke_again(
    out: &mut Outcome,
    verify: OutboxId,
    error: &str,
    retry: RetryPolicy,
    ctx: &Context<'_>,
) -> Result<(), TransitionError> {
    let Some(grant) = out.grant.as_mut() else { return Ok(()) };
    grant.status = GrantStatus::RevokeFailed;
    grant.revoked_at = None;
    grant.updated_at = ctx.now;
    let grant_id = grant.id;
    out.run.status = RunStatus::Revoking;
    out.run.reason = Some(format!("access still present after revocation ({error}); revoking again"));
    let mut notify = vec![out.run.requester.clone(), ctx.integration.owner.clone()];
    notify.dedup();
    let recipients = people(&notify, ctx);
    let text = format!(
        "Access to {} ({}) for {} is still present after its revocation ({error}). Tollgate is revoking it again. Request: {}",
        out.run.integration,
        out.run.scopes.join(", "),
        out.grant.as_ref().map_or("-", |g| g.principal.as_str()),
        out.run.id
    );
    let key = format!("{}:{}:verify_failed:{verify}", out.run.id, out.run.step_index);
    enqueue_notification(out, ctx, "revoke_failed", recipients, text, key);
    let not_before = later(ctx.now, retry.max_backoff.as_std())?;
    let call = Call {
        operation: Operation::Revoke,
        key: format!("{grant_id}:revoke:{verify}"),
        expires_at: None,
        expect: None,
        retry,
        not_before: Some(not_before),
        version: None,
        keep_previous: false,
    };
    call_connector(out, call, ctx);
    Ok(())
}

/// The grant's status when `a` renews or rotates a grant that is no longer active (I4: renew and
/// rotate act on active grants only, checked when performed, not only when asked: the grant may
/// have been revoked or expired while the request awaited approval).
fn inactive_grant(out: &Outcome, a: &ActionStep) -> Option<GrantStatus> {
    if !matches!(a.operation, Operation::Renew | Operation::Rotate) {
        return None;
    }
    let status = out.grant.as_ref().map_or(GrantStatus::Failed, |g| g.status);
    (status != GrantStatus::Active).then_some(status)
}

/// Ends a run whose renew or rotate found its grant no longer active: nothing is sent to the
/// connector; the refusal is audited and the requester told.
fn refuse_action(out: &mut Outcome, op: Operation, status: GrantStatus, ctx: &Context<'_>) {
    let grant_id = out.run.grant_id.map(|g| g.to_string()).unwrap_or_default();
    let detail = format!("the grant is {}", status.as_str());
    let mut ev = event(
        &out.run,
        "action_refused",
        "system",
        "engine",
        "refused",
        serde_json::json!({
            "step": out.run.step_index, "operation": op.as_str(), "grant_id": grant_id,
            "code": "grant_not_active", "grant_status": status.as_str(),
        }),
    );
    ev.subject = format!("grant:{grant_id}");
    out.audit.push(ev);
    let key = format!("{}:{}:refused", out.run.id, out.run.step_index);
    let text = format!(
        "{} of {} on {} was not performed: {detail}. Request: {}",
        op.as_str(),
        out.run.scopes.join(", "),
        out.run.integration,
        out.run.id
    );
    finish(out, RunStatus::Failed, Some(format!("grant_not_active: {detail}")));
    let recipients = people(std::slice::from_ref(&out.run.requester), ctx);
    enqueue_notification(out, ctx, "failed", recipients, text, key);
}

/// Queues a notification (no-op without recipients).
/// Sets the route of the notification [`enqueue_notification`] just queued (if it queued one).
pub(crate) fn route_last(out: &mut Outcome, route: Route) {
    if let Some(Effect::Enqueue(item)) = out.effects.last_mut()
        && let OutboxPayload::Notify { notification, .. } = &mut item.payload
    {
        notification.route = route;
    }
}

pub(crate) fn enqueue_notification(
    out: &mut Outcome,
    ctx: &Context<'_>,
    event_name: &str,
    recipients: Vec<RecipientInfo>,
    text: String,
    key: String,
) {
    if recipients.is_empty() {
        return;
    }
    let notification = Notification {
        idempotency_key: key.clone(),
        event: event_name.to_owned(),
        request_id: out.run.id.0,
        recipients,
        request: summary(out, ctx),
        text,
        route: Route::default(),
    };
    out.effects.push(Effect::Enqueue(Box::new(NewOutbox {
        not_before: None,
        id: ctx.ids.next(ctx.now),
        idempotency_key: key,
        step_index: out.run.step_index,
        retry: NOTIFY_RETRY,
        payload: OutboxPayload::Notify { notification, channel: None },
    })));
}

fn summary(out: &Outcome, ctx: &Context<'_>) -> RequestSummary {
    let (needed, deadline) = match (&out.run.step, pending_approval(&out.run, ctx)) {
        (StepState::Approval { deadline, .. }, Some(a)) => {
            let new = out
                .votes
                .iter()
                .filter(|v| v.step_index == out.run.step_index && v.decision == crate::run::Decision::Approve)
                .count();
            let have = out.prior_approvals.saturating_add(u32::try_from(new).unwrap_or(u32::MAX));
            (Some(a.quorum.saturating_sub(have)), Some(*deadline))
        }
        _ => (None, None),
    };
    RequestSummary {
        kind: out.run.kind.as_str().to_owned(),
        requester: out.run.requester.clone(),
        integration: out.run.integration.clone(),
        environment: ctx.integration.environment.clone(),
        scopes: out.run.scopes.clone(),
        duration_secs: out.run.duration_secs,
        justification: out.run.justification.clone(),
        status: out.run.status.as_str().to_owned(),
        approvals_needed: needed,
        deadline,
        expires_at: out.grant.as_ref().and_then(|g| g.expires_at),
        emergency: out.run.break_glass,
    }
}

/// Resolves recipient roles to people.
pub(crate) fn recipients(run: &Run, to: &[Recipient], ctx: &Context<'_>) -> Vec<RecipientInfo> {
    let mut ids: Vec<String> = Vec::new();
    for r in to {
        match r {
            Recipient::Requester => ids.push(run.requester.clone()),
            Recipient::Owner => ids.push(ctx.integration.owner.clone()),
            Recipient::Approvers => {
                for step in &ctx.definition.steps {
                    if let Step::Approval(a) = step {
                        ids.extend(ctx.directory.eligible_approvers(&a.approvers, ctx.integration, &run.requester));
                    }
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    people(&ids, ctx)
}

/// Contact details of principals.
pub(crate) fn people(ids: &[String], ctx: &Context<'_>) -> Vec<RecipientInfo> {
    ids.iter()
        .filter_map(|id| ctx.directory.active_principal(id))
        .map(|p| RecipientInfo {
            principal: p.id.clone(),
            name: p.name.clone(),
            email: p.email.clone(),
            slack_user_id: p.slack_user_id.clone(),
        })
        .collect()
}

/// Fills `{placeholders}` in a notify step's message.
pub(crate) fn fill(template: &str, run: &Run, grant: Option<&Grant>) -> String {
    let expires = grant
        .and_then(|g| g.expires_at)
        .map_or_else(|| "-".to_owned(), |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    template
        .replace("{requester}", &run.requester)
        .replace("{integration}", &run.integration)
        .replace("{scopes}", &run.scopes.join(", "))
        .replace("{expires_at}", &expires)
        .replace("{request}", &run.id.to_string())
}

/// The expiry a renewal gives `grant` now: its duration from now, never earlier than the current
/// expiry, and never past the grant's lifetime (the renew workflow's `max_lifetime`; checked when
/// the request was made, but time passes before it is approved and performed).
///
/// # Errors
/// [`TransitionError::TimeOutOfRange`].
pub(crate) fn renewed_expiry(
    grant: Option<&Grant>,
    duration_secs: u64,
    ctx: &Context<'_>,
) -> Result<DateTime<Utc>, TransitionError> {
    let mut wanted = later(ctx.now, Duration::from_secs(duration_secs))?;
    if let (Some(g), Some(lifetime)) = (grant, ctx.definition.parameters.lifetime()) {
        wanted = wanted.min(lifetime_end(g, lifetime)?);
    }
    Ok(grant.and_then(|g| g.expires_at).map_or(wanted, |current| current.max(wanted)))
}

/// When `grant`'s lifetime ends: `lifetime` after it was granted (or created, if never granted).
///
/// # Errors
/// [`TransitionError::TimeOutOfRange`].
pub(crate) fn lifetime_end(
    grant: &Grant,
    lifetime: tollgate_workflows::Duration,
) -> Result<DateTime<Utc>, TransitionError> {
    later(grant.granted_at.unwrap_or(grant.created_at), lifetime.as_std())
}

/// `at` plus `d`, checked: a time the calendar cannot hold is a typed error, never a panic.
/// Requested durations and definitions are bounded ([`tollgate_workflows::MAX_DURATION`]) long
/// before this, so it only guards against data that slipped past them.
///
/// # Errors
/// [`TransitionError::TimeOutOfRange`].
pub(crate) fn later(at: DateTime<Utc>, d: Duration) -> Result<DateTime<Utc>, TransitionError> {
    chrono::Duration::from_std(d).ok().and_then(|d| at.checked_add_signed(d)).ok_or(TransitionError::TimeOutOfRange)
}
