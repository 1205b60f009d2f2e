//! Synchronisation of configuration into the database, at start-up and on a reload: workflow
//! versions are pinned (a changed definition under an existing version is refused), and the
//! directory is mirrored with an audit event for every addition, change and removal.
//!
//! A reload ([`Reload`]) plans and stores in one transaction and moves the `config_reload` mark
//! (a row of `schedules`) that the other replicas watch, so they reload too.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel};
use sha2::{Digest, Sha256};
use tollgate_workflows::{Catalog, WorkflowDefinition, parse_definition};

use crate::audit::AuditEvent;
use crate::directory::{Directory, ReferenceError, WorkflowSourceRef};
use crate::store::StoreError;
use crate::store::entity::{directory_entry, schedule, workflow_definition};
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal};

/// A workflow definition read from a file (or the bundled set).
#[derive(Debug, Clone)]
pub struct WorkflowSource {
    /// File name, for messages.
    pub name: String,
    /// YAML text.
    pub text: String,
    /// Parsed definition.
    pub definition: WorkflowDefinition,
}

/// A new pinned workflow version to store.
#[derive(Debug, Clone)]
pub struct NewWorkflowRow {
    /// Key.
    pub key: String,
    /// Version.
    pub version: u32,
    /// Kind.
    pub kind: String,
    /// YAML text.
    pub source: String,
    /// Fingerprint of the parsed definition.
    pub sha256: String,
}

/// A directory entry to insert, update or deactivate.
#[derive(Debug, Clone)]
pub struct DirectoryRow {
    /// `principal`, `group` or `integration`.
    pub kind: &'static str,
    /// Name.
    pub name: String,
    /// JSON document (no secrets).
    pub document: String,
    /// False when the entry was removed from configuration.
    pub active: bool,
    /// Whether a row exists already.
    pub exists: bool,
    /// `added`, `changed` or `removed`.
    pub change: &'static str,
}

/// One directory entry a sync adds, changes or removes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryChange {
    /// `principal`, `group` or `integration`.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// `added`, `changed` or `removed`.
    pub change: &'static str,
}

/// What start-up must write, with its audit events.
#[derive(Debug, Clone, Default)]
pub struct SyncPlan {
    /// Workflow versions seen for the first time.
    pub workflows: Vec<NewWorkflowRow>,
    /// Directory changes.
    pub directory: Vec<DirectoryRow>,
    /// Audit events for all of the above.
    pub events: Vec<AuditEvent>,
}

impl SyncPlan {
    /// Whether there is nothing to store.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.workflows.is_empty() && self.directory.is_empty() && self.events.is_empty()
    }

    /// The directory entries it adds, changes or removes.
    #[must_use]
    pub fn changes(&self) -> Vec<DirectoryChange> {
        self.directory
            .iter()
            .map(|d| DirectoryChange { kind: d.kind, name: d.name.clone(), change: d.change })
            .collect()
    }
}

/// Stores a plan: new workflow versions, directory changes, and their audit events.
pub(crate) struct ApplySync(pub(crate) SyncPlan);

#[async_trait::async_trait]
impl Job for ApplySync {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        store(tx, &self.0).await
    }
}

/// The row of `schedules` whose time is the last configuration reload any replica applied.
pub const RELOAD_MARK: &str = "config_reload";

/// Who asked for a reload, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOrigin {
    /// A principal id, or `system` for a signal.
    pub actor: String,
    /// `api` or `signal` (or `replica` when another replica's reload is followed).
    pub channel: String,
    /// Whether the other replicas are to follow (move [`RELOAD_MARK`]); a replica that follows
    /// another's reload does not announce it again.
    pub announce: bool,
}

/// What a reload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Workflow versions seen for the first time, as `(key, version)`.
    pub workflows: Vec<(String, u32)>,
    /// Directory entries added, changed or removed.
    pub changes: Vec<DirectoryChange>,
    /// The new [`RELOAD_MARK`], when this reload announced itself.
    pub mark: Option<chrono::DateTime<chrono::Utc>>,
}

/// A reload: plans against the database inside the transaction (two replicas reloading at once
/// never plan from the same stale rows), stores the plan, audits it, and moves the mark.
pub(crate) struct Reload {
    pub(crate) sources: Vec<WorkflowSource>,
    pub(crate) directory: Directory,
    pub(crate) origin: ReloadOrigin,
}

#[async_trait::async_trait]
impl Job for Reload {
    type Output = (Catalog, Reloaded);

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(Catalog, Reloaded), Refusal> {
        let origin = &self.origin;
        let (catalog, plan) = match plan(tx.conn(), &self.sources, &self.directory).await {
            Ok(planned) => planned,
            Err(SyncError::Store(e)) => return Err(e.into()),
            Err(e) => {
                let refused = reload_event(
                    "config_reload_refused",
                    origin,
                    "rejected",
                    serde_json::json!({ "errors": [e.to_string()] }),
                );
                return Err(Refusal::Audited(JobError::ConfigRefused(e.to_string()), Box::new(refused)));
            }
        };
        let workflows: Vec<(String, u32)> = plan.workflows.iter().map(|w| (w.key.clone(), w.version)).collect();
        let changes = plan.changes();
        store(tx, &plan).await?;
        let mut mark = None;
        if origin.announce {
            let now = tx.now();
            let previous = schedule::Entity::find_by_id(RELOAD_MARK.to_owned()).one(tx.conn()).await?;
            // Strictly later than the last mark, so a follower never mistakes two reloads for one.
            let at = match &previous {
                Some(p) if p.last_tick >= now => p.last_tick + chrono::Duration::microseconds(1),
                _ => now,
            };
            let row = schedule::Model { name: RELOAD_MARK.to_owned(), last_tick: at }.into_active_model();
            if previous.is_some() {
                schedule::Entity::update(row.reset_all()).exec(tx.write()).await?;
            } else {
                schedule::Entity::insert(row).exec_without_returning(tx.write()).await?;
            }
            mark = Some(at);
        }
        if origin.announce || !plan.is_empty() {
            let details = serde_json::json!({
                "workflows": workflows.iter().map(|(k, v)| format!("{k} v{v}")).collect::<Vec<_>>(),
                "changes": changes.len(),
            });
            tx.audit(reload_event("config_reloaded", origin, "success", details));
        }
        Ok((catalog, Reloaded { workflows, changes, mark }))
    }
}

/// The audit record of a reload (or of its refusal).
#[must_use]
pub fn reload_event(event_type: &str, origin: &ReloadOrigin, outcome: &str, details: serde_json::Value) -> AuditEvent {
    AuditEvent {
        event_type: event_type.to_owned(),
        channel: origin.channel.clone(),
        outcome: outcome.to_owned(),
        actor: origin.actor.clone(),
        subject: "config".to_owned(),
        run_id: None,
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details,
    }
}

/// Writes `plan`: new workflow versions, directory rows, audit events.
async fn store(tx: &mut Tx<'_>, plan: &SyncPlan) -> Result<(), Refusal> {
    let now = tx.now();
    for w in &plan.workflows {
        workflow_definition::Entity::insert(
            workflow_definition::Model {
                key: w.key.clone(),
                version: i32::try_from(w.version).unwrap_or(i32::MAX),
                kind: w.kind.clone(),
                source: w.source.clone(),
                sha256: w.sha256.clone(),
                loaded_at: now,
            }
            .into_active_model(),
        )
        .exec_without_returning(tx.write())
        .await?;
    }
    for d in &plan.directory {
        let model = directory_entry::Model {
            kind: d.kind.to_owned(),
            name: d.name.clone(),
            document: d.document.clone(),
            active: d.active,
            updated_at: now,
        };
        if d.exists {
            directory_entry::Entity::update(model.into_active_model().reset_all()).exec(tx.write()).await?;
        } else {
            directory_entry::Entity::insert(model.into_active_model()).exec_without_returning(tx.write()).await?;
        }
    }
    for event in &plan.events {
        tx.audit(event.clone());
    }
    Ok(())
}

/// A configuration that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// A workflow definition changed under an existing version.
    #[error(
        "{name}: workflow {key} version {version} differs from the definition pinned when it was first loaded; bump `version` to change behaviour"
    )]
    VersionChanged {
        /// File.
        name: String,
        /// Key.
        key: String,
        /// Version.
        version: u32,
    },
    /// Two files define the same key and version differently.
    #[error("{0}")]
    Catalog(String),
    /// A stored definition no longer parses.
    #[error("stored workflow {key} v{version} no longer parses: {message}")]
    Stored {
        /// Key.
        key: String,
        /// Version.
        version: i32,
        /// Parser message.
        message: String,
    },
    /// Database failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn fingerprint(def: &WorkflowDefinition) -> String {
    hex::encode(Sha256::digest(serde_json::to_vec(def).unwrap_or_default()))
}

fn event(event_type: &str, subject: String, details: serde_json::Value) -> AuditEvent {
    AuditEvent {
        event_type: event_type.to_owned(),
        channel: "config".to_owned(),
        outcome: "success".to_owned(),
        actor: "system".to_owned(),
        subject,
        run_id: None,
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details,
    }
}

/// Builds the catalog (stored versions plus the given sources) and the plan of what to store.
///
/// # Errors
/// [`SyncError`] naming the definition at fault.
pub async fn plan<C: ConnectionTrait>(
    c: &C,
    sources: &[WorkflowSource],
    directory: &Directory,
) -> Result<(Catalog, SyncPlan), SyncError> {
    let mut plan = SyncPlan::default();
    let mut catalog = Catalog::new();
    let stored: BTreeMap<(String, i32), workflow_definition::Model> = workflow_definition::Entity::find()
        .all(c)
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .map(|m| ((m.key.clone(), m.version), m))
        .collect();
    for src in sources {
        let def = &src.definition;
        let sha = fingerprint(def);
        let version = i32::try_from(def.version).unwrap_or(i32::MAX);
        match stored.get(&(def.key.clone(), version)) {
            Some(row) if row.sha256 != sha => {
                return Err(SyncError::VersionChanged {
                    name: src.name.clone(),
                    key: def.key.clone(),
                    version: def.version,
                });
            }
            Some(_) => {}
            None if plan.workflows.iter().any(|w| w.key == def.key && w.version == def.version) => {}
            None => {
                plan.workflows.push(NewWorkflowRow {
                    key: def.key.clone(),
                    version: def.version,
                    kind: def.kind.as_str().to_owned(),
                    source: src.text.clone(),
                    sha256: sha.clone(),
                });
                let mut ev = event(
                    "workflow_loaded",
                    format!("workflow:{}", def.key),
                    serde_json::json!({ "file": src.name, "sha256": sha, "kind": def.kind.as_str() }),
                );
                ev.workflow_key = Some(def.key.clone());
                ev.workflow_version = Some(version);
                plan.events.push(ev);
            }
        }
        catalog.insert(def.clone()).map_err(|e| SyncError::Catalog(format!("{}: {e}", src.name)))?;
    }
    for ((key, version), row) in &stored {
        if catalog.get(key, u32::try_from(*version).unwrap_or(0)).is_some() {
            continue;
        }
        let def = parse_definition(&format!("stored:{key}@{version}"), &row.source).map_err(|e| SyncError::Stored {
            key: key.clone(),
            version: *version,
            message: e.to_string(),
        })?;
        catalog.insert(def).map_err(|e| SyncError::Catalog(e.to_string()))?;
    }

    let existing: BTreeMap<(String, String), directory_entry::Model> = directory_entry::Entity::find()
        .all(c)
        .await
        .map_err(StoreError::from)?
        .into_iter()
        .map(|m| ((m.kind.clone(), m.name.clone()), m))
        .collect();
    let mut wanted: Vec<(&'static str, String, String)> = Vec::new();
    for (id, p) in &directory.principals {
        wanted.push(("principal", id.clone(), serde_json::to_string(p).unwrap_or_default()));
    }
    for (name, g) in &directory.groups {
        wanted.push(("group", name.clone(), serde_json::to_string(g).unwrap_or_default()));
    }
    for (name, i) in &directory.integrations {
        let mut doc = serde_json::to_value(i).unwrap_or_default();
        doc["connector"] = serde_json::json!(i.connector_type());
        wanted.push(("integration", name.clone(), doc.to_string()));
    }
    for (kind, name, document) in &wanted {
        let before = existing.get(&((*kind).to_owned(), name.clone()));
        let change = match before {
            None => "added",
            Some(b) if !b.active => "added",
            Some(b) if &b.document != document => "changed",
            Some(_) => continue,
        };
        plan.directory.push(DirectoryRow {
            kind,
            name: name.clone(),
            document: document.clone(),
            active: true,
            exists: before.is_some(),
            change,
        });
        let details = serde_json::json!({ "before": before.and_then(|b| serde_json::from_str::<serde_json::Value>(&b.document).ok()), "after": serde_json::from_str::<serde_json::Value>(document).ok() });
        plan.events.push(event(&format!("{kind}_{change}"), format!("{kind}:{name}"), details));
    }
    for ((kind, name), row) in &existing {
        if row.active && !wanted.iter().any(|(k, n, _)| k == kind && n == name) {
            let kind: &'static str = match kind.as_str() {
                "principal" => "principal",
                "group" => "group",
                _ => "integration",
            };
            plan.directory.push(DirectoryRow {
                kind,
                name: name.clone(),
                document: row.document.clone(),
                active: false,
                exists: true,
                change: "removed",
            });
            plan.events.push(event(&format!("{kind}_removed"), format!("{kind}:{name}"), serde_json::json!({})));
        }
    }
    Ok((catalog, plan))
}

/// Where a stored workflow version that no file defines comes from, in reference errors.
pub const STORED_SOURCE: &str = "stored in the database";

/// What start-up found when it checked the names workflows and the directory refer to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceCheck {
    /// Dangling names that must stop start-up: in the directory's own entries, in every
    /// definition read from files (or the bundled set), and in the latest version of every key
    /// (the one new requests use), even when only the database still holds it.
    pub errors: Vec<ReferenceError>,
    /// Dangling names in older stored versions, which only requests already running on them
    /// use: reported, never fatal (their requests may still be decided by the names that exist).
    pub warnings: Vec<ReferenceError>,
}

/// Checks every name the directory and the workflow definitions of `catalog` refer to
/// ([`Directory::check_references`]), sorting what it finds into [`ReferenceCheck::errors`] and
/// [`ReferenceCheck::warnings`]. `sources` are the definitions read from files, whose errors
/// give the file, line and column.
#[must_use]
pub fn check_references(catalog: &Catalog, sources: &[WorkflowSource], directory: &Directory) -> ReferenceCheck {
    let mut current: Vec<WorkflowSourceRef<'_>> = sources
        .iter()
        .map(|s| WorkflowSourceRef { source: &s.name, text: Some(&s.text), definition: &s.definition })
        .collect();
    let mut seen: BTreeSet<(&str, u32)> =
        sources.iter().map(|s| (s.definition.key.as_str(), s.definition.version)).collect();
    let latest = catalog.latest();
    let all = catalog.all();
    for def in &latest {
        if seen.insert((def.key.as_str(), def.version)) {
            current.push(WorkflowSourceRef { source: STORED_SOURCE, text: None, definition: def });
        }
    }
    let errors = directory.check_references(current).err().unwrap_or_default();
    let warnings = all
        .iter()
        .filter(|d| !seen.contains(&(d.key.as_str(), d.version)))
        .flat_map(|d| directory.dangling_in(&WorkflowSourceRef { source: STORED_SOURCE, text: None, definition: d }))
        .collect();
    ReferenceCheck { errors, warnings }
}
