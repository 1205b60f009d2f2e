//! `tollgate-bench-slack`: how long a signed Approve click takes from arriving at
//! `POST /slack/interactions` to being acknowledged, the decision committed, with many clicks in
//! flight at once. Slack gives an app 3 s to acknowledge.
//!
//! Each wave creates `--concurrency` requests on an integration needing one approval, waits until
//! the fake Slack Web API received every approval message, then fires one signed click per
//! message at once (approvers in turn) and times each HTTP round trip on loopback. After the wave
//! every request is checked to have left its approval step: an acknowledgement means the vote
//! was committed. Grants last an hour, so revocations do not run during the measurement.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use tollgate_tests::slack::{self, FakeSlack, PostedMessage, SlackActor};
use tollgate_tests::{Receiver, Server, ServerOptions, TestDb, wall_clock};

/// Measure signed click → decision committed and acknowledged latency.
#[derive(Debug, Parser)]
#[command(name = "tollgate-bench-slack", version)]
struct Args {
    /// Clicks in flight at once (and requests per wave).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    concurrency: u64,
    /// Waves of `concurrency` clicks.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    waves: u64,
}

const SIGNING_SECRET: &str = "bench-slack-signing-secret-0123456789";
const BOT_TOKEN: &str = "xoxb-bench-token";
const CHANNEL: &str = "C0APPROVALS";
/// The approvers of `wiki-staging` (owner and security), by Slack id.
const APPROVERS: [&str; 3] = ["U0BOB", "U0CAROL", "U0DAVE"];

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-bench-slack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let fake = FakeSlack::try_start(BOT_TOKEN).await?;
    let receiver = Receiver::start().await?;
    let mut opts = ServerOptions::new(&receiver).slack_user("carol", "U0CAROL").slack_user("dave", "U0DAVE");
    opts.notify_url = None;
    opts.extra_config.push_str("\n[email]\nenabled = false\n");
    opts.extra_config.push_str(&fake.config(SIGNING_SECRET, Some(CHANNEL)));
    let db = TestDb::new().await?;
    let backend = db.backend();
    let server = Server::start(db, opts).await?;
    let alice = Arc::new(server.client("alice").await?);
    let url = format!("{}/slack/interactions", server.url());
    let http = reqwest::Client::builder().pool_max_idle_per_host(usize::try_from(args.concurrency)?).build()?;

    let mut acks = Histogram::<u64>::new(3)?;
    let mut clicking = Duration::ZERO;
    let mut seen_posts = 0;
    for wave in 0..args.waves {
        let mut created = tokio::task::JoinSet::new();
        for i in 0..args.concurrency {
            let alice = alice.clone();
            created.spawn(async move {
                let body = json!({
                    "integration": "wiki-staging", "scopes": ["read"], "duration": "1h",
                    "justification": format!("bench-slack wave {wave} run {i}"),
                });
                let v = alice.create_request(&body).await?;
                anyhow::Ok(v["id"].as_str().context("no id")?.to_owned())
            });
        }
        let mut ids = Vec::new();
        while let Some(r) = created.join_next().await {
            ids.push(r??);
        }
        let messages = approval_messages(&fake, &ids, &mut seen_posts).await.map_err(|e| {
            let log = server.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            e.context(format!("server log tail:\n{}", tail.join("\n")))
        })?;

        let barrier = Arc::new(tokio::sync::Barrier::new(ids.len()));
        let mut clicks = tokio::task::JoinSet::new();
        for (n, id) in ids.iter().enumerate() {
            let message = messages[id].clone();
            let (http, url, barrier) = (http.clone(), url.clone(), barrier.clone());
            let user = APPROVERS[n % APPROVERS.len()];
            clicks.spawn(async move {
                let actor = SlackActor::new(user, FakeSlack::TEAM_ID, FakeSlack::APP_ID);
                let value = button_value(&message).context("no Approve button")?;
                barrier.wait().await;
                let click =
                    slack::block_action_on(SIGNING_SECRET, &actor, "tollgate_approve", &value, &message, wall_clock());
                let sent = Instant::now();
                let response = click.post(&http, &url).await?;
                let status = response.status();
                let body = response.bytes().await?;
                let took = sent.elapsed();
                if !status.is_success() || !body.is_empty() {
                    bail!("click answered {status}: {}", String::from_utf8_lossy(&body));
                }
                anyhow::Ok(took)
            });
        }
        let started = Instant::now();
        while let Some(r) = clicks.join_next().await {
            acks.record(u64::try_from(r??.as_micros()).unwrap_or(u64::MAX))?;
        }
        clicking += started.elapsed();

        // Acknowledged means committed: no request may still await its approval.
        for id in &ids {
            let view = alice.request_view(id).await?;
            if view["status"] == "awaiting_approval" {
                bail!("request {id} was acknowledged but is still awaiting approval");
            }
        }
    }
    let ms = |q: f64| acks.value_at_quantile(q) as f64 / 1000.0;
    let clicks = args.concurrency * args.waves;
    let report = json!({
        "bench": "tollgate-slack",
        "clicks": clicks, "concurrency": args.concurrency, "waves": args.waves,
        "backend": format!("{backend:?}"),
        "click_ack_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": acks.max() as f64 / 1000.0 },
        "clicks_per_sec": clicks as f64 / clicking.as_secs_f64(),
    });
    #[expect(clippy::print_stdout, reason = "the report is the program's output")]
    {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// The Approve button's value on an approval message.
fn button_value(message: &PostedMessage) -> Option<String> {
    message
        .blocks
        .iter()
        .filter_map(|b| b["elements"].as_array())
        .flatten()
        .find(|e| e["action_id"] == "tollgate_approve")
        .and_then(|e| e["value"].as_str().map(str::to_owned))
}

/// Waits until the approval message of every request in `ids` was posted; returns them by
/// request id, as posted. `seen` is how many `chat.postMessage` calls earlier waves consumed.
async fn approval_messages(
    fake: &FakeSlack,
    ids: &[String],
    seen: &mut usize,
) -> anyhow::Result<HashMap<String, PostedMessage>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = HashMap::new();
    loop {
        let posts = fake.calls_to("chat.postMessage");
        for call in posts.iter().skip(*seen).filter(|c| c.ok() && c.param("thread_ts").is_none()) {
            let message = PostedMessage {
                channel: call.response["channel"].as_str().unwrap_or_default().to_owned(),
                ts: call.response["ts"].as_str().unwrap_or_default().to_owned(),
                thread_ts: None,
                text: call.param("text").unwrap_or_default().to_owned(),
                blocks: call.body["blocks"].as_array().cloned().unwrap_or_default(),
                updates: 0,
            };
            let Some(value) = button_value(&message) else { continue };
            let id = value.split(':').next().unwrap_or_default().to_owned();
            if ids.contains(&id) {
                found.insert(id, message);
            }
        }
        *seen = posts.len();
        if found.len() == ids.len() {
            return Ok(found);
        }
        if Instant::now() >= deadline {
            bail!("only {} of {} approval messages were posted within 60 s", found.len(), ids.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
