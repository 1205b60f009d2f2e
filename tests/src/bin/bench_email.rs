//! `tollgate-bench-email`: how long from a request reaching its approval step to the approval
//! emails being accepted by a real SMTP server on loopback, with many runs in flight at once.
//!
//! Each wave creates `--concurrency` requests at once on an integration with three approvers
//! (each run sends three messages, each with its own single-use link), then waits until the
//! SMTP server accepted all of them. The clock starts when the create call returns: the run was
//! committed at its approval step by then, so the figures slightly understate the true latency
//! (by the create response's transfer time, well under a millisecond on loopback).

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use tollgate_tests::{Receiver, Server, ServerOptions, SmtpServer, TestDb};

/// Measure approval step → SMTP accepted latency.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-email", version)]
struct Args {
    /// Runs in flight at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Waves of `concurrency` runs.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    waves: u64,
}

const APPROVERS: [&str; 3] = ["bob@example.com", "carol@example.com", "dave@example.com"];

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-bench-email: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let smtp = SmtpServer::start()?;
    let receiver = Receiver::start().await?;
    let mut opts = ServerOptions::new(&receiver);
    opts.notify_url = None;
    opts.extra_config.push_str(&SmtpServer::config(smtp.port()));
    opts.extra_config = opts.extra_config.replace("timeout = \"2s\"", "timeout = \"10s\"\npool_max = 8");
    let db = TestDb::new().await?;
    let backend = db.backend();
    let server = Server::start(db, opts).await?;
    let alice = Arc::new(server.client("alice").await?);

    let mut first = Histogram::<u64>::new(3)?;
    let mut all = Histogram::<u64>::new(3)?;
    let started = Instant::now();
    for wave in 0..args.waves {
        let mut created = tokio::task::JoinSet::new();
        for i in 0..args.concurrency {
            let alice = alice.clone();
            created.spawn(async move {
                let body = json!({
                    "integration": "wiki-staging", "scopes": ["read"],
                    "justification": format!("bench-email wave {wave} run {i}"),
                });
                let v = alice.create_request(&body).await?;
                anyhow::Ok((v["id"].as_str().context("no id")?.to_owned(), Instant::now()))
            });
        }
        let mut at: HashMap<String, Instant> = HashMap::new();
        while let Some(r) = created.join_next().await {
            let (id, t) = r??;
            at.insert(id, t);
        }
        let expected = at.len() * APPROVERS.len();
        let mails = smtp
            .wait_for("every approval email of the wave", Duration::from_secs(30), |ms| {
                ms.iter().filter(|m| at.keys().any(|id| m.text.contains(id.as_str()))).count() >= expected
            })
            .await
            .map_err(|e| {
                let log = server.log();
                let sent = log.matches("email sent").count();
                let tail: Vec<&str> = log.lines().filter(|l| !l.contains("request created")).rev().take(30).collect();
                let tail = std::iter::once(format!("{sent} emails sent according to the log"))
                    .chain(tail.into_iter().map(str::to_owned))
                    .collect::<Vec<_>>();
                e.context(format!("server log tail:\n{}", tail.join("\n")))
            })?;
        for (id, t0) in &at {
            let accepted: Vec<Instant> =
                mails.iter().filter(|m| m.text.contains(id.as_str())).map(|m| m.accepted_at).collect();
            let micros = |t: &Instant| u64::try_from(t.saturating_duration_since(*t0).as_micros()).unwrap_or(u64::MAX);
            first.record(accepted.iter().map(micros).min().unwrap_or_default())?;
            all.record(accepted.iter().map(micros).max().unwrap_or_default())?;
        }
    }
    let elapsed = started.elapsed();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let runs = args.concurrency * args.waves;
    let report = json!({
        "bench": "tollgate-email",
        "runs": runs, "concurrency": args.concurrency, "emails": runs * 3,
        "backend": format!("{backend:?}"),
        "first_email_ms": { "p50": ms(&first, 0.5), "p99": ms(&first, 0.99), "max": first.max() as f64 / 1000.0 },
        "all_three_emails_ms": { "p50": ms(&all, 0.5), "p99": ms(&all, 0.99), "max": all.max() as f64 / 1000.0 },
        "emails_per_sec": (runs * 3) as f64 / elapsed.as_secs_f64(),
    });
    #[expect(clippy::print_stdout, reason = "the report is the program's output")]
    {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
