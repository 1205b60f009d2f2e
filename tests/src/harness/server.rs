//! The real `tollgate` server as a child process: a generated configuration in a temporary
//! directory, start, SIGKILL, restart on the same database, tokens and CLI invocations.

use std::collections::HashMap;
use std::io::{Read as _, Seek as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::client::ApiClient;
use super::db::TestDb;
use super::fixtures;
use super::receiver::Receiver;

/// The `tollgate` binary to run: `TOLLGATE_BIN` if set, else `tollgate-server` next to the
/// running executable (or one directory up, from `target/debug/deps`). Integration tests pass
/// `env!("CARGO_BIN_EXE_tollgate-server")` instead.
#[must_use]
pub fn default_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join(format!("tollgate-server{}", std::env::consts::EXE_SUFFIX))
}

/// How to configure a server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The binary.
    pub bin: PathBuf,
    /// Connector URL of every integration.
    pub connector_url: String,
    /// Notification webhook URL (`None`: notifications are only logged).
    pub notify_url: Option<String>,
    /// Connector call timeout, e.g. `"5s"`.
    pub connector_timeout: String,
    /// Workflow files `(name, YAML)` written to the workflows directory.
    pub workflows: Vec<(String, String)>,
    /// Whether to load the bundled workflows too.
    pub bundled_workflows: bool,
    /// More TOML appended to the configuration (top-level keys must come before any table, so
    /// use dotted or table form).
    pub extra_config: String,
    /// Fixed node id, so a restarted server resumes its own outbox leases at once.
    pub node_id: String,
    /// Text replacements applied to the directory TOML, e.g. to drop someone from a group.
    pub directory_patches: Vec<(String, String)>,
    /// `engine.reconcile_schedule`: off unless a test is about reconciliation, so that no
    /// reconciliation check lands among the calls another test counts.
    pub reconcile_schedule: String,
    /// `[log] level`: a tracing filter (`trace` to see everything the server could log).
    pub log_level: String,
    /// More `key = value` lines for the `[engine]` table (which the harness writes itself, so
    /// `extra_config` cannot add to it).
    pub engine_extra: String,
}

impl ServerOptions {
    /// The test directory and workflows, with webhooks pointing at `receiver`.
    #[must_use]
    pub fn new(receiver: &Receiver) -> Self {
        Self {
            bin: default_bin(),
            connector_url: receiver.connector_url(),
            notify_url: Some(receiver.notify_url()),
            connector_timeout: "10s".to_owned(),
            workflows: fixtures::test_workflows(),
            bundled_workflows: false,
            extra_config: String::new(),
            node_id: "test-node".to_owned(),
            directory_patches: Vec::new(),
            reconcile_schedule: "off".to_owned(),
            log_level: "info,tollgate=debug,tollgate_engine=debug".to_owned(),
            engine_extra: String::new(),
        }
    }

    /// Uses this binary.
    #[must_use]
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> Self {
        self.bin = bin.into();
        self
    }

    /// Gives `principal`, one of the test directory's people, the Slack user id `id`.
    #[must_use]
    pub fn slack_user(mut self, principal: &str, id: &str) -> Self {
        let email = format!(r#"email = "{principal}@example.com""#);
        self.directory_patches.push((email.clone(), format!("{email}\nslack_user_id = \"{id}\"")));
        self
    }

    /// Adds (or replaces) a workflow file.
    #[must_use]
    pub fn workflow(mut self, name: &str, yaml: &str) -> Self {
        self.workflows.retain(|(n, _)| n != name);
        self.workflows.push((name.to_owned(), yaml.to_owned()));
        self
    }
}

/// Output of a CLI invocation.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A running (or stopped) server. Dropping it kills the process; if the test is panicking, the
/// tail of the server's log is printed.
#[derive(Debug)]
pub struct Server {
    opts: ServerOptions,
    dir: tempfile::TempDir,
    config_path: PathBuf,
    log_path: PathBuf,
    addr: SocketAddr,
    base: Arc<RwLock<String>>,
    child: Option<Child>,
    starts: u32,
    tokens: Mutex<HashMap<String, String>>,
    // Last: dropped after the process is gone.
    db: TestDb,
}

/// Picks a free local port (bind to :0, release).
fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

impl Server {
    /// Writes the configuration and starts the server; returns once `/readyz` answers.
    ///
    /// # Errors
    /// When the server does not become ready; the error carries its log.
    pub async fn start(db: TestDb, opts: ServerOptions) -> anyhow::Result<Self> {
        let server = Self::configure(db, opts)?;
        server.launch().await
    }

    /// Writes the configuration without starting anything (for CLI-only tests).
    ///
    /// # Errors
    /// When the temporary files cannot be written.
    pub fn configure(db: TestDb, opts: ServerOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("tollgate-srv-").tempdir()?;
        let config_path = dir.path().join("tollgate.toml");
        let log_path = dir.path().join("server.log");
        let addr = free_addr()?;
        let server = Self {
            base: Arc::new(RwLock::new(format!("http://{addr}"))),
            opts,
            config_path,
            log_path,
            addr,
            child: None,
            starts: 0,
            tokens: Mutex::new(HashMap::new()),
            db,
            dir,
        };
        server.write_config()?;
        Ok(server)
    }

    async fn launch(mut self) -> anyhow::Result<Self> {
        self.spawn_and_wait().await?;
        Ok(self)
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let wf_dir = self.dir.path().join("workflows");
        std::fs::create_dir_all(&wf_dir)?;
        for (name, yaml) in &self.opts.workflows {
            std::fs::write(wf_dir.join(name), yaml)?;
        }
        let o = &self.opts;
        let notify = o.notify_url.as_ref().map_or_else(String::new, |url| {
            format!("\n[notifications.webhook]\nurl = \"{url}\"\nsecret = \"{}\"\ntimeout = \"5s\"\n", fixtures::SECRET)
        });
        let config = format!(
            r#"listen = "{addr}"
node_id = "{node}"

[database]
url = "{db}"
max_connections = 4

[workflows]
bundled = {bundled}
dir = "{wf_dir}"

[log]
level = "{log_level}"

[engine]
revoke_retry_secs = 2
reconcile_schedule = "{reconcile}"
{engine_extra}
{notify}
{directory}
{extra}
"#,
            addr = self.addr,
            node = o.node_id,
            db = self.db.url(),
            bundled = o.bundled_workflows,
            wf_dir = wf_dir.display(),
            directory = o
                .directory_patches
                .iter()
                .fold(fixtures::directory_toml(&o.connector_url, &o.connector_timeout), |toml, (from, to)| toml
                    .replace(from, to)),
            extra = o.extra_config,
            reconcile = o.reconcile_schedule,
            log_level = o.log_level,
            engine_extra = o.engine_extra,
        );
        std::fs::write(&self.config_path, config)?;
        Ok(())
    }

    fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.opts.bin);
        scrub_env(&mut cmd);
        cmd.current_dir(self.dir.path()).env("NO_COLOR", "1");
        cmd
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        for attempt in 0..3 {
            self.starts += 1;
            let mut log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path)?;
            writeln!(log, "===== start {} on {} =====", self.starts, self.addr)?;
            let mut cmd = self.command();
            cmd.arg("serve")
                .arg("--config")
                .arg(&self.config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log));
            let child = cmd.spawn().with_context(|| format!("cannot spawn {}", self.opts.bin.display()))?;
            self.child = Some(child);
            match self.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 2 && self.log().contains("cannot listen") => {
                    // Someone took the port between picking and binding: pick another.
                    tracing_note(&e);
                    self.addr = free_addr()?;
                    *self.base.write().unwrap_or_else(PoisonError::into_inner) = format!("http://{}", self.addr);
                    self.write_config()?;
                }
                Err(e) => return Err(e),
            }
        }
        bail!("server did not start")
    }

    async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let http = tollgate_engine::http::client(Duration::from_secs(2))?;
        let url = format!("http://{}/readyz", self.addr);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                self.child = None;
                bail!("server exited during start-up ({status}); log:\n{}", self.log());
            }
            if http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!("server not ready after {timeout:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILLs the server (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, same configuration and database (killing it first if running).
    ///
    /// # Errors
    /// When it does not become ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait().await
    }

    /// Changes the options, rewrites the configuration and restarts (same database).
    ///
    /// # Errors
    /// When it does not become ready.
    pub async fn restart_with(&mut self, change: impl FnOnce(&mut ServerOptions)) -> anyhow::Result<()> {
        self.kill();
        change(&mut self.opts);
        self.write_config()?;
        self.spawn_and_wait().await
    }

    /// Changes the options and rewrites the configuration and workflow files (a workflow dropped
    /// from the options is deleted) without touching the running server: what an operator does
    /// before a reload.
    ///
    /// # Errors
    /// When the files cannot be written.
    pub fn reconfigure(&mut self, change: impl FnOnce(&mut ServerOptions)) -> anyhow::Result<()> {
        change(&mut self.opts);
        let wf_dir = self.workflows_dir();
        for entry in std::fs::read_dir(&wf_dir)?.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !self.opts.workflows.iter().any(|(n, _)| *n == name) {
                std::fs::remove_file(entry.path())?;
            }
        }
        self.write_config()
    }

    /// Sends the server `SIGHUP` (reload its configuration).
    ///
    /// # Errors
    /// When it is not running or the signal cannot be sent.
    pub fn hangup(&mut self) -> anyhow::Result<()> {
        let pid = self.child.as_ref().map(Child::id).context("the server is not running")?;
        let status = std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status()?;
        anyhow::ensure!(status.success(), "kill -HUP {pid} failed: {status}");
        Ok(())
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's log so far (all starts).
    #[must_use]
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log_path) {
            let _ = f.rewind();
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Base URL, e.g. `http://127.0.0.1:4321`.
    #[must_use]
    pub fn url(&self) -> String {
        self.base.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The configuration file.
    #[must_use]
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The workflows directory.
    #[must_use]
    pub fn workflows_dir(&self) -> PathBuf {
        self.dir.path().join("workflows")
    }

    /// The database.
    #[must_use]
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// Waits until the engine behind this server (and any replica sharing its database) is
    /// quiet: no outbox item still to be delivered, no timer due. Tests call this instead of a
    /// fixed sleep before asserting that something did not happen, or happened exactly once. See
    /// [`TestDb::wait_quiet`].
    ///
    /// # Errors
    /// When the engine is still busy after `patience`, listing what is still pending.
    pub async fn wait_quiet(&self, patience: Duration) -> anyhow::Result<()> {
        self.db.wait_quiet(patience).await
    }

    /// Lets the wall-clock instant `at` pass (a grant's old expiry, a deadline), then waits until
    /// the engine is quiet: every timer due by `at` has fired and everything that followed from
    /// it has been delivered, so the test may assert what happened (or did not) at `at`.
    ///
    /// # Errors
    /// When the engine is still busy `patience` after `at`, listing what is still pending.
    pub async fn wait_quiet_after(&self, at: chrono::DateTime<chrono::Utc>, patience: Duration) -> anyhow::Result<()> {
        // The one sleep: until an instant the test must let pass, never instead of a condition.
        while let Ok(left) = (at - crate::wall_clock()).to_std() {
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left).await;
        }
        self.db.wait_quiet(patience).await
    }

    /// The binary.
    #[must_use]
    pub fn bin(&self) -> &Path {
        &self.opts.bin
    }

    /// Runs `tollgate <args>` with no `TOLLGATE_*` environment except `envs`.
    ///
    /// # Errors
    /// When the process cannot be run.
    pub async fn cli(&self, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<CliOutput> {
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.args(args).envs(envs.iter().copied()).stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .context("CLI did not finish within 60 s")?
            .with_context(|| format!("cannot run {} {args:?}", self.opts.bin.display()))?;
        Ok(CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs `tollgate <args>` like [`Server::cli`], with `stdin` as its standard input.
    ///
    /// # Errors
    /// When the process cannot be run.
    pub async fn cli_stdin(&self, args: &[&str], envs: &[(&str, &str)], stdin: &str) -> anyhow::Result<CliOutput> {
        use tokio::io::AsyncWriteExt as _;
        let mut cmd = tokio::process::Command::from(self.command());
        cmd.args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("cannot run {} {args:?}", self.opts.bin.display()))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).await?;
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("CLI did not finish within 60 s")??;
        Ok(CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs an operator command against this server's configuration:
    /// `tollgate <args> --config <file>`.
    ///
    /// # Errors
    /// When the process cannot be run.
    pub async fn cli_config(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let config = self.config_path.display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.as_str()]);
        self.cli(&all, &[]).await
    }

    /// Runs a client command as `principal`, with `TOLLGATE_URL` and `TOLLGATE_TOKEN` set.
    ///
    /// # Errors
    /// When no token can be made or the process cannot be run.
    pub async fn cli_as(&self, principal: &str, args: &[&str]) -> anyhow::Result<CliOutput> {
        let token = self.token(principal).await?;
        let url = self.url();
        self.cli(args, &[("TOLLGATE_URL", url.as_str()), ("TOLLGATE_TOKEN", token.as_str())]).await
    }

    /// An API token for `principal` (made once with `tollgate token create`, then cached).
    ///
    /// # Errors
    /// When the command fails.
    pub async fn token(&self, principal: &str) -> anyhow::Result<String> {
        if let Some(t) = self.tokens.lock().unwrap_or_else(PoisonError::into_inner).get(principal) {
            return Ok(t.clone());
        }
        let out = self.cli_config(&["token", "create", "--principal", principal]).await?;
        let token = out.stdout.trim().to_owned();
        if out.code != 0 || !token.starts_with("tg_") {
            bail!("token create --principal {principal} failed ({}):\n{}\n{}", out.code, out.stdout, out.stderr);
        }
        self.tokens.lock().unwrap_or_else(PoisonError::into_inner).insert(principal.to_owned(), token.clone());
        Ok(token)
    }

    /// An API client acting as `principal`.
    ///
    /// # Errors
    /// When no token can be made.
    pub async fn client(&self, principal: &str) -> anyhow::Result<ApiClient> {
        let token = self.token(principal).await?;
        ApiClient::new(self.base.clone(), Some(token))
    }

    /// An API client without a token.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn anonymous(&self) -> anyhow::Result<ApiClient> {
        ApiClient::new(self.base.clone(), None)
    }
}

/// Removes every `TOLLGATE_*` and `RUST_LOG` variable: the child sees only what the test sets.
fn scrub_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(|k| k.starts_with("TOLLGATE_") || k == "RUST_LOG") {
            cmd.env_remove(&k);
        }
    }
}

fn tracing_note(e: &anyhow::Error) {
    eprintln!("tollgate-tests: retrying server start on another port: {e:#}");
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(300)..];
            eprintln!("----- tollgate server log ({}, last {} lines) -----", self.log_path.display(), tail.len());
            for l in tail {
                eprintln!("{l}");
            }
            eprintln!("----- end of server log -----");
        }
    }
}
