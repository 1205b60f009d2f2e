//! The credential inventory (issue 11): admins record credentials one at a time or by importing
//! a YAML or CSV file — all rows or none, idempotent, invalid rows named by line — owners see
//! their own, auditors all, others none; a secret value is stored only sealed and never answered;
//! the same through `tollgate credentials list|show|import`.

use serde_json::{Value, json};
use tollgate_tests::ServerOptions;

use crate::common::{self, assert_error};

/// The sealing key of these tests (64 hex digits).
const KEY: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// A secret value that must never be seen again.
const CANARY: &str = "sk_live_CANARY-7f3e9a1b2c4d";

fn with_key(o: ServerOptions) -> ServerOptions {
    let mut o = o;
    o.extra_config.push_str(&format!("\n[secrets]\nkey = \"{KEY}\"\n"));
    o
}

fn names(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

const YAML: &str = "\
# the inventory of wiki and CRM credentials
- name: wiki/deploy-key
  kind: api_key
  integration: wiki-staging
  owner: bob
  scopes: [read, write]
  issued_at: 2026-01-01T00:00:00Z
  expires_at: 2099-01-01T00:00:00Z
  revocation: manual
  revocation_url: https://wiki.example.com/settings/keys
  secret_ref: vault:kv/data/wiki#deploy

- name: crm/oauth-client
  kind: oauth_client
  integration: crm-prod
  owner: carol
  scopes:
    - api
  expires_at: 2020-01-01T00:00:00Z
  description: expired on purpose
";

async fn import(client: &tollgate_tests::ApiClient, format: &str, content: &str) -> anyhow::Result<(u16, Value)> {
    client.post("/v1/credentials/import", &json!({ "format": format, "content": content })).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_record_credentials_owners_see_their_own_and_values_stay_sealed() -> anyhow::Result<()> {
    let t = common::start_with(with_key).await?;
    let (admin, bob, carol, audrey) = (
        t.server.client("admin").await?,
        t.server.client("bob").await?,
        t.server.client("carol").await?,
        t.server.client("audrey").await?,
    );
    let body = json!({
        "name": "wiki/bot-token", "kind": "bot_token", "integration": "wiki-staging", "owner": "bob",
        "scopes": ["read"], "expires_at": "2099-06-30T00:00:00Z", "value": CANARY,
    });

    // Only admins record credentials.
    let (st, resp) = bob.post("/v1/credentials", &body).await?;
    assert_error(st, &resp, 403, "forbidden");

    let (st, created) = admin.post("/v1/credentials", &body).await?;
    assert_eq!(st, 201, "{created}");
    assert_eq!((created["name"].as_str(), created["environment"].as_str()), (Some("wiki/bot-token"), Some("staging")));
    assert_eq!((created["has_value"].as_bool(), created["current_version"].as_i64()), (Some(true), Some(1)));
    assert_eq!(created["versions"][0]["hint"], "…2c4d", "{created}");
    assert_eq!(created["status"], "active");
    assert!(!created.to_string().contains("CANARY"), "{created}");

    // The same name again is a conflict; unknown names in the directory are refused.
    let (st, resp) = admin.post("/v1/credentials", &body).await?;
    assert_error(st, &resp, 409, "credential_exists");
    let mut other = body.clone();
    other["name"] = json!("x");
    other["integration"] = json!("nowhere");
    let (st, resp) = admin.post("/v1/credentials", &other).await?;
    assert_error(st, &resp, 422, "unknown_integration");
    other["integration"] = json!("wiki-staging");
    other["owner"] = json!("nobody");
    let (st, resp) = admin.post("/v1/credentials", &other).await?;
    assert_error(st, &resp, 422, "unknown_principal");
    other["owner"] = json!("bob");
    other["kind"] = json!("password");
    let (st, resp) = admin.post("/v1/credentials", &other).await?;
    assert_error(st, &resp, 422, "validation_failed");

    // Its owner sees it; auditors see it; anyone else is told it does not exist.
    let (st, shown) = bob.get("/v1/credentials/wiki%2Fbot-token").await?;
    assert_eq!((st, shown["name"].as_str()), (200, Some("wiki/bot-token")), "{shown}");
    assert_eq!(names(&bob.get("/v1/credentials").await?.1), ["wiki/bot-token"]);
    assert_eq!(names(&audrey.get("/v1/credentials?owner=bob").await?.1), ["wiki/bot-token"]);
    let (st, resp) = carol.get("/v1/credentials/wiki%2Fbot-token").await?;
    assert_error(st, &resp, 404, "not_found");
    let id = created["id"].as_str().unwrap();
    let (st, resp) = carol.get(&format!("/v1/credentials/{id}")).await?;
    assert_error(st, &resp, 404, "not_found");
    assert!(names(&carol.get("/v1/credentials").await?.1).is_empty());
    assert!(names(&carol.get("/v1/credentials?owner=bob").await?.1).is_empty());
    assert_eq!(bob.get(&format!("/v1/credentials/{id}")).await?.0, 200);

    // At rest: sealed, bound to the key; nowhere in plaintext (versions, audit log).
    let rows = t.server.db().query("SELECT sealed_value, secret_ref, hint FROM credential_versions").await?;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let sealed = rows[0]["sealed_value"].as_str().unwrap_or_default();
    assert!(sealed.starts_with("tg1."), "{rows:?}");
    assert!(!format!("{rows:?}").contains("CANARY"), "{rows:?}");
    let audit = t.server.db().query("SELECT event_type, details FROM audit_log").await?;
    assert!(!format!("{audit:?}").contains("CANARY"), "the audit log holds the secret");
    assert_eq!(t.server.db().count("audit_log WHERE event_type = 'credential_created'").await?, 1);
    for path in ["/v1/credentials", "/v1/credentials/wiki%2Fbot-token", "/v1/audit?limit=1000"] {
        let (_, v) = admin.get(path).await?;
        assert!(!v.to_string().contains("CANARY"), "{path}: {v}");
    }
    assert!(!t.server.log().contains("CANARY"), "the log holds the secret");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_the_same_file_twice_changes_nothing() -> anyhow::Result<()> {
    let t = common::start().await?;
    let admin = t.server.client("admin").await?;

    let (st, first) = import(&admin, "yaml", YAML).await?;
    assert_eq!(st, 200, "{first}");
    assert_eq!((first["created"].as_u64(), first["applied"].as_bool()), (Some(2), Some(true)), "{first}");
    let lines: Vec<u64> = first["rows"].as_array().unwrap().iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 13], "{first}");
    let audited = t.server.db().count("audit_log").await?;
    assert_eq!(t.server.db().count("audit_log WHERE event_type = 'credentials_imported'").await?, 1);
    let stored = t.server.db().query("SELECT name, updated_at FROM credentials ORDER BY name").await?;

    // The same file again: all unchanged, nothing written, nothing audited.
    let (st, second) = import(&admin, "yaml", YAML).await?;
    assert_eq!(st, 200, "{second}");
    assert_eq!(
        (second["created"].as_u64(), second["updated"].as_u64(), second["unchanged"].as_u64()),
        (Some(0), Some(0), Some(2)),
        "{second}"
    );
    assert_eq!(second["rows"], json!([]), "{second}");
    assert_eq!(t.server.db().count("audit_log").await?, audited, "a repeated import wrote audit records");
    assert_eq!(t.server.db().query("SELECT name, updated_at FROM credentials ORDER BY name").await?, stored);

    // Listing filters: status, kind, integration, expiring_before.
    let (_, expired) = admin.get("/v1/credentials?status=expired").await?;
    assert_eq!(names(&expired), ["crm/oauth-client"]);
    assert_eq!(names(&admin.get("/v1/credentials?kind=api_key").await?.1), ["wiki/deploy-key"]);
    assert_eq!(names(&admin.get("/v1/credentials?integration=crm-prod").await?.1), ["crm/oauth-client"]);
    assert_eq!(
        names(&admin.get("/v1/credentials?expiring_before=2030-01-01T00:00:00Z").await?.1),
        ["crm/oauth-client"]
    );
    let (_, page) = admin.get("/v1/credentials?limit=1").await?;
    let next = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = admin.get(&format!("/v1/credentials?limit=1&cursor={next}")).await?;
    assert_eq!((names(&page).len(), names(&rest).len(), rest["next_cursor"].clone()), (1, 1, Value::Null));
    let (st, resp) = admin.get("/v1/credentials?kind=password").await?;
    assert_error(st, &resp, 400, "invalid_query");

    // A rotated secret: a new version, the previous one retired; the rest unchanged.
    let rotated = YAML.replace("vault:kv/data/wiki#deploy", "vault:kv/data/wiki#deploy-2");
    let (st, third) = import(&admin, "yaml", &rotated).await?;
    assert_eq!((st, third["updated"].as_u64(), third["unchanged"].as_u64()), (200, Some(1), Some(1)), "{third}");
    let (_, shown) = admin.get("/v1/credentials/wiki%2Fdeploy-key").await?;
    let versions: Vec<(i64, String)> = shown["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_i64().unwrap(), v["state"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(versions, [(2, "active".to_owned()), (1, "retired".to_owned())], "{shown}");
    assert!(shown["last_rotated_at"].is_string(), "{shown}");
    assert_eq!(t.server.db().count("audit_log WHERE event_type = 'credential_updated'").await?, 1);

    // Importing needs an admin.
    let (st, resp) = import(&t.server.client("bob").await?, "yaml", YAML).await?;
    assert_error(st, &resp, 403, "forbidden");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_an_invalid_row_changes_nothing_and_names_the_line() -> anyhow::Result<()> {
    let t = common::start().await?;
    let admin = t.server.client("admin").await?;
    let csv = "name,kind,integration,owner,scopes,expires_at,secret_ref\n\
               a,api_key,wiki-staging,bob,read write,2099-01-01T00:00:00Z,vault:kv/a\n\
               b,api_key,no-such-integration,bob,read,,vault:kv/b\n\
               c,bot_token,crm-prod,carol,,,\n";
    let (st, refused) = import(&admin, "csv", csv).await?;
    assert_eq!((st, refused["error"]["code"].as_str()), (422, Some("invalid_rows")), "{refused}");
    let errors = &refused["report"]["errors"];
    assert_eq!(errors.as_array().map(Vec::len), Some(1), "{refused}");
    assert_eq!((errors[0]["line"].as_u64(), errors[0]["field"].as_str()), (Some(3), Some("integration")), "{refused}");
    assert_eq!(refused["report"]["applied"], false);
    assert_eq!(t.server.db().count("credentials").await?, 0, "half an import was stored");
    assert_eq!(t.server.db().count("audit_log WHERE event_type LIKE 'credential%'").await?, 0);

    // Without a sealing key, a value is refused (by line) and a reference is not.
    let with_value = "name,kind,integration,owner,value\nd,api_key,wiki-staging,bob,plain-secret-value\n";
    let (st, refused) = import(&admin, "csv", with_value).await?;
    assert_eq!(st, 422, "{refused}");
    assert_eq!(
        (refused["report"]["errors"][0]["line"].as_u64(), refused["report"]["errors"][0]["field"].as_str()),
        (Some(2), Some("value")),
        "{refused}"
    );
    assert!(!refused.to_string().contains("plain-secret-value"), "{refused}");
    let (st, resp) = admin
        .post(
            "/v1/credentials",
            &json!({ "name": "d", "kind": "api_key", "integration": "wiki-staging", "owner": "bob", "value": "plain" }),
        )
        .await?;
    assert_error(st, &resp, 422, "sealing_not_configured");
    assert_eq!(t.server.db().count("credentials").await?, 0);

    // Fixed, the file imports whole.
    let (st, ok) = import(&admin, "csv", &csv.replace("no-such-integration", "ledger-sandbox")).await?;
    assert_eq!((st, ok["created"].as_u64()), (200, Some(3)), "{ok}");
    let (st, resp) = admin.post("/v1/credentials/import", &json!({ "format": "xml", "content": "" })).await?;
    assert_error(st, &resp, 422, "validation_failed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_lists_and_shows_credentials() -> anyhow::Result<()> {
    let t = common::start().await?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("inventory.yaml");
    std::fs::write(&file, YAML)?;
    let path = file.display().to_string();

    let out = t.server.cli_as("admin", &["credentials", "import", &path]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("imported: 2 created, 0 updated, 0 unchanged, 0 invalid"), "{out:?}");
    assert!(!out.stderr.contains('\r'), "no progress bar off a terminal: {out:?}");
    let out = t.server.cli_as("admin", &["credentials", "import", &path]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "imported: 0 created, 0 updated, 2 unchanged, 0 invalid", "{out:?}");
    let out = t.server.cli_as("admin", &["credentials", "import", &path, "--dry-run"]).await?;
    assert!(out.stdout.starts_with("dry run (nothing stored): 0 created"), "{out:?}");

    let out = t.server.cli_as("bob", &["credentials", "list"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("wiki/deploy-key") && !out.stdout.contains("crm/oauth-client"), "{out:?}");
    let out = t.server.cli_as("admin", &["credentials", "list", "--kind", "oauth_client", "-q"]).await?;
    assert_eq!(out.stdout.trim(), "crm/oauth-client", "{out:?}");
    let out = t.server.cli_as("bob", &["credentials", "show", "wiki/deploy-key"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("version     v1 active"), "{out:?}");
    assert!(out.stdout.contains("ref vault:kv/data/wiki#deploy"), "{out:?}");
    let out = t.server.cli_as("carol", &["credentials", "show", "wiki/deploy-key"]).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("404"), "{out:?}");

    // An invalid row: nothing imported, the row named FILE:LINE, exit 1 — locally (a kind
    // the CLI knows is wrong) and from the server (an integration only it knows).
    let csv = dir.path().join("bad.csv");
    std::fs::write(&csv, "name,kind,integration,owner\nnew-1,api_key,wiki-staging,bob\nnew-2,api_key,nowhere,bob\n")?;
    let out = t.server.cli_as("admin", &["credentials", "import", &csv.display().to_string()]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("{}:3: integration: no integration named", csv.display())), "{out:?}");
    std::fs::write(
        &csv,
        "name,kind,integration,owner\nnew-1,api_key,wiki-staging,bob\nnew-2,apikey,wiki-staging,bob\n",
    )?;
    let out = t.server.cli_as("admin", &["credentials", "import", &csv.display().to_string()]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&format!("{}:3: kind: must be one of", csv.display())), "{out:?}");
    assert_eq!(t.server.db().count("credentials WHERE name LIKE 'new-%'").await?, 0);
    Ok(())
}
