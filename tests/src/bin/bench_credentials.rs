//! `tollgate-bench-credentials`: importing a large credential inventory, and reading it back.
//!
//! Writes a configuration (a directory of integrations and principals, a sealing key) and a CSV
//! file of N credentials (default 100,000; `--values-percent` of them carry a secret value,
//! stored sealed, the others a reference), builds the engine as `serve` does, then:
//! 1. imports the file — parse and check, then the one all-or-nothing transaction — reporting
//!    the time and the peak resident memory of the import alone (`VmHWM`, reset before), and of
//!    each phase;
//! 2. imports it again (every row `unchanged`: nothing written);
//! 3. serves the API on loopback and times `--pages` filtered `GET /v1/credentials` pages
//!    (random integration, owner, kind, status or expiry filter; 50 a page), reporting p50, p99
//!    and the maximum, of all and of each filter.
//!
//! `--expired-percent` makes the expired credentials few and old (the pages filtered by expiry
//! then find their rows far down the id order); `--log` logs as `serve` does.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait as _, Database};
use tollgate_engine::clock::SystemClock;
use tollgate_engine::credential::{self, ImportFormat, RowOutcome};
use tollgate_engine::feature::credentials::ImportMode;
use uuid::Uuid;

/// The shipped program's allocator, so the memory figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Import N credentials and time reads of the inventory.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-credentials", version)]
struct Args {
    /// Credentials in the file.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=200_000))]
    credentials: u64,
    /// Percentage of rows carrying a secret value (sealed at rest); the others a reference.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
    values_percent: u64,
    /// Instead of expiries spread evenly over 2026–2029: this percentage of the credentials, the
    /// oldest, expired in 2025 and the others expire in 2099 — few matches, all old, for the
    /// pages filtered by expiry.
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=100))]
    expired_percent: Option<u64>,
    /// Log as `serve` does, to standard error (redirect it): one line per audit record, kept
    /// until its transaction commits.
    #[arg(long)]
    log: bool,
    /// Filtered list pages to time.
    #[arg(long, default_value_t = 1000)]
    pages: u64,
    /// Database. Default: a SQLite file in a temporary directory. With postgres://…/db, a fresh,
    /// uniquely named database is created on that server and dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
}

const INTEGRATIONS: usize = 20;
const PRINCIPALS: usize = 200;
/// The page filters, in the order the pages cycle through them.
const FILTERS: [&str; 5] = ["integration", "owner", "kind", "status=expired", "expiring_before"];
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

#[tokio::main]
async fn main() -> ExitCode {
    tollgate_tests::install_crypto_provider();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "tollgate-bench-credentials: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, drop_pg) = match &args.database_url {
        None => (format!("sqlite://{}?mode=rwc", dir.path().join("credentials.db").display()), None),
        Some(base) => {
            let name = format!("tollgate_bench_credentials_{}", Uuid::new_v4().simple());
            let admin = Database::connect(base.as_str()).await.context("connecting to PostgreSQL")?;
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
            let (head, query) = base.split_once('?').map_or((base.as_str(), None), |(h, q)| (h, Some(q)));
            let head = head.rsplit_once('/').map_or(head, |(h, _)| h);
            let url = format!("{head}/{name}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
            (url, Some((admin, name)))
        }
    };
    let result = bench(&args, &url, dir.path()).await;
    if let Some((admin, name)) = drop_pg {
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    }
    result
}

fn config_toml(url: &str, dir: &std::path::Path) -> String {
    let mut toml = format!(
        "listen = \"127.0.0.1:0\"\n\n[database]\nurl = \"{url}\"\n\n[workflows]\nbundled = true\ndir = \"{}\"\n\n\
         [secrets]\nkey = \"{KEY}\"\n\n[principals.admin]\nname = \"Admin\"\nemail = \"admin@example.com\"\nroles = [\"admin\"]\n",
        dir.join("workflows").display()
    );
    for p in 0..PRINCIPALS {
        toml.push_str(&format!("\n[principals.p{p}]\nname = \"Person {p}\"\nemail = \"p{p}@example.com\"\n"));
    }
    for i in 0..INTEGRATIONS {
        toml.push_str(&format!(
            "\n[integrations.int-{i}]\napp = \"app{i}\"\nenvironment = \"{}\"\nowner = \"p{i}\"\n\
             scopes = [{{ name = \"read\", risk = \"low\" }}]\nconnector = {{ type = \"manual\", operator = \"admin\" }}\n",
            if i % 2 == 0 { "production" } else { "staging" }
        ));
    }
    toml
}

/// The CSV file: credential `c{n}` on integration `int-{n % 20}`, owned by `p{n % 200}`.
fn csv_file(n: u64, values_percent: u64, expired_percent: Option<u64>) -> String {
    let kinds = credential::CredentialKind::ALL;
    let mut out = String::with_capacity(usize::try_from(n).unwrap_or(0) * 160);
    out.push_str("name,kind,integration,owner,scopes,issued_at,expires_at,revocation,secret_ref,value\n");
    for i in 0..n {
        let kind = kinds[usize::try_from(i).unwrap_or(0) % kinds.len()].as_str();
        let (secret_ref, value) = if i % 100 < values_percent {
            (String::new(), format!("sk_{i:08}_0123456789abcdefghij"))
        } else {
            (format!("vault:kv/data/c{i}#token"), String::new())
        };
        let expires = match expired_percent {
            None => 2026 + i % 4,
            Some(p) if i * 100 < p * n => 2025,
            Some(_) => 2099,
        };
        out.push_str(&format!(
            "c{i:06},{kind},int-{},p{},read write,{}-01-01T00:00:00Z,{expires}-{:02}-01T00:00:00Z,manual,{secret_ref},{value}\n",
            i % INTEGRATIONS as u64,
            i % PRINCIPALS as u64,
            expires.min(2026),
            1 + i % 12,
        ));
    }
    out
}

async fn bench(args: &Args, url: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir.join("workflows"))?;
    let config_path = dir.join("tollgate.toml");
    std::fs::write(&config_path, config_toml(url, dir))?;
    let config = tollgate::config::load(Some(&config_path), &[])?;
    if args.log {
        tollgate::telemetry::init(&config.log);
    }
    let engine = tollgate::server::build_engine(&config, Arc::new(SystemClock), false, None).await?;
    let content = csv_file(args.credentials, args.values_percent, args.expired_percent);
    out(&format!(
        "{} credentials ({}% with a sealed value), CSV {:.1} MiB, database {}",
        args.credentials,
        args.values_percent,
        content.len() as f64 / 1_048_576.0,
        if url.starts_with("sqlite") { "SQLite" } else { "PostgreSQL" }
    ));

    // 1. The import, alone in the peak-memory figure.
    let base_rss = reset_peak_rss();
    let started = Instant::now();
    let parsed = credential::parse(ImportFormat::Csv, &content, &mut |_| {});
    let parse_took = started.elapsed();
    // The peak of each phase: the import's is the larger one.
    let parse_peak = peak_rss_kib().unwrap_or(0);
    reset_peak_rss();
    ensure!(parsed.invalid.is_empty(), "invalid rows: {:?}", &parsed.invalid[..parsed.invalid.len().min(3)]);
    let report = engine.import_credentials(parsed, ImportMode::Upsert, false, "admin", "cli").await?;
    let took = started.elapsed();
    ensure!(report.applied && report.invalid.is_empty(), "not applied: {:?}", report.invalid.first());
    ensure!(report.count(RowOutcome::Created) == usize::try_from(args.credentials)?, "not all created");
    let transaction_peak = peak_rss_kib().unwrap_or(0);
    out(&format!(
        "import: {:.2} s (parse {:.2} s, transaction {:.2} s), {:.0} rows/s; peak RSS {} MiB \
         ({} MiB before; parse {} MiB, transaction {} MiB)",
        took.as_secs_f64(),
        parse_took.as_secs_f64(),
        (took - parse_took).as_secs_f64(),
        args.credentials as f64 / took.as_secs_f64(),
        parse_peak.max(transaction_peak) / 1024,
        base_rss / 1024,
        parse_peak / 1024,
        transaction_peak / 1024,
    ));

    // 2. The same file again: nothing to write.
    reset_peak_rss();
    let started = Instant::now();
    let parsed = credential::parse(ImportFormat::Csv, &content, &mut |_| {});
    let report = engine.import_credentials(parsed, ImportMode::Upsert, false, "admin", "cli").await?;
    let took = started.elapsed();
    ensure!(report.count(RowOutcome::Unchanged) == usize::try_from(args.credentials)?, "a re-import changed rows");
    out(&format!(
        "re-import (all unchanged): {:.2} s; peak RSS {} MiB",
        took.as_secs_f64(),
        peak_rss_kib().unwrap_or(0) / 1024
    ));
    drop(content);

    // 3. Filtered pages over HTTP.
    let (_, token) = engine.create_token("admin", "bench", None, "admin", "cli").await?;
    let router = tollgate::app::router(engine.clone(), 1 << 20, "http://127.0.0.1", None);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = tollgate_engine::http::client(Duration::from_secs(30))?;
    let mut hist = Histogram::<u64>::new(3)?;
    // The same, by filter: a slow filter shows in its own line.
    let mut by_filter = [(); FILTERS.len()].map(|()| Histogram::<u64>::new(3));
    let kinds = credential::CredentialKind::ALL;
    for i in 0..args.pages {
        let filter = match i % 5 {
            0 => format!("integration=int-{}", i % INTEGRATIONS as u64),
            1 => format!("owner=p{}", i % PRINCIPALS as u64),
            2 => format!("kind={}", kinds[usize::try_from(i).unwrap_or(0) % kinds.len()].as_str()),
            3 => "status=expired".to_owned(),
            _ => format!("expiring_before=2027-{:02}-01T00:00:00Z", 1 + i % 12),
        };
        let url = format!("http://{addr}/v1/credentials?{filter}&limit=50");
        let started = Instant::now();
        let resp = http.get(&url).bearer_auth(&token).send().await?;
        let status = resp.status();
        let body = resp.bytes().await?;
        let took = started.elapsed();
        ensure!(status.is_success(), "GET {url}: {status} {}", String::from_utf8_lossy(&body));
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        hist.record(micros)?;
        if let Some(Ok(h)) = by_filter.get_mut(usize::try_from(i % 5)?) {
            h.record(micros)?;
        }
    }
    out(&format!(
        "GET /v1/credentials (filtered, 50 a page) x{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.pages,
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    ));
    for (name, h) in FILTERS.iter().zip(by_filter) {
        let h = h?;
        out(&format!(
            "  {name}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        ));
    }
    engine.shutdown().await;
    Ok(())
}

/// Writes a line of the report to standard output.
fn out(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

/// Resets the peak resident set to the current one (Linux: `/proc/self/clear_refs`); returns it.
fn reset_peak_rss() -> u64 {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    rss_field("VmRSS:").unwrap_or(0)
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    rss_field("VmHWM:")
}

fn rss_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
