//! The single writer: a generic transactional executor. Every state change goes through one task
//! that commits batches of jobs in one transaction each (group commit), so a burst of decisions
//! costs one fsync, not one each.
//!
//! The writer knows nothing of runs, outbox items or links: features define their jobs (one type
//! each, implementing [`Job`] next to the feature) and the writer only runs them. What it owns:
//! - two lanes: timer firings and side-effect results (`submit_internal`) go ahead of API
//!   traffic, so timers fire on time under load;
//! - group commit: up to [`MAX_BATCH`] jobs in one transaction. Jobs refuse before they write,
//!   so a refused job leaves the batch intact; a database error rolls the batch back and its
//!   jobs are replayed one per transaction, so only the faulty job fails;
//! - transient failures (deadlock, serialization failure, SQLite busy) roll the batch back and
//!   run it again, unseen by callers;
//! - on PostgreSQL, every write transaction first locks the audit chain head, the one row all of
//!   them write: replicas' batches run one at a time, so they cannot deadlock on each other's
//!   rows, and each reads everything committed before it;
//! - the run cache and the deferred writes of a batch, both in [`Tx`], and the audit chain
//!   append at the end of each batch (`AuditChain`; a job recording many records may append
//!   them early, in the same order, with `Tx::append_audit`);
//! - isolation of a failing job: a job that panics rolls its batch back like a database error,
//!   the batch is replayed one job per transaction, and only that job's caller gets an error
//!   ([`StoreError::JobPanicked`]); the writer goes on. Panics are logged and counted
//!   ([`crate::health::Health::job_panics`]).

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use sea_orm::sea_query::{Expr, LockType, Query};
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tokio::sync::{mpsc, oneshot};

use super::entity::audit_head;
use super::tx::{AuditChain, Pending, RunCache, Tx};
use super::{Db, StoreError};
use crate::audit::AuditEvent;
use crate::context::{Missing, Shared};
use crate::effect::NewOutbox;
use crate::health::{Heartbeats, Loop};
use crate::ids::{OutboxId, RunId};
use crate::transition::TransitionError;

/// How many jobs one transaction may carry.
pub(crate) const MAX_BATCH: usize = 128;

/// How often a transaction that met a transient failure (deadlock, serialization failure,
/// busy database) is run again before its jobs are replayed one by one.
const TRANSIENT_RETRIES: u32 = 5;

/// A unit of work for the writer. Each feature defines its jobs next to the feature.
///
/// A job runs inside the batch's transaction and must refuse before it writes: a refusal after
/// a write ([`Tx::write`] marks it) aborts the batch, which is then replayed one job per
/// transaction. A job may run more than once (a replayed or retried batch), so it must not keep
/// state between runs.
#[async_trait::async_trait]
pub(crate) trait Job: Send + Sync + 'static {
    /// What the job answers its caller once the batch committed.
    type Output: Send + 'static;

    /// Does the job's reads and writes in `tx`.
    async fn run(&self, tx: &mut Tx<'_>) -> Result<Self::Output, Refusal>;
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
    /// A configuration reload cannot be applied (nothing of it was).
    #[error("the configuration cannot be applied: {0}")]
    ConfigRefused(String),
    /// Infrastructure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sea_orm::DbErr> for JobError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(StoreError::Db(e))
    }
}

impl From<Missing> for JobError {
    fn from(e: Missing) -> Self {
        Self::NotFound(e.0)
    }
}

/// A job's refusal: plain, or with an audit record that commits although the job did not
/// happen (a refused decision is evidence too).
#[derive(Debug)]
pub(crate) enum Refusal {
    Plain(JobError),
    Audited(JobError, Box<AuditEvent>),
}

impl<E: Into<JobError>> From<E> for Refusal {
    fn from(e: E) -> Self {
        Self::Plain(e.into())
    }
}

impl Refusal {
    fn into_error(self) -> JobError {
        match self {
            Self::Plain(e) | Self::Audited(e, _) => e,
        }
    }
}

/// A queued job with its caller's reply channel, type-erased for the batch.
#[async_trait::async_trait]
trait Queued: Send {
    async fn run(&mut self, tx: &mut Tx<'_>) -> Result<(), Refusal>;
    /// The job's type, for logs.
    fn name(&self) -> &'static str;
    fn reply(self: Box<Self>, result: Result<(), JobError>);
}

struct Envelope<J: Job> {
    job: J,
    output: Option<J::Output>,
    reply: oneshot::Sender<Result<J::Output, JobError>>,
}

#[async_trait::async_trait]
impl<J: Job> Queued for Envelope<J> {
    async fn run(&mut self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        self.output = Some(self.job.run(tx).await?);
        Ok(())
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<J>()
    }

    fn reply(self: Box<Self>, result: Result<(), JobError>) {
        let Self { output, reply, .. } = *self;
        let _ = reply.send(result.and_then(|()| output.ok_or(JobError::Store(StoreError::Closed))));
    }
}

type Boxed = Box<dyn Queued>;

/// Side effects to hand to the dispatcher and the timer service once the batch committed.
#[derive(Default)]
pub(crate) struct AfterCommit {
    pub(crate) outbox: Vec<OutboxWork>,
    pub(crate) earliest_timer: Option<DateTime<Utc>>,
}

impl AfterCommit {
    pub(crate) fn timer(&mut self, due: DateTime<Utc>) {
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
    normal: mpsc::Sender<Boxed>,
    internal: mpsc::Sender<Boxed>,
}

impl WriterHandle {
    /// Submits a job and waits for its commit.
    pub(crate) async fn submit<J: Job>(&self, job: J) -> Result<J::Output, JobError> {
        Self::send(&self.normal, job).await
    }

    /// Submits an engine-internal job (timer firing, side-effect result) through the priority
    /// lane, ahead of API traffic.
    pub(crate) async fn submit_internal<J: Job>(&self, job: J) -> Result<J::Output, JobError> {
        Self::send(&self.internal, job).await
    }

    async fn send<J: Job>(lane: &mpsc::Sender<Boxed>, job: J) -> Result<J::Output, JobError> {
        let (reply, rx) = oneshot::channel();
        let envelope: Boxed = Box::new(Envelope { job, output: None, reply });
        lane.send(envelope).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

/// Channels the writer feeds after each commit, and the heartbeats it keeps.
pub(crate) struct Sinks {
    pub(crate) outbox: mpsc::UnboundedSender<OutboxWork>,
    pub(crate) timers: mpsc::UnboundedSender<DateTime<Utc>>,
    pub(crate) health: Arc<Heartbeats>,
}

/// The writer: its handle, and the loop to spawn (it ends when every handle is dropped).
pub(crate) fn new(
    db: Db,
    shared: Arc<Shared>,
    sinks: Sinks,
) -> (WriterHandle, impl std::future::Future<Output = ()> + Send + 'static) {
    let (normal, normal_rx) = mpsc::channel(4096);
    let (internal, internal_rx) = mpsc::channel(4096);
    (WriterHandle { normal, internal }, run_writer(db, shared, sinks, internal_rx, normal_rx))
}

async fn run_writer(
    db: Db,
    shared: Arc<Shared>,
    sinks: Sinks,
    mut internal: mpsc::Receiver<Boxed>,
    mut normal: mpsc::Receiver<Boxed>,
) {
    let mut cache = RunCache::default();
    let (mut high, mut low) = (Vec::with_capacity(MAX_BATCH), Vec::with_capacity(MAX_BATCH));
    let (mut internal_open, mut normal_open) = (true, true);
    sinks.health.beat(Loop::Writer);
    while internal_open || normal_open {
        tokio::select! {
            biased;
            n = internal.recv_many(&mut high, MAX_BATCH), if internal_open => internal_open = n > 0,
            n = normal.recv_many(&mut low, MAX_BATCH), if normal_open => normal_open = n > 0,
        }
        // Top the batch up with whatever else is queued, priority lane first.
        let room = MAX_BATCH.saturating_sub(high.len() + low.len());
        top_up(&mut internal, &mut high, room);
        let room = MAX_BATCH.saturating_sub(high.len() + low.len());
        top_up(&mut normal, &mut low, room);
        let mut batch = std::mem::take(&mut high);
        batch.append(&mut low);
        if !batch.is_empty() {
            sinks.health.writer_busy(true);
            commit_batch(&db, &shared, &sinks, &mut cache, batch).await;
            sinks.health.writer_busy(false);
        }
    }
    sinks.health.stopped(Loop::Writer);
    tracing::debug!("writer stopped");
}

/// Moves up to `room` already-queued jobs from `rx` into `into`, without waiting.
fn top_up(rx: &mut mpsc::Receiver<Boxed>, into: &mut Vec<Boxed>, room: usize) {
    for _ in 0..room {
        match rx.try_recv() {
            Ok(job) => into.push(job),
            Err(_) => break,
        }
    }
}

async fn commit_batch(db: &Db, shared: &Shared, sinks: &Sinks, cache: &mut RunCache, mut jobs: Vec<Boxed>) {
    let started = std::time::Instant::now();
    let count = jobs.len();
    let results = match run_batch_retrying(db, shared, cache, &mut jobs, sinks).await {
        Ok(results) => results,
        Err(e) if count > 1 => {
            // Replay one job per transaction: only the faulty job fails.
            tracing::warn!(error = %e, jobs = count, "batch aborted; replaying its jobs one by one");
            let mut results = Vec::with_capacity(count);
            for job in &mut jobs {
                results.push(match run_batch_retrying(db, shared, cache, std::slice::from_mut(job), sinks).await {
                    Ok(mut r) => r.pop().unwrap_or(Err(JobError::Store(StoreError::Closed))),
                    Err(e) => Err(JobError::Store(e)),
                });
            }
            results
        }
        Err(e) => vec![Err(JobError::Store(e))],
    };
    tracing::debug!(jobs = count, elapsed_us = started.elapsed().as_micros(), "batch committed");
    for (job, result) in jobs.into_iter().zip(results) {
        job.reply(result);
    }
}

/// [`run_batch`], run again after a transient failure (nothing of a rolled-back attempt stays:
/// the cache entries it touched are forgotten and nothing was handed over).
async fn run_batch_retrying(
    db: &Db,
    shared: &Shared,
    cache: &mut RunCache,
    jobs: &mut [Boxed],
    sinks: &Sinks,
) -> Result<Vec<Result<(), JobError>>, StoreError> {
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
    jobs: &mut [Boxed],
    sinks: &Sinks,
) -> Result<Vec<Result<(), JobError>>, StoreError> {
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
    let mut chain = AuditChain::default();
    let mut results = Vec::with_capacity(jobs.len());
    for job in jobs.iter_mut() {
        let mut tx = Tx::new(&txn, shared, &mut *cache, &mut chain, now);
        let outcome = AssertUnwindSafe(job.run(&mut tx)).catch_unwind().await;
        let (wrote, job_pending) = tx.into_parts();
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(panic) => {
                // What the job wrote, and what it left in the cache, cannot be trusted: roll the
                // whole batch back (it is replayed one job per transaction, so only this job fails).
                sinks.health.job_panicked();
                let job = job.name();
                tracing::error!(
                    job,
                    panic = panic_message(panic.as_ref()),
                    "a job panicked; its transaction is rolled back"
                );
                pending.absorb_touched(job_pending);
                cache.forget_all(&pending.touched);
                let _ = txn.rollback().await;
                return Err(StoreError::JobPanicked { job });
            }
        };
        match outcome {
            Ok(()) => {
                pending.absorb(job_pending, &mut chain);
                results.push(Ok(()));
            }
            // Refused before writing: the rest of the batch is unaffected. A refused decision
            // still leaves its audit record.
            Err(Refusal::Audited(err, event)) if !wrote => {
                pending.absorb_touched(job_pending);
                chain.queue(vec![*event]);
                results.push(Err(err));
            }
            Err(Refusal::Plain(err)) if !wrote && !matches!(err, JobError::Store(_)) => {
                pending.absorb_touched(job_pending);
                results.push(Err(err));
            }
            Err(refusal) => {
                pending.absorb_touched(job_pending);
                cache.forget_all(&pending.touched);
                let _ = txn.rollback().await;
                return Err(match refusal.into_error() {
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
        chain.finish(&txn, now).await?;
        txn.commit().await
    }
    .await;
    if let Err(e) = flushed {
        cache.forget_all(&pending.touched);
        return Err(e.into());
    }
    // One log line per audit event once committed (what happened, to what, by whom, through
    // which channel: never details, justifications or comments).
    for line in chain.lines.iter().flatten() {
        line.log();
    }
    for w in pending.after.outbox {
        let _ = sinks.outbox.send(w);
    }
    if let Some(t) = pending.after.earliest_timer {
        let _ = sinks.timers.send(t);
    }
    Ok(results)
}

/// The loggable part of an audit event, in one allocation: a bulk import keeps one for each of
/// its records until its batch commits.
pub(crate) struct EventLine {
    /// Event type, outcome, actor, subject and channel, end to end.
    text: Box<str>,
    /// Where each of the first four ends in `text`.
    ends: [usize; 4],
    run_id: Option<uuid::Uuid>,
}

impl EventLine {
    pub(super) fn of(e: &AuditEvent) -> Self {
        let parts = [&e.event_type, &e.outcome, &e.actor, &e.subject, &e.channel];
        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 4];
        for (i, part) in parts.into_iter().enumerate() {
            text.push_str(part);
            if let Some(end) = ends.get_mut(i) {
                *end = text.len();
            }
        }
        Self { text: text.into_boxed_str(), ends, run_id: e.run_id }
    }

    fn log(&self) {
        let (t, [a, b, c, d]) = (&*self.text, self.ends);
        let (event_type, outcome, actor, subject, channel) = (&t[..a], &t[a..b], &t[b..c], &t[c..d], &t[d..]);
        let run = self.run_id.map(|r| r.to_string()).unwrap_or_default();
        tracing::info!(
            target: "tollgate::audit",
            event = %event_type, outcome = %outcome, actor = %actor, subject = %subject,
            channel = %channel, run.id = %run,
            "{}", event_type
        );
    }
}

/// The text of a panic's payload (a `&str` or `String`, as `panic!` makes them).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sea_orm::{ConnectionTrait, Statement};
    use tokio::sync::Semaphore;

    use super::{Job, JobError, Refusal};
    use crate::audit::AuditEvent;
    use crate::clock::SystemClock;
    use crate::feature::audit_events::AppendAudit;
    use crate::health::LoopState;
    use crate::store::tx::Tx;
    use crate::store::{self, StoreError};
    use crate::{Engine, EngineSettings, Shared};

    /// Records an audit event, then panics: a bug inside one job.
    struct Panics;

    #[async_trait::async_trait]
    impl Job for Panics {
        type Output = ();

        async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
            tx.audit(event("must_not_commit"));
            panic!("a bug inside a job");
        }
    }

    /// Holds the writer until a permit is released.
    struct Holds(Arc<Semaphore>);

    #[async_trait::async_trait]
    impl Job for Holds {
        type Output = ();

        async fn run(&self, _tx: &mut Tx<'_>) -> Result<(), Refusal> {
            let _permit = self.0.acquire().await.map_err(|_| JobError::Store(StoreError::Closed))?;
            Ok(())
        }
    }

    fn event(kind: &str) -> AuditEvent {
        AuditEvent {
            event_type: kind.to_owned(),
            channel: "test".to_owned(),
            outcome: "success".to_owned(),
            actor: "system".to_owned(),
            subject: "test".to_owned(),
            run_id: None,
            justification: None,
            workflow_key: None,
            workflow_version: None,
            details: serde_json::Value::Null,
        }
    }

    async fn engine(stall_bound: Duration) -> (Arc<Engine>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = store::connect(&url, 2).await.unwrap();
        store::migrate(&db).await.unwrap();
        let shared = Shared {
            live: crate::context::LiveCell::new(
                tollgate_workflows::Catalog::new(),
                crate::directory::Directory::default(),
            ),
            clock: Arc::new(SystemClock),
            node_id: "test".to_owned(),
            lease: chrono::Duration::seconds(60),
            channels: Vec::new(),
            expiry_warning: None,
            sealing: None,
        };
        let settings =
            EngineSettings { stall_bound, scan_interval: Duration::from_millis(50), ..EngineSettings::default() };
        let engine = Engine::start(db, shared, Default::default(), Vec::new(), settings).await.unwrap();
        (Arc::new(engine), dir)
    }

    async fn audited(e: &Engine, kind: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) AS n FROM audit_log WHERE event_type = '{kind}'");
        let stmt = Statement::from_string(e.db().backend(), sql);
        e.db().read.query_one_raw(stmt).await.unwrap().unwrap().try_get("", "n").unwrap()
    }

    /// Polls `cond` until it holds (at most 10 s).
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
        let (e, _dir) = engine(Duration::from_secs(30)).await;
        until("the engine's loops to run", || e.health().is_ready()).await;
        // Hold the writer so the next jobs share one batch with the panicking one.
        let gate = Arc::new(Semaphore::new(0));
        let held = tokio::spawn({
            let (w, gate) = (e.writer.clone(), gate.clone());
            async move { w.submit(Holds(gate)).await }
        });
        until("the writer to be busy", || e.health.health(Duration::ZERO, Duration::ZERO).writer != LoopState::Ok)
            .await;
        let before = (0..3).map(|i| {
            let w = e.writer.clone();
            tokio::spawn(async move { w.submit(AppendAudit(vec![event(&format!("before_{i}"))])).await })
        });
        let before: Vec<_> = before.collect();
        let bad = tokio::spawn({
            let w = e.writer.clone();
            async move { w.submit(Panics).await }
        });
        let after = tokio::spawn({
            let w = e.writer.clone();
            async move { w.submit(AppendAudit(vec![event("after")])).await }
        });
        gate.add_permits(1);
        held.await.unwrap().unwrap();
        assert!(
            matches!(bad.await.unwrap(), Err(JobError::Store(StoreError::JobPanicked { job })) if job.ends_with("Panics")),
            "the panicking job's caller gets an internal error"
        );
        for j in before {
            j.await.unwrap().unwrap();
        }
        after.await.unwrap().unwrap();
        // Its batch companions committed, its own write did not, and the writer still writes.
        for i in 0..3 {
            assert_eq!(audited(&e, &format!("before_{i}")).await, 1);
        }
        assert_eq!(audited(&e, "after").await, 1);
        assert_eq!(audited(&e, "must_not_commit").await, 0);
        e.writer.submit(AppendAudit(vec![event("later")])).await.unwrap();
        assert_eq!(audited(&e, "later").await, 1);
        let health = e.health();
        assert!(health.is_ready(), "{health:?}");
        assert!(health.job_panics >= 1, "{health:?}");
        let verified = store::query::verify_audit(e.db()).await.unwrap();
        assert!(verified.is_ok(), "the chain still verifies: {verified:?}");
        e.shutdown().await;
    }

    #[tokio::test]
    async fn readiness_fails_while_the_writer_is_stuck_and_recovers() {
        let (e, _dir) = engine(Duration::from_millis(100)).await;
        until("the engine to be ready", || e.health().is_ready()).await;
        let gate = Arc::new(Semaphore::new(0));
        let held = tokio::spawn({
            let (w, gate) = (e.writer.clone(), gate.clone());
            async move { w.submit(Holds(gate)).await }
        });
        until("the writer to count as stuck", || matches!(e.health().writer, LoopState::Stuck { .. })).await;
        assert!(!e.health().is_ready());
        gate.add_permits(1);
        held.await.unwrap().unwrap();
        until("the engine to be ready again", || e.health().is_ready()).await;
        e.shutdown().await;
    }
}
