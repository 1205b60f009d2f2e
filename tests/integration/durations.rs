//! Every requested duration is bounded before it reaches time arithmetic, whatever the workflow
//! says, and one bad request cannot stop the engine (issue 18).

use serde_json::json;

use crate::common::{self, PATIENCE, assert_error, id_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_duration_is_refused_for_every_kind_and_the_engine_goes_on() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let bob = t.server.client("bob").await?;
    let endless = "300000years";
    let grant = |duration: &str| json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": duration, "justification": "x" });

    // Past the workflow's own maximum.
    let (status, body) = alice.post("/v1/requests", &grant(endless)).await?;
    assert_error(status, &body, 422, "duration_too_long");

    let id = id_of(&alice.create_request(&grant("30m")).await?);
    assert_eq!(bob.decide(&id, "approve").await?.0, 200);
    let view = alice.wait_status(&id, "active", PATIENCE).await?;
    let grant_id = view["grant"]["id"].as_str().expect("a grant").to_owned();
    let runs = t.server.db().count("runs").await?;

    // The revoke workflow states no maximum: before the global bound, this request was accepted
    // with a duration past what the calendar holds (and a renew workflow without one panicked
    // the writer, stopping every later write).
    for kind in ["revoke", "renew"] {
        let body = json!({
            "integration": "wiki-staging", "kind": kind, "grant": grant_id, "duration": endless, "justification": "x",
        });
        let (status, body) = alice.post("/v1/requests", &body).await?;
        assert_error(status, &body, 422, "duration_too_long");
        assert!(body["error"]["detail"].as_str().unwrap_or_default().contains("exceeds the maximum"), "{body}");
    }
    assert_eq!(t.server.db().count("runs").await?, runs, "nothing was created");

    // The engine goes on: the next request is created and granted, and it is ready.
    let next = id_of(&alice.create_request(&grant("30m")).await?);
    assert_eq!(bob.decide(&next, "approve").await?.0, 200);
    alice.wait_status(&next, "active", PATIENCE).await?;
    let (status, body) = t.server.anonymous()?.get("/readyz").await?;
    assert_eq!((status, &body["status"]), (200, &json!("ok")), "{body}");
    Ok(())
}
