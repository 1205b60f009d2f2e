//! Workflow versions: a run follows the version it started with, new requests take the latest,
//! and a loaded version cannot change under the same number.

use serde_json::json;

use crate::common::{self, PATIENCE, has_action, id_of};

fn test_grant_yaml() -> String {
    tollgate_tests::test_workflows().into_iter().find(|(n, _)| n == "test-grant.yaml").expect("test-grant.yaml").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_keep_the_workflow_version_they_started_with() -> anyhow::Result<()> {
    let mut t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let (bob, carol) = (t.server.client("bob").await?, t.server.client("carol").await?);
    let ask =
        json!({ "integration": "wiki-staging", "scopes": ["edit"], "duration": "1h", "justification": "versions" });
    let old = id_of(&alice.create_request(&ask).await?);

    // Version 2 needs two approvals.
    let v1 = test_grant_yaml();
    let v2 = v1.replacen("version: 1", "version: 2", 1).replacen(
        "groups: [security]",
        "groups: [security]\n      quorum: 2",
        1,
    );
    assert_ne!(v1, v2);
    t.server.kill();
    std::fs::write(t.server.workflows_dir().join("test-grant.yaml"), &v2)?;
    t.server.restart().await?;

    let (st, body) = bob.decide(&old, "approve").await?;
    assert_eq!(st, 200, "{body}");
    assert_ne!(body["status"], "awaiting_approval", "the old request follows version 1 (one approval): {body:#}");
    assert_eq!(body["workflow"], json!({ "key": "test-grant", "version": 1 }));
    t.receiver.wait_for("grant of the old request", PATIENCE, |c| has_action(c, "grant", &old)).await?;

    let new = alice.create_request(&ask).await?;
    let new_id = id_of(&new);
    assert_eq!(new["workflow"], json!({ "key": "test-grant", "version": 2 }));
    assert_eq!(new["steps"][0]["quorum"], 2);
    let (st, body) = bob.decide(&new_id, "approve").await?;
    assert_eq!((st, body["status"].as_str()), (200, Some("awaiting_approval")), "{body:#}");
    let (st, body) = carol.decide(&new_id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    t.receiver.wait_for("grant of the new request", PATIENCE, |c| has_action(c, "grant", &new_id)).await?;

    let (st, wf) = alice.get("/v1/workflows").await?;
    assert_eq!(st, 200);
    let versions: Vec<(u64, bool)> = wf["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["key"] == "test-grant")
        .map(|w| (w["version"].as_u64().unwrap(), w["latest"].as_bool().unwrap()))
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(versions.contains(&(1, false)) && versions.contains(&(2, true)), "{versions:?}");
    let audit = t.server.client("audrey").await?.audit(None).await?;
    assert!(audit.iter().any(|r| r["event_type"] == "workflow_loaded"
        && r["workflow_version"] == 2
        && r["workflow_key"] == "test-grant"));

    // Version 1's file is gone, yet a restart still knows it (it is pinned in the database).
    t.server.restart().await?;
    let view = alice.request_view(&old).await?;
    assert_eq!(view["steps"].as_array().map(Vec::len), Some(6), "{view:#}");

    // Changing version 2 without bumping it is refused at start-up.
    t.server.kill();
    std::fs::write(t.server.workflows_dir().join("test-grant.yaml"), v2.replacen("timeout: 5m", "timeout: 6m", 1))?;
    let err = t.server.restart().await.expect_err("a changed version must be refused").to_string();
    assert!(err.contains("test-grant version 2 differs from the definition pinned"), "{err}");
    Ok(())
}
