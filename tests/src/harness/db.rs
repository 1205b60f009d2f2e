//! A fresh database per test: a SQLite file in a temporary directory, or — when
//! `TOLLGATE_TEST_DATABASE_URL` names a PostgreSQL server — a uniquely named database on it,
//! dropped again when the test ends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, Database, DatabaseConnection, EntityTrait, FromQueryResult, JsonValue, QueryFilter,
    QueryOrder, Statement,
};
use tollgate_engine::store::entity::{outbox, timer};

/// Environment variable naming a PostgreSQL server to create per-test databases on.
pub const DATABASE_URL_ENV: &str = "TOLLGATE_TEST_DATABASE_URL";

/// Environment variable that turns PostgreSQL-only tests from skipped into failed when the test
/// database is not PostgreSQL (`1`; empty or `0` means unset). CI sets it on its PostgreSQL run,
/// so a missing or misnamed `TOLLGATE_TEST_DATABASE_URL` cannot pass those tests silently.
pub(crate) const REQUIRE_POSTGRES_ENV: &str = "TOLLGATE_TEST_REQUIRE_POSTGRES";

/// The outbox status of an item still to be delivered: queued, leased to a replica and in
/// flight, or waiting for its next attempt (`engine/src/store/tx.rs`, `feature/outbox.rs`). The
/// others are `done`, `failed` and `waiting_operator` (a manual task: a person, not the engine,
/// has to act).
const OUTBOX_PENDING: &str = "pending";

/// Pause between two looks at the database in [`TestDb::wait_quiet`].
const QUIET_POLL: Duration = Duration::from_millis(20);

/// Which database engine a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL database.
    Postgres,
}

/// One test's database.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    backend: Backend,
    /// SQLite: the directory holding the file (removed on drop).
    dir: Option<tempfile::TempDir>,
    /// PostgreSQL: the server URL to drop the database through, and its name.
    postgres: Option<(String, String)>,
}

impl TestDb {
    /// Creates an empty database (the server migrates it on start).
    ///
    /// # Errors
    /// When the temporary directory or the PostgreSQL database cannot be created.
    pub async fn new() -> anyhow::Result<Self> {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(admin) if !admin.trim().is_empty() => Self::postgres(admin.trim()).await,
            _ => Self::sqlite(),
        }
    }

    fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("tollgate-db-").tempdir()?;
        let path: PathBuf = dir.path().join("t.db");
        Ok(Self {
            url: format!("sqlite://{}?mode=rwc", path.display()),
            backend: Backend::Sqlite,
            dir: Some(dir),
            postgres: None,
        })
    }

    async fn postgres(admin: &str) -> anyhow::Result<Self> {
        let name = format!("tollgate_t_{}", uuid::Uuid::new_v4().simple());
        let conn = Database::connect(admin).await.with_context(|| format!("{DATABASE_URL_ENV}: cannot connect"))?;
        conn.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.context("CREATE DATABASE")?;
        conn.close().await.ok();
        Ok(Self {
            url: with_database(admin, &name),
            backend: Backend::Postgres,
            dir: None,
            postgres: Some((admin.to_owned(), name)),
        })
    }

    /// Another handle on the same database that cleans nothing up (for a second replica). The
    /// original must outlive it.
    #[must_use]
    pub fn share(&self) -> Self {
        Self { url: self.url.clone(), backend: self.backend, dir: None, postgres: None }
    }

    /// The URL the server is configured with.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend.
    #[must_use]
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A new connection (close it, or let it drop, when done).
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub async fn connect(&self) -> anyhow::Result<DatabaseConnection> {
        Database::connect(self.url.as_str()).await.context("cannot connect to the test database")
    }

    /// Runs raw SQL (tampering, inspection); returns the rows affected.
    ///
    /// # Errors
    /// Database errors.
    pub async fn execute(&self, sql: &str) -> anyhow::Result<u64> {
        let conn = self.connect().await?;
        let res = conn.execute_unprepared(sql).await.with_context(|| format!("SQL failed: {sql}"));
        conn.close().await.ok();
        Ok(res?.rows_affected())
    }

    /// Runs a query and returns its rows as JSON objects. Select plain text and integer columns:
    /// other types differ between the backends.
    ///
    /// # Errors
    /// Database errors.
    pub async fn query(&self, sql: &str) -> anyhow::Result<Vec<JsonValue>> {
        let conn = self.connect().await?;
        let stmt = Statement::from_string(conn.get_database_backend(), sql.to_owned());
        let rows = JsonValue::find_by_statement(stmt).all(&conn).await.with_context(|| format!("SQL failed: {sql}"));
        conn.close().await.ok();
        rows
    }

    /// Whether a PostgreSQL-only test (several replicas on one database) runs on this database:
    /// `true` on PostgreSQL. Elsewhere it panics when `TOLLGATE_TEST_REQUIRE_POSTGRES` is set, so
    /// the run that is meant to cover PostgreSQL cannot pass by skipping; otherwise it says the
    /// test is skipped (`what` says why it needs PostgreSQL) and returns `false`.
    ///
    /// # Panics
    /// When PostgreSQL is required and this database is not PostgreSQL.
    #[must_use]
    pub fn postgres_only(&self, what: &str) -> bool {
        if self.backend == Backend::Postgres {
            return true;
        }
        let required = std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0");
        assert!(
            !required,
            "{REQUIRE_POSTGRES_ENV} is set but the test database is {:?}, not PostgreSQL: {what}; \
             set {DATABASE_URL_ENV} to a PostgreSQL server (postgres://…)",
            self.backend
        );
        eprintln!("skipped: {what} (set {DATABASE_URL_ENV} to run it on PostgreSQL)");
        false
    }

    /// What the engine still has to do now, as this database shows it: every outbox item still
    /// to be delivered (status `pending`: queued, leased to a replica and in flight, or waiting
    /// for a retry) and every timer that is due (`due_at` at or before now). Empty when the engine
    /// is quiet. See [`TestDb::wait_quiet`].
    ///
    /// # Errors
    /// Database errors.
    pub async fn pending_work(&self) -> anyhow::Result<Vec<String>> {
        let conn = self.connect().await?;
        let res = pending_work(&conn, crate::wall_clock()).await;
        conn.close().await.ok();
        res
    }

    /// Waits until the engine is quiet: no outbox item is still to be delivered and no timer is
    /// due (see [`TestDb::pending_work`]), polling the database every 20 ms.
    ///
    /// This is what tests use instead of fixed sleeps before asserting that something did *not*
    /// happen (a second grant call, a revocation, a duplicate message), or that everything that
    /// follows from what happened so far has happened: every state change commits its effects
    /// (outbox items, timers) in the same transaction, and a delivered item or fired timer
    /// commits its consequences together with marking itself done, so once the database shows
    /// nothing left to do, every consequence of the past has been delivered. Not covered: timers
    /// due later (wait for their time with [`crate::Server::wait_quiet_after`]), manual tasks
    /// waiting for their operator, and the Slack acknowledgements (ephemeral answers, direct
    /// messages about a slash command) the API sends outside the outbox. An item whose delivery
    /// is held or keeps failing keeps the engine busy: this then fails.
    ///
    /// # Errors
    /// When the engine is still busy after `patience`; the error lists what is still pending.
    pub async fn wait_quiet(&self, patience: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + patience;
        let conn = self.connect().await?;
        let res = loop {
            match pending_work(&conn, crate::wall_clock()).await {
                Ok(pending) if pending.is_empty() => break Ok(()),
                Ok(pending) if Instant::now() >= deadline => {
                    break Err(anyhow::anyhow!(
                        "the engine is not quiet after {patience:?}; still pending:\n  {}",
                        pending.join("\n  ")
                    ));
                }
                Ok(_) => tokio::time::sleep(QUIET_POLL).await,
                Err(e) => break Err(e),
            }
        };
        conn.close().await.ok();
        res
    }

    /// `SELECT COUNT(*)` over `from_where` (e.g. `"runs"`, `"audit_log WHERE actor = 'bob'"`).
    ///
    /// # Errors
    /// Database errors.
    pub async fn count(&self, from_where: &str) -> anyhow::Result<i64> {
        let sql = format!("SELECT COUNT(*) AS n FROM {from_where}");
        let conn = self.connect().await?;
        let stmt = Statement::from_string(conn.get_database_backend(), sql.clone());
        let row = conn.query_one_raw(stmt).await.with_context(|| format!("SQL failed: {sql}"));
        conn.close().await.ok();
        row?.context("COUNT(*) returned no row")?
            .try_get::<i64>("", "n")
            .with_context(|| format!("{sql}: not a number"))
    }
}

/// The outbox items still to be delivered and the timers due at `now`, one line each.
async fn pending_work(conn: &DatabaseConnection, now: DateTime<Utc>) -> anyhow::Result<Vec<String>> {
    let items = outbox::Entity::find()
        .filter(outbox::Column::Status.eq(OUTBOX_PENDING))
        .order_by_asc(outbox::Column::CreatedAt)
        .all(conn)
        .await
        .context("cannot read the outbox")?;
    let timers = timer::Entity::find()
        .filter(timer::Column::DueAt.lte(now))
        .order_by_asc(timer::Column::DueAt)
        .all(conn)
        .await
        .context("cannot read the timers")?;
    let mut pending: Vec<String> = items
        .into_iter()
        .map(|o| {
            let lease = o.lease_owner.as_deref().map_or_else(String::new, |owner| {
                format!(
                    ", leased to {owner} until {}",
                    o.lease_until.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
                )
            });
            let error = o.last_error.as_deref().map_or_else(String::new, |e| format!(", last error: {e}"));
            format!(
                "outbox {} ({} {}) of run {}: {} after {} attempt(s), next attempt {}{lease}{error}",
                o.id,
                o.kind,
                o.idempotency_key,
                o.run_id,
                o.status,
                o.attempts,
                o.next_attempt_at.to_rfc3339(),
            )
        })
        .collect();
    pending.extend(timers.into_iter().map(|t| {
        format!(
            "timer {} ({} of step {}) of run {}: due {}, owner {}",
            t.id,
            t.kind,
            t.step_index,
            t.run_id,
            t.due_at.to_rfc3339(),
            t.owner.as_deref().unwrap_or("-"),
        )
    }));
    Ok(pending)
}

/// `url` with its database (path) replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, ""), |(b, q)| (b, q));
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    if query.is_empty() { format!("{base}/{name}") } else { format!("{base}/{name}?{query}") }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else { return };
        // Drop runs inside the test's runtime: do the async clean-up on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                if let Ok(conn) = Database::connect(admin.as_str()).await {
                    let _ = conn.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
                    conn.close().await.ok();
                }
            });
        });
        let _ = cleanup.join();
        drop(self.dir.take());
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_name_replaces_the_path() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}
