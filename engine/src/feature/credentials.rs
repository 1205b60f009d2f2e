//! The credential inventory's writer job: one import — a file's rows, or the one credential of
//! `POST /v1/credentials` — in one transaction, all rows or none.
//!
//! Each row is checked against the directory (integration, owner) and the configuration (a
//! secret value needs `[secrets] key`), then compared with what is stored under its name:
//! `created`, `updated` or `unchanged`. Only when every row is valid is anything written: new
//! credentials and new secret versions in multi-row inserts, changed ones one update each, and
//! one audit record per created or updated credential (`credential_created`,
//! `credential_updated`) plus a summary (`credentials_imported`) — none at all when nothing
//! changed, so importing the same file twice writes nothing the second time. Audit records name
//! the credential and which fields changed, never a secret value.
//!
//! Memory stays bounded by a chunk of rows, not the file: each chunk's rows are written and its
//! audit records appended to the chain (`Tx::append_audit`) before the next one is read. Only
//! the parsed rows themselves (the job may run again if its batch is replayed) and the report
//! are held for the whole import.
//!
//! A secret value is sealed ([`crate::sealed`]) with the credential's id and version as
//! associated data, so a sealed value copied to another row or version does not open. A change
//! of secret (another reference, or a value that differs from the stored one once opened) adds a
//! version and retires the previous one; a row without a secret leaves the stored versions alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel, QueryFilter, Statement,
};
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;

use crate::audit::AuditEvent;
use crate::credential::{CredentialInput, ImportReport, RowError, RowOutcome, RowReport, SecretSource};
use crate::store::entity::{credential, credential_version};
use crate::store::tx::Tx;
use crate::store::writer::{Job, Refusal};

/// Rows handled together: one `IN (…)` lookup, one multi-row insert (19 columns a row stays far
/// below SQLite's bound-parameter limit).
const LOOKUP_CHUNK: usize = 500;

/// Whether an import may change credentials that exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportMode {
    /// Create new credentials and update existing ones (the import).
    Upsert,
    /// Create only: a row whose name exists is invalid (`POST /v1/credentials`).
    CreateOnly,
}

/// Imports `rows` (already parsed and checked field by field; `invalid` holds the rows that
/// were not): all or nothing.
pub(crate) struct ImportCredentials {
    pub(crate) rows: Vec<CredentialInput>,
    pub(crate) invalid: Vec<RowError>,
    pub(crate) mode: ImportMode,
    pub(crate) dry_run: bool,
    pub(crate) actor: String,
    pub(crate) channel: String,
}

/// A stored credential and its active version.
struct Stored {
    model: credential::Model,
    active: Option<credential_version::Model>,
}

/// What to write for one row.
enum Plan {
    Create(Box<credential::Model>, Option<credential_version::Model>),
    Update { model: Box<credential::Model>, changed: Vec<&'static str>, version: Option<credential_version::Model> },
    Unchanged,
}

#[async_trait::async_trait]
impl Job for ImportCredentials {
    type Output = ImportReport;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<ImportReport, Refusal> {
        let now = tx.now();
        let live = tx.shared().live();
        let sealing = tx.shared().sealing.clone();
        let mut invalid = self.invalid.clone();

        // Names against the directory, values against the configuration: every refusal is
        // known before the first write.
        for row in &self.rows {
            if let Some(e) = check_references(row, &live.directory, sealing.is_some()) {
                invalid.push(e);
            }
        }
        if self.mode == ImportMode::CreateOnly {
            for chunk in self.rows.chunks(LOOKUP_CHUNK) {
                let stored = stored(tx, chunk).await?;
                invalid.extend(
                    chunk
                        .iter()
                        .filter(|r| stored.contains_key(&r.name))
                        .map(|r| RowError::new(r.line, "name", format!("a credential named {:?} exists", r.name))),
                );
            }
        }
        invalid.sort_by_key(|e| e.line);
        let write = invalid.is_empty() && !self.dry_run;
        let mut report = ImportReport { rows: Vec::with_capacity(self.rows.len()), invalid, applied: false };

        // Chunk by chunk (bounded memory whatever the file's size): compare with what is
        // stored, and, when every row is valid, write.
        let mut changes = 0_usize;
        for chunk in self.rows.chunks(LOOKUP_CHUNK) {
            let stored = stored(tx, chunk).await?;
            let (mut new_credentials, mut new_versions, mut retire) = (Vec::new(), Vec::new(), Vec::new());
            for row in chunk {
                let environment = live
                    .directory
                    .integrations
                    .get(&row.integration)
                    .map(|i| i.environment.clone())
                    .unwrap_or_default();
                let existing = stored.get(&row.name);
                let plan = plan_row(row, existing, &environment, now, sealing.as_deref());
                let (outcome, version) = match &plan {
                    Plan::Create(m, _) => (RowOutcome::Created, m.current_version),
                    Plan::Update { model, .. } => (RowOutcome::Updated, model.current_version),
                    Plan::Unchanged => (RowOutcome::Unchanged, existing.map_or(0, |s| s.model.current_version)),
                };
                report.rows.push(RowReport { line: row.line, name: row.name.clone(), outcome, version });
                if !write {
                    continue;
                }
                match plan {
                    Plan::Unchanged => {}
                    Plan::Create(model, version) => {
                        changes += 1;
                        tx.audit(event(
                            "credential_created",
                            &self.actor,
                            &self.channel,
                            &model,
                            &[],
                            version.as_ref(),
                        ));
                        new_credentials.push((*model).into_active_model());
                        new_versions.extend(version.map(IntoActiveModel::into_active_model));
                    }
                    Plan::Update { model, changed, version } => {
                        changes += 1;
                        tx.audit(event(
                            "credential_updated",
                            &self.actor,
                            &self.channel,
                            &model,
                            &changed,
                            version.as_ref(),
                        ));
                        if let Some(v) = version {
                            retire.push(model.id);
                            new_versions.push(v.into_active_model());
                        }
                        // Every column set: the row becomes the model.
                        let active = (*model).into_active_model().reset_all();
                        credential::Entity::update(active).exec(tx.write()).await?;
                    }
                }
            }
            if !new_credentials.is_empty() {
                credential::Entity::insert_many(new_credentials).exec_without_returning(tx.write()).await?;
            }
            if !retire.is_empty() {
                credential_version::Entity::update_many()
                    .col_expr(credential_version::Column::State, Expr::value("retired"))
                    .col_expr(credential_version::Column::RetiredAt, Expr::value(now))
                    .filter(credential_version::Column::CredentialId.is_in(retire))
                    .filter(credential_version::Column::State.eq("active"))
                    .exec(tx.write())
                    .await?;
            }
            if !new_versions.is_empty() {
                credential_version::Entity::insert_many(new_versions).exec_without_returning(tx.write()).await?;
            }
            // The chunk's audit records join the chain now rather than at the batch's end: a
            // first import of 100,000 rows would otherwise hold 100,000 records until then.
            tx.append_audit().await?;
        }
        if !write {
            return Ok(report);
        }
        if changes > 0 && self.mode == ImportMode::Upsert {
            tx.audit(AuditEvent {
                event_type: "credentials_imported".to_owned(),
                channel: self.channel.clone(),
                outcome: "success".to_owned(),
                actor: self.actor.clone(),
                subject: "credentials".to_owned(),
                run_id: None,
                justification: None,
                workflow_key: None,
                workflow_version: None,
                details: serde_json::json!({
                    "rows": report.rows.len(),
                    "created": report.count(RowOutcome::Created),
                    "updated": report.count(RowOutcome::Updated),
                    "unchanged": report.count(RowOutcome::Unchanged),
                }),
            });
        }
        refresh_statistics(tx, changes).await?;
        report.applied = true;
        Ok(report)
    }
}

/// On PostgreSQL, refreshes the planner's statistics of the inventory's tables, in the import's
/// transaction, when it changed as many rows as would make autovacuum do so (by its default
/// thresholds: 50 rows and 10% of those it counted last; a table never analysed counts as
/// empty). Until autovacuum got to it, up to a minute later, the planner had no idea how few
/// rows a credential id selects and answered each page's versions lookup by reading the whole
/// table (8 ms a page with 100,000 credentials).
async fn refresh_statistics(tx: &mut Tx<'_>, changes: usize) -> Result<(), sea_orm::DbErr> {
    if changes == 0 || tx.conn().get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let counted = tx
        .conn()
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT GREATEST(reltuples, 0)::int8 AS n FROM pg_class WHERE oid = 'credentials'::regclass",
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    // Autovacuum's rule, in tenths of a row: changes >= 50 + counted / 10.
    if i64::try_from(changes).unwrap_or(i64::MAX).saturating_mul(10) < 500 + counted {
        return Ok(());
    }
    tx.write().execute_unprepared("ANALYZE credentials, credential_versions").await?;
    Ok(())
}

/// What is stored under the names of `rows`, with each one's active version.
async fn stored(tx: &Tx<'_>, rows: &[CredentialInput]) -> Result<HashMap<String, Stored>, sea_orm::DbErr> {
    let found = credential::Entity::find()
        .filter(credential::Column::Name.is_in(rows.iter().map(|r| r.name.as_str())))
        .all(tx.conn())
        .await?;
    if found.is_empty() {
        return Ok(HashMap::new());
    }
    let mut active: HashMap<uuid::Uuid, credential_version::Model> = credential_version::Entity::find()
        .filter(credential_version::Column::CredentialId.is_in(found.iter().map(|m| m.id)))
        .filter(credential_version::Column::State.eq("active"))
        .all(tx.conn())
        .await?
        .into_iter()
        .map(|v| (v.credential_id, v))
        .collect();
    Ok(found
        .into_iter()
        .map(|model| {
            let active = active.remove(&model.id);
            (model.name.clone(), Stored { model, active })
        })
        .collect())
}

/// The directory and configuration checks of one row.
fn check_references(
    row: &CredentialInput,
    directory: &crate::directory::Directory,
    can_seal: bool,
) -> Option<RowError> {
    if !directory.integrations.contains_key(&row.integration) {
        return Some(RowError::new(row.line, "integration", format!("no integration named {:?}", row.integration)));
    }
    if !directory.principals.contains_key(&row.owner) {
        return Some(RowError::new(row.line, "owner", format!("no principal named {:?}", row.owner)));
    }
    if matches!(row.secret, Some(SecretSource::Value(_))) && !can_seal {
        return Some(RowError::new(
            row.line,
            "value",
            "secret values are stored only sealed, and no `[secrets] key` is configured: give a secret_ref instead",
        ));
    }
    None
}

/// Sealing's associated data: the credential and the version a value belongs to.
fn aad(id: uuid::Uuid, version: i32) -> Vec<u8> {
    format!("credential:{id}:v{version}").into_bytes()
}

/// Whether `secret` is what `active` holds (a sealed value is opened to compare).
fn same_secret(
    secret: &SecretSource,
    active: Option<&credential_version::Model>,
    sealing: Option<&crate::sealed::SealingKey>,
) -> bool {
    let Some(active) = active else { return false };
    match secret {
        SecretSource::Reference(r) => active.secret_ref.as_deref() == Some(r.as_str()),
        SecretSource::Value(v) => {
            let (Some(sealed), Some(key)) = (&active.sealed_value, sealing) else { return false };
            key.open(sealed, &aad(active.credential_id, active.version))
                .is_ok_and(|stored| bool::from(stored.expose_secret().as_bytes().ct_eq(v.expose_secret().as_bytes())))
        }
    }
}

fn new_version(
    id: uuid::Uuid,
    version: i32,
    secret: &SecretSource,
    now: DateTime<Utc>,
    sealing: Option<&crate::sealed::SealingKey>,
) -> credential_version::Model {
    let (secret_ref, sealed_value) = match secret {
        SecretSource::Reference(r) => (Some(r.clone()), None),
        // Rows with a value were refused without a key (`check_references`).
        SecretSource::Value(v) => (None, sealing.map(|k| k.seal(v, &aad(id, version)))),
    };
    credential_version::Model {
        id: uuid::Uuid::now_v7(),
        credential_id: id,
        version,
        state: "active".to_owned(),
        hint: secret.hint(),
        secret_ref,
        sealed_value,
        created_at: now,
        retired_at: None,
    }
}

fn plan_row(
    row: &CredentialInput,
    existing: Option<&Stored>,
    environment: &str,
    now: DateTime<Utc>,
    sealing: Option<&crate::sealed::SealingKey>,
) -> Plan {
    let scopes = serde_json::to_string(&row.scopes).unwrap_or_else(|_| "[]".to_owned());
    let Some(stored) = existing else {
        let id = uuid::Uuid::now_v7();
        let version = row.secret.as_ref().map(|s| new_version(id, 1, s, now, sealing));
        let model = credential::Model {
            id,
            name: row.name.clone(),
            kind: row.kind.as_str().to_owned(),
            integration: row.integration.clone(),
            owner: row.owner.clone(),
            scopes,
            environment: environment.to_owned(),
            issued_at: row.issued_at,
            expires_at: row.expires_at,
            last_used_at: row.last_used_at,
            last_rotated_at: row.last_rotated_at,
            revocation: row.revocation.as_str().to_owned(),
            revocation_instructions: row.revocation_instructions.clone(),
            revocation_url: row.revocation_url.clone(),
            description: row.description.clone(),
            current_version: i32::from(version.is_some()),
            created_at: now,
            updated_at: now,
        };
        return Plan::Create(Box::new(model), version);
    };
    let old = &stored.model;
    let rotated = row
        .secret
        .as_ref()
        .filter(|s| !same_secret(s, stored.active.as_ref(), sealing))
        .map(|s| new_version(old.id, old.current_version + 1, s, now, sealing));
    let mut model = credential::Model {
        id: old.id,
        name: old.name.clone(),
        kind: row.kind.as_str().to_owned(),
        integration: row.integration.clone(),
        owner: row.owner.clone(),
        scopes,
        environment: environment.to_owned(),
        issued_at: row.issued_at,
        expires_at: row.expires_at,
        last_used_at: row.last_used_at,
        // A new secret without a stated rotation time was rotated now; otherwise as stated.
        last_rotated_at: row
            .last_rotated_at
            .or_else(|| if rotated.is_some() { Some(now) } else { old.last_rotated_at }),
        revocation: row.revocation.as_str().to_owned(),
        revocation_instructions: row.revocation_instructions.clone(),
        revocation_url: row.revocation_url.clone(),
        description: row.description.clone(),
        current_version: rotated.as_ref().map_or(old.current_version, |v| v.version),
        created_at: old.created_at,
        updated_at: old.updated_at,
    };
    let mut changed: Vec<&'static str> = Vec::new();
    let fields: [(&'static str, bool); 14] = [
        ("kind", model.kind != old.kind),
        ("integration", model.integration != old.integration),
        ("owner", model.owner != old.owner),
        ("scopes", model.scopes != old.scopes),
        ("environment", model.environment != old.environment),
        ("issued_at", model.issued_at != old.issued_at),
        ("expires_at", model.expires_at != old.expires_at),
        ("last_used_at", model.last_used_at != old.last_used_at),
        ("last_rotated_at", model.last_rotated_at != old.last_rotated_at),
        ("revocation", model.revocation != old.revocation),
        ("revocation_instructions", model.revocation_instructions != old.revocation_instructions),
        ("revocation_url", model.revocation_url != old.revocation_url),
        ("description", model.description != old.description),
        ("secret", rotated.is_some()),
    ];
    changed.extend(fields.iter().filter(|(_, c)| *c).map(|(f, _)| *f));
    if changed.is_empty() {
        return Plan::Unchanged;
    }
    model.updated_at = now;
    Plan::Update { model: Box::new(model), changed, version: rotated }
}

/// `credential_created` / `credential_updated`: the credential and what changed, never a secret
/// value (a version says only whether it is a reference or a sealed value).
fn event(
    event_type: &str,
    actor: &str,
    channel: &str,
    m: &credential::Model,
    changed: &[&'static str],
    version: Option<&credential_version::Model>,
) -> AuditEvent {
    let mut details = serde_json::json!({
        "credential_id": m.id,
        "name": m.name,
        "kind": m.kind,
        "integration": m.integration,
        "owner": m.owner,
        "version": m.current_version,
    });
    if let Some(obj) = details.as_object_mut() {
        if !changed.is_empty() {
            obj.insert("changed".to_owned(), changed.into());
        }
        if let Some(v) = version {
            obj.insert("secret".to_owned(), if v.sealed_value.is_some() { "sealed_value" } else { "reference" }.into());
        }
    }
    AuditEvent {
        event_type: event_type.to_owned(),
        channel: channel.to_owned(),
        outcome: "success".to_owned(),
        actor: actor.to_owned(),
        subject: format!("credential:{}", m.name),
        run_id: None,
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details,
    }
}

#[cfg(test)]
mod tests {
    //! On SQLite, or on PostgreSQL when `TOLLGATE_TEST_DATABASE_URL` is set.

    use std::collections::BTreeMap;
    use std::sync::Arc;

    use chrono::{DateTime, TimeZone as _, Utc};
    use futures_util::FutureExt as _;
    use sea_orm::{ConnectionTrait as _, Database};
    use tokio::sync::Semaphore;

    use super::ImportMode;
    use crate::audit::AuditEvent;
    use crate::clock::SystemClock;
    use crate::credential::{self, CredentialKind, CredentialStatus, ImportFormat, RowOutcome};
    use crate::directory::{Directory, Integration, Principal};
    use crate::feature::audit_events::AppendAudit;
    use crate::health::LoopState;
    use crate::store::query::{self, CredentialFilter};
    use crate::store::tx::Tx;
    use crate::store::writer::{Job, JobError, Refusal};
    use crate::store::{self, StoreError};
    use crate::{Engine, Shared};

    const INTEGRATIONS: [&str; 4] = ["crm", "wiki", "ledger", "chat"];

    /// Holds the writer until a permit is released, so that the jobs queued meanwhile share
    /// one batch.
    struct Holds(Arc<Semaphore>);

    #[async_trait::async_trait]
    impl Job for Holds {
        type Output = ();

        async fn run(&self, _tx: &mut Tx<'_>) -> Result<(), Refusal> {
            let _permit = self.0.acquire().await.map_err(|_| JobError::Store(StoreError::Closed))?;
            Ok(())
        }
    }

    /// A bug inside a job: its batch is rolled back and replayed one job per transaction.
    struct Panics;

    #[async_trait::async_trait]
    impl Job for Panics {
        type Output = ();

        async fn run(&self, _tx: &mut Tx<'_>) -> Result<(), Refusal> {
            panic!("a bug inside a job");
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

    fn directory() -> Directory {
        let principals = ["alice", "bob"]
            .into_iter()
            .map(|p| (p.to_owned(), serde_json::from_value::<Principal>(serde_json::json!({})).unwrap()))
            .collect();
        let integrations = INTEGRATIONS
            .into_iter()
            .map(|i| {
                let integration = serde_json::json!({
                    "app": i, "environment": "production", "owner": "bob",
                    "scopes": [{ "name": "read", "risk": "low" }],
                    "connector": { "type": "manual", "operator": "bob" },
                });
                (i.to_owned(), serde_json::from_value::<Integration>(integration).unwrap())
            })
            .collect();
        Directory::new(principals, BTreeMap::new(), integrations).unwrap()
    }

    /// A writer on a fresh database, and what to drop it with.
    async fn engine() -> (Arc<Engine>, Option<tempfile::TempDir>, Option<String>) {
        let (url, dir, pg) = match std::env::var("TOLLGATE_TEST_DATABASE_URL") {
            Ok(base) if !base.is_empty() => {
                let name = format!("tollgate_c_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&base).await.unwrap();
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
                let i = base.rfind('/').expect("TOLLGATE_TEST_DATABASE_URL needs a database path");
                (format!("{}/{name}", &base[..i]), None, Some(name))
            }
            _ => {
                let dir = tempfile::tempdir().unwrap();
                (format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()), Some(dir), None)
            }
        };
        let db = store::connect(&url, 2).await.unwrap();
        store::migrate(&db).await.unwrap();
        let key = secrecy::SecretString::from("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
        let shared = Shared {
            live: crate::context::LiveCell::new(tollgate_workflows::Catalog::new(), directory()),
            clock: Arc::new(SystemClock),
            node_id: "test".to_owned(),
            lease: chrono::Duration::seconds(60),
            channels: Vec::new(),
            expiry_warning: None,
            sealing: Some(Arc::new(crate::sealed::SealingKey::from_hex(&key).unwrap())),
        };
        (Arc::new(Engine::start_writer_only(db, shared).await.unwrap()), dir, pg)
    }

    async fn cleanup(e: &Engine, pg: Option<String>) {
        e.shutdown().await;
        let (Some(name), Ok(base)) = (pg, std::env::var("TOLLGATE_TEST_DATABASE_URL")) else { return };
        let _ = e.db().read.clone().close().await;
        let admin = Database::connect(&base).await.unwrap();
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    }

    fn at(y: i32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().unwrap()
    }

    /// `n` credentials: row `i` on integration `INTEGRATIONS[i % 4]`, every tenth with a secret
    /// value, and an expiry chosen by `expires(i)` (empty: none).
    fn csv(n: usize, expires: impl Fn(usize) -> String) -> String {
        let kinds = CredentialKind::ALL;
        let mut out = "name,kind,integration,owner,expires_at,secret_ref,value\n".to_owned();
        for i in 0..n {
            let (secret_ref, value) = if i % 10 == 0 {
                (String::new(), format!("value-{i:06}-0123456789"))
            } else {
                (format!("vault:kv/c{i}"), String::new())
            };
            out.push_str(&format!(
                "c{i:06},{},{},{},{},{secret_ref},{value}\n",
                kinds[i % kinds.len()].as_str(),
                INTEGRATIONS[i % INTEGRATIONS.len()],
                if i % 3 == 0 { "alice" } else { "bob" },
                expires(i),
            ));
        }
        out
    }

    async fn import(e: &Engine, content: &str) -> Result<credential::ImportReport, JobError> {
        let parsed = credential::parse(ImportFormat::Csv, content, &mut |_| {});
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        e.import_credentials(parsed, ImportMode::Upsert, false, "alice", "cli").await
    }

    async fn audit_types(e: &Engine) -> Vec<(String, String)> {
        query::audit_page(&e.db().read, 0, 100_000, None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.event.event_type, r.event.subject))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_import_appends_its_records_in_order_as_it_goes_and_all_or_nothing() {
        let (e, _dir, pg) = engine().await;
        let n = 1234; // more than two chunks, and a partial one
        let content = csv(n, |i| if i % 7 == 0 { String::new() } else { "2027-01-01T00:00:00Z".to_owned() });

        // In one batch: a record before, the import, a record after, and a job that panics —
        // which rolls back the batch, the import's early appended records included, and has
        // its jobs replayed one per transaction.
        let gate = Arc::new(Semaphore::new(0));
        let held = tokio::spawn({
            let (w, gate) = (e.writer.clone(), gate.clone());
            async move { w.submit(Holds(gate)).await }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while e.health.health(std::time::Duration::ZERO, std::time::Duration::ZERO).writer == LoopState::Ok {
            assert!(std::time::Instant::now() < deadline, "the writer never got busy");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let parsed = credential::parse(ImportFormat::Csv, &content, &mut |_| {});
        // Each first poll queues its job, in this order.
        let mut before = Box::pin(e.writer.submit(AppendAudit(vec![event("before")])));
        let mut imported = Box::pin(e.import_credentials(parsed, ImportMode::Upsert, false, "alice", "cli"));
        let mut after = Box::pin(e.writer.submit(AppendAudit(vec![event("after")])));
        let mut bad = Box::pin(e.writer.submit(Panics));
        assert!(before.as_mut().now_or_never().is_none() && imported.as_mut().now_or_never().is_none());
        assert!(after.as_mut().now_or_never().is_none() && bad.as_mut().now_or_never().is_none());
        gate.add_permits(1);
        held.await.unwrap().unwrap();
        before.await.unwrap();
        let report = imported.await.unwrap();
        after.await.unwrap();
        assert!(matches!(bad.await, Err(JobError::Store(StoreError::JobPanicked { .. }))));
        assert!(report.applied);
        assert_eq!(report.count(RowOutcome::Created), n);

        // Every record once, in the order the jobs recorded them; the chain verifies.
        let mut expected = vec![("before".to_owned(), "test".to_owned())];
        expected.extend((0..n).map(|i| ("credential_created".to_owned(), format!("credential:c{i:06}"))));
        expected.push(("credentials_imported".to_owned(), "credentials".to_owned()));
        expected.push(("after".to_owned(), "test".to_owned()));
        assert_eq!(audit_types(&e).await, expected);
        let verified = store::query::verify_audit(e.db()).await.unwrap();
        assert_eq!(verified.unwrap().records, expected.len() as u64);

        // The same file again: nothing written, nothing recorded.
        let again = import(&e, &content).await.unwrap();
        assert_eq!(again.count(RowOutcome::Unchanged), n);
        assert_eq!(audit_types(&e).await.len(), expected.len());

        // One invalid row among many: nothing stored, nothing recorded.
        let mut bad_file = csv(n, |_| String::new()).replace("c000017,", "c000017-x,").replace(",chat,", ",nowhere,");
        bad_file.push_str("late,api_key,crm,bob,,vault:kv/late,\n");
        let refused = import(&e, &bad_file).await.unwrap();
        assert!(!refused.applied && !refused.invalid.is_empty());
        assert_eq!(audit_types(&e).await.len(), expected.len());
        let all = query::list_credentials(&e.db().read, &CredentialFilter::default(), None, 10_000).await.unwrap();
        assert_eq!(all.len(), n);
        cleanup(&e, pg).await;
    }

    /// Every page of `filter`, 50 at a time, as the API pages.
    async fn pages(e: &Engine, filter: &CredentialFilter) -> Vec<uuid::Uuid> {
        let (mut ids, mut cursor) = (Vec::new(), None);
        loop {
            let mut page = query::list_credentials(&e.db().read, filter, cursor, 51).await.unwrap();
            let more = page.len() > 50;
            page.truncate(50);
            ids.extend(page.iter().map(|c| c.id));
            match page.last() {
                Some(last) if more => cursor = Some(last.id),
                _ => return ids,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expiry_pages_list_exactly_the_matching_credentials_however_they_are_spread() {
        let (e, _dir, pg) = engine().await;
        // The oldest 300 expired, then one in a hundred; some expiring in 2027; some never.
        let n = 2600;
        let content = csv(n, |i| {
            if i < 300 || i % 100 == 42 {
                at(2025, 1 + u32::try_from(i % 12).unwrap()).to_rfc3339()
            } else if i % 37 == 0 {
                at(2027, 1 + u32::try_from(i % 12).unwrap()).to_rfc3339()
            } else if i % 5 == 0 {
                String::new()
            } else {
                at(2099, 1).to_rfc3339()
            }
        });
        import(&e, &content).await.unwrap();
        let mut all = query::list_credentials(&e.db().read, &CredentialFilter::default(), None, 10_000).await.unwrap();
        assert_eq!(all.len(), n);
        all.sort_by_key(|c| std::cmp::Reverse(c.id));

        let now = at(2026, 12);
        let filters = [
            CredentialFilter { status: Some((CredentialStatus::Expired, now)), ..Default::default() },
            CredentialFilter { status: Some((CredentialStatus::Active, now)), ..Default::default() },
            CredentialFilter { expiring_before: Some(at(2027, 6)), ..Default::default() },
            CredentialFilter {
                expiring_before: Some(at(2027, 6)),
                status: Some((CredentialStatus::Active, now)),
                ..Default::default()
            },
            CredentialFilter {
                integration: Some("wiki".to_owned()),
                status: Some((CredentialStatus::Expired, now)),
                ..Default::default()
            },
            CredentialFilter {
                kind: Some(CredentialKind::ApiKey),
                owner: Some("bob".to_owned()),
                expiring_before: Some(at(2026, 1)),
                ..Default::default()
            },
            CredentialFilter { expiring_before: Some(at(2000, 1)), ..Default::default() },
            CredentialFilter { owner: Some("alice".to_owned()), ..Default::default() },
        ];
        for filter in &filters {
            let expected: Vec<uuid::Uuid> = all
                .iter()
                .filter(|c| filter.integration.as_ref().is_none_or(|i| *i == c.integration))
                .filter(|c| filter.owner.as_ref().is_none_or(|o| *o == c.owner))
                .filter(|c| filter.kind.is_none_or(|k| k.as_str() == c.kind))
                .filter(|c| filter.expiring_before.is_none_or(|t| c.expires_at.is_some_and(|e| e < t)))
                .filter(|c| filter.status.is_none_or(|(s, now)| CredentialStatus::at(c.expires_at, now) == s))
                .map(|c| c.id)
                .collect();
            assert_eq!(pages(&e, filter).await, expected, "{filter:?}");
        }
        cleanup(&e, pg).await;
    }
}
