//! The transaction a job runs in: the connection, the clock reading of the batch, the run
//! cache, the writes deferred to the end of the batch (outbox and vote inserts, "done" outbox
//! updates, audit records), which are written set-wise because each statement costs a round
//! trip to the driver's thread, and the batch's end of the audit chain.
//!
//! A job reads through [`Tx::conn`] and writes through [`Tx::write`], which records that it
//! wrote: a job refused after writing aborts its batch.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, LockType, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, IntoActiveModel, QueryFilter,
    QuerySelect,
};

use super::entity::{audit_head, audit_log, decision, grant, outbox, run};
use super::writer::{AfterCommit, EventLine, JobError, OutboxWork};
use super::{StoreError, to_json};
use crate::audit::{self, AuditEvent};
use crate::context::Shared;
use crate::effect::NewOutbox;
use crate::ids::RunId;
use crate::run::{Grant, RunState, StepState, Vote};

/// One job's view of the batch transaction.
pub(crate) struct Tx<'a> {
    c: &'a DatabaseTransaction,
    shared: &'a Shared,
    cache: &'a mut RunCache,
    chain: &'a mut AuditChain,
    now: DateTime<Utc>,
    pub(crate) pending: Pending,
    /// Whether this job already wrote something (a later failure must then abort the batch).
    wrote: bool,
}

impl<'a> Tx<'a> {
    pub(super) fn new(
        c: &'a DatabaseTransaction,
        shared: &'a Shared,
        cache: &'a mut RunCache,
        chain: &'a mut AuditChain,
        now: DateTime<Utc>,
    ) -> Self {
        Self { c, shared, cache, chain, now, pending: Pending::default(), wrote: false }
    }

    /// Whether the job wrote, and what it deferred.
    pub(super) fn into_parts(self) -> (bool, Pending) {
        (self.wrote, self.pending)
    }

    /// The connection, for reads.
    pub(crate) fn conn(&self) -> &'a DatabaseTransaction {
        self.c
    }

    /// The connection, for a write: from now on a refusal of this job aborts the batch.
    pub(crate) fn write(&mut self) -> &'a DatabaseTransaction {
        self.wrote = true;
        self.c
    }

    /// Whether the job wrote already.
    pub(crate) fn wrote(&self) -> bool {
        self.wrote
    }

    /// Undoes [`Tx::write`]'s mark when the write turned out to change nothing (a failed
    /// compare-and-set): `before` is what [`Tx::wrote`] said before it.
    pub(crate) fn unmark_write(&mut self, before: bool) {
        self.wrote = before;
    }

    /// The batch's time: every job of a batch sees the same instant.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.now
    }

    /// Configuration, catalog, directory, clock.
    pub(crate) fn shared(&self) -> &'a Shared {
        self.shared
    }

    /// Appends an audit record (written with the batch, in order).
    pub(crate) fn audit(&mut self, event: AuditEvent) {
        self.pending.events.push(event);
    }

    /// Appends the audit records this job recorded so far to the chain now, after those of the
    /// batch's earlier jobs, instead of holding them until the batch's end: a job that records
    /// thousands keeps memory bounded. The chain's order and hashes are those the batch's end
    /// would give; it counts as a write (a later refusal aborts the batch, records included).
    ///
    /// # Errors
    /// Database failures.
    pub(crate) async fn append_audit(&mut self) -> Result<(), sea_orm::DbErr> {
        if self.pending.events.is_empty() {
            return Ok(());
        }
        self.wrote = true;
        self.chain.queue(std::mem::take(&mut self.pending.events));
        self.chain.append(self.c, self.now).await
    }

    /// Caches the state a job just wrote.
    pub(crate) fn cache_put(&mut self, state: RunState) {
        self.pending.touched.push(state.run.id);
        self.cache.put(state);
    }

    /// Drops a cached state (another run changed it, or it proved stale).
    pub(crate) fn forget(&mut self, run_id: RunId) {
        self.cache.forget(run_id);
        self.pending.touched.push(run_id);
    }

    /// The state a transition reads, and whether it came from the cache (for runs acting on
    /// another run's grant, the grant is always re-read: its owner may have changed it). A cached
    /// state may be stale: only a compare-and-set, or [`Self::is_current`], makes it safe.
    pub(crate) async fn state(&mut self, run_id: RunId) -> Result<(RunState, bool), JobError> {
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
    pub(crate) async fn current_state(&mut self, run_id: RunId) -> Result<RunState, JobError> {
        let (state, cached) = self.state(run_id).await?;
        if !cached || self.is_current(&state).await? {
            return Ok(state);
        }
        self.forget(run_id);
        Ok(self.state(run_id).await?.0)
    }

    /// Whether `state` still has the stored version of its run (read in this transaction).
    pub(crate) async fn is_current(&mut self, state: &RunState) -> Result<bool, JobError> {
        let stored: Option<i64> = run::Entity::find_by_id(state.run.id.0)
            .select_only()
            .column(run::Column::Version)
            .into_tuple()
            .one(self.c)
            .await?;
        Ok(stored == Some(state.run.version))
    }

    /// Defers an outbox insert to the end of the batch and hands the item over after commit.
    pub(crate) fn enqueue(&mut self, run_id: RunId, item: NewOutbox) {
        let due = item.not_before.map_or(self.now, |t| t.max(self.now));
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
                next_attempt_at: due,
                lease_owner: Some(self.shared.node_id.clone()),
                lease_until: Some(due + self.shared.lease),
                last_error: None,
                created_at: self.now,
                updated_at: self.now,
            }
            .into_active_model(),
        );
        self.pending.after.outbox.push(OutboxWork { id: item.id, run_id, attempts: 0, item });
    }

    /// Defers a vote insert to the end of the batch.
    pub(crate) fn vote(&mut self, run_id: RunId, v: &Vote) {
        self.pending.votes.push(
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
        );
    }

    /// Defers marking an outbox item done (with its attempt count) to the end of the batch.
    pub(crate) fn outbox_done(&mut self, id: uuid::Uuid, attempts: i32) {
        self.pending.done.entry(attempts).or_default().push(id);
    }

    /// Wakes the timer service after commit if `due` is nearer than what it waits for.
    pub(crate) fn timer_due(&mut self, due: DateTime<Utc>) {
        self.pending.after.timer(due);
    }
}

/// Writes deferred to the end of a batch, and what to do after it commits.
#[derive(Default)]
pub(crate) struct Pending {
    /// The job's audit records (the batch's go to its [`AuditChain`] as each job succeeds).
    pub(crate) events: Vec<AuditEvent>,
    pub(crate) after: AfterCommit,
    outbox: Vec<outbox::ActiveModel>,
    votes: Vec<decision::ActiveModel>,
    /// Outbox items that succeeded, by attempt count.
    done: BTreeMap<i32, Vec<uuid::Uuid>>,
    /// Runs whose cached state this batch changed (forgotten if the batch rolls back).
    pub(crate) touched: Vec<RunId>,
}

impl Pending {
    /// Takes over a successful job's deferred writes; its audit records go to `chain`.
    pub(crate) fn absorb(&mut self, other: Self, chain: &mut AuditChain) {
        chain.queue(other.events);
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

    /// Keeps only which runs a refused job touched (so a rollback forgets them too).
    pub(crate) fn absorb_touched(&mut self, other: Self) {
        self.touched.extend(other.touched);
    }

    pub(crate) async fn flush(&mut self, txn: &DatabaseTransaction, now: DateTime<Utc>) -> Result<(), sea_orm::DbErr> {
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
        Ok(())
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

/// Run state kept between batches. Only an optimisation that never decides: run updates are
/// compare-and-set on `version`, and what a cached state ignores or refuses is checked against
/// the stored version first ([`Tx::is_current`]); a stale entry is dropped and the job retries on
/// fresh state.
#[derive(Default)]
pub(crate) struct RunCache {
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

    pub(crate) fn forget_all(&mut self, ids: &[RunId]) {
        for id in ids {
            self.map.remove(id);
        }
    }
}

/// Loads what a transition needs to see of a run.
pub(crate) async fn load_state<C: ConnectionTrait>(c: &C, run_id: RunId) -> Result<Option<RunState>, StoreError> {
    // Every vote of the run, whatever its step: one vote per person per run, and a retried
    // decision is recognised by the vote it already left.
    let view = super::query::run_view(c, run_id).await?;
    Ok(view.map(|v| RunState { run: v.run, votes: v.votes, grant: v.grant }))
}

/// The batch's end of the audit chain. Records are appended in the order their jobs recorded
/// them: those of the batch's finished jobs wait here until its end, unless a later job appends
/// its own early ([`Tx::append_audit`]), which appends the waiting ones first. The head is read
/// once (on PostgreSQL the batch holds its row lock from the start) and written back once.
#[derive(Default)]
pub(crate) struct AuditChain {
    /// Records not appended yet, in order.
    queued: Vec<AuditEvent>,
    /// `(seq, hash)` of the last record appended, once read in this transaction.
    head: Option<(i64, String)>,
    /// Whether `head` moved since it was read (the stored head must follow).
    moved: bool,
    /// The appended records' log lines (when the audit log target is on), to log once the
    /// batch committed: a list a chunk, so that a bulk import's 100,000 never need one
    /// contiguous list grown by doubling.
    pub(crate) lines: Vec<Vec<EventLine>>,
}

impl AuditChain {
    /// Rows a multi-row insert carries: 14 columns a row, far below SQLite's bound-parameter
    /// limit (32,766) and PostgreSQL's (65,535).
    const CHUNK: usize = 500;

    /// Queues records after those already queued.
    pub(crate) fn queue(&mut self, events: Vec<AuditEvent>) {
        if self.queued.is_empty() {
            self.queued = events;
        } else {
            self.queued.extend(events);
        }
    }

    /// Seals the queued records after the head (read first if need be) and inserts them, a
    /// chunk at a time.
    async fn append(&mut self, txn: &DatabaseTransaction, now: DateTime<Utc>) -> Result<(), sea_orm::DbErr> {
        if self.queued.is_empty() {
            return Ok(());
        }
        let (mut seq, mut hash) = match self.head.take() {
            Some(head) => head,
            None => read_head(txn).await?,
        };
        let log = tracing::enabled!(target: "tollgate::audit", tracing::Level::INFO);
        let mut events = std::mem::take(&mut self.queued).into_iter();
        loop {
            let mut models = Vec::with_capacity(events.len().min(Self::CHUNK));
            let mut lines = Vec::with_capacity(if log { events.len().min(Self::CHUNK) } else { 0 });
            for event in events.by_ref().take(Self::CHUNK) {
                if log {
                    lines.push(EventLine::of(&event));
                }
                seq += 1;
                let (record, details) = audit::seal_with_text(seq, now, event, &hash);
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
                    details: Set(details),
                    prev_hash: Set(record.prev_hash),
                    hash: Set(record.hash),
                });
            }
            if models.is_empty() {
                break;
            }
            if !lines.is_empty() {
                self.lines.push(lines);
            }
            audit_log::Entity::insert_many(models).exec_without_returning(txn).await?;
        }
        self.head = Some((seq, hash));
        self.moved = true;
        Ok(())
    }

    /// Appends what is still queued and moves the stored head: the batch's last write.
    pub(crate) async fn finish(&mut self, txn: &DatabaseTransaction, now: DateTime<Utc>) -> Result<(), sea_orm::DbErr> {
        self.append(txn, now).await?;
        let Some((seq, hash)) = self.head.as_ref().filter(|_| self.moved) else { return Ok(()) };
        audit_head::Entity::update_many()
            .col_expr(audit_head::Column::Seq, Expr::value(*seq))
            .col_expr(audit_head::Column::Hash, Expr::value(hash.as_str()))
            .filter(audit_head::Column::Id.eq(1))
            .exec(txn)
            .await?;
        self.moved = false;
        Ok(())
    }
}

/// The chain's head as stored: `(seq, hash)` of its last record.
async fn read_head(txn: &DatabaseTransaction) -> Result<(i64, String), sea_orm::DbErr> {
    use sea_orm::sea_query::ExprTrait as _;
    let mut select = Query::select();
    select
        .columns([audit_head::Column::Seq, audit_head::Column::Hash])
        .from(audit_head::Entity)
        .and_where(Expr::col(audit_head::Column::Id).eq(1));
    if txn.get_database_backend() == DbBackend::Postgres {
        select.lock(LockType::Update);
    }
    let row = txn.query_one(&select).await?.ok_or_else(|| sea_orm::DbErr::RecordNotFound("audit_head".to_owned()))?;
    Ok((row.try_get("", "seq")?, row.try_get("", "hash")?))
}
