//! A fresh database per test: a SQLite file in a temporary directory, or — when
//! `TOLLGATE_TEST_DATABASE_URL` names a PostgreSQL server — a uniquely named database on it,
//! dropped again when the test ends.

use std::path::PathBuf;

use anyhow::Context as _;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, FromQueryResult, JsonValue, Statement};

/// Environment variable naming a PostgreSQL server to create per-test databases on.
pub const DATABASE_URL_ENV: &str = "TOLLGATE_TEST_DATABASE_URL";

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
