//! Several replicas on one PostgreSQL database (SQLite is single-replica): decisions made on
//! different replicas are serialised by compare-and-set, effects happen once, the audit chain
//! stays linear, a surviving replica fires the timers of a dead one, and every grant is revoked
//! at expiry whichever replicas created, approved and expired it (issue 17) — also while one of
//! them is killed again and again.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Barrier;
use tollgate_tests::{Receiver, Server, TestDb};

use crate::common::{self, PATIENCE, assert_error, has_action, id_of, of_run};
use crate::load::{self, Endpoint, Load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_database_without_double_effects() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let db = TestDb::new().await?;
    if !postgres_only(&db) {
        return Ok(());
    }
    let receiver = Receiver::start().await?;
    let opts = |node: &str| {
        let mut o = common::options(&receiver);
        o.node_id = node.to_owned();
        o
    };
    // The first replica initialises the database; the second joins it.
    let shared = db.share();
    let mut a = Server::start(db, opts("node-a")).await?;
    let b = Server::start(shared, opts("node-b")).await?;
    let alice = a.client("alice").await?;
    let carol_a = a.client("carol").await?;
    let dave_b = b.client("dave").await?;

    let mut approved = Vec::new();
    for _ in 0..10 {
        let body =
            json!({ "integration": "wiki-staging", "scopes": ["edit"], "duration": "1h", "justification": "replicas" });
        let id = id_of(&alice.create_request(&body).await?);
        let barrier = Arc::new(Barrier::new(2));
        let approve = {
            let (c, barrier, id) = (carol_a.clone(), barrier.clone(), id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                c.decide(&id, "approve").await
            })
        };
        let deny = {
            let (c, barrier, id) = (dave_b.clone(), barrier.clone(), id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                c.decide(&id, "deny").await
            })
        };
        let ((sa, ba), (sd, bd)) = (approve.await??, deny.await??);
        match (sa, sd) {
            (200, _) => {
                assert_error(sd, &bd, 409, "already_decided");
                approved.push(id);
            }
            (_, 200) => assert_error(sa, &ba, 409, "already_decided"),
            _ => panic!("exactly one decision must win: approve {sa} {ba}, deny {sd} {bd}"),
        }
    }
    for id in &approved {
        receiver.wait_for("grant", PATIENCE, |c| has_action(c, "grant", id)).await?;
    }
    // Both replicas are quiet: every effect either of them started has been delivered.
    a.wait_quiet(PATIENCE).await?;
    let calls = receiver.calls();
    for id in &approved {
        assert_eq!(of_run(&calls, id).filter(|c| c.operation() == Some("grant")).count(), 1, "grants of {id}");
    }
    assert_eq!(receiver.grants().len(), approved.len());

    // A replica dies; the other fires its timers (here: an approval deadline).
    let expiring = id_of(
        &alice
            .create_request(
                &json!({ "integration": "ledger-sandbox", "scopes": ["read"], "justification": "replicas" }),
            )
            .await?,
    );
    a.kill();
    let alice_b = b.client("alice").await?;
    alice_b.wait_status(&expiring, "expired", PATIENCE).await?;

    let (st, verify) = b.client("audrey").await?.get("/v1/audit/verify").await?;
    assert_eq!((st, &verify["ok"]), (200, &json!(true)), "{verify}");
    drop(b);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_can_start_together_on_a_fresh_database() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let db = TestDb::new().await?;
    if !postgres_only(&db) {
        return Ok(());
    }
    let receiver = Receiver::start().await?;
    let opts = |node: &str| {
        let mut o = common::options(&receiver);
        o.node_id = node.to_owned();
        o
    };
    // Keep the database for the whole test: a failed start must not drop it under the other.
    let (a, b) = tokio::join!(Server::start(db.share(), opts("node-a")), Server::start(db.share(), opts("node-b")));
    let errors: Vec<String> = [a.err(), b.err()].into_iter().flatten().map(|e| format!("{e:#}")).collect();
    assert!(errors.is_empty(), "a replica failed to start:\n{}", errors.join("\n"));
    Ok(())
}

/// `n` replicas (`node-0`, `node-1`, …) on `db`, started one after another (the first migrates).
/// Each gets a shared handle: the test keeps `db`, so no replica drops it under the others.
async fn start_replicas(db: &TestDb, receiver: &Receiver, n: usize) -> anyhow::Result<Vec<Server>> {
    let mut servers = Vec::with_capacity(n);
    for i in 0..n {
        let mut o = common::options(receiver);
        o.node_id = format!("node-{i}");
        servers.push(Server::start(db.share(), o).await?);
    }
    Ok(servers)
}

/// Bound on a revocation after its grant's expiry with every replica up. The expiry timer fires
/// within milliseconds on the replica that scheduled it (or on the next 5 s safety-net scan of
/// another); the revoke call follows at once. Ten seconds leave room for a slow machine.
const REVOKE_LAG: Duration = Duration::from_secs(10);

/// The same bound while a replica is being killed: a timer or revoke call held by the dead
/// replica waits for its restart (down at most 1.2 s, plus start-up) or for another replica's
/// 5 s scan.
const REVOKE_LAG_WITH_KILLS: Duration = Duration::from_secs(20);

/// The kills of the replica killed repeatedly: (milliseconds after the previous restart,
/// milliseconds down).
const KILLS: [(u64, u64); 5] = [(2500, 300), (3500, 1200), (2000, 600), (4000, 200), (3000, 900)];

/// Skips on SQLite (single replica); the replicas run on PostgreSQL. With
/// `TOLLGATE_TEST_REQUIRE_POSTGRES=1` (CI's PostgreSQL run) a database that is not PostgreSQL
/// fails the test instead.
fn postgres_only(db: &TestDb) -> bool {
    db.postgres_only("several replicas need PostgreSQL")
}

/// Issue 17: lifecycles created on one replica and approved on another must still be revoked at
/// expiry, whichever replica fires the expiry timer (the creating one may hold an outdated copy
/// of the run). 300 lifecycles over three replicas, every ordered pair of distinct replicas in
/// turn, 30 in flight, grants of 2–4 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_revoke_every_grant_whichever_replica_created_or_approved_it() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let db = TestDb::new().await?;
    if !postgres_only(&db) {
        return Ok(());
    }
    let receiver = Receiver::start().await?;
    let servers = start_replicas(&db, &receiver, 3).await?;
    let endpoints = Endpoint::all(&servers.iter().collect::<Vec<_>>()).await?;
    let load = Load {
        lifecycles: 300,
        concurrency: 30,
        durations: vec![2, 3, 4],
        pairing: load::every_ordered_pair_of_three,
        lag: REVOKE_LAG,
        retry_for: Duration::from_secs(30),
        tag: "replicas",
    };
    let started = Instant::now();
    let lifecycles = load::drive(&endpoints, &load).await?;
    let driven = started.elapsed();
    let verdict = load::verify(&endpoints[0].auditor, &db, &receiver, &lifecycles, load.lag).await?;
    eprintln!(
        "three replicas: {} (driven in {:.1?}, checked in {:.1?})",
        verdict.summary,
        driven,
        started.elapsed() - driven
    );
    let pairs: BTreeSet<(usize, usize)> =
        lifecycles.iter().filter_map(|l| Some((l.created_on, l.decided_on?))).filter(|(c, d)| c != d).collect();
    assert_eq!(pairs.len(), 6, "every ordered pair of distinct replicas created and decided lifecycles: {pairs:?}");
    verdict.assert_clean();
    drop(servers);
    Ok(())
}

/// The same load while one replica is SIGKILLed and restarted five times: calls that hit it
/// are retried on another replica (creates with their `Idempotency-Key`, so none is made twice;
/// an approval whose answer was lost counts once it shows on the request), and still every
/// grant and revoke happens under one key, every request completes, no timer is left and the
/// audit chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_nothing_while_one_is_killed_repeatedly() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let db = TestDb::new().await?;
    if !postgres_only(&db) {
        return Ok(());
    }
    let receiver = Receiver::start().await?;
    let mut servers = start_replicas(&db, &receiver, 3).await?;
    let endpoints = Endpoint::all(&servers.iter().collect::<Vec<_>>()).await?;
    let load = Load {
        lifecycles: 300,
        concurrency: 30,
        durations: vec![2, 3, 4],
        pairing: load::every_ordered_pair_of_three,
        lag: REVOKE_LAG_WITH_KILLS,
        retry_for: Duration::from_secs(60),
        tag: "replicas-kill",
    };
    let started = Instant::now();
    let load::Killed { lifecycles, kills, unavailable, driven } =
        load::drive_while_killing(&endpoints, &load, &mut servers[1], &KILLS).await?;
    let verdict = load::verify(&endpoints[0].auditor, &db, &receiver, &lifecycles, load.lag).await?;
    eprintln!(
        "three replicas, {kills} kills of one (down {unavailable:.1?} in all): {} (driven in {:.1?}, checked in {:.1?})",
        verdict.summary,
        driven,
        started.elapsed() - driven
    );
    assert_eq!(kills, KILLS.len(), "the load ended before the last kill; it must outlast them");
    verdict.assert_clean();
    drop(servers);
    Ok(())
}
