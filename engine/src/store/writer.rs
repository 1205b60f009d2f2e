//! The single writer: every state change goes through one task that commits batches of jobs in
//! one transaction each (group commit), so a burst of decisions costs one fsync, not one each.
//!
//! Each job runs inside a savepoint: a job that fails rolls back alone and the rest of the batch
//! commits. A job's audit records are appended to the hash chain only if the job succeeded, and
//! the chain head is updated once per batch. Runs are updated by compare-and-set on `version`, so
//! a second replica (PostgreSQL) can never overwrite a transition it did not see.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockType, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::entity::{
    api_token, audit_head, audit_log, decision, directory_entry, grant, idempotency_key, outbox, run, task, timer,
    workflow_definition,
};
use super::query::RunView;
use super::{Db, StoreError, grant_model, run_model, to_json};
use crate::audit::{self, AuditEvent};
use crate::effect::{Effect, NewOutbox, TimerKind};
use crate::ids::{GrantId, OutboxId, RunId, TaskId, TimerId};
use crate::run::{Grant, Run, RunState, StepState, Vote};
use crate::runtime::Shared;
use crate::transition::{self, Command, Context, NewRequest, Outcome, TransitionError};

/// How many jobs one transaction may carry.
const MAX_BATCH: usize = 256;

/// Renders the API response of a freshly created request (stored for idempotent replays).
pub(crate) type Renderer = Box<dyn FnOnce(&RunView) -> String + Send>;

/// An `Idempotency-Key` claimed by a create request.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyClaim {
    pub(crate) principal: String,
    pub(crate) key: String,
    pub(crate) request_hash: String,
}

/// A unit of work for the writer.
pub(crate) enum Job {
    Create {
        request: NewRequest,
        is_admin: bool,
        idempotency: Option<IdempotencyClaim>,
        render: Renderer,
    },
    Apply {
        run_id: RunId,
        command: Command,
    },
    RevokeGrant {
        grant_id: GrantId,
        actor: String,
        channel: String,
    },
    FireTimer {
        timer_id: TimerId,
        run_id: RunId,
        kind: TimerKind,
        step_index: u32,
    },
    ActionResult {
        outbox_id: OutboxId,
        run_id: RunId,
        result: Result<Option<String>, String>,
        keep_retrying_at: Option<DateTime<Utc>>,
        attempts: i32,
    },
    AttemptFailed {
        outbox_id: OutboxId,
        attempts: i32,
        next_attempt_at: DateTime<Utc>,
        error: String,
    },
    NotificationResult {
        outbox_id: OutboxId,
        event: AuditEvent,
        delivered: bool,
        attempts: i32,
    },
    OpenTask {
        outbox_id: OutboxId,
        run_id: RunId,
        operator: String,
        instructions: String,
    },
    ResolveTask {
        task_id: TaskId,
        actor: String,
        is_admin: bool,
        done: bool,
        comment: Option<String>,
    },
    CreateToken {
        principal: String,
        name: String,
        token_hash: String,
        actor: String,
        channel: String,
    },
    Audit(Vec<AuditEvent>),
    Sync(crate::config_sync::SyncPlan),
}

/// What a job produced.
#[derive(Debug)]
pub(crate) enum JobOutput {
    Created { run_id: RunId, body: String },
    Replayed { body: String },
    Applied,
    TaskResolved(RunId),
    TokenCreated(uuid::Uuid),
    Done,
}

/// Why a job did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The command was refused by the state machine.
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The thing named does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The same `Idempotency-Key` was used with a different body.
    #[error("Idempotency-Key reused with a different request body")]
    IdempotencyMismatch,
    /// Only the named operator or an admin may resolve a task.
    #[error("only the task's operator or an admin may resolve it")]
    NotTaskOperator,
    /// The task was already resolved.
    #[error("task already resolved")]
    TaskResolved,
    /// Infrastructure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for JobError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

struct Envelope {
    job: Job,
    reply: oneshot::Sender<Result<JobOutput, JobError>>,
}

/// Side effects to hand to the dispatcher and the timer service once the batch committed.
#[derive(Default)]
pub(crate) struct AfterCommit {
    pub(crate) outbox: Vec<OutboxWork>,
    pub(crate) earliest_timer: Option<DateTime<Utc>>,
}

impl AfterCommit {
    fn timer(&mut self, due: DateTime<Utc>) {
        self.earliest_timer = Some(self.earliest_timer.map_or(due, |t| t.min(due)));
    }
    fn absorb(&mut self, other: Self) {
        self.outbox.extend(other.outbox);
        if let Some(t) = other.earliest_timer {
            self.timer(t);
        }
    }
}

/// An outbox item ready to perform.
#[derive(Debug, Clone)]
pub(crate) struct OutboxWork {
    pub(crate) id: OutboxId,
    pub(crate) run_id: RunId,
    pub(crate) attempts: i32,
    pub(crate) item: NewOutbox,
}

/// Sender side of the writer.
#[derive(Clone, Debug)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Envelope>,
}

impl WriterHandle {
    /// Submits a job and waits for its commit.
    pub(crate) async fn submit(&self, job: Job) -> Result<JobOutput, JobError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Envelope { job, reply }).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Channels the writer feeds after each commit.
pub(crate) struct Sinks {
    pub(crate) outbox: mpsc::UnboundedSender<OutboxWork>,
    pub(crate) timers: mpsc::UnboundedSender<DateTime<Utc>>,
}

/// Starts the writer task.
pub(crate) fn spawn(db: Db, shared: Arc<Shared>, sinks: Sinks) -> (WriterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(4096);
    let task = tokio::spawn(run_writer(db, shared, sinks, rx));
    (WriterHandle { tx }, task)
}

async fn run_writer(db: Db, shared: Arc<Shared>, sinks: Sinks, mut rx: mpsc::Receiver<Envelope>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let envelopes = std::mem::take(&mut batch);
        commit_batch(&db, &shared, &sinks, envelopes).await;
    }
    tracing::debug!("writer stopped");
}

async fn commit_batch(db: &Db, shared: &Shared, sinks: &Sinks, envelopes: Vec<Envelope>) {
    // IMMEDIATE: take SQLite's write lock up front, so a CLI process writing at the same time
    // waits on the busy timeout instead of failing with a stale snapshot.
    let options =
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
    let txn = match db.write.begin_with_options(options).await {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot begin transaction");
            for env in envelopes {
                let _ = env.reply.send(Err(JobError::Store(StoreError::Db(e.clone()))));
            }
            return;
        }
    };
    let now = shared.clock.now();
    let mut results = Vec::with_capacity(envelopes.len());
    let mut events: Vec<AuditEvent> = Vec::new();
    let mut after = AfterCommit::default();
    for env in envelopes {
        let outcome = run_in_savepoint(&txn, shared, env.job, now).await;
        let result = match outcome {
            Ok((output, job_events, job_after)) => {
                events.extend(job_events);
                after.absorb(job_after);
                output
            }
            Err(e) => Err(e),
        };
        results.push((env.reply, result));
    }
    let committed = async {
        append_audit(&txn, events, now).await?;
        txn.commit().await
    }
    .await;
    match committed {
        Ok(()) => {
            for w in after.outbox {
                let _ = sinks.outbox.send(w);
            }
            if let Some(t) = after.earliest_timer {
                let _ = sinks.timers.send(t);
            }
            for (reply, result) in results {
                let _ = reply.send(result);
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "batch commit failed");
            for (reply, _) in results {
                let _ = reply.send(Err(JobError::Store(StoreError::Db(e.clone()))));
            }
        }
    }
}

type JobSuccess = (Result<JobOutput, JobError>, Vec<AuditEvent>, AfterCommit);

/// Runs one job in a savepoint. `Ok((Err(..), events, ..))` is a refusal that still commits its
/// audit events (a rejected decision is evidence too).
async fn run_in_savepoint(
    txn: &DatabaseTransaction,
    shared: &Shared,
    job: Job,
    now: DateTime<Utc>,
) -> Result<JobSuccess, JobError> {
    let sp = txn.begin().await?;
    let mut w = JobCtx { c: &sp, shared, now, events: Vec::new(), after: AfterCommit::default() };
    match w.run(job).await {
        Ok(output) => {
            let (events, after) = (std::mem::take(&mut w.events), std::mem::take(&mut w.after));
            sp.commit().await?;
            Ok((Ok(output), events, after))
        }
        Err(Refusal::Audited(err, event)) => {
            sp.rollback().await?;
            Ok((Err(err), vec![*event], AfterCommit::default()))
        }
        Err(Refusal::Plain(err)) => {
            sp.rollback().await?;
            if let JobError::Store(e) = &err {
                tracing::error!(error = %e, "job failed");
            }
            Err(err)
        }
    }
}

enum Refusal {
    Plain(JobError),
    Audited(JobError, Box<AuditEvent>),
}

impl<E: Into<JobError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Self::Plain(e.into())
    }
}

struct JobCtx<'a> {
    c: &'a DatabaseTransaction,
    shared: &'a Shared,
    now: DateTime<Utc>,
    events: Vec<AuditEvent>,
    after: AfterCommit,
}

impl JobCtx<'_> {
    async fn run(&mut self, job: Job) -> Result<JobOutput, Refusal> {
        match job {
            Job::Create { request, is_admin, idempotency, render } => {
                self.create(request, is_admin, idempotency, render).await
            }
            Job::Apply { run_id, command } => self.apply(run_id, command).await,
            Job::RevokeGrant { grant_id, actor, channel } => {
                let g = grant::Entity::find_by_id(grant_id.0).one(self.c).await?.ok_or(JobError::NotFound("grant"))?;
                self.apply(RunId(g.run_id), Command::RevokeNow { actor, channel }).await
            }
            Job::FireTimer { timer_id, run_id, kind, step_index } => {
                let deleted = timer::Entity::delete_by_id(timer_id.0).exec(self.c).await?;
                if deleted.rows_affected == 0 {
                    return Ok(JobOutput::Applied); // fired elsewhere, or cleared
                }
                self.apply(run_id, Command::TimerFired { kind, step_index }).await
            }
            Job::ActionResult { outbox_id, run_id, result, keep_retrying_at, attempts } => {
                let (status, next) = match (&result, keep_retrying_at) {
                    (Ok(_), _) => ("done", None),
                    (Err(_), Some(at)) => ("pending", Some(at)),
                    (Err(_), None) => ("failed", None),
                };
                self.update_outbox(outbox_id, status, attempts, next, result.as_ref().err().cloned()).await?;
                let command = match result {
                    Ok(reference) => Command::ActionSucceeded {
                        outbox_id,
                        reference,
                        actor: "system".to_owned(),
                        channel: "engine".to_owned(),
                    },
                    Err(error) => Command::ActionFailed {
                        outbox_id,
                        error,
                        actor: "system".to_owned(),
                        channel: "engine".to_owned(),
                    },
                };
                self.apply(run_id, command).await
            }
            Job::AttemptFailed { outbox_id, attempts, next_attempt_at, error } => {
                self.update_outbox(outbox_id, "pending", attempts, Some(next_attempt_at), Some(error)).await?;
                Ok(JobOutput::Done)
            }
            Job::NotificationResult { outbox_id, event, delivered, attempts } => {
                let status = if delivered { "done" } else { "failed" };
                let error =
                    (!delivered).then(|| event.details["error"].as_str().unwrap_or("delivery failed").to_owned());
                self.update_outbox(outbox_id, status, attempts, None, error).await?;
                self.events.push(event);
                Ok(JobOutput::Done)
            }
            Job::OpenTask { outbox_id, run_id, operator, instructions } => {
                self.open_task(outbox_id, run_id, operator, instructions).await
            }
            Job::ResolveTask { task_id, actor, is_admin, done, comment } => {
                self.resolve_task(task_id, actor, is_admin, done, comment).await
            }
            Job::CreateToken { principal, name, token_hash, actor, channel } => {
                let id = uuid::Uuid::now_v7();
                api_token::Entity::insert(
                    api_token::Model {
                        id,
                        principal: principal.clone(),
                        name: name.clone(),
                        token_hash,
                        created_at: self.now,
                        revoked_at: None,
                    }
                    .into_active_model(),
                )
                .exec_without_returning(self.c)
                .await?;
                self.events.push(AuditEvent {
                    event_type: "token_created".to_owned(),
                    channel,
                    outcome: "success".to_owned(),
                    actor,
                    subject: format!("principal:{principal}"),
                    run_id: None,
                    justification: None,
                    workflow_key: None,
                    workflow_version: None,
                    details: serde_json::json!({ "token_id": id, "name": name }),
                });
                Ok(JobOutput::TokenCreated(id))
            }
            Job::Audit(events) => {
                self.events.extend(events);
                Ok(JobOutput::Done)
            }
            Job::Sync(plan) => {
                for w in plan.workflows {
                    workflow_definition::Entity::insert(
                        workflow_definition::Model {
                            key: w.key,
                            version: i32::try_from(w.version).unwrap_or(i32::MAX),
                            kind: w.kind,
                            source: w.source,
                            sha256: w.sha256,
                            loaded_at: self.now,
                        }
                        .into_active_model(),
                    )
                    .exec_without_returning(self.c)
                    .await?;
                }
                for d in plan.directory {
                    let model = directory_entry::Model {
                        kind: d.kind.to_owned(),
                        name: d.name,
                        document: d.document,
                        active: d.active,
                        updated_at: self.now,
                    };
                    if d.exists {
                        directory_entry::Entity::update(model.into_active_model().reset_all()).exec(self.c).await?;
                    } else {
                        directory_entry::Entity::insert(model.into_active_model())
                            .exec_without_returning(self.c)
                            .await?;
                    }
                }
                self.events.extend(plan.events);
                Ok(JobOutput::Done)
            }
        }
    }

    async fn create(
        &mut self,
        request: NewRequest,
        is_admin: bool,
        claim: Option<IdempotencyClaim>,
        render: Renderer,
    ) -> Result<JobOutput, Refusal> {
        if let Some(claim) = &claim {
            let existing =
                idempotency_key::Entity::find_by_id((claim.principal.clone(), claim.key.clone())).one(self.c).await?;
            if let Some(found) = existing {
                if found.request_hash != claim.request_hash {
                    return Err(JobError::IdempotencyMismatch.into());
                }
                return Ok(JobOutput::Replayed { body: found.response });
            }
        }
        let shared = self.shared;
        let (definition, integration) = shared.resolve_for_request(&request)?;
        let ctx = Context { definition: &definition, directory: &shared.directory, integration, now: self.now };
        let outcome = transition::start(request, is_admin, &ctx)?;
        let run = self.persist(outcome, None).await?;
        let view = RunView { run: run.clone(), votes: Vec::new(), grant: None };
        let body = render(&view);
        if let Some(claim) = claim {
            idempotency_key::Entity::insert(
                idempotency_key::Model {
                    principal: claim.principal,
                    key: claim.key,
                    request_hash: claim.request_hash,
                    status_code: 201,
                    response: body.clone(),
                    created_at: self.now,
                }
                .into_active_model(),
            )
            .exec_without_returning(self.c)
            .await?;
        }
        Ok(JobOutput::Created { run_id: run.id, body })
    }

    /// Applies a command, retrying on fresh state when another replica won the compare-and-set
    /// (nothing was written before the failed update, so retrying in the savepoint is safe).
    async fn apply(&mut self, run_id: RunId, command: Command) -> Result<JobOutput, Refusal> {
        let mut attempts = 0;
        loop {
            match self.apply_once(run_id, command.clone()).await {
                Err(Refusal::Plain(JobError::Store(StoreError::Conflict))) if attempts < 3 => attempts += 1,
                other => return other,
            }
        }
    }

    async fn apply_once(&mut self, run_id: RunId, command: Command) -> Result<JobOutput, Refusal> {
        let state = load_state(self.c, run_id).await?.ok_or(JobError::NotFound("request"))?;
        let shared = self.shared;
        let definition = shared.definition(&state.run)?;
        let integration =
            shared.directory.integrations.get(&state.run.integration).ok_or(JobError::NotFound("integration"))?;
        let ctx = Context { definition: &definition, directory: &shared.directory, integration, now: self.now };
        let audit_refusal = match &command {
            Command::Decide { actor, decision, channel, .. } => {
                Some((actor.clone(), decision.as_str(), channel.clone()))
            }
            _ => None,
        };
        match transition::apply(state.clone(), command, &ctx) {
            Ok(Some(outcome)) => {
                self.persist(outcome, Some(&state)).await?;
                Ok(JobOutput::Applied)
            }
            Ok(None) => Ok(JobOutput::Applied),
            Err(err) => match audit_refusal {
                Some((actor, decision, channel)) => {
                    let ev = transition_refusal_event(&state.run, &actor, decision, &channel, &err);
                    Err(Refusal::Audited(err.into(), Box::new(ev)))
                }
                None => Err(err.into()),
            },
        }
    }

    /// Writes a transition's outcome: the run (compare-and-set), grant, votes, effects, audit.
    async fn persist(&mut self, out: Outcome, prev: Option<&RunState>) -> Result<Run, JobError> {
        let Outcome { mut run, grant: new_grant, votes, audit, effects, .. } = out;
        match prev {
            None => {
                run.version = 1;
                run::Entity::insert(run_model(&run).into_active_model()).exec_without_returning(self.c).await?;
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
                    .exec(self.c)
                    .await?;
                if res.rows_affected != 1 {
                    // Another replica committed a transition on this run first; the caller
                    // retries on fresh state.
                    return Err(StoreError::Conflict.into());
                }
            }
        }
        if let Some(g) = new_grant.as_ref() {
            let before = prev.and_then(|p| p.grant.as_ref());
            self.save_grant(g, before).await?;
        }
        for v in &votes {
            insert_vote(self.c, run.id, v).await?;
        }
        for effect in effects {
            self.effect(&run, effect).await?;
        }
        self.events.extend(audit);
        Ok(run)
    }

    async fn save_grant(&mut self, g: &Grant, before: Option<&Grant>) -> Result<(), JobError> {
        match before {
            Some(b) if b == g => {}
            Some(_) => {
                let mut am = grant_model(g).into_active_model().reset_all();
                am.id = sea_orm::ActiveValue::Unchanged(g.id.0);
                grant::Entity::update(am).exec(self.c).await?;
            }
            None => {
                let exists = grant::Entity::find_by_id(g.id.0).one(self.c).await?.is_some();
                if exists {
                    let mut am = grant_model(g).into_active_model().reset_all();
                    am.id = sea_orm::ActiveValue::Unchanged(g.id.0);
                    grant::Entity::update(am).exec(self.c).await?;
                } else {
                    grant::Entity::insert(grant_model(g).into_active_model()).exec_without_returning(self.c).await?;
                }
            }
        }
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
                    }
                    .into_active_model(),
                )
                .exec_without_returning(self.c)
                .await?;
                self.after.timer(due_at);
            }
            Effect::ClearTimers => {
                timer::Entity::delete_many().filter(timer::Column::RunId.eq(run.id.0)).exec(self.c).await?;
            }
            Effect::Enqueue(item) => {
                let item = *item;
                outbox::Entity::insert(
                    outbox::Model {
                        id: item.id.0,
                        run_id: run.id.0,
                        step_index: i32::try_from(item.step_index).unwrap_or(i32::MAX),
                        kind: item.payload.kind().to_owned(),
                        idempotency_key: item.idempotency_key.clone(),
                        payload: to_json(&item),
                        status: "pending".to_owned(),
                        attempts: 0,
                        next_attempt_at: self.now,
                        lease_owner: Some(self.shared.node_id.clone()),
                        lease_until: Some(self.now + self.shared.lease),
                        last_error: None,
                        created_at: self.now,
                        updated_at: self.now,
                    }
                    .into_active_model(),
                )
                .exec_without_returning(self.c)
                .await?;
                self.after.outbox.push(OutboxWork { id: item.id, run_id: run.id, attempts: 0, item });
            }
            Effect::ExtendGrant { grant_id, expires_at } => {
                let Some(g) = grant::Entity::find_by_id(grant_id.0).one(self.c).await? else { return Ok(()) };
                grant::Entity::update_many()
                    .col_expr(grant::Column::ExpiresAt, Expr::value(expires_at))
                    .col_expr(grant::Column::UpdatedAt, Expr::value(self.now))
                    .filter(grant::Column::Id.eq(grant_id.0))
                    .exec(self.c)
                    .await?;
                self.move_wait_timer(g.run_id, expires_at).await?;
            }
            Effect::WakeGrantRun { grant_id } => {
                let Some(g) = grant::Entity::find_by_id(grant_id.0).one(self.c).await? else { return Ok(()) };
                self.move_wait_timer(g.run_id, self.now).await?;
            }
        }
        Ok(())
    }

    async fn move_wait_timer(&mut self, run_id: uuid::Uuid, due: DateTime<Utc>) -> Result<(), JobError> {
        let res = timer::Entity::update_many()
            .col_expr(timer::Column::DueAt, Expr::value(due))
            .filter(timer::Column::RunId.eq(run_id))
            .filter(timer::Column::Kind.eq(TimerKind::Wait.as_str()))
            .exec(self.c)
            .await?;
        if res.rows_affected > 0 {
            self.after.timer(due);
        }
        Ok(())
    }

    async fn update_outbox(
        &mut self,
        id: OutboxId,
        status: &str,
        attempts: i32,
        next: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), JobError> {
        let mut q = outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(status))
            .col_expr(outbox::Column::Attempts, Expr::value(attempts))
            .col_expr(outbox::Column::LastError, Expr::value(error))
            .col_expr(outbox::Column::UpdatedAt, Expr::value(self.now));
        if let Some(next) = next {
            q = q
                .col_expr(outbox::Column::NextAttemptAt, Expr::value(next))
                .col_expr(outbox::Column::LeaseOwner, Expr::value(self.shared.node_id.clone()))
                .col_expr(outbox::Column::LeaseUntil, Expr::value(next + self.shared.lease));
        }
        q.filter(outbox::Column::Id.eq(id.0)).exec(self.c).await?;
        Ok(())
    }

    async fn open_task(
        &mut self,
        outbox_id: OutboxId,
        run_id: RunId,
        operator: String,
        instructions: String,
    ) -> Result<JobOutput, Refusal> {
        if task::Entity::find().filter(task::Column::OutboxId.eq(outbox_id.0)).one(self.c).await?.is_some() {
            return Ok(JobOutput::Done);
        }
        let id = TaskId::new();
        task::Entity::insert(
            task::Model {
                id: id.0,
                outbox_id: outbox_id.0,
                run_id: run_id.0,
                operator: operator.clone(),
                instructions,
                status: "open".to_owned(),
                resolved_by: None,
                comment: None,
                resolved_at: None,
                created_at: self.now,
            }
            .into_active_model(),
        )
        .exec_without_returning(self.c)
        .await?;
        self.update_outbox(outbox_id, "waiting_operator", 1, None, None).await?;
        let run = run::Entity::find_by_id(run_id.0).one(self.c).await?;
        self.events.push(AuditEvent {
            event_type: "manual_task_opened".to_owned(),
            channel: "engine".to_owned(),
            outcome: "success".to_owned(),
            actor: "system".to_owned(),
            subject: format!("task:{id}"),
            run_id: Some(run_id.0),
            justification: run.as_ref().map(|r| r.justification.clone()),
            workflow_key: run.as_ref().map(|r| r.workflow_key.clone()),
            workflow_version: run.as_ref().map(|r| r.workflow_version),
            details: serde_json::json!({ "operator": operator, "outbox_id": outbox_id }),
        });
        Ok(JobOutput::Done)
    }

    async fn resolve_task(
        &mut self,
        task_id: TaskId,
        actor: String,
        is_admin: bool,
        done: bool,
        comment: Option<String>,
    ) -> Result<JobOutput, Refusal> {
        let t = task::Entity::find_by_id(task_id.0).one(self.c).await?.ok_or(JobError::NotFound("task"))?;
        if t.operator != actor && !is_admin {
            return Err(JobError::NotTaskOperator.into());
        }
        if t.status != "open" {
            return Err(JobError::TaskResolved.into());
        }
        let status = if done { "done" } else { "failed" };
        task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(status))
            .col_expr(task::Column::ResolvedBy, Expr::value(actor.clone()))
            .col_expr(task::Column::Comment, Expr::value(comment.clone()))
            .col_expr(task::Column::ResolvedAt, Expr::value(self.now))
            .filter(task::Column::Id.eq(task_id.0))
            .exec(self.c)
            .await?;
        let outbox_id = OutboxId(t.outbox_id);
        self.update_outbox(
            outbox_id,
            status,
            1,
            None,
            (!done).then(|| comment.clone().unwrap_or_else(|| "operator reported failure".to_owned())),
        )
        .await?;
        let command = if done {
            Command::ActionSucceeded { outbox_id, reference: None, actor, channel: "api".to_owned() }
        } else {
            let error = format!("operator reported failure: {}", comment.unwrap_or_default());
            Command::ActionFailed { outbox_id, error, actor, channel: "api".to_owned() }
        };
        self.apply(RunId(t.run_id), command).await?;
        Ok(JobOutput::TaskResolved(RunId(t.run_id)))
    }
}

fn transition_refusal_event(
    run: &Run,
    actor: &str,
    decision: &str,
    channel: &str,
    err: &TransitionError,
) -> AuditEvent {
    AuditEvent {
        event_type: "decision_rejected".to_owned(),
        channel: channel.to_owned(),
        outcome: "rejected".to_owned(),
        actor: actor.to_owned(),
        subject: format!("request:{}", run.id),
        run_id: Some(run.id.0),
        justification: Some(run.justification.clone()),
        workflow_key: Some(run.workflow_key.clone()),
        workflow_version: i32::try_from(run.workflow_version).ok(),
        details: serde_json::json!({ "decision": decision, "reason": err.code(), "status": run.status.as_str() }),
    }
}

async fn insert_vote(c: &DatabaseTransaction, run_id: RunId, v: &Vote) -> Result<(), JobError> {
    decision::Entity::insert(
        decision::Model {
            id: uuid::Uuid::now_v7(),
            run_id: run_id.0,
            step_index: i32::try_from(v.step_index).unwrap_or(i32::MAX),
            approver: v.approver.clone(),
            decision: v.decision.as_str().to_owned(),
            comment: v.comment.clone(),
            channel: v.channel.clone(),
            decided_at: v.decided_at,
        }
        .into_active_model(),
    )
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Loads what a transition needs to see of a run.
pub(crate) async fn load_state<C: ConnectionTrait>(c: &C, run_id: RunId) -> Result<Option<RunState>, StoreError> {
    let Some(m) = run::Entity::find_by_id(run_id.0).one(c).await? else { return Ok(None) };
    let run = Run::try_from(m)?;
    let votes = if matches!(run.step, StepState::Approval { .. }) {
        decision::Entity::find()
            .filter(decision::Column::RunId.eq(run_id.0))
            .order_by_asc(decision::Column::DecidedAt)
            .all(c)
            .await?
            .into_iter()
            .map(Vote::try_from)
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let grant = match run.grant_id {
        Some(g) => grant::Entity::find_by_id(g.0).one(c).await?.map(Grant::try_from).transpose()?,
        None => None,
    };
    Ok(Some(RunState { run, votes, grant }))
}

/// Appends `events` to the hash chain, after the current head.
async fn append_audit(
    txn: &DatabaseTransaction,
    events: Vec<AuditEvent>,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    use sea_orm::sea_query::ExprTrait as _;
    if events.is_empty() {
        return Ok(());
    }
    let mut select = Query::select();
    select
        .columns([audit_head::Column::Seq, audit_head::Column::Hash])
        .from(audit_head::Entity)
        .and_where(Expr::col(audit_head::Column::Id).eq(1));
    if txn.get_database_backend() == DbBackend::Postgres {
        select.lock(LockType::Update);
    }
    let row = txn.query_one(&select).await?.ok_or_else(|| sea_orm::DbErr::RecordNotFound("audit_head".to_owned()))?;
    let mut seq: i64 = row.try_get("", "seq")?;
    let mut hash: String = row.try_get("", "hash")?;
    let mut models = Vec::with_capacity(events.len());
    for event in events {
        seq += 1;
        let record = audit::seal(seq, now, event, &hash);
        hash.clone_from(&record.hash);
        models.push(audit_log::ActiveModel {
            seq: Set(record.seq),
            recorded_at: Set(record.recorded_at),
            event_type: Set(record.event.event_type),
            channel: Set(record.event.channel),
            outcome: Set(record.event.outcome),
            actor: Set(record.event.actor),
            subject: Set(record.event.subject),
            run_id: Set(record.event.run_id),
            justification: Set(record.event.justification),
            workflow_key: Set(record.event.workflow_key),
            workflow_version: Set(record.event.workflow_version),
            details: Set(audit::details_to_text(&record.event.details)),
            prev_hash: Set(record.prev_hash),
            hash: Set(record.hash),
        });
    }
    // 14 columns a row: stay far below SQLite's bound-parameter limit.
    for chunk in models.chunks(500) {
        audit_log::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await?;
    }
    audit_head::Entity::update_many()
        .col_expr(audit_head::Column::Seq, Expr::value(seq))
        .col_expr(audit_head::Column::Hash, Expr::value(hash))
        .filter(audit_head::Column::Id.eq(1))
        .exec(txn)
        .await?;
    Ok(())
}
