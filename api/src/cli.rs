//! The command line: server and operator commands that open the database, and client commands
//! for people that talk to a running server.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tollgate_engine::audit::{self, ExportFormat};
use tollgate_engine::clock::{Clock as _, SystemClock};
use tollgate_engine::directory::Role;
use tollgate_engine::store::query;
use tollgate_engine::token::TokenStatus;

use crate::client::{Client, ClientArgs};
use crate::config::{self, Config};
use crate::dto::{TokenCreatedOut, TokenOut};

/// Tollgate: human-in-the-loop, just-in-time access to SaaS integrations.
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Defaults to ./tollgate.toml when it exists.
    #[arg(long, short = 'c', env = "TOLLGATE_CONFIG", global = true)]
    pub config: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self, overrides: &[(&str, String)]) -> anyhow::Result<Config> {
        for warning in config::unknown_env_vars(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok())) {
            eprintln_err(&format!("warning: {warning}"));
        }
        let default = PathBuf::from("tollgate.toml");
        let file = self.config.clone().or_else(|| default.exists().then_some(default));
        Ok(config::load(file.as_deref(), overrides)?)
    }
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (API, engine, timers, outbox).
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Listen address (also `TOLLGATE_LISTEN`); default 127.0.0.1:8080.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// Print `{"database", "migrations"}` as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Workflow definitions.
    Workflows {
        #[command(subcommand)]
        command: WorkflowsCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Requests (talks to a running server).
    Request {
        #[command(subcommand)]
        command: RequestCommand,
    },
    /// Grants: who holds what until when (talks to a running server).
    Grant {
        #[command(subcommand)]
        command: GrantCommand,
    },
    /// Manual-connector tasks (talks to a running server).
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// The credential inventory (talks to a running server).
    Credentials {
        #[command(subcommand)]
        command: CredentialsCommand,
    },
    /// Check an API token with a server and store both for the client commands.
    ///
    /// Nothing is stored when the server refuses the token. The file is `$TOLLGATE_CREDENTIALS`,
    /// else `$XDG_CONFIG_HOME/tollgate/credentials.toml`, else
    /// `~/.config/tollgate/credentials.toml`, readable by you only (0600); its token is sent
    /// only to the URL stored with it.
    Login {
        /// Server URL.
        #[arg(long, env = "TOLLGATE_URL")]
        url: String,
        /// Read the token from the first line of standard input (keeps it out of the process list).
        #[arg(long, conflicts_with = "token")]
        token_stdin: bool,
        /// The token (without this or --token-stdin: `TOLLGATE_TOKEN`).
        #[arg(long)]
        token: Option<String>,
        /// Print `{"url", "principal", "credentials"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Forget the credentials `tollgate login` stored.
    Logout {
        /// Print `{"credentials", "removed"}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a request (talks to a running server).
    Approve {
        /// Request id.
        id: String,
        /// Comment.
        #[arg(long, short = 'm')]
        comment: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deny a request (talks to a running server).
    Deny {
        /// Request id.
        id: String,
        /// Why.
        #[arg(long, short = 'r')]
        reason: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Apply the directory and workflow changes in the server's configuration files now,
    /// without a restart (`POST /v1/admin/reload`; admins). A bad change is refused whole: the
    /// server's error, listing every problem, and exit 1; the running configuration stays.
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Email templates.
    Email {
        #[command(subcommand)]
        command: EmailCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Print a shell completion script, e.g. `tollgate completions bash > /etc/bash_completion.d/tollgate`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Ask a running server whether it is ready (`GET /readyz`): exit 0 when it is, 1 when not
    /// or unreachable. For container health checks.
    Ready {
        /// Server URL.
        #[arg(long, env = "TOLLGATE_URL", default_value = crate::client::DEFAULT_URL)]
        url: String,
        /// Print `{"ready", "url", "status", "detail"}` as JSON (exit status as without).
        #[arg(long)]
        json: bool,
    },
}

/// `email` subcommands.
#[derive(Debug, Subcommand)]
pub enum EmailCommand {
    /// Render a template with sample data: subject, plain text, then HTML.
    Preview {
        /// Template (event) name; `list` shows them all.
        template: String,
        /// Print `{"template", "subject", "text", "html"}` (for `list`: an array of names) as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `workflows` subcommands.
#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Validate definition files (or directories of them); exit non-zero on the first error.
    Validate {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Print an array of `{"file", "key", "version", "kind"}`, or `{"error": {"file", "detail"}}`
        /// (exit status as without).
        #[arg(long)]
        json: bool,
        /// Also check the groups and principals the definitions name, and those the directory's
        /// own entries name (members, owners, operators), against the directory of this
        /// configuration file; exit 1 listing every one it does not define, with its file and
        /// field. Without it, definitions are checked on their own.
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `token` subcommands. They open the database directly (an operator's commands, which work
/// before any token exists); the same actions are in the API (`/v1/tokens`) for token holders.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a principal; prints it once.
    Create {
        /// The principal the token acts as.
        #[arg(long, short = 'p')]
        principal: String,
        /// What the token is for (1–100 characters).
        #[arg(long, visible_alias = "name", default_value = "cli")]
        label: String,
        /// Lifetime, e.g. 30d or 12h (at most 366 days); without it the token never expires.
        #[arg(long)]
        ttl: Option<String>,
        /// Print `{"secret", "token"}` as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List tokens, newest first (never their secrets).
    List {
        /// Only this principal's.
        #[arg(long, short = 'p')]
        principal: Option<String>,
        /// Only `active`, `expired` or `revoked` ones.
        #[arg(long)]
        status: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Revoke a token: it stops authenticating on the next request, on every replica.
    Revoke {
        /// Token id (from `token list`).
        id: uuid::Uuid,
        /// Print the revoked token as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every link of the chain; print the first broken sequence and exit 1 if any.
    Verify {
        /// Print the result as JSON, the shape of `GET /v1/audit/verify` (exit status as without).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Export the log.
    Export {
        /// `jsonl` or `csv`.
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Output file (default: standard output).
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// `request` subcommands.
#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Ask for access.
    Create {
        /// Integration name.
        #[arg(long, short = 'i')]
        integration: String,
        /// Scope (repeat for several).
        #[arg(long = "scope", short = 's')]
        scopes: Vec<String>,
        /// Duration, e.g. 2h.
        #[arg(long, short = 'd')]
        duration: Option<String>,
        /// Why.
        #[arg(long, short = 'j', default_value = "")]
        justification: String,
        /// grant (default), renew, rotate or revoke.
        #[arg(long, default_value = "grant")]
        kind: String,
        /// Existing grant id (renew, rotate, revoke).
        #[arg(long)]
        grant: Option<String>,
        /// Emergency access: granted at once, reviewed after (only where the workflow offers
        /// break-glass and names you; a denied or late review revokes it at once).
        #[arg(long)]
        break_glass: bool,
        /// Idempotency key (safe retries from scripts).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Print only the new request's id (for scripts: `ID=$(tollgate request create … -q)`).
        #[arg(long, short = 'q', conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one request.
    Show {
        /// Request id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List requests.
    List {
        /// Status filter.
        #[arg(long)]
        status: Option<String>,
        /// Requester filter.
        #[arg(long)]
        requester: Option<String>,
        /// Integration filter.
        #[arg(long)]
        integration: Option<String>,
        /// Page size (1–200; the server's default is 50).
        #[arg(long)]
        limit: Option<u64>,
        /// Where to continue: the `--cursor` a previous page printed (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// Print only the ids, one a line.
        #[arg(long, short = 'q', conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel a pending request.
    Cancel {
        /// Request id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `grant` subcommands.
#[derive(Debug, Subcommand)]
pub enum GrantCommand {
    /// List grants, newest first (yours and those on integrations you own; admins and auditors: all).
    List {
        /// Only `provisioning`, `active`, `revoking`, `revoked`, `revoke_failed` or `failed` ones.
        #[arg(long)]
        status: Option<String>,
        /// Only those on this integration.
        #[arg(long, short = 'i')]
        integration: Option<String>,
        /// Only those this principal holds.
        #[arg(long, short = 'p')]
        principal: Option<String>,
        /// Page size (1–200; the server's default is 50).
        #[arg(long)]
        limit: Option<u64>,
        /// Where to continue: the `--cursor` a previous page printed (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// Print only the ids, one a line.
        #[arg(long, short = 'q', conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one grant.
    Show {
        /// Grant id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// End an active grant now (its holder, the integration's owner or an admin); the grant
    /// shows `revoking`, then `revoked`.
    Revoke {
        /// Grant id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Retrieve, once, the credential the grant's connector minted for you (its holder): only
    /// the secret is printed, so it can be piped; it is destroyed as it is handed over.
    Secret {
        /// Grant id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `task` subcommands.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// List manual tasks, newest first: yours as operator (admins: everyone's).
    List {
        /// `open` (default), `done` (resolved: done or failed) or `all`.
        #[arg(long)]
        status: Option<String>,
        /// Page size (1–200; the server's default is 50).
        #[arg(long)]
        limit: Option<u64>,
        /// Where to continue: the `--cursor` a previous page printed (its `next_cursor`).
        #[arg(long)]
        cursor: Option<String>,
        /// Print only the ids, one a line (e.g. `TASK=$(tollgate task list -q | head -1)`).
        #[arg(long, short = 'q', conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Confirm a task was done (or, with --failed, report that it could not be).
    Complete {
        /// Task id.
        id: String,
        /// The action failed: the request's workflow handles the failure.
        #[arg(long)]
        failed: bool,
        /// Comment (what was done, or why it failed).
        #[arg(long, short = 'm')]
        comment: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `credentials` subcommands.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// List inventoried credentials, newest first (admins and auditors: all; others: their own).
    List {
        /// Only this integration's.
        #[arg(long)]
        integration: Option<String>,
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
        /// Only this kind (oauth_client, oauth_grant, refresh_token, api_key, webhook_secret,
        /// app_installation, service_account_key, bot_token).
        #[arg(long)]
        kind: Option<String>,
        /// Only those expiring before this RFC 3339 time.
        #[arg(long)]
        expiring_before: Option<String>,
        /// `active` or `expired`.
        #[arg(long)]
        status: Option<String>,
        /// Page size (1–200; the server's default is 50).
        #[arg(long)]
        limit: Option<u64>,
        /// Where to continue: the `--cursor` a previous page printed.
        #[arg(long)]
        cursor: Option<String>,
        /// Print only the names, one a line.
        #[arg(long, short = 'q', conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one credential and its versions (never a secret value).
    Show {
        /// Credential name (or id).
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Import a YAML or CSV file (admins): every row created, updated or unchanged, or — when
    /// a row is invalid — nothing, with each invalid row printed as `FILE:LINE: field: message`
    /// and exit 1. Importing the same file again changes nothing.
    Import {
        /// The file (`.yaml`/`.yml` or `.csv`; `-` reads standard input and needs --format).
        file: PathBuf,
        /// `yaml` or `csv` (default: from the file's extension).
        #[arg(long)]
        format: Option<String>,
        /// Check and compare only; store nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs a command; returns the process exit code.
///
/// # Errors
/// Anything that stops the command, reported by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve { config, listen } => {
            let overrides: Vec<(&'static str, String)> = listen.map(|l| ("listen", l)).into_iter().collect();
            let config = config.load(&overrides)?;
            crate::telemetry::init(&config.log);
            crate::server::serve(config, overrides).await?;
            Ok(0)
        }
        Command::Migrate { json, config } => {
            let config = config.load(&[])?;
            crate::server::probe_database(&config.database.url).await?;
            crate::server::open_db(&config).await?;
            if json {
                let database = crate::server::redact_url(&config.database.url);
                println_out(&serde_json::json!({ "database": database, "migrations": "applied" }).to_string());
            } else {
                println_out("migrations applied");
            }
            Ok(0)
        }
        Command::Workflows { command: WorkflowsCommand::Validate { paths, json, config } } => {
            let mut valid = Vec::new();
            let mut sources = Vec::new();
            for p in &paths {
                match crate::server::read_dir(p) {
                    Ok(defs) => {
                        for d in defs {
                            if !json {
                                println_out(&format!(
                                    "ok: {} ({} v{}, {})",
                                    d.name, d.definition.key, d.definition.version, d.definition.kind
                                ));
                            }
                            valid.push(serde_json::json!({
                                "file": d.name,
                                "key": d.definition.key,
                                "version": d.definition.version,
                                "kind": d.definition.kind.to_string(),
                            }));
                            sources.push(d);
                        }
                    }
                    Err(e) => {
                        if json {
                            let error =
                                serde_json::json!({ "file": p.display().to_string(), "detail": format!("{e:#}") });
                            println_out(&serde_json::json!({ "error": error }).to_string());
                        } else {
                            eprintln_err(&format!("error: {e:#}"));
                        }
                        return Ok(1);
                    }
                }
            }
            if let Some(file) = &config {
                let dangling = crate::server::dangling_references(file, &sources)?;
                if !dangling.is_empty() {
                    if json {
                        let error =
                            serde_json::json!({ "file": file.display().to_string(), "detail": dangling.join("\n") });
                        println_out(&serde_json::json!({ "error": error }).to_string());
                    } else {
                        for line in &dangling {
                            eprintln_err(&format!("error: {line}"));
                        }
                    }
                    return Ok(1);
                }
            }
            if json {
                println_out(&serde_json::to_string_pretty(&valid)?);
            } else {
                println_out(&format!("{} definition(s) valid", valid.len()));
            }
            Ok(0)
        }
        Command::Token { command } => token_command(command).await,
        Command::Audit { command: AuditCommand::Verify { json, config } } => {
            let config = config.load(&[])?;
            crate::server::require_existing_db(&config).await?;
            let db = crate::server::open_db(&config).await?;
            let verified = query::verify_audit(&db).await?;
            let code = i32::from(verified.is_err());
            if json {
                println_out(&serde_json::to_string_pretty(&crate::dto::VerifyOut::from(verified))?);
                return Ok(code);
            }
            match verified {
                Ok(r) => println_out(&format!(
                    "audit chain OK: {} records, head sequence {}, head hash {}",
                    r.records,
                    r.head_seq.unwrap_or(0),
                    r.head_hash.unwrap_or_default()
                )),
                Err(b) => {
                    eprintln_err(&format!("{b}"));
                    println_out(&format!("first broken sequence: {}", b.seq));
                }
            }
            Ok(code)
        }
        Command::Audit { command: AuditCommand::Export { format, output, config } } => {
            let format: ExportFormat = format.parse().map_err(|e| anyhow::anyhow!("--format: {e}"))?;
            let config = config.load(&[])?;
            crate::server::require_existing_db(&config).await?;
            let db = crate::server::open_db(&config).await?;
            let sink: Box<dyn std::io::Write + Send> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            // Stream: pages are read asynchronously and written by a blocking thread, so an
            // export of any size runs in constant memory.
            let (tx, rx) = std::sync::mpsc::sync_channel::<audit::AuditRecord>(4096);
            let writer = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                let mut sink = sink;
                audit::write_export(&mut sink, format, rx)?;
                sink.flush()?;
                Ok(())
            });
            let mut after = 0;
            'pages: loop {
                let page = query::audit_page(&db.read, after, 2000, None).await?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for r in page {
                    if tx.send(r).is_err() {
                        break 'pages;
                    }
                }
            }
            drop(tx);
            writer.await??;
            Ok(0)
        }
        Command::Request { command } => crate::client::request(command).await,
        Command::Grant { command } => crate::client::grant(command).await,
        Command::Task { command } => crate::client::task(command).await,
        Command::Credentials { command } => crate::client::credentials(command).await,
        Command::Login { url, token_stdin, token, json } => {
            let source = match (token, token_stdin) {
                (Some(t), _) => crate::client::TokenSource::Flag(t),
                (None, true) => crate::client::TokenSource::Stdin,
                (None, false) => crate::client::TokenSource::Env,
            };
            crate::client::login(&url, source, json).await
        }
        Command::Logout { json } => crate::client::logout(json),
        Command::Approve { id, comment, client } => {
            Client::new(&client)?.decide(&id, "approve", comment, client.json).await
        }
        Command::Deny { id, reason, client } => {
            Client::new(&client)?.decide(&id, "deny", Some(reason), client.json).await
        }
        Command::Reload { client } => crate::client::reload(&client).await,
        Command::Email { command: EmailCommand::Preview { template, json } } => {
            use tollgate_engine::notify::email;
            if template == "list" {
                if json {
                    println_out(&serde_json::to_string_pretty(&email::EVENTS)?);
                } else {
                    email::EVENTS.iter().for_each(|e| println_out(e));
                }
                return Ok(0);
            }
            let Some(r) = email::preview(&template)? else {
                eprintln_err(&format!("unknown template {template:?}; one of: {}", email::EVENTS.join(", ")));
                return Ok(2);
            };
            if json {
                let out =
                    serde_json::json!({ "template": template, "subject": r.subject, "text": r.text, "html": r.html });
                println_out(&serde_json::to_string_pretty(&out)?);
                return Ok(0);
            }
            println_out(&format!(
                "Subject: {}\n\n--- text/plain ---\n{}\n--- text/html ---\n{}",
                r.subject, r.text, r.html
            ));
            Ok(0)
        }
        Command::Openapi => {
            println_out(&crate::app::openapi_json());
            Ok(0)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "tollgate", &mut std::io::stdout().lock());
            Ok(0)
        }
        Command::Ready { url, json } => crate::client::ready(&url, json).await,
    }
}

/// `tollgate token …`: on the configured database, which must exist.
async fn token_command(command: TokenCommand) -> anyhow::Result<i32> {
    let now = || SystemClock.now();
    match command {
        TokenCommand::Create { principal, label, ttl, json, config } => {
            let ttl = tollgate_engine::token::check_new_token(&label, ttl.as_deref())?;
            let config = config.load(&[])?;
            let directory = config.directory()?;
            anyhow::ensure!(
                directory.active_principal(&principal).is_some(),
                "unknown or disabled principal {principal:?}"
            );
            crate::server::require_existing_db(&config).await?;
            let engine = crate::server::build_engine(&config, Arc::new(SystemClock), false, None).await?;
            let created = engine.create_token(&principal, &label, ttl, "system", "cli").await;
            engine.shutdown().await;
            let (token, secret) = created?;
            if json {
                let out = TokenCreatedOut { secret, token: TokenOut::new(&token, now()) };
                println_out(&serde_json::to_string_pretty(&out)?);
            } else {
                let expiry = token.expires_at.map_or_else(|| "never expires".to_owned(), |e| format!("expires {e}"));
                eprintln_err(&format!("token {} created for {principal} ({expiry}); it is shown once:", token.id));
                println_out(&secret);
            }
            Ok(0)
        }
        TokenCommand::List { principal, status, json, config } => {
            let status = status
                .as_deref()
                .map(|s| {
                    TokenStatus::parse(s).ok_or_else(|| anyhow::anyhow!("--status: one of active, expired, revoked"))
                })
                .transpose()?;
            let config = config.load(&[])?;
            crate::server::require_existing_db(&config).await?;
            let db = crate::server::open_db(&config).await?;
            let at = now();
            let filter = query::TokenFilter { principal, status: status.map(|s| (s, at)) };
            let mut tokens = Vec::new();
            let mut cursor = None;
            loop {
                let page = query::list_tokens(&db.read, &filter, cursor, 500).await?;
                cursor = page.last().map(|t| t.id);
                let done = page.len() < 500;
                tokens.extend(page);
                if done {
                    break;
                }
            }
            let rows: Vec<TokenOut> = tokens.iter().map(|t| TokenOut::new(t, at)).collect();
            if json {
                println_out(&serde_json::to_string_pretty(&rows)?);
                return Ok(0);
            }
            let time = |t: Option<chrono::DateTime<chrono::Utc>>, none: &str| {
                t.map_or_else(|| none.to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
            };
            println_out(&format!(
                "{:<36}  {:<16}  {:<8}  {:<16}  {:<16}  LABEL",
                "ID", "PRINCIPAL", "STATUS", "EXPIRES", "LAST USED"
            ));
            for t in &rows {
                println_out(&format!(
                    "{:<36}  {:<16}  {:<8}  {:<16}  {:<16}  {}",
                    t.id,
                    t.principal,
                    t.status,
                    time(t.expires_at, "never"),
                    time(t.last_used_at, "never"),
                    t.label
                ));
            }
            eprintln_err(&format!("{} token(s)", rows.len()));
            Ok(0)
        }
        TokenCommand::Revoke { id, json, config } => {
            let config = config.load(&[])?;
            crate::server::require_existing_db(&config).await?;
            let engine = crate::server::build_engine(&config, Arc::new(SystemClock), false, None).await?;
            let revoked = engine.revoke_token(id, "system", &[Role::Admin], "cli").await;
            engine.shutdown().await;
            let token = match revoked {
                Ok(t) => t,
                Err(tollgate_engine::JobError::NotFound(_)) => anyhow::bail!("no token {id}"),
                Err(e) => return Err(e.into()),
            };
            if json {
                println_out(&serde_json::to_string_pretty(&TokenOut::new(&token, now()))?);
            } else {
                println_out(&format!("token {id} ({}, {}) revoked", token.principal, token.label));
            }
            Ok(0)
        }
    }
}

/// Writes a line to standard output.
pub fn println_out(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

/// Writes a line to standard error.
pub fn eprintln_err(s: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{s}");
}
