//! The runtime: starts the writer, the timer service and the outbox dispatcher, recovers after a
//! restart, and offers the operations the API and CLI call.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tollgate_workflows::Operation;

use crate::action::Expect;
use crate::audit::AuditEvent;
use crate::connector::{ActionOutcome, Connector};
use crate::context::Shared;
use crate::delivery::{AfterFailure, after_failure, fallback_channel};
use crate::directory::{Directory, Role};
use crate::effect::OutboxPayload;
use crate::feature::audit_events::AppendAudit;
use crate::feature::config_sync::ApplySync;
use crate::feature::grant_secrets::{self, DiscardHeld, ExpireSecret, Held, MintedFor, Retrieval, RetrieveSecret};
use crate::feature::links;
use crate::feature::outbox::{ActionResult, AttemptFailed, ClaimOutbox, NotificationResult};
use crate::feature::reconcile;
use crate::feature::runs::{
    ApplyCommand, CreateOutput, CreateRequest, IdempotencyClaim, RecoverExpiry, Renderer, RevokeGrant,
};
use crate::feature::slack_messages::RecordSlackMessage;
use crate::feature::tasks::{OpenTask, ResolveTask};
use crate::feature::timers::FireTimer;
use crate::feature::tokens::{CreateToken, RevokeToken, TouchToken};
use crate::health::{Health, Heartbeats, Loop};
use crate::ids::{GrantId, RunId, TaskId};
use crate::notify::NotificationChannel;
use crate::outbound::ConnectorError;
use crate::run::Decision;
use crate::schedule::CronSchedule;
use crate::store::query;
use crate::store::writer::{self, JobError, OutboxWork, Sinks, WriterHandle};
use crate::store::{Db, StoreError};
use crate::token::ApiToken;
use crate::transition::{Cast, Command, NewRequest};

/// Runtime settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// This replica's name (stable across restarts so it resumes its own leases at once).
    pub node_id: String,
    /// Outbox lease length.
    pub lease: Duration,
    /// Connector/notification calls in flight at once.
    pub dispatch_concurrency: usize,
    /// How often a revocation that exhausted its retries is tried again.
    pub revoke_retry_interval: Duration,
    /// Safety-net scan interval for timers and the outbox (the normal path is event driven).
    pub scan_interval: Duration,
    /// How often to look for grants still active past their expiry with no expiry timer.
    pub expiry_sweep_interval: Duration,
    /// How long past its expiry a grant is late rather than lost.
    pub expiry_grace: Duration,
    /// How long past due another replica's timer waits before this replica fires it (the
    /// replica that armed a timer fires it when due; others take over if it is gone).
    pub timer_takeover: Duration,
    /// Readiness: how long one write transaction may run, and how late past the scan interval
    /// the timer service or the dispatcher may come round, before the engine counts as stuck.
    pub stall_bound: Duration,
    /// When to reconcile grants with their targets (`None`: never).
    pub reconcile_schedule: Option<CronSchedule>,
    /// How long after its revocation a grant is still checked for absence.
    pub reconcile_lookback: Duration,
    /// How often the reconciler looks at the clock for a due tick.
    pub reconcile_scan: Duration,
    /// How long the holder has to retrieve a credential a connector minted for their grant
    /// before it is destroyed unread (`engine.secret_delivery_secs`).
    pub secret_delivery: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            node_id: "tollgate".to_owned(),
            lease: Duration::from_secs(300),
            dispatch_concurrency: 256,
            revoke_retry_interval: Duration::from_secs(3600),
            scan_interval: Duration::from_secs(5),
            expiry_sweep_interval: Duration::from_secs(60),
            expiry_grace: Duration::from_secs(60),
            timer_takeover: Duration::from_secs(5),
            stall_bound: Duration::from_secs(30),
            reconcile_schedule: None,
            reconcile_lookback: Duration::from_secs(30 * 86_400),
            reconcile_scan: Duration::from_secs(1),
            secret_delivery: Duration::from_secs(3600),
        }
    }
}

/// Result of creating a request.
#[derive(Debug, Clone)]
pub enum Created {
    /// A new request; the rendered response body.
    New {
        /// Id.
        id: RunId,
        /// Response body.
        body: String,
    },
    /// A revoke request for a grant whose revocation another revoke request, still open,
    /// already asked for: that request (one revocation per grant).
    Attached {
        /// The open revoke request.
        id: RunId,
        /// Its rendered response body.
        body: String,
    },
    /// A replay of an earlier request with the same `Idempotency-Key` and body.
    Replayed {
        /// The stored status code (201 created, 200 attached).
        status: u16,
        /// The stored response body.
        body: String,
    },
}

/// The running engine.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    expiry_recoveries: Arc<AtomicU64>,
    db: Db,
    pub(crate) writer: WriterHandle,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) health: Arc<Heartbeats>,
    /// The scan interval and stall bound readiness judges the loops by.
    stall: (Duration, Duration),
    /// Set when a background loop ended on its own: the engine cannot go on.
    failed: watch::Receiver<Option<String>>,
    /// The connectors the dispatcher calls, replaced whole by a reload.
    connectors: Connectors,
    /// One reload at a time on this replica.
    reloading: tokio::sync::Mutex<()>,
}

/// The connectors by integration, shared by the engine (which replaces them on a reload) and
/// the dispatcher and reconciler (which take one snapshot per use).
type Connectors = Arc<std::sync::RwLock<Arc<BTreeMap<String, Arc<dyn Connector>>>>>;

fn snapshot(connectors: &Connectors) -> Arc<BTreeMap<String, Arc<dyn Connector>>> {
    connectors.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// Runs a background loop; if it ends on its own (it returns or panics) rather than being
/// stopped by [`Engine::shutdown`] (which aborts it), reports it in `failed`.
fn supervise(
    (name, beats): (&'static str, Option<Loop>),
    work: impl std::future::Future<Output = ()> + Send + 'static,
    (failed, health): (&watch::Sender<Option<String>>, &Arc<Heartbeats>),
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    use futures_util::FutureExt as _;
    let (failed, health) = (failed.clone(), health.clone());
    tokio::spawn(async move {
        let how = match std::panic::AssertUnwindSafe(work).catch_unwind().await {
            Ok(()) => "stopped",
            Err(_) => "panicked",
        };
        if let Some(l) = beats {
            health.stopped(l);
        }
        if !*stop.borrow() {
            tracing::error!(task = name, how, "an engine task ended; the engine cannot go on");
            let _ = failed.send(Some(format!("the {name} {how}")));
        }
    })
}

impl Engine {
    /// Starts the engine on a migrated database: recovers pending timers and outbox items and
    /// begins serving.
    ///
    /// # Errors
    /// Database failures during recovery.
    pub async fn start(
        db: Db,
        shared: Shared,
        connectors: BTreeMap<String, Arc<dyn Connector>>,
        channels: Vec<Arc<dyn NotificationChannel>>,
        settings: EngineSettings,
    ) -> Result<Self, StoreError> {
        let mut shared = shared;
        let channels: BTreeMap<String, Arc<dyn NotificationChannel>> = if channels.is_empty() {
            BTreeMap::from([("log".to_owned(), Arc::new(crate::notify::LogChannel) as Arc<dyn NotificationChannel>)])
        } else {
            channels.into_iter().map(|c| (c.name().to_owned(), c)).collect()
        };
        shared.channels = channels.keys().cloned().collect();
        let shared = Arc::new(shared);
        let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
        let (timer_tx, timer_rx) = mpsc::unbounded_channel();
        let health = Arc::new(Heartbeats::default());
        let (failed_tx, failed) = watch::channel(None);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let sinks = Sinks { outbox: outbox_tx, timers: timer_tx, health: health.clone() };
        let (writer, writer_task) = writer::new(db.clone(), shared.clone(), sinks);
        let on_end = (&failed_tx, &health);
        let writer_task = supervise(("writer", Some(Loop::Writer)), writer_task, on_end, shutdown_rx.clone());
        let connectors: Connectors = Arc::new(std::sync::RwLock::new(Arc::new(connectors)));
        let dispatcher = Arc::new(Dispatcher {
            db: db.clone(),
            writer: writer.clone(),
            shared: shared.clone(),
            connectors: connectors.clone(),
            channels,
            in_flight: Mutex::new(HashSet::new()),
            permits: Semaphore::new(settings.dispatch_concurrency.max(1)),
            settings: settings.clone(),
            health: health.clone(),
        });
        let timer_service = TimerService {
            db: db.clone(),
            writer: writer.clone(),
            shared: shared.clone(),
            scan: settings.scan_interval,
            takeover: chrono::Duration::from_std(settings.timer_takeover).unwrap_or(chrono::Duration::MAX),
            in_flight: Arc::default(),
            health: health.clone(),
        };
        let expiry_recoveries = Arc::new(AtomicU64::new(0));
        let sweep = ExpirySweep {
            db: db.clone(),
            writer: writer.clone(),
            shared: shared.clone(),
            interval: settings.expiry_sweep_interval,
            grace: chrono::Duration::from_std(settings.expiry_grace).unwrap_or(chrono::Duration::MAX),
            recovered: expiry_recoveries.clone(),
        };
        let dispatcher = dispatcher.run(outbox_rx, shutdown_rx.clone());
        let t1 = supervise(("outbox dispatcher", Some(Loop::Dispatcher)), dispatcher, on_end, shutdown_rx.clone());
        let timers = timer_service.run(timer_rx, shutdown_rx.clone());
        let t2 = supervise(("timer service", Some(Loop::Timers)), timers, on_end, shutdown_rx.clone());
        let t3 = supervise(("expiry sweep", None), sweep.run(shutdown_rx.clone()), on_end, shutdown_rx.clone());
        let secrets = SecretSweep {
            db: db.clone(),
            writer: writer.clone(),
            shared: shared.clone(),
            scan: settings.scan_interval,
        };
        let t4 = supervise(("secret sweep", None), secrets.run(shutdown_rx.clone()), on_end, shutdown_rx.clone());
        let mut tasks = vec![writer_task, t1, t2, t3, t4];
        if let Some(schedule) = settings.reconcile_schedule.clone() {
            let reconciler = Reconciler {
                writer: writer.clone(),
                shared: shared.clone(),
                schedule,
                lookback: chrono::Duration::from_std(settings.reconcile_lookback).unwrap_or(chrono::Duration::MAX),
                scan: settings.reconcile_scan,
                connectors: connectors.clone(),
            };
            tasks.push(supervise(
                ("drift reconciliation", None),
                reconciler.run(shutdown_rx.clone()),
                on_end,
                shutdown_rx,
            ));
        }
        let tasks = Mutex::new(tasks);
        let stall = (settings.scan_interval, settings.stall_bound);
        let reloading = tokio::sync::Mutex::new(());
        Ok(Self {
            shared,
            expiry_recoveries,
            db,
            writer,
            shutdown,
            tasks,
            health,
            stall,
            failed,
            connectors,
            reloading,
        })
    }

    /// Starts only the writer: for CLI commands that record something (a token, an audit event)
    /// without ever performing side effects or firing timers from a second process.
    ///
    /// # Errors
    /// None today; kept fallible like [`Engine::start`].
    pub async fn start_writer_only(db: Db, shared: Shared) -> Result<Self, StoreError> {
        let shared = Arc::new(shared);
        let (outbox_tx, _) = mpsc::unbounded_channel();
        let (timer_tx, _) = mpsc::unbounded_channel();
        let health = Arc::new(Heartbeats::default());
        let (writer, writer_loop) = writer::new(
            db.clone(),
            shared.clone(),
            Sinks { outbox: outbox_tx, timers: timer_tx, health: health.clone() },
        );
        let writer_task = tokio::spawn(writer_loop);
        let (shutdown, _) = watch::channel(false);
        let (_, failed) = watch::channel(None);
        let expiry_recoveries = Arc::default();
        let stall = (Duration::MAX, Duration::MAX);
        let tasks = Mutex::new(vec![writer_task]);
        let (connectors, reloading) = (Connectors::default(), tokio::sync::Mutex::new(()));
        Ok(Self {
            shared,
            expiry_recoveries,
            db,
            writer,
            shutdown,
            tasks,
            health,
            stall,
            failed,
            connectors,
            reloading,
        })
    }

    /// Shared state.
    #[must_use]
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Database connections (reads).
    #[must_use]
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether the writer, the timer service and the outbox dispatcher are running and in time
    /// (see [`EngineSettings::stall_bound`]); what readiness reports.
    #[must_use]
    pub fn health(&self) -> Health {
        let (period, bound) = self.stall;
        self.health.health(period, bound)
    }

    /// Completes when a background loop ended on its own (it returned or panicked): the engine
    /// cannot go on and the process should exit so that a supervisor restarts it. Never
    /// completes after [`Engine::shutdown`].
    pub async fn failed(&self) -> String {
        let mut failed = self.failed.clone();
        let reason = failed.wait_for(Option::is_some).await.map(|r| r.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            // The sender lives as long as the loops' supervisors; without them, wait forever.
            Err(_) => std::future::pending().await,
        }
    }

    /// How many overdue grants the expiry sweep found and started revoking since start-up
    /// (zero in normal operation: each one is a lost expiry timer).
    #[must_use]
    pub fn expiry_recoveries(&self) -> u64 {
        self.expiry_recoveries.load(Ordering::Relaxed)
    }

    /// Creates a request. `render` produces the response body stored for idempotent replays.
    ///
    /// # Errors
    /// [`JobError`] when the request is refused or the database fails.
    pub async fn create_request(
        &self,
        request: NewRequest,
        is_admin: bool,
        idempotency: Option<(String, String, String)>,
        render: Renderer,
    ) -> Result<Created, JobError> {
        let idempotency =
            idempotency.map(|(principal, key, request_hash)| IdempotencyClaim { principal, key, request_hash });
        match self.writer.submit(CreateRequest { request, is_admin, idempotency, render }).await? {
            CreateOutput::Created { run_id, body } => Ok(Created::New { id: run_id, body }),
            CreateOutput::Attached { run_id, body } => Ok(Created::Attached { id: run_id, body }),
            CreateOutput::Replayed { status, body } => Ok(Created::Replayed { status, body }),
        }
    }

    /// Records a decision.
    ///
    /// # Errors
    /// [`JobError::Transition`] with the reason when refused.
    pub async fn decide(
        &self,
        run_id: RunId,
        actor: &str,
        decision: Decision,
        comment: Option<String>,
        channel: &str,
    ) -> Result<(), JobError> {
        self.cast(run_id, Cast::new(actor, decision, comment, channel)).await
    }

    /// Records a decision cast through a channel that brings evidence (kept under
    /// `details.origin` in the audit record) and names the approval step it was cast on.
    ///
    /// # Errors
    /// [`JobError::Transition`] with the reason when refused (audited).
    pub async fn cast(&self, run_id: RunId, cast: Cast) -> Result<(), JobError> {
        self.apply(run_id, Command::Decide(cast)).await
    }

    /// What an email link's `token` is: usable (known, unused, unexpired, its approval step
    /// still pending), spent, or unknown. Reads only.
    ///
    /// # Errors
    /// Database failures.
    pub async fn approval_link(&self, token: &str) -> Result<links::LinkLookup, StoreError> {
        links::lookup(&self.db.read, token, self.shared.clock.now()).await
    }

    /// Decides through an email link: the decision is the link's approver's, with channel `email`
    /// and the link id as evidence; the link is consumed in the decision's transaction.
    ///
    /// # Errors
    /// [`JobError::LinkUnusable`] when the link cannot decide (nothing is recorded);
    /// [`JobError::Transition`] when the decision is refused (audited; the link stays unused).
    pub async fn decide_by_link(
        &self,
        token: &str,
        decision: Decision,
        comment: Option<String>,
    ) -> Result<RunId, JobError> {
        links::decide(&self.writer, token, decision, comment).await
    }

    /// Cancels a pending request.
    ///
    /// # Errors
    /// [`JobError::Transition`] with the reason when refused.
    pub async fn cancel(&self, run_id: RunId, actor: &str, is_admin: bool, channel: &str) -> Result<(), JobError> {
        self.apply(run_id, Command::Cancel { actor: actor.to_owned(), is_admin, channel: channel.to_owned() }).await
    }

    async fn apply(&self, run_id: RunId, command: Command) -> Result<(), JobError> {
        self.writer.submit(ApplyCommand { run_id, command }).await
    }

    /// Revokes an active grant now (its run moves on to its revoke step).
    ///
    /// # Errors
    /// [`JobError`] when the grant is unknown or not active.
    pub async fn revoke_grant(&self, grant_id: GrantId, actor: &str, channel: &str) -> Result<(), JobError> {
        self.writer.submit(RevokeGrant { grant_id, actor: actor.to_owned(), channel: channel.to_owned() }).await
    }

    /// Hands the credential minted for grant `grant_id` to its holder `caller`, once: it is
    /// erased and audited (`grant_secret_retrieved`) in the transaction that answers. Anyone but
    /// the holder gets [`JobError::NotFound`], as for a grant that does not exist.
    ///
    /// # Errors
    /// [`JobError::NotFound`]; database failures.
    pub async fn retrieve_grant_secret(
        &self,
        grant_id: GrantId,
        caller: &str,
        channel: &str,
    ) -> Result<Retrieval, JobError> {
        self.writer.submit(RetrieveSecret { grant_id, caller: caller.to_owned(), channel: channel.to_owned() }).await
    }

    /// Confirms (or reports failure of) a manual task.
    ///
    /// # Errors
    /// [`JobError`] when the task is unknown, resolved, or the actor is not its operator.
    pub async fn resolve_task(
        &self,
        task_id: TaskId,
        actor: &str,
        is_admin: bool,
        done: bool,
        comment: Option<String>,
    ) -> Result<RunId, JobError> {
        self.writer.submit(ResolveTask { task_id, actor: actor.to_owned(), is_admin, done, comment }).await
    }

    /// Creates an API token for `principal` that expires `ttl` from now (never without one);
    /// returns the stored token and its secret, shown once. Only the hash is stored. Callers
    /// check the fields first ([`crate::token::check_new_token`]) and who may create
    /// ([`crate::policy::may_create_tokens`]).
    ///
    /// # Errors
    /// Database failures.
    pub async fn create_token(
        &self,
        principal: &str,
        label: &str,
        ttl: Option<Duration>,
        actor: &str,
        channel: &str,
    ) -> Result<(ApiToken, String), JobError> {
        let token = new_token();
        Ok((self.store_token(principal, label, &token, ttl, actor, channel).await?, token))
    }

    /// Registers a token chosen elsewhere (the bootstrap token), without expiry. Only its hash
    /// is stored.
    ///
    /// # Errors
    /// Database failures.
    pub async fn register_token(
        &self,
        principal: &str,
        label: &str,
        token: &str,
        actor: &str,
        channel: &str,
    ) -> Result<uuid::Uuid, JobError> {
        Ok(self.store_token(principal, label, token, None, actor, channel).await?.id)
    }

    /// Stores `token`'s hash (never the token) for `principal`, audited.
    async fn store_token(
        &self,
        principal: &str,
        label: &str,
        token: &str,
        ttl: Option<Duration>,
        actor: &str,
        channel: &str,
    ) -> Result<ApiToken, JobError> {
        let job = CreateToken {
            principal: principal.to_owned(),
            label: label.to_owned(),
            token_hash: hash_token(token),
            ttl,
            actor: actor.to_owned(),
            channel: channel.to_owned(),
        };
        self.writer.submit(job).await
    }

    /// Revokes token `token_id` for `caller` (an admin, or the token's own principal; anyone
    /// else is told it does not exist). Effective on the next request on every replica: tokens
    /// are looked up in the database on each request. Revoking a revoked token answers it as is.
    ///
    /// # Errors
    /// [`JobError::NotFound`] for a missing token or one the caller may not manage; database
    /// failures.
    pub async fn revoke_token(
        &self,
        token_id: uuid::Uuid,
        caller: &str,
        caller_roles: &[Role],
        channel: &str,
    ) -> Result<ApiToken, JobError> {
        let job = RevokeToken {
            token_id,
            caller: caller.to_owned(),
            caller_roles: caller_roles.to_vec(),
            channel: channel.to_owned(),
        };
        self.writer.submit(job).await
    }

    /// Records a use of `token` now, if one within [`crate::token::USE_GRANULARITY`] is not
    /// recorded yet. Never awaited by a request: it runs on its own task.
    pub fn record_token_use(self: &Arc<Self>, token: &ApiToken) {
        let now = self.shared.clock.now();
        if !token.use_worth_recording(now) {
            return;
        }
        let (engine, token_id) = (self.clone(), token.id);
        tokio::spawn(async move {
            if let Err(e) = engine.writer.submit_internal(TouchToken { token_id, at: now }).await {
                tracing::debug!(token.id = %token_id, error = %e, "token use not recorded");
            }
        });
    }

    /// Imports credentials into the inventory: `parsed`'s rows, checked against the directory
    /// and compared with what is stored, in one transaction — all of them, or, when any row is
    /// invalid (in `parsed.invalid` already or found so here), none. With `dry_run` nothing is
    /// stored either way. Callers check who may ([`crate::policy::may_manage_credentials`]).
    ///
    /// # Errors
    /// Database failures (invalid rows are in the report, not errors).
    pub async fn import_credentials(
        &self,
        parsed: crate::credential::ParsedFile,
        mode: crate::feature::credentials::ImportMode,
        dry_run: bool,
        actor: &str,
        channel: &str,
    ) -> Result<crate::credential::ImportReport, JobError> {
        let job = crate::feature::credentials::ImportCredentials {
            rows: parsed.rows,
            invalid: parsed.invalid,
            mode,
            dry_run,
            actor: actor.to_owned(),
            channel: channel.to_owned(),
        };
        self.writer.submit(job).await
    }

    /// Appends audit events that accompany no state change (configuration changes, …).
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit(&self, events: Vec<AuditEvent>) -> Result<(), JobError> {
        if events.is_empty() {
            return Ok(());
        }
        self.writer.submit(AppendAudit(events)).await
    }

    /// Stores newly seen workflow versions and directory changes, with their audit events.
    ///
    /// # Errors
    /// Database failures.
    pub async fn apply_sync(&self, plan: crate::config_sync::SyncPlan) -> Result<(), JobError> {
        if plan.events.is_empty() && plan.workflows.is_empty() && plan.directory.is_empty() {
            return Ok(());
        }
        self.writer.submit(ApplySync(plan)).await
    }

    /// Applies a new directory and workflow set (already checked by the caller: references,
    /// connector settings): plans and stores it in one transaction with its audit records —
    /// refused whole, and audited, when a definition changed under a pinned version — then
    /// installs it on this replica. Requests in flight keep their pinned workflow versions (the
    /// catalog keeps every version ever loaded). With `origin.announce`, the other replicas
    /// follow (see [`Engine::reload_mark`]).
    ///
    /// # Errors
    /// [`JobError::ConfigRefused`] (nothing applied), or database failures.
    pub async fn reload(
        &self,
        sources: Vec<crate::config_sync::WorkflowSource>,
        directory: crate::directory::Directory,
        connectors: BTreeMap<String, Arc<dyn Connector>>,
        origin: crate::config_sync::ReloadOrigin,
    ) -> Result<crate::config_sync::Reloaded, JobError> {
        let _one_at_a_time = self.reloading.lock().await;
        let job = crate::config_sync::Reload { sources, directory: directory.clone(), origin };
        let (catalog, reloaded) = self.writer.submit(job).await?;
        self.shared.install(crate::context::Live { catalog, directory });
        *self.connectors.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(connectors);
        Ok(reloaded)
    }

    /// When any replica last announced a reload ([`crate::config_sync::RELOAD_MARK`]); a replica
    /// that sees it move reloads its own configuration files.
    ///
    /// # Errors
    /// Database failures.
    pub async fn reload_mark(&self) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
        use sea_orm::EntityTrait as _;
        let row = crate::store::entity::schedule::Entity::find_by_id(crate::config_sync::RELOAD_MARK.to_owned())
            .one(&self.db.read)
            .await?;
        Ok(row.map(|r| r.last_tick))
    }

    /// Stops background tasks (in-flight calls are abandoned and resumed at next start).
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

/// A new random API token: `tg_` + 256 bits, URL-safe.
#[must_use]
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!("tg_{}", hex::encode(bytes))
}

/// How tokens are stored: SHA-256, hex. Tokens carry 256 random bits, so a fast hash is enough.
#[must_use]
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

pub use crate::delivery::backoff;

struct TimerService {
    db: Db,
    writer: WriterHandle,
    shared: Arc<Shared>,
    scan: Duration,
    /// How long past due another replica's timer waits before this one fires it.
    takeover: chrono::Duration,
    in_flight: Arc<Mutex<HashSet<crate::ids::TimerId>>>,
    health: Arc<Heartbeats>,
}

impl TimerService {
    /// Sleeps until the earliest due timer — woken early when a nearer one is committed — and
    /// fires every due timer through the writer's priority lane without waiting for the commits
    /// (firing deletes the timer row by compare-and-set, so a timer submitted twice fires once).
    /// A periodic scan (every scan interval) is the safety net for timers inserted by other
    /// replicas or whose firing failed, and takes over other replicas' timers once they are
    /// `takeover` overdue (so within takeover + scan interval of their due time).
    async fn run(self, mut wake: mpsc::UnboundedReceiver<DateTime<Utc>>, mut stop: watch::Receiver<bool>) {
        let mut next = Some(self.shared.clock.now());
        loop {
            self.health.beat(Loop::Timers);
            let now = self.shared.clock.now();
            let wait = next.map_or(self.scan, |t| (t - now).to_std().unwrap_or(Duration::ZERO).min(self.scan));
            tokio::select! {
                _ = stop.changed() => return,
                Some(t) = wake.recv() => {
                    next = Some(next.map_or(t, |n| n.min(t)));
                    continue;
                }
                () = tokio::time::sleep(wait) => {}
            }
            let now = self.shared.clock.now();
            let more = self.fire_due(now).await;
            next = if more { Some(now) } else { self.next_due(now).await };
        }
    }

    async fn next_due(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match query::next_timer_due(&self.db.read, after, &self.shared.node_id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot read timers");
                None
            }
        }
    }

    /// Submits every timer due at `now` that is not already being fired. Returns true when
    /// more may be due (a full page was read).
    async fn fire_due(&self, now: DateTime<Utc>) -> bool {
        const PAGE: u64 = 1000;
        let due = match query::due_timers(&self.db.read, now, &self.shared.node_id, self.takeover, PAGE).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read due timers");
                return false;
            }
        };
        let full = due.len() as u64 == PAGE;
        for t in due {
            if !self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(t.id) {
                continue;
            }
            let (writer, in_flight) = (self.writer.clone(), self.in_flight.clone());
            tokio::spawn(async move {
                let job = FireTimer { timer_id: t.id, run_id: t.run_id, kind: t.kind, step_index: t.step_index };
                if let Err(e) = writer.submit_internal(job).await {
                    tracing::warn!(run.id = %t.run_id, timer.kind = t.kind.as_str(), error = %e, "timer not applied");
                }
                in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&t.id);
            });
        }
        full
    }
}

/// The safety net for the one thing that must not fail: access that outlives its expiry. Finds
/// grants still active more than `grace` past their expiry and has the writer revoke each one
/// whose expiry timer is gone (checked again in the writer's transaction). Every find is
/// audited (`expiry_recovered`), logged as an alert and counted; in normal operation it finds
/// nothing.
struct ExpirySweep {
    db: Db,
    writer: WriterHandle,
    shared: Arc<Shared>,
    interval: Duration,
    grace: chrono::Duration,
    recovered: Arc<AtomicU64>,
}

impl ExpirySweep {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => self.sweep().await,
            }
        }
    }

    async fn sweep(&self) {
        const PAGE: u64 = 500;
        let Some(before) = self.shared.clock.now().checked_sub_signed(self.grace) else { return };
        let overdue = match query::overdue_grants(&self.db.read, before, PAGE).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot read overdue grants");
                return;
            }
        };
        for grant_id in overdue {
            match self.writer.submit_internal(RecoverExpiry { grant_id, grace: self.grace }).await {
                Ok(true) => {
                    let total = self.recovered.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::error!(
                        alert = true, grant.id = %grant_id, expiry_recoveries_total = total,
                        "expiry sweep recovered a grant whose expiry timer was lost"
                    );
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(grant.id = %grant_id, error = %e, "expiry sweep could not revoke a grant"),
            }
        }
    }
}

/// Destroys credentials minted for a grant's holder and not retrieved by their delivery
/// deadline ([`grant_secrets`]): sleeps until the earliest deadline (at most one scan interval,
/// so deadlines stored by other replicas or after a restart are found too) and has the writer
/// erase each one, checked again in its transaction (audited `grant_secret_expired`, once,
/// whichever replica gets there first).
struct SecretSweep {
    db: Db,
    writer: WriterHandle,
    shared: Arc<Shared>,
    scan: Duration,
}

impl SecretSweep {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        loop {
            let next = self.sweep().await;
            let now = self.shared.clock.now();
            let wait = next.map_or(self.scan, |t| (t - now).to_std().unwrap_or(Duration::ZERO).min(self.scan));
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            }
        }
    }

    /// Destroys what is overdue; answers the next deadline.
    async fn sweep(&self) -> Option<DateTime<Utc>> {
        const PAGE: u64 = 500;
        let now = self.shared.clock.now();
        let overdue = match grant_secrets::overdue(&self.db, now, PAGE).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot read minted secrets past their delivery deadline");
                return None;
            }
        };
        let mut full = overdue.len() as u64 == PAGE;
        for grant_id in overdue {
            if let Err(e) = self.writer.submit_internal(ExpireSecret { grant_id }).await {
                tracing::warn!(grant.id = %grant_id, error = %e, "cannot destroy an overdue minted secret");
            }
        }
        match grant_secrets::held_overdue(&self.db, now, PAGE).await {
            Ok(dead) => {
                full |= dead.len() as u64 == PAGE;
                for grant_id in dead {
                    if let Err(e) = self.writer.submit_internal(DiscardHeld { grant_id }).await {
                        tracing::warn!(grant.id = %grant_id, error = %e, "cannot erase the engine's copy of a dead credential");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the credentials the engine holds past their expiry"),
        }
        if full {
            return Some(now);
        }
        grant_secrets::next_deadline(&self.db).await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the next secret delivery deadline");
            None
        })
    }
}

/// Drift reconciliation on its cron schedule ([`reconcile`]): each replica watches the clock and
/// claims a due tick through the writer; the one whose claim moves the stored tick forward queues
/// the checks, the others find it claimed. Checks the clock every `scan` (so a controlled clock
/// works too), not by sleeping until the next firing.
struct Reconciler {
    writer: WriterHandle,
    shared: Arc<Shared>,
    schedule: CronSchedule,
    lookback: chrono::Duration,
    scan: Duration,
    /// The connectors; the integrations whose connector can verify are checked.
    connectors: Connectors,
}

impl Reconciler {
    async fn run(self, mut stop: watch::Receiver<bool>) {
        let started = self.shared.clock.now();
        let mut last = loop {
            match self.writer.submit_internal(reconcile::StartSchedule { now: started }).await {
                Ok(t) => break t,
                Err(e) => tracing::warn!(error = %e, "cannot read the reconciliation schedule; retrying"),
            }
            tokio::select! {
                _ = stop.changed() => return,
                () = tokio::time::sleep(self.scan) => {}
            }
        };
        let mut tick = tokio::time::interval(self.scan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                _ = tick.tick() => {}
            }
            let now = self.shared.clock.now();
            // After downtime, only the latest missed firing runs.
            let Some(due) = self.schedule.latest_due(last, now) else { continue };
            let integrations = snapshot(&self.connectors)
                .iter()
                // A connector that checks with the grant's credential (oauth2 introspection,
                // github_app) gets the engine's sealed copy, like any of its calls.
                .filter(|(_, c)| c.verifies())
                .map(|(name, _)| name.clone())
                .collect();
            let claim = reconcile::ClaimTick { tick: due, integrations, lookback: self.lookback };
            match self.writer.submit_internal(claim).await {
                Ok((stored, claimed)) => {
                    if let Some(checks) = claimed {
                        tracing::info!(tick = %due, checks, "drift reconciliation tick queued");
                    }
                    last = stored.max(due);
                }
                Err(e) => tracing::warn!(tick = %due, error = %e, "cannot claim a reconciliation tick; retrying"),
            }
        }
    }
}

struct Dispatcher {
    db: Db,
    writer: WriterHandle,
    shared: Arc<Shared>,
    connectors: Connectors,
    channels: BTreeMap<String, Arc<dyn NotificationChannel>>,
    in_flight: Mutex<HashSet<crate::ids::OutboxId>>,
    permits: Semaphore,
    settings: EngineSettings,
    health: Arc<Heartbeats>,
}

impl Dispatcher {
    /// Performs outbox items handed over by the writer after each commit, and — at start-up and
    /// then periodically — the pending items found in the database (recovery after a crash, or
    /// items of a replica whose lease expired).
    async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<OutboxWork>, mut stop: watch::Receiver<bool>) {
        self.scan(true).await;
        let mut tick = tokio::time::interval(self.settings.scan_interval);
        tick.tick().await;
        loop {
            self.health.beat(Loop::Dispatcher);
            tokio::select! {
                _ = stop.changed() => return,
                Some(work) = rx.recv() => {
                    let not_before = work.item.not_before.unwrap_or_else(|| self.shared.clock.now());
                    self.clone().launch(work, not_before);
                }
                _ = tick.tick() => self.scan(false).await,
            }
        }
    }

    /// Finds outbox work the in-memory hand-over does not cover. At start-up: every pending item
    /// of this replica (left by a crash; each waits for its own due time). Afterwards: items of
    /// other replicas whose lease expired, and items of ours stuck for a minute (lost in memory).
    /// Items handed over after a recent commit may still be queued in the channel, so recent
    /// items of ours are left alone — taking them here would deliver them twice.
    async fn scan(self: &Arc<Self>, startup: bool) {
        let now = self.shared.clock.now();
        let node = &self.shared.node_id;
        let due_by = (!startup).then_some(now);
        let pending = match query::pending_outbox(&self.db.read, node, now, due_by, 5000).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot scan the outbox");
                return;
            }
        };
        let stuck_before = now - chrono::Duration::seconds(60);
        for p in pending {
            if self.is_in_flight(p.id) {
                continue;
            }
            let ours = p.lease_owner.as_deref() == Some(node.as_str());
            if ours && !startup && p.next_attempt_at > stuck_before {
                continue;
            }
            if !ours {
                match self.writer.submit_internal(ClaimOutbox { outbox_id: p.id }).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim outbox item");
                        continue;
                    }
                }
            }
            let work = OutboxWork { id: p.id, run_id: p.run_id, attempts: p.attempts, item: p.item };
            self.clone().launch(work, p.next_attempt_at);
        }
    }

    fn is_in_flight(&self, id: crate::ids::OutboxId) -> bool {
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&id)
    }

    fn launch(self: Arc<Self>, work: OutboxWork, not_before: DateTime<Utc>) {
        if !self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(work.id) {
            return;
        }
        tokio::spawn(async move {
            let id = work.id;
            self.perform(work, not_before).await;
            self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&id);
        });
    }

    async fn sleep_until(&self, t: DateTime<Utc>) {
        if let Ok(d) = (t - self.shared.clock.now()).to_std() {
            tokio::time::sleep(d).await;
        }
    }

    async fn perform(&self, mut work: OutboxWork, not_before: DateTime<Utc>) {
        self.sleep_until(not_before).await;
        let retry = work.item.retry;
        let max = i32::try_from(retry.max_attempts).unwrap_or(i32::MAX);
        loop {
            let attempt = work.attempts + 1;
            let result = {
                let _permit = self.permits.acquire().await;
                self.call(&work, attempt).await
            };
            let now = self.shared.clock.now();
            let recorded = match (&work.item.payload, result) {
                (OutboxPayload::Action { action }, Ok(Called::Action(ActionOutcome::Done { reference, minted }))) => {
                    tracing::debug!(run.id = %work.run_id, operation = %action.operation, "connector call succeeded");
                    let reconcile = reconciling(&work);
                    let mints = matches!(action.operation, Operation::Grant | Operation::Renew | Operation::Rotate);
                    let hold =
                        snapshot(&self.connectors).get(&action.integration.name).is_some_and(|c| c.needs_credential());
                    let minted = minted.filter(|_| mints && reconcile.is_none()).map(|minted| MintedFor {
                        grant_id: GrantId(action.grant_id),
                        operation: action.operation,
                        minted,
                        deliver_within: chrono::Duration::from_std(self.settings.secret_delivery)
                            .unwrap_or(chrono::Duration::MAX),
                        hold,
                        keep_previous: action.keep_previous,
                    });
                    Recorded::Action(ActionResult {
                        outbox_id: work.id,
                        run_id: work.run_id,
                        completed_at: now,
                        result: Ok(reference),
                        keep_retrying_at: None,
                        attempts: attempt,
                        reconcile,
                        minted,
                    })
                }
                (
                    OutboxPayload::Action { .. },
                    Ok(Called::Action(ActionOutcome::AwaitingOperator { operator, instructions, remind_every })),
                ) => Recorded::Task(OpenTask {
                    outbox_id: work.id,
                    run_id: work.run_id,
                    operator,
                    instructions,
                    remind_every,
                }),
                (OutboxPayload::Action { .. }, Ok(Called::Notified)) => return, // a connector never answers "notified"
                (OutboxPayload::Notify { notification, channel }, Ok(_)) => {
                    Recorded::Notification(NotificationResult {
                        outbox_id: work.id,
                        run_id: work.run_id,
                        fallback: None,
                        event: notification_event(
                            work.run_id,
                            channel.as_deref().unwrap_or("?"),
                            notification,
                            true,
                            None,
                        ),
                        delivered: true,
                        attempts: attempt,
                    })
                }
                (payload, Err(err)) => {
                    let revoke = payload.operation() == Some(Operation::Revoke);
                    let (message, retry_after, permanent) = match &err {
                        ConnectorError::Retryable { message, retry_after } => (message.clone(), *retry_after, false),
                        ConnectorError::Permanent { message } => (message.clone(), None, true),
                    };
                    tracing::warn!(run.id = %work.run_id, attempt, kind = payload.kind(), error = %message, "side effect failed");
                    let slow = chrono::Duration::from_std(self.settings.revoke_retry_interval).unwrap_or_default();
                    let delay = match after_failure(attempt, max, permanent, revoke) {
                        AfterFailure::Backoff => Some(
                            chrono::Duration::from_std(backoff(
                                &retry,
                                u32::try_from(attempt).unwrap_or(u32::MAX),
                                retry_after,
                            ))
                            .unwrap_or_default(),
                        ),
                        AfterFailure::SlowRetry => Some(slow),
                        AfterFailure::GiveUp { .. } => None,
                    };
                    if let Some(delay) = delay {
                        let next = now + delay;
                        let job = AttemptFailed {
                            outbox_id: work.id,
                            attempts: attempt,
                            next_attempt_at: next,
                            error: message,
                        };
                        if self.writer.submit_internal(job).await.is_err() {
                            return;
                        }
                        work.attempts = attempt;
                        self.sleep_until(next).await;
                        continue;
                    }
                    match payload {
                        OutboxPayload::Action { .. } => {
                            // A revocation is never abandoned: access may still be in place.
                            let keep = revoke.then(|| now + slow);
                            let attempts = if revoke { max.max(attempt) } else { attempt };
                            Recorded::Action(ActionResult {
                                outbox_id: work.id,
                                run_id: work.run_id,
                                completed_at: now,
                                result: Err(message),
                                keep_retrying_at: keep,
                                attempts,
                                reconcile: reconciling(&work),
                                minted: None,
                            })
                        }
                        OutboxPayload::Notify { notification, channel } => {
                            tracing::error!(
                                alert = true, run.id = %work.run_id, channel = channel.as_deref().unwrap_or("?"),
                                event = %notification.event, attempt, error = %message,
                                "notification could not be delivered; giving up on this channel"
                            );
                            Recorded::Notification(NotificationResult {
                                outbox_id: work.id,
                                run_id: work.run_id,
                                fallback: self.fallback(&work, notification, channel.as_deref()),
                                event: notification_event(
                                    work.run_id,
                                    channel.as_deref().unwrap_or("?"),
                                    notification,
                                    false,
                                    Some(&message),
                                ),
                                delivered: false,
                                attempts: attempt,
                            })
                        }
                    }
                }
            };
            let next = match &recorded {
                Recorded::Action(ActionResult { keep_retrying_at: Some(t), attempts, .. }) => Some((*t, *attempts)),
                _ => None,
            };
            let done = match recorded {
                Recorded::Action(job) => self.writer.submit_internal(job).await,
                Recorded::Task(job) => self.writer.submit_internal(job).await,
                Recorded::Notification(job) => self.writer.submit_internal(job).await,
            };
            if let Err(e) = done {
                tracing::warn!(run.id = %work.run_id, error = %e, "could not record side-effect result");
                return;
            }
            let Some((t, attempts)) = next else { return };
            work.attempts = attempts;
            self.sleep_until(t).await;
        }
    }

    /// The email copy of a notification another channel failed to deliver, when email is
    /// configured and the notification was not routed to email already.
    fn fallback(
        &self,
        work: &OutboxWork,
        n: &crate::message::Notification,
        channel: Option<&str>,
    ) -> Option<Box<crate::effect::NewOutbox>> {
        let to = fallback_channel(channel, &n.route.channels, self.channels.contains_key("email"))?;
        let key = format!("{}:fallback:{to}", work.item.idempotency_key);
        let mut notification = n.clone();
        notification.idempotency_key.clone_from(&key);
        tracing::warn!(run.id = %work.run_id, event = %n.event, "falling back to {to}");
        Some(Box::new(crate::effect::NewOutbox {
            not_before: None,
            id: crate::ids::OutboxId::new(),
            idempotency_key: key,
            step_index: work.item.step_index,
            retry: work.item.retry,
            payload: OutboxPayload::Notify { notification, channel: Some(to.to_owned()) },
        }))
    }

    async fn call(&self, work: &OutboxWork, attempt: i32) -> Result<Called, ConnectorError> {
        let payload = &work.item.payload;
        match payload {
            OutboxPayload::Action { action } => {
                let Some(connector) = snapshot(&self.connectors).get(&action.integration.name).cloned() else {
                    return Err(ConnectorError::Permanent {
                        message: format!("no connector for integration {}", action.integration.name),
                    });
                };
                let mut action = action.clone();
                action.attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
                let outcome = if connector.needs_credential() {
                    let now = self.shared.clock.now();
                    let version = action.version.unwrap_or_default();
                    let sealing = self.shared.sealing.as_deref();
                    let held = grant_secrets::held(&self.db, sealing, GrantId(action.grant_id), version, now)
                        .await
                        .map_err(|e| match e {
                            grant_secrets::HeldError::Store(e) => ConnectorError::Retryable {
                                message: format!("cannot read the credential minted for the grant: {e}"),
                                retry_after: None,
                            },
                            grant_secrets::HeldError::Unreadable(message) => ConnectorError::Permanent { message },
                        })?;
                    match held {
                        // An expired credential no longer works: nothing to revoke, and it is absent.
                        Held::Expired
                            if action.operation == Operation::Revoke
                                || (action.operation == Operation::Verify && action.expect == Some(Expect::Absent)) =>
                        {
                            tracing::info!(
                                run.id = %work.run_id, grant.id = %action.grant_id, operation = %action.operation,
                                "the credential minted for the grant has expired; nothing to call"
                            );
                            ActionOutcome::Done { reference: Some("credential expired".to_owned()), minted: None }
                        }
                        Held::Credential(credential) => {
                            connector.execute_with_credential(&action, Some(&credential)).await?
                        }
                        Held::Expired | Held::Nothing => connector.execute_with_credential(&action, None).await?,
                    }
                } else {
                    connector.execute(&action).await?
                };
                let keeps = matches!(action.operation, Operation::Grant | Operation::Renew | Operation::Rotate)
                    && reconciling(work).is_none();
                if keeps
                    && matches!(&outcome, ActionOutcome::Done { minted: Some(_), .. })
                    && self.shared.sealing.is_none()
                {
                    // Never lose a minted credential silently, never keep it unsealed: the call
                    // is retried (same idempotency key) until a key is configured or the retry
                    // policy gives up.
                    tracing::error!(
                        alert = true, run.id = %work.run_id, integration = %action.integration.name,
                        "the connector minted a secret for the grant's holder but no [secrets] key is configured"
                    );
                    return Err(ConnectorError::Retryable {
                        message: "the connector minted a secret for the grant's holder, but no [secrets] key is \
                                  configured to keep it: configure [secrets] key"
                            .to_owned(),
                        retry_after: None,
                    });
                }
                Ok(Called::Action(outcome))
            }
            OutboxPayload::Notify { notification, channel } => {
                let Some(c) = channel.as_deref().and_then(|name| self.channels.get(name)) else {
                    let message = format!("notification channel {channel:?} is not configured");
                    return Err(ConnectorError::Permanent { message });
                };
                let ctx = EngineDelivery {
                    writer: &self.writer,
                    db: &self.db,
                    run_id: work.run_id,
                    step_index: work.item.step_index,
                };
                c.deliver(notification, &ctx).await.map(|()| Called::Notified)
            }
        }
    }
}

enum Called {
    Action(ActionOutcome),
    Notified,
}

/// What a performed outbox item records, through the writer.
enum Recorded {
    Action(ActionResult),
    Task(OpenTask),
    Notification(NotificationResult),
}

/// The engine as seen by a channel delivering one outbox item.
struct EngineDelivery<'a> {
    writer: &'a WriterHandle,
    db: &'a Db,
    run_id: RunId,
    step_index: u32,
}

#[async_trait::async_trait]
impl crate::notify::DeliveryContext for EngineDelivery<'_> {
    async fn approval_links(
        &self,
        principals: &[String],
    ) -> Result<Vec<Option<crate::links::IssuedLink>>, ConnectorError> {
        crate::links::issue(self.writer, self.run_id, self.step_index, principals).await.map_err(|e| {
            ConnectorError::Retryable { message: format!("cannot record approval links: {e}"), retry_after: None }
        })
    }

    async fn slack_messages(&self) -> Result<Vec<crate::message::SlackMessageRef>, ConnectorError> {
        query::slack_messages(&self.db.read, self.run_id).await.map_err(|e| ConnectorError::Retryable {
            message: format!("cannot read Slack messages: {e}"),
            retry_after: None,
        })
    }

    async fn record_slack_message(&self, m: &crate::message::SlackMessageRef) -> Result<(), ConnectorError> {
        let job = RecordSlackMessage {
            run_id: self.run_id,
            step_index: m.step_index,
            channel_id: m.channel_id.clone(),
            ts: m.ts.clone(),
            recipient: m.recipient.clone(),
        };
        self.writer.submit_internal(job).await.map(drop).map_err(|e| ConnectorError::Retryable {
            message: format!("cannot record a Slack message: {e}"),
            retry_after: None,
        })
    }
}

fn notification_event(
    run_id: RunId,
    channel: &str,
    n: &crate::message::Notification,
    delivered: bool,
    error: Option<&str>,
) -> AuditEvent {
    AuditEvent {
        event_type: if delivered { "notification_sent" } else { "notification_failed" }.to_owned(),
        channel: channel.to_owned(),
        outcome: if delivered { "success" } else { "failure" }.to_owned(),
        actor: "system".to_owned(),
        subject: format!("request:{run_id}"),
        run_id: Some(run_id.0),
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details: serde_json::json!({
            "event": n.event,
            "recipients": n.recipients.iter().map(|r| r.principal.as_str()).collect::<Vec<_>>(),
            "error": error,
        }),
    }
}

/// Builds one connector per integration.
///
/// # Errors
/// The first integration whose connector settings are invalid.
pub fn build_connectors(
    directory: &Directory,
    http: &reqwest::Client,
) -> Result<BTreeMap<String, Arc<dyn Connector>>, String> {
    let mut out = BTreeMap::new();
    for (name, integration) in &directory.integrations {
        let c = crate::connector::build(&integration.connector, http)
            .map_err(|e| format!("integrations.{name}.connector: {e}"))?;
        out.insert(name.clone(), c);
    }
    Ok(out)
}

/// The call of a reconciliation's outbox item (its result is recorded by the reconciliation, not
/// applied to a run's step).
fn reconciling(work: &OutboxWork) -> Option<Box<crate::action::ConnectorAction>> {
    match &work.item.payload {
        OutboxPayload::Action { action } if work.item.step_index == reconcile::RECONCILE_STEP => {
            Some(Box::new(action.clone()))
        }
        _ => None,
    }
}
