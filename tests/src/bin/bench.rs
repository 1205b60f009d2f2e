//! `tollgate-bench`: drives full grant lifecycles through a real `tollgate` server over its HTTP
//! API and reports throughput, latencies, timer accuracy and the server's peak memory.
//!
//! One lifecycle: the requester creates a request → the approval notification reaches the local
//! receiver → the approver posts the decision → the grant call reaches the receiver → the grant
//! expires after `--ttl` seconds → the revoke call reaches the receiver. The benchmark owns the
//! whole set-up (config, workflow, database, server process, tokens, receiver) and tears it down,
//! so it measures the shipped program, not a test double. All traffic stays on 127.0.0.1.
//!
//! With `--replicas R` (PostgreSQL only) it starts R servers on the same database, creates each
//! request on one replica and decides it on the next (issue 17: expiry timers must survive a
//! request being decided on another replica than the one that created it), and accounts for
//! every lifecycle: completed, lost (granted, never revoked) or never granted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use clap::Parser;
use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait as _, Database, DatabaseConnection};
use serde::Deserialize;
use tokio::sync::Notify;
use tollgate_engine::clock::{Clock as _, SystemClock};
use tollgate_engine::signing;
use uuid::Uuid;

/// Drive N full grant lifecycles (request → approval → grant → expiry → revoke) through a
/// freshly started tollgate server and report throughput, latencies and peak memory.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench", version)]
struct Args {
    /// Lifecycles to drive.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    requests: u64,
    /// Lifecycles in flight at once (concurrent API clients).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Grant duration in seconds: each grant is revoked this long after it was put in place.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    ttl: u64,
    /// Database. Default: a SQLite file in a temporary directory. With postgres://…/db, a fresh,
    /// uniquely named database is created on that server and dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// The tollgate program to start. Default: tollgate-server next to this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Server database pool size (`[database] max_connections`).
    #[arg(long, default_value_t = 8)]
    max_connections: u32,
    /// Server processes on the same database (PostgreSQL only when more than 1). Lifecycle i is
    /// created on replica i % R and decided on replica (i + 1) % R.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    replicas: u64,
    /// Server log level (`[log] level`); the log goes to server.log in the temporary directory
    /// (server-r0.log, server-r1.log, … with several replicas).
    #[arg(long, default_value = "info")]
    server_log_level: String,
    /// Seconds to wait for outstanding revocations after the last decision, beyond the TTL. A
    /// granted lifecycle whose revoke call has not arrived by then (plus 0.5 s) counts as lost.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// Keep the temporary directory (config, workflow, SQLite database, server log) and print its
    /// path. It is always kept when the run fails.
    #[arg(long)]
    keep: bool,
    /// Before the server starts, fill the timer table with this many pending timers due a week
    /// later (of runs that do not exist), to measure memory and timer accuracy with a large
    /// backlog of armed timers.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
    preload_timers: u64,
}

const INTEGRATION: &str = "bench-app";
const SCOPE: &str = "read";
/// How long a worker waits for a request's approval notification before giving up on it.
const APPROVAL_WAIT: Duration = Duration::from_secs(60);
/// How long the server gets to become ready.
const STARTUP_WAIT: Duration = Duration::from_secs(60);
/// After the last revoke, how long to keep listening for stray duplicate calls.
const SETTLE: Duration = Duration::from_millis(500);
/// A revoke this much earlier than grant arrival + TTL is a failure (the server's timers run on
/// the wall clock, the benchmark measures on the monotonic one).
const EARLY_TOLERANCE_US: i64 = 50_000;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            err(&format!("error: cannot start the runtime: {e}"));
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            err(&format!("error: {e:#}"));
            ExitCode::from(2)
        }
    }
}

/// Writes a line to standard output (the report).
fn out(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

/// Writes a line to standard error (progress and diagnostics).
fn err(s: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{s}");
}

/// Sets up, runs, tears down; returns whether every check passed.
async fn run(args: Args) -> anyhow::Result<bool> {
    if args.replicas > 1 {
        let url = args.database_url.as_deref().unwrap_or_default();
        ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--replicas {} needs PostgreSQL (--database-url postgres://…): replicas share one database, and SQLite \
             (the default) serves a single process",
            args.replicas
        );
    }
    let server_bin = match &args.server_bin {
        Some(p) => p.clone(),
        None => {
            std::env::current_exe()?.parent().context("the bench executable has no directory")?.join("tollgate-server")
        }
    };
    ensure!(server_bin.is_file(), "server binary {} not found (build it, or pass --server-bin)", server_bin.display());
    let dir = tempfile::Builder::new().prefix("tollgate-bench-").tempdir()?;

    let database = BenchDb::create(args.database_url.as_deref(), dir.path()).await?;
    // On Ctrl-C the drive future is dropped, which kills the server (`Server`'s `Drop`); the
    // database is still dropped below.
    let result = tokio::select! {
        r = drive(&args, &server_bin, dir.path(), &database.url, database.backend) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    database.drop_if_created().await;

    let passed = match result {
        Ok(passed) => passed,
        Err(e) => {
            err(&format!("temporary directory kept: {}", dir.keep().display()));
            return Err(e);
        }
    };
    if args.keep || !passed {
        err(&format!("temporary directory kept: {}", dir.keep().display()));
    }
    Ok(passed)
}

/// The database the server uses, and whether the benchmark must drop it afterwards.
struct BenchDb {
    url: String,
    backend: &'static str,
    /// For PostgreSQL: a connection to the database named on the command line, and the
    /// benchmark database created through it.
    created: Option<(DatabaseConnection, String)>,
}

impl BenchDb {
    async fn create(url: Option<&str>, dir: &Path) -> anyhow::Result<Self> {
        let Some(url) = url else {
            let path = dir.join("tollgate.db");
            let url = format!("sqlite://{}?mode=rwc", path.display());
            return Ok(Self { url, backend: "sqlite", created: None });
        };
        if url.starts_with("sqlite:") {
            return Ok(Self { url: url.to_owned(), backend: "sqlite", created: None });
        }
        ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--database-url must start with sqlite: or postgres://"
        );
        let admin = Database::connect(url).await.context("cannot connect to --database-url")?;
        let name = format!("tollgate_bench_{}", Uuid::new_v4().simple());
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.context("CREATE DATABASE")?;
        let mut parsed = reqwest::Url::parse(url).context("--database-url is not a URL")?;
        parsed.set_path(&format!("/{name}"));
        err(&format!("created database {name}"));
        Ok(Self { url: parsed.to_string(), backend: "postgres", created: Some((admin, name)) })
    }

    async fn drop_if_created(self) {
        if let Some((admin, name)) = self.created {
            // FORCE (PostgreSQL 13+): the killed server's connections may still be closing.
            match admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await {
                Ok(_) => err(&format!("dropped database {name}")),
                Err(e) => err(&format!("warning: cannot drop database {name}: {e}")),
            }
            let _ = admin.close().await;
        }
    }
}

/// Everything after the database exists: receiver, servers, tokens, load, report.
async fn drive(
    args: &Args,
    server_bin: &Path,
    dir: &Path,
    database_url: &str,
    backend: &'static str,
) -> anyhow::Result<bool> {
    let connector_secret = format!("whsec_bench_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let notify_secret = format!("whsec_bench_{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());

    let receiver = Arc::new(Receiver::new(connector_secret.as_bytes(), notify_secret.as_bytes()));
    let rx_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let rx_port = rx_listener.local_addr()?.port();
    let app = Router::new()
        .route("/connector", post(connector_call))
        .route("/notify", post(notification))
        .with_state(receiver.clone());
    let rx_task = tokio::spawn(async move {
        let _ = axum::serve(rx_listener, app).await;
    });

    let workflows = write_workflow(dir, args)?;
    let count = usize::try_from(args.replicas)?;
    let mut ports: Vec<u16> = Vec::with_capacity(count);
    let mut replicas: Vec<Replica> = Vec::with_capacity(count);
    for r in 0..count {
        // One replica keeps the single-server names (node "bench", tollgate.toml, server.log).
        let (node, suffix) =
            if count == 1 { ("bench".to_owned(), String::new()) } else { (format!("r{r}"), format!("-r{r}")) };
        let port = distinct_free_port(&ports)?;
        ports.push(port);
        let config = ConfigParams {
            node: &node,
            api_port: port,
            rx_port,
            database_url,
            workflows: &workflows,
            connector_secret: &connector_secret,
            notify_secret: &notify_secret,
        };
        let config = write_config(dir, args, &config, &format!("tollgate{suffix}.toml"))?;
        replicas.push(Replica {
            base: format!("http://127.0.0.1:{port}"),
            log: dir.join(format!("server{suffix}.log")),
            node,
            port,
            config,
        });
    }
    let http = tollgate_engine::http::client(Duration::from_secs(60)).context("HTTP client")?;

    let mut servers: Vec<Server> = Vec::with_capacity(count);
    let outcome = async {
        if args.preload_timers > 0 {
            preload_timers(database_url, args.preload_timers).await?;
        }
        // The first replica migrates the database; the others join it once it is ready.
        servers.push(Server::start(server_bin, &replicas[0])?);
        servers[0].wait_ready(&http).await?;
        // The token table is shared: tokens created once are valid on every replica.
        let requester = create_token(server_bin, &replicas[0].config, "requester")?;
        let approver = create_token(server_bin, &replicas[0].config, "approver")?;
        for replica in &replicas[1..] {
            servers.push(Server::start(server_bin, replica)?);
        }
        for server in &mut servers[1..] {
            server.wait_ready(&http).await?;
        }
        err(&format!(
            "driving {} lifecycles, concurrency {}, ttl {} s, backend {backend}, replicas {count}",
            args.requests, args.concurrency, args.ttl
        ));
        let bases = replicas.iter().map(|r| r.base.clone()).collect();
        let load = Arc::new(Load { http: http.clone(), bases, requester, approver, ttl: args.ttl });
        let report = drive_load(args, load, &receiver).await;
        let usage = RunUsage {
            replicas: servers.iter_mut().map(Server::usage).collect(),
            bench_cpu_secs: cpu_secs("/proc/self/stat"),
        };
        Ok::<_, anyhow::Error>((report, usage))
    }
    .await;
    for server in &mut servers {
        server.stop();
    }
    drop(servers);
    rx_task.abort();
    let tails = || {
        for r in &replicas {
            err(&log_tail(&r.log, 30));
        }
    };
    let (report, usage) = match outcome {
        Ok(v) => v,
        Err(e) => {
            tails();
            return Err(e);
        }
    };

    let logs = LogCounts::scan(&replicas, &args.server_log_level);
    let summary = Summary::compute(args, backend, &replicas, &report, &receiver, &RunObserved { usage, logs });
    summary.print();
    if !summary.passed {
        tails();
    }
    Ok(summary.passed)
}

/// Migrates the database and inserts `n` pending timers due in a week, owned by no replica.
async fn preload_timers(database_url: &str, n: u64) -> anyhow::Result<()> {
    use sea_orm::ActiveValue::Set;
    use sea_orm::{EntityTrait as _, TransactionTrait as _};
    use tollgate_engine::store::{self, entity::timer};

    let started = Instant::now();
    let db = store::connect(database_url, 2).await?;
    store::migrate(&db).await?;
    drop(db);
    let conn = Database::connect(database_url).await?;
    let due = SystemClock.now() + chrono::Duration::days(7);
    let mut left = n;
    while left > 0 {
        let tx = conn.begin().await?;
        for _ in 0..100 {
            let take = left.min(500);
            if take == 0 {
                break;
            }
            left -= take;
            let rows = (0..take).map(|i| timer::ActiveModel {
                id: Set(Uuid::now_v7()),
                run_id: Set(Uuid::now_v7()),
                kind: Set("wait".to_owned()),
                step_index: Set(0),
                due_at: Set(due + chrono::Duration::milliseconds(i64::try_from(i).unwrap_or(0))),
                owner: Set(None),
            });
            timer::Entity::insert_many(rows).exec(&tx).await?;
        }
        tx.commit().await?;
    }
    err(&format!("preloaded {n} pending timers in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// One server process of the run: its node id, port, configuration and log.
struct Replica {
    node: String,
    port: u16,
    base: String,
    config: PathBuf,
    log: PathBuf,
}

/// A port that was free a moment ago (the server binds it itself).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A free port not among `taken` (the ports handed to the other replicas, already released).
fn distinct_free_port(taken: &[u16]) -> anyhow::Result<u16> {
    for _ in 0..20 {
        let port = free_port()?;
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    bail!("no free port distinct from {taken:?} after 20 attempts")
}

/// A TOML basic string (JSON string escapes are valid TOML).
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Writes the workflow (shared by every replica); returns the workflow directory.
fn write_workflow(dir: &Path, args: &Args) -> anyhow::Result<PathBuf> {
    let workflows = dir.join("workflows");
    std::fs::create_dir_all(&workflows)?;
    let ttl = args.ttl;
    let max = ttl.max(8 * 3600);
    let workflow = format!(
        r"# The benchmark's grant workflow: one approval, grant, wait for expiry, revoke.
key: bench-grant
version: 1
kind: grant
description: Benchmark lifecycle.
applies_to:
  integrations: [{INTEGRATION}]
parameters:
  default_duration: {ttl}s
  max_duration: {max}s
  require_justification: true
steps:
  - approval:
      id: approve
      approvers:
        groups: [approvers]
      quorum: 1
      timeout: 24h
  - action:
      id: grant
      operation: grant
      retry:
        max_attempts: 5
        backoff: 1s
        max_backoff: 30s
  - wait:
      id: until-expiry
      until: expiry
  - action:
      id: revoke
      operation: revoke
      retry:
        max_attempts: 10
        backoff: 1s
        max_backoff: 30s
"
    );
    std::fs::write(workflows.join("bench-grant.yaml"), workflow)?;
    Ok(workflows)
}

/// What differs between, or is generated for, one replica's configuration.
struct ConfigParams<'a> {
    node: &'a str,
    api_port: u16,
    rx_port: u16,
    database_url: &'a str,
    workflows: &'a Path,
    connector_secret: &'a str,
    notify_secret: &'a str,
}

/// Writes one replica's server configuration as `file_name` in `dir`; returns its path.
fn write_config(dir: &Path, args: &Args, p: &ConfigParams<'_>, file_name: &str) -> anyhow::Result<PathBuf> {
    let (api_port, rx_port) = (p.api_port, p.rx_port);
    let config = format!(
        r#"# Written by tollgate-bench.
listen = "127.0.0.1:{api_port}"
node_id = {node}

[database]
url = {db}
max_connections = {pool}

[workflows]
bundled = false
dir = {wf}

[log]
format = "text"
level = {level}

[engine]
dispatch_concurrency = 256
reconcile_schedule = "off"

[email]
enabled = false

[notifications.webhook]
url = "http://127.0.0.1:{rx_port}/notify"
secret = {notify}
timeout = "10s"

[principals.requester]
name = "Bench Requester"
email = "requester@bench.invalid"

[principals.approver]
name = "Bench Approver"
email = "approver@bench.invalid"

[principals.owner]
name = "Bench Owner"
email = "owner@bench.invalid"

[groups.approvers]
description = "Approve benchmark requests"
members = ["approver"]

[integrations.{INTEGRATION}]
app = "benchsaas"
environment = "production"
owner = "owner"
description = "Benchmark integration (local webhook receiver)"
scopes = [{{ name = "{SCOPE}", risk = "medium" }}]
connector = {{ type = "webhook", url = "http://127.0.0.1:{rx_port}/connector", secret = {connector}, timeout = "10s" }}
"#,
        node = toml_str(p.node),
        db = toml_str(p.database_url),
        pool = args.max_connections,
        wf = toml_str(&p.workflows.display().to_string()),
        level = toml_str(&args.server_log_level),
        notify = toml_str(p.notify_secret),
        connector = toml_str(p.connector_secret),
    );
    let path = dir.join(file_name);
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Applies the benchmark's environment to a `tollgate` command: no `TOLLGATE_*` or `RUST_LOG`
/// from the caller's shell may change the configuration under test.
fn hermetic(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("TOLLGATE_") || k == "RUST_LOG") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// `tollgate token create`, which prints the token on standard output.
fn create_token(server_bin: &Path, config: &Path, principal: &str) -> anyhow::Result<String> {
    let output = hermetic(Command::new(server_bin).args(["token", "create", "--principal", principal, "--config"]))
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", server_bin.display()))?;
    ensure!(
        output.status.success(),
        "token create --principal {principal} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let stdout = String::from_utf8(output.stdout)?;
    let token = stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default().to_owned();
    ensure!(!token.is_empty(), "token create --principal {principal} printed no token");
    Ok(token)
}

/// A server child process.
struct Server {
    child: Child,
    node: String,
    base: String,
}

/// CPU and memory use of one server, read from /proc just before it is stopped.
#[derive(Debug, Default, Clone)]
struct Usage {
    node: String,
    peak_rss_kib: Option<u64>,
    rss_kib: Option<u64>,
    cpu_secs: Option<f64>,
    /// Set when the server had already exited (its exit status).
    exited: Option<String>,
}

/// Resource use of the whole run: every replica, and the benchmark itself.
struct RunUsage {
    replicas: Vec<Usage>,
    bench_cpu_secs: Option<f64>,
}

impl RunUsage {
    /// Summed over the replicas; `None` if any replica's figure is missing.
    fn peak_rss_kib(&self) -> Option<u64> {
        self.replicas.iter().map(|u| u.peak_rss_kib).sum()
    }

    fn rss_kib(&self) -> Option<u64> {
        self.replicas.iter().map(|u| u.rss_kib).sum()
    }

    fn cpu_secs(&self) -> Option<f64> {
        self.replicas.iter().map(|u| u.cpu_secs).sum::<Option<f64>>().map(round2)
    }
}

impl Server {
    fn start(bin: &Path, replica: &Replica) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(&replica.log)?;
        let child = hermetic(Command::new(bin).args(["serve", "--config"]))
            .arg(&replica.config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        if replica.node == "bench" {
            err(&format!("server started (pid {})", child.id()));
        } else {
            err(&format!("server {} started (pid {}, port {})", replica.node, child.id(), replica.port));
        }
        Ok(Self { child, node: replica.node.clone(), base: replica.base.clone() })
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + STARTUP_WAIT;
        let node = &self.node;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server ({node}) exited during start-up ({status})");
            }
            let ready = http.get(format!("{}/readyz", self.base)).timeout(Duration::from_secs(2)).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the server ({node}) was not ready within {STARTUP_WAIT:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn usage(&mut self) -> Usage {
        let exited = match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        };
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |field: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Usage {
            node: self.node.clone(),
            peak_rss_kib: kib("VmHWM:"),
            rss_kib: kib("VmRSS:"),
            cpu_secs: cpu_secs(&format!("/proc/{pid}/stat")),
            exited,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// User + system CPU seconds of a process (`utime` and `stime` of /proc/<pid>/stat, in clock
/// ticks of 1/100 s, the value of `CLK_TCK` on Linux).
fn cpu_secs(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name, which is parenthesised and may contain spaces; the first of
    // them is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- last {lines} lines of {} ---\n{tail}", path.display())
}

/// Database conflicts seen in the server logs, counted after the servers stopped.
struct LogCounts {
    /// Lines containing "deadlock detected" (PostgreSQL's text for SQLSTATE 40P01).
    deadlocks: u64,
    /// Lines containing "could not serialize" (SQLSTATE 40001).
    serialization_failures: u64,
    /// The writer's "batch aborted; replaying its jobs one by one" warnings (any database error).
    batch_aborted: u64,
    /// Whether the log level lets the writer's warnings (which carry the database error) through.
    warnings_logged: bool,
}

impl LogCounts {
    fn scan(replicas: &[Replica], level: &str) -> Self {
        use std::io::BufRead as _;
        let level = level.trim().to_ascii_lowercase();
        let mut counts = Self {
            deadlocks: 0,
            serialization_failures: 0,
            batch_aborted: 0,
            warnings_logged: !matches!(level.as_str(), "error" | "off"),
        };
        for r in replicas {
            let Ok(file) = std::fs::File::open(&r.log) else { continue };
            // Bounded by the log's size.
            for line in std::io::BufReader::new(file).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).to_ascii_lowercase();
                counts.deadlocks += u64::from(line.contains("deadlock detected"));
                counts.serialization_failures += u64::from(line.contains("could not serialize"));
                counts.batch_aborted += u64::from(line.contains("batch aborted"));
            }
        }
        counts
    }
}

// ------------------------------------------------------------------------------------------------
// The receiver: connector calls and notifications, timestamped on arrival.

/// What arrived for one request, and what the driving worker noted.
#[derive(Default)]
struct Lifecycle {
    /// Signalled by the approval notification (a stored permit if the worker is not waiting yet).
    approval: Arc<Notify>,
    approval_at: Option<Instant>,
    created_sent: Option<Instant>,
    decision_sent: Option<Instant>,
    /// (arrival, idempotency key) of every grant call.
    grants: Vec<(Instant, String)>,
    /// (arrival, idempotency key) of every revoke call.
    revokes: Vec<(Instant, String)>,
}

struct Receiver {
    connector_secret: Vec<u8>,
    notify_secret: Vec<u8>,
    runs: Mutex<HashMap<Uuid, Lifecycle>>,
    signature_failures: AtomicU64,
    malformed: AtomicU64,
    other_operations: AtomicU64,
    events: Mutex<BTreeMap<String, u64>>,
    /// Requests with at least one revoke call.
    revoked: AtomicUsize,
    progress: Notify,
}

#[derive(Deserialize)]
struct ActionBody {
    operation: String,
    idempotency_key: String,
    run_id: Uuid,
}

#[derive(Deserialize)]
struct NotificationBody {
    event: String,
    request_id: Uuid,
}

impl Receiver {
    fn new(connector_secret: &[u8], notify_secret: &[u8]) -> Self {
        Self {
            connector_secret: connector_secret.to_vec(),
            notify_secret: notify_secret.to_vec(),
            runs: Mutex::new(HashMap::new()),
            signature_failures: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            other_operations: AtomicU64::new(0),
            events: Mutex::new(BTreeMap::new()),
            revoked: AtomicUsize::new(0),
            progress: Notify::new(),
        }
    }

    fn with_run<R>(&self, id: Uuid, f: impl FnOnce(&mut Lifecycle) -> R) -> R {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        f(runs.entry(id).or_default())
    }

    /// Checks the signature as a receiver must (docs/WEBHOOKS.md), on the raw body.
    fn verified(&self, secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
        // A receiver checks the timestamp against its own clock: the system clock.
        let now = SystemClock.now().timestamp();
        let ok = signing::verify(
            secret,
            header(signing::TIMESTAMP_HEADER),
            header(signing::SIGNATURE_HEADER),
            body,
            now,
            signing::DEFAULT_TOLERANCE_SECS,
        )
        .is_ok();
        if !ok {
            self.signature_failures.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }
}

async fn connector_call(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    if !rx.verified(&rx.connector_secret, &headers, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(action) = serde_json::from_slice::<ActionBody>(&body) else {
        rx.malformed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    match action.operation.as_str() {
        "grant" => rx.with_run(action.run_id, |l| l.grants.push((at, action.idempotency_key))),
        "revoke" => {
            let first = rx.with_run(action.run_id, |l| {
                l.revokes.push((at, action.idempotency_key));
                l.revokes.len() == 1
            });
            if first {
                rx.revoked.fetch_add(1, Ordering::Relaxed);
                rx.progress.notify_one();
            }
        }
        _ => {
            rx.other_operations.fetch_add(1, Ordering::Relaxed);
        }
    }
    StatusCode::OK
}

async fn notification(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    if !rx.verified(&rx.notify_secret, &headers, &body) {
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(n) = serde_json::from_slice::<NotificationBody>(&body) else {
        rx.malformed.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    };
    *rx.events.lock().unwrap_or_else(PoisonError::into_inner).entry(n.event.clone()).or_default() += 1;
    if n.event == "approval_requested" {
        let signal = rx.with_run(n.request_id, |l| {
            l.approval_at.get_or_insert(at);
            l.approval.clone()
        });
        signal.notify_one();
    }
    StatusCode::OK
}

// ------------------------------------------------------------------------------------------------
// The load: C workers over N lifecycles.

struct Load {
    http: reqwest::Client,
    /// Base URL of every replica, in node order.
    bases: Vec<String>,
    requester: String,
    approver: String,
    ttl: u64,
}

/// What the load phase observed (the receiver holds the rest).
struct LoadReport {
    started: Instant,
    /// (lifecycle index, request id) of the requests created (201) and approved (200).
    approved: Vec<(u64, Uuid)>,
    failures: Vec<String>,
    failure_count: u64,
    create_us: Histogram<u64>,
    decide_us: Histogram<u64>,
    drained: bool,
    load_secs: f64,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[derive(Default)]
struct WorkerResult {
    approved: Vec<(u64, Uuid)>,
    failures: Vec<String>,
    failure_count: u64,
    create_us: Vec<u64>,
    decide_us: Vec<u64>,
}

async fn drive_load(args: &Args, load: Arc<Load>, rx: &Arc<Receiver>) -> LoadReport {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(args.requests) {
        let (load, rx, next, n) = (load.clone(), rx.clone(), next.clone(), args.requests);
        workers.spawn(async move {
            let mut result = WorkerResult::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                match lifecycle(&load, &rx, i, &mut result).await {
                    Ok(id) => result.approved.push((i, id)),
                    Err(e) => {
                        result.failure_count += 1;
                        if result.failures.len() < 5 {
                            result.failures.push(format!("lifecycle {i}: {e:#}"));
                        }
                    }
                }
            }
            result
        });
    }
    let mut report = LoadReport {
        started,
        approved: Vec::new(),
        failures: Vec::new(),
        failure_count: 0,
        create_us: histogram(),
        decide_us: histogram(),
        drained: false,
        load_secs: 0.0,
    };
    while let Some(joined) = workers.join_next().await {
        let r = match joined {
            Ok(r) => r,
            Err(e) => {
                report.failure_count += 1;
                report.failures.push(format!("worker panicked: {e}"));
                continue;
            }
        };
        report.approved.extend(r.approved);
        report.failures.extend(r.failures);
        report.failure_count += r.failure_count;
        for v in r.create_us {
            let _ = report.create_us.record(v);
        }
        for v in r.decide_us {
            let _ = report.decide_us.record(v);
        }
    }
    report.approved.sort_unstable();
    report.load_secs = started.elapsed().as_secs_f64();
    err(&format!("{} requests approved in {:.2} s; waiting for revocations", report.approved.len(), report.load_secs));

    // Wait, boundedly, until every approved request has been revoked.
    let expected = report.approved.len();
    let deadline = Instant::now() + Duration::from_secs(load.ttl + args.drain_timeout);
    loop {
        if rx.revoked.load(Ordering::Relaxed) >= expected {
            report.drained = true;
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(200));
        let _ = tokio::time::timeout(wait, rx.progress.notified()).await;
    }
    tokio::time::sleep(SETTLE).await;
    report
}

/// The replicas lifecycle `i` is created on and decided on (the same one with a single replica).
fn route(i: u64, replicas: u64) -> (u64, u64) {
    (i % replicas, (i + 1) % replicas)
}

/// One lifecycle up to the decision; the receiver sees the rest.
async fn lifecycle(load: &Load, rx: &Receiver, i: u64, result: &mut WorkerResult) -> anyhow::Result<Uuid> {
    let replicas = load.bases.len() as u64;
    let (create_on, decide_on) = route(i, replicas);
    let (create_base, decide_base) =
        (&load.bases[usize::try_from(create_on)?], &load.bases[usize::try_from(decide_on)?]);
    let body = serde_json::json!({
        "integration": INTEGRATION,
        "scopes": [SCOPE],
        "duration": format!("{}s", load.ttl),
        "justification": format!("tollgate-bench lifecycle {i}"),
    });
    let created_sent = Instant::now();
    let resp = load
        .http
        .post(format!("{create_base}/v1/requests"))
        .bearer_auth(&load.requester)
        .json(&body)
        .send()
        .await
        .context("POST /v1/requests")?;
    let status = resp.status();
    let text = resp.text().await.context("POST /v1/requests: body")?;
    result.create_us.push(micros(created_sent.elapsed()));
    ensure!(status == StatusCode::CREATED, "POST /v1/requests answered {status}: {}", truncate(&text));
    let id: Uuid = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["id"].as_str().and_then(|s| s.parse().ok()))
        .context("POST /v1/requests: no id in the response")?;

    let signal = rx.with_run(id, |l| {
        l.created_sent = Some(created_sent);
        l.approval.clone()
    });
    tokio::time::timeout(APPROVAL_WAIT, signal.notified())
        .await
        .with_context(|| format!("no approval notification for {id} within {APPROVAL_WAIT:?}"))?;

    let decision_sent = Instant::now();
    rx.with_run(id, |l| l.decision_sent = Some(decision_sent));
    let resp = load
        .http
        .post(format!("{decide_base}/v1/requests/{id}/decisions"))
        .bearer_auth(&load.approver)
        .json(&serde_json::json!({ "decision": "approve" }))
        .send()
        .await
        .context("POST decisions")?;
    let status = resp.status();
    let text = resp.text().await.context("POST decisions: body")?;
    result.decide_us.push(micros(decision_sent.elapsed()));
    ensure!(status == StatusCode::OK, "POST /v1/requests/{id}/decisions answered {status}: {}", truncate(&text));
    Ok(id)
}

fn truncate(s: &str) -> String {
    s.chars().take(300).collect()
}

// ------------------------------------------------------------------------------------------------
// Results.

/// What was observed besides the load and the receiver: resource use and the server logs.
struct RunObserved {
    usage: RunUsage,
    logs: LogCounts,
}

struct Summary {
    json: serde_json::Value,
    lines: Vec<String>,
    passed: bool,
}

fn ms(us: u64) -> f64 {
    let v = us as f64 / 1000.0;
    (v * 100.0).round() / 100.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Named quantiles and the maximum, in milliseconds, in the order given.
fn quantiles(h: &Histogram<u64>, qs: &[(&'static str, f64)]) -> Vec<(&'static str, f64)> {
    let mut v: Vec<(&'static str, f64)> = qs.iter().map(|(name, q)| (*name, ms(h.value_at_quantile(*q)))).collect();
    v.push(("max", ms(h.max())));
    v
}

fn fmt_q(q: &[(&str, f64)]) -> String {
    if q.iter().all(|(_, v)| *v == 0.0) {
        return "n/a".to_owned();
    }
    q.iter().map(|(k, v)| format!("{k} {v:.2}")).collect::<Vec<_>>().join(", ")
}

fn json_q(q: &[(&str, f64)]) -> serde_json::Value {
    q.iter().map(|(k, v)| ((*k).to_owned(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>().into()
}

impl Summary {
    fn compute(
        args: &Args,
        backend: &str,
        replicas: &[Replica],
        load: &LoadReport,
        rx: &Receiver,
        observed: &RunObserved,
    ) -> Self {
        let (usage, logs) = (&observed.usage, &observed.logs);
        let runs = rx.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let approved: HashMap<Uuid, u64> = load.approved.iter().map(|(i, id)| (*id, *i)).collect();
        let ttl_us = i64::try_from(args.ttl).unwrap_or(0) * 1_000_000;

        let mut decision_to_grant = histogram();
        let mut timer_lag = histogram();
        let mut notify_lag = histogram();
        let (mut early_revokes, mut missing_grant, mut missing_revoke) = (0u64, 0u64, 0u64);
        let (mut extra_grant_keys, mut extra_revoke_keys, mut shared_keys) = (0u64, 0u64, 0u64);
        let (mut grant_redeliveries, mut revoke_redeliveries) = (0u64, 0u64);
        let (mut last_grant, mut last_revoke) = (None::<Instant>, None::<Instant>);
        let mut unexpected_runs = 0u64;
        // Granted, never revoked: (lifecycle index, request id).
        let mut lost: Vec<(u64, Uuid)> = Vec::new();
        let mut completed = 0u64;
        for (id, l) in runs.iter() {
            let Some(&index) = approved.get(id) else {
                if !l.grants.is_empty() || !l.revokes.is_empty() {
                    unexpected_runs += 1;
                }
                continue;
            };
            let grant_keys: HashSet<&str> = l.grants.iter().map(|(_, k)| k.as_str()).collect();
            let revoke_keys: HashSet<&str> = l.revokes.iter().map(|(_, k)| k.as_str()).collect();
            grant_redeliveries += (l.grants.len() - grant_keys.len()) as u64;
            revoke_redeliveries += (l.revokes.len() - revoke_keys.len()) as u64;
            extra_grant_keys += grant_keys.len().saturating_sub(1) as u64;
            extra_revoke_keys += revoke_keys.len().saturating_sub(1) as u64;
            shared_keys += grant_keys.intersection(&revoke_keys).count() as u64;
            let first_grant = l.grants.iter().map(|(t, _)| *t).min();
            let first_revoke = l.revokes.iter().map(|(t, _)| *t).min();
            match (first_grant, first_revoke) {
                (Some(_), None) => lost.push((index, *id)),
                (Some(_), Some(_)) => completed += 1,
                (None, _) => {}
            }
            if let (Some(sent), Some(created)) = (l.created_sent, l.approval_at) {
                let _ = notify_lag.record(micros(created.saturating_duration_since(sent)));
            }
            match first_grant {
                None => missing_grant += 1,
                Some(g) => {
                    last_grant = last_grant.max(Some(g));
                    if let Some(d) = l.decision_sent {
                        let _ = decision_to_grant.record(micros(g.saturating_duration_since(d)));
                    }
                }
            }
            match first_revoke {
                None => missing_revoke += 1,
                Some(r) => {
                    last_revoke = last_revoke.max(Some(r));
                    if let Some(g) = first_grant {
                        let held = i64::try_from(r.saturating_duration_since(g).as_micros()).unwrap_or(i64::MAX);
                        let lag = held - ttl_us;
                        if lag < -EARLY_TOLERANCE_US {
                            early_revokes += 1;
                        }
                        let _ = timer_lag.record(u64::try_from(lag).unwrap_or(0).max(1));
                    }
                }
            }
        }
        drop(runs);

        let n = args.requests;
        let failed = load.failure_count;
        let signature_failures = rx.signature_failures.load(Ordering::Relaxed);
        let malformed = rx.malformed.load(Ordering::Relaxed);
        let other_ops = rx.other_operations.load(Ordering::Relaxed);
        let since_start = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(load.started).as_secs_f64());
        let total_secs = since_start(last_revoke);
        let admission_secs = since_start(last_grant);
        let per_sec = |secs: Option<f64>| secs.filter(|s| *s > 0.0).map(|s| round2(n as f64 / s));
        let lifecycles_per_sec = per_sec(total_secs);
        let admission_per_sec = per_sec(admission_secs);
        // As the side-by-side harness counts: N ÷ (last revoke − first request − T).
        let excl_ttl_secs = total_secs.map(|t| t - args.ttl as f64);
        let lifecycles_per_s_excl_ttl = per_sec(excl_ttl_secs);
        let server_cpu_secs = usage.cpu_secs();
        let cpu_ms_per_lifecycle = server_cpu_secs.map(|c| round2(c * 1000.0 / n as f64));
        let replica_count = args.replicas;
        lost.sort_unstable();
        let lost_n = lost.len() as u64;
        let never_granted = n.saturating_sub(completed + lost_n);
        let node = |r: u64| replicas.get(usize::try_from(r).unwrap_or(usize::MAX)).map_or("?", |r| r.node.as_str());
        let lost_shown: Vec<String> = lost
            .iter()
            .take(10)
            .map(|(i, id)| {
                let (c, d) = route(*i, replica_count);
                format!("{id} (lifecycle {i}, created on {}, decided on {})", node(c), node(d))
            })
            .collect();
        let mut lost_by_route: BTreeMap<String, u64> = BTreeMap::new();
        for (i, _) in &lost {
            let (c, d) = route(*i, replica_count);
            *lost_by_route.entry(format!("{}→{}", node(c), node(d))).or_default() += 1;
        }
        let nproc = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);

        let mut problems = Vec::new();
        if failed > 0 {
            problems.push(format!("{failed} lifecycle(s) failed before the decision"));
        }
        if missing_grant > 0 {
            problems.push(format!("{missing_grant} approved request(s) without a grant call"));
        }
        if lost_n > 0 {
            problems.push(format!(
                "{lost_n} lifecycle(s) lost: the grant call arrived, no revoke call by the end of the drain"
            ));
        }
        for u in usage.replicas.iter().filter(|u| u.exited.is_some()) {
            problems.push(format!(
                "server {} had exited before the end of the run ({})",
                u.node,
                u.exited.as_deref().unwrap_or_default()
            ));
        }
        if extra_grant_keys + extra_revoke_keys > 0 {
            problems.push(format!(
                "{extra_grant_keys} extra grant and {extra_revoke_keys} extra revoke idempotency key(s)"
            ));
        }
        if shared_keys > 0 {
            problems.push(format!("{shared_keys} request(s) reuse the grant key for the revoke"));
        }
        if signature_failures > 0 {
            problems.push(format!("{signature_failures} signature verification failure(s)"));
        }
        if malformed + other_ops + unexpected_runs > 0 {
            problems.push(format!(
                "{malformed} malformed body(ies), {other_ops} unexpected operation(s), {unexpected_runs} call(s) for unknown requests"
            ));
        }
        if early_revokes > 0 {
            problems.push(format!("{early_revokes} revoke(s) more than 50 ms before the grant's TTL had passed"));
        }
        let passed = problems.is_empty();

        let d2g = quantiles(&decision_to_grant, &[("p50", 0.50), ("p95", 0.95), ("p99", 0.99)]);
        let lag = quantiles(&timer_lag, &[("p50", 0.50), ("p99", 0.99)]);
        let nlag = quantiles(&notify_lag, &[("p50", 0.50), ("p99", 0.99)]);
        let create = quantiles(&load.create_us, &[("p50", 0.50), ("p99", 0.99)]);
        let decide = quantiles(&load.decide_us, &[("p50", 0.50), ("p99", 0.99)]);
        let events = rx.events.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let approved_n = load.approved.len();
        let cpu_util = server_cpu_secs.zip(total_secs).map(|(c, t)| round2(c / t));
        let mib = |v: Option<u64>| v.map(kib_to_mib);

        let opt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"));
        let per_replica = |f: &dyn Fn(&Usage) -> Option<f64>| {
            usage.replicas.iter().map(|u| format!("{} {}", u.node, opt(f(u)))).collect::<Vec<_>>().join(", ")
        };
        let mut lines = vec![
            "tollgate-bench".to_owned(),
            format!(
                "  backend {backend}, requests {n}, concurrency {}, ttl {} s, nproc {nproc}",
                args.concurrency, args.ttl
            ),
        ];
        if replica_count > 1 {
            lines.push(format!(
                "  replicas              {replica_count} on one database: {}",
                replicas.iter().map(|r| format!("{} 127.0.0.1:{}", r.node, r.port)).collect::<Vec<_>>().join(", ")
            ));
            lines.push(format!(
                "  routing               lifecycle i: create on r[i % {replica_count}], decide on r[(i + 1) % {replica_count}], no reads ({})",
                (0..replica_count)
                    .map(|r| {
                        let (c, d) = route(r, replica_count);
                        format!("{}→{}", node(c), node(d))
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        lines.extend([
            format!(
                "  lifecycles/s          {}  ({n} lifecycles, first request to last revoke {} s)",
                opt(lifecycles_per_sec),
                opt(total_secs)
            ),
            format!(
                "  lifecycles_per_s_excl_ttl {}  ({n} ÷ (last revoke − first request − ttl {} s) = {n} ÷ {} s)",
                opt(lifecycles_per_s_excl_ttl),
                args.ttl,
                opt(excl_ttl_secs.map(round2))
            ),
            format!(
                "  admission throughput  {} /s  (first request to last grant {} s; load phase {:.2} s)",
                opt(admission_per_sec),
                opt(admission_secs),
                load.load_secs
            ),
            format!("  decision→grant ms     {}", fmt_q(&d2g)),
            format!("  timer lag ms          {}  (revoke − grant − ttl)", fmt_q(&lag)),
            format!("  create→approval-notification ms  {}", fmt_q(&nlag)),
            format!("  POST /v1/requests ms  {}", fmt_q(&create)),
            format!("  POST decisions ms     {}", fmt_q(&decide)),
        ]);
        if replica_count > 1 {
            lines.push(format!(
                "  server peak RSS       {} MiB summed  (VmHWM per replica: {}; VmRSS at end {} MiB summed)",
                opt(mib(usage.peak_rss_kib())),
                per_replica(&|u| mib(u.peak_rss_kib)),
                opt(mib(usage.rss_kib()))
            ));
            lines.push(format!(
                "  CPU                   servers {} s summed ({}; {} cores avg over the run), bench {} s",
                opt(server_cpu_secs),
                per_replica(&|u| u.cpu_secs),
                opt(cpu_util),
                opt(usage.bench_cpu_secs)
            ));
        } else {
            lines.push(format!(
                "  server peak RSS       {} MiB  (VmHWM; VmRSS at end {} MiB)",
                opt(mib(usage.peak_rss_kib())),
                opt(mib(usage.rss_kib()))
            ));
            lines.push(format!(
                "  CPU                   server {} s ({} cores avg over the run), bench {} s",
                opt(server_cpu_secs),
                opt(cpu_util),
                opt(usage.bench_cpu_secs)
            ));
        }
        let drain = args.drain_timeout;
        let conflicts = if logs.warnings_logged {
            format!(
                "deadlocks {}, serialization_failures {}, batch aborted {}  (lines in the server logs; the writer's \
                 \"batch aborted\" warnings carry the database error)",
                logs.deadlocks, logs.serialization_failures, logs.batch_aborted
            )
        } else {
            format!(
                "deadlocks n/a, serialization_failures n/a  (--server-log-level {} hides the writer's \"batch aborted\" \
                 warnings, which carry the database error)",
                args.server_log_level
            )
        };
        lines.extend([
            format!(
                "  cpu_ms_per_lifecycle  {}  (server user+sys CPU{} ÷ {n} lifecycles)",
                opt(cpu_ms_per_lifecycle),
                if replica_count > 1 { ", all replicas," } else { "" }
            ),
            format!(
                "  checks                approved {approved_n}/{n}, missing grant {missing_grant}, missing revoke {missing_revoke}, redeliveries {}, signature failures {signature_failures}, drained {}",
                grant_redeliveries + revoke_redeliveries,
                load.drained
            ),
            format!(
                "  loss                  completed {completed}, lost {lost_n}, never_granted {never_granted}  (lost: grant call arrived, no revoke call by the end of the drain, ttl + {drain} s after the load + 0.5 s; never_granted: no grant call, {failed} of them failed before the decision)"
            ),
        ]);
        if !lost.is_empty() {
            if replica_count > 1 {
                lines.push(format!(
                    "  lost by route         {}",
                    lost_by_route.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
                ));
            }
            for l in &lost_shown {
                lines.push(format!("  lost: {l}"));
            }
            if lost.len() > lost_shown.len() {
                lines.push(format!("  lost: … and {} more", lost.len() - lost_shown.len()));
            }
        }
        lines.extend([
            format!("  database conflicts    {conflicts}"),
            format!(
                "  notifications         {}",
                events.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
            ),
        ]);
        for f in &load.failures {
            lines.push(format!("  failure: {f}"));
        }
        for p in &problems {
            lines.push(format!("  problem: {p}"));
        }
        lines.push(if passed { "PASS".to_owned() } else { "FAIL".to_owned() });

        let replica_json: Vec<serde_json::Value> = usage
            .replicas
            .iter()
            .zip(replicas)
            .map(|(u, r)| {
                serde_json::json!({
                    "node": u.node,
                    "port": r.port,
                    "peak_rss_kib": u.peak_rss_kib,
                    "rss_kib": u.rss_kib,
                    "cpu_secs": u.cpu_secs,
                    "exited": u.exited,
                })
            })
            .collect();
        let json = serde_json::json!({
            "bench": "tollgate-lifecycle",
            "pass": passed,
            "backend": backend,
            "requests": n,
            "concurrency": args.concurrency,
            "ttl_secs": args.ttl,
            "nproc": nproc,
            "replicas": replica_count,
            "routing": "create on i % replicas, decide on (i + 1) % replicas, no reads",
            "lifecycles_per_sec": lifecycles_per_sec,
            "lifecycles_per_s_excl_ttl": lifecycles_per_s_excl_ttl,
            "admission_per_sec": admission_per_sec,
            "total_secs": total_secs.map(round2),
            "admission_secs": admission_secs.map(round2),
            "decision_to_grant_ms": json_q(&d2g),
            "timer_lag_ms": json_q(&lag),
            "create_to_approval_notification_ms": json_q(&nlag),
            "create_request_ms": json_q(&create),
            "decide_ms": json_q(&decide),
            "server_peak_rss_kib": usage.peak_rss_kib(),
            "server_cpu_secs": server_cpu_secs,
            "cpu_ms_per_lifecycle": cpu_ms_per_lifecycle,
            "bench_cpu_secs": usage.bench_cpu_secs,
            "per_replica": replica_json,
            "approved": approved_n,
            "failed": failed,
            "missing_grant": missing_grant,
            "missing_revoke": missing_revoke,
            "completed": completed,
            "lost": lost_n,
            "lost_ids": lost.iter().take(10).map(|(_, id)| id.to_string()).collect::<Vec<_>>(),
            "lost_by_route": lost_by_route,
            "never_granted": never_granted,
            "deadlocks": logs.warnings_logged.then_some(logs.deadlocks),
            "serialization_failures": logs.warnings_logged.then_some(logs.serialization_failures),
            "batch_aborted": logs.warnings_logged.then_some(logs.batch_aborted),
            "redeliveries": grant_redeliveries + revoke_redeliveries,
            "signature_failures": signature_failures,
            "notifications": events,
            "problems": problems,
        });
        Self { json, lines, passed }
    }

    fn print(&self) {
        for l in &self.lines {
            out(l);
        }
        out(&self.json.to_string());
    }
}

fn kib_to_mib(kib: u64) -> f64 {
    round2(kib as f64 / 1024.0)
}
