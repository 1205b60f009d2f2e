//! The `github_app` connector against a local fake of GitHub's installation-token endpoints
//! (`tollgate_tests::GithubServer`), which checks the App JWT the connector signs against the
//! App's public key and the repositories and permissions asked for against the installation's:
//! minting restricted to the grant, renewal, revocation ("already revoked" is done),
//! verification, the error classes, a GitHub Enterprise Server base URL, and start-up checks.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tollgate_engine::action::{ConnectorAction, Expect, IntegrationRef};
use tollgate_engine::connector::github_app::{GithubAppConnector, GithubAppSettings};
use tollgate_engine::connector::{ActionOutcome, Connector as _, ConnectorConfig};
use tollgate_engine::outbound::ConnectorError;
use tollgate_tests::{GithubInstallation, GithubServer, github_app_fixture, wall_clock};
use tollgate_workflows::Operation;

/// The scopes the test integration offers: the fake installation has `contents:write`,
/// `issues:write` and `metadata:read` on `widgets`, `gadgets` and `gizmos` — not `actions`,
/// not `secrets`.
const INTEGRATION_SCOPES: [&str; 8] = [
    "contents:read",
    "contents:write",
    "issues:write",
    "actions:read",
    "repo:widgets",
    "repo:gadgets",
    "repo:secrets",
    "administration:admin",
];

async fn github() -> GithubServer {
    GithubServer::start(GithubInstallation::fixture()).await.expect("the fake GitHub")
}

fn settings(api_url: &str) -> GithubAppSettings {
    GithubAppSettings {
        api_url: api_url.to_owned(),
        app_id: "123456".to_owned(),
        installation_id: 42,
        private_key_file: Some(github_app_fixture("app-key.pem")),
        private_key_env: None,
        repositories: vec!["gizmos".to_owned()],
        timeout: None,
        integration_scopes: INTEGRATION_SCOPES.map(str::to_owned).to_vec(),
    }
}

fn connector(settings: &GithubAppSettings) -> GithubAppConnector {
    let http = tollgate_engine::http::client(Duration::from_secs(10)).expect("http client");
    GithubAppConnector::new(settings, &http).expect("valid settings")
}

fn action(operation: Operation, scopes: &[&str], expect: Option<Expect>) -> ConnectorAction {
    ConnectorAction {
        operation,
        idempotency_key: format!("run-1:step-1:{operation:?}"),
        run_id: uuid::Uuid::from_u128(1),
        grant_id: uuid::Uuid::from_u128(2),
        integration: IntegrationRef {
            name: "github".to_owned(),
            app: "github".to_owned(),
            environment: "test".to_owned(),
        },
        principal: "ci-bot".to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        attempt: 1,
        expect,
        version: None,
        keep_previous: false,
    }
}

/// Mints for `scopes`; the token and its expiry.
async fn mint(c: &GithubAppConnector, scopes: &[&str]) -> (SecretString, chrono::DateTime<chrono::Utc>) {
    match c.execute(&action(Operation::Grant, scopes, None)).await {
        Ok(ActionOutcome::Done { reference: Some(reference), minted: Some(minted) }) => {
            assert!(reference.starts_with("sha256:"), "{reference}");
            (minted.value, minted.expires_at.expect("an expiry"))
        }
        other => panic!("grant: {other:?}"),
    }
}

async fn verify(c: &GithubAppConnector, token: &SecretString, scopes: &[&str], expect: Expect) -> Result<(), String> {
    c.execute_with_credential(&action(Operation::Verify, scopes, Some(expect)), Some(token))
        .await
        .map(|outcome| assert_eq!(outcome, ActionOutcome::Done { reference: None, minted: None }))
        .map_err(|e| e.to_string())
}

fn permanent(e: &ConnectorError) -> &str {
    match e {
        ConnectorError::Permanent { message } => message,
        ConnectorError::Retryable { .. } => panic!("expected a permanent error: {e:?}"),
    }
}

/// Neither an installation token nor an App JWT (`eyJ…`) nor the key shows in `shown`.
fn assert_clean(shown: &str, tokens: &[&SecretString]) {
    assert!(!shown.contains("ghs_") && !shown.contains("eyJ") && !shown.contains("PRIVATE KEY"), "{shown}");
    for token in tokens {
        assert!(!shown.contains(token.expose_secret()), "{shown}");
    }
}

#[tokio::test]
async fn a_grant_mints_a_token_restricted_to_its_repository_and_permission() -> anyhow::Result<()> {
    let gh = github().await;
    let c = connector(&settings(&gh.api_url()));
    assert!(c.verifies() && c.needs_credential());

    let before = wall_clock();
    let (token, expires_at) = mint(&c, &["contents:read", "repo:widgets"]).await;
    assert!(token.expose_secret().starts_with("ghs_"));
    // GitHub's hour, to the second it writes.
    let hour = chrono::Duration::hours(1);
    assert!(expires_at >= before + hour - chrono::Duration::seconds(1) && expires_at <= wall_clock() + hour);
    assert!(gh.is_live(token.expose_secret()));
    assert_eq!(gh.repositories_of(token.expose_secret()), Some(vec!["widgets".to_owned()]));

    let [request] = gh.requests().try_into().expect("one call");
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/app/installations/42/access_tokens"));
    assert_eq!((request.status, request.refusal.as_deref()), (201, None));
    assert_eq!(request.json(), serde_json::json!({"repositories": ["widgets"], "permissions": {"contents": "read"}}));
    assert_eq!(request.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(request.header("x-github-api-version"), Some("2022-11-28"));
    assert!(request.header("user-agent").is_some_and(|ua| ua.starts_with("tollgate/")));

    // The JWT, checked by the fake against the public key, read here too: RS256, iss the App,
    // backdated a minute, ten minutes in all.
    let jwt = request.header("authorization").and_then(|a| a.strip_prefix("Bearer ")).expect("a Bearer JWT");
    let header = jsonwebtoken::decode_header(jwt)?;
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256);
    let public = std::fs::read(github_app_fixture("app-key.pub.pem"))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&["123456"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(&public)?,
        &validation,
    )?
    .claims;
    let (iat, exp) = (claims["iat"].as_i64().unwrap_or_default(), claims["exp"].as_i64().unwrap_or_default());
    assert_eq!(exp - iat, 600, "{claims}");
    assert!((before.timestamp() - 61..=wall_clock().timestamp() - 59).contains(&iat), "{claims}");

    // Present: the token reaches one repository, as granted. Without a repo: scope the
    // `repositories` setting applies; a permission named at two levels gets the higher.
    verify(&c, &token, &["contents:read", "repo:widgets"], Expect::Present).await.map_err(anyhow::Error::msg)?;
    let (default, _) = mint(&c, &["contents:read", "contents:write", "issues:write"]).await;
    assert_eq!(gh.repositories_of(default.expose_secret()), Some(vec!["gizmos".to_owned()]));
    let last = gh.requests().pop().expect("a call");
    assert_eq!(
        last.json(),
        serde_json::json!({"repositories": ["gizmos"], "permissions": {"contents": "write", "issues": "write"}})
    );
    Ok(())
}

#[tokio::test]
async fn github_refuses_a_jwt_with_another_issuer_or_key_and_the_error_says_so() -> anyhow::Result<()> {
    let gh = github().await;
    let mut wrong_iss = settings(&gh.api_url());
    wrong_iss.app_id = "654321".to_owned();
    let mut wrong_key = settings(&gh.api_url());
    wrong_key.private_key_file = Some(github_app_fixture("other-key.pem"));
    let grant = action(Operation::Grant, &["contents:read", "repo:widgets"], None);
    for (s, why) in [(&wrong_iss, "InvalidIssuer"), (&wrong_key, "InvalidSignature")] {
        let err = connector(s).execute(&grant).await.unwrap_err();
        let message = permanent(&err);
        assert!(message.contains("creating an installation access token answered 401"), "{message}");
        assert!(message.contains("refused the App's JWT"), "{message}");
        assert_clean(&format!("{err} {err:?}"), &[]);
        let refused = gh.requests().pop().expect("a call");
        assert!(refused.status == 401 && refused.refusal.as_deref().is_some_and(|r| r.contains(why)), "{refused:?}");
    }

    // The same key in PKCS#8 is the same App.
    let mut pkcs8 = settings(&gh.api_url());
    pkcs8.private_key_file = Some(github_app_fixture("app-key.pkcs8.pem"));
    mint(&connector(&pkcs8), &["contents:read", "repo:widgets"]).await;

    // Another installation of the App: 404.
    let mut other = settings(&gh.api_url());
    other.installation_id = 7;
    let err = connector(&other).execute(&grant).await.unwrap_err();
    assert!(permanent(&err).contains("answered 404: Not Found (no such installation"), "{err}");
    Ok(())
}

#[tokio::test]
async fn repositories_and_permissions_beyond_the_installation_are_refused() -> anyhow::Result<()> {
    let gh = github().await;
    let c = connector(&settings(&gh.api_url()));
    for (scopes, said) in [
        (&["actions:read", "repo:widgets"][..], "The permissions requested are not granted to this installation."),
        (
            &["administration:admin", "repo:widgets"][..],
            "The permissions requested are not granted to this installation.",
        ),
        (&["contents:read", "repo:secrets"][..], "There is at least one repository that does not exist"),
    ] {
        let err = c.execute(&action(Operation::Grant, scopes, None)).await.unwrap_err();
        let message = permanent(&err);
        assert!(message.contains("answered 422: ") && message.contains(said), "{scopes:?}: {message}");
        assert_eq!(gh.requests().pop().map(|r| r.status), Some(422));
    }
    let calls = gh.requests().len();

    // Outside the integration's scopes, or fitting neither form of the rule: refused before
    // any call.
    let err = c.execute(&action(Operation::Grant, &["contents:read", "pages:write"], None)).await.unwrap_err();
    assert!(permanent(&err).contains("scopes [pages:write] are not among the integration's scopes"), "{err}");
    let err = c.execute(&action(Operation::Grant, &["repo:widgets"], None)).await.unwrap_err();
    assert!(permanent(&err).contains("names no permission"), "{err}");
    assert_eq!(gh.requests().len(), calls);
    Ok(())
}

#[tokio::test]
async fn renewal_and_rotation_mint_anew_and_revocation_is_checked_at_github() -> anyhow::Result<()> {
    let gh = github().await;
    let c = connector(&settings(&gh.api_url()));
    let scopes = ["contents:read", "repo:widgets"];
    let (first, _) = mint(&c, &scopes).await;

    // Renewal: the held token is revoked first, a new one minted (a token lives one hour).
    let renew = action(Operation::Renew, &scopes, None);
    let Ok(ActionOutcome::Done { minted: Some(renewed), reference: Some(_) }) =
        c.execute_with_credential(&renew, Some(&first)).await
    else {
        panic!("renew failed");
    };
    assert_ne!(renewed.value.expose_secret(), first.expose_secret());
    assert!(!gh.is_live(first.expose_secret()) && gh.is_live(renewed.value.expose_secret()));
    // The engine holds no token once the old one has expired: renewal still mints.
    let Ok(ActionOutcome::Done { minted: Some(third), .. }) = c.execute_with_credential(&renew, None).await else {
        panic!("renew without a held token failed");
    };
    let token = renewed.value;

    // Revoked (204), then checked gone; revoking again is done; present is now a failure.
    let revoke = action(Operation::Revoke, &scopes, None);
    let done = c.execute_with_credential(&revoke, Some(&token)).await?;
    assert!(matches!(done, ActionOutcome::Done { minted: None, reference: Some(_) }), "{done:?}");
    assert!(!gh.is_live(token.expose_secret()));
    verify(&c, &token, &scopes, Expect::Absent).await.map_err(anyhow::Error::msg)?;
    let again = c.execute_with_credential(&revoke, Some(&token)).await?;
    assert!(matches!(again, ActionOutcome::Done { .. }), "already revoked is done: {again:?}");
    let gone = verify(&c, &token, &scopes, Expect::Present).await.unwrap_err();
    assert!(gone.contains("refused (401: expired or revoked)"), "{gone}");
    let still = verify(&c, &third.value, &scopes, Expect::Absent).await.unwrap_err();
    assert!(still.contains("still works: the access is not gone"), "{still}");

    let calls: Vec<(String, String, u16)> = gh.requests().into_iter().map(|r| (r.method, r.path, r.status)).collect();
    let call = |m: &str, p: &str, s: u16| (m.to_owned(), p.to_owned(), s);
    let mint_path = "/app/installations/42/access_tokens";
    let check_path = "/installation/repositories?per_page=1";
    assert_eq!(
        calls,
        vec![
            call("POST", mint_path, 201),
            call("DELETE", "/installation/token", 204),
            call("POST", mint_path, 201),
            call("POST", mint_path, 201),
            call("DELETE", "/installation/token", 204),
            call("GET", check_path, 401),
            call("DELETE", "/installation/token", 401),
            call("GET", check_path, 401),
            call("GET", check_path, 200),
        ]
    );

    // Nothing to revoke or check with: refused, no call.
    for op in [Operation::Revoke, Operation::Verify] {
        let err = c.execute(&action(op, &scopes, Some(Expect::Absent))).await.unwrap_err();
        assert!(permanent(&err).contains("needs the installation token minted for grant"), "{err}");
    }
    assert_eq!(gh.requests().len(), calls.len());

    // A rotation with a grace period keeps the replaced token working (a later revoke of the
    // previous version ends it); one without revokes it first.
    let mut rotate = action(Operation::Rotate, &scopes, None);
    rotate.keep_previous = true;
    let Ok(ActionOutcome::Done { minted: Some(kept), .. }) =
        c.execute_with_credential(&rotate, Some(&third.value)).await
    else {
        panic!("rotate failed");
    };
    assert!(gh.is_live(third.value.expose_secret()) && gh.is_live(kept.value.expose_secret()));
    rotate.keep_previous = false;
    let Ok(ActionOutcome::Done { minted: Some(rotated), .. }) =
        c.execute_with_credential(&rotate, Some(&kept.value)).await
    else {
        panic!("rotate failed");
    };
    assert!(!gh.is_live(kept.value.expose_secret()) && gh.is_live(rotated.value.expose_secret()));
    Ok(())
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_retryable() -> anyhow::Result<()> {
    let gh = github().await;
    let c = connector(&settings(&gh.api_url()));
    let scopes = ["contents:read", "repo:widgets"];
    let (token, _) = mint(&c, &scopes).await;
    let reset = (wall_clock().timestamp() + 30).to_string();
    gh.fail_next(502, &[]);
    gh.fail_next(503, &[("retry-after", "12")]);
    gh.fail_next(429, &[("retry-after", "3")]);
    gh.fail_next(403, &[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &reset)]);
    gh.fail_next(500, &[]);
    gh.fail_next(503, &[]);
    let grant = action(Operation::Grant, &scopes, None);
    let mut errors = Vec::new();
    for _ in 0..4 {
        errors.push(c.execute(&grant).await.unwrap_err());
    }
    errors.push(c.execute_with_credential(&action(Operation::Revoke, &scopes, None), Some(&token)).await.unwrap_err());
    let verify = action(Operation::Verify, &scopes, Some(Expect::Absent));
    errors.push(c.execute_with_credential(&verify, Some(&token)).await.unwrap_err());

    let waits: Vec<Option<u64>> = errors
        .iter()
        .map(|e| match e {
            ConnectorError::Retryable { retry_after, .. } => retry_after.map(|d| d.as_secs()),
            ConnectorError::Permanent { .. } => panic!("expected retryable: {e:?}"),
        })
        .collect();
    assert_eq!(&waits[..3], &[None, Some(12), Some(3)]);
    assert!(waits[3].is_some_and(|w| (28..=30).contains(&w)), "until x-ratelimit-reset: {waits:?}");
    assert_eq!(&waits[4..], &[None, None]);
    assert!(errors[4].to_string().contains("revoking an installation access token answered 500"), "{}", errors[4]);
    assert_clean(&format!("{errors:?} {}", errors.iter().map(ToString::to_string).collect::<String>()), &[&token]);
    assert!(gh.is_live(token.expose_secret()), "a failed revocation revoked nothing");

    // GitHub unreachable: retryable too.
    let (addr, api_url) = (gh.addr, gh.api_url());
    drop(gh);
    tollgate_tests::eventually("the fake GitHub to stop listening", Duration::from_secs(5), || async move {
        // Loopback: connecting answers at once.
        Ok(match std::net::TcpStream::connect(addr) {
            Ok(_) => Err("still listening".to_owned()),
            Err(_) => Ok(()),
        })
    })
    .await?;
    let err = connector(&settings(&api_url)).execute(&grant).await.unwrap_err();
    let ConnectorError::Retryable { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.contains("connection failed"), "{message}");
    Ok(())
}

#[tokio::test]
async fn a_github_enterprise_server_base_url_with_a_path_works() -> anyhow::Result<()> {
    let ghes = GithubServer::start_at(GithubInstallation::fixture(), "/api/v3").await?;
    assert!(ghes.api_url().ends_with("/api/v3"));
    let scopes = ["issues:write", "repo:gadgets"];
    for api_url in [ghes.api_url(), format!("{}/", ghes.api_url())] {
        let c = connector(&settings(&api_url));
        let (token, _) = mint(&c, &scopes).await;
        verify(&c, &token, &scopes, Expect::Present).await.map_err(anyhow::Error::msg)?;
        c.execute_with_credential(&action(Operation::Revoke, &scopes, None), Some(&token)).await?;
        verify(&c, &token, &scopes, Expect::Absent).await.map_err(anyhow::Error::msg)?;
    }
    let paths: Vec<String> = ghes.requests().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().all(|p| p.starts_with("/api/v3/") && !p.contains("//")), "{paths:?}");
    assert!(paths.contains(&"/api/v3/app/installations/42/access_tokens".to_owned()), "{paths:?}");

    // The root of that host is not the API.
    let root = format!("http://{}", ghes.addr);
    let err = connector(&settings(&root)).execute(&action(Operation::Grant, &scopes, None)).await.unwrap_err();
    assert!(permanent(&err).contains("answered 404"), "{err}");
    Ok(())
}

#[tokio::test]
async fn no_token_or_jwt_shows_in_errors_or_debug_output() -> anyhow::Result<()> {
    let gh = github().await;
    let s = settings(&gh.api_url());
    let c = connector(&s);
    let scopes = ["contents:read", "repo:widgets"];
    let outcome = c.execute(&action(Operation::Grant, &scopes, None)).await?;
    let ActionOutcome::Done { minted: Some(minted), .. } = &outcome else { panic!("{outcome:?}") };
    let token = minted.value.clone();
    c.execute_with_credential(&action(Operation::Revoke, &scopes, None), Some(&token)).await?;
    let errors = [
        verify(&c, &token, &scopes, Expect::Present).await.unwrap_err(),
        c.execute(&action(Operation::Grant, &["actions:read", "repo:widgets"], None)).await.unwrap_err().to_string(),
    ];
    let mut forged = s.clone();
    forged.private_key_file = Some(github_app_fixture("other-key.pem"));
    let jwt_refused = connector(&forged).execute(&action(Operation::Grant, &scopes, None)).await.unwrap_err();
    assert_clean(&format!("{outcome:?} {c:?} {s:?} {errors:?} {jwt_refused} {jwt_refused:?} {token:?}"), &[&token]);
    Ok(())
}

/// A `github_app` connector as the configuration file has it, built as the server builds it.
fn build(connector: serde_json::Value) -> Result<(), String> {
    let http = tollgate_engine::http::client(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let config: ConnectorConfig = serde_json::from_value(connector).map_err(|e| e.to_string())?;
    tollgate_engine::connector::build(&config, &http).map(|_| ()).map_err(|e| e.to_string())
}

#[test]
fn a_bad_private_key_fails_at_build_naming_private_key_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n")?;
    let public = github_app_fixture("app-key.pub.pem");
    let missing = dir.path().join("missing.pem");
    let config = |key: &std::path::Path| {
        serde_json::json!({
            "type": "github_app", "api_url": "https://github.example.com/api/v3", "app_id": 123_456,
            "installation_id": 42, "private_key_file": key, "repositories": ["widgets"]
        })
    };
    build(config(&github_app_fixture("app-key.pem"))).map_err(anyhow::Error::msg)?;
    for (key, why) in [
        (bad.as_path(), "is not an RSA private key in PEM (PKCS#1 or PKCS#8)"),
        (public.as_path(), "cannot sign RS256 JWTs"),
        (missing.as_path(), "cannot read"),
    ] {
        let err = build(config(key)).unwrap_err();
        assert!(err.starts_with("`private_key_file`: ") && err.contains(why), "{err}");
        assert!(err.contains(&key.display().to_string()), "{err}");
    }
    let err = build(serde_json::json!({"type": "github_app", "app_id": 1, "installation_id": 42})).unwrap_err();
    assert!(err.starts_with("`private_key_file`: set `private_key_file` or `private_key_env`"), "{err}");
    let err = build(serde_json::json!({
        "type": "github_app", "app_id": 1, "installation_id": 42, "private_key_file": bad, "scopes": ["x"]
    }))
    .unwrap_err();
    assert!(err.contains("unknown field `scopes`"), "{err}");
    Ok(())
}

/// Test-only sealing key for minted secrets.
const SECRETS_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00123456789abcdef0123456789abcdef";

/// An integration `github-api` on the fake's installation, as `tollgate.toml` has it.
fn integration_toml(api_url: &str, private_key_file: &std::path::Path) -> String {
    format!(
        r#"
[integrations.github-api]
app = "github"
environment = "staging"
owner = "bob"
scopes = [{{ name = "contents:read", risk = "low" }}, {{ name = "contents:write", risk = "medium" }}, {{ name = "repo:widgets", risk = "low" }}]

[integrations.github-api.connector]
type = "github_app"
api_url = "{api_url}"
app_id = 123456
installation_id = 42
private_key_file = "{}"
repositories = ["gizmos"]
"#,
        private_key_file.display()
    )
}

/// Through the server: an approved request for `contents:read` on `repo:widgets` mints an
/// installation token restricted to exactly that, the holder retrieves it once, and revoking
/// the grant deletes that very token at GitHub with the engine's own sealed copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_mints_a_restricted_token_and_revocation_deletes_it() -> anyhow::Result<()> {
    let gh = github().await;
    let integration = integration_toml(&gh.api_url(), &github_app_fixture("app-key.pem"));
    let t = crate::common::start_with(|mut o| {
        o.extra_config.push_str(&integration);
        o.extra_config.push_str(&format!("\n[secrets]\nkey = \"{SECRETS_KEY}\"\n"));
        o.log_level = "trace".to_owned();
        o
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let body = serde_json::json!({
        "integration": "github-api", "scopes": ["contents:read", "repo:widgets"], "duration": "1h",
        "justification": "github_app e2e"
    });
    let id = crate::common::id_of(&alice.create_request(&body).await?);
    let (st, resp) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{resp}");
    let view = alice.wait_status(&id, "active", crate::common::PATIENCE).await?;
    let gid = view["grant"]["id"].as_str().expect("grant id").to_owned();

    let (st, secret) = alice.post(&format!("/v1/grants/{gid}/secret"), &serde_json::json!({})).await?;
    assert_eq!(st, 200, "{secret}");
    let token = SecretString::from(secret["secret"].as_str().expect("the token").to_owned());
    assert!(gh.is_live(token.expose_secret()));
    assert_eq!(gh.repositories_of(token.expose_secret()), Some(vec!["widgets".to_owned()]));
    let minted = gh.requests().into_iter().find(|r| r.method == "POST").expect("a token request");
    assert_eq!(minted.json(), serde_json::json!({"repositories": ["widgets"], "permissions": {"contents": "read"}}));

    let (st, resp) = alice.post(&format!("/v1/grants/{gid}/revoke"), &serde_json::json!({})).await?;
    assert!(st == 200 || st == 202, "{st} {resp}");
    // A grant shows revoked only once its revoke call succeeded.
    tollgate_tests::eventually("the grant to be revoked", crate::common::PATIENCE, || async {
        let view = alice.request_view(&id).await?;
        Ok(if view["grant"]["status"] == "revoked" { Ok(()) } else { Err(view["grant"].to_string()) })
    })
    .await?;
    assert!(!gh.is_live(token.expose_secret()), "the token still works at GitHub");
    let bearer = format!("Bearer {}", token.expose_secret());
    assert!(
        gh.requests()
            .iter()
            .any(|r| r.method == "DELETE" && r.status == 204 && r.header("authorization") == Some(&bearer)),
        "no revocation with the minted token"
    );

    let log = t.server.log();
    assert!(!log.contains(token.expose_secret()), "the token is in the server log");
    let audit = serde_json::to_string(&t.server.client("audrey").await?.audit(Some(&id)).await?)?;
    assert!(!audit.contains(token.expose_secret()), "the token is in the audit trail");
    Ok(())
}

/// A bad private key stops the server at start-up, naming the integration and the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_github_app_key_is_refused_at_start_up() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let receiver = tollgate_tests::Receiver::start().await?;
    let mut options = crate::common::options(&receiver);
    let public = github_app_fixture("app-key.pub.pem");
    options.extra_config.push_str(&integration_toml("https://github.example.com/api/v3", &public));
    let mut server = tollgate_tests::Server::configure(tollgate_tests::TestDb::new().await?, options)?;
    let err = server.restart().await.expect_err("the server must refuse to start").to_string();
    assert!(err.contains("integrations.github-api.connector: `private_key_file`: "), "{err}");
    assert!(err.contains("cannot sign RS256 JWTs"), "{err}");
    Ok(())
}
