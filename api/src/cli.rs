//! The command line: server and operator commands that open the database, and client commands
//! for people that talk to a running server.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tollgate_engine::audit::{self, ExportFormat};
use tollgate_engine::clock::SystemClock;
use tollgate_engine::store::query;

use crate::client::{Client, ClientArgs};
use crate::config::{self, Config};

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
    /// Email templates.
    Email {
        #[command(subcommand)]
        command: EmailCommand,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Ask a running server whether it is ready (`GET /readyz`): exit 0 when it is, 1 when not
    /// or unreachable. For container health checks.
    Ready {
        /// Server URL.
        #[arg(long, env = "TOLLGATE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
}

/// `email` subcommands.
#[derive(Debug, Subcommand)]
pub enum EmailCommand {
    /// Render a template with sample data: subject, plain text, then HTML.
    Preview {
        /// Template (event) name; `list` shows them all.
        template: String,
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
    },
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a principal; prints it once.
    Create {
        /// The principal the token acts as.
        #[arg(long, short = 'p')]
        principal: String,
        /// A label for the token.
        #[arg(long, default_value = "cli")]
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// `audit` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify every link of the chain; print the first broken sequence and exit 1 if any.
    Verify {
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

/// Runs a command; returns the process exit code.
///
/// # Errors
/// Anything that stops the command, reported by `main`.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Serve { config, listen } => {
            let overrides: Vec<(&str, String)> = listen.map(|l| ("listen", l)).into_iter().collect();
            let config = config.load(&overrides)?;
            crate::telemetry::init(&config.log);
            crate::server::serve(config).await?;
            Ok(0)
        }
        Command::Migrate { config } => {
            let config = config.load(&[])?;
            crate::server::open_db(&config).await?;
            println_out("migrations applied");
            Ok(0)
        }
        Command::Workflows { command: WorkflowsCommand::Validate { paths } } => {
            let mut n = 0;
            for p in &paths {
                match crate::server::read_dir(p) {
                    Ok(defs) => {
                        for d in defs {
                            println_out(&format!(
                                "ok: {} ({} v{}, {})",
                                d.name, d.definition.key, d.definition.version, d.definition.kind
                            ));
                            n += 1;
                        }
                    }
                    Err(e) => {
                        eprintln_err(&format!("error: {e:#}"));
                        return Ok(1);
                    }
                }
            }
            println_out(&format!("{n} definition(s) valid"));
            Ok(0)
        }
        Command::Token { command: TokenCommand::Create { principal, name, config } } => {
            let config = config.load(&[])?;
            let directory = config.directory()?;
            anyhow::ensure!(
                directory.active_principal(&principal).is_some(),
                "unknown or disabled principal {principal:?}"
            );
            let engine = crate::server::build_engine(&config, Arc::new(SystemClock), false, None).await?;
            let (id, token) = engine.create_token(&principal, &name, "system", "cli").await?;
            engine.shutdown().await;
            eprintln_err(&format!("token {id} created for {principal}; it is shown once:"));
            println_out(&token);
            Ok(0)
        }
        Command::Audit { command: AuditCommand::Verify { config } } => {
            let config = config.load(&[])?;
            let db = crate::server::open_db(&config).await?;
            match query::verify_audit(&db).await? {
                Ok(r) => {
                    println_out(&format!(
                        "audit chain OK: {} records, head sequence {}, head hash {}",
                        r.records,
                        r.head_seq.unwrap_or(0),
                        r.head_hash.unwrap_or_default()
                    ));
                    Ok(0)
                }
                Err(b) => {
                    eprintln_err(&format!("{b}"));
                    println_out(&format!("first broken sequence: {}", b.seq));
                    Ok(1)
                }
            }
        }
        Command::Audit { command: AuditCommand::Export { format, output, config } } => {
            let format: ExportFormat = format.parse().map_err(|e| anyhow::anyhow!("--format: {e}"))?;
            let config = config.load(&[])?;
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
        Command::Approve { id, comment, client } => {
            Client::new(&client)?.decide(&id, "approve", comment, client.json).await
        }
        Command::Deny { id, reason, client } => {
            Client::new(&client)?.decide(&id, "deny", Some(reason), client.json).await
        }
        Command::Email { command: EmailCommand::Preview { template } } => {
            use tollgate_engine::notify::email;
            if template == "list" {
                email::EVENTS.iter().for_each(|e| println_out(e));
                return Ok(0);
            }
            let Some(r) = email::preview(&template)? else {
                eprintln_err(&format!("unknown template {template:?}; one of: {}", email::EVENTS.join(", ")));
                return Ok(2);
            };
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
        Command::Ready { url } => crate::client::ready(&url).await,
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
