//! Commands on an existing run: decisions, cancellation, timers, connector results, early revoke.

use std::time::Duration;

use tollgate_workflows::{Operation, Step, TimeoutOutcome};

use super::advance::{
    approval_route, complete_step, current_step, enqueue_notification, enter_review, enter_step, event,
    expects_absence, finish, in_review, later, on_previous_version, pending_approval, people, renewed_expiry,
    revoke_after_review, revoke_again, route_last, verification_follows,
};
use super::{Context, Outcome, TransitionError};
use crate::effect::{Effect, TimerKind};
use crate::ids::{OutboxId, TaskId};
use crate::message::Route;
use crate::policy::{self, Viewer};
use crate::run::{Decision, GrantStatus, RunState, RunStatus, StepState, TaskWait, Vote};

/// A decision as cast by an approver, through any channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cast {
    /// The authenticated approver (a principal id).
    pub actor: String,
    /// Approve or deny.
    pub decision: Decision,
    /// Comment (a reason, for denials).
    pub comment: Option<String>,
    /// `api`, `cli`, `slack`, `email`.
    pub channel: String,
    /// Channel evidence recorded with the decision (`null` for none): the email link's id, or
    /// the Slack user and team ids.
    pub origin: serde_json::Value,
    /// The approval step the decision was cast on (a button or link names one); refused with
    /// `step_over` once the run moved on. `None`: the current step.
    pub step: Option<u32>,
}

impl Cast {
    /// A plain decision on the current step, without channel evidence (API, CLI).
    #[must_use]
    pub fn new(actor: &str, decision: Decision, comment: Option<String>, channel: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            decision,
            comment,
            channel: channel.to_owned(),
            origin: serde_json::Value::Null,
            step: None,
        }
    }
}

/// Something that happens to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// An approver decides.
    Decide(Cast),
    /// The requester or an admin withdraws a pending request.
    Cancel {
        /// Who.
        actor: String,
        /// Whether `actor` is an admin.
        is_admin: bool,
        /// Where.
        channel: String,
    },
    /// A timer of the run came due.
    TimerFired {
        /// Purpose.
        kind: TimerKind,
        /// The step it was set for.
        step_index: u32,
    },
    /// A connector call succeeded.
    ActionSucceeded {
        /// The outbox item.
        outbox_id: OutboxId,
        /// External reference.
        reference: Option<String>,
        /// When the call completed (access starts then, not when the result was recorded);
        /// `None` means now.
        at: Option<chrono::DateTime<chrono::Utc>>,
        /// `system`, or the operator who confirmed a manual task.
        actor: String,
        /// `engine`, or `api` for manual tasks.
        channel: String,
    },
    /// A connector call failed for good (permanent error or retries exhausted).
    ActionFailed {
        /// The outbox item.
        outbox_id: OutboxId,
        /// Why (safe to show: no secrets).
        error: String,
        /// `system`, or the operator who reported failure.
        actor: String,
        /// Where.
        channel: String,
    },
    /// The connector call became a manual task: tell its operator, and remind them until done.
    TaskOpened {
        /// The outbox item of the call.
        outbox_id: OutboxId,
        /// The task.
        task_id: TaskId,
        /// Who performs and confirms it.
        operator: String,
        /// What to do (no secrets).
        instructions: String,
        /// Interval between reminders (`None`: none).
        remind_every: Option<Duration>,
    },
    /// Revoke the run's grant now instead of at expiry.
    RevokeNow {
        /// Who asked (`system` when another run revoked it).
        actor: String,
        /// Where.
        channel: String,
    },
}

/// Applies `command` to `state`. `Ok(None)` means nothing is to be written: the command is stale
/// (a timer or result for a step the run already left) or repeats a decision already recorded
/// (see [`is_retry`]).
///
/// # Errors
/// [`TransitionError`] when the command is refused; nothing changed.
pub fn apply(state: RunState, command: Command, ctx: &Context<'_>) -> Result<Option<Outcome>, TransitionError> {
    let RunState { mut run, votes, grant } = state;
    run.updated_at = ctx.now;
    let prior = votes.iter().filter(|v| v.step_index == run.step_index && v.decision == Decision::Approve).count();
    let prior_approvals = u32::try_from(prior).unwrap_or(u32::MAX);
    let mut out = Outcome { run, grant, votes: Vec::new(), audit: Vec::new(), effects: Vec::new(), prior_approvals };
    match command {
        Command::Decide(cast) => {
            if is_retry(&votes, &cast) {
                return Ok(None);
            }
            decide(&mut out, &votes, cast, ctx)?;
        }
        Command::Cancel { actor, is_admin, channel } => {
            if out.run.status != RunStatus::AwaitingApproval {
                return Err(TransitionError::for_final(out.run.status));
            }
            if actor != out.run.requester && !is_admin {
                return Err(TransitionError::NotAllowed);
            }
            if in_review(&out.run, ctx.definition) {
                // Cancelling would end the run with the access in place.
                return Err(TransitionError::AccessGranted);
            }
            let ev = event(&out.run, "request_cancelled", &actor, &channel, "cancelled", serde_json::json!({}));
            out.audit.push(ev);
            let approvers = match pending_approval(&out.run, ctx) {
                Some(a) => {
                    let escalated = matches!(out.run.step, StepState::Approval { escalated: true, .. });
                    ctx.directory.eligible_approvers(&a.approvers_at(escalated), ctx.integration, &out.run.requester)
                }
                _ => Vec::new(),
            };
            let key = format!("{}:{}:cancelled", out.run.id, out.run.step_index);
            let text = format!(
                "{} withdrew the request for {} on {}.",
                out.run.requester,
                out.run.scopes.join(", "),
                out.run.integration
            );
            let step = out.run.step_index;
            finish(&mut out, RunStatus::Cancelled, None);
            fail_unstarted_grant(&mut out);
            let recipients = people(&approvers, ctx);
            enqueue_notification(&mut out, ctx, "cancelled", recipients, text, key);
            route_last(&mut out, outcome_route(step, &actor));
        }
        Command::TimerFired { kind, step_index } => {
            if step_index != out.run.step_index || out.run.status.is_final() {
                return Ok(None);
            }
            if !timer_fired(&mut out, &votes, kind, ctx)? {
                return Ok(None);
            }
        }
        Command::ActionSucceeded { outbox_id, reference, at, actor, channel } => {
            let Some(op) = pending_action(&out, outbox_id) else { return Ok(None) };
            task_resolved(&mut out);
            let at = at.filter(|t| *t <= ctx.now).unwrap_or(ctx.now);
            action_succeeded(&mut out, op, reference, at, &actor, &channel, ctx)?;
        }
        Command::ActionFailed { outbox_id, error, actor, channel } => {
            let Some(op) = pending_action(&out, outbox_id) else { return Ok(None) };
            task_resolved(&mut out);
            action_failed(&mut out, op, outbox_id, error, &actor, &channel, ctx)?;
        }
        Command::TaskOpened { outbox_id, task_id, operator, instructions, remind_every } => {
            let open = matches!(out.run.step, StepState::Action { task: Some(_), .. });
            if open || pending_action(&out, outbox_id).is_none() {
                return Ok(None); // a retried job, or a task for a call the run no longer awaits
            }
            task_opened(
                &mut out,
                TaskWait { id: task_id, operator, reminders: 0, remind_every_secs: remind_every.map(|d| d.as_secs()) },
                &instructions,
                ctx,
            )?;
        }
        Command::RevokeNow { actor, channel } => {
            let status = out.grant.as_ref().map_or("none", |g| g.status.as_str());
            if !matches!(out.run.step, StepState::Wait { expiry: true, .. })
                || out.grant.as_ref().is_none_or(|g| g.status != GrantStatus::Active)
            {
                return Err(TransitionError::GrantNotActive(status.to_owned()));
            }
            let grant_id = out.run.grant_id.map(|g| g.to_string());
            let mut ev = event(
                &out.run,
                "revoke_requested",
                &actor,
                &channel,
                "success",
                serde_json::json!({ "grant_id": grant_id }),
            );
            ev.subject = format!("grant:{}", grant_id.unwrap_or_default());
            out.audit.push(ev);
            complete_step(&mut out, ctx)?;
        }
    }
    Ok(Some(out))
}

/// Whether `cast` repeats the vote its approver already left on this run: the same principal,
/// the same decision, on the same step when the cast names one. That is a retry after a lost
/// answer (a crash, a timeout) or a double click; it records nothing and succeeds like the
/// original, whatever the run did since. A different decision is still refused (one vote per
/// person per run).
#[must_use]
pub fn is_retry(votes: &[Vote], cast: &Cast) -> bool {
    votes
        .iter()
        .any(|v| v.approver == cast.actor && v.decision == cast.decision && cast.step.is_none_or(|s| s == v.step_index))
}

/// Whether `actor` may decide on a run of `requester` with `approvers`: not the requester (nor
/// the same person), eligible now, and not yet voted on this run. One vote per person per run:
/// someone who decided at an earlier approval step does not count again at a later one (a
/// two-person rule on top of an owner approval means three people).
pub(crate) fn may_decide(
    directory: &crate::directory::Directory,
    integration: &crate::directory::Integration,
    approvers: &tollgate_workflows::Approvers,
    requester: &str,
    votes: &[Vote],
    actor: &str,
) -> Result<(), TransitionError> {
    if directory.is_same_person(actor, requester) {
        return Err(TransitionError::SelfApproval);
    }
    if !directory.is_eligible_approver(actor, approvers, integration, requester) {
        return Err(TransitionError::NotAnApprover(actor.to_owned()));
    }
    if votes.iter().any(|v| directory.is_same_person(&v.approver, actor)) {
        return Err(TransitionError::AlreadyVoted(actor.to_owned()));
    }
    Ok(())
}

fn decide(out: &mut Outcome, votes: &[Vote], cast: Cast, ctx: &Context<'_>) -> Result<(), TransitionError> {
    let Cast { actor, decision, comment, channel, origin, step: cast_on } = cast;
    // The requester (or the same person through another principal, or a service's accountable
    // person) is told so; then someone who may not see the request learns nothing about it, not
    // even that it exists or how it ended (the API answers as for a missing request).
    if ctx.directory.is_same_person(&actor, &out.run.requester) {
        return Err(TransitionError::SelfApproval);
    }
    let viewer = ctx.directory.principals.get(&actor).map_or(Viewer::new(&actor, &[]), Viewer::of);
    if !policy::may_view_request(viewer, &out.run, Some(ctx.definition), ctx.directory) {
        return Err(TransitionError::NotVisible);
    }
    if out.run.status != RunStatus::AwaitingApproval {
        return Err(TransitionError::for_final(out.run.status));
    }
    if cast_on.is_some_and(|s| s != out.run.step_index) {
        return Err(TransitionError::StepOver);
    }
    let (Some(step), StepState::Approval { deadline, escalated, .. }) =
        (pending_approval(&out.run, ctx), &out.run.step)
    else {
        return Err(TransitionError::AlreadyDecided(out.run.status));
    };
    if ctx.now >= *deadline {
        return Err(TransitionError::Expired);
    }
    may_decide(ctx.directory, ctx.integration, &step.approvers_at(*escalated), &out.run.requester, votes, &actor)?;
    let vote = Vote {
        step_index: out.run.step_index,
        approver: actor.clone(),
        decision,
        comment: comment.clone(),
        channel: channel.clone(),
        decided_at: ctx.now,
    };
    let count = |d: Decision| {
        let here = votes.iter().filter(|v| v.step_index == out.run.step_index && v.decision == d).count();
        let n = here.saturating_add(usize::from(decision == d));
        u32::try_from(n).unwrap_or(u32::MAX)
    };
    let (approvals, denials) = (count(Decision::Approve), count(Decision::Deny));
    let (event_type, outcome) = match decision {
        Decision::Approve => ("approval_recorded", "approved"),
        Decision::Deny => ("denial_recorded", "denied"),
    };
    let mut details = serde_json::json!({
        "step": out.run.step_index, "comment": comment, "approvals": approvals, "quorum": step.quorum,
    });
    if !origin.is_null() {
        details["origin"] = origin;
    }
    out.audit.push(event(&out.run, event_type, &actor, &channel, outcome, details));
    out.votes.push(vote);
    let requester = people(std::slice::from_ref(&out.run.requester), ctx);
    let review = in_review(&out.run, ctx.definition);
    if review && approvals >= step.quorum {
        out.audit.push(event(
            &out.run,
            "review_approved",
            &actor,
            &channel,
            "approved",
            serde_json::json!({ "step": out.run.step_index, "approvals": approvals }),
        ));
        let key = format!("{}:{}:review_approved", out.run.id, out.run.step_index);
        let text = format!(
            "The review of your emergency access to {} ({}) approved it; it lasts until it expires.",
            out.run.integration,
            out.run.scopes.join(", ")
        );
        let step = out.run.step_index;
        complete_step(out, ctx)?;
        enqueue_notification(out, ctx, "approved", requester, text, key);
        route_last(out, outcome_route(step, &actor));
    } else if review && denials >= step.deny_quorum {
        revoke_after_review(out, "review_denied", &actor, &channel, comment, ctx)?;
    } else if approvals >= step.quorum {
        out.audit.push(event(
            &out.run,
            "request_approved",
            &actor,
            &channel,
            "approved",
            serde_json::json!({ "step": out.run.step_index, "approvals": approvals }),
        ));
        let key = format!("{}:{}:approved", out.run.id, out.run.step_index);
        let text = format!("Your request for {} on {} was approved.", out.run.scopes.join(", "), out.run.integration);
        let step = out.run.step_index;
        complete_step(out, ctx)?;
        enqueue_notification(out, ctx, "approved", requester, text, key);
        route_last(out, outcome_route(step, &actor));
    } else if denials >= step.deny_quorum {
        out.audit.push(event(
            &out.run,
            "request_denied",
            &actor,
            &channel,
            "denied",
            serde_json::json!({ "step": out.run.step_index, "comment": comment }),
        ));
        let key = format!("{}:{}:denied", out.run.id, out.run.step_index);
        let text =
            format!("Your request for {} on {} was denied by {actor}.", out.run.scopes.join(", "), out.run.integration);
        let step = out.run.step_index;
        finish(out, RunStatus::Denied, comment);
        fail_unstarted_grant(out);
        enqueue_notification(out, ctx, "denied", requester, text, key);
        route_last(out, outcome_route(step, &actor));
    }
    Ok(())
}

/// The route of an approval's outcome: which step ended, and who ended it.
fn outcome_route(step: u32, actor: &str) -> Route {
    Route { step: Some(step), actor: Some(actor.to_owned()), ..Route::default() }
}

/// Returns false when the timer does not belong to the current step (stale).
fn timer_fired(out: &mut Outcome, votes: &[Vote], kind: TimerKind, ctx: &Context<'_>) -> Result<bool, TransitionError> {
    if kind == TimerKind::ApprovalDeadline && in_review(&out.run, ctx.definition) {
        revoke_after_review(out, "review_expired", "system", "engine", Some("review deadline passed".to_owned()), ctx)?;
        return Ok(true);
    }
    let approval = pending_approval(&out.run, ctx).map(|a| Step::Approval(a.clone()));
    let step_now = approval.as_ref().or_else(|| current_step(&out.run, ctx));
    match (kind, step_now, out.run.step.clone()) {
        (TimerKind::ApprovalDeadline, Some(Step::Approval(step)), StepState::Approval { .. }) => {
            let requester = people(std::slice::from_ref(&out.run.requester), ctx);
            match step.on_timeout {
                TimeoutOutcome::Deny => {
                    out.audit.push(event(
                        &out.run,
                        "approval_expired",
                        "system",
                        "engine",
                        "expired",
                        serde_json::json!({ "step": out.run.step_index }),
                    ));
                    let key = format!("{}:{}:expired", out.run.id, out.run.step_index);
                    let text = format!(
                        "Your request for {} on {} expired without approval.",
                        out.run.scopes.join(", "),
                        out.run.integration
                    );
                    let step = out.run.step_index;
                    finish(out, RunStatus::Expired, Some("approval deadline passed".to_owned()));
                    fail_unstarted_grant(out);
                    enqueue_notification(out, ctx, "expired", requester, text, key);
                    route_last(out, outcome_route(step, "system"));
                }
                TimeoutOutcome::Approve => {
                    out.audit.push(event(
                        &out.run,
                        "request_approved",
                        "system",
                        "engine",
                        "approved_on_timeout",
                        serde_json::json!({ "step": out.run.step_index }),
                    ));
                    complete_step(out, ctx)?;
                }
            }
        }
        (
            TimerKind::Reminder,
            Some(Step::Approval(step)),
            StepState::Approval { deadline, reached_at, reminders, escalated },
        ) => {
            let pending: Vec<String> = ctx
                .directory
                .eligible_approvers(&step.approvers_at(escalated), ctx.integration, &out.run.requester)
                .into_iter()
                .filter(|a| !votes.iter().any(|v| &v.approver == a))
                .collect();
            let n = reminders.saturating_add(1);
            out.audit.push(event(
                &out.run,
                "approval_reminded",
                "system",
                "engine",
                "success",
                serde_json::json!({ "step": out.run.step_index, "reminder": n, "approvers": pending }),
            ));
            let key = format!("{}:{}:reminder:{n}", out.run.id, out.run.step_index);
            let text =
                format!("Reminder: {} is waiting for your approval on {}.", out.run.requester, out.run.integration);
            let recipients = people(&pending, ctx);
            enqueue_notification(out, ctx, "approval_reminder", recipients, text, key);
            route_last(out, approval_route(step, out.run.step_index));
            out.run.step = StepState::Approval { reached_at, deadline, reminders: n, escalated };
            if let Some(every) = step.reminder {
                let due = later(ctx.now, every.as_std())?;
                if due < deadline {
                    out.effects.push(Effect::ScheduleTimer { kind: TimerKind::Reminder, due_at: due });
                }
            }
        }
        (TimerKind::TaskReminder, _, StepState::Action { outbox_id, operation, task: Some(task) }) => {
            let Some(every) = task.remind_every_secs else { return Ok(false) };
            let n = task.reminders.saturating_add(1);
            out.audit.push(event(
                &out.run,
                "task_reminded",
                "system",
                "engine",
                "success",
                serde_json::json!({ "step": out.run.step_index, "task_id": task.id, "operator": task.operator, "reminder": n }),
            ));
            let key = format!("{}:{}:task:{}:reminder:{n}", out.run.id, out.run.step_index, task.id);
            let text = format!(
                "Reminder: task {} ({} of {} on {} for {}) is still open. {}",
                task.id,
                operation.as_str(),
                out.run.scopes.join(", "),
                out.run.integration,
                out.run.requester,
                how_to_close(task.id)
            );
            let recipients = people(std::slice::from_ref(&task.operator), ctx);
            enqueue_notification(out, ctx, "task_reminder", recipients, text, key);
            route_last(out, Route { step: Some(out.run.step_index), ..Route::default() });
            let due = later(ctx.now, Duration::from_secs(every))?;
            out.effects.push(Effect::ScheduleTimer { kind: TimerKind::TaskReminder, due_at: due });
            out.run.step = StepState::Action { outbox_id, operation, task: Some(TaskWait { reminders: n, ..task }) };
        }
        (
            TimerKind::Escalation,
            Some(Step::Approval(step)),
            StepState::Approval { deadline, reached_at, reminders, escalated: false },
        ) => {
            let before = ctx.directory.eligible_approvers(&step.approvers, ctx.integration, &out.run.requester);
            let added: Vec<String> = ctx
                .directory
                .eligible_approvers(&step.approvers_at(true), ctx.integration, &out.run.requester)
                .into_iter()
                .filter(|a| !before.contains(a) && !votes.iter().any(|v| ctx.directory.is_same_person(&v.approver, a)))
                .collect();
            out.audit.push(event(
                &out.run,
                "approval_escalated",
                "system",
                "engine",
                "success",
                serde_json::json!({ "step": out.run.step_index, "approvers": added }),
            ));
            out.run.step = StepState::Approval { reached_at, deadline, reminders, escalated: true };
            let key = format!("{}:{}:escalated", out.run.id, out.run.step_index);
            let text = format!(
                "Escalated: {} is still waiting for approval on {}; you may now decide.",
                out.run.requester, out.run.integration
            );
            let recipients = people(&added, ctx);
            enqueue_notification(out, ctx, "approval_escalated", recipients, text, key);
            route_last(out, approval_route(step, out.run.step_index));
        }
        (TimerKind::ExpiryWarning, Some(Step::Wait(_)), StepState::Wait { expiry: true, until }) => {
            let holder = out.grant.as_ref().map_or_else(|| out.run.requester.clone(), |g| g.principal.clone());
            let grant_id = out.run.grant_id.map(|g| g.to_string()).unwrap_or_default();
            let mut ev = event(
                &out.run,
                "access_expiring",
                "system",
                "engine",
                "success",
                serde_json::json!({ "grant_id": grant_id, "expires_at": until }),
            );
            ev.subject = format!("grant:{grant_id}");
            out.audit.push(ev);
            let key = format!("{}:{}:expiring:{}", out.run.id, out.run.step_index, until.timestamp());
            let text = format!(
                "Your access to {} ({}) ends at {}.",
                out.run.integration,
                out.run.scopes.join(", "),
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            let recipients = people(std::slice::from_ref(&holder), ctx);
            enqueue_notification(out, ctx, "expiring", recipients, text, key);
        }
        (TimerKind::Wait, Some(Step::Wait(_)), StepState::Wait { expiry, .. }) => {
            if expiry {
                let grant_id = out.run.grant_id.map(|g| g.to_string());
                let mut ev = event(
                    &out.run,
                    "access_expired",
                    "system",
                    "engine",
                    "success",
                    serde_json::json!({ "grant_id": grant_id }),
                );
                ev.subject = format!("grant:{}", grant_id.unwrap_or_default());
                out.audit.push(ev);
            }
            complete_step(out, ctx)?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

fn pending_action(out: &Outcome, outbox_id: OutboxId) -> Option<Operation> {
    match out.run.step {
        StepState::Action { outbox_id: id, operation, .. } if id == outbox_id => Some(operation),
        _ => None,
    }
}

/// How an operator closes a task, on every path.
fn how_to_close(task: TaskId) -> String {
    format!(
        "When it is done, confirm with `tollgate task complete {task}` (or report a failure with \
         `tollgate task complete {task} --failed -m WHY`), or POST /v1/tasks/{task}/complete."
    )
}

/// The run's action became a manual task: the operator is told what to do (every configured
/// channel, like an approval request) and reminded until the task is resolved.
fn task_opened(
    out: &mut Outcome,
    task: TaskWait,
    instructions: &str,
    ctx: &Context<'_>,
) -> Result<(), TransitionError> {
    let StepState::Action { outbox_id, operation, task: None } = out.run.step.clone() else { return Ok(()) };
    let key = format!("{}:{}:task:{}", out.run.id, out.run.step_index, task.id);
    let text = format!("Task {} for you:\n{instructions}\n{}", task.id, how_to_close(task.id));
    let recipients = people(std::slice::from_ref(&task.operator), ctx);
    enqueue_notification(out, ctx, "task_assigned", recipients, text, key);
    route_last(out, Route { step: Some(out.run.step_index), ..Route::default() });
    if let Some(every) = task.remind_every_secs {
        let due = later(ctx.now, Duration::from_secs(every))?;
        out.effects.push(Effect::ScheduleTimer { kind: TimerKind::TaskReminder, due_at: due });
    }
    out.run.step = StepState::Action { outbox_id, operation, task: Some(task) };
    Ok(())
}

/// The action's task (if any) is resolved: its reminders stop.
fn task_resolved(out: &mut Outcome) {
    if let StepState::Action { task, .. } = &mut out.run.step
        && task.take().is_some()
    {
        out.effects.push(Effect::ClearTimersOf(TimerKind::TaskReminder));
    }
}

fn action_succeeded(
    out: &mut Outcome,
    op: Operation,
    reference: Option<String>,
    at: chrono::DateTime<chrono::Utc>,
    actor: &str,
    channel: &str,
    ctx: &Context<'_>,
) -> Result<(), TransitionError> {
    if on_previous_version(&out.run, ctx) {
        return previous_version_done(out, op, reference, actor, channel, ctx);
    }
    let grant_id = out.run.grant_id.map(|g| g.to_string()).unwrap_or_default();
    // A revocation sent again because verifying the first found the access still there: the
    // grant's one `revoke_succeeded` was recorded already (I3); this one is told apart, and the
    // run verifies again.
    let repeated = op == Operation::Revoke
        && matches!(current_step(&out.run, ctx), Some(Step::Action(a)) if a.operation == Operation::Verify);
    let event_type = match op {
        Operation::Grant => "grant_succeeded",
        Operation::Renew => "renew_succeeded",
        Operation::Revoke if repeated => "revoke_repeated",
        Operation::Revoke => "revoke_succeeded",
        Operation::Rotate => "rotate_succeeded",
        Operation::Verify => "verify_succeeded",
    };
    let mut ev = event(
        &out.run,
        event_type,
        actor,
        channel,
        "success",
        serde_json::json!({ "grant_id": grant_id, "reference": reference }),
    );
    ev.subject = format!("grant:{grant_id}");
    // A revocation whose workflow verifies it is not `revoked` until the verification confirms
    // the access is gone (I1): the grant stays `revoking` meanwhile.
    let verified_later = op == Operation::Revoke && (repeated || verification_follows(&out.run, ctx));
    if let Some(g) = out.grant.as_mut() {
        g.updated_at = ctx.now;
        match op {
            Operation::Grant => {
                g.status = GrantStatus::Active;
                g.granted_at = Some(at);
                g.expires_at = Some(later(at, Duration::from_secs(out.run.duration_secs))?);
                g.reference = reference;
            }
            // Never back from `revoked`: a revocation confirmed already stays so.
            Operation::Revoke if verified_later && g.status != GrantStatus::Revoked => g.status = GrantStatus::Revoking,
            Operation::Revoke => {
                g.status = GrantStatus::Revoked;
                g.revoked_at = Some(at);
                if g.run_id != out.run.id {
                    out.effects.push(Effect::WakeGrantRun { grant_id: g.id });
                }
            }
            Operation::Verify if expects_absence(Some(g)) => {
                ev.details["expect"] = serde_json::json!(crate::action::Expect::Absent.as_str());
                g.status = GrantStatus::Revoked;
                g.revoked_at = Some(at);
                if g.run_id != out.run.id {
                    out.effects.push(Effect::WakeGrantRun { grant_id: g.id });
                }
            }
            Operation::Renew if g.status == GrantStatus::Active => {
                let new_expiry = renewed_expiry(Some(g), out.run.duration_secs, ctx)?;
                g.expires_at = Some(new_expiry);
                out.effects.push(Effect::ExtendGrant { grant_id: g.id, expires_at: new_expiry });
            }
            Operation::Renew => {
                // Revoked while the renew call was in flight: the revocation stands, the expiry
                // does not move (I4). The target may have extended access after the revoke
                // reached it: that is drift, for a person and for verification to see.
                ev.details["grant_status"] = serde_json::json!(g.status.as_str());
            }
            Operation::Rotate | Operation::Verify => {}
        }
        if let Some(e) = g.expires_at {
            ev.details["expires_at"] = serde_json::json!(e);
        }
    }
    out.audit.push(ev);
    if op == Operation::Grant && out.run.break_glass {
        return enter_review(out, ctx);
    }
    if out.run.status == RunStatus::Failed || repeated {
        // A revocation that had exhausted its budget and kept retrying finally succeeded.
        out.run.status = RunStatus::Revoking;
        out.run.reason = None;
    }
    if repeated {
        out.run.step = StepState::Idle;
        return enter_step(out, ctx);
    }
    complete_step(out, ctx)
}

fn action_failed(
    out: &mut Outcome,
    op: Operation,
    outbox_id: OutboxId,
    error: String,
    actor: &str,
    channel: &str,
    ctx: &Context<'_>,
) -> Result<(), TransitionError> {
    if on_previous_version(&out.run, ctx) {
        return previous_version_failed(out, op, error, actor, channel, ctx);
    }
    let grant_id = out.run.grant_id.map(|g| g.to_string()).unwrap_or_default();
    let event_type = match op {
        Operation::Grant => "grant_failed",
        Operation::Renew => "renew_failed",
        Operation::Revoke => "revoke_failed",
        Operation::Rotate => "rotate_failed",
        Operation::Verify => "verify_failed",
    };
    let mut ev = event(
        &out.run,
        event_type,
        actor,
        channel,
        "failure",
        serde_json::json!({ "grant_id": grant_id, "error": error }),
    );
    ev.subject = format!("grant:{grant_id}");
    let verify_after_revoke = op == Operation::Verify
        && expects_absence(out.grant.as_ref())
        && matches!(current_step(&out.run, ctx), Some(Step::Action(_)));
    if verify_after_revoke {
        ev.details["expect"] = serde_json::json!(crate::action::Expect::Absent.as_str());
        out.audit.push(ev);
        let Some(Step::Action(a)) = current_step(&out.run, ctx) else { return Ok(()) };
        return revoke_again(out, outbox_id, &error, a.retry, ctx);
    }
    out.audit.push(ev);
    let mut notify = vec![out.run.requester.clone(), ctx.integration.owner.clone()];
    notify.dedup();
    let recipients = people(&notify, ctx);
    let notice = if op == Operation::Revoke { "revoke_failed" } else { "failed" };
    let key = format!("{}:{}:{event_type}", out.run.id, out.run.step_index);
    let text = format!("{} of {} on {} failed: {error}", op.as_str(), out.run.scopes.join(", "), out.run.integration);
    if op == Operation::Revoke {
        // Access may still be in place: never pretend otherwise. The step stays pending and the
        // outbox keeps retrying at a slow pace; a later success completes the run.
        if let Some(g) = out.grant.as_mut() {
            g.status = GrantStatus::RevokeFailed;
            g.updated_at = ctx.now;
        }
        out.run.status = RunStatus::Failed;
        out.run.reason = Some(error);
        enqueue_notification(out, ctx, notice, recipients, text, key);
        return Ok(());
    }
    if op == Operation::Grant
        && let Some(g) = out.grant.as_mut()
    {
        g.status = GrantStatus::Failed;
        g.updated_at = ctx.now;
    }
    finish(out, RunStatus::Failed, Some(error));
    enqueue_notification(out, ctx, notice, recipients, text, key);
    Ok(())
}

/// The version a rotation replaced was revoked (`previous_revoked`) or found dead
/// (`previous_verified`): audited, and the run goes on. The grant is not touched: its current
/// access is the rotation's new version.
fn previous_version_done(
    out: &mut Outcome,
    op: Operation,
    reference: Option<String>,
    actor: &str,
    channel: &str,
    ctx: &Context<'_>,
) -> Result<(), TransitionError> {
    let grant_id = out.run.grant_id.map(|g| g.to_string()).unwrap_or_default();
    let event_type = if op == Operation::Revoke { "previous_revoked" } else { "previous_verified" };
    let mut details = serde_json::json!({ "grant_id": grant_id, "reference": reference, "version": "previous" });
    if op == Operation::Verify {
        details["expect"] = serde_json::json!(crate::action::Expect::Absent.as_str());
    }
    let mut ev = event(&out.run, event_type, actor, channel, "success", details);
    ev.subject = format!("grant:{grant_id}");
    out.audit.push(ev);
    if out.run.status == RunStatus::Failed {
        // A revocation of the old version that had exhausted its budget finally succeeded.
        out.run.status = RunStatus::Provisioning;
        out.run.reason = None;
    }
    complete_step(out, ctx)
}

/// Ending the version a rotation replaced failed. A revocation keeps being retried at a slow pace
/// (the old version may still work: never pretend otherwise) with the run `failed` meanwhile and
/// the integration's owner and the requester alerted; a later success resumes the run. A
/// verification that finds the old version still valid ends the run `failed`, alerted: the grant
/// keeps its new version, and the old one needs a person (its revocation did not hold).
fn previous_version_failed(
    out: &mut Outcome,
    op: Operation,
    error: String,
    actor: &str,
    channel: &str,
    ctx: &Context<'_>,
) -> Result<(), TransitionError> {
    let grant_id = out.run.grant_id.map(|g| g.to_string()).unwrap_or_default();
    let event_type = if op == Operation::Revoke { "previous_revoke_failed" } else { "previous_verify_failed" };
    let details = serde_json::json!({ "grant_id": grant_id, "error": error, "version": "previous" });
    let mut ev = event(&out.run, event_type, actor, channel, "failure", details);
    ev.subject = format!("grant:{grant_id}");
    out.audit.push(ev);
    let mut notify = vec![out.run.requester.clone(), ctx.integration.owner.clone()];
    notify.dedup();
    let recipients = people(&notify, ctx);
    let key = format!("{}:{}:{event_type}", out.run.id, out.run.step_index);
    let what = if op == Operation::Revoke {
        "Revoking the previous version"
    } else {
        "Checking that the previous version no longer works"
    };
    let text = format!(
        "{what} of the credential behind {} ({}) failed after its rotation: {error}. The old version may still \
         work. Request: {}",
        out.run.integration,
        out.run.scopes.join(", "),
        out.run.id
    );
    if op == Operation::Revoke {
        out.run.status = RunStatus::Failed;
        out.run.reason = Some(error);
        enqueue_notification(out, ctx, "revoke_failed", recipients, text, key);
        return Ok(());
    }
    finish(out, RunStatus::Failed, Some(error));
    enqueue_notification(out, ctx, "revoke_failed", recipients, text, key);
    Ok(())
}

/// A grant run that ends before its grant call leaves its grant marked failed (never granted).
fn fail_unstarted_grant(out: &mut Outcome) {
    if out.run.kind == tollgate_workflows::WorkflowKind::Grant
        && let Some(g) = out.grant.as_mut().filter(|g| g.status == GrantStatus::Provisioning)
    {
        g.status = GrantStatus::Failed;
    }
}
