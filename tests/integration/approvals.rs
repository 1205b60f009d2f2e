//! Approval rules: who may decide, how votes count, what ends a request, and what concurrent
//! decisions do.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::Barrier;
use tollgate_tests::ApiClient;

use crate::common::{self, PATIENCE, assert_error, has_action, id_of, of_run};

fn ask(integration: &str, scope: &str) -> Value {
    json!({ "integration": integration, "scopes": [scope], "justification": "approval rules test" })
}

/// Fires `decision` from every `(client, decision)` at once; returns `(status, body)` in order.
async fn all_at_once(id: &str, decisions: Vec<(ApiClient, &'static str)>) -> anyhow::Result<Vec<(u16, Value)>> {
    let barrier = Arc::new(Barrier::new(decisions.len()));
    let mut tasks = Vec::new();
    for (client, decision) in decisions {
        let (barrier, id) = (barrier.clone(), id.to_owned());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            client.decide(&id, decision).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

fn codes(results: &[(u16, Value)]) -> Vec<(u16, String)> {
    results.iter().map(|(s, b)| (*s, b["error"]["code"].as_str().unwrap_or("-").to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_eligible_people_other_than_the_requester_can_approve() -> anyhow::Result<()> {
    let t = common::start().await?;
    let s = &t.server;
    let (alice, bob, carol, dave, erin, admin, ci_bot) = (
        s.client("alice").await?,
        s.client("bob").await?,
        s.client("carol").await?,
        s.client("dave").await?,
        s.client("erin").await?,
        s.client("admin").await?,
        s.client("ci-bot").await?,
    );

    // Self-approval, bystanders and admins are refused; nothing changes. A bystander, who may
    // not see the request, is answered as for a request that does not exist.
    let wiki = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let (st, body) = alice.decide(&wiki, "approve").await?;
    assert_error(st, &body, 403, "self_approval");
    let (st, body) = erin.decide(&wiki, "approve").await?;
    assert_error(st, &body, 404, "not_found");
    let (missing_st, missing) = erin.decide(&uuid::Uuid::now_v7().to_string(), "approve").await?;
    assert_eq!((missing_st, &missing), (st, &body), "the same answer as for a request that does not exist");
    let (st, body) = admin.decide(&wiki, "approve").await?;
    assert_error(st, &body, 403, "not_an_approver");
    let (st, body) = erin.decide(&wiki, "deny").await?;
    assert_error(st, &body, 404, "not_found");
    let view = alice.request_view(&wiki).await?;
    assert_eq!(view["status"], "awaiting_approval");
    assert_eq!(view["approvals"], json!([]));

    // A service's owner cannot approve the service's request, even where she is an approver
    // (alice owns both ci-runner and ci-bot) — and she is not even asked.
    let ci = id_of(&ci_bot.create_request(&ask("ci-runner", "deploy")).await?);
    let calls = t
        .receiver
        .wait_for("approval request for ci-bot's request", PATIENCE, |c| {
            of_run(c, &ci).any(|c| c.event() == Some("approval_requested"))
        })
        .await?;
    let note = of_run(&calls, &ci).find(|c| c.event() == Some("approval_requested")).unwrap();
    let asked: Vec<&str> =
        note.body["recipients"].as_array().unwrap().iter().filter_map(|r| r["principal"].as_str()).collect();
    assert_eq!(asked, ["carol", "dave"], "alice must not be asked to approve her own service's request");
    let (st, body) = alice.decide(&ci, "approve").await?;
    assert_error(st, &body, 403, "self_approval");
    let (st, body) = ci_bot.decide(&ci, "approve").await?;
    assert_error(st, &body, 403, "self_approval");
    let (st, body) = bob.decide(&ci, "approve").await?;
    assert_error(st, &body, 404, "not_found");
    // ...while the same alice may approve someone else's request on ci-runner.
    let bobs = id_of(&bob.create_request(&ask("ci-runner", "deploy")).await?);
    let (st, body) = alice.decide(&bobs, "approve").await?;
    assert_eq!(st, 200, "{body}");
    let (st, body) = carol.decide(&ci, "approve").await?;
    assert_eq!(st, 200, "{body}");

    // Quorum 2 needs two distinct people; the same person twice does not count. Repeating the
    // same decision (a retry after a lost answer) succeeds with the decision recorded the first
    // time; changing it is refused.
    let crm = id_of(&alice.create_request(&ask("crm-prod", "write")).await?);
    let (st, body) = bob.decide(&crm, "approve").await?;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "awaiting_approval", "one approval of two: {body:#}");
    let (st, again) = bob.decide(&crm, "approve").await?;
    assert_eq!(st, 200, "{again}");
    assert_eq!((&again["status"], &again["approvals"]), (&body["status"], &body["approvals"]), "{again:#}");
    let (st, body) = bob.decide(&crm, "deny").await?;
    assert_error(st, &body, 409, "already_voted");
    // Everything that follows from one approval has happened: still no grant.
    s.wait_quiet(PATIENCE).await?;
    assert!(!has_action(&t.receiver.calls(), "grant", &crm), "granted after one approval of two");
    let (st, body) = dave.decide(&crm, "approve").await?;
    assert_eq!(st, 200, "{body}");
    assert_ne!(body["status"], "awaiting_approval", "{body:#}");
    let approvers: Vec<&str> =
        body["approvals"].as_array().unwrap().iter().filter_map(|a| a["approver"].as_str()).collect();
    assert_eq!(approvers, ["bob", "dave"]);
    t.receiver.wait_for("grant after quorum", PATIENCE, |c| has_action(c, "grant", &crm)).await?;
    alice.wait_status(&crm, "active", PATIENCE).await?;

    // Two approvals, two grants, each once; the refused request on wiki never granted.
    for run in [&ci, &bobs] {
        t.receiver.wait_for("grant", PATIENCE, |c| has_action(c, "grant", run)).await?;
    }
    s.wait_quiet(PATIENCE).await?;
    let calls = t.receiver.calls();
    assert!(!has_action(&calls, "grant", &wiki));
    for run in [&ci, &bobs, &crm] {
        assert_eq!(of_run(&calls, run).filter(|c| c.operation() == Some("grant")).count(), 1, "grants of {run}");
    }

    // Every refusal is evidence in the audit log.
    let audrey = s.client("audrey").await?;
    let rejected = |records: &[Value]| -> Vec<(String, String)> {
        records
            .iter()
            .filter(|r| r["event_type"] == "decision_rejected")
            .map(|r| {
                assert_eq!(r["outcome"], "rejected", "{r}");
                (r["actor"].as_str().unwrap().to_owned(), r["details"]["reason"].as_str().unwrap().to_owned())
            })
            .collect()
    };
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| ((*a).to_owned(), (*b).to_owned())).collect::<Vec<_>>();
    assert_eq!(
        rejected(&audrey.audit(Some(&wiki)).await?),
        pairs(&[
            ("alice", "self_approval"),
            ("erin", "not_visible"),
            ("admin", "not_an_approver"),
            ("erin", "not_visible"),
        ])
    );
    assert_eq!(
        rejected(&audrey.audit(Some(&ci)).await?),
        pairs(&[("alice", "self_approval"), ("ci-bot", "self_approval"), ("bob", "not_visible")])
    );
    assert_eq!(rejected(&audrey.audit(Some(&crm)).await?), pairs(&[("bob", "already_voted")]));
    let crm_events = common::event_types(&audrey.audit(Some(&crm)).await?);
    assert_eq!(crm_events.iter().filter(|e| *e == "approval_recorded").count(), 2);
    assert_eq!(crm_events.iter().filter(|e| *e == "request_approved").count(), 1);
    let (st, verify) = audrey.get("/v1/audit/verify").await?;
    assert_eq!((st, &verify["ok"]), (200, &json!(true)), "{verify}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_cancellation_and_timeout_end_requests_for_good() -> anyhow::Result<()> {
    let t = common::start().await?;
    let s = &t.server;
    let (alice, bob, carol, dave, erin) = (
        s.client("alice").await?,
        s.client("bob").await?,
        s.client("carol").await?,
        s.client("dave").await?,
        s.client("erin").await?,
    );

    // Start the clock on the short-timeout request first: it expires while the rest runs.
    let expiring = id_of(&alice.create_request(&ask("ledger-sandbox", "read")).await?);

    // One denial ends a deny_quorum 1 request.
    let denied = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let (st, body) = carol
        .post(
            &format!("/v1/requests/{denied}/decisions"),
            &json!({ "decision": "deny", "comment": "not during the freeze" }),
        )
        .await?;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["status"], "denied");
    assert_eq!(body["reason"], "not during the freeze");
    let (st, body) = bob.decide(&denied, "approve").await?;
    assert_error(st, &body, 409, "already_decided");
    let (st, body) = alice.post(&format!("/v1/requests/{denied}/cancel"), &json!({})).await?;
    assert_error(st, &body, 409, "already_decided");

    // deny_quorum 2: one denial is not enough, two distinct ones are.
    let crm = id_of(&alice.create_request(&ask("crm-prod", "write")).await?);
    let (st, body) = carol.decide(&crm, "deny").await?;
    assert_eq!((st, body["status"].as_str()), (200, Some("awaiting_approval")), "{body}");
    let (st, body) = dave.decide(&crm, "deny").await?;
    assert_eq!((st, body["status"].as_str()), (200, Some("denied")), "{body}");
    let (st, body) = bob.decide(&crm, "approve").await?;
    assert_error(st, &body, 409, "already_decided");

    // Only the requester (or an admin) may cancel; others cannot even see the request.
    let cancelled = id_of(&alice.create_request(&ask("wiki-staging", "read")).await?);
    let (st, body) = carol.post(&format!("/v1/requests/{cancelled}/cancel"), &json!({})).await?;
    assert_error(st, &body, 403, "forbidden");
    let (st, body) = erin.post(&format!("/v1/requests/{cancelled}/cancel"), &json!({})).await?;
    assert_error(st, &body, 404, "not_found");
    let (st, body) = alice.post(&format!("/v1/requests/{cancelled}/cancel"), &json!({})).await?;
    assert_eq!((st, body["status"].as_str()), (200, Some("cancelled")), "{body}");
    let (st, body) = bob.decide(&cancelled, "approve").await?;
    assert_error(st, &body, 409, "cancelled");
    let (st, body) = alice.post(&format!("/v1/requests/{cancelled}/cancel"), &json!({})).await?;
    assert_error(st, &body, 409, "cancelled");
    // An admin may cancel someone else's request.
    let by_admin = id_of(&alice.create_request(&ask("wiki-staging", "read")).await?);
    let (st, body) = s.client("admin").await?.post(&format!("/v1/requests/{by_admin}/cancel"), &json!({})).await?;
    assert_eq!((st, body["status"].as_str()), (200, Some("cancelled")), "{body}");

    // Nobody decides before the deadline: expired, and late decisions are refused as such.
    let view = alice.wait_status(&expiring, "expired", PATIENCE).await?;
    assert_eq!(view["reason"], "approval deadline passed");
    let (st, body) = bob.decide(&expiring, "approve").await?;
    assert_error(st, &body, 409, "expired");
    let (st, body) = alice.post(&format!("/v1/requests/{expiring}/cancel"), &json!({})).await?;
    assert_error(st, &body, 409, "expired");
    let calls = t
        .receiver
        .wait_for("expired notification", PATIENCE, |c| of_run(c, &expiring).any(|c| c.event() == Some("expired")))
        .await?;
    let note = of_run(&calls, &expiring).find(|c| c.event() == Some("expired")).unwrap();
    assert_eq!(note.body["recipients"][0]["principal"], "alice");

    // The denied requester hears of it too.
    t.receiver
        .wait_for("denied notification", PATIENCE, |c| of_run(c, &denied).any(|c| c.event() == Some("denied")))
        .await?;

    // None of these was ever granted.
    s.wait_quiet(PATIENCE).await?;
    assert!(t.receiver.grants().is_empty(), "unexpected grants: {:?}", t.receiver.grants());
    for id in [&denied, &crm, &cancelled, &by_admin, &expiring] {
        let v = alice.request_view(id).await?;
        assert!(v["grant"].is_null() || v["grant"]["status"] == "failed", "{v:#}");
    }

    // The audit log says how each ended, and keeps the refused late decisions.
    let audrey = s.client("audrey").await?;
    let ended = |records: &[Value], event: &str, actor: &str| {
        records.iter().any(|r| r["event_type"] == event && r["actor"] == actor)
    };
    assert!(ended(&audrey.audit(Some(&denied)).await?, "request_denied", "carol"));
    assert!(ended(&audrey.audit(Some(&crm)).await?, "request_denied", "dave"));
    assert!(ended(&audrey.audit(Some(&cancelled)).await?, "request_cancelled", "alice"));
    assert!(ended(&audrey.audit(Some(&by_admin)).await?, "request_cancelled", "admin"));
    let expired_log = audrey.audit(Some(&expiring)).await?;
    assert!(ended(&expired_log, "approval_expired", "system"));
    let late: Vec<_> = expired_log.iter().filter(|r| r["event_type"] == "decision_rejected").collect();
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!((late[0]["actor"].as_str(), late[0]["details"]["reason"].as_str()), (Some("bob"), Some("expired")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_approve_and_deny_have_exactly_one_winner() -> anyhow::Result<()> {
    let t = common::start().await?;
    let s = &t.server;
    let (alice, carol, dave) = (s.client("alice").await?, s.client("carol").await?, s.client("dave").await?);
    let mut approved = Vec::new();
    let mut denied = Vec::new();
    for _ in 0..20 {
        let body =
            json!({ "integration": "wiki-staging", "scopes": ["edit"], "duration": "1h", "justification": "race" });
        let id = id_of(&alice.create_request(&body).await?);
        let results = all_at_once(&id, vec![(carol.clone(), "approve"), (dave.clone(), "deny")]).await?;
        let c = codes(&results);
        let winner = match (c[0].0, c[1].0) {
            (200, 409) => "approve",
            (409, 200) => "deny",
            _ => panic!("exactly one decision must win: {c:?}"),
        };
        let loser = if winner == "approve" { &results[1] } else { &results[0] };
        assert_error(loser.0, &loser.1, 409, "already_decided");
        let view = alice.request_view(&id).await?;
        let votes = view["approvals"].as_array().unwrap();
        assert_eq!(votes.len(), 1, "only the winner's vote is recorded: {view:#}");
        if winner == "approve" {
            assert_ne!(view["status"], "denied");
            assert_eq!(votes[0]["approver"], "carol");
            approved.push(id);
        } else {
            assert_eq!(view["status"], "denied");
            assert_eq!(votes[0]["approver"], "dave");
            denied.push(id);
        }
    }
    for id in &approved {
        t.receiver.wait_for("grant of an approved request", PATIENCE, |c| has_action(c, "grant", id)).await?;
        alice.wait_status(id, "active", PATIENCE).await?;
    }
    s.wait_quiet(PATIENCE).await?;
    let calls = t.receiver.calls();
    for id in &denied {
        assert!(!has_action(&calls, "grant", id), "denied request {id} was granted");
    }
    assert_eq!(t.receiver.grants().len(), approved.len(), "one grant per approved request");
    eprintln!("race: approve won {} times, deny won {} times", approved.len(), denied.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_clicked_approval_counts_once() -> anyhow::Result<()> {
    let t = common::start().await?;
    let s = &t.server;
    let (alice, bob, carol, dave) =
        (s.client("alice").await?, s.client("bob").await?, s.client("carol").await?, s.client("dave").await?);

    // Quorum 2: carol clicks ten times, one vote counts and the request keeps waiting. Every
    // click after the first repeats her decision: it succeeds and records nothing.
    let crm = id_of(&alice.create_request(&ask("crm-prod", "write")).await?);
    let results = all_at_once(&crm, (0..10).map(|_| (carol.clone(), "approve")).collect()).await?;
    let c = codes(&results);
    assert_eq!(c.iter().filter(|(s, _)| *s == 200).count(), 10, "{c:?}");
    let view = alice.request_view(&crm).await?;
    assert_eq!(view["status"], "awaiting_approval");
    assert_eq!(view["approvals"].as_array().map(Vec::len), Some(1));
    let (st, body) = dave.decide(&crm, "approve").await?;
    assert_eq!(st, 200, "{body}");

    // Quorum 1: bob clicks ten times; the first decides, the rest repeat his decision on a
    // decided request (200, nothing recorded). Erin's different decision is refused.
    let wiki = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let results = all_at_once(&wiki, (0..10).map(|_| (bob.clone(), "approve")).collect()).await?;
    let c = codes(&results);
    assert_eq!(c.iter().filter(|(s, _)| *s == 200).count(), 10, "{c:?}");
    let (st, body) = bob.decide(&wiki, "deny").await?;
    assert_error(st, &body, 409, "already_decided");

    for id in [&crm, &wiki] {
        t.receiver.wait_for("grant", PATIENCE, |c| has_action(c, "grant", id)).await?;
        let v = alice.wait_status(id, "active", PATIENCE).await?;
        assert_eq!(v["approvals"].as_array().map(Vec::len), Some(if id == &crm { 2 } else { 1 }), "{v:#}");
    }
    s.wait_quiet(PATIENCE).await?;
    let calls = t.receiver.calls();
    for id in [&crm, &wiki] {
        assert_eq!(of_run(&calls, id).filter(|c| c.operation() == Some("grant")).count(), 1, "grant calls of {id}");
    }
    let records = s.client("audrey").await?.audit(Some(&crm)).await?;
    let votes = records.iter().filter(|r| r["event_type"] == "approval_recorded").count();
    let refused = records
        .iter()
        .filter(|r| r["event_type"] == "decision_rejected" && r["details"]["reason"] == "already_voted")
        .count();
    assert_eq!((votes, refused), (2, 0));
    let records = s.client("audrey").await?.audit(Some(&wiki)).await?;
    let votes = records.iter().filter(|r| r["event_type"] == "approval_recorded").count();
    let refused: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "decision_rejected").collect();
    assert_eq!((votes, refused.len()), (1, 1), "{refused:?}");
    assert_eq!(refused[0]["details"]["reason"], "already_decided");
    Ok(())
}
