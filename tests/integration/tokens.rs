//! API tokens have a lifecycle (issue 10): admins create them with a label and a lifetime,
//! everyone lists and revokes their own, a revoked or expired token stops authenticating on the
//! next request, a use is recorded, every change is audited; the same through the CLI, which
//! refuses a database that does not exist instead of creating an empty one.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tollgate_tests::wall_clock;

use crate::common::{self, PATIENCE, assert_error, event_types};

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not a timestamp: {v}"))
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_created_listed_revoked_and_expire_and_each_change_is_audited() -> anyhow::Result<()> {
    let t = common::start().await?;
    let (admin, alice) = (t.server.client("admin").await?, t.server.client("alice").await?);

    // An admin creates a token for the CI bot, with a lifetime.
    let before = wall_clock();
    let (st, created) =
        admin.post("/v1/tokens", &json!({ "principal": "ci-bot", "label": "deploys", "ttl": "1h" })).await?;
    let after = wall_clock();
    assert_eq!(st, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tg_"), "{created}");
    let token = &created["token"];
    let bot_token_id = token["id"].as_str().unwrap().to_owned();
    assert_eq!((token["principal"].as_str(), token["label"].as_str()), (Some("ci-bot"), Some("deploys")));
    assert_eq!((token["status"].as_str(), &token["last_used_at"]), (Some("active"), &Value::Null));
    let expires = time(&token["expires_at"]);
    let hour = chrono::Duration::hours(1);
    assert!(expires >= before + hour - chrono::Duration::seconds(1) && expires <= after + hour, "{token}");
    assert!(!created.to_string().contains("token_hash"), "{created}");

    // It authenticates, and its use is recorded.
    let bot = admin.with_token(Some(&secret));
    let (st, me) = bot.get("/v1/me").await?;
    assert_eq!((st, me["id"].as_str()), (200, Some("ci-bot")), "{me}");
    tollgate_tests::eventually("the bot's token use recorded", PATIENCE, || async {
        let (_, page) = admin.get("/v1/tokens?principal=ci-bot").await?;
        Ok(page["items"][0]["last_used_at"].as_str().map(str::to_owned).ok_or_else(|| page.to_string()))
    })
    .await?;

    // Others create none, see only their own, and cannot revoke the bot's (nor learn it exists).
    let (st, body) = alice.post("/v1/tokens", &json!({ "principal": "alice", "label": "mine" })).await?;
    assert_error(st, &body, 403, "forbidden");
    let (st, own) = alice.get("/v1/tokens").await?;
    assert_eq!(st, 200, "{own}");
    assert!(!own["items"].as_array().unwrap().is_empty(), "{own}");
    assert!(own["items"].as_array().unwrap().iter().all(|t| t["principal"] == "alice"), "{own}");
    let (_, theirs) = alice.get("/v1/tokens?principal=ci-bot").await?;
    assert_eq!(ids(&theirs), Vec::<String>::new(), "{theirs}");
    let (st, body) = alice.post(&format!("/v1/tokens/{bot_token_id}/revoke"), &json!({})).await?;
    assert_error(st, &body, 404, "not_found");
    assert_eq!(bot.get("/v1/me").await?.0, 200);

    // Bad input is refused with stable codes.
    for (body, code) in [
        (json!({ "principal": "ci-bot", "label": "x", "ttl": "400d" }), "ttl_too_long"),
        (json!({ "principal": "ci-bot", "label": "x", "ttl": "soon" }), "invalid_duration"),
        (json!({ "principal": "ci-bot", "label": "pay\u{202E}lyap" }), "validation_failed"),
        (json!({ "principal": "nobody", "label": "x" }), "unknown_principal"),
    ] {
        let (st, resp) = admin.post("/v1/tokens", &body).await?;
        assert_error(st, &resp, 422, code);
    }

    // Revoked: refused on the very next request; revoking again answers the same.
    let (st, revoked) = admin.post(&format!("/v1/tokens/{bot_token_id}/revoke"), &json!({})).await?;
    assert_eq!((st, revoked["status"].as_str()), (200, Some("revoked")), "{revoked}");
    let (st, body) = bot.get("/v1/me").await?;
    assert_error(st, &body, 401, "unauthenticated");
    let (st, again) = admin.post(&format!("/v1/tokens/{bot_token_id}/revoke"), &json!({})).await?;
    assert_eq!((st, &again["revoked_at"]), (200, &revoked["revoked_at"]), "{again}");

    // The CLI: create with a lifetime, list, revoke.
    let out = t
        .server
        .cli_config(&["token", "create", "-p", "ci-bot", "--label", "nightly", "--ttl", "30d", "--json"])
        .await?;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("database: "), "{}", out.stderr);
    let cli_created: Value = serde_json::from_str(&out.stdout)?;
    let nightly = admin.with_token(cli_created["secret"].as_str());
    assert_eq!(nightly.get("/v1/me").await?.0, 200);
    let nightly_id = cli_created["token"]["id"].as_str().unwrap().to_owned();
    let out = t.server.cli_config(&["token", "list", "-p", "ci-bot", "--json"]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let listed: Value = serde_json::from_str(&out.stdout)?;
    let status_of = |id: &str| listed.as_array().unwrap().iter().find(|t| t["id"] == id).map(|t| t["status"].clone());
    assert_eq!(status_of(&bot_token_id), Some(json!("revoked")), "{listed}");
    assert_eq!(status_of(&nightly_id), Some(json!("active")), "{listed}");
    assert!(!out.stdout.contains("tg_"), "a listing shows no secret: {}", out.stdout);
    let out = t.server.cli_config(&["token", "revoke", &nightly_id]).await?;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(nightly.get("/v1/me").await?.0, 401);

    // Expired: refused, and listed as expired.
    let (_, expiring) =
        admin.post("/v1/tokens", &json!({ "principal": "ci-bot", "label": "expiring", "ttl": "1h" })).await?;
    let expiring_client = admin.with_token(expiring["secret"].as_str());
    assert_eq!(expiring_client.get("/v1/me").await?.0, 200);
    t.server
        .db()
        .execute("UPDATE api_tokens SET expires_at = '2020-01-01T00:00:00+00:00' WHERE name = 'expiring'")
        .await?;
    let (st, body) = expiring_client.get("/v1/me").await?;
    assert_error(st, &body, 401, "unauthenticated");
    let (_, page) = admin.get("/v1/tokens?principal=ci-bot&status=expired").await?;
    assert_eq!(ids(&page), [expiring["token"]["id"].as_str().unwrap()], "{page}");

    // Every change is in the audit log, with who did it.
    let records = admin.audit(None).await?;
    let types = event_types(&records);
    assert!(types.iter().filter(|e| *e == "token_created").count() >= 4, "{types:?}");
    let revocations: Vec<&Value> = records.iter().filter(|r| r["event_type"] == "token_revoked").collect();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    assert_eq!(revocations[0]["actor"], "admin");
    assert_eq!(revocations[0]["details"]["token_id"], bot_token_id.as_str());
    assert_eq!((revocations[1]["actor"].as_str(), revocations[1]["channel"].as_str()), (Some("system"), Some("cli")));
    assert!(!records.iter().any(|r| r.to_string().contains("tg_")), "no secret in the audit log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_audit_commands_refuse_a_database_that_does_not_exist() -> anyhow::Result<()> {
    let t = common::start().await?;
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("elsewhere.db");
    let url = format!("sqlite://{}", missing.display());
    let config = t.server.config_path().display().to_string();
    for args in [
        vec!["token", "create", "--principal", "alice"],
        vec!["token", "list"],
        vec!["audit", "verify"],
        vec!["audit", "export"],
    ] {
        let mut all = args.clone();
        all.extend(["--config", config.as_str()]);
        let out = t.server.cli(&all, &[("TOLLGATE_DATABASE__URL", url.as_str())]).await?;
        assert_ne!(out.code, 0, "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains("does not exist"), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("database: {url}")), "{args:?}: {}", out.stderr);
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }

    // A file that exists but is not Tollgate's database (an empty SQLite file) is refused too.
    std::fs::write(&missing, b"")?;
    let out =
        t.server.cli(&["audit", "verify", "--config", &config], &[("TOLLGATE_DATABASE__URL", url.as_str())]).await?;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("no Tollgate schema"), "{}", out.stderr);
    assert!(!out.stdout.contains("audit chain OK"), "{}", out.stdout);
    Ok(())
}
