//! Slack end to end: the real server against a fake Slack Web API, with the requests Slack
//! would send (button clicks, modal submissions, the slash command) signed like Slack signs them
//! and posted to `/slack/interactions` and `/slack/commands` over loopback.

use std::future::Future;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tollgate_tests::slack::{self, Failure, FakeSlack, InputKind, PostedMessage, SignedRequest, SlackActor, SlackCall};
use tollgate_tests::{ServerOptions, SmtpServer, wall_clock};

use crate::common::{self, PATIENCE, TestEnv, id_of};

const BOT_TOKEN: &str = "xoxb-test-token";
const SIGNING_SECRET: &str = "slack-e2e-signing-secret-5c1d0a7f93";
/// The channel approval requests are posted in, when the test uses one.
const APPROVALS: &str = "C0APPROVALS";
/// Slack ids added to the directory; bob's (`U0BOB`) is in the fixture.
const SLACK_IDS: [(&str, &str); 4] =
    [("alice", "U0ALICE"), ("carol", "U0CAROL"), ("dave", "U0DAVE"), ("erin", "U0ERIN")];
const APPROVE: &str = "tollgate_approve";
const DENY: &str = "tollgate_deny";
/// A justification that would ping the channel, mention someone and smuggle a link if Slack
/// parsed it as mrkdwn.
const NASTY: &str = "<!channel> <@U123> <https://x|y> & friends";
const NASTY_ESCAPED: &str = "&lt;!channel&gt; &lt;@U123&gt; &lt;https://x|y&gt; &amp; friends";

/// A Tollgate server talking to a fake Slack.
struct Env {
    // First: the server dies before the fake it talks to.
    t: TestEnv,
    slack: FakeSlack,
    http: reqwest::Client,
}

/// A fake Slack and a server using it, with Slack ids for alice, carol, dave and erin.
async fn start(channel: Option<&str>, adjust: impl FnOnce(ServerOptions) -> ServerOptions) -> anyhow::Result<Env> {
    tollgate_tests::install_crypto_provider();
    let slack = FakeSlack::try_start(BOT_TOKEN).await?;
    let config = slack.config(SIGNING_SECRET, channel);
    let t = common::start_with(|mut o| {
        o.extra_config.push_str(&config);
        let o = SLACK_IDS.iter().fold(o, |o, (principal, id)| o.slack_user(principal, id));
        adjust(o)
    })
    .await?;
    Ok(Env { t, slack, http: reqwest::Client::new() })
}

/// A user of the configured workspace and app.
fn actor(user_id: &str) -> SlackActor {
    SlackActor::new(user_id, FakeSlack::TEAM_ID, FakeSlack::APP_ID)
}

fn ask(integration: &str, justification: &str) -> Value {
    json!({ "integration": integration, "scopes": ["read"], "justification": justification })
}

/// The `value` of the button `action_id` on a message.
fn button_value(message: &PostedMessage, action_id: &str) -> String {
    message
        .blocks
        .iter()
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["action_id"] == action_id)
        .and_then(|e| e["value"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {action_id} button on {message:?}"))
}

fn has_buttons(message: &PostedMessage) -> bool {
    message.blocks.iter().any(|b| b["type"] == "actions")
}

/// Polls `check` until it yields something, or fails after [`PATIENCE`] describing `what`.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    tollgate_tests::eventually(what, PATIENCE, || {
        let checked = check();
        async move { Ok(checked.await?.ok_or_else(|| "not yet".to_owned())) }
    })
    .await
}

fn count(records: &[Value], event_type: &str) -> usize {
    records.iter().filter(|r| r["event_type"] == event_type).count()
}

impl Env {
    async fn post(&self, path: &str, request: &SignedRequest) -> anyhow::Result<(u16, String)> {
        let response = request.post(&self.http, &format!("{}{path}", self.t.server.url())).await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// POSTs to `/slack/interactions`; returns the status and the body.
    async fn interact(&self, request: &SignedRequest) -> anyhow::Result<(u16, String)> {
        self.post("/slack/interactions", request).await
    }

    /// POSTs `body` with these Slack headers (each only when given).
    async fn raw_post(
        &self,
        path: &str,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: &str,
    ) -> anyhow::Result<(u16, String)> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.t.server.url()))
            .header("content-type", "application/x-www-form-urlencoded");
        if let Some(timestamp) = timestamp {
            request = request.header("X-Slack-Request-Timestamp", timestamp);
        }
        if let Some(signature) = signature {
            request = request.header("X-Slack-Signature", signature);
        }
        let response = request.body(body.to_owned()).send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// The approval requests about `id` as they were first posted (what a client still shows),
    /// once at least `at_least` were.
    async fn approval_messages(&self, id: &str, at_least: usize) -> anyhow::Result<Vec<PostedMessage>> {
        let needle = format!("\"{id}:");
        eventually(&format!("{at_least} approval message(s) about {id}"), || async {
            let posted: Vec<PostedMessage> = self
                .slack
                .calls_to("chat.postMessage")
                .into_iter()
                .filter(|c| c.ok() && c.param("thread_ts").is_none())
                .filter(|c| c.body["blocks"].to_string().contains(&needle) && c.body.to_string().contains(APPROVE))
                .map(|c| PostedMessage {
                    channel: c.response["channel"].as_str().unwrap_or_default().to_owned(),
                    ts: c.response["ts"].as_str().unwrap_or_default().to_owned(),
                    thread_ts: None,
                    text: c.param("text").unwrap_or_default().to_owned(),
                    blocks: c.body["blocks"].as_array().cloned().unwrap_or_default(),
                    updates: 0,
                })
                .collect();
            Ok((posted.len() >= at_least).then_some(posted))
        })
        .await
    }

    async fn approval_message(&self, id: &str) -> anyhow::Result<PostedMessage> {
        let mut messages = self.approval_messages(id, 1).await?;
        anyhow::ensure!(messages.len() == 1, "one approval message expected, got {messages:#?}");
        Ok(messages.remove(0))
    }

    /// `user` clicks the button `action_id` on `message`, now.
    fn click(&self, user_id: &str, action_id: &str, message: &PostedMessage) -> SignedRequest {
        let value = button_value(message, action_id);
        slack::block_action_on(SIGNING_SECRET, &actor(user_id), action_id, &value, message, wall_clock())
    }

    /// The message as it stands now.
    fn current(&self, message: &PostedMessage) -> PostedMessage {
        self.slack.message(&message.channel, &message.ts).expect("the fake knows every posted message")
    }

    /// Successful `chat.update`s of `message`.
    fn updates(&self, message: &PostedMessage) -> Vec<SlackCall> {
        self.slack
            .calls_to("chat.update")
            .into_iter()
            .filter(|c| c.ok() && c.param("channel") == Some(&message.channel) && c.param("ts") == Some(&message.ts))
            .collect()
    }

    async fn wait_updated(&self, message: &PostedMessage) -> anyhow::Result<PostedMessage> {
        eventually("the approval message to be updated", || async {
            Ok((!self.updates(message).is_empty()).then(|| self.current(message)))
        })
        .await
    }

    /// Texts of the ephemeral answers shown to `user_id`.
    fn ephemerals(&self, user_id: &str) -> Vec<String> {
        self.slack
            .calls_to("chat.postEphemeral")
            .iter()
            .filter(|c| c.ok() && c.param("user") == Some(user_id))
            .map(|c| c.param("text").unwrap_or_default().to_owned())
            .collect()
    }

    async fn wait_ephemeral(&self, user_id: &str, containing: &str) -> anyhow::Result<()> {
        eventually(&format!("an ephemeral answer to {user_id} saying {containing:?}"), || async {
            Ok(self.ephemerals(user_id).iter().any(|t| t.contains(containing)).then_some(()))
        })
        .await
    }

    /// Texts of the messages posted in the bot's DM with `user_id`.
    fn direct_messages(&self, user_id: &str) -> Vec<String> {
        let channel = self.slack.dm_channel(user_id);
        self.slack
            .calls_to("chat.postMessage")
            .iter()
            .filter(|c| c.ok() && c.response["channel"] == channel.as_str())
            .map(|c| c.body.to_string())
            .collect()
    }

    async fn wait_direct_message(&self, user_id: &str, containing: &str) -> anyhow::Result<()> {
        self.wait_dm_count(user_id, containing, 1).await
    }

    /// Waits until `count` DMs to `user_id` contain `containing`.
    async fn wait_dm_count(&self, user_id: &str, containing: &str, count: usize) -> anyhow::Result<()> {
        eventually(&format!("{count} DM(s) to {user_id} saying {containing:?}"), || async {
            Ok((self.direct_messages(user_id).iter().filter(|t| t.contains(containing)).count() >= count).then_some(()))
        })
        .await
    }

    /// Audit records (of one request, when given).
    async fn audit(&self, request: Option<&str>) -> anyhow::Result<Vec<Value>> {
        self.t.server.client("audrey").await?.audit(request).await
    }

    /// Audit records, once one satisfies `wanted`.
    async fn wait_audit(&self, request: Option<&str>, wanted: impl Fn(&Value) -> bool) -> anyhow::Result<Vec<Value>> {
        eventually("an audit record", || async {
            let records = self.audit(request).await?;
            Ok(records.iter().any(&wanted).then_some(records))
        })
        .await
    }

    async fn status(&self, id: &str) -> anyhow::Result<String> {
        let view = self.t.server.client("alice").await?.request_view(id).await?;
        Ok(view["status"].as_str().unwrap_or_default().to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approve_click_is_acknowledged_at_once_and_replaces_the_message_once() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", NASTY)).await?);
    let message = env.approval_message(&id).await?;
    assert_eq!(message.channel, APPROVALS);
    assert_eq!(button_value(&message, APPROVE), format!("{id}:0"));
    assert_eq!(button_value(&message, DENY), format!("{id}:0"));

    // The justification shows as written: no channel ping, mention or link reaches Slack.
    let shown = serde_json::to_string(&message.blocks)?;
    assert!(shown.contains(NASTY_ESCAPED), "{shown}");
    for call in env.slack.calls_to("chat.postMessage") {
        let body = call.body.to_string();
        for raw in ["<!channel>", "<@U123>", "<https://x|y>", "& friends"] {
            assert!(!body.contains(raw), "raw {raw:?} in a chat.postMessage body: {body}");
        }
    }

    // The connector is slow: the click is acknowledged once the vote is recorded, long before
    // Slack's 3 s limit and without waiting for the grant.
    env.t.receiver.hold("grant");
    let click = env.click("U0CAROL", APPROVE, &message);
    let clicked = Instant::now();
    let (status, body) = tokio::time::timeout(Duration::from_secs(3), env.interact(&click))
        .await
        .map_err(|_| anyhow::anyhow!("the click was not acknowledged within 3 s (waiting for the connector?)"))??;
    let ack = clicked.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(ack < Duration::from_secs(1), "acknowledged after {ack:?}");
    env.t.receiver.wait_for("the held grant call", PATIENCE, |calls| common::has_action(calls, "grant", &id)).await?;
    assert_eq!(env.status(&id).await?, "provisioning", "the grant is still held");
    env.wait_ephemeral("U0CAROL", "approval is recorded").await?;
    env.t.receiver.release();
    alice.wait_status(&id, "active", PATIENCE).await?;

    // The message is replaced once: no buttons, who approved, the justification still escaped.
    let decided = env.wait_updated(&message).await?;
    env.wait_direct_message("U0ALICE", "Access granted").await?;
    env.t.server.wait_quiet(PATIENCE).await?;
    assert_eq!(env.updates(&message).len(), 1, "exactly one chat.update");
    assert!(!has_buttons(&decided), "{decided:?}");
    let shown = serde_json::to_string(&decided.blocks)?;
    assert!(shown.contains("*Approved* by carol"), "{shown}");
    assert!(shown.contains(NASTY_ESCAPED) && !shown.contains("<!channel>"), "{shown}");
    assert!(
        env.slack.calls_to("chat.update").iter().all(|c| !c.body.to_string().contains("<!channel>")),
        "raw mrkdwn in a chat.update"
    );

    let records = env.audit(Some(&id)).await?;
    let vote = records.iter().find(|r| r["event_type"] == "approval_recorded").expect("the vote is audited");
    assert_eq!((vote["channel"].as_str(), vote["actor"].as_str()), (Some("slack"), Some("carol")));
    assert_eq!(vote["details"]["origin"], json!({ "slack_user_id": "U0CAROL", "slack_team_id": FakeSlack::TEAM_ID }));
    let everything = serde_json::to_string(&records)?;
    assert!(!everything.contains(&click.signature), "no signature in the audit log");
    assert!(!env.t.server.log().contains(&click.signature[3..]), "no signature in the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_asks_for_a_reason_in_a_modal_and_the_submission_denies() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "deny me")).await?);
    let message = env.approval_message(&id).await?;

    let (status, body) = env.interact(&env.click("U0BOB", DENY, &message)).await?;
    assert_eq!(status, 200, "{body}");
    let opened = env.slack.wait_for("views.open", 1, PATIENCE).await?;
    let view = env.slack.opened_views().remove(0);
    assert!(opened[0].body["trigger_id"].is_string());
    assert_eq!(view["callback_id"], "tollgate_deny_reason");
    assert_eq!(view["private_metadata"], format!("{id}:0"));
    assert!(view["blocks"].to_string().contains("\"block_id\":\"tollgate_deny_reason\""), "{view}");
    assert_eq!(env.status(&id).await?, "awaiting_approval", "opening the dialog decides nothing");

    // A blank reason keeps the dialog open with an error.
    let blank = slack::input_value("tollgate_deny_reason", "reason", InputKind::PlainText("   ".to_owned()));
    let submission = slack::view_submission_of(SIGNING_SECRET, &actor("U0BOB"), &view, blank, wall_clock());
    let (status, body) = env.interact(&submission).await?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body)?;
    assert_eq!(answer["response_action"], "errors", "{answer}");
    assert!(answer["errors"]["tollgate_deny_reason"].is_string(), "{answer}");
    assert_eq!(env.status(&id).await?, "awaiting_approval");

    let reason =
        slack::input_value("tollgate_deny_reason", "reason", InputKind::PlainText("not this quarter".to_owned()));
    let submission = slack::view_submission_of(SIGNING_SECRET, &actor("U0BOB"), &view, reason, wall_clock());
    let (status, body) = env.interact(&submission).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.is_empty(), "a plain acknowledgement closes the dialog: {body}");
    let view = alice.wait_status(&id, "denied", PATIENCE).await?;
    assert_eq!(view["reason"], "not this quarter");
    assert_eq!(view["approvals"][0]["channel"], "slack");

    let decided = env.wait_updated(&message).await?;
    env.wait_direct_message("U0ALICE", "denied by bob").await?;
    env.t.server.wait_quiet(PATIENCE).await?;
    assert_eq!(env.updates(&message).len(), 1);
    assert!(!has_buttons(&decided));
    assert!(serde_json::to_string(&decided.blocks)?.contains("*Denied* by bob"), "{decided:?}");
    let records = env.audit(Some(&id)).await?;
    let denial = records.iter().find(|r| r["event_type"] == "denial_recorded").expect("the denial is audited");
    assert_eq!((denial["channel"].as_str(), denial["actor"].as_str()), (Some("slack"), Some("bob")));
    assert_eq!(denial["details"]["comment"], "not this quarter");
    assert_eq!(denial["details"]["origin"]["slack_user_id"], "U0BOB");
    common::assert_in_order(&common::event_types(&records), &["denial_recorded", "request_denied"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_by_direct_message_meet_the_quorum_and_replays_and_second_clicks_do_not_count()
-> anyhow::Result<()> {
    // No approvals channel: every approver with a Slack id gets a DM.
    let env = start(None, |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("crm-prod", "two people please")).await?);
    let messages = env.approval_messages(&id, 3).await?;
    let dm = |user: &str| {
        let channel = env.slack.dm_channel(user);
        messages.iter().find(|m| m.channel == channel).cloned().unwrap_or_else(|| panic!("no DM to {user}"))
    };
    assert_eq!(messages.len(), 3, "bob, carol and dave, each once: {messages:#?}");
    let (to_bob, to_carol, to_dave) = (dm("U0BOB"), dm("U0CAROL"), dm("U0DAVE"));
    assert!(!env.direct_messages("U0ALICE").iter().any(|m| m.contains(APPROVE)), "never to the requester");

    let carol = env.click("U0CAROL", APPROVE, &to_carol);
    assert_eq!(env.interact(&carol).await?.0, 200);
    env.wait_ephemeral("U0CAROL", "approval is recorded").await?;
    assert_eq!(env.status(&id).await?, "awaiting_approval", "one of two approvals");

    // The same signed request again (a replay), then a second click of hers: neither counts.
    // The replay is dropped before the engine; the second click repeats her decision, which the
    // engine answers like the first without recording anything.
    let (status, body) = env.interact(&carol).await?;
    assert_eq!(status, 200, "{body}");
    let records = env.audit(Some(&id)).await?;
    assert_eq!(count(&records, "approval_recorded"), 1);
    assert_eq!(count(&records, "decision_rejected"), 0, "a replay is dropped before it reaches the engine");
    let recorded = |env: &Env| env.ephemerals("U0CAROL").iter().filter(|t| t.contains("approval is recorded")).count();
    assert_eq!(recorded(&env), 1);
    assert_eq!(env.interact(&env.click("U0CAROL", APPROVE, &to_carol)).await?.0, 200);
    eventually("a second confirmation to carol", || async { Ok((recorded(&env) == 2).then_some(())) }).await?;
    let records = env.audit(Some(&id)).await?;
    assert_eq!(count(&records, "decision_rejected"), 0, "{records:#?}");
    assert_eq!(count(&records, "approval_recorded"), 1);
    assert!(messages.iter().all(|m| env.updates(m).is_empty()), "nothing decided yet, nothing replaced");

    assert_eq!(env.interact(&env.click("U0DAVE", APPROVE, &to_dave)).await?.0, 200);
    let view = alice.wait_status(&id, "active", PATIENCE).await?;
    let approvers: Vec<&str> =
        view["approvals"].as_array().unwrap().iter().filter_map(|a| a["approver"].as_str()).collect();
    assert_eq!(approvers, ["carol", "dave"]);
    for message in [&to_bob, &to_carol, &to_dave] {
        let decided = env.wait_updated(message).await?;
        assert!(!has_buttons(&decided));
        assert!(serde_json::to_string(&decided.blocks)?.contains("*Approved* by dave"), "{decided:?}");
    }
    env.wait_direct_message("U0ALICE", "was approved").await?;
    env.t.server.wait_quiet(PATIENCE).await?;
    for message in &messages {
        assert_eq!(env.updates(message).len(), 1, "each DM replaced exactly once");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clicks_from_the_requester_bystanders_strangers_and_other_workspaces_change_nothing() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "not by me")).await?);
    let message = env.approval_message(&id).await?;
    let value = button_value(&message, APPROVE);
    let on_message =
        |who: &SlackActor| slack::block_action_on(SIGNING_SECRET, who, APPROVE, &value, &message, wall_clock());

    // Known principals who may not decide: the engine refuses, and says why.
    for (user, reason, says) in
        [("U0ALICE", "self_approval", "own requests"), ("U0ERIN", "not_visible", "not an eligible approver")]
    {
        assert_eq!(env.interact(&env.click(user, APPROVE, &message)).await?.0, 200);
        env.wait_ephemeral(user, says).await?;
        let records = env
            .wait_audit(Some(&id), |r| r["event_type"] == "decision_rejected" && r["details"]["reason"] == reason)
            .await?;
        let refused = records
            .iter()
            .find(|r| r["event_type"] == "decision_rejected" && r["details"]["reason"] == reason)
            .unwrap();
        assert_eq!(refused["channel"], "slack");
    }

    // Unknown users, and known user ids from another workspace or for another app: refused
    // before the engine, and audited.
    let mut from_elsewhere = on_message(&actor("U0CAROL")).payload().unwrap();
    from_elsewhere["user"]["team_id"] = json!("T0OTHER"); // Slack Connect: right channel, foreign user
    let body =
        form_urlencoded::Serializer::new(String::new()).append_pair("payload", &from_elsewhere.to_string()).finish();
    let foreign_user = SignedRequest::new(SIGNING_SECRET, wall_clock().timestamp(), body);
    let refusals = [
        (on_message(&actor("U0NOBODY")), "U0NOBODY", FakeSlack::TEAM_ID, "unknown_slack_user"),
        (
            on_message(&SlackActor::new("U0CAROL", "T0OTHER", FakeSlack::APP_ID)),
            "U0CAROL",
            "T0OTHER",
            "foreign_workspace_or_app",
        ),
        (
            on_message(&SlackActor::new("U0CAROL", FakeSlack::TEAM_ID, "A0OTHERAPP")),
            "U0CAROL",
            FakeSlack::TEAM_ID,
            "foreign_workspace_or_app",
        ),
        (foreign_user, "U0CAROL", "T0OTHER", "unknown_slack_user"),
    ];
    let before = count(&env.audit(None).await?, "slack_interaction_refused");
    for (request, _, _, _) in &refusals {
        let (status, body) = env.interact(request).await?;
        assert_eq!(status, 200, "acknowledged, so Slack does not retry: {body}");
    }
    let records = env.audit(None).await?;
    let refused: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "slack_interaction_refused").collect();
    assert_eq!(refused.len(), before + refusals.len(), "{refused:#?}");
    for (r, (_, user, team, reason)) in refused[before..].iter().zip(&refusals) {
        assert_eq!(r["channel"], "slack");
        assert_eq!(r["outcome"], "rejected");
        assert_eq!(r["details"], json!({ "reason": reason, "slack_user_id": user, "slack_team_id": team }), "{r}");
        assert_eq!(r["run_id"], json!(id), "the refusal shows in the request's history: {r}");
    }
    env.wait_ephemeral("U0NOBODY", "not linked").await?;

    let view = alice.request_view(&id).await?;
    assert_eq!(view["status"], "awaiting_approval");
    assert_eq!(view["approvals"], json!([]));
    assert!(env.updates(&message).is_empty() && has_buttons(&env.current(&message)));

    // The message still works for an eligible approver.
    assert_eq!(env.interact(&env.click("U0BOB", APPROVE, &message)).await?.0, 200);
    alice.wait_status(&id, "active", PATIENCE).await?;
    assert!(env.wait_updated(&message).await?.blocks.iter().any(|b| b.to_string().contains("*Approved* by bob")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tampered_stale_and_unsigned_requests_are_refused_without_echoing_a_signature() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "sign here")).await?);
    let message = env.approval_message(&id).await?;
    let click = env.click("U0CAROL", APPROVE, &message);
    let now = click.timestamp;

    let tampered = click.clone().tampered();
    let forged = click.clone().signed_with("not-the-signing-secret");
    // Well outside the 300 s window (the exact boundary is a unit test of `slack::verify`): one
    // second past it would let a future timestamp fall back inside the window when this machine
    // takes more than a second to reach that case, and the click would be accepted.
    let stale = click.clone().with_timestamp(now - 360);
    let future = click.clone().with_timestamp(now + 360);
    let command = slack::slash_command(SIGNING_SECRET, &actor("U0ALICE"), "/tollgate", "", "C0GENERAL", wall_clock());
    // Signatures that were, or would have been, valid: none may be echoed or logged.
    let valid = [
        click.signature.clone(),
        slack::sign(SIGNING_SECRET, now, &tampered.body),
        stale.signature.clone(),
        future.signature.clone(),
        command.signature.clone(),
    ];
    let signed = |r: &SignedRequest| (Some(r.timestamp.to_string()), Some(r.signature.clone()));
    let (ts, sig) = (Some(now.to_string()), Some(click.signature.clone()));
    let upper = click.signature.to_uppercase().replacen("V0=", "v0=", 1);
    let v1 = click.signature.replacen("v0=", "v1=", 1);
    let (interactions, commands) = ("/slack/interactions", "/slack/commands");
    let cases = [
        ("forged", interactions, signed(&forged), &forged.body, 401),
        ("tampered", interactions, signed(&tampered), &tampered.body, 401),
        ("360 s old", interactions, signed(&stale), &stale.body, 401),
        ("360 s ahead", interactions, signed(&future), &future.body, 401),
        ("forged command", commands, signed(&command.clone().signed_with("nope")), &command.body, 401),
        ("unsigned", interactions, (None, None), &click.body, 400),
        ("no timestamp", interactions, (None, sig.clone()), &click.body, 400),
        ("no signature", interactions, (ts.clone(), None), &click.body, 400),
        ("upper-case hex", interactions, (ts.clone(), Some(upper)), &click.body, 400),
        ("v1 scheme", interactions, (ts.clone(), Some(v1)), &click.body, 400),
        ("fractional timestamp", interactions, (Some(format!("{now}.5")), sig.clone()), &click.body, 400),
        ("unsigned command", commands, (None, None), &command.body, 400),
    ];
    for (what, path, (timestamp, signature), body, want) in &cases {
        let (status, text) = env.raw_post(path, timestamp.as_deref(), signature.as_deref(), body).await?;
        assert_ne!(status, 500, "{what}");
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        common::assert_error(status, &json, *want, "invalid_slack_signature");
        assert!(!text.contains("v0="), "{what}: a signature in the answer: {text}");
        for v in &valid {
            assert!(!text.contains(&v[3..]), "{what}: a valid signature in the answer: {text}");
        }
    }
    let log = env.t.server.log();
    for v in &valid {
        assert!(!log.contains(&v[3..]), "a valid signature reached the log");
    }
    let view = alice.request_view(&id).await?;
    assert_eq!(
        (view["status"].as_str(), view["approvals"].as_array().map(Vec::len)),
        (Some("awaiting_approval"), Some(0))
    );
    assert!(env.slack.calls_to("views.open").is_empty(), "the forged command opened nothing");

    // Signed but not an interaction: a client error, not a crash.
    let garbage = SignedRequest::new(SIGNING_SECRET, wall_clock().timestamp(), "payload=%7Bnot+json".to_owned());
    let (status, text) = env.interact(&garbage).await?;
    common::assert_error(status, &serde_json::from_str(&text)?, 400, "invalid_request");
    // Signed, but its JSON is not one object: refused as every JSON body is (issue 16).
    for payload in ["%5B%22approve%22%5D", "null", "%7B%22type%22%3A1%2C%22type%22%3A2%7D"] {
        let odd = SignedRequest::new(SIGNING_SECRET, wall_clock().timestamp(), format!("payload={payload}"));
        let (status, text) = env.interact(&odd).await?;
        common::assert_error(status, &serde_json::from_str(&text)?, 422, "validation_failed");
    }

    // Four minutes old is within Slack's tolerance; its exact replay is acknowledged and dropped.
    let late = click.with_timestamp(now - 240);
    assert_eq!(env.interact(&late).await?.0, 200);
    alice.wait_status(&id, "active", PATIENCE).await?;
    let (status, body) = env.interact(&late).await?;
    assert_eq!((status, body.as_str()), (200, ""));
    let records = env.audit(Some(&id)).await?;
    assert_eq!((count(&records, "approval_recorded"), count(&records, "decision_rejected")), (1, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clicks_decide_once_and_replace_the_message_once() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;

    // A double click: two requests from carol at the same time.
    let id = id_of(&alice.create_request(&ask("wiki-staging", "double click")).await?);
    let message = env.approval_message(&id).await?;
    let (first, second) = (env.click("U0CAROL", APPROVE, &message), env.click("U0CAROL", APPROVE, &message));
    assert_ne!(first.signature, second.signature, "two distinct clicks, not a replay");
    let (a, b) = tokio::join!(env.interact(&first), env.interact(&second));
    assert_eq!((a?.0, b?.0), (200, 200));
    alice.wait_status(&id, "active", PATIENCE).await?;
    env.wait_updated(&message).await?;
    // The requester hears after the message was replaced (same delivery): no update is pending.
    let (mut approved_dms, mut denied_dms) = (1, 0);
    env.wait_dm_count("U0ALICE", "was approved", approved_dms).await?;
    // The second click repeats her decision: answered like the first, nothing recorded twice.
    let confirmed = || env.ephemerals("U0CAROL").iter().filter(|t| t.contains("approval is recorded")).count();
    eventually("both clicks confirmed to carol", || async { Ok((confirmed() == 2).then_some(())) }).await?;
    env.t.server.wait_quiet(PATIENCE).await?;
    let records = env.audit(Some(&id)).await?;
    let counts = ["approval_recorded", "request_approved", "decision_rejected"].map(|e| count(&records, e));
    assert_eq!(counts, [1, 1, 0], "{records:#?}");
    assert_eq!(env.updates(&message).len(), 1);

    // Approve against deny, from two approvers at once; three rounds.
    for round in 0..3 {
        let id = id_of(&alice.create_request(&ask("wiki-staging", &format!("race {round}"))).await?);
        let message = env.approval_message(&id).await?;
        let opened_before = env.slack.opened_views().len();
        assert_eq!(env.interact(&env.click("U0DAVE", DENY, &message)).await?.0, 200);
        env.slack.wait_for("views.open", opened_before + 1, PATIENCE).await?;
        let view = env.slack.opened_views().remove(opened_before);
        assert_eq!(view["private_metadata"], format!("{id}:0"));
        let reason = slack::input_value("tollgate_deny_reason", "reason", InputKind::PlainText("race".to_owned()));
        let deny = slack::view_submission_of(SIGNING_SECRET, &actor("U0DAVE"), &view, reason, wall_clock());
        let approve = env.click("U0CAROL", APPROVE, &message);
        let (a, d) = tokio::join!(env.interact(&approve), env.interact(&deny));
        let ((a, _), (d, deny_answer)) = (a?, d?);
        assert_eq!((a, d), (200, 200));

        let final_status = eventually("the race to be decided", || async {
            let s = env.status(&id).await?;
            Ok((s != "awaiting_approval").then_some(s))
        })
        .await?;
        let decided = env.wait_updated(&message).await?;
        let approved = final_status != "denied";
        if approved {
            approved_dms += 1;
            env.wait_dm_count("U0ALICE", "was approved", approved_dms).await?;
        } else {
            denied_dms += 1;
            env.wait_dm_count("U0ALICE", "denied by dave", denied_dms).await?;
        }
        env.wait_audit(Some(&id), |r| r["event_type"] == "decision_rejected").await?;
        env.t.server.wait_quiet(PATIENCE).await?;
        let records = env.audit(Some(&id)).await?;
        assert_eq!(count(&records, "approval_recorded") + count(&records, "denial_recorded"), 1, "round {round}");
        assert_eq!(count(&records, "request_approved") + count(&records, "request_denied"), 1, "round {round}");
        assert_eq!(count(&records, "request_approved"), usize::from(approved), "round {round}: {final_status}");
        assert_eq!(env.updates(&message).len(), 1, "round {round}: one chat.update");
        let shown = serde_json::to_string(&decided.blocks)?;
        let want = if approved { "*Approved* by carol" } else { "*Denied* by dave" };
        assert!(shown.contains(want), "round {round}: {final_status} but the message says {shown}");
        if approved {
            // The losing dialog stays open and says why.
            let answer: Value = serde_json::from_str(&deny_answer)?;
            assert_eq!(answer["response_action"], "errors", "round {round}: {deny_answer}");
        } else {
            env.wait_ephemeral("U0CAROL", "no longer awaits a decision").await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_or_dialog_left_from_an_earlier_step_does_not_decide_the_next_one() -> anyhow::Result<()> {
    // crm-prod: the owner or security approve, then security approves again.
    let (_, two) = tollgate_tests::test_workflows().into_iter().find(|(n, _)| n == "test-two-person.yaml").unwrap();
    let second_step = concat!(
        "      timeout: 5m\n",
        "  - approval:\n",
        "      id: security\n",
        "      approvers:\n",
        "        groups: [security]\n",
        "      timeout: 5m\n",
    );
    let two_steps = two.replacen("      quorum: 2\n      deny_quorum: 2\n      timeout: 5m\n", second_step, 1);
    assert_ne!(two_steps, two);
    let env = start(Some(APPROVALS), |o| o.workflow("test-two-person.yaml", &two_steps)).await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("crm-prod", "two steps")).await?);
    let first = env.approval_message(&id).await?;
    assert_eq!(button_value(&first, APPROVE), format!("{id}:0"));

    // Carol starts denying at the first step, but bob approves it before she submits.
    assert_eq!(env.interact(&env.click("U0CAROL", DENY, &first)).await?.0, 200);
    env.slack.wait_for("views.open", 1, PATIENCE).await?;
    let dialog = env.slack.opened_views().remove(0);
    assert_eq!(env.interact(&env.click("U0BOB", APPROVE, &first)).await?.0, 200);
    let messages = env.approval_messages(&id, 2).await?;
    let second = messages.iter().find(|m| button_value(m, APPROVE) == format!("{id}:1")).expect("the second step's");
    assert!(serde_json::to_string(&env.wait_updated(&first).await?.blocks)?.contains("*Approved* by bob"));

    let reason =
        slack::input_value("tollgate_deny_reason", "reason", InputKind::PlainText("meant for step one".to_owned()));
    let stale = slack::view_submission_of(SIGNING_SECRET, &actor("U0CAROL"), &dialog, reason, wall_clock());
    let (status, body) = env.interact(&stale).await?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(answer["response_action"], "errors", "the dialog says the step is over: {body}");
    assert!(body.contains("step is over"), "{body}");
    // Dave's client still shows the first step's buttons.
    assert_eq!(env.interact(&env.click("U0DAVE", APPROVE, &first)).await?.0, 200);
    env.wait_ephemeral("U0DAVE", "step is over").await?;
    let view = alice.request_view(&id).await?;
    assert_eq!(view["status"], "awaiting_approval");
    let votes: Vec<(&str, &str)> = view["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["approver"].as_str().unwrap(), a["decision"].as_str().unwrap()))
        .collect();
    assert_eq!(votes, [("bob", "approve")], "nothing recorded at the second step");

    assert_eq!(env.interact(&env.click("U0CAROL", APPROVE, second)).await?.0, 200);
    alice.wait_status(&id, "active", PATIENCE).await?;
    assert!(serde_json::to_string(&env.wait_updated(second).await?.blocks)?.contains("*Approved* by carol"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_after_the_approval_expired_is_refused_and_the_message_says_expired() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("ledger-sandbox", "too late")).await?);
    let message = env.approval_message(&id).await?;
    alice.wait_status(&id, "expired", PATIENCE).await?;
    let expired = env.wait_updated(&message).await?;
    assert!(!has_buttons(&expired));
    assert!(serde_json::to_string(&expired.blocks)?.contains("*Expired*"), "{expired:?}");

    // Bob's client still shows the buttons.
    let (status, body) = env.interact(&env.click("U0BOB", APPROVE, &message)).await?;
    assert_eq!(status, 200, "{body}");
    env.wait_ephemeral("U0BOB", "deadline has passed").await?;
    let records = env.wait_audit(Some(&id), |r| r["event_type"] == "decision_rejected").await?;
    let refused = records.iter().find(|r| r["event_type"] == "decision_rejected").unwrap();
    assert_eq!((refused["actor"].as_str(), refused["channel"].as_str()), (Some("bob"), Some("slack")));
    assert_eq!(refused["details"]["reason"], "expired");
    assert_eq!(count(&records, "approval_recorded"), 0);
    assert_eq!(env.status(&id).await?, "expired");
    env.t.server.wait_quiet(PATIENCE).await?;
    assert_eq!(env.updates(&message).len(), 1, "still the one replacement");
    assert!(!common::has_action(&env.t.receiver.calls(), "grant", &id));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_post_is_retried_no_sooner_than_slack_asked() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    env.slack.fail_next("chat.postMessage", Failure::RateLimited { retry_after_secs: 1 }, 1);
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "patience")).await?);
    let message = env.approval_message(&id).await?;
    let posts = env.slack.calls_to("chat.postMessage");
    let limited = posts.iter().find(|c| c.status == 429).expect("the first post was rate limited");
    let delivered = posts.iter().find(|c| c.ok() && c.response["ts"] == message.ts.as_str()).unwrap();
    let waited = (delivered.at - limited.at).to_std()?;
    assert!(waited >= Duration::from_secs(1), "retried after {waited:?}, Retry-After was 1 s");
    let records = env
        .wait_audit(Some(&id), |r| {
            r["event_type"] == "notification_sent"
                && r["channel"] == "slack"
                && r["details"]["event"] == "approval_requested"
        })
        .await?;
    assert!(!records.iter().any(|r| r["event_type"] == "notification_failed"), "a 429 is not a failure");
    env.t.server.wait_quiet(PATIENCE).await?;
    assert_eq!(env.approval_messages(&id, 1).await?.len(), 1, "delivered once");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_slack_error_is_audited_at_once_and_the_approval_request_falls_back_to_email() -> anyhow::Result<()>
{
    const GONE: &str = "C0ARCHIVED";
    let smtp = SmtpServer::start()?;
    // The approval request goes to Slack only.
    let (_, grant) = tollgate_tests::test_workflows().into_iter().find(|(name, _)| name == "test-grant.yaml").unwrap();
    let slack_only = grant.replacen("      timeout: 5m\n", "      timeout: 5m\n      channels: [slack]\n", 1);
    assert_ne!(slack_only, grant);
    let env = start(Some(GONE), |mut o| {
        o.extra_config.push_str(&SmtpServer::config(smtp.port()));
        o.workflow("test-grant.yaml", &slack_only)
    })
    .await?;
    env.slack.set_missing_channel(GONE);
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "fallback")).await?);

    let records =
        env.wait_audit(Some(&id), |r| r["event_type"] == "notification_failed" && r["channel"] == "slack").await?;
    let failed = records.iter().find(|r| r["event_type"] == "notification_failed").unwrap();
    assert_eq!(failed["details"]["event"], "approval_requested");
    assert!(failed["details"]["error"].as_str().unwrap_or_default().contains("channel_not_found"), "{failed}");
    let attempts = env.slack.calls_to("chat.postMessage").iter().filter(|c| c.param("channel") == Some(GONE)).count();
    assert_eq!(attempts, 1, "a permanent error is not retried");

    // Email was not routed, yet every approver gets the request there.
    let mails = smtp
        .wait_for("the approval requests by email", PATIENCE, |ms| {
            ["bob@example.com", "carol@example.com", "dave@example.com"].iter().all(|to| {
                ms.iter().any(|m| m.is_for(to) && m.subject.starts_with("Approval needed") && m.text.contains(&id))
            })
        })
        .await?;
    assert!(mails.iter().all(|m| !m.is_for("alice@example.com") || m.approval_link().is_none()));
    env.wait_audit(Some(&id), |r| r["event_type"] == "notification_sent" && r["channel"] == "email").await?;
    env.t.server.wait_quiet(PATIENCE).await?;
    let webhook = env.t.receiver.notifications();
    assert!(
        !common::of_run(&webhook, &id).any(|c| c.event() == Some("approval_requested")),
        "the step routes to Slack only"
    );
    assert!(env.t.server.log().contains("falling back to email"));
    assert_eq!(env.status(&id).await?, "awaiting_approval");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slash_command_opens_a_dialog_whose_submission_creates_one_request() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let now = wall_clock;
    let command = |user: &str, text: &str| {
        slack::slash_command(SIGNING_SECRET, &actor(user), "/tollgate", text, "C0GENERAL", now())
    };

    // Help, and strangers, get an ephemeral answer and no dialog.
    let (status, body) = env.post("/slack/commands", &command("U0ALICE", "help")).await?;
    assert_eq!(status, 200);
    let help: Value = serde_json::from_str(&body)?;
    assert_eq!(help["response_type"], "ephemeral");
    assert!(help["text"].as_str().unwrap_or_default().contains("/tollgate"), "{help}");
    let (status, body) = env.post("/slack/commands", &command("U0NOBODY", "")).await?;
    assert_eq!(status, 200);
    assert!(body.contains("not linked"), "{body}");
    env.wait_audit(None, |r| {
        r["event_type"] == "slack_interaction_refused" && r["details"]["slack_user_id"] == "U0NOBODY"
    })
    .await?;
    assert!(env.slack.calls_to("views.open").is_empty());

    let (status, body) = env.post("/slack/commands", &command("U0ALICE", "")).await?;
    assert_eq!((status, body.as_str()), (200, ""));
    env.slack.wait_for("views.open", 1, PATIENCE).await?;
    let view = env.slack.opened_views().remove(0);
    assert_eq!(view["callback_id"], "tollgate_request");
    assert_eq!(view["private_metadata"], "C0GENERAL");
    let blocks: Vec<&str> = view["blocks"].as_array().unwrap().iter().filter_map(|b| b["block_id"].as_str()).collect();
    assert_eq!(
        blocks,
        [
            "tollgate_integration",
            "tollgate_scopes",
            "tollgate_duration",
            "tollgate_justification",
            "tollgate_break_glass"
        ]
    );
    assert!(view["blocks"][0].to_string().contains("\"value\":\"wiki-staging\""), "{view}");

    let values = |duration: &str| {
        slack::merge_values([
            slack::input_value(
                "tollgate_integration",
                "integration",
                InputKind::StaticSelect("wiki-staging".to_owned()),
            ),
            slack::input_value("tollgate_scopes", "scopes", InputKind::PlainText("read, edit".to_owned())),
            slack::input_value("tollgate_duration", "duration", InputKind::PlainText(duration.to_owned())),
            slack::input_value(
                "tollgate_justification",
                "justification",
                InputKind::PlainText("from Slack".to_owned()),
            ),
        ])
    };
    // A bad duration keeps the dialog open.
    let bad = slack::view_submission_of(SIGNING_SECRET, &actor("U0ALICE"), &view, values("forever"), now());
    let (status, body) = env.interact(&bad).await?;
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_str(&body)?;
    assert_eq!(answer["response_action"], "errors");
    assert!(answer["errors"]["tollgate_duration"].is_string(), "{answer}");

    let submission = slack::view_submission_of(SIGNING_SECRET, &actor("U0ALICE"), &view, values("30m"), now());
    let (status, body) = env.interact(&submission).await?;
    assert_eq!((status, body.as_str()), (200, ""));
    let list = || async {
        let (status, page) = alice.get("/v1/requests?requester=alice").await?;
        anyhow::ensure!(status == 200, "{page}");
        anyhow::Ok(page["items"].as_array().cloned().unwrap_or_default())
    };
    let created = list().await?;
    assert_eq!(created.len(), 1, "{created:#?}");
    let id = id_of(&created[0]);
    env.wait_direct_message("U0ALICE", &format!("Your request {id} is created")).await?;
    env.approval_message(&id).await?;

    // The same as asking through the API.
    let by_api = alice
        .create_request(&json!({
            "integration": "wiki-staging", "scopes": ["read", "edit"], "duration": "30m", "justification": "from Slack",
        }))
        .await?;
    let by_slack = alice.request_view(&id).await?;
    for field in [
        "kind",
        "status",
        "requester",
        "integration",
        "scopes",
        "duration",
        "duration_secs",
        "justification",
        "workflow",
        "approvals",
        "grant",
    ] {
        assert_eq!(by_slack[field], by_api[field], "{field}");
    }
    let steps = |v: &Value| -> Vec<Value> {
        v["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| json!([s["index"], s["type"], s["id"], s["state"], s["quorum"]]))
            .collect()
    };
    assert_eq!(steps(&by_slack), steps(&by_api));
    let records = env.audit(Some(&id)).await?;
    let created_event = records.iter().find(|r| r["event_type"] == "request_created").expect("audited");
    assert_eq!((created_event["channel"].as_str(), created_event["actor"].as_str()), (Some("slack"), Some("alice")));

    // A replay of the submission, and the same dialog submitted again: still one request.
    assert_eq!(env.interact(&submission).await?, (200, String::new()));
    let resent = submission.with_timestamp(now().timestamp() + 1);
    assert_eq!(env.interact(&resent).await?.0, 200);
    env.wait_dm_count("U0ALICE", &format!("Your request {id} is created"), 2).await?;
    let ids: Vec<String> = list().await?.iter().map(id_of).collect();
    assert_eq!(ids.len(), 2, "the one from Slack and the one from the API: {ids:?}");
    assert!(ids.contains(&id) && ids.contains(&id_of(&by_api)));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_dialogs_refuse_what_the_api_refuses_and_record_nothing() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o).await?;
    let alice = env.t.server.client("alice").await?;
    let now = wall_clock;

    // Slack's client caps the justification input at 2000 characters, but a submission is only a
    // signed form post: before the limits lived in the engine's policy, this one created a request.
    let command = slack::slash_command(SIGNING_SECRET, &actor("U0ALICE"), "/tollgate", "", "C0GENERAL", now());
    assert_eq!(env.post("/slack/commands", &command).await?, (200, String::new()));
    env.slack.wait_for("views.open", 1, PATIENCE).await?;
    let dialog = env.slack.opened_views().remove(0);
    let values_for = |scopes: &str, duration: &str, justification: &str| {
        slack::merge_values([
            slack::input_value(
                "tollgate_integration",
                "integration",
                InputKind::StaticSelect("wiki-staging".to_owned()),
            ),
            slack::input_value("tollgate_scopes", "scopes", InputKind::PlainText(scopes.to_owned())),
            slack::input_value("tollgate_duration", "duration", InputKind::PlainText(duration.to_owned())),
            slack::input_value(
                "tollgate_justification",
                "justification",
                InputKind::PlainText(justification.to_owned()),
            ),
        ])
    };
    let values = |scopes: &str, justification: &str| values_for(scopes, "30m", justification);
    let too_long = "é".repeat(2001); // counted in characters, not bytes
    let many_scopes = vec!["read"; 101].join(", ");
    for (case, values, block, says) in [
        ("over-long justification", values("read", &too_long), "tollgate_justification", "at most 2000 characters"),
        // Text that shows otherwise than it says (issue 10): refused as the API refuses it.
        ("bidi override", values("read", "fix \u{202E}gnp.exe"), "tollgate_justification", "invisible"),
        ("zero-width only", values("read", "\u{200B}"), "tollgate_justification", "invisible"),
        ("too many scopes", values(&many_scopes, "ok"), "tollgate_scopes", "at most 100 scopes"),
        // An endless duration (issue 18): refused by the engine's bound, shown by its field.
        ("endless duration", values_for("read", "300000years", "ok"), "tollgate_duration", "exceeds the maximum"),
    ] {
        let submission = slack::view_submission_of(SIGNING_SECRET, &actor("U0ALICE"), &dialog, values, now());
        let (status, body) = env.interact(&submission).await?;
        assert_eq!(status, 200, "{case}: {body}");
        // An empty acknowledgement would close the dialog and create the request.
        let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        assert_eq!(answer["response_action"], "errors", "{case}: the dialog stays open: {body:?}");
        let error = answer["errors"][block].as_str().unwrap_or_default();
        assert!(error.contains(says), "{case}: the error shows by its field: {answer}");
    }
    // The API refuses the same justification, by the same rule.
    let (status, body) = alice.post("/v1/requests", &ask("wiki-staging", &too_long)).await?;
    common::assert_error(status, &body, 422, "validation_failed");
    assert_eq!(body["error"]["detail"], "justification: at most 2000 characters");
    assert_eq!(env.t.server.db().count("runs").await?, 0, "nothing was created");
    assert_eq!(count(&env.audit(None).await?, "request_created"), 0);

    // A denial's reason has the API's comment limit too (it used to be cut short silently).
    let id = id_of(&alice.create_request(&ask("wiki-staging", "deny me at length")).await?);
    let message = env.approval_message(&id).await?;
    assert_eq!(env.interact(&env.click("U0BOB", DENY, &message)).await?.0, 200);
    env.slack.wait_for("views.open", 2, PATIENCE).await?;
    let deny = env.slack.opened_views().remove(1);
    assert_eq!(deny["callback_id"], "tollgate_deny_reason");
    let reason = slack::input_value("tollgate_deny_reason", "reason", InputKind::PlainText("x".repeat(2001)));
    let submission = slack::view_submission_of(SIGNING_SECRET, &actor("U0BOB"), &deny, reason, now());
    let (status, body) = env.interact(&submission).await?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(answer["response_action"], "errors", "the dialog stays open: {body:?}");
    assert!(answer["errors"]["tollgate_deny_reason"].as_str().is_some_and(|e| e.contains("Too long")), "{answer}");

    // Someone the API would not show the request to gets no dialog showing it.
    assert_eq!(env.interact(&env.click("U0ERIN", DENY, &message)).await?.0, 200);
    env.wait_ephemeral("U0ERIN", "not an eligible approver").await?;
    assert_eq!(env.slack.opened_views().len(), 2, "no dialog for erin");

    let view = alice.request_view(&id).await?;
    assert_eq!(view["status"], "awaiting_approval");
    assert_eq!(view["approvals"], json!([]), "nothing recorded");
    assert_eq!(count(&env.audit(Some(&id)).await?, "denial_recorded"), 0);
    Ok(())
}

/// A second principal for alice, with her Slack user id, in the security group (so an eligible
/// approver of wiki-staging requests).
const ALICE_ALT: &str = r#"
[principals.alice-alt]
name = "Alice (admin account)"
slack_user_id = "U0ALICE"
"#;

/// Issue 8, same person with several principals: a second principal `alice-alt` with alice's
/// Slack id used to approve alice's own request from Slack. Sharing a Slack id (or an email) is
/// now refused at start-up, naming both principals, unless both declare the same person; then
/// the no-self-approval rule holds across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_person_with_two_principals_cannot_approve_their_own_request() -> anyhow::Result<()> {
    let in_security = |o: ServerOptions| {
        let mut o = o;
        o.directory_patches.push((
            r#"members = ["carol", "dave"]"#.to_owned(),
            r#"members = ["carol", "dave", "alice-alt"]"#.to_owned(),
        ));
        o
    };
    let refused = start(Some(APPROVALS), |mut o| {
        o.extra_config.push_str(ALICE_ALT);
        in_security(o)
    })
    .await;
    let error = format!("{:#}", refused.err().expect("a shared Slack id without a declared person is refused"));
    for needle in ["principals.alice-alt.slack_user_id", "\"alice\"", "\"alice-alt\"", "person = "] {
        assert!(error.contains(needle), "the start-up error names {needle}: {error}");
    }

    let env = start(Some(APPROVALS), |mut o| {
        o.extra_config.push_str(ALICE_ALT);
        o.extra_config.push_str("person = \"alice\"\n");
        let email = r#"email = "alice@example.com""#.to_owned();
        o.directory_patches.push((email.clone(), format!("{email}\nperson = \"alice\"")));
        in_security(o)
    })
    .await?;
    let alice = env.t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "mine")).await?);
    let records = env.wait_audit(Some(&id), |r| r["event_type"] == "approval_requested").await?;
    let requested = records.iter().find(|r| r["event_type"] == "approval_requested").expect("approval requested");
    let approvers = requested["details"]["approvers"].as_array().expect("approvers").clone();
    assert!(!approvers.contains(&json!("alice-alt")), "alice-alt is alice: not an approver here: {approvers:?}");

    // From Slack (her Slack id maps to one of her principals) and from the API as alice-alt.
    let message = env.approval_message(&id).await?;
    assert_eq!(env.interact(&env.click("U0ALICE", APPROVE, &message)).await?.0, 200);
    env.wait_ephemeral("U0ALICE", "cannot decide on their own").await?;
    let (st, body) = env.t.server.client("alice-alt").await?.decide(&id, "approve").await?;
    common::assert_error(st, &body, 403, "self_approval");
    let view = alice.request_view(&id).await?;
    assert_eq!((view["status"].as_str(), &view["approvals"]), (Some("awaiting_approval"), &json!([])), "{view:#}");
    Ok(())
}

/// Break-glass from the Slack dialog: the request is granted at once, and its review reaches the
/// reviewers' channel as an emergency, with buttons that decide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_from_the_dialog_is_reviewed_in_slack_as_an_emergency() -> anyhow::Result<()> {
    let workflow = crate::break_glass::emergency_workflow("5m");
    let env = start(Some(APPROVALS), |o| o.workflow("emergency-grant.yaml", &workflow)).await?;
    let alice = env.t.server.client("alice").await?;
    let command = slack::slash_command(SIGNING_SECRET, &actor("U0ALICE"), "/tollgate", "", "C0GENERAL", wall_clock());
    assert_eq!(env.post("/slack/commands", &command).await?.0, 200);
    env.slack.wait_for("views.open", 1, PATIENCE).await?;
    let view = env.slack.opened_views().remove(0);
    let values = slack::merge_values([
        slack::input_value("tollgate_integration", "integration", InputKind::StaticSelect("wiki-staging".to_owned())),
        slack::input_value("tollgate_scopes", "scopes", InputKind::PlainText("edit".to_owned())),
        slack::input_value("tollgate_duration", "duration", InputKind::EmptyPlainText),
        slack::input_value("tollgate_justification", "justification", InputKind::PlainText("INC-9".to_owned())),
        slack::input_value(
            "tollgate_break_glass",
            "break_glass",
            InputKind::Checkboxes(vec!["break_glass".to_owned()]),
        ),
    ]);
    let submission = slack::view_submission_of(SIGNING_SECRET, &actor("U0ALICE"), &view, values, wall_clock());
    let (status, body) = env.interact(&submission).await?;
    assert_eq!((status, body.as_str()), (200, ""));
    let (_, page) = alice.get("/v1/requests?requester=alice").await?;
    let id = id_of(&page["items"][0]);
    assert_eq!(page["items"][0]["break_glass"], true, "{page}");
    env.t
        .receiver
        .wait_for("the grant, before any approval", PATIENCE, |c| common::has_action(c, "grant", &id))
        .await?;

    let review = env.approval_message(&id).await?;
    assert_eq!(review.channel, APPROVALS);
    let shown = serde_json::to_string(&review.blocks)?;
    assert!(shown.contains("EMERGENCY break-glass"), "{shown}");
    assert!(review.text.contains("EMERGENCY"), "{}", review.text);
    assert_eq!(env.interact(&env.click("U0CAROL", APPROVE, &review)).await?.0, 200);
    env.wait_ephemeral("U0CAROL", "approval is recorded").await?;
    alice.wait_status(&id, "active", PATIENCE).await?;
    let records = env.wait_audit(Some(&id), |r| r["event_type"] == "review_approved").await?;
    let approved = records.iter().find(|r| r["event_type"] == "review_approved").expect("review approved");
    assert_eq!((approved["channel"].as_str(), approved["actor"].as_str()), (Some("slack"), Some("carol")));
    Ok(())
}

/// A grant workflow for `hr-staging` whose only approver is alice: a request by alice could
/// never be approved, so it is refused at creation (`no_eligible_approver`).
const ALICE_ONLY: &str = "key: alice-only
version: 1
kind: grant
applies_to:
  integrations: [hr-staging]
parameters:
  default_duration: 1h
  max_duration: 1h
steps:
  - approval:
      id: named
      approvers: {users: [alice]}
      timeout: 5m
  - action: {operation: grant}
  - wait: {until: expiry}
  - action: {operation: revoke}
";

/// Issue 10: a request refused by policy is audited by the engine, so once whatever path it came
/// by: the Slack dialog (which used to leave no record) as the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_from_the_slack_dialog_is_audited_once_as_from_the_api() -> anyhow::Result<()> {
    let env = start(Some(APPROVALS), |o| o.workflow("alice-only.yaml", ALICE_ONLY)).await?;
    let alice = env.t.server.client("alice").await?;
    let rejected = |records: &[Value]| -> Vec<Value> {
        records.iter().filter(|r| r["event_type"] == "request_rejected").cloned().collect()
    };

    let payroll = json!({ "integration": "hr-staging", "scopes": ["payroll"], "justification": "month end" });
    let (status, body) = alice.post("/v1/requests", &payroll).await?;
    common::assert_error(status, &body, 422, "no_eligible_approver");
    let by_api = rejected(&env.audit(None).await?);
    assert_eq!(by_api.len(), 1, "one record per refusal: {by_api:#?}");
    assert_eq!(by_api[0]["channel"], "api", "{by_api:#?}");

    let command = slack::slash_command(SIGNING_SECRET, &actor("U0ALICE"), "/tollgate", "", "C0GENERAL", wall_clock());
    assert_eq!(env.post("/slack/commands", &command).await?, (200, String::new()));
    env.slack.wait_for("views.open", 1, PATIENCE).await?;
    let dialog = env.slack.opened_views().remove(0);
    let values = slack::merge_values([
        slack::input_value("tollgate_integration", "integration", InputKind::StaticSelect("hr-staging".to_owned())),
        slack::input_value("tollgate_scopes", "scopes", InputKind::PlainText("payroll".to_owned())),
        slack::input_value("tollgate_justification", "justification", InputKind::PlainText("month end".to_owned())),
    ]);
    let submission = slack::view_submission_of(SIGNING_SECRET, &actor("U0ALICE"), &dialog, values, wall_clock());
    let (status, body) = env.interact(&submission).await?;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!(answer["response_action"], "errors", "the dialog stays open: {body:?}");
    assert!(
        answer["errors"]["tollgate_scopes"].as_str().is_some_and(|e| e.contains("has no eligible approver")),
        "{answer}"
    );
    assert_eq!(env.t.server.db().count("runs").await?, 0, "nothing was created");

    // Written in the refusal's own transaction, before Slack got its answer: no waiting.
    let all = rejected(&env.audit(None).await?);
    assert_eq!(all.len(), 2, "one more, for the dialog: {all:#?}");
    let r = &all[1];
    assert_eq!(
        (&r["channel"], &r["actor"], &r["outcome"], &r["subject"], &r["workflow_key"], &r["run_id"]),
        (
            &json!("slack"),
            &json!("alice"),
            &json!("rejected"),
            &json!("integration:hr-staging"),
            &json!("alice-only"),
            &Value::Null
        ),
        "{r:#}"
    );
    assert_eq!(
        (&r["details"]["reason"], &r["details"]["scopes"], &r["details"]["kind"]),
        (&json!("no_eligible_approver"), &json!(["payroll"]), &json!("grant")),
        "{r:#}"
    );
    Ok(())
}
