//! Reads: requests, grants, tasks, tokens, the audit log, and the engine's own scans.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entity::{api_token, audit_log, decision, grant, outbox, run, task, timer};
use super::{StoreError, corrupt};
use crate::audit::{self, AuditRecord, ChainBreak, ChainVerifier, VerifyReport};
use crate::effect::{NewOutbox, TimerKind};
use crate::ids::{GrantId, OutboxId, RunId, TaskId, TimerId};
use crate::run::{Grant, GrantStatus, Run, RunStatus, Vote};
use crate::token::{ApiToken, TokenStatus};

/// A request with everything the API shows about it.
#[derive(Debug, Clone)]
pub struct RunView {
    /// The run.
    pub run: Run,
    /// Every vote on every step, oldest first.
    pub votes: Vec<Vote>,
    /// The grant, if any.
    pub grant: Option<Grant>,
}

/// Filters for listing requests.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Status.
    pub status: Option<RunStatus>,
    /// Requester.
    pub requester: Option<String>,
    /// Integration.
    pub integration: Option<String>,
}

/// Filters for listing grants.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    /// Status.
    pub status: Option<GrantStatus>,
    /// Holder.
    pub principal: Option<String>,
    /// Integration.
    pub integration: Option<String>,
}

/// A manual task.
#[derive(Debug, Clone)]
pub struct Task {
    /// Id.
    pub id: TaskId,
    /// The request.
    pub run_id: RunId,
    /// Who must confirm.
    pub operator: String,
    /// What to do.
    pub instructions: String,
    /// `open`, `done` or `failed`.
    pub status: String,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// Comment given when resolving.
    pub comment: Option<String>,
    /// When.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

/// One request with its votes and grant.
///
/// # Errors
/// Database failures.
pub async fn run_view<C: ConnectionTrait>(c: &C, id: RunId) -> Result<Option<RunView>, StoreError> {
    let Some(m) = run::Entity::find_by_id(id.0).one(c).await? else { return Ok(None) };
    let run = Run::try_from(m)?;
    let votes = decision::Entity::find()
        .filter(decision::Column::RunId.eq(id.0))
        .order_by_asc(decision::Column::DecidedAt)
        .order_by_asc(decision::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(Vote::try_from)
        .collect::<Result<_, _>>()?;
    let grant = match run.grant_id {
        Some(g) => grant::Entity::find_by_id(g.0).one(c).await?.map(Grant::try_from).transpose()?,
        None => None,
    };
    Ok(Some(RunView { run, votes, grant }))
}

/// One request read from a single snapshot, so the run and its grant (changed together in one
/// transaction) are never seen half-updated.
///
/// # Errors
/// Database failures.
pub async fn run_view_snapshot(db: &sea_orm::DatabaseConnection, id: RunId) -> Result<Option<RunView>, StoreError> {
    use sea_orm::TransactionTrait as _;
    let isolation =
        (db.get_database_backend() == sea_orm::DbBackend::Postgres).then_some(sea_orm::IsolationLevel::RepeatableRead);
    let txn = db.begin_with_config(isolation, None).await?;
    let view = run_view(&txn, id).await?;
    txn.commit().await?;
    Ok(view)
}

/// A page of requests, newest first, strictly older than `before` (the cursor).
///
/// # Errors
/// Database failures.
pub async fn list_runs<C: ConnectionTrait>(
    c: &C,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: u64,
) -> Result<Vec<Run>, StoreError> {
    let mut q = run::Entity::find();
    if let Some(s) = filter.status {
        q = q.filter(run::Column::Status.eq(s.as_str()));
    }
    if let Some(r) = &filter.requester {
        q = q.filter(run::Column::Requester.eq(r.as_str()));
    }
    if let Some(i) = &filter.integration {
        q = q.filter(run::Column::Integration.eq(i.as_str()));
    }
    if let Some(b) = before {
        q = q.filter(run::Column::Id.lt(b.0));
    }
    q.order_by_desc(run::Column::Id).limit(limit).all(c).await?.into_iter().map(Run::try_from).collect()
}

/// How many reads one page of a listing filtered after the query ([`list_visible_runs`],
/// [`list_visible_grants`]) makes at most: the work a caller who may see few rows causes is
/// bounded.
pub const MAX_PAGE_SCANS: usize = 20;

/// A page of a listing filtered after the query: at most `limit` rows, newest first, and where
/// to continue.
#[derive(Debug, Clone)]
pub struct VisiblePage<T, K> {
    /// The rows the caller may see.
    pub items: Vec<T>,
    /// Where the next page starts: the last row of this page when another row the caller may
    /// see follows it; the last row read when the page stopped at its [`MAX_PAGE_SCANS`]
    /// reads before knowing (rows may follow); `None` when nothing follows.
    pub next_cursor: Option<K>,
}

/// Reads pages of `limit + 1` rows through `fetch` (newest first, strictly older than the
/// cursor) until it holds `limit` rows `visible` lets through and knows whether another
/// follows, nothing is left, or it made [`MAX_PAGE_SCANS`] reads. The extra row is what tells
/// a full last page from one with more after it: a cursor is never given for an empty page.
async fn visible_page<T, K, F, Fut>(
    mut cursor: Option<K>,
    limit: u64,
    mut fetch: F,
    key: impl Fn(&T) -> K,
    visible: impl Fn(&T) -> bool,
) -> Result<VisiblePage<T, K>, StoreError>
where
    K: Copy,
    F: FnMut(Option<K>, u64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>, StoreError>>,
{
    let want = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut items: Vec<T> = Vec::new();
    for _ in 0..MAX_PAGE_SCANS {
        let batch = fetch(cursor, limit.saturating_add(1)).await?;
        let exhausted = (batch.len() as u64) <= limit;
        for row in batch {
            cursor = Some(key(&row));
            if visible(&row) {
                if items.len() == want {
                    // Another visible row after a full page: there is a next page.
                    return Ok(VisiblePage { next_cursor: items.last().map(&key), items });
                }
                items.push(row);
            }
        }
        if exhausted {
            return Ok(VisiblePage { items, next_cursor: None });
        }
    }
    // Out of reads before knowing: continue after the last row read.
    Ok(VisiblePage { items, next_cursor: cursor })
}

/// A page of the requests `visible` lets through (who may see what is the caller's rule),
/// newest first, strictly older than `before`; `next_cursor` only when more may follow
/// ([`VisiblePage`]).
///
/// # Errors
/// Database failures.
pub async fn list_visible_runs<C: ConnectionTrait>(
    c: &C,
    filter: &RunFilter,
    before: Option<RunId>,
    limit: u64,
    visible: impl Fn(&Run) -> bool,
) -> Result<VisiblePage<Run, RunId>, StoreError> {
    visible_page(before, limit, |b, n| list_runs(c, filter, b, n), |r: &Run| r.id, visible).await
}

/// A page of the grants `visible` lets through, newest first, strictly older than `before`;
/// `next_cursor` only when more may follow ([`VisiblePage`]).
///
/// # Errors
/// Database failures.
pub async fn list_visible_grants<C: ConnectionTrait>(
    c: &C,
    filter: &GrantFilter,
    before: Option<GrantId>,
    limit: u64,
    visible: impl Fn(&Grant) -> bool,
) -> Result<VisiblePage<Grant, GrantId>, StoreError> {
    visible_page(before, limit, |b, n| list_grants(c, filter, b, n), |g: &Grant| g.id, visible).await
}

/// One grant.
///
/// # Errors
/// Database failures.
pub async fn grant<C: ConnectionTrait>(c: &C, id: GrantId) -> Result<Option<Grant>, StoreError> {
    grant::Entity::find_by_id(id.0).one(c).await?.map(Grant::try_from).transpose()
}

/// A page of grants, newest first.
///
/// # Errors
/// Database failures.
pub async fn list_grants<C: ConnectionTrait>(
    c: &C,
    filter: &GrantFilter,
    before: Option<GrantId>,
    limit: u64,
) -> Result<Vec<Grant>, StoreError> {
    let mut q = grant::Entity::find();
    if let Some(s) = filter.status {
        q = q.filter(grant::Column::Status.eq(s.as_str()));
    }
    if let Some(p) = &filter.principal {
        q = q.filter(grant::Column::Principal.eq(p.as_str()));
    }
    if let Some(i) = &filter.integration {
        q = q.filter(grant::Column::Integration.eq(i.as_str()));
    }
    if let Some(b) = before {
        q = q.filter(grant::Column::Id.lt(b.0));
    }
    q.order_by_desc(grant::Column::Id).limit(limit).all(c).await?.into_iter().map(Grant::try_from).collect()
}

impl From<task::Model> for Task {
    fn from(t: task::Model) -> Self {
        Self {
            id: TaskId(t.id),
            run_id: RunId(t.run_id),
            operator: t.operator,
            instructions: t.instructions,
            status: t.status,
            resolved_by: t.resolved_by,
            comment: t.comment,
            resolved_at: t.resolved_at,
            created_at: t.created_at,
        }
    }
}

/// Which manual tasks to list: open ones, resolved ones (done or failed), or all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskState {
    /// Not yet resolved (`open`).
    #[default]
    Open,
    /// Resolved: `done` or `failed`.
    Resolved,
    /// Every task.
    All,
}

impl TaskState {
    /// Every value, in the order the API lists them.
    pub const ALL: [Self; 3] = [Self::Open, Self::Resolved, Self::All];

    /// The name of the API's `status` filter: `open`, `done` (resolved) or `all`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "done",
            Self::All => "all",
        }
    }

    /// Reads [`TaskState::as_str`].
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Filters for listing manual tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    /// Only this operator's (`None`: everyone's).
    pub operator: Option<String>,
    /// Open, resolved or all.
    pub state: TaskState,
}

/// A page of manual tasks, newest first, strictly older than `before` (the cursor: the id of
/// the previous page's last task; ids grow with time, so the order is stable).
///
/// # Errors
/// Database failures.
pub async fn list_tasks<C: ConnectionTrait>(
    c: &C,
    filter: &TaskFilter,
    before: Option<TaskId>,
    limit: u64,
) -> Result<Vec<Task>, StoreError> {
    let mut q = task::Entity::find();
    if let Some(o) = &filter.operator {
        q = q.filter(task::Column::Operator.eq(o.as_str()));
    }
    q = match filter.state {
        TaskState::Open => q.filter(task::Column::Status.eq("open")),
        TaskState::Resolved => q.filter(task::Column::Status.ne("open")),
        TaskState::All => q,
    };
    if let Some(b) = before {
        q = q.filter(task::Column::Id.lt(b.0));
    }
    Ok(q.order_by_desc(task::Column::Id).limit(limit).all(c).await?.into_iter().map(Task::from).collect())
}

/// One manual task.
///
/// # Errors
/// Database failures.
pub async fn task<C: ConnectionTrait>(c: &C, id: TaskId) -> Result<Option<Task>, StoreError> {
    Ok(task::Entity::find_by_id(id.0).one(c).await?.map(Task::from))
}

/// The token with this SHA-256 hash, if it authenticates at `now` (not revoked, not expired).
///
/// # Errors
/// Database failures.
pub async fn authenticate_token<C: ConnectionTrait>(
    c: &C,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<ApiToken>, StoreError> {
    Ok(api_token::Entity::find()
        .filter(api_token::Column::TokenHash.eq(token_hash))
        .filter(api_token::Column::RevokedAt.is_null())
        .filter(
            sea_orm::Condition::any()
                .add(api_token::Column::ExpiresAt.is_null())
                .add(api_token::Column::ExpiresAt.gt(now)),
        )
        .one(c)
        .await?
        .map(ApiToken::from))
}

/// Which tokens to list.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    /// Only this principal's.
    pub principal: Option<String>,
    /// Only those with this status at `now`.
    pub status: Option<(TokenStatus, DateTime<Utc>)>,
}

/// Tokens, newest first, after `cursor` (an id from the previous page).
///
/// # Errors
/// Database failures.
pub async fn list_tokens<C: ConnectionTrait>(
    c: &C,
    filter: &TokenFilter,
    cursor: Option<uuid::Uuid>,
    limit: u64,
) -> Result<Vec<ApiToken>, StoreError> {
    let mut q = api_token::Entity::find();
    if let Some(p) = &filter.principal {
        q = q.filter(api_token::Column::Principal.eq(p.as_str()));
    }
    if let Some((status, now)) = filter.status {
        let unexpired = sea_orm::Condition::any()
            .add(api_token::Column::ExpiresAt.is_null())
            .add(api_token::Column::ExpiresAt.gt(now));
        q = match status {
            TokenStatus::Revoked => q.filter(api_token::Column::RevokedAt.is_not_null()),
            TokenStatus::Active => q.filter(api_token::Column::RevokedAt.is_null()).filter(unexpired),
            TokenStatus::Expired => {
                q.filter(api_token::Column::RevokedAt.is_null()).filter(api_token::Column::ExpiresAt.lte(now))
            }
        };
    }
    if let Some(cursor) = cursor {
        q = q.filter(api_token::Column::Id.lt(cursor));
    }
    Ok(q.order_by_desc(api_token::Column::Id).limit(limit).all(c).await?.into_iter().map(ApiToken::from).collect())
}

/// One token by id.
///
/// # Errors
/// Database failures.
pub async fn token<C: ConnectionTrait>(c: &C, id: uuid::Uuid) -> Result<Option<ApiToken>, StoreError> {
    Ok(api_token::Entity::find_by_id(id).one(c).await?.map(ApiToken::from))
}

/// Whether any token exists (first-start bootstrap).
///
/// # Errors
/// Database failures.
pub async fn any_token<C: ConnectionTrait>(c: &C) -> Result<bool, StoreError> {
    Ok(api_token::Entity::find().one(c).await?.is_some())
}

fn record(m: audit_log::Model) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: m.seq,
        recorded_at: m.recorded_at,
        event: audit::AuditEvent {
            event_type: m.event_type,
            channel: m.channel,
            outcome: m.outcome,
            actor: m.actor,
            subject: m.subject,
            run_id: m.run_id,
            justification: m.justification,
            workflow_key: m.workflow_key,
            workflow_version: m.workflow_version,
            details: audit::details_from_text(&m.details).map_err(|e| corrupt("audit_log", e))?,
        },
        prev_hash: m.prev_hash,
        hash: m.hash,
    })
}

/// Audit records with `seq > after`, oldest first.
///
/// # Errors
/// Database failures, or a record whose details are not JSON.
pub async fn audit_page<C: ConnectionTrait>(
    c: &C,
    after: i64,
    limit: u64,
    run_id: Option<RunId>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut q = audit_log::Entity::find().filter(audit_log::Column::Seq.gt(after));
    if let Some(r) = run_id {
        q = q.filter(audit_log::Column::RunId.eq(r.0));
    }
    q.order_by_asc(audit_log::Column::Seq).limit(limit).all(c).await?.into_iter().map(record).collect()
}

/// Verifies the whole chain, page by page, checking every link.
///
/// Reading and hashing overlap: pages are read here while a blocking thread hashes the previous
/// ones (so the caller's runtime is never blocked for the seconds a large chain takes), and each
/// record's `details` is hashed as stored rather than parsed ([`audit::StoredRecord`]).
///
/// # Errors
/// `Ok(Err(break))` for a broken chain; `Err` for database failures.
pub async fn verify_audit(db: &super::Db) -> Result<Result<VerifyReport, ChainBreak>, StoreError> {
    if let Some(file) = db.sqlite_file.clone() {
        return match tokio::task::spawn_blocking(move || verify_sqlite_file(&file)).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
    }
    let c = &db.read;
    const PAGE: u64 = 5000;
    let (pages, mut inbox) = tokio::sync::mpsc::channel::<Vec<audit_log::Model>>(2);
    let verifier = tokio::task::spawn_blocking(move || {
        let mut verifier = ChainVerifier::new();
        while let Some(page) = inbox.blocking_recv() {
            for m in &page {
                verifier.push_stored(&audit::StoredRecord {
                    seq: m.seq,
                    recorded_at: m.recorded_at,
                    event_type: &m.event_type,
                    channel: &m.channel,
                    outcome: &m.outcome,
                    actor: &m.actor,
                    subject: &m.subject,
                    run_id: m.run_id,
                    justification: m.justification.as_deref(),
                    workflow_key: m.workflow_key.as_deref(),
                    workflow_version: m.workflow_version,
                    details: &m.details,
                    prev_hash: &m.prev_hash,
                    hash: &m.hash,
                })?;
            }
        }
        Ok(verifier.finish())
    });
    let mut after = i64::MIN;
    let read = async {
        loop {
            let page = audit_log::Entity::find()
                .filter(audit_log::Column::Seq.gt(after))
                .order_by_asc(audit_log::Column::Seq)
                .limit(PAGE)
                .all(c)
                .await?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            // A full channel holds the reader while the hasher is two pages behind; a closed one
            // means the hasher stopped at a break.
            if pages.send(page).await.is_err() {
                break;
            }
        }
        Ok::<_, StoreError>(())
    }
    .await;
    drop(pages);
    let verified = match verifier.await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    read?;
    Ok(verified)
}

/// [`verify_audit`] on a SQLite file: one read-only connection of its own, one statement (one
/// consistent snapshot), rows borrowed as SQLite returns them. Through the pool each row would
/// cross to sqlx's worker thread and copy every value, which cost more than hashing (1,000,000
/// records: 5.4 s through the pool, see docs/PERFORMANCE.md).
fn verify_sqlite_file(file: &std::path::Path) -> Result<Result<VerifyReport, ChainBreak>, StoreError> {
    use rusqlite::types::ValueRef;
    use rusqlite::{Connection, OpenFlags};

    let db_err = |e: rusqlite::Error| StoreError::Db(sea_orm::DbErr::Custom(format!("reading the audit log: {e}")));
    let conn = Connection::open_with_flags(file, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db_err)?;
    conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(db_err)?;
    let mut stmt = conn
        .prepare(
            "SELECT seq, recorded_at, event_type, channel, outcome, actor, subject, run_id, justification, \
             workflow_key, workflow_version, details, prev_hash, hash FROM audit_log ORDER BY seq",
        )
        .map_err(db_err)?;
    let mut rows = stmt.query([]).map_err(db_err)?;
    let mut verifier = ChainVerifier::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        let seq: i64 = row.get(0).map_err(db_err)?;
        // A value of the wrong type is an altered record, reported where it is.
        let altered = |what: &str| {
            Ok(Err(ChainBreak {
                seq,
                kind: audit::BreakKind::HashMismatch,
                detail: format!("stored {what} cannot be read (record content altered)"),
            }))
        };
        let text = |i: usize| match row.get_ref(i) {
            Ok(ValueRef::Text(t)) => std::str::from_utf8(t).ok(),
            _ => None,
        };
        let opt_text = |i: usize| match row.get_ref(i) {
            Ok(ValueRef::Null) => Some(None),
            Ok(ValueRef::Text(t)) => std::str::from_utf8(t).ok().map(Some),
            _ => None,
        };
        let Some(recorded_at) =
            text(1).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc))
        else {
            return altered("recorded_at");
        };
        let run_id = match row.get_ref(7) {
            Ok(ValueRef::Null) => None,
            Ok(ValueRef::Blob(b)) => match uuid::Uuid::from_slice(b) {
                Ok(id) => Some(id),
                Err(_) => return altered("run_id"),
            },
            _ => return altered("run_id"),
        };
        let workflow_version = match row.get_ref(10) {
            Ok(ValueRef::Null) => None,
            Ok(ValueRef::Integer(v)) => match i32::try_from(v) {
                Ok(v) => Some(v),
                Err(_) => return altered("workflow_version"),
            },
            _ => return altered("workflow_version"),
        };
        let (
            Some(event_type),
            Some(channel),
            Some(outcome),
            Some(actor),
            Some(subject),
            Some(justification),
            Some(workflow_key),
            Some(details),
            Some(prev_hash),
            Some(hash),
        ) = (text(2), text(3), text(4), text(5), text(6), opt_text(8), opt_text(9), text(11), text(12), text(13))
        else {
            return altered("text");
        };
        let record = audit::StoredRecord {
            seq,
            recorded_at,
            event_type,
            channel,
            outcome,
            actor,
            subject,
            run_id,
            justification,
            workflow_key,
            workflow_version,
            details,
            prev_hash,
            hash,
        };
        if let Err(b) = verifier.push_stored(&record) {
            return Ok(Err(b));
        }
    }
    Ok(Ok(verifier.finish()))
}

/// A stored outbox item that is due and may be taken by `node`.
#[derive(Debug, Clone)]
pub(crate) struct PendingOutbox {
    pub(crate) id: OutboxId,
    pub(crate) run_id: RunId,
    pub(crate) attempts: i32,
    pub(crate) next_attempt_at: DateTime<Utc>,
    pub(crate) lease_owner: Option<String>,
    pub(crate) item: NewOutbox,
}

/// Pending outbox items owned by `node` or whose lease expired at `now`; only those due by
/// `due_by` when given.
pub(crate) async fn pending_outbox<C: ConnectionTrait>(
    c: &C,
    node: &str,
    now: DateTime<Utc>,
    due_by: Option<DateTime<Utc>>,
    limit: u64,
) -> Result<Vec<PendingOutbox>, StoreError> {
    let mut q = outbox::Entity::find().filter(outbox::Column::Status.eq("pending")).filter(
        sea_orm::Condition::any()
            .add(outbox::Column::LeaseOwner.eq(node))
            .add(outbox::Column::LeaseUntil.lt(now))
            .add(outbox::Column::LeaseUntil.is_null()),
    );
    if let Some(due_by) = due_by {
        q = q.filter(outbox::Column::NextAttemptAt.lte(due_by));
    }
    let rows = q.order_by_asc(outbox::Column::NextAttemptAt).limit(limit).all(c).await?;
    rows.into_iter()
        .map(|m| {
            Ok(PendingOutbox {
                id: OutboxId(m.id),
                run_id: RunId(m.run_id),
                attempts: m.attempts,
                next_attempt_at: m.next_attempt_at,
                lease_owner: m.lease_owner,
                item: serde_json::from_str(&m.payload).map_err(|e| corrupt("outbox", e))?,
            })
        })
        .collect()
}

/// Grants still active whose expiry is before `before`, oldest expiry first.
pub(crate) async fn overdue_grants<C: ConnectionTrait>(
    c: &C,
    before: DateTime<Utc>,
    limit: u64,
) -> Result<Vec<GrantId>, StoreError> {
    let ids: Vec<uuid::Uuid> = grant::Entity::find()
        .select_only()
        .column(grant::Column::Id)
        .filter(grant::Column::Status.eq(GrantStatus::Active.as_str()))
        .filter(grant::Column::ExpiresAt.lt(before))
        .order_by_asc(grant::Column::ExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(c)
        .await?;
    Ok(ids.into_iter().map(GrantId).collect())
}

/// A timer that came due.
#[derive(Debug, Clone)]
pub(crate) struct DueTimer {
    pub(crate) id: TimerId,
    pub(crate) run_id: RunId,
    pub(crate) kind: TimerKind,
    pub(crate) step_index: u32,
}

/// Timers of `node` (or of nobody) fire when due; another replica's only `takeover` later, once
/// that replica had its chance.
fn fires_for(node: &str) -> sea_orm::Condition {
    sea_orm::Condition::any().add(timer::Column::Owner.eq(node)).add(timer::Column::Owner.is_null())
}

/// When `node` should next look for due timers after `after`: the earliest of its own (or
/// unowned) timers. Other replicas' timers are not looked for here: finding the earliest of them
/// means reading past every timer of this replica (an index on `due_at` cannot skip them), which
/// with 1,000,000 armed timers took ~0.1 s per look and made timers fire a second late. The timer
/// service looks at least every scan interval, and [`due_timers`] then takes over the others'
/// overdue ones.
pub(crate) async fn next_timer_due<C: ConnectionTrait>(
    c: &C,
    after: DateTime<Utc>,
    node: &str,
) -> Result<Option<DateTime<Utc>>, StoreError> {
    let own = timer::Entity::find()
        .filter(timer::Column::DueAt.gt(after))
        .filter(fires_for(node))
        .order_by_asc(timer::Column::DueAt)
        .limit(1)
        .one(c)
        .await?;
    Ok(own.map(|t| t.due_at))
}

/// Timers `node` should fire at `now`, earliest first: its own (and unowned ones) that are due,
/// and other replicas' overdue by `takeover`.
pub(crate) async fn due_timers<C: ConnectionTrait>(
    c: &C,
    now: DateTime<Utc>,
    node: &str,
    takeover: chrono::Duration,
    limit: u64,
) -> Result<Vec<DueTimer>, StoreError> {
    timer::Entity::find()
        .filter(timer::Column::DueAt.lte(now))
        .filter(sea_orm::Condition::any().add(fires_for(node)).add(timer::Column::DueAt.lte(now - takeover)))
        .order_by_asc(timer::Column::DueAt)
        .limit(limit)
        .all(c)
        .await?
        .into_iter()
        .map(|t| {
            Ok(DueTimer {
                id: TimerId(t.id),
                run_id: RunId(t.run_id),
                kind: TimerKind::parse(&t.kind).ok_or_else(|| corrupt("timers", format!("kind {:?}", t.kind)))?,
                step_index: u32::try_from(t.step_index).map_err(|e| corrupt("timers", e))?,
            })
        })
        .collect()
}

/// The Slack messages posted about `run`, oldest first.
///
/// # Errors
/// Database failures.
pub async fn slack_messages<C: ConnectionTrait>(
    c: &C,
    run: RunId,
) -> Result<Vec<crate::message::SlackMessageRef>, StoreError> {
    use super::entity::slack_message;
    let rows = slack_message::Entity::find()
        .filter(slack_message::Column::RunId.eq(run.0))
        .order_by_asc(slack_message::Column::Id)
        .all(c)
        .await?;
    Ok(rows
        .into_iter()
        .map(|m| crate::message::SlackMessageRef {
            step_index: u32::try_from(m.step_index).unwrap_or_default(),
            channel_id: m.channel_id,
            ts: m.ts,
            recipient: m.recipient,
        })
        .collect())
}

/// The approval link whose token hashes to `token_hash`, used or not.
///
/// # Errors
/// Database failures.
pub async fn approval_link_by_hash<C: ConnectionTrait>(
    c: &C,
    token_hash: &str,
) -> Result<Option<super::entity::approval_link::Model>, StoreError> {
    use super::entity::approval_link;
    Ok(approval_link::Entity::find().filter(approval_link::Column::TokenHash.eq(token_hash)).one(c).await?)
}

#[cfg(test)]
mod tests {
    use super::{MAX_PAGE_SCANS, StoreError, VisiblePage, visible_page};

    /// Pages `rows` (ids, newest first) `limit` at a time, keeping those `visible` lets through,
    /// as the listings do, counting the reads.
    async fn page(
        rows: &[u32],
        before: Option<u32>,
        limit: u64,
        visible: fn(&u32) -> bool,
    ) -> (VisiblePage<u32, u32>, usize) {
        let reads = std::cell::Cell::new(0);
        let fetch = |b: Option<u32>, n: u64| {
            reads.set(reads.get() + 1);
            let out: Vec<u32> =
                rows.iter().copied().filter(|r| b.is_none_or(|b| *r < b)).take(usize::try_from(n).unwrap()).collect();
            async move { Ok::<_, StoreError>(out) }
        };
        let page = visible_page(before, limit, fetch, |r: &u32| *r, visible).await.unwrap();
        (page, reads.get())
    }

    #[tokio::test]
    async fn a_cursor_is_given_only_when_another_visible_row_follows() {
        let rows: Vec<u32> = (1..=6).rev().collect(); // 6, 5, …, 1
        let all = |_: &u32| true;
        let even = |r: &u32| r.is_multiple_of(2);
        type Case = (u64, fn(&u32) -> bool, Option<u32>, Vec<u32>, Option<u32>);
        // (limit, visible, before) → (items, next_cursor)
        let table: [Case; 8] = [
            (2, all, None, vec![6, 5], Some(5)),
            (3, all, Some(4), vec![3, 2, 1], None), // exactly full, nothing after
            (6, all, None, vec![6, 5, 4, 3, 2, 1], None),
            (7, all, None, vec![6, 5, 4, 3, 2, 1], None),
            (2, even, None, vec![6, 4], Some(4)),
            (3, even, None, vec![6, 4, 2], None), // full, only invisible rows after
            (2, even, Some(4), vec![2], None),
            (1, even, Some(2), vec![], None),
        ];
        for (limit, visible, before, items, next) in table {
            let (p, _) = page(&rows, before, limit, visible).await;
            assert_eq!((p.items, p.next_cursor), (items, next), "limit {limit}, before {before:?}");
        }
    }

    #[tokio::test]
    async fn a_page_of_rows_mostly_hidden_stops_after_its_reads_and_continues_from_the_last_row_read() {
        let rows: Vec<u32> = (1..=1000).rev().collect();
        let (p, reads) = page(&rows, None, 2, |r| *r == 1).await;
        assert_eq!(reads, MAX_PAGE_SCANS);
        let read = u32::try_from(MAX_PAGE_SCANS * 3).unwrap();
        assert_eq!((p.items, p.next_cursor), (vec![], Some(1001 - read)), "rows may follow: continue after those read");
        let (p, _) = page(&rows, Some(2), 2, |r| *r == 1).await;
        assert_eq!((p.items, p.next_cursor), (vec![1], None));
    }
}

/// Filters for listing credentials (`GET /v1/credentials`).
#[derive(Debug, Clone, Default)]
pub struct CredentialFilter {
    /// Integration.
    pub integration: Option<String>,
    /// Owner (a caller who sees only their own always has this set to themselves).
    pub owner: Option<String>,
    /// Kind.
    pub kind: Option<crate::credential::CredentialKind>,
    /// Only those expiring before this time.
    pub expiring_before: Option<DateTime<Utc>>,
    /// Status at a time.
    pub status: Option<(crate::credential::CredentialStatus, DateTime<Utc>)>,
}

/// Rows a page filtered by expiry reads newest first before it looks its remaining rows up
/// through the expiry index instead (see [`list_credentials`]).
const EXPIRY_WALK: u64 = 1000;

/// Credentials, newest first, after `cursor` (an id from the previous page), with their
/// versions (never a secret value).
///
/// Each equality filter (integration, owner, kind) has an index ordered by id: a page is a walk
/// of it. The expiry filters (`expiring_before`, `status`) are ranges, and what they match may be
/// many credentials spread over the inventory (found within a few rows of the id order), few
/// (expired ones, those expiring soon: a walk would read most of the table), or mostly the
/// oldest ones (the same). So a page with one reads the newest `EXPIRY_WALK` rows first and,
/// when they hold less than a page, finds the older rows through the `(expires_at, id)` index,
/// reading only the matching ones.
///
/// # Errors
/// Database failures.
pub async fn list_credentials<C: ConnectionTrait>(
    c: &C,
    filter: &CredentialFilter,
    cursor: Option<uuid::Uuid>,
    limit: u64,
) -> Result<Vec<crate::credential::Credential>, StoreError> {
    use super::entity::credential as cred;
    let mut others = cred::Entity::find();
    if let Some(i) = &filter.integration {
        others = others.filter(cred::Column::Integration.eq(i.as_str()));
    }
    if let Some(o) = &filter.owner {
        others = others.filter(cred::Column::Owner.eq(o.as_str()));
    }
    if let Some(k) = filter.kind {
        others = others.filter(cred::Column::Kind.eq(k.as_str()));
    }
    if let Some(cursor) = cursor {
        others = others.filter(cred::Column::Id.lt(cursor));
    }
    let Some(expiry) = expiry_condition(filter) else {
        let models = others.order_by_desc(cred::Column::Id).limit(limit).all(c).await?;
        return with_versions(c, models).await;
    };
    // Where the walk stops: the last of the newest EXPIRY_WALK rows (none: fewer are left).
    let stop: Option<uuid::Uuid> = others
        .clone()
        .select_only()
        .column(cred::Column::Id)
        .order_by_desc(cred::Column::Id)
        .offset(EXPIRY_WALK - 1)
        .limit(1)
        .into_tuple()
        .one(c)
        .await?;
    let mut walk = others.clone().filter(expiry.clone());
    if let Some(stop) = stop {
        walk = walk.filter(cred::Column::Id.gte(stop));
    }
    let mut models = walk.order_by_desc(cred::Column::Id).limit(limit).all(c).await?;
    let missing = limit.saturating_sub(models.len() as u64);
    if let Some(stop) = stop.filter(|_| missing > 0) {
        let older = others.filter(expiry).filter(cred::Column::Id.lt(stop));
        let ids = newest_by_expiry_index(c, older, missing).await?;
        if !ids.is_empty() {
            models.extend(
                cred::Entity::find().filter(cred::Column::Id.is_in(ids)).order_by_desc(cred::Column::Id).all(c).await?,
            );
        }
    }
    with_versions(c, models).await
}

/// The expiry filters as one condition (`None` without any).
fn expiry_condition(filter: &CredentialFilter) -> Option<sea_orm::Condition> {
    use super::entity::credential as cred;
    use crate::credential::CredentialStatus;
    let mut all = sea_orm::Condition::all();
    if let Some(t) = filter.expiring_before {
        all = all.add(cred::Column::ExpiresAt.lt(t));
    }
    match filter.status {
        Some((CredentialStatus::Expired, now)) => all = all.add(cred::Column::ExpiresAt.lte(now)),
        Some((CredentialStatus::Active, now)) => {
            all = all.add(
                sea_orm::Condition::any().add(cred::Column::ExpiresAt.is_null()).add(cred::Column::ExpiresAt.gt(now)),
            );
        }
        None => {}
    }
    (!all.is_empty()).then_some(all)
}

/// The ids of the newest `n` credentials `q` selects, collected from the expiry index rather
/// than by walking the id order (which each backend's planner would pick for a page: SQLite
/// keeps no statistics of ranges, and PostgreSQL's estimate takes the matches to be spread evenly
/// over the ids, which is just what the caller found false).
async fn newest_by_expiry_index<C: ConnectionTrait>(
    c: &C,
    q: sea_orm::Select<super::entity::credential::Entity>,
    n: u64,
) -> Result<Vec<uuid::Uuid>, StoreError> {
    use super::entity::credential as cred;
    use sea_orm::{DbBackend, QueryTrait, Statement};
    let backend = c.get_database_backend();
    let matching = q.select_only().column(cred::Column::Id).build(backend);
    let sql = if backend == DbBackend::Sqlite {
        let from = r#"FROM "credentials""#;
        debug_assert!(matching.sql.contains(from), "{}", matching.sql);
        let sql = matching.sql.replacen(from, r#"FROM "credentials" INDEXED BY "credentials_expires""#, 1);
        format!(r#"{sql} ORDER BY "id" DESC LIMIT {n}"#)
    } else {
        format!(
            r#"WITH "matching" AS MATERIALIZED ({}) SELECT "id" FROM "matching" ORDER BY "id" DESC LIMIT {n}"#,
            matching.sql
        )
    };
    let stmt = Statement::from_sql_and_values(backend, sql, matching.values.map(|v| v.0).unwrap_or_default());
    c.query_all_raw(stmt).await?.iter().map(|row| row.try_get("", "id").map_err(StoreError::from)).collect()
}

/// One credential by name, or by id when `name_or_id` is a UUID no name matches.
///
/// # Errors
/// Database failures.
pub async fn credential<C: ConnectionTrait>(
    c: &C,
    name_or_id: &str,
) -> Result<Option<crate::credential::Credential>, StoreError> {
    use super::entity::credential as cred;
    let mut found = cred::Entity::find().filter(cred::Column::Name.eq(name_or_id)).one(c).await?;
    if found.is_none()
        && let Ok(id) = name_or_id.parse::<uuid::Uuid>()
    {
        found = cred::Entity::find_by_id(id).one(c).await?;
    }
    Ok(with_versions(c, found.into_iter().collect()).await?.pop())
}

async fn with_versions<C: ConnectionTrait>(
    c: &C,
    models: Vec<super::entity::credential::Model>,
) -> Result<Vec<crate::credential::Credential>, StoreError> {
    use super::entity::credential_version as ver;
    use crate::credential::{Credential, CredentialVersion};
    let ids: Vec<uuid::Uuid> = models.iter().map(|m| m.id).collect();
    let mut versions: std::collections::HashMap<uuid::Uuid, Vec<CredentialVersion>> = std::collections::HashMap::new();
    if !ids.is_empty() {
        for v in ver::Entity::find()
            .filter(ver::Column::CredentialId.is_in(ids))
            .order_by_desc(ver::Column::Version)
            .all(c)
            .await?
        {
            versions.entry(v.credential_id).or_default().push(CredentialVersion {
                version: v.version,
                state: v.state,
                hint: v.hint,
                secret_ref: v.secret_ref,
                has_value: v.sealed_value.is_some(),
                created_at: v.created_at,
                retired_at: v.retired_at,
            });
        }
    }
    models
        .into_iter()
        .map(|m| {
            let scopes = serde_json::from_str(&m.scopes).map_err(|e| corrupt("credential scopes", e))?;
            Ok(Credential {
                versions: versions.remove(&m.id).unwrap_or_default(),
                id: m.id,
                name: m.name,
                kind: m.kind,
                integration: m.integration,
                owner: m.owner,
                scopes,
                environment: m.environment,
                issued_at: m.issued_at,
                expires_at: m.expires_at,
                last_used_at: m.last_used_at,
                last_rotated_at: m.last_rotated_at,
                revocation: m.revocation,
                revocation_instructions: m.revocation_instructions,
                revocation_url: m.revocation_url,
                description: m.description,
                current_version: m.current_version,
                created_at: m.created_at,
                updated_at: m.updated_at,
            })
        })
        .collect()
}
