//! Notifications about a request's progress: who gets them and what they say.

use std::time::Duration;

use serde_json::{Value, json};
use tollgate_tests::Call;

use crate::common::{self, PATIENCE, id_of, of_run};

fn recipients(call: &Call) -> Vec<String> {
    let mut p: Vec<String> = call.body["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["principal"].as_str().map(str::to_owned))
        .collect();
    p.sort();
    p
}

fn ask(integration: &str, scope: &str) -> Value {
    json!({ "integration": integration, "scopes": [scope], "justification": "notifications test" })
}

/// Waits for the first notification with `event` about `run`.
async fn notification(t: &common::TestEnv, run: &str, event: &str) -> anyhow::Result<Call> {
    let calls = t
        .receiver
        .wait_for(&format!("{event} notification"), PATIENCE, |c| of_run(c, run).any(|c| c.event() == Some(event)))
        .await?;
    Ok(of_run(&calls, run).find(|c| c.event() == Some(event)).cloned().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_go_only_to_approvers_who_have_not_decided() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("hr-staging", "payroll")).await?);
    let asked = notification(&t, &id, "approval_requested").await?;
    assert_eq!(recipients(&asked), ["bob", "carol", "dave"]);
    assert_eq!(asked.body["request"]["approvals_needed"], 2);

    let (st, body) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    // A reminder queued before bob's approval may still be on its way: let it arrive, so the
    // next one to arrive was made after the approval.
    t.server.wait_quiet(PATIENCE).await?;
    let after = tollgate_tests::wall_clock();
    let calls = t
        .receiver
        .wait_for("a reminder after bob's approval", PATIENCE, |c| {
            of_run(c, &id).any(|c| c.event() == Some("approval_reminder") && c.at_utc > after)
        })
        .await?;
    let reminder = of_run(&calls, &id).find(|c| c.event() == Some("approval_reminder") && c.at_utc > after).unwrap();
    assert_eq!(recipients(reminder), ["carol", "dave"], "bob already decided");
    assert!(reminder.signature_ok);
    let keys: Vec<_> =
        of_run(&calls, &id).filter(|c| c.event() == Some("approval_reminder")).map(|c| c.idempotency_key()).collect();
    let mut distinct = keys.clone();
    distinct.dedup();
    assert_eq!(keys, distinct, "each reminder has its own key");

    let records = t.server.client("audrey").await?.audit(Some(&id)).await?;
    assert!(records.iter().any(|r| r["event_type"] == "approval_reminded"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_notifications_are_retried_with_one_key_and_never_hold_up_a_request() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    t.receiver.fail_next(Some("approval_requested"), 503, 1);
    t.receiver.fail_next(Some("approved"), 400, 1);
    let id = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let calls = t
        .receiver
        .wait_for("the approval request, retried", PATIENCE, |c| {
            of_run(c, &id).filter(|c| c.event() == Some("approval_requested")).count() >= 2
        })
        .await?;
    let keys: Vec<_> =
        of_run(&calls, &id).filter(|c| c.event() == Some("approval_requested")).map(Call::idempotency_key).collect();
    assert!(keys.iter().all(|k| k.is_some() && *k == keys[0]), "{keys:?}");

    // The "approved" notification is refused for good; the request goes on regardless.
    assert_eq!(t.server.client("bob").await?.decide(&id, "approve").await?.0, 200);
    alice.wait_status(&id, "active", PATIENCE).await?;
    let audrey = t.server.client("audrey").await?;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let records = audrey.audit(Some(&id)).await?;
        let failed = records.iter().find(|r| r["event_type"] == "notification_failed");
        if let Some(r) = failed {
            assert_eq!(r["details"]["event"], "approved", "{r}");
            assert!(r["details"]["error"].as_str().is_some_and(|e| e.contains("400")), "{r}");
            let sent = records.iter().filter(|r| r["event_type"] == "notification_sent").count();
            assert!(sent >= 2, "approval_requested and granted message were delivered: {records:#?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no notification_failed event: {records:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let approved: Vec<_> =
        of_run(&t.receiver.calls(), &id).filter(|c| c.event() == Some("approved")).cloned().collect();
    assert_eq!(approved.len(), 1, "a permanent refusal is not retried");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_count_the_approvals_already_given() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("hr-staging", "payroll")).await?);
    let (st, body) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{body}");
    // A reminder queued before bob's approval may still be on its way: let it arrive, so the
    // next one to arrive was made after the approval.
    t.server.wait_quiet(PATIENCE).await?;
    let after = tollgate_tests::wall_clock();
    let calls = t
        .receiver
        .wait_for("a reminder after bob's approval", PATIENCE, |c| {
            of_run(c, &id).any(|c| c.event() == Some("approval_reminder") && c.at_utc > after)
        })
        .await?;
    let reminder = of_run(&calls, &id).find(|c| c.event() == Some("approval_reminder") && c.at_utc > after).unwrap();
    assert_eq!(reminder.body["request"]["approvals_needed"], 1, "one of two approvals is in: {}", reminder.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_notifications_carry_the_outcome_status() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let expiring = id_of(&alice.create_request(&ask("ledger-sandbox", "read")).await?);
    let denied = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let (st, body) = t.server.client("carol").await?.decide(&denied, "deny").await?;
    assert_eq!(st, 200, "{body}");
    let note = notification(&t, &denied, "denied").await?;
    assert_eq!(recipients(&note), ["alice"]);
    assert_eq!(note.body["request"]["status"], "denied", "{}", note.body);
    assert!(note.body["request"]["approvals_needed"].is_null(), "{}", note.body);
    let note = notification(&t, &expiring, "expired").await?;
    assert_eq!(note.body["request"]["status"], "expired", "{}", note.body);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_request_tells_its_approvers() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    notification(&t, &id, "approval_requested").await?;
    let (st, body) = alice.post(&format!("/v1/requests/{id}/cancel"), &json!({})).await?;
    assert_eq!(st, 200, "{body}");
    let note = notification(&t, &id, "cancelled").await?;
    assert_eq!(recipients(&note), ["bob", "carol", "dave"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_grant_is_notified_with_the_documented_event() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    t.receiver.fail_next(Some("grant"), 403, 1);
    let id = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    assert_eq!(t.server.client("bob").await?.decide(&id, "approve").await?.0, 200);
    alice.wait_status(&id, "failed", PATIENCE).await?;
    t.server.wait_quiet(PATIENCE).await?;
    let events: Vec<String> = of_run(&t.receiver.calls(), &id).filter_map(|c| c.event().map(str::to_owned)).collect();
    assert!(events.iter().any(|e| e == "failed"), "{events:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_approval_emails_are_written_as_eml_files() -> anyhow::Result<()> {
    let t = common::start().await?;
    let alice = t.server.client("alice").await?;
    let body = json!({ "integration": "hr-staging", "scopes": ["payroll"], "justification": "<b>pay</b> & run" });
    let id = id_of(&alice.create_request(&body).await?);
    notification(&t, &id, "approval_requested").await?;
    let outbox = t.server.config_path().parent().expect("server dir").join("mail-outbox");
    let mut mails: Vec<String> = Vec::new();
    for _ in 0..100 {
        mails = std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if mails.iter().filter(|m| m.contains(&id)).count() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut to: Vec<String> = Vec::new();
    for name in mails.iter().filter(|m| m.contains(&id) && m.ends_with(".eml")) {
        let raw = std::fs::read(outbox.join(name))?;
        let mail = mail_parser::MessageParser::default().parse(&raw).expect("a parseable message");
        let rcpt = mail.to().and_then(|a| a.first()).and_then(|a| a.address()).unwrap_or_default().to_owned();
        let text = mail.body_text(0).unwrap_or_default();
        let html = mail.body_html(0).unwrap_or_default();
        assert!(text.contains("<b>pay</b> & run"), "justification literal in text: {text}");
        assert!(!html.contains("<b>pay</b>"), "justification never rendered as markup: {html}");
        assert!(html.contains("pay") && html.contains("run"), "{html}");
        to.push(rcpt);
    }
    to.sort();
    assert_eq!(to.len(), 3, "one message per approver with an address: {mails:?}");
    assert!(to.iter().all(|r| !r.contains("alice")), "the requester is not asked: {to:?}");
    let audit = t.server.client("admin").await?.get(&format!("/v1/audit?request={id}")).await?;
    let channels: Vec<&str> = audit.1["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["event_type"] == "notification_sent")
        .filter_map(|r| r["channel"].as_str())
        .collect();
    assert!(channels.contains(&"email") && channels.contains(&"webhook"), "{channels:?}");
    Ok(())
}

/// An integration acted on by hand: `admin` performs each action, reminded every second.
const MANUAL_INTEGRATION: &str = r#"
[integrations.manual-app]
app = "manual"
environment = "staging"
owner = "bob"
scopes = [{ name = "read", risk = "low" }]
connector = { type = "manual", operator = "admin", remind_every = "1s", instructions = "Runbook: RB-7." }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_task_tells_its_operator_and_reminds_them_until_it_is_done() -> anyhow::Result<()> {
    let t = common::start_with(|mut o| {
        o.extra_config.push_str(MANUAL_INTEGRATION);
        o
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let admin = t.server.client("admin").await?;
    let id = id_of(&alice.create_request(&ask("manual-app", "read")).await?);
    assert_eq!(t.server.client("bob").await?.decide(&id, "approve").await?.0, 200);

    // The operator is told on every channel: the webhook here, and email.
    let told = notification(&t, &id, "task_assigned").await?;
    assert_eq!(recipients(&told), ["admin"]);
    let (st, tasks) = admin.get("/v1/tasks").await?;
    assert_eq!(st, 200, "{tasks}");
    let task = tasks["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["request"] == id.as_str()))
        .map(id_of)
        .unwrap_or_else(|| panic!("no task for {id}: {tasks}"));
    let text = told.body["text"].as_str().unwrap_or_default();
    assert!(text.contains("Runbook: RB-7.") && text.contains("Grant scopes read to principal alice"), "{text}");
    assert!(text.contains(&format!("tollgate task complete {task}")), "{text}");

    // Until it is done, reminders follow, each with its own key.
    let calls = t
        .receiver
        .wait_for("two task reminders", PATIENCE, |c| {
            of_run(c, &id).filter(|c| c.event() == Some("task_reminder")).count() >= 2
        })
        .await?;
    let reminders: Vec<&Call> = of_run(&calls, &id).filter(|c| c.event() == Some("task_reminder")).collect();
    assert!(reminders.iter().all(|c| recipients(c) == ["admin"]));
    assert_ne!(reminders[0].idempotency_key(), reminders[1].idempotency_key());
    assert!(reminders[0].body["text"].as_str().unwrap_or_default().contains(&task));

    let (st, body) = admin.post(&format!("/v1/tasks/{task}/complete"), &json!({ "outcome": "done" })).await?;
    assert_eq!(st, 200, "{body}");
    alice.wait_status(&id, "active", PATIENCE).await?;
    // Done: no reminder is left to come.
    let left = t.server.db().count("timers WHERE kind = 'task_reminder'").await?;
    assert_eq!(left, 0);
    let audit = admin.audit(Some(&id)).await?;
    assert!(audit.iter().any(|r| r["event_type"] == "task_reminded" && r["details"]["task_id"] == task.as_str()));

    // Email went to the operator's address too.
    let outbox = t.server.config_path().parent().expect("server dir").join("mail-outbox");
    let mails = tollgate_tests::eventually("the task email", PATIENCE, || {
        let names: Vec<String> = std::fs::read_dir(&outbox)
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let found: Vec<String> =
            names.into_iter().filter(|n| n.contains(&id) && n.contains("task") && n.ends_with(".eml")).collect();
        async move { Ok(if found.is_empty() { Err("no task email yet".to_owned()) } else { Ok(found) }) }
    })
    .await?;
    let raw = std::fs::read(outbox.join(&mails[0]))?;
    let mail = mail_parser::MessageParser::default().parse(&raw).expect("a parseable message");
    assert_eq!(mail.to().and_then(|a| a.first()).and_then(|a| a.address()), Some("admin@example.com"));
    Ok(())
}
