//! Several replicas on one PostgreSQL database (SQLite is single-replica): decisions made on
//! different replicas are serialised by compare-and-set, effects happen once, the audit chain
//! stays linear, and a surviving replica fires the timers of a dead one.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Barrier;
use tollgate_tests::{Backend, Receiver, Server, TestDb};

use crate::common::{self, PATIENCE, assert_error, has_action, id_of, of_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_one_database_without_double_effects() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let db = TestDb::new().await?;
    if db.backend() != Backend::Postgres {
        eprintln!("skipped: several replicas need PostgreSQL (set TOLLGATE_TEST_DATABASE_URL)");
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
    tokio::time::sleep(Duration::from_secs(1)).await;
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
    if db.backend() != Backend::Postgres {
        eprintln!("skipped: several replicas need PostgreSQL (set TOLLGATE_TEST_DATABASE_URL)");
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
