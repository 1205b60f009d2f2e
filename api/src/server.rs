//! Start-up: connect, migrate, load workflows and the directory, start the engine, serve.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use secrecy::ExposeSecret;
use tollgate_engine::clock::{Clock, SystemClock};
use tollgate_engine::config_sync::{self, WorkflowSource};
use tollgate_engine::notify::NotificationChannel;
use tollgate_engine::slack::{ResolvedSlack, SlackApi};
use tollgate_engine::store::{self, Db};
use tollgate_engine::{Engine, EngineSettings, Shared};
use tollgate_workflows::parse_definition;

use crate::config::Config;

/// Reads every workflow definition the configuration names: the bundled set, then `*.yaml` /
/// `*.yml` files of `workflows.dir` in name order.
///
/// # Errors
/// The first unreadable or invalid file, with its line, column and field.
pub fn workflow_sources(config: &Config) -> anyhow::Result<Vec<WorkflowSource>> {
    let mut out = Vec::new();
    if config.workflows.bundled {
        for (name, text) in tollgate_workflows::BUNDLED {
            let definition = parse_definition(&format!("bundled/{name}"), text)?;
            out.push(WorkflowSource { name: format!("bundled/{name}"), text: (*text).to_owned(), definition });
        }
    }
    if let Some(dir) = &config.workflows.dir {
        out.extend(read_dir(dir)?);
    }
    Ok(out)
}

/// Reads and validates the definitions in a file or directory (its `*.yaml` and `*.yml` entries,
/// in name order). Every file is read by [`tollgate_workflows::read_file`]: regular files only
/// (symbolic links followed), at most 256 KiB read.
///
/// # Errors
/// The first unreadable or invalid file, named.
pub fn read_dir(path: &Path) -> anyhow::Result<Vec<WorkflowSource>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in
            std::fs::read_dir(path).with_context(|| format!("workflows.dir: cannot read {}", path.display()))?
        {
            let p = entry.with_context(|| format!("workflows.dir: cannot read {}", path.display()))?.path();
            if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = tollgate_workflows::read_file(&f)?;
        let definition = parse_definition(&name, &text)?;
        out.push(WorkflowSource { name, text, definition });
    }
    Ok(out)
}

/// The Slack Web API client and the settings it was built from.
pub type Slack = (Arc<SlackApi>, ResolvedSlack);

/// Connects and migrates.
///
/// # Errors
/// When the database cannot be reached or migrated.
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let db = store::connect(&config.database.url, config.database.max_connections)
        .await
        .context("cannot open the database (database.url)")?;
    store::migrate(&db).await.context("database migration failed")?;
    Ok(db)
}

/// Fails at once, naming the address, when the database cannot be reached ([`store::probe`]):
/// called before the first connection of each command, so the pool never waits in silence.
///
/// # Errors
/// The address and why it could not be reached.
pub async fn probe_database(url: &str) -> anyhow::Result<()> {
    store::probe(url).await.map_err(|e| anyhow::anyhow!("{e} (database.url)"))
}

/// How long `serve` waits for an unreachable database before it gives up (a supervisor then
/// restarts it), saying so at every attempt.
const DATABASE_WAIT: Duration = Duration::from_secs(60);

/// Waits until the database answers ([`store::probe`]), logging each failed attempt with its
/// reason (once every 2 s) so an operator sees at once that the database is down, and why.
async fn wait_for_database(url: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + DATABASE_WAIT;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    for attempt in 1_u32.. {
        tick.tick().await;
        match store::probe(url).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(attempt, "{e}; retrying every 2 s for up to {} s", DATABASE_WAIT.as_secs());
            }
            Err(e) => anyhow::bail!("{e} (database.url); gave up after {} s", DATABASE_WAIT.as_secs()),
        }
    }
    Ok(())
}

/// For commands that read the database or add a row to it (`token`, `audit`): refuses a
/// database that does not exist or holds no Tollgate schema, instead of creating an empty one
/// and answering from it (a command run from another directory would otherwise find no tokens
/// and a valid, empty audit chain). Prints which database it uses, without its password.
///
/// # Errors
/// A SQLite file that does not exist, an unreachable database, or one without the schema.
pub async fn require_existing_db(config: &Config) -> anyhow::Result<()> {
    let url = &config.database.url;
    crate::cli::eprintln_err(&format!("database: {}", redact_url(url)));
    let hint = "point database.url (TOLLGATE_DATABASE__URL, or --config) at the server's database, \
                or run `tollgate migrate` to create a new one";
    if let Some(file) = store::sqlite_file(url) {
        anyhow::ensure!(file.is_file(), "database file {} does not exist: {hint}", file.display());
    }
    probe_database(url).await?;
    let db = store::connect(url, 1).await.context("cannot open the database (database.url)")?;
    let has_schema = store::has_schema(&db).await;
    drop(db);
    anyhow::ensure!(has_schema?, "the database {} holds no Tollgate schema: {hint}", redact_url(url));
    Ok(())
}

/// Builds an engine from the configuration. With `workers` false only the writer runs (for CLI
/// commands that write, such as `token create`, so they never perform side effects).
///
/// A directory entry naming a principal that does not exist is refused; a workflow naming a
/// group or principal that does not exist is only logged as a warning here (so that operator
/// commands and embedders keep working while it is fixed): `serve` refuses it
/// ([`check_references`]).
///
/// # Errors
/// Invalid configuration or database failures.
pub async fn build_engine(
    config: &Config,
    clock: Arc<dyn Clock>,
    workers: bool,
    slack: Option<&Slack>,
) -> anyhow::Result<Arc<Engine>> {
    build_engine_with(config, clock, workers, slack, References::WarnForWorkflows).await
}

/// What a dangling name in a workflow definition does at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum References {
    /// Refused, with every other dangling name (`serve`).
    Refuse,
    /// Logged as a warning (operator commands); the directory's own are still refused.
    WarnForWorkflows,
}

async fn build_engine_with(
    config: &Config,
    clock: Arc<dyn Clock>,
    workers: bool,
    slack: Option<&Slack>,
    references: References,
) -> anyhow::Result<Arc<Engine>> {
    // Replicas starting together must not migrate or sync the configuration concurrently.
    let lock =
        store::StartupLock::acquire(&config.database.url).await.context("cannot open the database (database.url)")?;
    let built = build_engine_locked(config, clock, workers, slack, references).await;
    lock.release().await;
    built
}

/// Checks every name the directory and the workflows refer to ([`config_sync::check_references`])
/// before anything is stored: the directory's own entries, every definition read from files and
/// the latest version of every key (what new requests use) are errors; older stored versions,
/// which only requests already running on them use, are logged as warnings.
///
/// # Errors
/// Every dangling name found (with [`References::WarnForWorkflows`], those of the directory's own
/// entries only), one per line, each naming its file and field.
pub fn check_references(
    config: &Config,
    catalog: &tollgate_workflows::Catalog,
    sources: &[WorkflowSource],
    directory: &tollgate_engine::directory::Directory,
    references: References,
) -> anyhow::Result<()> {
    let check = config_sync::check_references(catalog, sources, directory);
    for warning in config.reference_errors(&check.warnings) {
        tracing::warn!("{warning} (an older version, used only by requests already running on it)");
    }
    let (fatal, tolerated): (Vec<_>, Vec<_>) =
        check.errors.into_iter().partition(|e| references == References::Refuse || e.workflow.is_none());
    for warning in config.reference_errors(&tolerated) {
        tracing::warn!("{warning}");
    }
    if !fatal.is_empty() {
        let lines = config.reference_errors(&fatal);
        anyhow::bail!(
            "invalid configuration: {} reference(s) to groups or principals the directory does not define:\n  {}",
            lines.len(),
            lines.join("\n  ")
        );
    }
    Ok(())
}

/// `tollgate workflows validate --config FILE`: every group and principal that `sources` and the
/// directory of the configuration `file` name but that directory does not define, one line each
/// naming its file and field (empty when there is none). The configuration is loaded as `serve`
/// loads it (environment variables included); the database is not opened.
///
/// # Errors
/// The configuration does not load, or its directory has an invalid entry.
pub fn dangling_references(file: &Path, sources: &[WorkflowSource]) -> anyhow::Result<Vec<String>> {
    let config = crate::config::load(Some(file), &[])?;
    let directory = config.directory_unresolved()?;
    let workflows = sources.iter().map(|s| tollgate_engine::directory::WorkflowSourceRef {
        source: &s.name,
        text: Some(&s.text),
        definition: &s.definition,
    });
    Ok(directory.check_references(workflows).err().map(|e| config.reference_errors(&e)).unwrap_or_default())
}

async fn build_engine_locked(
    config: &Config,
    clock: Arc<dyn Clock>,
    workers: bool,
    slack: Option<&Slack>,
    references: References,
) -> anyhow::Result<Arc<Engine>> {
    let db = open_db(config).await?;
    let directory = config.directory_unresolved()?;
    let sources = workflow_sources(config)?;
    let (catalog, plan) = config_sync::plan(&db.read, &sources, &directory).await?;
    check_references(config, &catalog, &sources, &directory, references)?;
    let http = tollgate_engine::http::client(Duration::from_secs(30)).context("cannot build the HTTP client")?;
    let connectors = tollgate_engine::runtime::build_connectors(&directory, &http)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    // Every notification goes to every configured channel (none configured: the log).
    let mut channels: Vec<Arc<dyn NotificationChannel>> = Vec::new();
    if config.email.enabled {
        let email = tollgate_engine::notify::email::EmailChannel::new(&config.email).context("email")?;
        channels.push(Arc::new(email.with_public_url(&config.public_url())));
    }
    if let Some((api, settings)) = slack {
        channels.push(Arc::new(tollgate_engine::slack::SlackChannel::new(api.clone(), settings)));
    }
    if let Some(w) = &config.notifications.webhook {
        channels.push(Arc::new(
            tollgate_engine::notify::webhook::WebhookChannel::new(w, &http).context("notifications.webhook")?,
        ));
    }
    let settings = EngineSettings {
        node_id: config.node_id(),
        lease: Duration::from_secs(config.engine.lease_secs),
        dispatch_concurrency: config.engine.dispatch_concurrency,
        revoke_retry_interval: Duration::from_secs(config.engine.revoke_retry_secs),
        expiry_sweep_interval: Duration::from_secs(config.engine.expiry_sweep_secs.max(1)),
        expiry_grace: Duration::from_secs(config.engine.expiry_grace_secs),
        timer_takeover: Duration::from_secs(config.engine.timer_takeover_secs),
        stall_bound: Duration::from_secs(config.engine.stall_bound_secs.max(1)),
        reconcile_schedule: config.engine.reconcile_schedule()?,
        reconcile_lookback: Duration::from_secs(config.engine.reconcile_lookback_days.min(3660).saturating_mul(86_400)),
        secret_delivery: Duration::from_secs(config.engine.secret_delivery_secs),
        ..EngineSettings::default()
    };
    let shared = Shared {
        live: tollgate_engine::context::LiveCell::new(catalog, directory),
        clock,
        node_id: settings.node_id.clone(),
        lease: chrono::Duration::from_std(settings.lease).unwrap_or_default(),
        channels: Vec::new(),
        expiry_warning: config.notifications.expiry_warning()?,
        sealing: config.sealing_key()?.map(Arc::new),
    };
    let engine = if workers {
        Engine::start(db, shared, connectors, channels, settings).await?
    } else {
        Engine::start_writer_only(db, shared).await?
    };
    // Only the server stores the configuration: an operator command (`token create`) run after
    // the files were edited must not apply the edit behind the running servers' back (they would
    // then find nothing to reload, and keep running the old configuration).
    if workers {
        engine.apply_sync(plan).await?;
        bootstrap(config, &engine).await?;
    }
    Ok(Arc::new(engine))
}

/// Registers the configured bootstrap admin token on first start (when no token exists).
async fn bootstrap(config: &Config, engine: &Engine) -> anyhow::Result<()> {
    let (Some(principal), Some(token)) = (&config.bootstrap.admin_principal, &config.bootstrap.admin_token) else {
        return Ok(());
    };
    if store::query::any_token(&engine.db().read).await? {
        return Ok(());
    }
    let token = token.expose_secret();
    anyhow::ensure!(token.len() >= 32, "bootstrap.admin_token: must be at least 32 characters");
    engine.register_token(principal, "bootstrap", token, "system", "config").await?;
    tracing::info!(principal = %principal, "bootstrap admin token registered");
    Ok(())
}

/// Runs the server until SIGINT/SIGTERM; `SIGHUP` reloads the directory and workflows
/// ([`crate::reload`]). `overrides` are the command-line settings `config` was loaded with
/// (a reload loads the files with them again).
///
/// # Errors
/// Start-up failures.
pub async fn serve(config: Config, overrides: Vec<(&'static str, String)>) -> anyhow::Result<()> {
    // One Slack client serves both the notification channel and the interactivity endpoints.
    let slack = match config.slack()? {
        Some(settings) => Some((Arc::new(SlackApi::new(&settings).context("slack")?), settings)),
        None => None,
    };
    wait_for_database(&config.database.url).await?;
    let engine = build_engine_with(&config, Arc::new(SystemClock), true, slack.as_ref(), References::Refuse).await?;
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, database = %redact_url(&config.database.url), "tollgate listening");
    // Directory and workflow changes without a restart: SIGHUP, the admin API, other replicas.
    let reloader = Arc::new(crate::reload::Reloader::new(engine.clone(), config.file.clone(), overrides).await?);
    let (stop_reloads, reloads_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::reload::on_hangup(reloader.clone(), reloads_stopped.clone()));
    tokio::spawn(reloader.clone().follow(reloads_stopped));
    let app = crate::app::serving(
        engine.clone(),
        config.http.max_body_bytes,
        &config.public_url(),
        slack.as_ref(),
        config.http.trusted_proxies()?,
        Some(reloader),
    );
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // If an engine loop ends on its own, the engine cannot go on: stop serving and exit non-zero
    // so that a supervisor restarts the process, rather than answer 503 to every write forever.
    let failed = engine.clone();
    let stop = async move {
        tokio::select! {
            () = shutdown_signal() => None,
            reason = failed.failed() => Some(reason),
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let stop = async move {
        let _ = stop_tx.send(stop.await);
    };
    axum::serve(listener, app).with_graceful_shutdown(stop).await?;
    let _ = stop_reloads.send(true);
    engine.shutdown().await;
    match stop_rx.await {
        Ok(Some(reason)) => anyhow::bail!("the engine stopped: {reason}"),
        _ => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

/// A database URL without its password (in the user part or a `password=` parameter), for
/// logs and messages.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    };
    match url.split_once('?') {
        Some((head, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_owned(),
                })
                .collect();
            format!("{head}?{}", params.join("&"))
        }
        None => url,
    }
}
