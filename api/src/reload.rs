//! Directory and workflow changes without a restart.
//!
//! A reload re-reads the configuration file (and `TOLLGATE_*` variables) as `serve` read it at
//! start-up and checks it the same way — every setting, every workflow file, every name the
//! directory and the workflows refer to, every connector's settings — before anything is applied:
//! a bad change is refused whole (and the refusal audited) and the running configuration stays.
//! A good one is stored, audited and installed by [`Engine::reload`]. It is asked for by `SIGHUP`
//! or `POST /v1/admin/reload`; the replica that applies it moves a mark in the database, and every
//! other replica, watching the mark ([`Reloader::follow`]), reloads its own copy of the files
//! (replicas are expected to read the same configuration, e.g. one ConfigMap).
//!
//! What reloads: principals, groups, integrations (with their connectors) and workflows. Requests
//! in flight keep the workflow version they were pinned to. Everything else (listen address,
//! database, Slack, email, HTTP and engine settings) needs a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tollgate_engine::config_sync::{self, ReloadOrigin, Reloaded, WorkflowSource};
use tollgate_engine::connector::Connector;
use tollgate_engine::directory::Directory;
use tollgate_engine::{Engine, JobError};

use crate::config;
use crate::server::{References, check_references, workflow_sources};

/// How often a replica looks at the reload mark.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(2);

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid: nothing of it was applied.
    #[error("{0}")]
    Invalid(String),
    /// The database failed (nothing was applied).
    #[error(transparent)]
    Failed(JobError),
}

/// Reloads this replica's configuration on request and follows other replicas' reloads.
#[derive(Debug)]
pub struct Reloader {
    engine: Arc<Engine>,
    file: Option<PathBuf>,
    overrides: Vec<(&'static str, String)>,
    /// The last reload mark this replica applied (or started with); also makes reloads on this
    /// replica one at a time.
    seen: tokio::sync::Mutex<Option<DateTime<Utc>>>,
}

impl Reloader {
    /// A reloader for the configuration `serve` started with (`file`, plus its command-line
    /// `overrides`).
    ///
    /// # Errors
    /// The database cannot be read.
    pub async fn new(
        engine: Arc<Engine>,
        file: Option<PathBuf>,
        overrides: Vec<(&'static str, String)>,
    ) -> anyhow::Result<Self> {
        let seen = engine.reload_mark().await?;
        Ok(Self { engine, file, overrides, seen: tokio::sync::Mutex::new(seen) })
    }

    /// Reads, checks and applies the configuration files; with `origin.announce`, the other
    /// replicas follow.
    ///
    /// # Errors
    /// [`ReloadError::Invalid`] (audited as `config_reload_refused`) or a database failure.
    pub async fn reload(&self, origin: ReloadOrigin) -> Result<Reloaded, ReloadError> {
        let mut seen = self.seen.lock().await;
        let result = self.apply(origin.clone()).await;
        match &result {
            Ok(r) => {
                if r.mark.is_some() {
                    *seen = r.mark;
                }
                tracing::info!(
                    actor = %origin.actor,
                    channel = %origin.channel,
                    workflows = r.workflows.len(),
                    changes = r.changes.len(),
                    "configuration reloaded"
                );
            }
            Err(e) => {
                tracing::error!(actor = %origin.actor, channel = %origin.channel, error = %e, "configuration reload refused; the running configuration stays")
            }
        }
        result
    }

    async fn apply(&self, origin: ReloadOrigin) -> Result<Reloaded, ReloadError> {
        let (sources, directory, connectors) = match self.prepare().await {
            Ok(prepared) => prepared,
            Err(message) => {
                let event = config_sync::reload_event(
                    "config_reload_refused",
                    &origin,
                    "rejected",
                    serde_json::json!({ "errors": message.lines().collect::<Vec<_>>() }),
                );
                self.engine.audit(vec![event]).await.map_err(ReloadError::Failed)?;
                return Err(ReloadError::Invalid(message));
            }
        };
        match self.engine.reload(sources, directory, connectors, origin).await {
            Ok(r) => Ok(r),
            // Refused inside the transaction (a definition changed under a pinned version), and
            // audited there.
            Err(JobError::ConfigRefused(message)) => Err(ReloadError::Invalid(message)),
            Err(e) => Err(ReloadError::Failed(e)),
        }
    }

    /// Everything `serve` checks at start-up, on the files as they are now.
    async fn prepare(&self) -> Result<(Vec<WorkflowSource>, Directory, Connectors), String> {
        let config = config::load(self.file.as_deref(), &self.overrides).map_err(|e| e.to_string())?;
        let directory = config.directory_unresolved().map_err(|e| e.to_string())?;
        let sources = workflow_sources(&config).map_err(|e| format!("{e:#}"))?;
        let (catalog, _) = config_sync::plan(&self.engine.db().read, &sources, &directory)
            .await
            .map_err(|e| format!("invalid configuration: {e}"))?;
        check_references(&config, &catalog, &sources, &directory, References::Refuse).map_err(|e| format!("{e:#}"))?;
        let http = tollgate_engine::http::client(Duration::from_secs(30)).map_err(|e| e.to_string())?;
        let connectors = tollgate_engine::runtime::build_connectors(&directory, &http)
            .map_err(|e| format!("invalid configuration: {e}"))?;
        Ok((sources, directory, connectors))
    }

    /// Watches the reload mark and reloads when another replica moved it, until `stop`.
    pub async fn follow(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(FOLLOW_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            let mark = match self.engine.reload_mark().await {
                Ok(mark) => mark,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the configuration reload mark");
                    continue;
                }
            };
            let mut seen = self.seen.lock().await;
            if mark <= *seen {
                continue;
            }
            *seen = mark;
            let origin = ReloadOrigin { actor: "system".to_owned(), channel: "replica".to_owned(), announce: false };
            match self.apply(origin).await {
                Ok(r) => tracing::info!(
                    workflows = r.workflows.len(),
                    changes = r.changes.len(),
                    "configuration reloaded after another replica's reload"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "configuration reload (after another replica's) refused; the running configuration stays")
                }
            }
        }
    }
}

type Connectors = std::collections::BTreeMap<String, Arc<dyn Connector>>;

/// Reloads on every `SIGHUP` until `stop`.
pub async fn on_hangup(reloader: Arc<Reloader>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let Ok(mut hangups) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with POST /v1/admin/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        let origin = ReloadOrigin { actor: "system".to_owned(), channel: "signal".to_owned(), announce: true };
        // Outcome logged (and audited) by `reload`.
        let _ = reloader.reload(origin).await;
    }
}
