//! Approving by email, end to end: a real SMTP server on loopback receives the messages, and the
//! tests follow the links like a person (and like a mail scanner) would.

use std::time::Duration;

use reqwest::header;
use serde_json::{Value, json};
use tollgate_tests::{CANARY, Mail, SmtpServer};

use crate::common::{self, PATIENCE, id_of};

fn ask(integration: &str, scope: &str) -> Value {
    json!({ "integration": integration, "scopes": [scope], "justification": "email test <b>&</b>" })
}

/// A browser without a cookie jar: the tests handle the anti-CSRF cookie by hand.
fn browser() -> reqwest::Client {
    tollgate_tests::install_crypto_provider();
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// A server whose email goes to an SMTP server on `port`.
async fn start(port: u16, adjust: impl FnOnce(&mut tollgate_tests::ServerOptions)) -> anyhow::Result<common::TestEnv> {
    common::start_with(|mut o| {
        o.extra_config.push_str(&SmtpServer::config(port));
        adjust(&mut o);
        o
    })
    .await
}

/// Waits for the approval requests of `run` and returns them by recipient.
async fn approval_mails(smtp: &SmtpServer, run: &str, recipients: &[&str]) -> anyhow::Result<Vec<Mail>> {
    let of_run = |m: &Mail| m.subject.starts_with("Approval needed") && m.text.contains(run);
    let mails = smtp
        .wait_for("approval requests", PATIENCE, |ms| {
            recipients.iter().all(|r| ms.iter().any(|m| of_run(m) && m.is_for(r)))
        })
        .await?;
    Ok(recipients.iter().map(|r| mails.iter().find(|m| of_run(m) && m.is_for(r)).cloned().unwrap()).collect())
}

/// What a GET of the link gave: the page, the cookie the page set and the form's CSRF value.
struct Page {
    status: u16,
    body: String,
    cookie: Option<String>,
    csrf: Option<String>,
    headers: header::HeaderMap,
}

async fn open(http: &reqwest::Client, link: &str) -> anyhow::Result<Page> {
    let r = http.get(link).send().await?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let cookie = headers
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_owned);
    let body = r.text().await?;
    let csrf = body.split("name=\"csrf\" value=\"").nth(1).and_then(|rest| rest.split('"').next()).map(str::to_owned);
    Ok(Page { status, body, cookie, csrf, headers })
}

async fn post(
    http: &reqwest::Client,
    link: &str,
    cookie: Option<&str>,
    form: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let mut req = http.post(link).form(form);
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// The page with its per-response CSP nonce blanked out.
fn without_nonce(body: &str) -> String {
    match body.split_once("nonce=\"") {
        Some((head, rest)) => format!("{head}nonce=\"{}", rest.split_once('"').map_or("", |(_, tail)| tail)),
        None => body.to_owned(),
    }
}

async fn status_of(t: &common::TestEnv, id: &str) -> anyhow::Result<String> {
    let view = t.server.client("alice").await?.request_view(id).await?;
    Ok(view["status"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_link_shows_the_request_and_decides_only_on_a_deliberate_post() -> anyhow::Result<()> {
    let smtp = SmtpServer::start()?;
    let t = start(smtp.port(), |_| {}).await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let mails = approval_mails(&smtp, &id, &["bob@example.com", "carol@example.com", "dave@example.com"]).await?;
    let links: Vec<String> = mails.iter().map(|m| m.approval_link().expect("a link in every approval email")).collect();
    for (mail, link) in mails.iter().zip(&links) {
        assert!(link.starts_with(&format!("{}/approvals/email/", t.server.url())), "built on the public URL: {link}");
        assert!(mail.html.contains(link.as_str()), "the HTML part carries the same link");
        assert_eq!(mail.to.len(), 1, "one message per approver: {:?}", mail.to);
    }
    assert_eq!(links.iter().collect::<std::collections::BTreeSet<_>>().len(), 3, "one link per approver");
    // Every email about the request so far has gone out: none of them is for the requester.
    t.server.wait_quiet(PATIENCE).await?;
    assert!(
        !smtp.messages().iter().any(|m| m.is_for("alice@example.com") && m.approval_link().is_some()),
        "no link is ever issued to the requester"
    );
    let link = &links[1]; // carol's

    // A scanner (or the approver) opening the link changes nothing, however often.
    let http = browser();
    let page = open(&http, link).await?;
    assert_eq!(page.status, 200, "{}", page.body);
    for want in ["alice", "wiki-staging", "edit", "email test &#60;b&#62;&#38;&#60;/b&#62;", "carol", "0 of 1"] {
        assert!(page.body.contains(want), "page lacks {want:?}:\n{}", page.body);
    }
    assert!(!page.body.contains("<b>&</b>"), "the justification is escaped");
    assert!(!page.body.contains("<script"), "no script needed or allowed");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");
    let csp = page.headers[header::CONTENT_SECURITY_POLICY].to_str()?;
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"), "{csp}");
    let cookie = page.cookie.clone().expect("the page sets the anti-CSRF cookie");
    let set_cookie = page.headers[header::SET_COOKIE].to_str()?;
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    let csrf = page.csrf.clone().expect("the form carries the CSRF value");
    assert_eq!(http.head(link).send().await?.status(), 200);
    assert_eq!(open(&http, link).await?.status, 200);
    assert_eq!(status_of(&t, &id).await?, "awaiting_approval");

    // Forged or incomplete posts are refused and record nothing.
    let (st, _) = post(&http, link, Some(&cookie), &[("decision", "approve")]).await?;
    assert_eq!(st, 403, "no CSRF value");
    let (st, _) = post(&http, link, None, &[("csrf", &csrf), ("decision", "approve")]).await?;
    assert_eq!(st, 403, "no cookie");
    let other_cookie = open(&browser(), link).await?.cookie.unwrap();
    let (st, _) = post(&http, link, Some(&other_cookie), &[("csrf", &csrf), ("decision", "approve")]).await?;
    assert_eq!(st, 403, "the CSRF value of another cookie");
    let (st, body) = post(&http, link, Some(&cookie), &[("csrf", &csrf)]).await?;
    assert_eq!(st, 400, "no explicit choice: {body}");
    let (st, body) = post(&http, link, Some(&cookie), &[("csrf", &csrf), ("decision", "deny")]).await?;
    assert_eq!(st, 400, "a denial needs a reason");
    assert!(body.contains("Give a reason"), "{body}");
    assert_eq!(status_of(&t, &id).await?, "awaiting_approval");

    // The deliberate post decides, as the approver the link was issued to.
    let (st, body) =
        post(&http, link, Some(&cookie), &[("csrf", &csrf), ("decision", "approve"), ("reason", "")]).await?;
    assert_eq!(st, 200, "{body}");
    assert!(body.contains("Decision recorded"), "{body}");
    alice.wait_status(&id, "active", PATIENCE).await?;

    // Used: every later use gets the one page for unusable links, like a made-up token.
    let (st, again) = post(&http, link, Some(&cookie), &[("csrf", &csrf), ("decision", "approve")]).await?;
    assert_eq!(st, 404);
    let reopened = open(&http, link).await?;
    let made_up = open(&http, &format!("{}/approvals/email/{}", t.server.url(), "A".repeat(43))).await?;
    let garbage = open(&http, &format!("{}/approvals/email/not-a-token", t.server.url())).await?;
    assert_eq!((reopened.status, made_up.status, garbage.status), (404, 404, 404));
    let generic = without_nonce(&made_up.body);
    assert_eq!(without_nonce(&reopened.body), generic, "gives nothing away");
    assert_eq!(without_nonce(&again), generic);
    assert_eq!(without_nonce(&garbage.body), generic);
    // The other approvers' links no longer open: the approval is over.
    assert_eq!(open(&http, &links[0]).await?.status, 404);

    let records = t.server.client("audrey").await?.audit(Some(&id)).await?;
    let vote = records.iter().find(|r| r["event_type"] == "approval_recorded").expect("the vote is audited");
    assert_eq!(vote["channel"], "email");
    assert_eq!(vote["actor"], "carol");
    let link_id = vote["details"]["origin"]["link_id"].as_str().expect("the link id is recorded");
    assert!(
        records.iter().any(|r| r["event_type"] == "approval_link_issued"
            && r["details"]["link_id"] == link_id
            && r["details"]["approver"] == "carol"),
        "the link's issue is audited"
    );
    let token = link.rsplit('/').next().unwrap();
    let everything = serde_json::to_string(&records)?;
    assert!(!everything.contains(token), "the token never reaches the audit log");
    assert!(!t.server.log().contains(token), "nor the server's log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_is_refused_once_its_approver_lost_eligibility_or_its_approval_expired() -> anyhow::Result<()> {
    let smtp = SmtpServer::start()?;
    let mut t = start(smtp.port(), |_| {}).await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "read")).await?);
    let carol = approval_mails(&smtp, &id, &["carol@example.com"]).await?.remove(0);
    let link = carol.approval_link().unwrap();
    let http = browser();
    let page = open(&http, &link).await?;
    assert_eq!(page.status, 200);

    // Carol leaves the security group after the email went out.
    t.server
        .restart_with(|o| {
            o.directory_patches.push((r#"members = ["carol", "dave"]"#.to_owned(), r#"members = ["dave"]"#.to_owned()));
        })
        .await?;
    let (st, body) =
        post(&http, &link, page.cookie.as_deref(), &[("csrf", page.csrf.as_deref().unwrap()), ("decision", "approve")])
            .await?;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("no longer an eligible approver"), "{body}");
    assert_eq!(status_of(&t, &id).await?, "awaiting_approval");
    let records = t.server.client("audrey").await?.audit(Some(&id)).await?;
    let refused = records.iter().find(|r| r["event_type"] == "decision_rejected").expect("the refusal is audited");
    assert_eq!((refused["channel"].as_str(), refused["actor"].as_str()), (Some("email"), Some("carol")));

    // An approval that expires takes its links with it.
    let short = id_of(&alice.create_request(&ask("ledger-sandbox", "read")).await?);
    let bob = approval_mails(&smtp, &short, &["bob@example.com"]).await?.remove(0);
    let link = bob.approval_link().unwrap();
    alice.wait_status(&short, "expired", PATIENCE).await?;
    let page = open(&http, &link).await?;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(page.body.contains("This link cannot be used"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_is_delivered_after_the_smtp_server_comes_back_and_the_run_proceeds() -> anyhow::Result<()> {
    let port = SmtpServer::free_port()?;
    let t = start(port, |_| {}).await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    // Nothing listens yet: the first attempts fail and are retried.
    let audrey = t.server.client("audrey").await?;
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let log = t.server.log();
        if log.contains("side effect failed") && log.contains("connection failed") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no failed SMTP attempt logged:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = audrey.audit(Some(&id)).await?;
    assert!(
        !records.iter().any(|r| r["event_type"] == "notification_failed" && r["channel"] == "email"),
        "a temporary failure is not a final failure"
    );

    let smtp = SmtpServer::start_on(port)?;
    let bob = approval_mails(&smtp, &id, &["bob@example.com"]).await?.remove(0);
    let http = browser();
    let link = bob.approval_link().unwrap();
    let page = open(&http, &link).await?;
    let (st, body) = post(
        &http,
        &link,
        page.cookie.as_deref(),
        &[("csrf", page.csrf.as_deref().unwrap()), ("decision", "deny"), ("reason", "not this quarter")],
    )
    .await?;
    assert_eq!(st, 200, "{body}");
    alice.wait_status(&id, "denied", PATIENCE).await?;
    smtp.wait_for("the denial to the requester", PATIENCE, |ms| {
        ms.iter().any(|m| m.is_for("alice@example.com") && m.subject.starts_with("Denied") && m.text.contains(&id))
    })
    .await?;
    let deadline = std::time::Instant::now() + PATIENCE;
    while !audrey
        .audit(Some(&id))
        .await?
        .iter()
        .any(|r| r["event_type"] == "notification_sent" && r["channel"] == "email")
    {
        assert!(std::time::Instant::now() < deadline, "the delivery is audited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_rejection_is_audited_and_alerted_and_secrets_never_reach_an_email() -> anyhow::Result<()> {
    let smtp = SmtpServer::start()?;
    let t = start(smtp.port(), |o| {
        o.directory_patches
            .push((r#"email = "carol@example.com""#.to_owned(), r#"email = "bounce-carol@example.com""#.to_owned()));
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let audrey = t.server.client("audrey").await?;
    let deadline = std::time::Instant::now() + PATIENCE;
    let failed = loop {
        let records = audrey.audit(Some(&id)).await?;
        if let Some(r) = records.iter().find(|r| r["event_type"] == "notification_failed" && r["channel"] == "email") {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no notification_failed in {records:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(failed["details"]["error"].as_str().unwrap_or_default().contains("550"), "{failed}");
    assert!(t.server.log().contains("ERROR"), "an operator alert is logged");
    // The others still got theirs, and the run goes on.
    let bob = approval_mails(&smtp, &id, &["bob@example.com", "dave@example.com"]).await?.remove(0);
    let http = browser();
    let link = bob.approval_link().unwrap();
    let page = open(&http, &link).await?;
    let form = [("csrf", page.csrf.as_deref().unwrap()), ("decision", "approve")];
    assert_eq!(post(&http, &link, page.cookie.as_deref(), &form).await?.0, 200);
    alice.wait_status(&id, "active", PATIENCE).await?;

    // A second request whose grant fails with the connector's internal detail in the answer.
    t.receiver.fail_next(Some("grant"), 400, 1);
    let second = id_of(&alice.create_request(&ask("wiki-staging", "read")).await?);
    let bob = approval_mails(&smtp, &second, &["bob@example.com"]).await?.remove(0);
    let link = bob.approval_link().unwrap();
    let page = open(&http, &link).await?;
    let form = [("csrf", page.csrf.as_deref().unwrap()), ("decision", "approve")];
    assert_eq!(post(&http, &link, page.cookie.as_deref(), &form).await?.0, 200);
    alice.wait_status(&second, "failed", PATIENCE).await?;
    smtp.wait_for("the failure email", PATIENCE, |ms| {
        ms.iter().any(|m| m.is_for("alice@example.com") && m.subject.starts_with("Failed") && m.text.contains(&second))
    })
    .await?;
    t.server.wait_quiet(PATIENCE).await?;
    for m in smtp.messages() {
        assert!(!m.raw.contains(CANARY), "a connector secret reached an email: {:?}", m.subject);
    }
    Ok(())
}

const ESCALATION: &str = r#"key: test-escalation
version: 1
kind: grant
applies_to:
  integrations: [ci-runner]
parameters:
  default_duration: 1h
  max_duration: 1h
steps:
  - approval:
      approvers: { users: [bob] }
      timeout: 5m
      escalation: { after: 1s, to: { users: [erin] } }
  - action: { operation: grant }
  - wait: { until: expiry }
  - action: { operation: revoke }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_emails_the_added_approvers_a_link_that_lets_them_decide() -> anyhow::Result<()> {
    let smtp = SmtpServer::start()?;
    let t = start(smtp.port(), |o| {
        o.workflows.push(("test-escalation.yaml".to_owned(), ESCALATION.to_owned()));
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let id = id_of(&alice.create_request(&ask("ci-runner", "deploy")).await?);
    approval_mails(&smtp, &id, &["bob@example.com"]).await?;
    // erin may not decide before the escalation (she may have been too quick for the timer,
    // in which case the API accepts her: only check when the step has not escalated yet).
    let records = t.server.client("audrey").await?.audit(Some(&id)).await?;
    if !records.iter().any(|r| r["event_type"] == "approval_escalated") {
        assert!(!smtp.messages().iter().any(|m| m.is_for("erin@example.com")), "erin is not asked before");
    }
    let escalated = smtp
        .wait_for("the escalation email to erin", PATIENCE, |ms| {
            ms.iter()
                .any(|m| m.is_for("erin@example.com") && m.subject.starts_with("Escalated") && m.text.contains(&id))
        })
        .await?
        .into_iter()
        .find(|m| m.is_for("erin@example.com"))
        .unwrap();
    let link = escalated.approval_link().expect("the escalation email carries a link");
    let http = browser();
    let page = open(&http, &link).await?;
    assert_eq!(page.status, 200, "{}", page.body);
    let form = [("csrf", page.csrf.as_deref().unwrap()), ("decision", "approve")];
    let (st, body) = post(&http, &link, page.cookie.as_deref(), &form).await?;
    assert_eq!(st, 200, "{body}");
    alice.wait_status(&id, "active", PATIENCE).await?;
    let records = t.server.client("audrey").await?.audit(Some(&id)).await?;
    let esc = records.iter().find(|r| r["event_type"] == "approval_escalated").expect("audited");
    assert_eq!(esc["details"]["approvers"], json!(["erin"]));
    let vote = records.iter().find(|r| r["event_type"] == "approval_recorded").unwrap();
    assert_eq!((vote["actor"].as_str(), vote["channel"].as_str()), (Some("erin"), Some("email")));
    Ok(())
}

/// Break-glass by email: the owner hears of the use at once and the reviewers get the review as
/// an emergency; a reviewer's link denies it, which revokes the access at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_glass_review_arrives_as_an_emergency_and_its_denial_revokes_at_once() -> anyhow::Result<()> {
    let smtp = SmtpServer::start()?;
    let workflow = crate::break_glass::emergency_workflow("5m");
    let t = start(smtp.port(), |o| o.workflows.push(("emergency-grant.yaml".to_owned(), workflow))).await?;
    let alice = t.server.client("alice").await?;
    let ask =
        json!({ "integration": "wiki-staging", "scopes": ["edit"], "justification": "INC-11", "break_glass": true });
    let id = id_of(&alice.create_request(&ask).await?);

    let emergency = |m: &Mail| m.subject.starts_with("EMERGENCY (break-glass)") && m.text.contains(&id);
    let mails = smtp
        .wait_for("the owner's notice and the reviewers' requests", PATIENCE, |ms| {
            ["bob@example.com", "carol@example.com", "dave@example.com"]
                .iter()
                .all(|r| ms.iter().any(|m| emergency(m) && m.is_for(r)))
        })
        .await?;
    let to_bob = mails.iter().find(|m| emergency(m) && m.is_for("bob@example.com")).expect("bob told");
    assert!(to_bob.approval_link().is_none(), "the owner is told, not asked: {}", to_bob.subject);
    let review = mails.iter().find(|m| emergency(m) && m.is_for("carol@example.com")).expect("carol asked");
    assert!(review.subject.contains("Approval needed"), "{}", review.subject);
    assert!(review.html.contains("EMERGENCY (break-glass)"));
    let link = review.approval_link().expect("a review link");

    let http = browser();
    let page = open(&http, &link).await?;
    assert_eq!(page.status, 200, "{}", page.body);
    let (cookie, csrf) = (page.cookie.expect("cookie"), page.csrf.expect("csrf"));
    let form = [("csrf", csrf.as_str()), ("decision", "deny"), ("reason", "no incident")];
    let (st, body) = post(&http, &link, Some(&cookie), &form).await?;
    assert_eq!(st, 200, "{body}");
    t.receiver.wait_for("the revoke", PATIENCE, |c| common::has_action(c, "revoke", &id)).await?;
    let done = alice.wait_status(&id, "completed", PATIENCE).await?;
    assert_eq!(done["grant"]["status"], "revoked", "{done:#}");
    let records = t.server.client("audrey").await?.audit(Some(&id)).await?;
    let denied = records.iter().find(|r| r["event_type"] == "review_denied").expect("review_denied");
    assert_eq!((denied["channel"].as_str(), denied["actor"].as_str()), (Some("email"), Some("carol")));
    Ok(())
}

/// GETs `link` as the client `client`, forwarded by the (trusted) loopback proxy.
async fn open_as(http: &reqwest::Client, link: &str, client: &str) -> anyhow::Result<u16> {
    Ok(http.get(link).header("x-forwarded-for", client).send().await?.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_links_throttles_the_guesser_and_never_the_approvers() -> anyhow::Result<()> {
    let smtp = SmtpServer::start()?;
    // The test talks to the server from 127.0.0.1, listed as a trusted reverse proxy.
    let t = start(smtp.port(), |o| o.extra_config.push_str("\n[http]\ntrusted_proxies = [\"127.0.0.0/8\"]\n")).await?;
    let alice = t.server.client("alice").await?;
    let http = browser();
    let first = id_of(&alice.create_request(&ask("wiki-staging", "read")).await?);
    let second = id_of(&alice.create_request(&ask("wiki-staging", "edit")).await?);
    let used = approval_mails(&smtp, &first, &["carol@example.com"]).await?.remove(0).approval_link().unwrap();
    let fresh = approval_mails(&smtp, &second, &["carol@example.com"]).await?.remove(0).approval_link().unwrap();

    // Carol decides, then keeps re-opening the spent link (an old email): that is no guess.
    let page = open(&http, &used).await?;
    let (st, body) =
        post(&http, &used, page.cookie.as_deref(), &[("csrf", page.csrf.as_deref().unwrap()), ("decision", "approve")])
            .await?;
    assert_eq!(st, 200, "{body}");
    for _ in 0..30 {
        assert_eq!(open_as(&http, &used, "198.51.100.20").await?, 404);
    }
    assert_eq!(open_as(&http, &fresh, "198.51.100.20").await?, 200, "re-opened spent links do not count");

    // A guesser behind the same proxy is throttled after 20 unknown tokens...
    let base = used.rsplit_once('/').unwrap().0;
    let guess = |i: usize| format!("{base}/{}", format!("{i:0>43}").replace('0', "A"));
    for i in 0..20 {
        assert_eq!(open_as(&http, &guess(i), "203.0.113.66").await?, 404, "guess {i}");
    }
    assert_eq!(open_as(&http, &guess(99), "203.0.113.66").await?, 429);
    assert_eq!(open_as(&http, &fresh, "203.0.113.66").await?, 429, "every link, from that client");
    // ...and the approvers, told apart by the proxy's X-Forwarded-For, are not.
    assert_eq!(open_as(&http, &fresh, "198.51.100.20").await?, 200);
    assert!(t.server.log().contains("too many unknown link tokens"), "the block is logged");
    Ok(())
}
