//! Audit tampering: edit, delete and reorder rows of `audit_log` directly in the database; both
//! `tollgate audit verify` and `GET /v1/audit/verify` must name the first broken sequence.

use serde_json::json;
use tollgate_tests::ApiClient;

use crate::common::{self, PATIENCE, TestEnv, has_action, id_of};

/// Verifies with the CLI (server stopped) and the API (server started for it, then stopped
/// again, so the next tampering edits a quiet database). `None` means the chain must hold.
async fn check(t: &mut TestEnv, audrey: &ApiClient, broken_at: Option<(i64, &str)>, case: &str) -> anyhow::Result<()> {
    let cli = t.server.cli_config(&["audit", "verify"]).await?;
    let cli_json = t.server.cli_config(&["audit", "verify", "--json"]).await?;
    t.server.restart().await?;
    let (status, api) = audrey.get("/v1/audit/verify").await?;
    t.server.kill();
    assert_eq!(status, 200, "{case}: {api}");
    // `--json` answers in the API's shape, with the same exit status as the text form.
    assert_eq!(cli_json.code, cli.code, "{case}: {cli_json:?}");
    let from_cli: serde_json::Value = serde_json::from_str(&cli_json.stdout)?;
    for key in ["ok", "broken_at", "kind", "detail"] {
        assert_eq!(from_cli[key], api[key], "{case}: {key}: {from_cli} vs {api}");
    }
    match broken_at {
        None => {
            assert_eq!(cli.code, 0, "{case}: {cli:?}");
            assert!(cli.stdout.contains("audit chain OK"), "{case}: {cli:?}");
            assert_eq!(api["ok"], true, "{case}: {api}");
            assert!(api["broken_at"].is_null() && api["kind"].is_null(), "{case}: {api}");
        }
        Some((seq, kind)) => {
            assert_eq!(cli.code, 1, "{case}: {cli:?}");
            assert!(cli.stderr.contains(&format!("audit chain broken at sequence {seq}:")), "{case}: {cli:?}");
            assert!(cli.stdout.contains(&format!("first broken sequence: {seq}")), "{case}: {cli:?}");
            assert_eq!(api["ok"], false, "{case}: {api}");
            assert_eq!(api["broken_at"], seq, "{case}: {api}");
            assert_eq!(api["kind"], kind, "{case}: {api}");
            assert!(api["detail"].as_str().is_some_and(|d| d.contains(&format!("sequence {seq}"))), "{case}: {api}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_audit_rows_are_reported_at_the_first_broken_sequence() -> anyhow::Result<()> {
    let mut t = common::start().await?;
    let audrey = t.server.client("audrey").await?;
    let alice = t.server.client("alice").await?;
    let bob = t.server.client("bob").await?;

    // Some history: two requests, one granted.
    for scope in ["read", "edit"] {
        let body =
            json!({ "integration": "wiki-staging", "scopes": [scope], "duration": "1h", "justification": "audit" });
        let id = id_of(&alice.create_request(&body).await?);
        if scope == "edit" {
            assert_eq!(bob.decide(&id, "approve").await?.0, 200);
            t.receiver.wait_for("grant", PATIENCE, |c| has_action(c, "grant", &id)).await?;
            alice.wait_status(&id, "active", PATIENCE).await?;
        }
    }
    // Let the engine finish (notifications, their audit records) so the database is quiet
    // before the tampering starts: nothing is left for a restart to append.
    t.server.wait_quiet(PATIENCE).await?;
    let records = audrey.audit(None).await?;
    let n = i64::try_from(records.len())?;
    assert!(n >= 12, "expected a longer history, got {n} records");
    // A record in the middle of the chain with a run, so every column is populated.
    let k = records
        .iter()
        .filter_map(|r| r["seq"].as_i64().filter(|s| *s > 3 && *s < n - 1 && !r["run_id"].is_null()))
        .nth(2)
        .expect("a middle record with a run");
    t.server.kill();

    check(&mut t, &audrey, None, "untouched").await?;

    // Edit one field of record k.
    let actor = t.server.db().query(&format!("SELECT actor FROM audit_log WHERE seq = {k}")).await?[0]["actor"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(t.server.db().execute(&format!("UPDATE audit_log SET actor = 'mallory' WHERE seq = {k}")).await?, 1);
    check(&mut t, &audrey, Some((k, "hash_mismatch")), "edited actor").await?;
    t.server.db().execute(&format!("UPDATE audit_log SET actor = '{actor}' WHERE seq = {k}")).await?;
    check(&mut t, &audrey, None, "actor restored").await?;

    // Corrupt record k's details so they are not even JSON.
    let details = t.server.db().query(&format!("SELECT details FROM audit_log WHERE seq = {k}")).await?[0]["details"]
        .as_str()
        .unwrap()
        .to_owned();
    t.server.db().execute(&format!("UPDATE audit_log SET details = '{{not json' WHERE seq = {k}")).await?;
    check(&mut t, &audrey, Some((k, "hash_mismatch")), "unreadable details").await?;
    t.server
        .db()
        .execute(&format!("UPDATE audit_log SET details = '{}' WHERE seq = {k}", details.replace('\'', "''")))
        .await?;
    check(&mut t, &audrey, None, "details restored").await?;

    // Swap the contents of records k and k+1, keeping the sequence numbers in place.
    let swap = format!(
        "UPDATE audit_log SET seq = -1 WHERE seq = {k}; UPDATE audit_log SET seq = {k} WHERE seq = {k1}; \
         UPDATE audit_log SET seq = {k1} WHERE seq = -1;",
        k1 = k + 1
    );
    for stmt in swap.split(';').filter(|s| !s.trim().is_empty()) {
        assert_eq!(t.server.db().execute(stmt).await?, 1, "{stmt}");
    }
    check(&mut t, &audrey, Some((k, "prev_hash_mismatch")), "swapped").await?;
    for stmt in swap.split(';').filter(|s| !s.trim().is_empty()) {
        t.server.db().execute(stmt).await?;
    }
    check(&mut t, &audrey, None, "swap undone").await?;

    // Delete record k: the chain breaks at the record after it.
    assert_eq!(t.server.db().execute(&format!("DELETE FROM audit_log WHERE seq = {k}")).await?, 1);
    check(&mut t, &audrey, Some((k + 1, "sequence_gap")), "deleted").await?;
    Ok(())
}
