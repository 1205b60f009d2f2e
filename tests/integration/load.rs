//! A load driver shared by the replica and crash tests: many short grant lifecycles (request →
//! one approval → grant → expiry → revoke) spread over one or more servers, each created on one
//! server and decided on another; a call that finds its server down (or loses its answer) is
//! retried on another one. Then the checks every such lifecycle must pass: completed, revoked
//! within a bound after its expiry, one idempotency key per effect, each transition audited once,
//! no timer left, a verifiable audit chain.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tollgate_tests::{ApiClient, Receiver, Server, TestDb};

/// Asks for access.
pub(crate) const REQUESTER: &str = "alice";
/// Owner of `wiki-staging`, whose `test-grant` workflow needs exactly one approval.
pub(crate) const APPROVER: &str = "bob";
/// Reads requests and the audit log.
pub(crate) const AUDITOR: &str = "audrey";

/// Statuses a request never leaves.
const FINAL: [&str; 5] = ["completed", "failed", "denied", "expired", "cancelled"];

/// Audit events every lifecycle records exactly once.
const ONCE: [&str; 7] = [
    "request_created",
    "approval_recorded",
    "request_approved",
    "grant_succeeded",
    "access_expired",
    "revoke_succeeded",
    "request_completed",
];

/// Audit events no lifecycle may record: the expiry sweep revoking a grant whose expiry timer
/// was lost is a safety net, not how a grant is meant to end.
const NEVER: [&str; 1] = ["expiry_recovered"];

/// Pause between polls of a request, and before retrying a call that found its server down.
const PAUSE: Duration = Duration::from_millis(250);

/// When to look at a request first after its grant's expiry.
const FIRST_LOOK: chrono::Duration = chrono::Duration::milliseconds(400);

/// A revoke call arriving this long before the grant's expiry counts as early (both clocks are
/// this machine's wall clock; the margin only absorbs timestamp truncation).
const EARLY_MARGIN: chrono::Duration = chrono::Duration::milliseconds(100);

/// One server as the driver sees it: a client per principal. Clients follow the server's
/// address across restarts.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) requester: ApiClient,
    pub(crate) approver: ApiClient,
    pub(crate) auditor: ApiClient,
}

impl Endpoint {
    /// Clients for every server, with one token per principal made on the first (the servers
    /// share one database, so a token works on all of them).
    pub(crate) async fn all(servers: &[&Server]) -> anyhow::Result<Vec<Self>> {
        let first = servers.first().context("no server")?;
        let requester = first.token(REQUESTER).await?;
        let approver = first.token(APPROVER).await?;
        let auditor = first.token(AUDITOR).await?;
        servers
            .iter()
            .map(|s| {
                let anonymous = s.anonymous()?;
                Ok(Self {
                    requester: anonymous.with_token(Some(&requester)),
                    approver: anonymous.with_token(Some(&approver)),
                    auditor: anonymous.with_token(Some(&auditor)),
                })
            })
            .collect()
    }
}

/// What to drive.
#[derive(Debug, Clone)]
pub(crate) struct Load {
    /// Lifecycles in all.
    pub(crate) lifecycles: usize,
    /// Lifecycles in flight at once, each from its request until it is seen completed (or its
    /// revocation is overdue).
    pub(crate) concurrency: usize,
    /// Grant durations in whole seconds, used in turn.
    pub(crate) durations: Vec<u64>,
    /// The servers (indices into the endpoints) lifecycle `i` is created and decided on.
    pub(crate) pairing: fn(usize) -> (usize, usize),
    /// How long after its expiry a grant must be revoked: asserted, and how long the driver
    /// keeps watching a lifecycle.
    pub(crate) lag: Duration,
    /// How long a call may keep finding its servers down before the driver gives up.
    pub(crate) retry_for: Duration,
    /// Prefix of idempotency keys and justifications, unique per test.
    pub(crate) tag: &'static str,
}

/// Every ordered pair of two distinct servers out of three, in turn:
/// 0→1, 0→2, 1→2, 1→0, 2→0, 2→1.
pub(crate) fn every_ordered_pair_of_three(i: usize) -> (usize, usize) {
    let p = i % 6;
    let created = p / 2;
    (created, (created + 1 + p % 2) % 3)
}

/// One driven lifecycle.
#[derive(Debug, Clone)]
pub(crate) struct Lifecycle {
    /// Position in the load.
    pub(crate) index: usize,
    /// Request id.
    pub(crate) id: String,
    /// The server that answered the request 201.
    pub(crate) created_on: usize,
    /// The server that answered the approval 200; `None` when an attempt whose answer was lost
    /// had recorded it (the retry was refused as already decided).
    pub(crate) decided_on: Option<usize>,
    /// Attempts beyond the first at creating (a server was down, or the answer was lost).
    pub(crate) create_retries: u32,
    /// Attempts beyond the first at deciding.
    pub(crate) decide_retries: u32,
    /// Whether the 201 was a replay of a create whose answer was lost (`Idempotent-Replayed`).
    pub(crate) create_replayed: bool,
}

/// Drives `load` over `endpoints`; returns the lifecycles in order. Fails when a call could not
/// be made at all (no server answered within `retry_for`, or an answer no retry explains);
/// whether the lifecycles ended well is for [`verify`].
pub(crate) async fn drive(endpoints: &[Endpoint], load: &Load) -> anyhow::Result<Vec<Lifecycle>> {
    assert!(!endpoints.is_empty() && load.concurrency > 0 && !load.durations.is_empty(), "empty load: {load:?}");
    let endpoints: Arc<[Endpoint]> = endpoints.into();
    let load = Arc::new(load.clone());
    let permits = Arc::new(Semaphore::new(load.concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..load.lifecycles {
        let permit = permits.clone().acquire_owned().await?;
        let (endpoints, load) = (endpoints.clone(), load.clone());
        tasks.spawn(async move {
            let _permit = permit;
            lifecycle(&endpoints, &load, i).await.with_context(|| format!("lifecycle {i}"))
        });
    }
    let mut done = Vec::with_capacity(load.lifecycles);
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a lifecycle task panicked")? {
            Ok(l) => done.push(l),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        errors.sort();
        bail!("{} of {} lifecycles could not be driven:\n{}", errors.len(), load.lifecycles, errors.join("\n"));
    }
    done.sort_by_key(|l| l.index);
    Ok(done)
}

/// Servers to try in turn: `first`, then the others, `last` at the end (so a lifecycle stays
/// split over two servers while it can).
fn order(n: usize, first: usize, last: usize) -> Vec<usize> {
    let mut v = vec![first];
    v.extend((1..n).map(|k| (first + k) % n).filter(|&s| s != last));
    if last != first && last < n {
        v.push(last);
    }
    v
}

async fn lifecycle(endpoints: &[Endpoint], load: &Load, index: usize) -> anyhow::Result<Lifecycle> {
    let n = endpoints.len();
    let (create_on, decide_on) = (load.pairing)(index);
    let (create_on, decide_on) = (create_on % n, decide_on % n);
    let (id, created_on, create_retries, create_replayed) =
        create(endpoints, load, index, &order(n, create_on, decide_on)).await?;
    let decide_order = order(n, decide_on, created_on);
    let (decided_on, decide_retries, mut view) = decide(endpoints, load, &id, &decide_order).await?;
    let started = tollgate_tests::wall_clock();
    // Watch it until it ends, or until its revocation is overdue (then `verify` reports it).
    loop {
        if view["status"].as_str().is_some_and(|s| FINAL.contains(&s)) {
            break;
        }
        let now = tollgate_tests::wall_clock();
        let expires_at = timestamp(&view["grant"]["expires_at"]);
        let deadline = expires_at.unwrap_or(started + to_chrono(load.retry_for)) + to_chrono(load.lag);
        if now >= deadline {
            break;
        }
        // First look shortly after the expiry, when the revocation is normally done.
        let pause = match expires_at {
            Some(e) if e + FIRST_LOOK > now => to_std(e + FIRST_LOOK - now),
            _ => PAUSE,
        };
        tokio::time::sleep(pause.min(to_std(deadline - now))).await;
        view = fetch_view(endpoints, load, &id, &decide_order).await?;
    }
    Ok(Lifecycle { index, id, created_on, decided_on, create_retries, decide_retries, create_replayed })
}

/// Creates lifecycle `index`'s request with an `Idempotency-Key`, so a retry after a lost answer
/// returns the request already made instead of making another.
async fn create(
    endpoints: &[Endpoint],
    load: &Load,
    index: usize,
    order: &[usize],
) -> anyhow::Result<(String, usize, u32, bool)> {
    let duration = load.durations[index % load.durations.len()];
    let body = json!({
        "integration": "wiki-staging",
        "scopes": ["edit"],
        "duration": format!("{duration}s"),
        "justification": format!("{} load {index}", load.tag),
    });
    let key = format!("{}-{index}", load.tag);
    failover(order, load.retry_for, "created the request", |server, attempt| {
        let (c, key, body) = (&endpoints[server].requester, &key, &body);
        async move {
            let r =
                match c.send(c.request(Method::POST, "/v1/requests").header("Idempotency-Key", key).json(body)).await {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(format!("server {server}: {e:#}"))),
                };
            match r.status {
                201 => {
                    let id = r.body["id"].as_str().with_context(|| format!("no id in {}", r.text))?.to_owned();
                    Ok(Ok((id, server, attempt, r.header("idempotent-replayed") == Some("true"))))
                }
                503 => Ok(Err(format!("server {server} answered 503: {}", r.text))),
                status => bail!(
                    "POST /v1/requests on server {server} (attempt {}) answered {status}: {}",
                    attempt + 1,
                    r.text
                ),
            }
        }
    })
    .await
}

/// Calls `call(server, attempt)` on the servers of `order` in turn until it answers (`Ok(Ok)`)
/// or fails for good (`Err`); an `Ok(Err(why))` — the server is down or answered 503 — moves on
/// to the next server after a short pause, for at most `retry_for`.
async fn failover<T, F, Fut>(order: &[usize], retry_for: Duration, what: &str, mut call: F) -> anyhow::Result<T>
where
    F: FnMut(usize, u32) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = Instant::now() + retry_for;
    let mut attempt: u32 = 0;
    loop {
        let server = order[attempt as usize % order.len()];
        let last = match call(server, attempt).await? {
            Ok(done) => return Ok(done),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            bail!("no server {what} within {retry_for:?}; last: {last}");
        }
        attempt += 1;
        // A restart takes a moment: give it one before the next server is asked.
        tokio::time::sleep(PAUSE).await;
    }
}

/// Approves as [`APPROVER`]. A retry refused as already decided is accepted only when the
/// request shows that approval: an earlier attempt whose answer was lost recorded it.
async fn decide(
    endpoints: &[Endpoint],
    load: &Load,
    id: &str,
    order: &[usize],
) -> anyhow::Result<(Option<usize>, u32, Value)> {
    failover(order, load.retry_for, "took the approval", |server, attempt| async move {
        match endpoints[server].approver.decide(id, "approve").await {
            Ok((200, view)) => Ok(Ok((Some(server), attempt, view))),
            Ok((409, body))
                if attempt > 0
                    && matches!(body["error"]["code"].as_str(), Some("already_decided" | "already_voted")) =>
            {
                let view = fetch_view(endpoints, load, id, order).await?;
                let recorded = view["approvals"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v["approver"] == APPROVER && v["decision"] == "approve"));
                if !recorded {
                    bail!(
                        "retried approval on server {server} answered 409 {body}, but no approval by {APPROVER} was recorded: {view}"
                    );
                }
                Ok(Ok((None, attempt, view)))
            }
            Ok((503, body)) => Ok(Err(format!("server {server} answered 503: {body}"))),
            Ok((status, body)) => {
                bail!("approval on server {server} (attempt {}) answered {status}: {body}", attempt + 1)
            }
            Err(e) => Ok(Err(format!("server {server}: {e:#}"))),
        }
    })
    .await
}

/// The request's view from the first server that answers.
async fn fetch_view(endpoints: &[Endpoint], load: &Load, id: &str, order: &[usize]) -> anyhow::Result<Value> {
    failover(order, load.retry_for, &format!("showed request {id}"), |server, _| async move {
        match endpoints[server].requester.get(&format!("/v1/requests/{id}")).await {
            Ok((200, view)) => Ok(Ok(view)),
            Ok((503, body)) => Ok(Err(format!("server {server} answered 503: {body}"))),
            Ok((status, body)) => bail!("GET /v1/requests/{id} on server {server} answered {status}: {body}"),
            Err(e) => Ok(Err(format!("server {server}: {e:#}"))),
        }
    })
    .await
}

fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| s.parse().ok())
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn to_std(d: chrono::Duration) -> Duration {
    d.to_std().unwrap_or_default()
}

/// Figures of a verified load.
#[derive(Debug, Default)]
pub(crate) struct Summary {
    /// Lifecycles driven.
    pub(crate) lifecycles: usize,
    /// Lifecycles that completed with their grant revoked.
    pub(crate) completed: usize,
    /// Grant and revoke calls repeated with the same key (at-least-once delivery).
    pub(crate) redeliveries: usize,
    /// Latest revoke call after its grant's expiry (`None`: no revoke call seen).
    pub(crate) max_lateness: Option<chrono::Duration>,
    /// Median of the same.
    pub(crate) median_lateness: Option<chrono::Duration>,
    /// Retried creates and decisions.
    pub(crate) create_retries: u32,
    pub(crate) decide_retries: u32,
    /// Creates answered by replay, and approvals found recorded after a lost answer.
    pub(crate) creates_replayed: usize,
    pub(crate) decisions_recovered: usize,
    /// Lifecycles per (created on, decided on) server, and of those how many did not complete.
    pub(crate) pairs: BTreeMap<(usize, Option<usize>), (usize, usize)>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms =
            |d: Option<chrono::Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.num_milliseconds()));
        write!(
            f,
            "{} lifecycles, {} completed; {} same-key redeliveries; revoke lateness after expiry: median {}, max {}; \
             retries: {} creates ({} replayed), {} decisions ({} found recorded)",
            self.lifecycles,
            self.completed,
            self.redeliveries,
            ms(self.median_lateness),
            ms(self.max_lateness),
            self.create_retries,
            self.creates_replayed,
            self.decide_retries,
            self.decisions_recovered,
        )?;
        if self.pairs.len() > 1 {
            write!(f, "; created→decided (lifecycles/not completed):")?;
            for ((c, d), (all, lost)) in &self.pairs {
                let d = d.map_or_else(|| "?".to_owned(), |d| d.to_string());
                write!(f, " {c}→{d}: {all}/{lost}")?;
            }
        }
        Ok(())
    }
}

/// The outcome of [`verify`]: figures, and every problem found, by kind.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) summary: Summary,
    pub(crate) problems: BTreeMap<&'static str, Vec<String>>,
}

impl Verdict {
    /// Panics listing the problems (a few examples of each kind), if any.
    #[track_caller]
    pub(crate) fn assert_clean(&self) {
        if self.problems.is_empty() {
            return;
        }
        let mut msg = format!("load checks failed ({})", self.summary);
        for (kind, list) in &self.problems {
            msg.push_str(&format!("\n- {kind}: {}, e.g.:", list.len()));
            for p in list.iter().take(5) {
                msg.push_str(&format!("\n    {p}"));
            }
        }
        panic!("{msg}");
    }
}

/// Checks every lifecycle's end state, effects and audit trail. `auditor` must reach a running
/// server; `lag` bounds each revocation after its grant's expiry.
pub(crate) async fn verify(
    auditor: &ApiClient,
    db: &TestDb,
    receiver: &Receiver,
    lifecycles: &[Lifecycle],
    lag: Duration,
) -> anyhow::Result<Verdict> {
    let mut problems: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut problem = |kind: &'static str, what: String| problems.entry(kind).or_default().push(what);
    let mut summary = Summary { lifecycles: lifecycles.len(), ..Summary::default() };

    // One request per lifecycle: retried creates made none twice.
    let (views, chain) = tokio::join!(all_requests(auditor), auditor.get("/v1/audit/verify"));
    let views = views?;
    let runs = db.count("runs").await?;
    if views.len() != lifecycles.len() || usize::try_from(runs).ok() != Some(lifecycles.len()) {
        problem(
            "request count",
            format!("{} lifecycles, {} requests listed, {runs} runs", lifecycles.len(), views.len()),
        );
    }

    let grant_keys = receiver.keys_by_run("grant");
    let revoke_keys = receiver.keys_by_run("revoke");
    let mut first_revoke: HashMap<String, DateTime<Utc>> = HashMap::new();
    for c in receiver.revokes() {
        if let Some(run) = c.run_id() {
            let t = first_revoke.entry(run.to_owned()).or_insert(c.at_utc);
            *t = (*t).min(c.at_utc);
        }
    }
    let mut lateness = Vec::new();
    for l in lifecycles {
        summary.create_retries += l.create_retries;
        summary.decide_retries += l.decide_retries;
        summary.creates_replayed += usize::from(l.create_replayed);
        summary.decisions_recovered += usize::from(l.decided_on.is_none());
        let pair = summary.pairs.entry((l.created_on, l.decided_on)).or_default();
        pair.0 += 1;
        let decided_on = l.decided_on.map_or_else(|| "?".to_owned(), |d| d.to_string());
        let who = format!("#{} {} (created on {}, decided on {decided_on})", l.index, l.id, l.created_on);
        let Some(view) = views.get(&l.id) else {
            problem("request missing", who);
            pair.1 += 1;
            continue;
        };
        let grant = &view["grant"];
        if view["status"] == "completed" && grant["status"] == "revoked" {
            summary.completed += 1;
        } else {
            pair.1 += 1;
            let current = view["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["state"] == "current"))
                .map_or_else(|| "-".to_owned(), |s| s["id"].as_str().unwrap_or("?").to_owned());
            problem(
                "not completed with the grant revoked",
                format!(
                    "{who}: request {} at step {current}, grant {} expiring {}",
                    view["status"], grant["status"], grant["expires_at"]
                ),
            );
        }
        for (operation, keys) in [("grant", &grant_keys), ("revoke", &revoke_keys)] {
            match keys.get(&l.id) {
                Some(k) if k.len() == 1 => summary.redeliveries += k.values().map(|n| n - 1).sum::<usize>(),
                Some(k) => problem(
                    if operation == "grant" { "grant keys" } else { "revoke keys" },
                    format!("{who}: {} distinct keys {k:?}", k.len()),
                ),
                None => problem(
                    if operation == "grant" { "no grant call" } else { "no revoke call" },
                    format!("{who}: request {}, grant {}", view["status"], grant["status"]),
                ),
            }
        }
        if let (Some(expires_at), Some(revoked)) = (timestamp(&grant["expires_at"]), first_revoke.get(&l.id)) {
            let late = *revoked - expires_at;
            lateness.push(late);
            if late < -EARLY_MARGIN {
                problem("revoked before expiry", format!("{who}: {} ms early", -late.num_milliseconds()));
            } else if late > to_chrono(lag) {
                problem("revoked late", format!("{who}: {} ms after expiry (bound {lag:?})", late.num_milliseconds()));
            }
        }
    }
    lateness.sort();
    summary.max_lateness = lateness.last().copied();
    summary.median_lateness = lateness.get(lateness.len() / 2).copied();
    let known: std::collections::HashSet<&str> = lifecycles.iter().map(|l| l.id.as_str()).collect();
    for (operation, keys) in [("grant", &grant_keys), ("revoke", &revoke_keys)] {
        for run in keys.keys().filter(|r| !known.contains(r.as_str())) {
            problem("calls for no lifecycle", format!("{operation} for {run}"));
        }
    }
    if receiver.rejected() > 0 {
        problem("bad signatures", format!("{} calls", receiver.rejected()));
    }

    // No timer is left behind, and none was lost: every lifecycle ended above.
    let timers = db.count("timers").await?;
    if timers != 0 {
        let rows = db.query("SELECT kind, step_index FROM timers").await?;
        problem("timers left", format!("{timers}: {rows:?}"));
    }

    // Each transition audited exactly once (none recovered by the sweep), and the chain
    // verifies. Counted in SQL: with one run per lifecycle, n records over n distinct runs means
    // once each. The audit API names the runs only when that fails.
    let wanted: Vec<(&str, usize)> = ONCE.iter().map(|e| (*e, 1)).chain(NEVER.iter().map(|e| (*e, 0))).collect();
    let mut counted: HashMap<&str, (i64, i64)> = HashMap::new();
    for (event, _) in &wanted {
        let of_type = format!("audit_log WHERE event_type = '{event}'");
        let n = db.count(&of_type).await?;
        let runs = db.count(&format!("(SELECT DISTINCT run_id FROM {of_type}) AS runs")).await?;
        counted.insert(event, (n, runs));
    }
    let all = i64::try_from(lifecycles.len()).unwrap_or(i64::MAX);
    let exact = wanted.iter().all(|(e, want)| {
        let (n, runs) = counted.get(e).copied().unwrap_or((0, 0));
        if *want == 0 { n == 0 } else { n == all && runs == all }
    });
    if !exact {
        let mut events: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
        for r in auditor.audit(None).await? {
            if let (Some(run), Some(event)) = (r["run_id"].as_str(), r["event_type"].as_str()) {
                *events.entry(run.to_owned()).or_default().entry(event.to_owned()).or_default() += 1;
            }
        }
        let mut named = false;
        for l in lifecycles {
            let have = events.remove(&l.id).unwrap_or_default();
            let wrong: Vec<String> = wanted
                .iter()
                .filter_map(|(e, want)| {
                    let n = have.get(*e).copied().unwrap_or(0);
                    (n != *want).then(|| format!("{e}×{n} (want {want})"))
                })
                .collect();
            if !wrong.is_empty() {
                named = true;
                problem("audit event counts", format!("#{} {}: {}", l.index, l.id, wrong.join(", ")));
            }
        }
        if !named {
            problem("audit event counts", format!("by type (records, runs): {counted:?}"));
        }
    }
    let (status, verdict) = chain?;
    if (status, &verdict["ok"]) != (200, &json!(true)) {
        problem("audit chain", format!("{status}: {verdict}"));
    }
    Ok(Verdict { summary, problems })
}

/// Every request, by id, as an auditor lists them.
async fn all_requests(auditor: &ApiClient) -> anyhow::Result<HashMap<String, Value>> {
    let mut out = HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let path = cursor
            .as_ref()
            .map_or_else(|| "/v1/requests?limit=200".to_owned(), |c| format!("/v1/requests?limit=200&cursor={c}"));
        let (status, page) = auditor.get(&path).await?;
        if status != 200 {
            bail!("GET {path} answered {status}: {page}");
        }
        for item in page["items"].as_array().into_iter().flatten() {
            out.insert(item["id"].as_str().unwrap_or_default().to_owned(), item.clone());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
    bail!("GET /v1/requests: more than 10 000 pages")
}

/// What [`drive_while_killing`] saw.
#[derive(Debug)]
pub(crate) struct Killed {
    /// The driven lifecycles.
    pub(crate) lifecycles: Vec<Lifecycle>,
    /// SIGKILLs done (fewer than planned if the load ended first).
    pub(crate) kills: usize,
    /// Time the victim was down or starting, in all.
    pub(crate) unavailable: Duration,
    /// Time from the first request to the end of the load.
    pub(crate) driven: Duration,
}

/// Drives `load` while `victim` is SIGKILLed and restarted on a schedule of (milliseconds
/// after the previous restart, milliseconds down); a kill is skipped once the load ended.
pub(crate) async fn drive_while_killing(
    endpoints: &[Endpoint],
    load: &Load,
    victim: &mut Server,
    schedule: &[(u64, u64)],
) -> anyhow::Result<Killed> {
    let started = Instant::now();
    let driver = {
        let (endpoints, load) = (endpoints.to_vec(), load.clone());
        tokio::spawn(async move { drive(&endpoints, &load).await })
    };
    let (mut kills, mut unavailable) = (0, Duration::ZERO);
    for &(after, down) in schedule {
        tokio::time::sleep(Duration::from_millis(after)).await;
        if driver.is_finished() {
            break;
        }
        victim.kill();
        let killed = Instant::now();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(down)).await;
        victim.restart().await?;
        unavailable += killed.elapsed();
    }
    let lifecycles = driver.await??;
    Ok(Killed { lifecycles, kills, unavailable, driven: started.elapsed() })
}
