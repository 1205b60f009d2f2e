//! Runs: creating a request, applying a command to a run, revoking a grant early, recovering a
//! lost expiry — and how a transition's outcome is written (the run by compare-and-set, its
//! grant, votes, timers, outbox items and audit records), which every feature that moves a run
//! goes through ([`Tx::apply`]).

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect};
use tollgate_workflows::WorkflowKind;

use crate::audit::AuditEvent;
use crate::effect::{Effect, NewOutbox, OutboxPayload, TimerKind};
use crate::ids::{GrantId, IdSource, OutboxId, RunId, TimerId};
use crate::run::{Grant, GrantStatus, Run, RunState, RunStatus, StepState};
use crate::store::entity::{grant, idempotency_key, run, timer};
use crate::store::query::{self, RunView};
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal};
use crate::store::{StoreError, grant_model, run_model};
use crate::transition::{self, Cast, Command, Context, NewRequest, Outcome, TransitionError};

/// Renders the API response of a freshly created request (stored for idempotent replays).
pub(crate) type Renderer = Box<dyn Fn(&RunView) -> String + Send + Sync>;

/// An `Idempotency-Key` claimed by a create request.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyClaim {
    pub(crate) principal: String,
    pub(crate) key: String,
    pub(crate) request_hash: String,
}

/// Creates a request (a new run), or replays the stored answer of an earlier one with the same
/// `Idempotency-Key`.
pub(crate) struct CreateRequest {
    pub(crate) request: NewRequest,
    pub(crate) is_admin: bool,
    pub(crate) idempotency: Option<IdempotencyClaim>,
    pub(crate) render: Renderer,
}

/// What creating a request answered.
#[derive(Debug)]
pub(crate) enum CreateOutput {
    Created {
        run_id: RunId,
        body: String,
    },
    /// A revoke request for a grant whose revocation another revoke request already asked for
    /// and which is still open: one revocation per grant, so the caller gets that request.
    Attached {
        run_id: RunId,
        body: String,
    },
    /// The stored answer (status code and body) to the first request with this key.
    Replayed {
        status: u16,
        body: String,
    },
}

#[async_trait::async_trait]
impl Job for CreateRequest {
    type Output = CreateOutput;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<CreateOutput, Refusal> {
        if let Some(claim) = &self.idempotency {
            let existing = idempotency_key::Entity::find_by_id((claim.principal.clone(), claim.key.clone()))
                .one(tx.conn())
                .await?;
            if let Some(found) = existing {
                if found.request_hash != claim.request_hash {
                    return Err(JobError::IdempotencyMismatch.into());
                }
                let status = u16::try_from(found.status_code).unwrap_or(201);
                return Ok(CreateOutput::Replayed { status, body: found.response });
            }
        }
        let shared = tx.shared();
        let mut request = self.request.clone();
        // The grant as it is now, read in this transaction: the caller's copy may be stale, and
        // an early revocation, an expiry or another request may have changed it since (I3, I4).
        if let Some(g) = &request.grant {
            request.grant = Some(query::grant(tx.conn(), g.id).await?.ok_or(JobError::NotFound("grant"))?);
        }
        let live = shared.live();
        let (definition, integration) = live.resolve_for_request(&request)?;
        let ids = IdSource::random();
        let ctx = Context {
            definition: &definition,
            directory: &live.directory,
            integration,
            now: tx.now(),
            expiry_warning: shared.expiry_warning,
            ids: &ids,
        };
        // Every check of the request first (who may ask, the grant's status and scopes): a
        // caller who may not revoke the grant learns nothing of a revocation under way. A
        // refusal by policy leaves its evidence here, whatever path the request came by (API,
        // CLI, Slack): one `request_rejected` per refusal (which ones: `is_audited`).
        let outcome = match transition::start(request, self.is_admin, &ctx) {
            Ok(outcome) => outcome,
            Err(TransitionError::Invalid(e)) if e.is_audited() => {
                let event = self.request.rejection_event(&definition, &e);
                return Err(Refusal::Audited(TransitionError::Invalid(e).into(), Box::new(event)));
            }
            Err(e) => return Err(e.into()),
        };
        if let (WorkflowKind::Revoke, Some(grant_id)) = (outcome.run.kind, outcome.run.grant_id)
            && let Some(open) = open_revocation(tx, grant_id).await?
        {
            let view = query::run_view(tx.conn(), open).await?.ok_or(JobError::NotFound("request"))?;
            let body = (self.render)(&view);
            self.remember(tx, 200, &body).await?;
            return Ok(CreateOutput::Attached { run_id: open, body });
        }
        let state = tx.persist(outcome, None).await?;
        let view = RunView { run: state.run.clone(), votes: Vec::new(), grant: state.grant.clone() };
        let body = (self.render)(&view);
        self.remember(tx, 201, &body).await?;
        Ok(CreateOutput::Created { run_id: state.run.id, body })
    }
}

impl CreateRequest {
    /// Stores the answer under the request's `Idempotency-Key`, if it has one.
    async fn remember(&self, tx: &mut Tx<'_>, status: i32, body: &str) -> Result<(), JobError> {
        if let Some(claim) = &self.idempotency {
            let now = tx.now();
            idempotency_key::Entity::insert(
                idempotency_key::Model {
                    principal: claim.principal.clone(),
                    key: claim.key.clone(),
                    request_hash: claim.request_hash.clone(),
                    status_code: status,
                    response: body.to_owned(),
                    created_at: now,
                }
                .into_active_model(),
            )
            .exec_without_returning(tx.write())
            .await?;
        }
        Ok(())
    }
}

/// The revoke request of `grant_id` that is still open (awaiting approval or revoking), if any.
/// Read inside the writer's transaction, so two revoke requests cannot both miss each other.
async fn open_revocation(tx: &Tx<'_>, grant_id: GrantId) -> Result<Option<RunId>, JobError> {
    let open = [RunStatus::AwaitingApproval, RunStatus::Provisioning, RunStatus::Revoking, RunStatus::Active];
    let id: Option<uuid::Uuid> = run::Entity::find()
        .select_only()
        .column(run::Column::Id)
        .filter(run::Column::GrantId.eq(grant_id.0))
        .filter(run::Column::Kind.eq(WorkflowKind::Revoke.as_str()))
        .filter(run::Column::Status.is_in(open.map(RunStatus::as_str)))
        .into_tuple()
        .one(tx.conn())
        .await?;
    Ok(id.map(RunId))
}

/// Applies a command (a decision, a cancellation) to a run.
pub(crate) struct ApplyCommand {
    pub(crate) run_id: RunId,
    pub(crate) command: Command,
}

#[async_trait::async_trait]
impl Job for ApplyCommand {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        tx.apply(self.run_id, &self.command).await
    }
}

/// Revokes an active grant now: its run moves on to its revoke step. A grant whose revocation
/// is already under way is not revoked twice: the caller attaches to that revocation (one
/// revocation per grant, I3).
pub(crate) struct RevokeGrant {
    pub(crate) grant_id: GrantId,
    pub(crate) actor: String,
    pub(crate) channel: String,
}

#[async_trait::async_trait]
impl Job for RevokeGrant {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        let g = query::grant(tx.conn(), self.grant_id).await?.ok_or(JobError::NotFound("grant"))?;
        if matches!(g.status, GrantStatus::Revoking | GrantStatus::RevokeFailed) {
            // Under way (a failed revocation keeps being retried): nothing to add to it.
            return Ok(());
        }
        let command = Command::RevokeNow { actor: self.actor.clone(), channel: self.channel.clone() };
        tx.apply(g.run_id, &command).await
    }
}

/// Starts the revocation of a grant still active past its expiry plus `grace` whose run has no
/// expiry timer left to do it (defence in depth: it must never be needed). Answers whether it
/// did.
pub(crate) struct RecoverExpiry {
    pub(crate) grant_id: GrantId,
    pub(crate) grace: chrono::Duration,
}

#[async_trait::async_trait]
impl Job for RecoverExpiry {
    type Output = bool;

    /// Checked again here, inside the transaction: the sweep read outside it. Audited as
    /// `expiry_recovered` before the `revoke_requested` that follows.
    async fn run(&self, tx: &mut Tx<'_>) -> Result<bool, Refusal> {
        let Some(g) = grant::Entity::find_by_id(self.grant_id.0).one(tx.conn()).await? else { return Ok(false) };
        let g = Grant::try_from(g)?;
        let now = tx.now();
        let Some(expires_at) = g.expires_at.filter(|t| g.status == GrantStatus::Active && *t + self.grace < now) else {
            return Ok(false);
        };
        let state = tx.current_state(g.run_id).await?;
        let step = i32::try_from(state.run.step_index).unwrap_or(i32::MAX);
        let armed = timer::Entity::find()
            .filter(timer::Column::RunId.eq(g.run_id.0))
            .filter(timer::Column::Kind.eq(TimerKind::Wait.as_str()))
            .filter(timer::Column::StepIndex.eq(step))
            .one(tx.conn())
            .await?
            .is_some();
        if armed && matches!(state.run.step, StepState::Wait { expiry: true, .. }) {
            // Late, not lost: the timer service fires it (a backlog is for readiness to report).
            return Ok(false);
        }
        let overdue = (now - expires_at).num_seconds();
        tracing::error!(
            alert = true, grant.id = %self.grant_id, run.id = %g.run_id, run.status = state.run.status.as_str(),
            overdue_secs = overdue, "grant still active past its expiry with no expiry timer; revoking it now"
        );
        let event = AuditEvent {
            event_type: "expiry_recovered".to_owned(),
            channel: "engine".to_owned(),
            outcome: "recovered".to_owned(),
            actor: "system".to_owned(),
            subject: format!("grant:{}", self.grant_id),
            run_id: Some(g.run_id.0),
            justification: None,
            workflow_key: Some(state.run.workflow_key.clone()),
            workflow_version: i32::try_from(state.run.workflow_version).ok(),
            details: serde_json::json!({
                "grant_id": self.grant_id, "expires_at": expires_at, "overdue_secs": overdue,
                "run_status": state.run.status.as_str(), "step": state.run.step_index,
            }),
        };
        let command = Command::RevokeNow { actor: "system".to_owned(), channel: "engine".to_owned() };
        // The event goes first, so it stays out of the log if the revocation is refused.
        tx.audit(event);
        if let Err(refusal) = tx.apply(g.run_id, &command).await {
            tx.pending.events.pop();
            if matches!(refusal, Refusal::Plain(JobError::Store(_))) {
                return Err(refusal);
            }
            // The run cannot revoke (not waiting for the expiry): nothing the engine can do by
            // itself; the alert above is for a person.
            tracing::error!(alert = true, grant.id = %self.grant_id, "overdue grant's run cannot start its revocation");
            return Ok(false);
        }
        Ok(true)
    }
}

/// The notification channels a notification goes to: those its route names among the
/// configured ones; a route naming none of them (or no channel at all) goes to every configured
/// channel, so an approval request is never dropped for want of a channel.
#[must_use]
pub(crate) fn fan_out<'a>(configured: &'a [String], route: &[String]) -> Vec<&'a String> {
    let routed: Vec<&String> = configured.iter().filter(|c| route.is_empty() || route.contains(c)).collect();
    if routed.is_empty() { configured.iter().collect() } else { routed }
}

impl Tx<'_> {
    /// Applies a command, retrying on fresh state when another replica won the compare-and-set
    /// or the cached state proved stale (nothing was written before, so retrying is safe).
    pub(crate) async fn apply(&mut self, run_id: RunId, command: &Command) -> Result<(), Refusal> {
        let mut attempts = 0;
        loop {
            match self.apply_once(run_id, command).await {
                Err(Refusal::Plain(JobError::Store(StoreError::Conflict))) if attempts < 3 => {
                    self.forget(run_id);
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(&mut self, run_id: RunId, command: &Command) -> Result<(), Refusal> {
        let (state, cached) = self.state(run_id).await?;
        let shared = self.shared();
        let live = shared.live();
        let definition = live.definition(&state.run)?;
        let ids = IdSource::random();
        let ctx = Context {
            definition: &definition,
            directory: &live.directory,
            integration: live.integration(&state.run)?,
            now: self.now(),
            expiry_warning: shared.expiry_warning,
            ids: &ids,
        };
        let result = transition::apply(state.clone(), command.clone(), &ctx);
        // A cached state decides nothing by itself: what it ignores or refuses is checked
        // against the stored version first (a write is checked by its compare-and-set).
        if cached && !matches!(result, Ok(Some(_))) && !self.is_current(&state).await? {
            self.forget(run_id);
            return Err(StoreError::Conflict.into());
        }
        match result {
            Ok(Some(outcome)) => {
                self.persist(outcome, Some(&state)).await?;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(err) => match command {
                Command::Decide(Cast { actor, decision, channel, origin, .. }) => {
                    let mut ev = transition::refusal_event(&state.run, actor, decision.as_str(), channel, &err);
                    if !origin.is_null() {
                        ev.details["origin"] = origin.clone();
                    }
                    Err(Refusal::Audited(err.into(), Box::new(ev)))
                }
                _ => Err(err.into()),
            },
        }
    }

    /// Writes a transition's outcome: the run (compare-and-set), grant, votes, effects, audit.
    /// Returns the new state, which is also cached.
    pub(crate) async fn persist(&mut self, out: Outcome, prev: Option<&RunState>) -> Result<RunState, JobError> {
        let Outcome { mut run, grant: new_grant, votes, audit, effects, .. } = out;
        let wrote_before = self.wrote();
        match prev {
            None => {
                run.version = 1;
                run::Entity::insert(run_model(&run).into_active_model()).exec_without_returning(self.write()).await?;
            }
            Some(p) => {
                run.version = p.run.version + 1;
                let m = run_model(&run);
                let res = run::Entity::update_many()
                    .col_expr(run::Column::Status, Expr::value(m.status))
                    .col_expr(run::Column::StepIndex, Expr::value(m.step_index))
                    .col_expr(run::Column::StepState, Expr::value(m.step_state))
                    .col_expr(run::Column::GrantId, Expr::value(m.grant_id))
                    .col_expr(run::Column::Reason, Expr::value(m.reason))
                    .col_expr(run::Column::Version, Expr::value(m.version))
                    .col_expr(run::Column::UpdatedAt, Expr::value(m.updated_at))
                    .filter(run::Column::Id.eq(run.id.0))
                    .filter(run::Column::Version.eq(p.run.version))
                    .exec(self.write())
                    .await?;
                if res.rows_affected != 1 {
                    // Another replica committed a transition on this run first; the caller
                    // retries on fresh state. This update changed nothing.
                    self.unmark_write(wrote_before);
                    return Err(StoreError::Conflict.into());
                }
            }
        }
        let prev_grant = prev.and_then(|p| p.grant.as_ref());
        if let Some(g) = new_grant.as_ref() {
            // A grant request creates its grant when it reaches its grant step; other kinds act
            // on a grant that exists already.
            let exists = prev.map_or(run.kind != WorkflowKind::Grant, |p| p.grant.is_some());
            self.save_grant(&run, g, prev_grant, exists).await?;
        }
        for v in &votes {
            self.vote(run.id, v);
        }
        for effect in effects {
            self.effect(&run, effect).await?;
        }
        for event in audit {
            self.audit(event);
        }
        let mut all_votes = prev.map(|p| p.votes.clone()).unwrap_or_default();
        all_votes.extend(votes);
        let state = RunState { run, votes: all_votes, grant: new_grant.or_else(|| prev_grant.cloned()) };
        self.cache_put(state.clone());
        Ok(state)
    }

    async fn save_grant(&mut self, run: &Run, g: &Grant, before: Option<&Grant>, exists: bool) -> Result<(), JobError> {
        if before == Some(g) {
            return Ok(());
        }
        if exists {
            let mut am = grant_model(g).into_active_model().reset_all();
            am.id = sea_orm::ActiveValue::Unchanged(g.id.0);
            grant::Entity::update(am).exec(self.write()).await?;
        } else {
            grant::Entity::insert(grant_model(g).into_active_model()).exec_without_returning(self.write()).await?;
        }
        if g.run_id != run.id {
            self.touch_other_run(g.run_id).await?;
        }
        Ok(())
    }

    /// Another run's grant changed under it: drop its cached state and bump its version so any
    /// replica holding a copy re-reads it before its next transition.
    pub(crate) async fn touch_other_run(&mut self, run_id: RunId) -> Result<(), JobError> {
        use sea_orm::sea_query::ExprTrait as _;
        self.forget(run_id);
        run::Entity::update_many()
            .col_expr(run::Column::Version, Expr::col(run::Column::Version).add(1))
            .filter(run::Column::Id.eq(run_id.0))
            .exec(self.write())
            .await?;
        Ok(())
    }

    async fn effect(&mut self, run: &Run, effect: Effect) -> Result<(), JobError> {
        match effect {
            Effect::ScheduleTimer { kind, due_at } => {
                timer::Entity::insert(
                    timer::Model {
                        id: TimerId::new().0,
                        run_id: run.id.0,
                        kind: kind.as_str().to_owned(),
                        step_index: i32::try_from(run.step_index).unwrap_or(i32::MAX),
                        due_at,
                        owner: Some(self.shared().node_id.clone()),
                    }
                    .into_active_model(),
                )
                .exec_without_returning(self.write())
                .await?;
                self.timer_due(due_at);
            }
            Effect::ClearTimers => {
                timer::Entity::delete_many().filter(timer::Column::RunId.eq(run.id.0)).exec(self.write()).await?;
            }
            Effect::ClearTimersOf(kind) => {
                timer::Entity::delete_many()
                    .filter(timer::Column::RunId.eq(run.id.0))
                    .filter(timer::Column::Kind.eq(kind.as_str()))
                    .exec(self.write())
                    .await?;
            }
            Effect::Enqueue(item) => {
                let item = *item;
                match &item.payload {
                    // One item per configured channel, each with its own key, retries and audit.
                    OutboxPayload::Notify { notification, channel: None } => {
                        let shared = self.shared();
                        for name in fan_out(&shared.channels, &notification.route.channels) {
                            let key = format!("{}:{name}", item.idempotency_key);
                            let mut notification = notification.clone();
                            notification.idempotency_key.clone_from(&key);
                            let fanned = NewOutbox {
                                not_before: item.not_before,
                                id: OutboxId::new(),
                                idempotency_key: key,
                                step_index: item.step_index,
                                retry: item.retry,
                                payload: OutboxPayload::Notify { notification, channel: Some(name.clone()) },
                            };
                            self.enqueue(run.id, fanned);
                        }
                    }
                    _ => self.enqueue(run.id, item),
                }
            }
            Effect::ExtendGrant { grant_id, expires_at } => {
                let Some(g) = grant::Entity::find_by_id(grant_id.0).one(self.conn()).await? else { return Ok(()) };
                let now = self.now();
                grant::Entity::update_many()
                    .col_expr(grant::Column::ExpiresAt, Expr::value(expires_at))
                    .col_expr(grant::Column::UpdatedAt, Expr::value(now))
                    .filter(grant::Column::Id.eq(grant_id.0))
                    .exec(self.write())
                    .await?;
                self.move_timer(g.run_id, TimerKind::Wait, expires_at).await?;
                if let Some(lead) = self.shared().expiry_warning {
                    self.move_timer(g.run_id, TimerKind::ExpiryWarning, expires_at - lead).await?;
                }
                self.touch_other_run(RunId(g.run_id)).await?;
            }
            Effect::WakeGrantRun { grant_id } => {
                let Some(g) = grant::Entity::find_by_id(grant_id.0).one(self.conn()).await? else { return Ok(()) };
                let now = self.now();
                self.move_timer(g.run_id, TimerKind::Wait, now).await?;
                self.touch_other_run(RunId(g.run_id)).await?;
            }
        }
        Ok(())
    }

    /// Moves a run's pending timer of `kind` (a renewal moves the expiry and its warning; an
    /// early revocation brings the expiry forward).
    async fn move_timer(&mut self, run_id: uuid::Uuid, kind: TimerKind, due: DateTime<Utc>) -> Result<(), JobError> {
        let res = timer::Entity::update_many()
            .col_expr(timer::Column::DueAt, Expr::value(due))
            .filter(timer::Column::RunId.eq(run_id))
            .filter(timer::Column::Kind.eq(kind.as_str()))
            .exec(self.write())
            .await?;
        if res.rows_affected > 0 {
            self.timer_due(due);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fan_out;

    #[test]
    fn notifications_go_to_the_routed_channels_or_to_all_when_none_is_configured() {
        let configured: Vec<String> = ["email", "slack", "webhook"].map(str::to_owned).to_vec();
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
        let table: [(&[&str], &[&str]); 5] = [
            (&[], &["email", "slack", "webhook"]),
            (&["slack"], &["slack"]),
            (&["slack", "email"], &["email", "slack"]),
            (&["pager"], &["email", "slack", "webhook"]),
            (&["pager", "webhook"], &["webhook"]),
        ];
        for (route, want) in table {
            let got: Vec<&String> = fan_out(&configured, &s(route));
            assert_eq!(got, s(want).iter().collect::<Vec<_>>(), "route {route:?}");
        }
        assert!(fan_out(&[], &s(&["email"])).is_empty(), "no channel configured: nothing to fan out to");
    }
}
