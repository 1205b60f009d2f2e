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
//! A secret value is sealed ([`crate::sealed`]) with the credential's id and version as
//! associated data, so a sealed value copied to another row or version does not open. A change
//! of secret (another reference, or a value that differs from the stored one once opened) adds a
//! version and retires the previous one; a row without a secret leaves the stored versions alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};
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
        let mut report = ImportReport { invalid, ..ImportReport::default() };

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
        report.applied = true;
        Ok(report)
    }
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
