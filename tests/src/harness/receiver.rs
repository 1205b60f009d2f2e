//! A local webhook receiver standing in for both the SaaS connector endpoint (`/connector`) and
//! the notification bridge (`/notify`): it records every request, checks its signature as
//! `docs/WEBHOOKS.md` tells receivers to, and can be scripted to fail or to hold calls.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::bail;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tollgate_engine::signing;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Call {
    /// Request path (`/connector` or `/notify`).
    pub path: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub raw: Vec<u8>,
    /// The body as JSON (`Null` if it is not JSON).
    pub body: Value,
    /// Arrival, monotonic.
    pub at: Instant,
    /// Arrival, wall clock (to compare with times the server reports).
    pub at_utc: DateTime<Utc>,
    /// Whether the signature verified.
    pub signature_ok: bool,
}

impl Call {
    /// A header's value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The `Idempotency-Key` header.
    #[must_use]
    pub fn idempotency_key(&self) -> Option<&str> {
        self.header("idempotency-key")
    }

    /// `tollgate.action` or `tollgate.notification`.
    #[must_use]
    pub fn kind(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }

    /// For actions, the operation (`grant`, `revoke`, …).
    #[must_use]
    pub fn operation(&self) -> Option<&str> {
        (self.kind() == "tollgate.action").then(|| self.body["operation"].as_str()).flatten()
    }

    /// For notifications, the event (`approval_requested`, …).
    #[must_use]
    pub fn event(&self) -> Option<&str> {
        (self.kind() == "tollgate.notification").then(|| self.body["event"].as_str()).flatten()
    }

    /// The request (run) the call is about.
    #[must_use]
    pub fn run_id(&self) -> Option<&str> {
        self.body["run_id"].as_str().or_else(|| self.body["request_id"].as_str())
    }

    /// What the script matches on: the operation of an action, the event of a notification.
    fn selector(&self) -> &str {
        self.operation().or_else(|| self.event()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Status(u16),
    Hold,
}

#[derive(Debug)]
struct Script {
    /// Operation or event to match; `None` matches every call.
    selector: Option<String>,
    action: Action,
    /// Calls left; `None` is unlimited.
    remaining: Option<usize>,
}

/// A credential the receiver minted for a grant (see [`Receiver::mint_secrets`]).
#[derive(Debug, Clone)]
pub struct MintedSecret {
    /// The grant it is for.
    pub grant_id: String,
    /// The operation that minted it.
    pub operation: String,
    /// The `Idempotency-Key` of the call (a repeated call answers the same secret).
    pub idempotency_key: String,
    /// The secret: starts with [`MINT_CANARY`].
    pub secret: String,
}

/// Every secret the receiver mints starts with this: it must appear nowhere but in the one
/// answer that hands it over.
pub const MINT_CANARY: &str = "CANARY-minted-secret-4b1e9d";

#[derive(Debug)]
struct Inner {
    secret: String,
    /// Operations whose successful answers carry a minted secret.
    mint: Mutex<BTreeSet<String>>,
    /// Minted secrets, in order.
    minted: Mutex<Vec<MintedSecret>>,
    calls: Mutex<Vec<Call>>,
    rejected: AtomicUsize,
    scripts: Mutex<Vec<Script>>,
    arrived: Notify,
    release: watch::Sender<u64>,
}

/// The receiver. Dropping it stops the server.
#[derive(Debug)]
pub struct Receiver {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that verifies signatures made with [`crate::SECRET`].
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn start() -> anyhow::Result<Self> {
        Self::with_secret(crate::SECRET).await
    }

    /// Starts a receiver that verifies signatures made with `secret`.
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn with_secret(secret: &str) -> anyhow::Result<Self> {
        let (release, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            secret: secret.to_owned(),
            mint: Mutex::new(BTreeSet::new()),
            minted: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            rejected: AtomicUsize::new(0),
            scripts: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            release,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { inner, addr, task })
    }

    /// Base URL, e.g. `http://127.0.0.1:4321`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// URL for integrations' webhook connectors.
    #[must_use]
    pub fn connector_url(&self) -> String {
        format!("{}/connector", self.url())
    }

    /// URL for the notification webhook.
    #[must_use]
    pub fn notify_url(&self) -> String {
        format!("{}/notify", self.url())
    }

    /// Every call so far, in arrival order.
    #[must_use]
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Connector calls with this operation, in arrival order.
    #[must_use]
    pub fn actions(&self, operation: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.operation() == Some(operation)).collect()
    }

    /// Grant calls.
    #[must_use]
    pub fn grants(&self) -> Vec<Call> {
        self.actions("grant")
    }

    /// Revoke calls.
    #[must_use]
    pub fn revokes(&self) -> Vec<Call> {
        self.actions("revoke")
    }

    /// Notifications, in arrival order.
    #[must_use]
    pub fn notifications(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.kind() == "tollgate.notification").collect()
    }

    /// Distinct `Idempotency-Key`s of the connector calls with this operation (optionally only
    /// those of one run).
    #[must_use]
    pub fn distinct_keys(&self, operation: &str, run_id: Option<&str>) -> BTreeSet<String> {
        self.actions(operation)
            .iter()
            .filter(|c| run_id.is_none_or(|r| c.run_id() == Some(r)))
            .map(|c| c.idempotency_key().unwrap_or("<none>").to_owned())
            .collect()
    }

    /// For every run, the `Idempotency-Key`s of its connector calls with this operation and how
    /// many calls carried each: [`Receiver::distinct_keys`] for all runs at once, in one pass
    /// without copying the calls (load tests with thousands of runs).
    #[must_use]
    pub fn keys_by_run(&self, operation: &str) -> BTreeMap<String, BTreeMap<String, usize>> {
        let calls = self.inner.calls.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for c in calls.iter().filter(|c| c.operation() == Some(operation)) {
            let run = c.run_id().unwrap_or("<none>").to_owned();
            let key = c.idempotency_key().unwrap_or("<none>").to_owned();
            *out.entry(run).or_default().entry(key).or_default() += 1;
        }
        out
    }

    /// How many requests failed signature verification (answered 401).
    #[must_use]
    pub fn rejected(&self) -> usize {
        self.inner.rejected.load(Ordering::SeqCst)
    }

    /// Answers `status` to the next `times` calls whose operation or event is `selector`
    /// (every call when `None`); `verify:absent` and `verify:present` select verify calls by
    /// their `expect`.
    pub fn fail_next(&self, selector: Option<&str>, status: u16, times: usize) {
        self.script(selector, Action::Status(status), Some(times));
    }

    /// From now on, successful answers to connector calls with one of `operations` (`grant`,
    /// `renew`, `rotate`) carry a freshly minted secret, as `docs/WEBHOOKS.md` lets a receiver do:
    /// `{"secret": "<MINT_CANARY>-<n>", "expires_at": "…"}`. A repeated call (same
    /// `Idempotency-Key`) answers the same secret, as an idempotent receiver must.
    pub fn mint_secrets(&self, operations: &[&str]) {
        self.inner
            .mint
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(operations.iter().map(|o| (*o).to_owned()));
    }

    /// The secrets minted so far, in order.
    #[must_use]
    pub fn minted(&self) -> Vec<MintedSecret> {
        self.inner.minted.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Holds every call whose operation or event is `selector` without answering, until
    /// [`Receiver::release`]. The call is recorded on arrival, so a test can wait for it to be in
    /// flight and then kill the server.
    pub fn hold(&self, selector: &str) {
        self.script(Some(selector), Action::Hold, None);
    }

    /// Ends every hold; held calls (those whose client is still there) are answered 200.
    pub fn release(&self) {
        self.inner.scripts.lock().unwrap_or_else(PoisonError::into_inner).retain(|s| !matches!(s.action, Action::Hold));
        self.inner.release.send_modify(|g| *g += 1);
    }

    fn script(&self, selector: Option<&str>, action: Action, remaining: Option<usize>) {
        self.inner.scripts.lock().unwrap_or_else(PoisonError::into_inner).push(Script {
            selector: selector.map(str::to_owned),
            action,
            remaining,
        });
    }

    /// Waits until `predicate` holds over the calls so far; returns them.
    ///
    /// # Errors
    /// On timeout, describing `what` and the calls seen.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&[Call]) -> bool,
    ) -> anyhow::Result<Vec<Call>> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            let calls = self.calls();
            if predicate(&calls) {
                return Ok(calls);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("receiver: timed out after {timeout:?} waiting for {what}; calls so far:\n{}", summary(&calls));
            }
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(100)), notified).await;
        }
    }
}

/// One line per call, for failure messages.
fn summary(calls: &[Call]) -> String {
    calls
        .iter()
        .map(|c| {
            format!(
                "  {} {} key={} run={} sig_ok={}",
                c.path,
                c.selector(),
                c.idempotency_key().unwrap_or("-"),
                c.run_id().unwrap_or("-"),
                c.signature_ok
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(inner): State<Arc<Inner>>, uri: Uri, headers: HeaderMap, raw: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let now = crate::wall_clock();
    let verified = signing::verify(
        inner.secret.as_bytes(),
        &header(signing::TIMESTAMP_HEADER),
        &header(signing::SIGNATURE_HEADER),
        &raw,
        now.timestamp(),
        signing::DEFAULT_TOLERANCE_SECS,
    );
    let call = Call {
        path: uri.path().to_owned(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or_default().to_owned()))
            .collect(),
        body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
        raw: raw.to_vec(),
        at: Instant::now(),
        at_utc: now,
        signature_ok: verified.is_ok(),
    };
    let selector = call.selector().to_owned();
    // `verify:absent` / `verify:present` select verify calls by what they expect.
    let qualified = call.body["expect"].as_str().map(|e| format!("{selector}:{e}"));
    let reference = format!("ref-{}", call.idempotency_key().unwrap_or_default());
    let mint =
        call.operation().is_some_and(|op| inner.mint.lock().unwrap_or_else(PoisonError::into_inner).contains(op));
    let minted = mint.then(|| {
        let key = call.idempotency_key().unwrap_or_default().to_owned();
        let mut minted = inner.minted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(m) = minted.iter().find(|m| m.idempotency_key == key) {
            return m.secret.clone();
        }
        let secret = format!("{MINT_CANARY}-{}-{}", minted.len() + 1, uuid::Uuid::new_v4().simple());
        minted.push(MintedSecret {
            grant_id: call.body["grant_id"].as_str().unwrap_or_default().to_owned(),
            operation: call.operation().unwrap_or_default().to_owned(),
            idempotency_key: key,
            secret: secret.clone(),
        });
        secret
    });
    // Subscribe before recording so a release() right after the test sees the call is not missed.
    let mut release = inner.release.subscribe();
    let generation = *release.borrow_and_update();
    inner.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    inner.arrived.notify_waiters();
    if verified.is_err() {
        inner.rejected.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "invalid signature").into_response();
    }
    let action = {
        let mut scripts = inner.scripts.lock().unwrap_or_else(PoisonError::into_inner);
        let found = scripts.iter_mut().position(|s| {
            s.selector.as_deref().is_none_or(|want| want == selector || qualified.as_deref() == Some(want))
                && s.remaining != Some(0)
        });
        found.map(|i| {
            let s = &mut scripts[i];
            if let Some(n) = s.remaining.as_mut() {
                *n -= 1;
            }
            s.action
        })
    };
    match action {
        Some(Action::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, format!("scripted failure; internal detail {}", super::fixtures::CANARY)).into_response()
        }
        Some(Action::Hold) => {
            while *release.borrow_and_update() == generation {
                if release.changed().await.is_err() {
                    break;
                }
            }
            success(&reference, minted.as_deref())
        }
        None => success(&reference, minted.as_deref()),
    }
}

/// A successful answer: the reference, and — like real SaaS APIs — a credential that must never
/// travel further (tests look for [`super::fixtures::CANARY`] everywhere).
fn success(reference: &str, minted: Option<&str>) -> Response {
    let mut body = json!({ "reference": reference, "credential": { "client_secret": super::fixtures::CANARY } });
    if let Some(secret) = minted {
        body["secret"] = json!(secret);
        body["expires_at"] = json!("2099-01-01T00:00:00Z");
    }
    axum::Json(body).into_response()
}
