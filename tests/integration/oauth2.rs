//! The `oauth2` connector against a real authorization server (oidc-provider, started by the
//! harness on loopback): client-credentials minting down-scoped to the grant with a bounded
//! lifetime, RFC 7662 introspection, RFC 7009 revocation ("already revoked" is done), every
//! client authentication method, and the error classes.
//!
//! Skipped, with a message, when Node/npm packages cannot be installed — unless
//! `TOLLGATE_TEST_REQUIRE_OAUTH=1` (CI), which makes that a failure.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tollgate_engine::action::{ConnectorAction, Expect, IntegrationRef};
use tollgate_engine::connector::oauth2::{AuthMethod, OAuth2Connector, OAuth2Settings, SigningAlg};
use tollgate_engine::connector::{ActionOutcome, Connector as _};
use tollgate_engine::outbound::ConnectorError;
use tollgate_tests::{OAuthServer, wall_clock};
use tollgate_workflows::Operation;

/// The scopes the test clients may be given.
const CLIENT_SCOPES: [&str; 2] = ["billing:read", "billing:write"];

async fn server() -> anyhow::Result<Option<OAuthServer>> {
    OAuthServer::start().await
}

fn settings(server: &OAuthServer, role: &str) -> OAuth2Settings {
    let e = &server.endpoints;
    let c = server.client(role);
    let method = match c.method.as_str() {
        "client_secret_basic" => AuthMethod::ClientSecretBasic,
        "client_secret_post" => AuthMethod::ClientSecretPost,
        "private_key_jwt" => AuthMethod::PrivateKeyJwt,
        other => panic!("unknown method {other}"),
    };
    OAuth2Settings {
        token_url: e.token_url.clone(),
        revocation_url: e.revocation_url.clone(),
        introspection_url: Some(e.introspection_url.clone()),
        client_id: c.client_id.clone(),
        client_secret: c.client_secret.clone().map(SecretString::from),
        client_secret_file: None,
        client_secret_env: None,
        auth_method: method,
        private_key_file: c.private_key_file.clone(),
        key_id: c.key_id.clone(),
        signing_alg: c.alg.as_deref().map(|a| match a {
            "RS256" => SigningAlg::RS256,
            "ES256" => SigningAlg::ES256,
            other => panic!("unknown alg {other}"),
        }),
        assertion_audience: None,
        audience: None,
        max_token_lifetime: Some("10m".to_owned()),
        timeout: None,
        integration_scopes: CLIENT_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
    }
}

fn connector(settings: &OAuth2Settings) -> OAuth2Connector {
    let http = tollgate_engine::http::client(Duration::from_secs(10)).expect("http client");
    OAuth2Connector::new(settings, &http).expect("valid settings")
}

fn action(operation: Operation, scopes: &[&str], expect: Option<Expect>) -> ConnectorAction {
    ConnectorAction {
        operation,
        idempotency_key: format!("run-1:step-1:{operation:?}"),
        run_id: uuid::Uuid::from_u128(1),
        grant_id: uuid::Uuid::from_u128(2),
        integration: IntegrationRef {
            name: "billing".to_owned(),
            app: "billing".to_owned(),
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
async fn mint(c: &OAuth2Connector, scopes: &[&str]) -> (SecretString, chrono::DateTime<chrono::Utc>) {
    match c.execute(&action(Operation::Grant, scopes, None)).await {
        Ok(ActionOutcome::Done { reference: Some(reference), minted: Some(minted) }) => {
            assert!(reference.starts_with("sha256:"), "{reference}");
            assert!(!reference.contains(minted.value.expose_secret()));
            (minted.value, minted.expires_at.expect("an expiry"))
        }
        other => panic!("grant: {other:?}"),
    }
}

async fn verify(c: &OAuth2Connector, token: &SecretString, scopes: &[&str], expect: Expect) -> Result<(), String> {
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

#[tokio::test]
async fn every_client_authentication_method_mints_introspects_revokes_and_verifies() -> anyhow::Result<()> {
    let Some(server) = server().await? else { return Ok(()) };
    let ttl = chrono::Duration::seconds(i64::try_from(server.endpoints.short_ttl)?);
    for role in ["basic", "post", "rs256", "es256"] {
        let c = connector(&settings(&server, role));
        assert!(c.verifies() && c.needs_credential());

        // Minted for the grant's scope only, living the server's short lifetime (5 min, under
        // the 10 min max_token_lifetime).
        let before = wall_clock();
        let (token, expires_at) = mint(&c, &["billing:read"]).await;
        let after = wall_clock();
        assert!(expires_at >= before + ttl - chrono::Duration::seconds(1) && expires_at <= after + ttl, "{role}");

        // Introspection: active, and carrying nothing beyond billing:read.
        verify(&c, &token, &["billing:read"], Expect::Present).await.map_err(anyhow::Error::msg)?;
        let still = verify(&c, &token, &["billing:read"], Expect::Absent).await.unwrap_err();
        assert!(still.contains("still active"), "{role}: {still}");

        // Revoked, then checked gone; revoking again is done too.
        let revoke = action(Operation::Revoke, &["billing:read"], None);
        let done = c.execute_with_credential(&revoke, Some(&token)).await?;
        assert!(matches!(done, ActionOutcome::Done { minted: None, .. }), "{role}: {done:?}");
        verify(&c, &token, &["billing:read"], Expect::Absent).await.map_err(anyhow::Error::msg)?;
        let gone = verify(&c, &token, &["billing:read"], Expect::Present).await.unwrap_err();
        assert!(gone.contains("not active"), "{role}: {gone}");
        let again = c.execute_with_credential(&revoke, Some(&token)).await?;
        assert!(matches!(again, ActionOutcome::Done { .. }), "{role}: already revoked is done: {again:?}");
    }
    Ok(())
}

#[tokio::test]
async fn tokens_carry_only_the_grants_scopes_and_renewal_replaces_them() -> anyhow::Result<()> {
    let Some(server) = server().await? else { return Ok(()) };
    let c = connector(&settings(&server, "basic"));
    let (both, _) = mint(&c, &["billing:read", "billing:write"]).await;
    verify(&c, &both, &["billing:read", "billing:write"], Expect::Present).await.map_err(anyhow::Error::msg)?;
    let broad = verify(&c, &both, &["billing:read"], Expect::Present).await.unwrap_err();
    assert!(broad.contains("scopes beyond the grant: [billing:write]"), "{broad}");

    // Renewal revokes the old token and mints a new one for the (possibly smaller) scopes.
    let renew = action(Operation::Renew, &["billing:read"], None);
    let Ok(ActionOutcome::Done { minted: Some(new), .. }) = c.execute_with_credential(&renew, Some(&both)).await else {
        panic!("renew failed");
    };
    assert_ne!(new.value.expose_secret(), both.expose_secret());
    verify(&c, &both, &["billing:read", "billing:write"], Expect::Absent).await.map_err(anyhow::Error::msg)?;
    verify(&c, &new.value, &["billing:read"], Expect::Present).await.map_err(anyhow::Error::msg)?;
    Ok(())
}

#[tokio::test]
async fn scopes_the_server_refuses_fail_permanently() -> anyhow::Result<()> {
    let Some(server) = server().await? else { return Ok(()) };
    let mut s = settings(&server, "post");
    // Known to the server but not allowed to this client; unknown to the server.
    s.integration_scopes.extend(["reports:read".to_owned(), "payroll:admin".to_owned()]);
    let c = connector(&s);
    for scope in ["reports:read", "payroll:admin"] {
        let err = c.execute(&action(Operation::Grant, &["billing:read", scope], None)).await.unwrap_err();
        assert!(permanent(&err).contains("refused (400 invalid_scope"), "{scope}: {err}");
    }
    // Outside the integration's scopes: refused before any call.
    let err = c.execute(&action(Operation::Grant, &["billing:admin"], None)).await.unwrap_err();
    assert!(permanent(&err).contains("not among the integration's scopes"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_token_outliving_max_token_lifetime_is_revoked_and_refused() -> anyhow::Result<()> {
    let Some(server) = server().await? else { return Ok(()) };
    let err = connector(&settings(&server, "long")).execute(&action(Operation::Grant, &["billing:read"], None)).await;
    let err = err.unwrap_err();
    let message = permanent(&err);
    assert!(message.contains("the token lives 1day, longer than max_token_lifetime (10m)"), "{message}");
    assert!(message.ends_with("the token was revoked"), "{message}");

    // The short-lived client's 5-minute tokens pass a 5-minute bound and fail a 4-minute one.
    let mut s = settings(&server, "basic");
    s.max_token_lifetime = Some("5m".to_owned());
    mint(&connector(&s), &["billing:read"]).await;
    s.max_token_lifetime = Some("4m".to_owned());
    let err = connector(&s).execute(&action(Operation::Grant, &["billing:read"], None)).await.unwrap_err();
    assert!(permanent(&err).contains("longer than max_token_lifetime (4m)"), "{err}");
    Ok(())
}

#[tokio::test]
async fn bad_client_credentials_are_permanent_errors() -> anyhow::Result<()> {
    let Some(server) = server().await? else { return Ok(()) };
    let scopes = ["billing:read"];

    let mut wrong = settings(&server, "basic");
    wrong.client_secret = Some(SecretString::from("not-the-secret"));
    let err = connector(&wrong).execute(&action(Operation::Grant, &scopes, None)).await.unwrap_err();
    assert!(permanent(&err).contains("refused (401 invalid_client"), "{err}");

    // A basic client that tries post (and the other way round) is refused: the server is strict.
    let mut switched = settings(&server, "basic");
    switched.auth_method = AuthMethod::ClientSecretPost;
    let err = connector(&switched).execute(&action(Operation::Grant, &scopes, None)).await.unwrap_err();
    assert!(permanent(&err).contains("invalid_client"), "{err}");
    let mut switched = settings(&server, "post");
    switched.auth_method = AuthMethod::ClientSecretBasic;
    let err = connector(&switched).execute(&action(Operation::Grant, &scopes, None)).await.unwrap_err();
    assert!(permanent(&err).contains("invalid_client"), "{err}");

    // Signed with another client's key.
    let mut forged = settings(&server, "rs256");
    forged.private_key_file.clone_from(&server.client("es256").private_key_file);
    forged.signing_alg = Some(SigningAlg::ES256);
    let err = connector(&forged).execute(&action(Operation::Grant, &scopes, None)).await.unwrap_err();
    assert!(permanent(&err).contains("invalid_client"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_retryable() -> anyhow::Result<()> {
    let Some(server) = server().await? else { return Ok(()) };
    let s = settings(&server, "basic");
    let c = connector(&s);
    let (token, _) = mint(&c, &["billing:read"]).await;
    drop(server);

    // The connector that spoke to it (a pooled connection dies mid-request) and a fresh one
    // (the connection is refused): retryable either way, and never showing the token.
    let fresh = connector(&s);
    let grant = c.execute(&action(Operation::Grant, &["billing:read"], None)).await.unwrap_err();
    let revoke = c.execute_with_credential(&action(Operation::Revoke, &[], None), Some(&token)).await.unwrap_err();
    let refused = fresh.execute_with_credential(&action(Operation::Revoke, &[], None), Some(&token)).await.unwrap_err();
    for err in [&grant, &revoke, &refused] {
        let ConnectorError::Retryable { message, .. } = err else { panic!("{err:?}") };
        assert!(!message.contains(token.expose_secret()), "{message}");
    }
    let ConnectorError::Retryable { message, .. } = &refused else { unreachable!() };
    assert!(
        message.contains("oauth2 revocation endpoint 127.0.0.1:") && message.contains("connection failed"),
        "{message}"
    );
    Ok(())
}

/// Test-only sealing key for minted secrets.
const SECRETS_KEY: &str = "5f0e3c2a9b8d7164f5e4d3c2b1a09f8e7d6c5b4a392817160f1e2d3c4b5a6978";

/// An integration `billing-api` on the test server's `role` client, as `tollgate.toml` has it.
fn integration_toml(server: &OAuthServer, role: &str, token_url: &str) -> String {
    let e = &server.endpoints;
    let c = server.client(role);
    let secret = c.client_secret.as_deref().expect("a secret client");
    format!(
        r#"
[integrations.billing-api]
app = "billing"
environment = "staging"
owner = "bob"
scopes = [{{ name = "billing:read", risk = "low" }}, {{ name = "billing:write", risk = "medium" }}]

[integrations.billing-api.connector]
type = "oauth2"
token_url = "{token_url}"
revocation_url = "{}"
introspection_url = "{}"
client_id = "{}"
client_secret = "{secret}"
auth_method = "{}"
max_token_lifetime = "10m"
"#,
        e.revocation_url, e.introspection_url, c.client_id, c.method
    )
}

/// Through the server: a request for `billing:read` on an oauth2 integration, once approved,
/// mints a client-credentials token for exactly that scope at the authorization server, and the
/// holder retrieves it once; revoking the grant revokes that very token at the server (with the
/// engine's own sealed copy, the holder's being gone), and verification checks it is inactive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_request_mints_a_down_scoped_token_for_its_holder() -> anyhow::Result<()> {
    let Some(oauth) = server().await? else { return Ok(()) };
    let integration = integration_toml(&oauth, "post", &oauth.endpoints.token_url);
    let t = crate::common::start_with(|mut o| {
        o.extra_config.push_str(&integration);
        o.extra_config.push_str(&format!("\n[secrets]\nkey = \"{SECRETS_KEY}\"\n"));
        o.log_level = "trace".to_owned();
        o
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let body = serde_json::json!({
        "integration": "billing-api", "scopes": ["billing:read"], "duration": "1h", "justification": "oauth2 e2e"
    });
    let id = crate::common::id_of(&alice.create_request(&body).await?);
    let (st, resp) = t.server.client("bob").await?.decide(&id, "approve").await?;
    assert_eq!(st, 200, "{resp}");
    let view = alice.wait_status(&id, "active", crate::common::PATIENCE).await?;
    let gid = view["grant"]["id"].as_str().expect("grant id").to_owned();

    let (st, secret) = alice.post(&format!("/v1/grants/{gid}/secret"), &serde_json::json!({})).await?;
    assert_eq!(st, 200, "{secret}");
    let token = SecretString::from(secret["secret"].as_str().expect("the token").to_owned());
    assert!(secret["expires_at"].is_string(), "{secret}");

    // The authorization server says: active, for this client, with billing:read only.
    let c = connector(&settings(&oauth, "post"));
    verify(&c, &token, &["billing:read"], Expect::Present).await.map_err(anyhow::Error::msg)?;

    // Revocation: the holder's copy is gone, the engine revokes with its own (RFC 7009) and
    // checks the result by introspection (RFC 7662) — the grant ends `revoked`, not
    // `revoke_failed`, and the authorization server says the token is no longer active.
    let (st, resp) = alice.post(&format!("/v1/grants/{gid}/revoke"), &serde_json::json!({})).await?;
    assert!(st == 200 || st == 202, "{st} {resp}");
    let view = alice.wait_status(&id, "completed", crate::common::PATIENCE).await?;
    assert_eq!(view["grant"]["status"], "revoked", "{view:#}");
    verify(&c, &token, &["billing:read"], Expect::Absent).await.map_err(anyhow::Error::msg)?;
    let audit = t.server.client("audrey").await?.audit(Some(&id)).await?;
    let revoked = audit
        .iter()
        .find(|r| r["event_type"] == "revoke_succeeded")
        .unwrap_or_else(|| panic!("no completed revoke in {audit:#?}"));
    assert_eq!(revoked["details"]["reference"], tollgate_engine::connector::oauth2::fingerprint(&token), "{revoked}");

    let log = t.server.log();
    assert!(!log.contains(token.expose_secret()), "the token is in the server log");
    let trail = serde_json::to_string(&audit)?;
    assert!(!trail.contains(token.expose_secret()), "the token is in the audit trail");
    assert!(
        !log.contains(oauth.client("post").client_secret.as_deref().unwrap_or("-")),
        "the client secret is in the log"
    );
    Ok(())
}

/// A bad oauth2 configuration stops the server at start-up, naming the integration and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_oauth2_configuration_is_refused_at_start_up() -> anyhow::Result<()> {
    let Some(oauth) = server().await? else { return Ok(()) };
    tollgate_tests::install_crypto_provider();
    let receiver = tollgate_tests::Receiver::start().await?;
    let mut options = crate::common::options(&receiver);
    options.extra_config.push_str(&integration_toml(&oauth, "basic", "http://id.example.com/token"));
    let mut server = tollgate_tests::Server::configure(tollgate_tests::TestDb::new().await?, options)?;
    let err = server.restart().await.expect_err("the server must refuse to start").to_string();
    assert!(err.contains("integrations.billing-api.connector: `token_url`: must be https://"), "{err}");
    assert!(!err.contains(oauth.client("basic").client_secret.as_deref().unwrap_or("-")), "{err}");
    Ok(())
}

/// A rotation with a grace period on an oauth2 integration: the new token is minted while the
/// old one stays active, and after the grace period the engine revokes the old one with its own
/// sealed copy of it (the holder took theirs) and checks by introspection that it is inactive —
/// the new one still active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_revokes_the_old_token_after_its_grace_period_and_keeps_the_new_one() -> anyhow::Result<()> {
    let Some(oauth) = server().await? else { return Ok(()) };
    let integration = integration_toml(&oauth, "basic", &oauth.endpoints.token_url);
    let workflow = "key: oauth-rotate
version: 1
kind: rotate
applies_to:
  integrations: [billing-api]
parameters:
  require_justification: false
steps:
  - approval: {approvers: {owner: true}, timeout: 5m}
  - action: {operation: rotate}
  - action: {operation: verify}
  - wait: {duration: 1s}
  - action: {operation: revoke, version: previous}
  - action: {operation: verify, version: previous}
";
    let t = crate::common::start_with(|o| {
        let mut o = o.workflow("oauth-rotate.yaml", workflow);
        o.extra_config.push_str(&integration);
        o.extra_config.push_str(&format!("\n[secrets]\nkey = \"{SECRETS_KEY}\"\n"));
        o
    })
    .await?;
    let (alice, bob) = (t.server.client("alice").await?, t.server.client("bob").await?);
    let body = serde_json::json!({
        "integration": "billing-api", "scopes": ["billing:read"], "duration": "1h", "justification": "oauth2 rotation"
    });
    let id = crate::common::id_of(&alice.create_request(&body).await?);
    assert_eq!(bob.decide(&id, "approve").await?.0, 200);
    let view = alice.wait_status(&id, "active", crate::common::PATIENCE).await?;
    let gid = view["grant"]["id"].as_str().expect("grant id").to_owned();
    let retrieve = || async {
        let (st, secret) = alice.post(&format!("/v1/grants/{gid}/secret"), &serde_json::json!({})).await?;
        anyhow::ensure!(st == 200, "{st} {secret}");
        Ok(SecretString::from(secret["secret"].as_str().expect("the token").to_owned()))
    };
    let old = retrieve().await?;

    let rotation = serde_json::json!({ "integration": "billing-api", "kind": "rotate", "grant": gid });
    let rid = crate::common::id_of(&alice.create_request(&rotation).await?);
    assert_eq!(bob.decide(&rid, "approve").await?.0, 200);
    alice.wait_status(&rid, "completed", crate::common::PATIENCE).await?;
    let new = retrieve().await?;
    assert_ne!(old.expose_secret(), new.expose_secret());

    let c = connector(&settings(&oauth, "basic"));
    verify(&c, &old, &["billing:read"], Expect::Absent).await.map_err(anyhow::Error::msg)?;
    verify(&c, &new, &["billing:read"], Expect::Present).await.map_err(anyhow::Error::msg)?;
    let audit = t.server.client("audrey").await?.audit(Some(&rid)).await?;
    crate::common::assert_in_order(
        &crate::common::event_types(&audit),
        &["rotate_succeeded", "verify_succeeded", "previous_revoked", "previous_verified"],
    );
    let revoked = audit.iter().find(|r| r["event_type"] == "previous_revoked").expect("previous_revoked");
    assert_eq!(revoked["details"]["reference"], tollgate_engine::connector::oauth2::fingerprint(&old), "{revoked}");
    Ok(())
}

/// Drift reconciliation checks oauth2 grants with the engine's own copy of each token: an active
/// grant whose token is revoked behind Tollgate's back (at the authorization server) is reported
/// as drift (`drift_detected`, expected present) on the next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_introspects_with_the_engines_copy_and_reports_a_token_revoked_elsewhere() -> anyhow::Result<()>
{
    let Some(oauth) = server().await? else { return Ok(()) };
    let integration = integration_toml(&oauth, "post", &oauth.endpoints.token_url);
    let t = crate::common::start_with(|mut o| {
        o.extra_config.push_str(&integration);
        o.extra_config.push_str(&format!("\n[secrets]\nkey = \"{SECRETS_KEY}\"\n"));
        o.reconcile_schedule = "* * * * * *".to_owned(); // every second
        o
    })
    .await?;
    let alice = t.server.client("alice").await?;
    let body = serde_json::json!({
        "integration": "billing-api", "scopes": ["billing:read"], "duration": "1h", "justification": "oauth2 drift"
    });
    let id = crate::common::id_of(&alice.create_request(&body).await?);
    assert_eq!(t.server.client("bob").await?.decide(&id, "approve").await?.0, 200);
    let view = alice.wait_status(&id, "active", crate::common::PATIENCE).await?;
    let gid = view["grant"]["id"].as_str().expect("grant id").to_owned();
    let (st, secret) = alice.post(&format!("/v1/grants/{gid}/secret"), &serde_json::json!({})).await?;
    assert_eq!(st, 200, "{secret}");
    let token = SecretString::from(secret["secret"].as_str().expect("the token").to_owned());

    // Someone revokes the token at the authorization server; the next tick notices.
    let c = connector(&settings(&oauth, "post"));
    c.execute_with_credential(&action(Operation::Revoke, &["billing:read"], None), Some(&token))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let auditor = t.server.client("audrey").await?;
    let drift = tollgate_tests::eventually("drift reported", crate::common::PATIENCE, || async {
        let audit = auditor.audit(None).await?;
        let found =
            audit.into_iter().find(|r| r["event_type"] == "drift_detected" && r["details"]["grant_id"] == gid.as_str());
        Ok(found.ok_or_else(|| "no drift_detected yet".to_owned()))
    })
    .await?;
    assert_eq!(drift["details"]["expected"], "present", "{drift}");
    assert!(drift["details"]["error"].as_str().is_some_and(|e| e.contains("not active")), "{drift}");
    assert!(!serde_json::to_string(&drift)?.contains(token.expose_secret()));
    Ok(())
}
