//! The runtime end to end, in process: writer, timers, outbox, cross-run effects, retries.
//! Runs on SQLite, or on PostgreSQL when `TOLLGATE_TEST_DATABASE_URL` is set.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database};
use tollgate_engine::action::ConnectorAction;
use tollgate_engine::audit::AuditEvent;
use tollgate_engine::clock::{Clock, ManualClock, SystemClock};
use tollgate_engine::connector::manual::ManualSettings;
use tollgate_engine::connector::{ActionOutcome, Connector, ConnectorConfig};
use tollgate_engine::directory::{Directory, Group, Integration, Principal, PrincipalKind, ScopeDef};
use tollgate_engine::ids::RunId;
use tollgate_engine::message::Notification;
use tollgate_engine::notify::NotificationChannel;
use tollgate_engine::outbound::ConnectorError;
use tollgate_engine::run::{Decision, GrantStatus, RunStatus};
use tollgate_engine::store::query::{self, RunView};
use tollgate_engine::transition::NewRequest;
use tollgate_engine::{Created, Engine, EngineSettings, Shared, store};
use tollgate_workflows::{Catalog, Operation, Risk, WorkflowKind, parse_definition};

const GRANT: &str = r"
key: g
version: 1
kind: grant
parameters: { default_duration: 30s, max_duration: 1h }
steps:
  - approval: { approvers: { owner: true }, timeout: 1h }
  - action: { operation: grant, retry: { max_attempts: 2, backoff: 100ms, max_backoff: 200ms } }
  - wait: { until: expiry }
  - action: { operation: revoke, retry: { max_attempts: 2, backoff: 100ms, max_backoff: 200ms } }
";
const RENEW: &str = r"
key: r
version: 1
kind: renew
parameters: { max_duration: 1h }
steps:
  - approval: { approvers: { users: [carol] }, timeout: 1h }
  - action: { operation: renew }
";
const REVOKE: &str = r"
key: v
version: 1
kind: revoke
parameters: { require_justification: false }
steps:
  - action: { operation: revoke }
  - notify: { to: [requester, owner], message: 'revoked {integration}' }
";

/// A connector that records calls and fails the first `fail_revokes` revoke calls.
#[derive(Debug, Default)]
struct FakeConnector {
    calls: Mutex<Vec<(Operation, String)>>,
    fail_revokes: Mutex<u32>,
}

#[async_trait::async_trait]
impl Connector for FakeConnector {
    fn kind(&self) -> &'static str {
        "fake"
    }

    fn verifies(&self) -> bool {
        true
    }

    async fn execute(&self, action: &ConnectorAction) -> Result<ActionOutcome, ConnectorError> {
        self.calls.lock().unwrap().push((action.operation, action.idempotency_key.clone()));
        if action.operation == Operation::Revoke {
            let mut left = self.fail_revokes.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(ConnectorError::Retryable { message: "503 from fake".to_owned(), retry_after: None });
            }
        }
        Ok(ActionOutcome::Done { reference: Some(format!("ref-{}", action.operation)), minted: None })
    }
}

impl FakeConnector {
    fn count(&self, op: Operation) -> usize {
        self.calls.lock().unwrap().iter().filter(|(o, _)| *o == op).count()
    }
    fn keys(&self, op: Operation) -> Vec<String> {
        let mut k: Vec<String> =
            self.calls.lock().unwrap().iter().filter(|(o, _)| *o == op).map(|(_, k)| k.clone()).collect();
        k.dedup();
        k
    }
}

/// A notification channel that always fails permanently.
#[derive(Debug)]
struct BrokenChannel;

#[async_trait::async_trait]
impl NotificationChannel for BrokenChannel {
    fn name(&self) -> &'static str {
        "broken"
    }
    async fn send(&self, _: &Notification) -> Result<(), ConnectorError> {
        Err(ConnectorError::Permanent { message: "410 gone".to_owned() })
    }
}

fn principal(kind: PrincipalKind) -> Principal {
    Principal {
        id: String::new(),
        kind,
        name: String::new(),
        email: None,
        slack_user_id: None,
        roles: Vec::new(),
        owner: None,
        disabled: false,
        person: None,
    }
}

fn directory() -> Directory {
    let principals =
        ["alice", "bob", "carol"].into_iter().map(|p| (p.to_owned(), principal(PrincipalKind::Person))).collect();
    let integration = Integration {
        name: String::new(),
        app: "crm".to_owned(),
        environment: "production".to_owned(),
        owner: "bob".to_owned(),
        description: String::new(),
        scopes: vec![ScopeDef { name: "write".to_owned(), risk: Risk::High, description: String::new() }],
        connector: ConnectorConfig::Manual(ManualSettings {
            operator: "bob".to_owned(),
            instructions: None,
            remind_every: None,
        }),
    };
    Directory::new(principals, BTreeMap::<String, Group>::new(), [("crm".to_owned(), integration)].into()).unwrap()
}

/// A fresh database: a temp SQLite file, or a new PostgreSQL database.
async fn database() -> (String, Option<tempfile::TempDir>) {
    match std::env::var("TOLLGATE_TEST_DATABASE_URL") {
        Ok(base) if !base.is_empty() => {
            let name = format!("tollgate_e_{}", uuid::Uuid::new_v4().simple());
            let admin = Database::connect(&base).await.unwrap();
            admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.unwrap();
            let url = match base.rfind('/') {
                Some(i) => format!("{}/{name}", &base[..i]),
                None => panic!("TOLLGATE_TEST_DATABASE_URL needs a database path"),
            };
            (url, None)
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            (format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display()), Some(dir))
        }
    }
}

/// Drops a PostgreSQL test database (SQLite temp dirs clean themselves up).
async fn cleanup(e: &Engine) {
    e.shutdown().await;
    let Ok(base) = std::env::var("TOLLGATE_TEST_DATABASE_URL") else { return };
    if e.db().backend() != sea_orm::DbBackend::Postgres {
        return;
    }
    let stmt = sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, "SELECT current_database() AS d");
    let db: Option<String> = e.db().read.query_one_raw(stmt).await.ok().flatten().and_then(|r| r.try_get("", "d").ok());
    let _ = e.db().read.clone().close().await;
    if let (Some(db), Ok(admin)) = (db, Database::connect(&base).await) {
        let _ = admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    }
}

async fn engine(
    connector: Arc<FakeConnector>,
    channel: Arc<dyn NotificationChannel>,
) -> (Arc<Engine>, Option<tempfile::TempDir>) {
    engine_with(connector, vec![channel]).await
}

async fn engine_with(
    connector: Arc<FakeConnector>,
    channels: Vec<Arc<dyn NotificationChannel>>,
) -> (Arc<Engine>, Option<tempfile::TempDir>) {
    let (url, dir) = database().await;
    let settings = EngineSettings {
        revoke_retry_interval: Duration::from_millis(500),
        scan_interval: Duration::from_millis(500),
        ..EngineSettings::default()
    };
    (start_on(&url, connector, channels, Arc::new(SystemClock), settings).await, dir)
}

/// An engine on the database at `url` (migrated if need be): several may share one, as
/// replicas do. `settings.node_id` names the replica.
async fn start_on(
    url: &str,
    connector: Arc<FakeConnector>,
    channels: Vec<Arc<dyn NotificationChannel>>,
    clock: Arc<dyn Clock>,
    settings: EngineSettings,
) -> Arc<Engine> {
    let db = store::connect(url, 4).await.unwrap();
    store::migrate(&db).await.unwrap();
    let mut catalog = Catalog::new();
    for (name, text) in [("g", GRANT), ("r", RENEW), ("v", REVOKE)] {
        catalog.insert(parse_definition(name, text).unwrap()).unwrap();
    }
    let shared = Shared {
        live: tollgate_engine::context::LiveCell::new(catalog, directory()),
        clock,
        node_id: settings.node_id.clone(),
        lease: chrono::Duration::seconds(60),
        channels: Vec::new(),
        expiry_warning: Some(chrono::Duration::seconds(1)),
        sealing: None,
    };
    let connectors: BTreeMap<String, Arc<dyn Connector>> = [("crm".to_owned(), connector as Arc<dyn Connector>)].into();
    Arc::new(Engine::start(db, shared, connectors, channels, settings).await.unwrap())
}

/// Settings for engines on a manual clock: fast scans, so a moved clock is noticed at once.
fn manual_settings(node: &str) -> EngineSettings {
    EngineSettings {
        node_id: node.to_owned(),
        scan_interval: Duration::from_millis(50),
        expiry_sweep_interval: Duration::from_millis(50),
        ..EngineSettings::default()
    }
}

async fn ask(
    e: &Engine,
    who: &str,
    kind: WorkflowKind,
    grant: Option<tollgate_engine::ids::GrantId>,
    secs: u64,
) -> RunId {
    let grant = match grant {
        Some(g) => Some(query::grant(&e.db().read, g).await.unwrap().unwrap()),
        None => None,
    };
    let req = NewRequest {
        id: RunId::new(),
        requester: who.to_owned(),
        kind,
        integration: "crm".to_owned(),
        scopes: if grant.is_some() { vec![] } else { vec!["write".to_owned()] },
        duration: (secs > 0).then(|| tollgate_workflows::Duration::from_secs(secs)),
        justification: "test".to_owned(),
        grant,
        channel: "api".to_owned(),
        break_glass: false,
    };
    match e.create_request(req, false, None, Box::new(|_| String::new())).await.unwrap() {
        Created::New { id, .. } => id,
        Created::Replayed { .. } | Created::Attached { .. } => panic!("not a new request"),
    }
}

async fn wait_for(e: &Engine, id: RunId, what: &str, pred: impl Fn(&RunView) -> bool) -> RunView {
    for _ in 0..200 {
        let v = query::run_view_snapshot(&e.db().read, id).await.unwrap().unwrap();
        if pred(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "timed out waiting for {what}: {:?}",
        query::run_view(&e.db().read, id).await.unwrap().map(|v| (v.run.status, v.grant.map(|g| g.status)))
    );
}

async fn events(e: &Engine, id: RunId) -> Vec<AuditEvent> {
    query::audit_page(&e.db().read, 0, 1000, Some(id)).await.unwrap().into_iter().map(|r| r.event).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_extends_the_grant_and_a_revoke_request_ends_it_once() {
    let fake = Arc::new(FakeConnector::default());
    let (e, _dir) = engine(fake.clone(), Arc::new(tollgate_engine::notify::LogChannel)).await;
    let run = ask(&e, "alice", WorkflowKind::Grant, None, 60).await;
    e.decide(run, "bob", Decision::Approve, None, "api").await.unwrap();
    let v = wait_for(&e, run, "grant active", |v| v.run.status == RunStatus::Active).await;
    let grant = v.grant.unwrap();
    let first_expiry = grant.expires_at.unwrap();

    let renew = ask(&e, "alice", WorkflowKind::Renew, Some(grant.id), 1800).await;
    e.decide(renew, "carol", Decision::Approve, None, "api").await.unwrap();
    wait_for(&e, renew, "renewal done", |v| v.run.status == RunStatus::Completed).await;
    let renewed = query::grant(&e.db().read, grant.id).await.unwrap().unwrap();
    assert!(renewed.expires_at.unwrap() >= first_expiry + chrono::Duration::seconds(1700), "renewal extends expiry");
    assert_eq!(fake.count(Operation::Renew), 1);

    let revoke = ask(&e, "alice", WorkflowKind::Revoke, Some(grant.id), 0).await;
    wait_for(&e, revoke, "revoke request done", |v| v.run.status == RunStatus::Completed).await;
    // The grant's own run is woken, sees the grant revoked and completes without a second call.
    let v = wait_for(&e, run, "grant run completed", |v| v.run.status == RunStatus::Completed).await;
    assert_eq!(v.grant.unwrap().status, GrantStatus::Revoked);
    assert_eq!(fake.count(Operation::Grant), 1);
    assert_eq!(fake.keys(Operation::Revoke), vec![format!("{}:revoke", grant.id)]);
    let kinds: Vec<String> = events(&e, run).await.into_iter().map(|e| e.event_type).collect();
    assert!(kinds.contains(&"step_skipped".to_owned()), "{kinds:?}");
    let verified = query::verify_audit(e.db()).await.unwrap();
    assert!(verified.is_ok(), "{verified:?}");
    cleanup(&e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_revocation_shows_revoke_failed_and_keeps_retrying_until_it_succeeds() {
    let fake = Arc::new(FakeConnector::default());
    *fake.fail_revokes.lock().unwrap() = 3; // budget is 2 attempts, then slow retries
    let (e, _dir) = engine(fake.clone(), Arc::new(BrokenChannel)).await;
    let run = ask(&e, "alice", WorkflowKind::Grant, None, 1).await;
    e.decide(run, "bob", Decision::Approve, None, "api").await.unwrap();
    let v =
        wait_for(&e, run, "revoke_failed", |v| v.grant.as_ref().is_some_and(|g| g.status == GrantStatus::RevokeFailed))
            .await;
    assert_eq!(v.run.status, RunStatus::Failed);
    let v = wait_for(&e, run, "revoked eventually", |v| v.run.status == RunStatus::Completed).await;
    assert_eq!(v.grant.map(|g| g.status), Some(GrantStatus::Revoked));
    assert_eq!(fake.count(Operation::Revoke), 4);
    assert_eq!(fake.keys(Operation::Revoke).len(), 1, "every attempt carries the same key");
    let kinds: Vec<String> = events(&e, run).await.into_iter().map(|e| e.event_type).collect();
    assert_eq!(kinds.iter().filter(|k| *k == "revoke_failed").count(), 1, "{kinds:?}");
    assert!(kinds.contains(&"notification_failed".to_owned()), "a dead channel is audited, the run goes on: {kinds:?}");
    let at = |k: &str| kinds.iter().position(|x| x == k).unwrap_or_else(|| panic!("no {k} in {kinds:?}"));
    assert!(at("revoke_failed") < at("revoke_succeeded"), "{kinds:?}");
    cleanup(&e).await;
}

/// A channel that records what it was asked to deliver.
#[derive(Debug)]
struct RecordingChannel(&'static str, Mutex<Vec<(String, String)>>);

#[async_trait::async_trait]
impl NotificationChannel for RecordingChannel {
    fn name(&self) -> &'static str {
        self.0
    }
    async fn send(&self, n: &Notification) -> Result<(), ConnectorError> {
        self.1.lock().unwrap().push((n.event.clone(), n.idempotency_key.clone()));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_fan_out_to_every_channel_with_their_own_keys() {
    let chat = Arc::new(RecordingChannel("chat", Mutex::default()));
    let mail = Arc::new(RecordingChannel("mail", Mutex::default()));
    let (e, _dir) = engine_with(
        Arc::new(FakeConnector::default()),
        vec![chat.clone() as Arc<dyn NotificationChannel>, mail.clone()],
    )
    .await;
    let run = ask(&e, "alice", WorkflowKind::Grant, None, 60).await;
    for _ in 0..100 {
        if !chat.1.lock().unwrap().is_empty() && !mail.1.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (chat_seen, mail_seen) = (chat.1.lock().unwrap().clone(), mail.1.lock().unwrap().clone());
    let key = format!("{run}:0:approval_requested");
    assert_eq!(chat_seen, vec![("approval_requested".to_owned(), format!("{key}:chat"))]);
    assert_eq!(mail_seen, vec![("approval_requested".to_owned(), format!("{key}:mail"))]);
    let mut sent: Vec<String> = Vec::new();
    for _ in 0..100 {
        sent = events(&e, run)
            .await
            .into_iter()
            .filter(|ev| ev.event_type == "notification_sent")
            .map(|ev| ev.channel)
            .collect();
        if sent.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent.sort();
    assert_eq!(sent, ["chat", "mail"], "each delivery is audited with its channel");
    cleanup(&e).await;
}

/// On a manual clock: the warning comes when the clock reaches the warning time (1 s before
/// expiry in these tests) while access is still active, and the revocation only when it reaches
/// the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holder_is_warned_before_access_ends_then_access_is_revoked() {
    let (url, _dir) = database().await;
    let clock = ManualClock::new(SystemClock.now());
    let chat = Arc::new(RecordingChannel("chat", Mutex::default()));
    let fake = Arc::new(FakeConnector::default());
    let channels = vec![chat.clone() as Arc<dyn NotificationChannel>];
    let e = start_on(&url, fake.clone(), channels, Arc::new(clock.clone()), manual_settings("a")).await;
    let run = ask(&e, "alice", WorkflowKind::Grant, None, 3).await; // warning lead in tests: 1 s
    e.decide(run, "bob", Decision::Approve, None, "api").await.unwrap();
    let active = wait_for(&e, run, "grant active", |v| v.run.status == RunStatus::Active).await;
    let expires_at = active.grant.and_then(|g| g.expires_at).expect("an active grant has an expiry");
    let warned = || chat.1.lock().unwrap().iter().any(|(event, _)| event == "expiring");
    assert!(!warned(), "warned before the warning time");

    // The warning time: the holder is warned, access stays.
    clock.advance(expires_at - chrono::Duration::seconds(1) - clock.now());
    let mut polls = 0;
    while !warned() {
        polls += 1;
        assert!(polls < 200, "no expiry warning at the warning time: {:?}", chat.1.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = query::run_view_snapshot(&e.db().read, run).await.unwrap().unwrap();
    assert_eq!((v.run.status, v.grant.map(|g| g.status)), (RunStatus::Active, Some(GrantStatus::Active)));
    assert_eq!(fake.count(Operation::Revoke), 0, "revoked before expiry");

    // The expiry: revoked.
    clock.advance(expires_at - clock.now());
    wait_for(&e, run, "completed", |v| v.run.status == RunStatus::Completed).await;
    let kinds: Vec<String> = self::events(&e, run).await.into_iter().map(|e| e.event_type).collect();
    let at = |k: &str| kinds.iter().position(|x| x == k).unwrap_or_else(|| panic!("no {k} in {kinds:?}"));
    assert!(at("grant_succeeded") < at("access_expiring") && at("access_expiring") < at("access_expired"), "{kinds:?}");
    assert_eq!(fake.count(Operation::Revoke), 1);
    cleanup(&e).await;
}

/// The mechanism of issue 17, made deterministic: replica A creates a run (and caches it at its
/// approval step); replica B decides it and grants, so the expiry timer belongs to the wait step;
/// B goes away and A's timer service fires the timer. A's stale copy must not decide: the timer
/// fires on the stored state and the grant is revoked at expiry. (Before the fix A ignored the
/// timer as one of another step and deleted it: access stayed granted forever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_stale_copy_of_a_run_still_fires_its_expiry() {
    let (url, _dir) = database().await;
    let clock = ManualClock::new(SystemClock.now());
    let fake = Arc::new(FakeConnector::default());
    let log = || vec![Arc::new(tollgate_engine::notify::LogChannel) as Arc<dyn NotificationChannel>];
    // A huge grace keeps the expiry sweep out of it: this is about the timer itself.
    let settings = |node| EngineSettings { expiry_grace: Duration::from_secs(86_400), ..manual_settings(node) };
    let a = start_on(&url, fake.clone(), log(), Arc::new(clock.clone()), settings("a")).await;
    let b = start_on(&url, fake.clone(), log(), Arc::new(clock.clone()), settings("b")).await;

    let run = ask(&a, "alice", WorkflowKind::Grant, None, 60).await;
    b.decide(run, "bob", Decision::Approve, None, "api").await.unwrap();
    let active = wait_for(&b, run, "grant active", |v| v.run.status == RunStatus::Active).await;
    b.shutdown().await;
    let timers =
        a.db().read.query_all_raw(sea_orm::Statement::from_string(a.db().backend(), "SELECT kind FROM timers"));
    assert_eq!(timers.await.unwrap().len(), 2, "the expiry and its warning are armed");

    // B armed the expiry timer; A takes it over once it is 5 s overdue (B is gone).
    clock.advance(chrono::Duration::seconds(66));
    let done = wait_for(&a, run, "revoked at expiry", |v| v.run.status == RunStatus::Completed).await;
    assert_eq!(done.grant.as_ref().map(|g| g.status), Some(GrantStatus::Revoked));
    assert_eq!(fake.count(Operation::Grant), 1);
    assert_eq!(fake.keys(Operation::Revoke), vec![format!("{}:revoke", active.grant.unwrap().id)]);
    let kinds: Vec<String> = events(&a, run).await.into_iter().map(|e| e.event_type).collect();
    assert!(kinds.contains(&"access_expired".to_owned()), "{kinds:?}");
    assert!(!kinds.contains(&"expiry_recovered".to_owned()), "the timer did it, not the sweep: {kinds:?}");
    assert_eq!(
        a.db()
            .read
            .query_all_raw(sea_orm::Statement::from_string(a.db().backend(), "SELECT id FROM timers"))
            .await
            .unwrap()
            .len(),
        0
    );
    assert_eq!(a.expiry_recoveries(), 0);
    cleanup(&a).await;
}

/// Defence in depth: a grant whose expiry timer is gone (planted here by deleting it) is found by
/// the sweep once its grace has passed, revoked once, and the find is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_sweep_revokes_a_grant_whose_timer_was_lost() {
    let (url, _dir) = database().await;
    let clock = ManualClock::new(SystemClock.now());
    let fake = Arc::new(FakeConnector::default());
    let channels = vec![Arc::new(tollgate_engine::notify::LogChannel) as Arc<dyn NotificationChannel>];
    let settings = EngineSettings { expiry_grace: Duration::from_secs(30), ..manual_settings("a") };
    let e = start_on(&url, fake.clone(), channels, Arc::new(clock.clone()), settings).await;

    let run = ask(&e, "alice", WorkflowKind::Grant, None, 60).await;
    e.decide(run, "bob", Decision::Approve, None, "api").await.unwrap();
    let active = wait_for(&e, run, "grant active", |v| v.run.status == RunStatus::Active).await;
    let grant = active.grant.unwrap();
    let sql = |s: &str| sea_orm::Statement::from_string(e.db().backend(), s.to_owned());
    let deleted = e.db().read.execute_raw(sql("DELETE FROM timers")).await.unwrap();
    assert_eq!(deleted.rows_affected(), 2, "plant the loss: no expiry timer, no warning");

    // Past expiry (60 s) and grace (30 s): the sweep finds it.
    clock.advance(chrono::Duration::seconds(100));
    let done = wait_for(&e, run, "recovered and revoked", |v| v.run.status == RunStatus::Completed).await;
    assert_eq!(done.grant.map(|g| g.status), Some(GrantStatus::Revoked));
    assert_eq!(fake.keys(Operation::Revoke), vec![format!("{}:revoke", grant.id)]);
    assert_eq!(e.expiry_recoveries(), 1);
    let evs = events(&e, run).await;
    let kinds: Vec<&str> = evs.iter().map(|e| e.event_type.as_str()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap_or_else(|| panic!("no {k} in {kinds:?}"));
    assert!(at("expiry_recovered") < at("revoke_requested"), "{kinds:?}");
    assert!(at("revoke_requested") < at("revoke_succeeded"), "{kinds:?}");
    let recovered = &evs[at("expiry_recovered")];
    assert_eq!((recovered.actor.as_str(), recovered.outcome.as_str()), ("system", "recovered"));
    assert_eq!(recovered.subject, format!("grant:{}", grant.id));
    assert_eq!(recovered.details["overdue_secs"], 40);
    let verified = query::verify_audit(e.db()).await.unwrap();
    assert!(verified.is_ok(), "{verified:?}");
    cleanup(&e).await;
}

/// Each timer is fired by the replica that armed it while that replica is alive: the other
/// replica leaves it alone until the take-over delay (5 s) has passed, so replicas no longer
/// race to fire every timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_that_armed_a_timer_fires_it() {
    let (url, _dir) = database().await;
    let clock = ManualClock::new(SystemClock.now());
    let (fake_a, fake_b) = (Arc::new(FakeConnector::default()), Arc::new(FakeConnector::default()));
    let log = || vec![Arc::new(tollgate_engine::notify::LogChannel) as Arc<dyn NotificationChannel>];
    let settings = |node| EngineSettings { expiry_grace: Duration::from_secs(86_400), ..manual_settings(node) };
    let a = start_on(&url, fake_a.clone(), log(), Arc::new(clock.clone()), settings("a")).await;
    let b = start_on(&url, fake_b.clone(), log(), Arc::new(clock.clone()), settings("b")).await;

    let run = ask(&a, "alice", WorkflowKind::Grant, None, 60).await;
    b.decide(run, "bob", Decision::Approve, None, "api").await.unwrap();
    wait_for(&b, run, "grant active", |v| v.run.status == RunStatus::Active).await;
    assert_eq!((fake_a.count(Operation::Grant), fake_b.count(Operation::Grant)), (0, 1), "b performed the grant");

    // Due, but not yet overdue by the take-over delay: only b, which armed it, fires it.
    clock.advance(chrono::Duration::seconds(61));
    wait_for(&a, run, "revoked at expiry", |v| v.run.status == RunStatus::Completed).await;
    assert_eq!((fake_a.count(Operation::Revoke), fake_b.count(Operation::Revoke)), (0, 1));
    b.shutdown().await;
    cleanup(&a).await;
}

/// Drift reconciliation's schedule is durable: after five minutes of downtime only the latest
/// missed tick runs, once, although two replicas start together; the next tick runs once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_reconciliation_ticks_run_once_after_downtime_on_one_replica() {
    let (url, _dir) = database().await;
    let at = |s: &str| s.parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    let clock = ManualClock::new(at("2030-01-01T10:00:30Z"));
    let fake = Arc::new(FakeConnector::default());
    let log = || vec![Arc::new(tollgate_engine::notify::LogChannel) as Arc<dyn NotificationChannel>];
    let settings = |node| EngineSettings {
        reconcile_schedule: Some("* * * * *".parse().unwrap()),
        reconcile_scan: Duration::from_millis(20),
        ..manual_settings(node)
    };
    let a = start_on(&url, fake.clone(), log(), Arc::new(clock.clone()), settings("a")).await;
    let run = ask(&a, "alice", WorkflowKind::Grant, None, 3600).await;
    a.decide(run, "bob", Decision::Approve, None, "api").await.unwrap();
    wait_for(&a, run, "grant active", |v| v.run.status == RunStatus::Active).await;
    a.shutdown().await;

    let ticks = |e: Arc<Engine>| async move {
        let sql = "SELECT details FROM audit_log WHERE event_type = 'reconcile_started' ORDER BY seq";
        let rows = e.db().read.query_all_raw(sea_orm::Statement::from_string(e.db().backend(), sql)).await.unwrap();
        rows.iter()
            .map(|r| {
                let details: String = r.try_get("", "details").unwrap();
                serde_json::from_str::<serde_json::Value>(&details).unwrap()["tick"].as_str().unwrap().to_owned()
            })
            .collect::<Vec<String>>()
    };
    let checks = || {
        fake.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(op, key)| *op == Operation::Verify && key.contains(":reconcile:"))
            .count()
    };
    let wait_ticks = |e: Arc<Engine>, n: usize| async move {
        let mut tick = tokio::time::interval(Duration::from_millis(25));
        for _ in 0..400 {
            tick.tick().await;
            if ticks(e.clone()).await.len() >= n {
                return;
            }
        }
        panic!("fewer than {n} reconciliation ticks");
    };

    clock.advance(chrono::Duration::minutes(5));
    let b = start_on(&url, fake.clone(), log(), Arc::new(clock.clone()), settings("b")).await;
    let c = start_on(&url, fake.clone(), log(), Arc::new(clock.clone()), settings("c")).await;
    wait_ticks(b.clone(), 1).await;
    clock.advance(chrono::Duration::minutes(1));
    wait_ticks(c.clone(), 2).await;
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    for _ in 0..400 {
        tick.tick().await;
        if checks() >= 2 {
            break;
        }
    }
    let seen = ticks(b.clone()).await;
    let seen: Vec<chrono::DateTime<chrono::Utc>> = seen.iter().map(|t| at(t)).collect();
    assert_eq!(
        seen,
        [at("2030-01-01T10:05:00Z"), at("2030-01-01T10:06:00Z")],
        "10:01 to 10:04 were missed, not replayed"
    );
    assert_eq!(checks(), 2, "one check of the one grant per tick");
    c.shutdown().await;
    cleanup(&b).await;
}
