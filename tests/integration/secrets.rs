//! One-time delivery of credentials a connector mints for a grant's holder: the holder retrieves
//! it once (`POST /v1/grants/{id}/secret`, `tollgate grant secret`), nobody else can, a second
//! retrieval is refused, an unretrieved one is destroyed at its deadline (audited), and the
//! secret appears nowhere else — trace logs, the audit export, other API answers, notification
//! payloads, emails, the database at rest.

use serde_json::{Value, json};
use tollgate_tests::{ApiClient, Backend, MINT_CANARY, ServerOptions};

use crate::common::{self, PATIENCE, TestEnv, assert_error, event_types, id_of};

/// The sealing key of these tests (64 hex digits).
const KEY: &str = "5f1c0e7a9b3d2f4e6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5b7d9f1a3c5e7b9d0f";

fn with_secrets(o: ServerOptions) -> ServerOptions {
    let mut o = o;
    o.log_level = "trace".to_owned();
    o.extra_config.push_str(&format!("\n[secrets]\nkey = \"{KEY}\"\n"));
    o
}

/// Requests `read` on wiki-staging, has bob approve, waits until active; the grant view.
async fn active_grant(t: &TestEnv, alice: &ApiClient) -> anyhow::Result<(String, Value)> {
    let body =
        json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "secrets test" });
    let id = id_of(&alice.create_request(&body).await?);
    let (st, resp) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{resp}");
    let view = alice.wait_status(&id, "active", PATIENCE).await?;
    Ok((id, view["grant"].clone()))
}

fn grant_id(grant: &Value) -> String {
    grant["id"].as_str().unwrap_or_else(|| panic!("no grant id in {grant}")).to_owned()
}

/// The secret the receiver minted for `grant`.
fn minted_for(t: &TestEnv, grant: &str) -> String {
    let minted = t.receiver.minted();
    let found: Vec<_> = minted.iter().filter(|m| m.grant_id == grant).collect();
    assert_eq!(found.len(), 1, "one secret minted for {grant}: {minted:?}");
    found[0].secret.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minted_secret_is_handed_to_its_holder_once_and_appears_nowhere_else() -> anyhow::Result<()> {
    let mut t = common::start_with(with_secrets).await?;
    let (alice, bob, admin, erin) = (
        t.server.client("alice").await?,
        t.server.client("bob").await?,
        t.server.client("admin").await?,
        t.server.client("erin").await?,
    );
    let mut answers: Vec<String> = Vec::new();

    // A grant whose connector minted nothing has no secret to hand over.
    let (_, plain) = active_grant(&t, &alice).await?;
    let (st, body) = alice.post(&format!("/v1/grants/{}/secret", grant_id(&plain)), &json!({})).await?;
    assert_error(st, &body, 409, "no_secret");

    // The receiver now mints a secret with every grant.
    t.receiver.mint_secrets(&["grant", "renew", "rotate"]);
    let (run, grant) = active_grant(&t, &alice).await?;
    let gid = grant_id(&grant);
    let secret = minted_for(&t, &gid);
    assert!(secret.starts_with(MINT_CANARY), "{secret}");
    let path = format!("/v1/grants/{gid}/secret");

    // At rest it is sealed, bound to its grant: never the value.
    let rows = t.server.db().query("SELECT sealed FROM grant_secrets WHERE sealed IS NOT NULL").await?;
    let sealed = rows.first().and_then(|r| r["sealed"].as_str()).unwrap_or_else(|| panic!("{rows:?}")).to_owned();
    assert!(sealed.starts_with("tg1.") && !sealed.contains(MINT_CANARY), "{sealed}");

    // Nobody but the holder: not a bystander, not the integration's owner, not an admin — all
    // answered as for a grant that does not exist.
    for (who, client) in [("erin", &erin), ("bob", &bob), ("admin", &admin)] {
        let (st, body) = client.post(&path, &json!({})).await?;
        assert_error(st, &body, 404, "not_found");
        answers.push(format!("{who}: {body}"));
    }
    let (st, body) = alice.post(&format!("/v1/grants/{}/secret", uuid::Uuid::now_v7()), &json!({})).await?;
    assert_error(st, &body, 404, "not_found");

    // The holder gets it once, not cached; a second retrieval is refused.
    let reply = alice.send(alice.request(reqwest::Method::POST, &path).json(&json!({}))).await?;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.body["secret"], secret.as_str());
    assert_eq!(reply.body["expires_at"], "2099-01-01T00:00:00Z");
    let (st, body) = alice.post(&path, &json!({})).await?;
    assert_error(st, &body, 410, "secret_gone");
    assert!(body["error"]["detail"].as_str().unwrap_or_default().contains("retrieved"), "{body}");
    answers.push(body.to_string());

    // The CLI: only the secret on standard output; the second time an error.
    let (_, grant2) = active_grant(&t, &alice).await?;
    let gid2 = grant_id(&grant2);
    let out = t.server.cli_as("alice", &["grant", "secret", &gid2]).await?;
    assert_eq!((out.code, out.stdout.as_str()), (0, format!("{}\n", minted_for(&t, &gid2)).as_str()), "{}", out.stderr);
    let out = t.server.cli_as("alice", &["grant", "secret", &gid2, "--json"]).await?;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("410 secret_gone"), "{}", out.stderr);
    answers.push(format!("{}{}", out.stdout, out.stderr));

    // A renewal that mints again makes a new secret retrievable.
    let renew = json!({ "integration": "wiki-staging", "kind": "renew", "grant": gid, "duration": "2h", "justification": "longer" });
    let renewal = id_of(&alice.create_request(&renew).await?);
    assert_eq!(bob.decide(&renewal, "approve").await?.0, 200);
    alice.wait_status(&renewal, "completed", PATIENCE).await?;
    let renewed = t.receiver.minted().into_iter().find(|m| m.grant_id == gid && m.operation == "renew");
    let renewed = renewed.expect("the renew call minted a secret").secret;
    let (st, body) = alice.post(&path, &json!({})).await?;
    assert_eq!((st, body["secret"].as_str()), (200, Some(renewed.as_str())), "{body}");

    // A short delivery deadline: a secret left unretrieved is destroyed unread, and audited.
    t.server.restart_with(|o| o.engine_extra = "secret_delivery_secs = 1".to_owned()).await?;
    let (_, grant3) = active_grant(&t, &alice).await?;
    let gid3 = grant_id(&grant3);
    let expired = tollgate_tests::eventually("grant_secret_expired", PATIENCE, || async {
        let records = admin.audit(None).await?;
        let found = records.iter().any(|r| {
            r["event_type"] == "grant_secret_expired" && r["subject"].as_str() == Some(&format!("grant:{gid3}"))
        });
        Ok(if found { Ok(records) } else { Err(format!("{:?}", event_types(&records))) })
    })
    .await?;
    let (st, body) = alice.post(&format!("/v1/grants/{gid3}/secret"), &json!({})).await?;
    assert_error(st, &body, 410, "secret_gone");
    assert!(body["error"]["detail"].as_str().unwrap_or_default().contains("expired"), "{body}");
    let events = event_types(&expired);
    for want in ["grant_secret_stored", "grant_secret_retrieved", "grant_secret_refused", "grant_secret_expired"] {
        assert!(events.iter().any(|e| e == want), "{want} not audited: {events:?}");
    }
    let retrieved = expired.iter().filter(|r| r["event_type"] == "grant_secret_retrieved").count();
    assert_eq!(retrieved, 3, "three retrievals");

    // The canary is nowhere else. Everything the API answered besides the one retrieval:
    t.server.wait_quiet(PATIENCE).await?;
    for client in [&alice, &admin] {
        for p in [
            "/v1/grants?limit=200".to_owned(),
            "/v1/requests?limit=200".to_owned(),
            format!("/v1/grants/{gid}"),
            format!("/v1/requests/{run}"),
            format!("/v1/requests/{renewal}"),
            "/v1/audit?limit=1000".to_owned(),
            "/v1/tasks".to_owned(),
        ] {
            let (_, body) = client.get(&p).await?;
            answers.push(format!("{p}: {body}"));
        }
    }
    for answer in &answers {
        assert!(!answer.contains(MINT_CANARY), "an API answer shows a minted secret: {answer}");
    }
    // The server's log, at trace level.
    let log = t.server.log();
    assert!(log.contains("TRACE"), "the server logged at trace level");
    assert!(!log.contains(MINT_CANARY), "the server log shows a minted secret");
    // The audit export.
    let export = t.server.cli_config(&["audit", "export", "--format", "jsonl"]).await?;
    assert_eq!(export.code, 0, "{}", export.stderr);
    assert!(export.stdout.contains("grant_secret_retrieved"), "{}", export.stdout);
    assert!(!export.stdout.contains(MINT_CANARY) && !export.stderr.contains(MINT_CANARY), "the audit export");
    // What Tollgate sent: notification payloads (Slack and email render the same notification)
    // and connector calls.
    for call in t.receiver.calls() {
        assert!(!String::from_utf8_lossy(&call.raw).contains(MINT_CANARY), "{} {:?}", call.path, call.body);
    }
    assert!(!t.receiver.notifications().is_empty());
    // Emails written as .eml files.
    let outbox = t.server.config_path().parent().expect("server dir").join("mail-outbox");
    let mut mails = 0;
    for entry in std::fs::read_dir(&outbox)?.filter_map(Result::ok) {
        let raw = std::fs::read(entry.path())?;
        assert!(!String::from_utf8_lossy(&raw).contains(MINT_CANARY), "{}", entry.path().display());
        mails += 1;
    }
    assert!(mails > 0, "emails were written to {}", outbox.display());
    // The database at rest: on SQLite, every byte of its files; on PostgreSQL, the table.
    let rows = t.server.db().query("SELECT sealed, ended FROM grant_secrets").await?;
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r["sealed"].is_null()), "every secret retrieved or destroyed: {rows:?}");
    if t.server.db().backend() == Backend::Sqlite {
        let url = t.server.db().url().to_owned();
        let file = url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default().to_owned();
        t.server.kill();
        let mut files = 0;
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let Ok(bytes) = std::fs::read(format!("{file}{suffix}")) else { continue };
            files += 1;
            let canary = MINT_CANARY.as_bytes();
            assert!(
                !bytes.windows(canary.len()).any(|w| w == canary),
                "{file}{suffix} holds a minted secret in plaintext"
            );
        }
        assert!(files > 0, "no database file at {file}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_sealing_key_a_minted_secret_is_neither_kept_nor_lost_silently() -> anyhow::Result<()> {
    let t = common::start().await?;
    t.receiver.mint_secrets(&["grant"]);
    let alice = t.server.client("alice").await?;
    let body =
        json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "no key" });
    let id = id_of(&alice.create_request(&body).await?);
    assert_eq!(t.server.client("bob").await?.decide(&id, "approve").await?.0, 200);
    // The call is retried (same idempotency key) in case a key is configured meanwhile, and
    // once the step's retries are spent the request fails, saying why; never shown as granted.
    let view = alice.wait_status(&id, "failed", PATIENCE).await?;
    assert!(view["reason"].as_str().unwrap_or_default().contains("[secrets] key"), "{view:#}");
    assert_eq!(t.receiver.distinct_keys("grant", Some(&id)).len(), 1);
    assert!(t.receiver.actions("grant").len() >= 2, "retried");
    let records = t.server.client("admin").await?.audit(Some(&id)).await?;
    assert!(!event_types(&records).iter().any(|e| e.starts_with("grant_secret")), "{records:?}");
    assert_eq!(t.server.db().count("grant_secrets").await?, 0, "nothing stored");
    let log = t.server.log();
    assert!(log.contains("no [secrets] key is configured"), "the operator is told why");
    assert!(!log.contains(MINT_CANARY));
    Ok(())
}
