//! Crash safety: SIGKILL the server while a grant call is in flight and while a grant waits for
//! its expiry; after restarts every effect happens once (same idempotency key on every attempt)
//! and the expiry timer still fires. Then the same under load: thousands of lifecycles with the
//! server killed again and again.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::common::{self, PATIENCE, event_types, has_action, id_of, of_run};
use crate::load::{self, Endpoint, Load};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_and_revoke_happen_exactly_once_across_sigkill_restarts() -> anyhow::Result<()> {
    let mut t = common::start_with(|mut o| {
        // Long enough that the held call is still in flight when the server dies.
        o.connector_timeout = "30s".to_owned();
        o
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let bob = t.server.client("bob").await?;
    let audrey = t.server.client("audrey").await?;

    // The first grant attempt fails (retryable), the second is held in flight.
    t.receiver.fail_next(Some("grant"), 503, 1);
    t.receiver.hold("grant");
    let request =
        json!({ "integration": "wiki-staging", "scopes": ["edit"], "duration": "4s", "justification": "crash test" });
    let id = id_of(&alice.create_request(&request).await?);
    let (st, body) = bob.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    let in_flight = |n: usize| {
        let id = id.clone();
        move |c: &[tollgate_tests::Call]| of_run(c, &id).filter(|c| c.operation() == Some("grant")).count() >= n
    };
    t.receiver.wait_for("a retried grant call in flight", PATIENCE, in_flight(2)).await?;

    // Crash 1: the grant call is in flight. The approval is committed; the grant is not.
    t.server.kill();
    let rows = t.server.db().query("SELECT status FROM runs").await?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "provisioning");
    t.server.restart().await?;
    t.receiver.wait_for("the grant call resumed after restart", PATIENCE, in_flight(3)).await?;
    t.receiver.release();
    let active = alice.wait_status(&id, "active", PATIENCE).await?;

    let grant_calls: Vec<_> =
        of_run(&t.receiver.calls(), &id).filter(|c| c.operation() == Some("grant")).cloned().collect();
    let keys = t.receiver.distinct_keys("grant", Some(&id));
    assert_eq!(keys.len(), 1, "every attempt carries the same key: {keys:?}");
    for c in &grant_calls {
        assert!(c.signature_ok);
        assert_eq!(c.idempotency_key(), c.body["idempotency_key"].as_str());
        assert_eq!(c.body["grant_id"], active["grant"]["id"]);
    }
    let attempts: Vec<u64> = grant_calls.iter().filter_map(|c| c.body["attempt"].as_u64()).collect();
    assert_eq!(attempts[..2], [1, 2], "{attempts:?}");
    assert!(attempts.windows(2).all(|w| w[0] <= w[1]), "attempt numbers never go back: {attempts:?}");

    // Crash 2: the grant is active; a request waits for approval and another for a deadline that
    // passes while the server stays down past the grant's expiry.
    let expires_at: DateTime<Utc> = active["grant"]["expires_at"].as_str().unwrap().parse()?;
    let pending = id_of(&alice.create_request(&json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "survives" })).await?);
    let expiring = id_of(
        &alice
            .create_request(
                &json!({ "integration": "ledger-sandbox", "scopes": ["read"], "justification": "deadline while down" }),
            )
            .await?,
    );
    let config_events = |records: &[serde_json::Value]| records.iter().filter(|r| r["channel"] == "config").count();
    let config_before = config_events(&audrey.audit(None).await?);
    t.server.kill();
    let killed_at = tollgate_tests::wall_clock();
    assert!(killed_at < expires_at, "the grant expired before the crash; the test ran too slowly");
    assert!(t.receiver.revokes().is_empty());
    let down_until = expires_at + chrono::Duration::milliseconds(1500);
    tokio::time::sleep((down_until - tollgate_tests::wall_clock()).to_std().unwrap_or_default()).await;
    assert!(t.receiver.revokes().is_empty(), "nothing revokes while the server is down");
    t.server.restart().await?;
    let ready = Instant::now();
    let calls = t.receiver.wait_for("the overdue revoke", PATIENCE, |c| has_action(c, "revoke", &id)).await?;
    let revoke = of_run(&calls, &id).find(|c| c.operation() == Some("revoke")).unwrap();
    let late = revoke.at.saturating_duration_since(ready);
    assert!(late < Duration::from_secs(3), "the overdue expiry timer fired {late:?} after start, not promptly");
    let done = alice.wait_status(&id, "completed", PATIENCE).await?;
    assert_eq!(done["grant"]["status"], "revoked");
    let expired = alice.wait_status(&expiring, "expired", Duration::from_secs(3)).await?;
    assert_eq!(expired["reason"], "approval deadline passed");
    let (st, body) = t.server.client("carol").await?.decide(&pending, "approve").await?;
    assert_eq!(st, 200, "the request pending before the crash can still be approved: {body}");
    t.receiver.wait_for("grant of the pending request", PATIENCE, |c| has_action(c, "grant", &pending)).await?;
    assert!(!has_action(&t.receiver.calls(), "grant", &expiring));
    assert_eq!(
        config_events(&audrey.audit(None).await?),
        config_before,
        "a restart with the same configuration records no changes"
    );
    assert_eq!(t.receiver.distinct_keys("revoke", Some(&id)).len(), 1);
    assert_eq!(t.receiver.distinct_keys("grant", Some(&id)), keys, "no new grant after the second crash");

    // The audit chain survived both crashes, with every transition recorded once.
    let (st, verify) = audrey.get("/v1/audit/verify").await?;
    assert_eq!((st, &verify["ok"]), (200, &json!(true)), "{verify}");
    let cli = t.server.cli_config(&["audit", "verify"]).await?;
    assert_eq!(cli.code, 0, "{cli:?}");
    let types = event_types(&audrey.audit(Some(&id)).await?);
    for (event, n) in [
        ("request_created", 1),
        ("approval_recorded", 1),
        ("request_approved", 1),
        ("grant_succeeded", 1),
        ("access_expired", 1),
        ("revoke_succeeded", 1),
        ("request_completed", 1),
    ] {
        assert_eq!(types.iter().filter(|t| *t == event).count(), n, "{event} in {types:?}");
    }
    assert_eq!(t.receiver.rejected(), 0);
    Ok(())
}

/// The kills of the load test: (milliseconds after the previous restart, milliseconds down).
const LOAD_KILLS: [(u64, u64); 7] =
    [(3000, 200), (4500, 800), (3500, 100), (5000, 1500), (3000, 400), (4000, 1000), (3500, 300)];

/// 2,000 lifecycles (grants of 1–3 s, 100 in flight) on one server that is SIGKILLed and
/// restarted seven times meanwhile. Calls that find it down are retried (creates with their
/// `Idempotency-Key`). Every lifecycle completes with its grant revoked within 15 s of its expiry
/// (a timer due while the server is down fires at restart); each grant and each revoke went out
/// under one key whatever the redeliveries; each transition is audited once; no timer is left;
/// the audit chain verifies over the API and with `tollgate audit verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_lifecycles_survive_repeated_sigkill() -> anyhow::Result<()> {
    let mut t = common::start().await?;
    let endpoints = Endpoint::all(&[&t.server]).await?;
    let load = Load {
        lifecycles: 2000,
        concurrency: 100,
        durations: vec![1, 2, 3],
        pairing: |_| (0, 0),
        lag: Duration::from_secs(15),
        retry_for: Duration::from_secs(60),
        tag: "crash-load",
    };
    let started = Instant::now();
    let load::Killed { lifecycles, kills, unavailable, driven } =
        load::drive_while_killing(&endpoints, &load, &mut t.server, &LOAD_KILLS).await?;
    let (verdict, cli) = tokio::join!(
        load::verify(&endpoints[0].auditor, t.server.db(), &t.receiver, &lifecycles, load.lag),
        t.server.cli_config(&["audit", "verify"])
    );
    let (verdict, cli) = (verdict?, cli?);
    eprintln!(
        "{kills} SIGKILLs ({:?}, down {unavailable:.1?} in all): {} (driven in {:.1?}, checked in {:.1?})",
        t.server.db().backend(),
        verdict.summary,
        driven,
        started.elapsed() - driven
    );
    assert_eq!(kills, LOAD_KILLS.len(), "the load ended before the last kill; it must outlast them");
    verdict.assert_clean();
    assert_eq!(cli.code, 0, "{cli:?}");
    Ok(())
}
