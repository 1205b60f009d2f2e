//! The single writer: every state change goes through one task that commits batches of jobs in
//! one transaction each (group commit), so a burst of decisions costs one fsync, not one each.
//!
//! Cost per statement dominates (each one crosses to the driver's thread and back), so the writer
//! keeps statements few:
//! - transitions are pure and refusals happen before any write, so jobs need no savepoints: a job
//!   refused before writing leaves the batch intact; a database error aborts the batch, which is
//!   then replayed one job per transaction so only the faulty job fails;
//! - run state is cached between batches. The cache is only an optimisation and never decides:
//!   every run update is a compare-and-set on `version`, and a command that a cached state
//!   refuses or ignores (a decision refused, a timer for another step) is checked against the
//!   stored version in the same transaction first. Any mismatch (another replica moved the run)
//!   drops the entry and the job retries on fresh state;
//! - on PostgreSQL every write transaction first locks the audit chain head, the one row all of
//!   them write: replicas' batches run one at a time, so they cannot deadlock on each other's
//!   rows, and each reads everything committed before it. A transient failure (deadlock,
//!   serialization failure, SQLite busy) rolls the batch back and runs it again, unseen by
//!   callers;
//! - outbox and vote inserts, "done" outbox updates and audit records are written set-wise at the
//!   end of the batch; the audit chain head is updated once per batch.
//!
//! Timer firings and side-effect results go through a priority lane, ahead of API traffic, so
//! timers fire on time under load.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, LockType, Query};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    IntoActiveModel, QueryFilter, QueryOrder, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};
use tollgate_workflows::WorkflowKind;

use super::entity::{
    api_token, approval_link, audit_head, audit_log, decision, directory_entry, grant, idempotency_key, outbox, run,
    slack_message, task, timer, workflow_definition,
};
use super::query::RunView;
use super::{Db, StoreError, grant_model, run_model, to_json};
use crate::audit::{self, AuditEvent};
use crate::effect::{Effect, NewOutbox, OutboxPayload, TimerKind};
use crate::ids::{GrantId, OutboxId, RunId, TaskId, TimerId};
use crate::run::{Grant, GrantStatus, Run, RunState, StepState, Vote};
use crate::runtime::Shared;
use crate::transition::{self, Cast, Command, Context, NewRequest, Outcome, TransitionError};

/// How many jobs one transaction may carry.
const MAX_BATCH: usize = 128;

/// Renders the API response of a freshly created request (stored for idempotent replays).
pub(crate) type Renderer = Box<dyn Fn(&RunView) -> String + Send + Sync>;

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
        completed_at: DateTime<Utc>,
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
        run_id: RunId,
        event: AuditEvent,
        delivered: bool,
        attempts: i32,
        /// On a final failure, the same notification for another channel (Slack → email).
        fallback: Option<Box<NewOutbox>>,
    },
    RecordSlackMessage {
        run_id: RunId,
        step_index: u32,
        channel_id: String,
        ts: String,
        recipient: String,
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
    /// Issue email approval links (hashes only) for an approval step.
    IssueLinks {
        run_id: RunId,
        step_index: u32,
        principals: Vec<String>,
        links: Vec<(uuid::Uuid, String)>,
    },
    /// Decide through an email link, consuming it.
    DecideByLink {
        token_hash: String,
        decision: crate::run::Decision,
        comment: Option<String>,
    },
    Audit(Vec<AuditEvent>),
    Sync(crate::config_sync::SyncPlan),
    /// Revoke a grant still active past its expiry and grace, whose expiry timer is missing
    /// (defence in depth: it must never be needed).
    RecoverExpiry {
        grant_id: GrantId,
        grace: chrono::Duration,
    },
}

/// What a job produced.
#[derive(Debug)]
pub(crate) enum JobOutput {
    Created {
        run_id: RunId,
        body: String,
    },
    Replayed {
        body: String,
    },
    Applied,
    TaskResolved(RunId),
    TokenCreated(uuid::Uuid),
    /// The expiry of each issued link, `None` where none was issued.
    LinksIssued(Vec<Option<DateTime<Utc>>>),
    LinkDecided(RunId),
    /// Whether an overdue grant was found still overdue and its revocation started.
    Recovered(bool),
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
    /// An approval link that is unknown, used, expired, or whose approval is over.
    #[error("this approval link cannot be used")]
    LinkUnusable,
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
    normal: mpsc::Sender<Envelope>,
    internal: mpsc::Sender<Envelope>,
}

impl WriterHandle {
    /// Submits a job and waits for its commit.
    pub(crate) async fn submit(&self, job: Job) -> Result<JobOutput, JobError> {
        Self::send(&self.normal, job).await
    }

    /// Submits an engine-internal job (timer firing, side-effect result) through the priority
    /// lane, ahead of API traffic.
    pub(crate) async fn submit_internal(&self, job: Job) -> Result<JobOutput, JobError> {
        Self::send(&self.internal, job).await
    }

    async fn send(lane: &mpsc::Sender<Envelope>, job: Job) -> Result<JobOutput, JobError> {
        let (reply, rx) = oneshot::channel();
        lane.send(Envelope { job, reply }).await.map_err(|_| StoreError::Closed)?;
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
    let (normal, normal_rx) = mpsc::channel(4096);
    let (internal, internal_rx) = mpsc::channel(4096);
    let task = tokio::spawn(run_writer(db, shared, sinks, internal_rx, normal_rx));
    (WriterHandle { normal, internal }, task)
}

async fn run_writer(
    db: Db,
    shared: Arc<Shared>,
    sinks: Sinks,
    mut internal: mpsc::Receiver<Envelope>,
    mut normal: mpsc::Receiver<Envelope>,
) {
    let mut cache = RunCache::default();
    let (mut high, mut low) = (Vec::with_capacity(MAX_BATCH), Vec::with_capacity(MAX_BATCH));
    let (mut internal_open, mut normal_open) = (true, true);
    while internal_open || normal_open {
        tokio::select! {
            biased;
            n = internal.recv_many(&mut high, MAX_BATCH), if internal_open => internal_open = n > 0,
            n = normal.recv_many(&mut low, MAX_BATCH), if normal_open => normal_open = n > 0,
        }
        while high.len() + low.len() < MAX_BATCH {
            match internal.try_recv() {
                Ok(e) => high.push(e),
                Err(_) => break,
            }
        }
        while high.len() + low.len() < MAX_BATCH {
            match normal.try_recv() {
                Ok(e) => low.push(e),
                Err(_) => break,
            }
        }
        let mut batch = std::mem::take(&mut high);
        batch.append(&mut low);
        if !batch.is_empty() {
            commit_batch(&db, &shared, &sinks, &mut cache, batch).await;
        }
    }
    tracing::debug!("writer stopped");
}

/// How often a transaction that met a transient failure (deadlock, serialization failure,
/// busy database) is run again before its jobs are replayed one by one.
const TRANSIENT_RETRIES: u32 = 5;

async fn commit_batch(db: &Db, shared: &Shared, sinks: &Sinks, cache: &mut RunCache, envelopes: Vec<Envelope>) {
    let jobs: Vec<&Job> = envelopes.iter().map(|e| &e.job).collect();
    let started = std::time::Instant::now();
    let results = match run_batch_retrying(db, shared, cache, &jobs, sinks).await {
        Ok(results) => results,
        Err(e) if jobs.len() > 1 => {
            // Replay one job per transaction: only the faulty job fails.
            tracing::warn!(error = %e, jobs = jobs.len(), "batch aborted; replaying its jobs one by one");
            let mut results = Vec::with_capacity(jobs.len());
            for job in &jobs {
                results.push(match run_batch_retrying(db, shared, cache, std::slice::from_ref(job), sinks).await {
                    Ok(mut r) => r.pop().unwrap_or(Err(JobError::Store(StoreError::Closed))),
                    Err(e) => Err(JobError::Store(e)),
                });
            }
            results
        }
        Err(e) => vec![Err(JobError::Store(e))],
    };
    tracing::debug!(jobs = jobs.len(), elapsed_us = started.elapsed().as_micros(), "batch committed");
    for (env, result) in envelopes.into_iter().zip(results) {
        let _ = env.reply.send(result);
    }
}

/// [`run_batch`], run again after a transient failure (nothing of a rolled-back attempt stays:
/// the cache entries it touched are forgotten and nothing was handed over).
async fn run_batch_retrying(
    db: &Db,
    shared: &Shared,
    cache: &mut RunCache,
    jobs: &[&Job],
    sinks: &Sinks,
) -> Result<Vec<Result<JobOutput, JobError>>, StoreError> {
    let mut attempt = 0;
    loop {
        match run_batch(db, shared, cache, jobs, sinks).await {
            Err(e) if e.is_transient() && attempt < TRANSIENT_RETRIES => {
                attempt += 1;
                tracing::info!(error = %e, jobs = jobs.len(), attempt, "transient database failure; running the batch again");
                let pause = rand::random_range(1..=10u64) * u64::from(attempt);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            other => return other,
        }
    }
}

/// Runs `jobs` in one transaction. `Err` means the transaction was rolled back (every job must
/// be considered not done); otherwise one result per job.
async fn run_batch(
    db: &Db,
    shared: &Shared,
    cache: &mut RunCache,
    jobs: &[&Job],
    sinks: &Sinks,
) -> Result<Vec<Result<JobOutput, JobError>>, StoreError> {
    // IMMEDIATE: take SQLite's write lock up front, so a CLI process writing at the same time
    // waits on the busy timeout instead of failing with a stale snapshot.
    let options =
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
    let txn = db.write.begin_with_options(options).await?;
    if let Err(e) = lock_writers(&txn).await {
        let _ = txn.rollback().await;
        return Err(e.into());
    }
    let now = shared.clock.now();
    let mut pending = Pending::default();
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut ctx = JobCtx { c: &txn, shared, cache: &mut *cache, now, pending: Pending::default(), wrote: false };
        let outcome = ctx.run(job).await;
        let (wrote, job_pending) = (ctx.wrote, ctx.pending);
        match outcome {
            Ok(output) => {
                pending.absorb(job_pending);
                results.push(Ok(output));
            }
            // Refused before writing: the rest of the batch is unaffected. A refused decision
            // still leaves its audit record.
            Err(Refusal::Audited(err, event)) if !wrote => {
                pending.touched.extend(job_pending.touched);
                pending.events.push(*event);
                results.push(Err(err));
            }
            Err(Refusal::Plain(err)) if !wrote && !matches!(err, JobError::Store(_)) => {
                pending.touched.extend(job_pending.touched);
                results.push(Err(err));
            }
            Err(Refusal::Audited(err, _) | Refusal::Plain(err)) => {
                pending.touched.extend(job_pending.touched);
                cache.forget_all(&pending.touched);
                let _ = txn.rollback().await;
                return Err(match err {
                    JobError::Store(e) => e,
                    other => {
                        StoreError::Corrupt { table: "writer", detail: format!("job failed after writing: {other}") }
                    }
                });
            }
        }
    }
    let flushed = async {
        pending.flush(&txn, now).await?;
        txn.commit().await
    }
    .await;
    if let Err(e) = flushed {
        cache.forget_all(&pending.touched);
        return Err(e.into());
    }
    for w in pending.after.outbox {
        let _ = sinks.outbox.send(w);
    }
    if let Some(t) = pending.after.earliest_timer {
        let _ = sinks.timers.send(t);
    }
    Ok(results)
}

/// Serialises write transactions across replicas (PostgreSQL) by locking the audit chain head
/// first: every batch would lock it at its end anyway, and taking it first means no batch holds
/// a row another one waits for while it waits itself, so batches never deadlock. SQLite's
/// `BEGIN IMMEDIATE` already gives one writer at a time.
async fn lock_writers(txn: &DatabaseTransaction) -> Result<(), sea_orm::DbErr> {
    use sea_orm::sea_query::ExprTrait as _;
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let mut select = Query::select();
    select
        .column(audit_head::Column::Seq)
        .from(audit_head::Entity)
        .and_where(Expr::col(audit_head::Column::Id).eq(1))
        .lock(LockType::Update);
    txn.query_one(&select).await?;
    Ok(())
}

/// Writes deferred to the end of a batch, and what to do after it commits.
#[derive(Default)]
struct Pending {
    events: Vec<AuditEvent>,
    after: AfterCommit,
    outbox: Vec<outbox::ActiveModel>,
    votes: Vec<decision::ActiveModel>,
    /// Outbox items that succeeded, by attempt count.
    done: BTreeMap<i32, Vec<uuid::Uuid>>,
    /// Runs whose cached state this batch changed (forgotten if the batch rolls back).
    touched: Vec<RunId>,
}

impl Pending {
    fn absorb(&mut self, other: Self) {
        self.events.extend(other.events);
        self.after.outbox.extend(other.after.outbox);
        if let Some(t) = other.after.earliest_timer {
            self.after.timer(t);
        }
        self.outbox.extend(other.outbox);
        self.votes.extend(other.votes);
        for (attempts, ids) in other.done {
            self.done.entry(attempts).or_default().extend(ids);
        }
        self.touched.extend(other.touched);
    }

    async fn flush(&mut self, txn: &DatabaseTransaction, now: DateTime<Utc>) -> Result<(), sea_orm::DbErr> {
        for chunk in stable_chunks(std::mem::take(&mut self.outbox)) {
            outbox::Entity::insert_many(chunk).exec_without_returning(txn).await?;
        }
        for chunk in stable_chunks(std::mem::take(&mut self.votes)) {
            decision::Entity::insert_many(chunk).exec_without_returning(txn).await?;
        }
        for (attempts, ids) in std::mem::take(&mut self.done) {
            for chunk in ids.chunks(500) {
                outbox::Entity::update_many()
                    .col_expr(outbox::Column::Status, Expr::value("done"))
                    .col_expr(outbox::Column::Attempts, Expr::value(attempts))
                    .col_expr(outbox::Column::UpdatedAt, Expr::value(now))
                    .filter(outbox::Column::Id.is_in(chunk.iter().copied()))
                    .exec(txn)
                    .await?;
            }
        }
        append_audit(txn, std::mem::take(&mut self.events), now).await
    }
}

/// Splits rows into chunks of 64 and then powers of two, so multi-row inserts use a handful of
/// distinct statement texts that the driver's statement cache keeps prepared.
fn stable_chunks<T>(mut rows: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    while !rows.is_empty() {
        let n = if rows.len() >= 64 { 64 } else { 1 << rows.len().ilog2() };
        let rest = rows.split_off(n);
        out.push(rows);
        rows = rest;
    }
    out
}

/// Run state kept between batches. Only an optimisation: run updates are compare-and-set on
/// `version`, so a stale entry fails its update, is dropped and the job retries on fresh state.
#[derive(Default)]
struct RunCache {
    map: HashMap<RunId, RunState>,
}

impl RunCache {
    /// Bound on entries; the cache is simply emptied when it is reached.
    const CAPACITY: usize = 100_000;

    fn get(&self, id: RunId) -> Option<RunState> {
        self.map.get(&id).cloned()
    }

    fn put(&mut self, state: RunState) {
        // A run that reached a final state and waits for nothing is not touched again.
        if state.run.status.is_final() && matches!(state.run.step, StepState::Idle) {
            self.map.remove(&state.run.id);
            return;
        }
        if self.map.len() >= Self::CAPACITY {
            self.map.clear();
        }
        self.map.insert(state.run.id, state);
    }

    fn forget(&mut self, id: RunId) {
        self.map.remove(&id);
    }

    fn forget_all(&mut self, ids: &[RunId]) {
        for id in ids {
            self.map.remove(id);
        }
    }
}

type JobResult = Result<JobOutput, Refusal>;

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
    cache: &'a mut RunCache,
    now: DateTime<Utc>,
    pending: Pending,
    /// Whether this job already wrote something (a later failure must then abort the batch).
    wrote: bool,
}

impl JobCtx<'_> {
    async fn run(&mut self, job: &Job) -> JobResult {
        match job {
            Job::Create { request, is_admin, idempotency, render } => {
                self.create(request.clone(), *is_admin, idempotency.as_ref(), render).await
            }
            Job::Apply { run_id, command } => self.apply(*run_id, command).await,
            Job::RevokeGrant { grant_id, actor, channel } => {
                let g = grant::Entity::find_by_id(grant_id.0).one(self.c).await?.ok_or(JobError::NotFound("grant"))?;
                let command = Command::RevokeNow { actor: actor.clone(), channel: channel.clone() };
                self.apply(RunId(g.run_id), &command).await
            }
            Job::FireTimer { timer_id, run_id, kind, step_index } => {
                self.wrote = true;
                let deleted = timer::Entity::delete_by_id(timer_id.0).exec(self.c).await?;
                if deleted.rows_affected == 0 {
                    return Ok(JobOutput::Applied); // fired elsewhere, or cleared
                }
                self.apply(*run_id, &Command::TimerFired { kind: *kind, step_index: *step_index }).await
            }
            Job::ActionResult { outbox_id, run_id, completed_at, result, keep_retrying_at, attempts } => {
                match (result, keep_retrying_at) {
                    (Ok(_), _) => self.pending.done.entry(*attempts).or_default().push(outbox_id.0),
                    (Err(e), Some(at)) => {
                        self.update_outbox(*outbox_id, "pending", *attempts, Some(*at), Some(e.clone())).await?
                    }
                    (Err(e), None) => {
                        self.update_outbox(*outbox_id, "failed", *attempts, None, Some(e.clone())).await?
                    }
                }
                let command = match result {
                    Ok(reference) => Command::ActionSucceeded {
                        outbox_id: *outbox_id,
                        reference: reference.clone(),
                        at: Some(*completed_at),
                        actor: "system".to_owned(),
                        channel: "engine".to_owned(),
                    },
                    Err(error) => Command::ActionFailed {
                        outbox_id: *outbox_id,
                        error: error.clone(),
                        actor: "system".to_owned(),
                        channel: "engine".to_owned(),
                    },
                };
                self.apply(*run_id, &command).await
            }
            Job::AttemptFailed { outbox_id, attempts, next_attempt_at, error } => {
                self.update_outbox(*outbox_id, "pending", *attempts, Some(*next_attempt_at), Some(error.clone()))
                    .await?;
                Ok(JobOutput::Done)
            }
            Job::NotificationResult { outbox_id, run_id, event, delivered, attempts, fallback } => {
                if let Some(item) = fallback {
                    self.enqueue_for(*run_id, (**item).clone());
                }
                if *delivered {
                    self.pending.done.entry(*attempts).or_default().push(outbox_id.0);
                } else {
                    let error = event.details["error"].as_str().unwrap_or("delivery failed").to_owned();
                    self.update_outbox(*outbox_id, "failed", *attempts, None, Some(error)).await?;
                }
                self.pending.events.push(event.clone());
                Ok(JobOutput::Done)
            }
            Job::OpenTask { outbox_id, run_id, operator, instructions } => {
                self.open_task(*outbox_id, *run_id, operator, instructions).await
            }
            Job::ResolveTask { task_id, actor, is_admin, done, comment } => {
                self.resolve_task(*task_id, actor, *is_admin, *done, comment.clone()).await
            }
            Job::CreateToken { principal, name, token_hash, actor, channel } => {
                let id = uuid::Uuid::now_v7();
                self.wrote = true;
                api_token::Entity::insert(
                    api_token::Model {
                        id,
                        principal: principal.clone(),
                        name: name.clone(),
                        token_hash: token_hash.clone(),
                        created_at: self.now,
                        revoked_at: None,
                    }
                    .into_active_model(),
                )
                .exec_without_returning(self.c)
                .await?;
                self.pending.events.push(AuditEvent {
                    event_type: "token_created".to_owned(),
                    channel: channel.clone(),
                    outcome: "success".to_owned(),
                    actor: actor.clone(),
                    subject: format!("principal:{principal}"),
                    run_id: None,
                    justification: None,
                    workflow_key: None,
                    workflow_version: None,
                    details: serde_json::json!({ "token_id": id, "name": name }),
                });
                Ok(JobOutput::TokenCreated(id))
            }
            Job::IssueLinks { run_id, step_index, principals, links } => {
                self.issue_links(*run_id, *step_index, principals, links).await
            }
            Job::DecideByLink { token_hash, decision, comment } => {
                self.decide_by_link(token_hash, *decision, comment.clone()).await
            }
            Job::RecordSlackMessage { run_id, step_index, channel_id, ts, recipient } => {
                self.wrote = true;
                slack_message::Entity::insert(slack_message::ActiveModel {
                    id: Set(uuid::Uuid::now_v7()),
                    run_id: Set(run_id.0),
                    step_index: Set(i32::try_from(*step_index).unwrap_or(i32::MAX)),
                    channel_id: Set(channel_id.clone()),
                    ts: Set(ts.clone()),
                    recipient: Set(recipient.clone()),
                    created_at: Set(self.now),
                })
                .exec_without_returning(self.c)
                .await?;
                Ok(JobOutput::Done)
            }
            Job::Audit(events) => {
                self.pending.events.extend(events.iter().cloned());
                Ok(JobOutput::Done)
            }
            Job::Sync(plan) => self.sync(plan).await,
            Job::RecoverExpiry { grant_id, grace } => self.recover_expiry(*grant_id, *grace).await,
        }
    }

    /// Starts the revocation of a grant that is still active past its expiry plus `grace` and
    /// whose run has no expiry timer left to do it. Audited as `expiry_recovered` before the
    /// `revoke_requested` that follows. Checked again here, inside the transaction: the sweep
    /// read outside it.
    async fn recover_expiry(&mut self, grant_id: GrantId, grace: chrono::Duration) -> JobResult {
        let Some(g) = grant::Entity::find_by_id(grant_id.0).one(self.c).await? else {
            return Ok(JobOutput::Recovered(false));
        };
        let g = Grant::try_from(g)?;
        let Some(expires_at) = g.expires_at.filter(|t| g.status == GrantStatus::Active && *t + grace < self.now) else {
            return Ok(JobOutput::Recovered(false));
        };
        let state = self.current_state(g.run_id).await?;
        let step = i32::try_from(state.run.step_index).unwrap_or(i32::MAX);
        let armed = timer::Entity::find()
            .filter(timer::Column::RunId.eq(g.run_id.0))
            .filter(timer::Column::Kind.eq(TimerKind::Wait.as_str()))
            .filter(timer::Column::StepIndex.eq(step))
            .one(self.c)
            .await?
            .is_some();
        if armed && matches!(state.run.step, StepState::Wait { expiry: true, .. }) {
            // Late, not lost: the timer service fires it (a backlog is for readiness to report).
            return Ok(JobOutput::Recovered(false));
        }
        let overdue = (self.now - expires_at).num_seconds();
        tracing::error!(
            alert = true, grant.id = %grant_id, run.id = %g.run_id, run.status = state.run.status.as_str(),
            overdue_secs = overdue, "grant still active past its expiry with no expiry timer; revoking it now"
        );
        let ev = AuditEvent {
            event_type: "expiry_recovered".to_owned(),
            channel: "engine".to_owned(),
            outcome: "recovered".to_owned(),
            actor: "system".to_owned(),
            subject: format!("grant:{grant_id}"),
            run_id: Some(g.run_id.0),
            justification: None,
            workflow_key: Some(state.run.workflow_key.clone()),
            workflow_version: i32::try_from(state.run.workflow_version).ok(),
            details: serde_json::json!({
                "grant_id": grant_id, "expires_at": expires_at, "overdue_secs": overdue,
                "run_status": state.run.status.as_str(), "step": state.run.step_index,
            }),
        };
        let command = Command::RevokeNow { actor: "system".to_owned(), channel: "engine".to_owned() };
        // The event goes first, so it stays out of the log if the revocation is refused.
        self.pending.events.push(ev);
        if let Err(refusal) = self.apply(g.run_id, &command).await {
            self.pending.events.pop();
            if matches!(refusal, Refusal::Plain(JobError::Store(_))) {
                return Err(refusal);
            }
            // The run cannot revoke (not waiting for the expiry): nothing the engine can do by
            // itself; the alert above is for a person.
            tracing::error!(alert = true, grant.id = %grant_id, "overdue grant's run cannot start its revocation");
            return Ok(JobOutput::Recovered(false));
        }
        Ok(JobOutput::Recovered(true))
    }

    /// Records link hashes for the principals who may decide at the run's current approval step.
    async fn issue_links(
        &mut self,
        run_id: RunId,
        step_index: u32,
        principals: &[String],
        links: &[(uuid::Uuid, String)],
    ) -> JobResult {
        let state = self.current_state(run_id).await?;
        let run = &state.run;
        let deadline = match &run.step {
            StepState::Approval { deadline, .. }
                if run.status == crate::run::RunStatus::AwaitingApproval
                    && run.step_index == step_index
                    && self.now < *deadline =>
            {
                *deadline
            }
            _ => return Ok(JobOutput::LinksIssued(vec![None; principals.len()])),
        };
        let definition = self.shared.definition(run)?;
        let Some(tollgate_workflows::Step::Approval(step)) = definition.steps.get(step_index as usize) else {
            return Ok(JobOutput::LinksIssued(vec![None; principals.len()]));
        };
        let directory = &self.shared.directory;
        let integration = directory.integrations.get(&run.integration).ok_or(JobError::NotFound("integration"))?;
        let approvers = step.approvers_at(matches!(run.step, StepState::Approval { escalated: true, .. }));
        let mut rows = Vec::new();
        let mut issued = Vec::with_capacity(principals.len());
        for (principal, (id, token_hash)) in principals.iter().zip(links) {
            if transition::may_decide(directory, integration, &approvers, &run.requester, &state.votes, principal)
                .is_err()
            {
                issued.push(None);
                continue;
            }
            rows.push(approval_link::ActiveModel {
                id: Set(*id),
                token_hash: Set(token_hash.clone()),
                run_id: Set(run_id.0),
                step_index: Set(i32::try_from(step_index).unwrap_or(i32::MAX)),
                principal: Set(principal.clone()),
                created_at: Set(self.now),
                expires_at: Set(deadline),
                consumed_at: Set(None),
            });
            self.pending.events.push(AuditEvent {
                event_type: "approval_link_issued".to_owned(),
                channel: "email".to_owned(),
                outcome: "success".to_owned(),
                actor: "system".to_owned(),
                subject: format!("request:{run_id}"),
                run_id: Some(run_id.0),
                justification: None,
                workflow_key: Some(run.workflow_key.clone()),
                workflow_version: i32::try_from(run.workflow_version).ok(),
                details: serde_json::json!({
                    "link_id": id, "approver": principal, "step": step_index, "expires_at": deadline,
                }),
            });
            issued.push(Some(deadline));
        }
        if !rows.is_empty() {
            self.wrote = true;
            approval_link::Entity::insert_many(rows).exec_without_returning(self.c).await?;
        }
        Ok(JobOutput::LinksIssued(issued))
    }

    /// A decision through an email link: the link must be unused, unexpired and for the run's
    /// current step; it is consumed only when the decision is recorded.
    async fn decide_by_link(
        &mut self,
        token_hash: &str,
        decision: crate::run::Decision,
        comment: Option<String>,
    ) -> JobResult {
        let link = super::query::approval_link_by_hash(self.c, token_hash)
            .await?
            .filter(|l| l.consumed_at.is_none() && self.now < l.expires_at)
            .ok_or(JobError::LinkUnusable)?;
        let run_id = RunId(link.run_id);
        let state = self.current_state(run_id).await?;
        if i64::from(state.run.step_index) != i64::from(link.step_index) {
            return Err(JobError::LinkUnusable.into());
        }
        let command = Command::Decide(Cast {
            origin: serde_json::json!({ "link_id": link.id }),
            step: u32::try_from(link.step_index).ok(),
            ..Cast::new(&link.principal, decision, comment, "email")
        });
        self.apply(run_id, &command).await?;
        let consumed = approval_link::Entity::update_many()
            .col_expr(approval_link::Column::ConsumedAt, Expr::value(self.now))
            .filter(approval_link::Column::Id.eq(link.id))
            .filter(approval_link::Column::ConsumedAt.is_null())
            .exec(self.c)
            .await?;
        if consumed.rows_affected != 1 {
            // Used concurrently by another replica: undo the whole batch; the replay refuses it.
            return Err(StoreError::Conflict.into());
        }
        Ok(JobOutput::LinkDecided(run_id))
    }

    async fn sync(&mut self, plan: &crate::config_sync::SyncPlan) -> JobResult {
        self.wrote = true;
        for w in &plan.workflows {
            workflow_definition::Entity::insert(
                workflow_definition::Model {
                    key: w.key.clone(),
                    version: i32::try_from(w.version).unwrap_or(i32::MAX),
                    kind: w.kind.clone(),
                    source: w.source.clone(),
                    sha256: w.sha256.clone(),
                    loaded_at: self.now,
                }
                .into_active_model(),
            )
            .exec_without_returning(self.c)
            .await?;
        }
        for d in &plan.directory {
            let model = directory_entry::Model {
                kind: d.kind.to_owned(),
                name: d.name.clone(),
                document: d.document.clone(),
                active: d.active,
                updated_at: self.now,
            };
            if d.exists {
                directory_entry::Entity::update(model.into_active_model().reset_all()).exec(self.c).await?;
            } else {
                directory_entry::Entity::insert(model.into_active_model()).exec_without_returning(self.c).await?;
            }
        }
        self.pending.events.extend(plan.events.iter().cloned());
        Ok(JobOutput::Done)
    }

    async fn create(
        &mut self,
        request: NewRequest,
        is_admin: bool,
        claim: Option<&IdempotencyClaim>,
        render: &Renderer,
    ) -> JobResult {
        if let Some(claim) = claim {
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
        let ctx = Context {
            definition: &definition,
            directory: &shared.directory,
            integration,
            now: self.now,
            expiry_warning: shared.expiry_warning,
        };
        let outcome = transition::start(request, is_admin, &ctx)?;
        let state = self.persist(outcome, None).await?;
        let view = RunView { run: state.run.clone(), votes: Vec::new(), grant: None };
        let body = render(&view);
        if let Some(claim) = claim {
            idempotency_key::Entity::insert(
                idempotency_key::Model {
                    principal: claim.principal.clone(),
                    key: claim.key.clone(),
                    request_hash: claim.request_hash.clone(),
                    status_code: 201,
                    response: body.clone(),
                    created_at: self.now,
                }
                .into_active_model(),
            )
            .exec_without_returning(self.c)
            .await?;
        }
        Ok(JobOutput::Created { run_id: state.run.id, body })
    }

    /// The state a transition reads, and whether it came from the cache (for runs acting on
    /// another run's grant, the grant is always re-read: its owner may have changed it). A cached
    /// state may be stale: only a compare-and-set, or [`Self::is_current`], makes it safe.
    async fn state(&mut self, run_id: RunId) -> Result<(RunState, bool), JobError> {
        if let Some(mut s) = self.cache.get(run_id) {
            if let Some(g) = s.grant.as_ref().filter(|g| g.run_id != run_id) {
                s.grant = grant::Entity::find_by_id(g.id.0).one(self.c).await?.map(Grant::try_from).transpose()?;
            }
            return Ok((s, true));
        }
        let state = load_state(self.c, run_id).await?.ok_or(JobError::NotFound("request"))?;
        Ok((state, false))
    }

    /// The run's state as stored now: the cached one once its version is checked, else read.
    /// For decisions that write nothing to the run (link issuance and its checks).
    async fn current_state(&mut self, run_id: RunId) -> Result<RunState, JobError> {
        let (state, cached) = self.state(run_id).await?;
        if !cached || self.is_current(&state).await? {
            return Ok(state);
        }
        self.cache.forget(run_id);
        Ok(self.state(run_id).await?.0)
    }

    /// Whether `state` still has the stored version of its run (read in this transaction).
    async fn is_current(&mut self, state: &RunState) -> Result<bool, JobError> {
        use sea_orm::QuerySelect as _;
        let stored: Option<i64> = run::Entity::find_by_id(state.run.id.0)
            .select_only()
            .column(run::Column::Version)
            .into_tuple()
            .one(self.c)
            .await?;
        Ok(stored == Some(state.run.version))
    }

    /// Applies a command, retrying on fresh state when another replica won the compare-and-set
    /// (nothing was written before the failed update, so retrying is safe).
    async fn apply(&mut self, run_id: RunId, command: &Command) -> JobResult {
        let mut attempts = 0;
        loop {
            match self.apply_once(run_id, command).await {
                Err(Refusal::Plain(JobError::Store(StoreError::Conflict))) if attempts < 3 => {
                    self.cache.forget(run_id);
                    attempts += 1;
                }
                other => return other,
            }
        }
    }

    async fn apply_once(&mut self, run_id: RunId, command: &Command) -> JobResult {
        let (state, cached) = self.state(run_id).await?;
        let shared = self.shared;
        let definition = shared.definition(&state.run)?;
        let integration =
            shared.directory.integrations.get(&state.run.integration).ok_or(JobError::NotFound("integration"))?;
        let ctx = Context {
            definition: &definition,
            directory: &shared.directory,
            integration,
            now: self.now,
            expiry_warning: shared.expiry_warning,
        };
        let result = transition::apply(state.clone(), command.clone(), &ctx);
        // A cached state decides nothing by itself: what it ignores or refuses is checked
        // against the stored version first (a write is checked by its compare-and-set).
        if cached && !matches!(result, Ok(Some(_))) && !self.is_current(&state).await? {
            self.cache.forget(run_id);
            return Err(StoreError::Conflict.into());
        }
        match result {
            Ok(Some(outcome)) => {
                self.persist(outcome, Some(&state)).await?;
                Ok(JobOutput::Applied)
            }
            Ok(None) => Ok(JobOutput::Applied),
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
    async fn persist(&mut self, out: Outcome, prev: Option<&RunState>) -> Result<RunState, JobError> {
        let Outcome { mut run, grant: new_grant, votes, audit, effects, .. } = out;
        self.wrote = true;
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
                    // retries on fresh state. Nothing of this job was written before this point.
                    self.wrote = false;
                    return Err(StoreError::Conflict.into());
                }
            }
        }
        self.pending.touched.push(run.id);
        let prev_grant = prev.and_then(|p| p.grant.as_ref());
        if let Some(g) = new_grant.as_ref() {
            // A grant request creates its grant when it reaches its grant step; other kinds act
            // on a grant that exists already.
            let exists = prev.map_or(run.kind != WorkflowKind::Grant, |p| p.grant.is_some());
            self.save_grant(&run, g, prev_grant, exists).await?;
        }
        for v in &votes {
            self.pending.votes.push(vote_model(run.id, v));
        }
        for effect in effects {
            self.effect(&run, effect).await?;
        }
        self.pending.events.extend(audit);
        let mut all_votes = prev.map(|p| p.votes.clone()).unwrap_or_default();
        all_votes.extend(votes);
        let state = RunState { run, votes: all_votes, grant: new_grant.or_else(|| prev_grant.cloned()) };
        self.cache.put(state.clone());
        Ok(state)
    }

    async fn save_grant(&mut self, run: &Run, g: &Grant, before: Option<&Grant>, exists: bool) -> Result<(), JobError> {
        if before == Some(g) {
            return Ok(());
        }
        if exists {
            let mut am = grant_model(g).into_active_model().reset_all();
            am.id = sea_orm::ActiveValue::Unchanged(g.id.0);
            grant::Entity::update(am).exec(self.c).await?;
        } else {
            grant::Entity::insert(grant_model(g).into_active_model()).exec_without_returning(self.c).await?;
        }
        if g.run_id != run.id {
            self.touch_other_run(g.run_id).await?;
        }
        Ok(())
    }

    /// Another run's grant changed under it: drop its cached state and bump its version so any
    /// replica holding a copy re-reads it before its next transition.
    async fn touch_other_run(&mut self, run_id: RunId) -> Result<(), JobError> {
        use sea_orm::sea_query::ExprTrait as _;
        self.cache.forget(run_id);
        self.pending.touched.push(run_id);
        run::Entity::update_many()
            .col_expr(run::Column::Version, Expr::col(run::Column::Version).add(1))
            .filter(run::Column::Id.eq(run_id.0))
            .exec(self.c)
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
                    }
                    .into_active_model(),
                )
                .exec_without_returning(self.c)
                .await?;
                self.pending.after.timer(due_at);
            }
            Effect::ClearTimers => {
                timer::Entity::delete_many().filter(timer::Column::RunId.eq(run.id.0)).exec(self.c).await?;
            }
            Effect::Enqueue(item) => {
                let item = *item;
                match &item.payload {
                    // One item per configured channel, each with its own key, retries and audit.
                    OutboxPayload::Notify { notification, channel: None } => {
                        let routed: Vec<&String> = self
                            .shared
                            .channels
                            .iter()
                            .filter(|c| {
                                notification.route.channels.is_empty() || notification.route.channels.contains(c)
                            })
                            .collect();
                        // A route naming no configured channel falls back to all of them: an
                        // approval request is never dropped for want of a channel.
                        let targets = if routed.is_empty() { self.shared.channels.iter().collect() } else { routed };
                        for name in targets {
                            let key = format!("{}:{name}", item.idempotency_key);
                            let mut notification = notification.clone();
                            notification.idempotency_key.clone_from(&key);
                            let fanned = NewOutbox {
                                id: OutboxId::new(),
                                idempotency_key: key,
                                step_index: item.step_index,
                                retry: item.retry,
                                payload: OutboxPayload::Notify { notification, channel: Some(name.clone()) },
                            };
                            self.enqueue(run, fanned);
                        }
                    }
                    _ => self.enqueue(run, item),
                }
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
                if let Some(lead) = self.shared.expiry_warning {
                    self.move_timer(g.run_id, TimerKind::ExpiryWarning, expires_at - lead).await?;
                }
                self.touch_other_run(RunId(g.run_id)).await?;
            }
            Effect::WakeGrantRun { grant_id } => {
                let Some(g) = grant::Entity::find_by_id(grant_id.0).one(self.c).await? else { return Ok(()) };
                self.move_wait_timer(g.run_id, self.now).await?;
                self.touch_other_run(RunId(g.run_id)).await?;
            }
        }
        Ok(())
    }

    /// Defers an outbox insert to the end of the batch and hands the item over after commit.
    fn enqueue(&mut self, run: &Run, item: NewOutbox) {
        self.enqueue_for(run.id, item);
    }

    fn enqueue_for(&mut self, run_id: RunId, item: NewOutbox) {
        self.pending.outbox.push(
            outbox::Model {
                id: item.id.0,
                run_id: run_id.0,
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
        );
        self.pending.after.outbox.push(OutboxWork { id: item.id, run_id, attempts: 0, item });
    }

    async fn move_wait_timer(&mut self, run_id: uuid::Uuid, due: DateTime<Utc>) -> Result<(), JobError> {
        self.move_timer(run_id, TimerKind::Wait, due).await
    }

    /// Moves a run's pending timer of `kind` (a renewal moves the expiry and its warning; an
    /// early revocation brings the expiry forward).
    async fn move_timer(&mut self, run_id: uuid::Uuid, kind: TimerKind, due: DateTime<Utc>) -> Result<(), JobError> {
        let res = timer::Entity::update_many()
            .col_expr(timer::Column::DueAt, Expr::value(due))
            .filter(timer::Column::RunId.eq(run_id))
            .filter(timer::Column::Kind.eq(kind.as_str()))
            .exec(self.c)
            .await?;
        if res.rows_affected > 0 {
            self.pending.after.timer(due);
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
        self.wrote = true;
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

    async fn open_task(&mut self, outbox_id: OutboxId, run_id: RunId, operator: &str, instructions: &str) -> JobResult {
        if task::Entity::find().filter(task::Column::OutboxId.eq(outbox_id.0)).one(self.c).await?.is_some() {
            return Ok(JobOutput::Done);
        }
        let id = TaskId::new();
        self.wrote = true;
        task::Entity::insert(
            task::Model {
                id: id.0,
                outbox_id: outbox_id.0,
                run_id: run_id.0,
                operator: operator.to_owned(),
                instructions: instructions.to_owned(),
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
        self.pending.events.push(AuditEvent {
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
        actor: &str,
        is_admin: bool,
        done: bool,
        comment: Option<String>,
    ) -> JobResult {
        let t = task::Entity::find_by_id(task_id.0).one(self.c).await?.ok_or(JobError::NotFound("task"))?;
        if t.operator != actor && !is_admin {
            return Err(JobError::NotTaskOperator.into());
        }
        if t.status != "open" {
            return Err(JobError::TaskResolved.into());
        }
        let status = if done { "done" } else { "failed" };
        self.wrote = true;
        task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(status))
            .col_expr(task::Column::ResolvedBy, Expr::value(actor.to_owned()))
            .col_expr(task::Column::Comment, Expr::value(comment.clone()))
            .col_expr(task::Column::ResolvedAt, Expr::value(self.now))
            .filter(task::Column::Id.eq(task_id.0))
            .exec(self.c)
            .await?;
        let outbox_id = OutboxId(t.outbox_id);
        let error = (!done).then(|| comment.clone().unwrap_or_else(|| "operator reported failure".to_owned()));
        self.update_outbox(outbox_id, status, 1, None, error).await?;
        let command = if done {
            Command::ActionSucceeded {
                outbox_id,
                reference: None,
                at: None,
                actor: actor.to_owned(),
                channel: "api".to_owned(),
            }
        } else {
            let error = format!("operator reported failure: {}", comment.unwrap_or_default());
            Command::ActionFailed { outbox_id, error, actor: actor.to_owned(), channel: "api".to_owned() }
        };
        self.apply(RunId(t.run_id), &command).await?;
        Ok(JobOutput::TaskResolved(RunId(t.run_id)))
    }
}

fn vote_model(run_id: RunId, v: &Vote) -> decision::ActiveModel {
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
    .into_active_model()
}

/// Loads what a transition needs to see of a run.
pub(crate) async fn load_state<C: ConnectionTrait>(c: &C, run_id: RunId) -> Result<Option<RunState>, StoreError> {
    let Some(m) = run::Entity::find_by_id(run_id.0).one(c).await? else { return Ok(None) };
    let run = Run::try_from(m)?;
    // Every vote of the run, whatever its step: one vote per person per run, and a retried
    // decision is recognised by the vote it already left.
    let votes = decision::Entity::find()
        .filter(decision::Column::RunId.eq(run_id.0))
        .order_by_asc(decision::Column::DecidedAt)
        .all(c)
        .await?
        .into_iter()
        .map(Vote::try_from)
        .collect::<Result<_, _>>()?;
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
