//! Persistence: connections (SQLite or PostgreSQL), row conversions, reads, and the single
//! writer that commits transitions with their audit records and effects.

pub mod entity;
pub mod query;
pub(crate) mod tx;
pub mod writer;

use std::time::Duration;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend, DbErr};
use tollgate_migrations::{Migrator, MigratorTrait};
use tollgate_workflows::WorkflowKind;

use crate::ids::{GrantId, RunId};
use crate::run::{Decision, Grant, GrantStatus, Run, RunStatus, StepState, Vote};

/// An infrastructure failure. Never shown to API clients beyond a generic message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    /// A stored value could not be decoded (corruption or a bug).
    #[error("corrupt row in {table}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// What.
        detail: String,
    },
    /// Another replica changed the run first (compare-and-set on `version` failed).
    #[error("concurrent update")]
    Conflict,
    /// The writer task is gone (shutting down).
    #[error("the engine is shutting down")]
    Closed,
    /// A job panicked (a bug): it was rolled back and failed alone; the writer went on.
    #[error("internal error in {job}")]
    JobPanicked {
        /// The job's type.
        job: &'static str,
    },
}

impl StoreError {
    /// A failure that the same transaction, run again, may not meet: a PostgreSQL deadlock or
    /// serialization failure (SQLSTATE 40P01, 40001), or SQLite's busy/locked. The writer
    /// retries these before any caller sees them.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        let Self::Db(DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))) =
            self
        else {
            return false;
        };
        let sea_orm::sqlx::Error::Database(e) = &**e else { return false };
        // SQLite reports SQLITE_BUSY (5) and SQLITE_LOCKED (6), possibly extended (low byte).
        let sqlite_busy = |c: &str| c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6));
        e.code().is_some_and(|c| c == "40P01" || c == "40001" || sqlite_busy(&c))
    }
}

/// Database connections: `read` for queries; `write` is used only by the writer task.
#[derive(Debug, Clone)]
pub struct Db {
    /// Connection pool for reads (and for migrations).
    pub read: DatabaseConnection,
    /// The writer's connection (a single connection on SQLite). Only the writer writes: it is
    /// not reachable from outside the store.
    pub(crate) write: DatabaseConnection,
    /// The SQLite database file (not for an in-memory database), for read-only scans that
    /// bypass the pool ([`query::verify_audit`]).
    pub(crate) sqlite_file: Option<std::path::PathBuf>,
}

impl Db {
    /// The backend in use.
    #[must_use]
    pub fn backend(&self) -> DbBackend {
        self.read.get_database_backend()
    }
}

/// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://…`).
///
/// SQLite gets WAL, `synchronous=FULL`, a busy timeout, foreign keys, one writer connection and
/// a small reader pool; PostgreSQL a shared pool.
///
/// # Errors
/// When the database cannot be reached or opened.
pub async fn connect(url: &str, max_connections: u32) -> Result<Db, StoreError> {
    let sqlite = url.starts_with("sqlite:");
    let options = |max: u32| {
        let mut o = ConnectOptions::new(url.to_owned());
        o.max_connections(max)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30))
            .sqlx_logging(false);
        if sqlite {
            o.map_sqlx_sqlite_opts(|opts| {
                opts.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .create_if_missing(true)
            });
        }
        o
    };
    if sqlite {
        let write = Database::connect(options(1)).await?;
        let read = Database::connect(options(max_connections.max(2))).await?;
        Ok(Db { read, write, sqlite_file: sqlite_file(url) })
    } else {
        let pool = Database::connect(options(max_connections.max(4))).await?;
        Ok(Db { read: pool.clone(), write: pool, sqlite_file: None })
    }
}

/// The file a SQLite URL names, as sqlx reads it; `None` for an in-memory database or another
/// backend.
#[must_use]
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr as _;
    // sqlx reads any text as a file name, a PostgreSQL URL included.
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sea_orm::sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let file = options.get_filename();
    let name = file.to_string_lossy();
    (!name.is_empty()).then(|| file.to_path_buf())
}

/// Whether the database server answers, quickly: for PostgreSQL over TCP, a TCP connection to
/// its host and port within 3 s. Without it an unreachable server showed nothing until the
/// pool's acquire timeout, then "pool timed out". SQLite and Unix sockets fail fast by
/// themselves (`Ok` here).
///
/// # Errors
/// Which address could not be reached, and why (`connection refused`, no answer).
pub async fn probe(url: &str) -> Result<(), String> {
    use std::str::FromStr as _;
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Ok(());
    }
    // A malformed URL is reported by the connection itself, with sqlx's reason.
    let Ok(options) = sea_orm::sqlx::postgres::PgConnectOptions::from_str(url) else { return Ok(()) };
    if options.get_socket().is_some() || options.get_host().starts_with('/') {
        return Ok(());
    }
    let address = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&address)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach PostgreSQL at {address}: {e}")),
        Err(_) => Err(format!("cannot reach PostgreSQL at {address}: no answer within 3 s")),
    }
}

/// Whether the database holds Tollgate's schema (at least one migration applied).
///
/// # Errors
/// When the database cannot be queried at all.
pub async fn has_schema(db: &Db) -> Result<bool, StoreError> {
    use sea_orm::ConnectionTrait as _;
    let stmt = sea_orm::Statement::from_string(db.backend(), "SELECT COUNT(*) AS n FROM seaql_migrations");
    match db.read.query_one_raw(stmt).await {
        Ok(row) => Ok(row.and_then(|r| r.try_get::<i64>("", "n").ok()).is_some_and(|n| n > 0)),
        // No migrations table: no schema. Other failures (unreachable) are errors.
        Err(e) if e.to_string().contains("seaql_migrations") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Applies pending migrations.
///
/// # Errors
/// When a migration fails.
pub async fn migrate(db: &Db) -> Result<(), StoreError> {
    Migrator::up(&db.write, None).await?;
    Ok(())
}

fn corrupt(table: &'static str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { table, detail: detail.to_string() }
}

fn json_list(s: &str, table: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| corrupt(table, e))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

impl TryFrom<entity::run::Model> for Run {
    type Error = StoreError;
    fn try_from(m: entity::run::Model) -> Result<Self, StoreError> {
        Ok(Self {
            id: RunId(m.id),
            kind: WorkflowKind::parse(&m.kind).ok_or_else(|| corrupt("runs", format!("kind {:?}", m.kind)))?,
            workflow_key: m.workflow_key,
            workflow_version: u32::try_from(m.workflow_version).map_err(|e| corrupt("runs", e))?,
            status: RunStatus::parse(&m.status).ok_or_else(|| corrupt("runs", format!("status {:?}", m.status)))?,
            requester: m.requester,
            integration: m.integration,
            scopes: json_list(&m.scopes, "runs")?,
            duration_secs: u64::try_from(m.duration_secs).map_err(|e| corrupt("runs", e))?,
            justification: m.justification,
            grant_id: m.grant_id.map(GrantId),
            step_index: u32::try_from(m.step_index).map_err(|e| corrupt("runs", e))?,
            step: serde_json::from_str::<StepState>(&m.step_state).map_err(|e| corrupt("runs", e))?,
            version: m.version,
            created_at: m.created_at,
            updated_at: m.updated_at,
            reason: m.reason,
            break_glass: m.break_glass,
        })
    }
}

pub(crate) fn run_model(r: &Run) -> entity::run::Model {
    entity::run::Model {
        id: r.id.0,
        kind: r.kind.as_str().to_owned(),
        workflow_key: r.workflow_key.clone(),
        workflow_version: i32::try_from(r.workflow_version).unwrap_or(i32::MAX),
        status: r.status.as_str().to_owned(),
        requester: r.requester.clone(),
        integration: r.integration.clone(),
        scopes: to_json(&r.scopes),
        duration_secs: i64::try_from(r.duration_secs).unwrap_or(i64::MAX),
        justification: r.justification.clone(),
        grant_id: r.grant_id.map(|g| g.0),
        step_index: i32::try_from(r.step_index).unwrap_or(i32::MAX),
        step_state: to_json(&r.step),
        version: r.version,
        reason: r.reason.clone(),
        break_glass: r.break_glass,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

impl TryFrom<entity::grant::Model> for Grant {
    type Error = StoreError;
    fn try_from(m: entity::grant::Model) -> Result<Self, StoreError> {
        Ok(Self {
            id: GrantId(m.id),
            run_id: RunId(m.run_id),
            integration: m.integration,
            principal: m.principal,
            scopes: json_list(&m.scopes, "grants")?,
            status: GrantStatus::parse(&m.status).ok_or_else(|| corrupt("grants", format!("status {:?}", m.status)))?,
            granted_at: m.granted_at,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
            reference: m.reference,
            created_at: m.created_at,
            updated_at: m.updated_at,
        })
    }
}

pub(crate) fn grant_model(g: &Grant) -> entity::grant::Model {
    entity::grant::Model {
        id: g.id.0,
        run_id: g.run_id.0,
        integration: g.integration.clone(),
        principal: g.principal.clone(),
        scopes: to_json(&g.scopes),
        status: g.status.as_str().to_owned(),
        granted_at: g.granted_at,
        expires_at: g.expires_at,
        revoked_at: g.revoked_at,
        reference: g.reference.clone(),
        created_at: g.created_at,
        updated_at: g.updated_at,
    }
}

impl TryFrom<entity::decision::Model> for Vote {
    type Error = StoreError;
    fn try_from(m: entity::decision::Model) -> Result<Self, StoreError> {
        Ok(Self {
            step_index: u32::try_from(m.step_index).map_err(|e| corrupt("decisions", e))?,
            approver: m.approver,
            decision: match m.decision.as_str() {
                "approve" => Decision::Approve,
                "deny" => Decision::Deny,
                other => return Err(corrupt("decisions", format!("decision {other:?}"))),
            },
            comment: m.comment,
            channel: m.channel,
            decided_at: m.decided_at,
        })
    }
}

/// The default SQLite URL: `tollgate.db` in the working directory, created if missing.
pub const DEFAULT_SQLITE_URL: &str = "sqlite://tollgate.db?mode=rwc";

/// Whether `url` looks like a database URL Tollgate supports.
#[must_use]
pub fn is_supported_url(url: &str) -> bool {
    url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Serialises start-up (migrations, configuration sync) between replicas sharing a PostgreSQL
/// database, with a session-level advisory lock on a dedicated connection. SQLite has a single
/// owning process and needs none.
#[derive(Debug)]
pub struct StartupLock(Option<DatabaseConnection>);

/// An arbitrary, fixed advisory-lock key ("tollgate" in ASCII, truncated to 63 bits).
const STARTUP_LOCK_KEY: i64 = 0x746f_6c6c_6761_7465;

impl StartupLock {
    /// Waits for the lock (PostgreSQL) or returns at once (SQLite).
    ///
    /// # Errors
    /// When the database cannot be reached.
    pub async fn acquire(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            return Ok(Self(None));
        }
        let mut o = ConnectOptions::new(url.to_owned());
        o.max_connections(1).min_connections(1).sqlx_logging(false);
        let conn = Database::connect(o).await?;
        sea_orm::ConnectionTrait::execute_unprepared(&conn, &format!("SELECT pg_advisory_lock({STARTUP_LOCK_KEY})"))
            .await?;
        Ok(Self(Some(conn)))
    }

    /// Releases the lock.
    pub async fn release(self) {
        if let Some(conn) = self.0 {
            let _ = sea_orm::ConnectionTrait::execute_unprepared(
                &conn,
                &format!("SELECT pg_advisory_unlock({STARTUP_LOCK_KEY})"),
            )
            .await;
            let _ = conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::sqlite_file;

    #[test]
    fn only_sqlite_urls_name_a_file() {
        let cases = [
            ("sqlite://tollgate.db?mode=rwc", Some("tollgate.db")),
            ("sqlite:///var/lib/tollgate/t.db", Some("/var/lib/tollgate/t.db")),
            ("sqlite::memory:", None),
            ("sqlite://file.db?mode=memory", None),
            ("postgres://postgres@127.0.0.1:5432/test", None),
            ("postgres://user@localhost/db?host=/var/run/postgresql", None),
        ];
        for (url, want) in cases {
            assert_eq!(sqlite_file(url), want.map(PathBuf::from), "{url}");
        }
    }
}
