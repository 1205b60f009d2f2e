//! `tollgate-bench-audit`: how long `audit verify` takes over a large chain.
//!
//! Fills a fresh database with N sealed, chained audit records shaped like the engine's own (a
//! decision with a justification, a run id, a workflow key and a small `details` object), then
//! times the chain verification that `tollgate audit verify` and `GET /v1/audit/verify` run
//! ([`tollgate_engine::store::query::verify_audit`]), and reports the records per second and the
//! process's peak memory. With `--tollgate BIN` it also times the command itself, start-up
//! included.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context as _, ensure};
use chrono::{Duration, TimeZone as _, Utc};
use clap::Parser;
use sea_orm::ActiveValue::Set;
use sea_orm::{ConnectionTrait as _, Database, EntityTrait as _, TransactionTrait as _};
use serde_json::json;
use tollgate_engine::audit::{self, AuditEvent, GENESIS_HASH};
use tollgate_engine::store::{self, entity::audit_log, query};
use uuid::Uuid;

/// Fill a fresh database with N chained audit records and time their verification.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-audit", version)]
struct Args {
    /// Audit records to write, then verify.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    records: u64,
    /// Database. Default: a SQLite file in a temporary directory; a sqlite: URL names a new file
    /// to keep (for profiling `audit verify` afterwards). With postgres://…/db, a fresh,
    /// uniquely named database is created on that server and dropped afterwards.
    #[arg(long)]
    database_url: Option<String>,
    /// Also time `BIN audit verify` against the same database (e.g. target/release/tollgate).
    #[arg(long)]
    tollgate: Option<PathBuf>,
}

/// Records per insert statement (14 columns each, under SQLite's and PostgreSQL's parameter limits).
const ROWS_PER_INSERT: usize = 500;
/// Records per transaction while filling.
const ROWS_PER_TX: u64 = 20_000;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr().lock(), "tollgate-bench-audit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, drop_pg) = match &args.database_url {
        None => (format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display()), None),
        Some(url) if url.starts_with("sqlite:") => (url.clone(), None),
        Some(base) => {
            let name = format!("tollgate_bench_audit_{}", Uuid::new_v4().simple());
            let admin = Database::connect(base.as_str()).await.context("connecting to PostgreSQL")?;
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await?;
            let (head, query) = base.split_once('?').map_or((base.as_str(), None), |(h, q)| (h, Some(q)));
            let head = head.rsplit_once('/').map_or(head, |(h, _)| h);
            let url = format!("{head}/{name}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
            (url, Some((admin, name)))
        }
    };
    let result = bench(&args, &url).await;
    if let Some((admin, name)) = drop_pg {
        admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await?;
    }
    result
}

async fn bench(args: &Args, url: &str) -> anyhow::Result<()> {
    let db = store::connect(url, 4).await?;
    store::migrate(&db).await?;
    let writer = Database::connect(url).await?;

    let started = Instant::now();
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().context("start time")?;
    let mut prev = GENESIS_HASH.to_owned();
    let mut seq = 0_i64;
    let total = i64::try_from(args.records)?;
    while seq < total {
        let tx = writer.begin().await?;
        let mut rows = Vec::with_capacity(ROWS_PER_INSERT);
        let end = (seq + i64::try_from(ROWS_PER_TX)?).min(total);
        while seq < end {
            seq += 1;
            let rec = audit::seal(seq, t0 + Duration::milliseconds(seq), event(seq), &prev);
            prev.clone_from(&rec.hash);
            rows.push(audit_log::ActiveModel {
                seq: Set(rec.seq),
                recorded_at: Set(rec.recorded_at),
                event_type: Set(rec.event.event_type),
                channel: Set(rec.event.channel),
                outcome: Set(rec.event.outcome),
                actor: Set(rec.event.actor),
                subject: Set(rec.event.subject),
                run_id: Set(rec.event.run_id),
                justification: Set(rec.event.justification),
                workflow_key: Set(rec.event.workflow_key),
                workflow_version: Set(rec.event.workflow_version),
                details: Set(audit::details_to_text(&rec.event.details)),
                prev_hash: Set(rec.prev_hash),
                hash: Set(rec.hash),
            });
            if rows.len() == ROWS_PER_INSERT {
                audit_log::Entity::insert_many(std::mem::take(&mut rows)).exec(&tx).await?;
            }
        }
        if !rows.is_empty() {
            audit_log::Entity::insert_many(rows).exec(&tx).await?;
        }
        tx.commit().await?;
    }
    let fill = started.elapsed();
    out(&format!("filled {total} records in {:.1} s", fill.as_secs_f64()));

    // Twice: the first pass also reads the file into the page cache, the second is warm.
    for pass in ["cold-ish", "warm"] {
        let started = Instant::now();
        let report = query::verify_audit(&db).await?.map_err(|b| anyhow::anyhow!("chain broken: {b:?}"))?;
        let took = started.elapsed();
        ensure!(report.records == args.records, "verified {} records, wrote {}", report.records, args.records);
        out(&format!(
            "verify ({pass}): {} records in {:.2} s ({:.0} records/s)",
            report.records,
            took.as_secs_f64(),
            report.records as f64 / took.as_secs_f64()
        ));
    }
    if let Some(bin) = &args.tollgate {
        let started = Instant::now();
        let cli = Command::new(bin)
            .args(["audit", "verify"])
            .env("TOLLGATE_DATABASE__URL", url)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let took = started.elapsed();
        ensure!(cli.status.success(), "audit verify failed: {}", String::from_utf8_lossy(&cli.stderr));
        out(&format!(
            "`tollgate audit verify`: {:.2} s ({})",
            took.as_secs_f64(),
            String::from_utf8_lossy(&cli.stdout).trim()
        ));
    }
    out(&format!("peak RSS: {} MiB", peak_rss_kib().unwrap_or(0) / 1024));
    Ok(())
}

/// Writes a line of the report to standard output.
fn out(s: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{s}");
}

/// A record shaped like an approval decision.
fn event(seq: i64) -> AuditEvent {
    let run = Uuid::from_u128(u128::try_from(seq).unwrap_or_default() / 6);
    AuditEvent {
        event_type: "decision_recorded".into(),
        channel: "slack".into(),
        outcome: "approved".into(),
        actor: format!("user:approver{}", seq % 17),
        subject: format!("request:{run}"),
        run_id: Some(run),
        justification: Some(format!("Investigating incident INC-{seq} in the billing integration")),
        workflow_key: Some("salesforce-read".into()),
        workflow_version: Some(3),
        details: json!({"step": "manager", "votes": 1, "required": 1, "scopes": ["api", "refresh_token"]}),
    }
}

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
