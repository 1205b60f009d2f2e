use std::io::Write as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use tollgate_workflows::Operation;
use uuid::Uuid;

use super::*;
use crate::action::{ConnectorAction, Expect, IntegrationRef};
use crate::outbound::webhook::test_receiver::{Receiver, Reply};

/// A throw-away P-256 key for tests (not a secret).
const EC_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCRVcmC9zkn/99yyh
gkIujeQ5YQE27p5Ps+zm8OrSTxmhRANCAARRNsBIl2pXPGrxhWrlt6LUCHvUTB8h
gqfzefgTTU/oRHzJQOV7RhKte/2S92nsY88Q7kNOIset8ExKbSv6Wkk6
-----END PRIVATE KEY-----
";

const TOKEN: &str = "at-CANARY-0123456789";
const SECRET: &str = "s:e/c r%t+CANARY";

fn http() -> reqwest::Client {
    crate::http::client(Duration::from_secs(10)).unwrap()
}

fn base(receiver: &Receiver) -> String {
    format!("http://{}", receiver.addr)
}

fn connector(settings: &OAuth2Settings) -> OAuth2Connector {
    OAuth2Connector::new(settings, &http()).unwrap()
}

fn action(operation: Operation, scopes: &[&str]) -> ConnectorAction {
    ConnectorAction {
        operation,
        idempotency_key: "run-1:step-2".to_owned(),
        run_id: Uuid::from_u128(1),
        grant_id: Uuid::from_u128(2),
        integration: IntegrationRef {
            name: "billing".to_owned(),
            app: "billing".to_owned(),
            environment: "production".to_owned(),
        },
        principal: "ci-bot".to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        expires_at: None,
        attempt: 1,
        expect: None,
        version: None,
        keep_previous: false,
    }
}

fn token_reply(scope: &str, expires_in: u64) -> Reply {
    Reply::status(200).header("content-type", "application/json").body(format!(
        r#"{{"access_token":"{TOKEN}","token_type":"Bearer","expires_in":{expires_in},"scope":"{scope}"}}"#
    ))
}

fn form(body: &[u8]) -> std::collections::BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Nothing secret in what is logged or stored.
fn assert_clean(shown: &str) {
    for secret in ["CANARY", "PRIVATE KEY"] {
        assert!(!shown.contains(secret), "{secret} leaked into {shown}");
    }
}

#[tokio::test]
async fn basic_auth_form_encodes_the_credentials_and_mints_exactly_the_grant_scopes() {
    let receiver = Receiver::start([token_reply("billing:read", 300)]).await;
    let settings = test_settings(&base(&receiver), SECRET);
    let before = SystemClock.now();
    let outcome = connector(&settings).execute(&action(Operation::Grant, &["billing:read"])).await.unwrap();

    let ActionOutcome::Done { reference: Some(reference), minted: Some(minted) } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(minted.value.expose_secret(), TOKEN);
    assert_eq!(reference, &fingerprint(&SecretString::from(TOKEN)));
    assert!(reference.starts_with("sha256:") && reference.len() == 23, "{reference}");
    let expires_at = minted.expires_at.unwrap();
    assert!(
        expires_at >= before + chrono::Duration::seconds(300)
            && expires_at <= SystemClock.now() + chrono::Duration::seconds(300)
    );
    assert_clean(&format!("{outcome:?}"));

    let [request] = receiver.requests().try_into().unwrap();
    let basic = request.header("authorization").unwrap().strip_prefix("Basic ").unwrap();
    let decoded = String::from_utf8(STANDARD.decode(basic).unwrap()).unwrap();
    assert_eq!(decoded, "tollgate:s%3Ae%2Fc+r%25t%2BCANARY", "RFC 6749 §2.3.1: form-encoded, then base64");
    assert_eq!(request.header("content-type"), Some("application/x-www-form-urlencoded"));
    let body = form(&request.body);
    assert_eq!(body.get("grant_type").map(String::as_str), Some("client_credentials"));
    assert_eq!(body.get("scope").map(String::as_str), Some("billing:read"));
    assert!(!body.contains_key("client_secret") && !body.contains_key("client_id"), "{body:?}");
}

#[tokio::test]
async fn post_auth_sends_the_secret_in_the_body_with_the_audience() {
    let receiver = Receiver::start([token_reply("billing:read billing:write", 60)]).await;
    let mut settings = test_settings(&base(&receiver), SECRET);
    settings.auth_method = AuthMethod::ClientSecretPost;
    settings.audience = Some("https://api.example.com".to_owned());
    connector(&settings).execute(&action(Operation::Grant, &["billing:write", "billing:read"])).await.unwrap();

    let [request] = receiver.requests().try_into().unwrap();
    assert_eq!(request.header("authorization"), None);
    let body = form(&request.body);
    assert_eq!(body.get("client_id").map(String::as_str), Some("tollgate"));
    assert_eq!(body.get("client_secret").map(String::as_str), Some(SECRET));
    assert_eq!(body.get("audience").map(String::as_str), Some("https://api.example.com"));
    assert_eq!(body.get("scope").map(String::as_str), Some("billing:read billing:write"));
}

#[tokio::test]
async fn private_key_jwt_signs_a_fresh_assertion_for_every_call() {
    let receiver = Receiver::start([token_reply("billing:read", 60), token_reply("billing:read", 60)]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    std::fs::File::create(&key).unwrap().write_all(EC_KEY.as_bytes()).unwrap();
    let mut settings = test_settings(&base(&receiver), "unused");
    settings.client_secret = None;
    settings.auth_method = AuthMethod::PrivateKeyJwt;
    settings.private_key_file = Some(key);
    settings.signing_alg = Some(SigningAlg::ES256);
    settings.key_id = Some("key-1".to_owned());
    let c = connector(&settings);
    assert_clean(&format!("{c:?}"));
    for _ in 0..2 {
        c.execute(&action(Operation::Grant, &["billing:read"])).await.unwrap();
    }

    let requests = receiver.requests();
    let mut jtis = Vec::new();
    for request in &requests {
        assert_eq!(request.header("authorization"), None);
        let body = form(&request.body);
        assert_eq!(body.get("client_id").map(String::as_str), Some("tollgate"));
        assert_eq!(
            body.get("client_assertion_type").map(String::as_str),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        );
        let jwt = body.get("client_assertion").unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], "key-1");
        assert_eq!(claims["iss"], "tollgate");
        assert_eq!(claims["sub"], "tollgate");
        assert_eq!(claims["aud"], format!("{}/token", base(&receiver)));
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 60);
        jtis.push(claims["jti"].as_str().unwrap().to_owned());
    }
    assert_eq!(jtis.len(), 2);
    assert_ne!(jtis[0], jtis[1], "each assertion is used once");
}

#[tokio::test]
async fn scopes_outside_the_integration_are_refused_without_a_call() {
    let receiver = Receiver::start([]).await;
    let c = connector(&test_settings(&base(&receiver), SECRET));
    for scopes in [&["billing:read", "admin"][..], &[][..], &["billing read"][..]] {
        let err = c.execute(&action(Operation::Grant, scopes)).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Permanent { .. }), "{scopes:?}: {err:?}");
    }
    let err = c.execute(&action(Operation::Grant, &["billing:read", "admin"])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "permanent connector failure: scopes [admin] are not among the integration's scopes [billing:read billing:write]"
    );
    assert!(receiver.requests().is_empty());
}

#[tokio::test]
async fn a_token_broader_or_longer_lived_than_asked_is_revoked_and_refused() {
    let receiver = Receiver::start([
        token_reply("billing:read billing:write", 60),
        Reply::status(200),
        token_reply("billing:read", 7200),
        Reply::status(200),
    ])
    .await;
    let c = connector(&test_settings(&base(&receiver), SECRET));

    let broad = c.execute(&action(Operation::Grant, &["billing:read"])).await.unwrap_err();
    assert!(matches!(broad, ConnectorError::Permanent { .. }), "{broad:?}");
    assert!(
        broad.to_string().contains("granted scopes [billing:read billing:write] for the requested [billing:read]"),
        "{broad}"
    );
    assert!(broad.to_string().ends_with("the token was revoked"), "{broad}");

    let long = c.execute(&action(Operation::Grant, &["billing:read"])).await.unwrap_err();
    assert!(long.to_string().contains("the token lives 2h, longer than max_token_lifetime (1h)"), "{long}");
    assert_clean(&format!("{broad} {broad:?} {long} {long:?}"));

    let requests = receiver.requests();
    assert_eq!(requests.len(), 4);
    for revocation in [&requests[1], &requests[3]] {
        let body = form(&revocation.body);
        assert_eq!(body.get("token").map(String::as_str), Some(TOKEN));
        assert_eq!(body.get("token_type_hint").map(String::as_str), Some("access_token"));
    }
}

#[tokio::test]
async fn lifetime_comes_from_introspection_when_expires_in_is_missing_and_refresh_tokens_are_revoked() {
    let receiver = Receiver::start([
        Reply::status(200)
            .body(format!(r#"{{"access_token":"{TOKEN}","token_type":"bearer","refresh_token":"rt-CANARY"}}"#)),
        Reply::status(200),
        Reply::status(200).body(format!(r#"{{"active":true,"exp":{}}}"#, SystemClock.now().timestamp() + 120)),
    ])
    .await;
    let outcome =
        connector(&test_settings(&base(&receiver), SECRET)).execute(&action(Operation::Grant, &["billing:read"])).await;
    let Ok(ActionOutcome::Done { minted: Some(minted), .. }) = outcome else { panic!("{outcome:?}") };
    let lifetime = minted.expires_at.unwrap() - SystemClock.now();
    assert!(lifetime <= chrono::Duration::seconds(120) && lifetime > chrono::Duration::seconds(100), "{lifetime}");

    let requests = receiver.requests();
    let refresh = form(&requests[1].body);
    assert_eq!(refresh.get("token").map(String::as_str), Some("rt-CANARY"));
    assert_eq!(refresh.get("token_type_hint").map(String::as_str), Some("refresh_token"));
    assert_eq!(form(&requests[2].body).get("token").map(String::as_str), Some(TOKEN));

    // No expires_in and no introspection: a token that may never expire is not handed out.
    let receiver = Receiver::start([Reply::status(200).body(format!(r#"{{"access_token":"{TOKEN}"}}"#))]).await;
    let mut settings = test_settings(&base(&receiver), SECRET);
    settings.introspection_url = None;
    let err = connector(&settings).execute(&action(Operation::Grant, &["billing:read"])).await.unwrap_err();
    assert!(
        err.to_string().contains("lifetime is unknown") && err.to_string().ends_with("the token was revoked"),
        "{err}"
    );
}

#[tokio::test]
async fn failures_are_classified_and_messages_name_only_host_status_and_oauth_error() {
    let receiver = Receiver::start([
        Reply::status(503).header("retry-after", "7").body("CANARY"),
        Reply::status(500),
        Reply::status(429),
        Reply::status(401).body(r#"{"error":"invalid_client","error_description":"invalid secret provided"}"#),
        Reply::status(400).body(r#"{"error":"invalid_scope","error_description":"bad\nCANARY"}"#),
        Reply::status(404).body("CANARY"),
        Reply::status(302).header("location", "http://127.0.0.1:9/x"),
        Reply::status(200).body(format!(r#"{{"access_token":"{TOKEN}","expires_in":{{"CANARY":1}}}}"#)),
        Reply::status(200).body("not json CANARY"),
    ])
    .await;
    let c = connector(&test_settings(&base(&receiver), SECRET));
    let host = receiver.addr.to_string();
    let mut results = Vec::new();
    for _ in 0..9 {
        results.push(c.execute(&action(Operation::Grant, &["billing:read"])).await.unwrap_err());
    }
    for e in &results {
        assert_clean(&format!("{e} {e:?}"));
    }
    assert_eq!(
        results[0],
        ConnectorError::Retryable {
            message: format!("oauth2 token endpoint {host} answered 503"),
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(matches!(results[1], ConnectorError::Retryable { retry_after: None, .. }), "{:?}", results[1]);
    assert!(matches!(results[2], ConnectorError::Retryable { .. }), "{:?}", results[2]);
    assert_eq!(
        results[3].to_string(),
        format!(
            "permanent connector failure: oauth2 token endpoint {host} refused (401 invalid_client: invalid secret provided)"
        )
    );
    assert_eq!(
        results[4].to_string(),
        format!("permanent connector failure: oauth2 token endpoint {host} refused (400 invalid_scope)")
    );
    for e in &results[5..] {
        assert!(matches!(e, ConnectorError::Permanent { .. }), "{e:?}");
    }
}

#[tokio::test]
async fn server_down_is_retryable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = connector(&test_settings(&format!("http://127.0.0.1:{port}"), SECRET));
    let err = c.execute(&action(Operation::Grant, &["billing:read"])).await.unwrap_err();
    let ConnectorError::Retryable { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.starts_with(&format!("oauth2 token endpoint 127.0.0.1:{port}: connection failed")), "{message}");
}

#[tokio::test]
async fn revoke_treats_already_invalid_as_done_and_needs_the_minted_token() {
    let receiver = Receiver::start([
        Reply::status(200),
        Reply::status(400).body(r#"{"error":"invalid_token"}"#),
        Reply::status(400).body(r#"{"error":"unsupported_token_type"}"#),
    ])
    .await;
    let c = connector(&test_settings(&base(&receiver), SECRET));
    let token = SecretString::from(TOKEN);
    let revoke = action(Operation::Revoke, &["billing:read"]);

    let without = c.execute(&revoke).await.unwrap_err();
    assert!(matches!(without, ConnectorError::Permanent { .. }));
    assert!(without.to_string().contains("revoke needs the token minted for grant"), "{without}");
    assert!(receiver.requests().is_empty());

    for _ in 0..2 {
        let done = c.execute_with_credential(&revoke, Some(&token)).await.unwrap();
        assert_eq!(done, ActionOutcome::Done { reference: Some(fingerprint(&token)), minted: None });
    }
    let err = c.execute_with_credential(&revoke, Some(&token)).await.unwrap_err();
    assert!(err.to_string().contains("refused (400 unsupported_token_type)"), "{err}");
    let body = form(&receiver.requests()[0].body);
    assert_eq!(body.get("token").map(String::as_str), Some(TOKEN));
}

#[tokio::test]
async fn verify_compares_introspection_with_what_is_expected() {
    let later = SystemClock.now().timestamp() + 300;
    let receiver = Receiver::start([
        Reply::status(200)
            .body(format!(r#"{{"active":true,"client_id":"tollgate","scope":"billing:read","exp":{later}}}"#)),
        Reply::status(200).body(r#"{"active":false}"#),
        Reply::status(200).body(r#"{"active":false}"#),
        Reply::status(200).body(format!(r#"{{"active":true,"scope":"billing:read","exp":{later}}}"#)),
        Reply::status(200).body(format!(r#"{{"active":true,"scope":"billing:read billing:write","exp":{later}}}"#)),
        Reply::status(200).body(format!(r#"{{"active":true,"client_id":"other","exp":{later}}}"#)),
    ])
    .await;
    let c = connector(&test_settings(&base(&receiver), SECRET));
    assert!(c.verifies() && c.needs_credential());
    let token = SecretString::from(TOKEN);
    let verify = |expect| {
        let mut a = action(Operation::Verify, &["billing:read"]);
        a.expect = Some(expect);
        a
    };
    let done = ActionOutcome::Done { reference: None, minted: None };
    assert_eq!(c.execute_with_credential(&verify(Expect::Present), Some(&token)).await.unwrap(), done);
    let gone = c.execute_with_credential(&verify(Expect::Present), Some(&token)).await.unwrap_err();
    assert!(gone.to_string().contains("not active at the authorization server"), "{gone}");
    assert_eq!(c.execute_with_credential(&verify(Expect::Absent), Some(&token)).await.unwrap(), done);
    let still = c.execute_with_credential(&verify(Expect::Absent), Some(&token)).await.unwrap_err();
    assert!(still.to_string().contains("still active"), "{still}");
    let broad = c.execute_with_credential(&verify(Expect::Present), Some(&token)).await.unwrap_err();
    assert!(broad.to_string().contains("scopes beyond the grant: [billing:write]"), "{broad}");
    let other = c.execute_with_credential(&verify(Expect::Present), Some(&token)).await.unwrap_err();
    assert!(other.to_string().contains("another client"), "{other}");

    let mut settings = test_settings(&base(&receiver), SECRET);
    settings.introspection_url = None;
    let blind = connector(&settings);
    assert!(!blind.verifies());
    let err = blind.execute_with_credential(&verify(Expect::Absent), Some(&token)).await.unwrap_err();
    assert!(err.to_string().contains("no `introspection_url` is configured"), "{err}");
}

#[tokio::test]
async fn renew_revokes_the_old_token_before_minting_a_new_one() {
    let receiver = Receiver::start([
        Reply::status(200),
        token_reply("billing:read", 60),
        token_reply("billing:read", 60),
        token_reply("billing:read", 60),
    ])
    .await;
    let c = connector(&test_settings(&base(&receiver), SECRET));
    let old = SecretString::from("old-CANARY");
    let outcome = c.execute_with_credential(&action(Operation::Renew, &["billing:read"]), Some(&old)).await.unwrap();
    let ActionOutcome::Done { minted: Some(minted), .. } = outcome else { panic!() };
    assert_eq!(minted.value.expose_secret(), TOKEN);
    let requests = receiver.requests();
    assert_eq!(form(&requests[0].body).get("token").map(String::as_str), Some("old-CANARY"));
    assert_eq!(form(&requests[1].body).get("grant_type").map(String::as_str), Some("client_credentials"));

    // The engine holds no token once the old one expired: nothing to revoke, a new one is minted.
    c.execute_with_credential(&action(Operation::Renew, &["billing:read"]), None).await.unwrap();
    // A rotation with a grace period keeps the old token: the workflow revokes it later.
    let mut rotate = action(Operation::Rotate, &["billing:read"]);
    rotate.keep_previous = true;
    c.execute_with_credential(&rotate, Some(&old)).await.unwrap();
    let grants: Vec<_> = receiver.requests()[2..].iter().map(|r| form(&r.body).get("grant_type").cloned()).collect();
    assert_eq!(grants, vec![Some("client_credentials".to_owned()); 2], "no revocation in between");
}

#[test]
fn config_errors_name_the_field_and_never_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let ec = dir.path().join("ec.pem");
    std::fs::write(&ec, EC_KEY).unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key CANARY").unwrap();
    let ok = test_settings("https://id.example.com", SECRET);
    let jwt = |path: &std::path::Path, alg: Option<SigningAlg>| {
        let mut s = ok.clone();
        s.client_secret = None;
        s.auth_method = AuthMethod::PrivateKeyJwt;
        s.private_key_file = Some(path.to_owned());
        s.signing_alg = alg;
        s
    };
    let cases: Vec<(OAuth2Settings, &str)> = vec![
        (OAuth2Settings { token_url: "not a url".to_owned(), ..ok.clone() }, "`token_url`: not a valid URL"),
        (
            OAuth2Settings { token_url: "http://id.example.com/token".to_owned(), ..ok.clone() },
            "`token_url`: must be https://",
        ),
        (
            OAuth2Settings { revocation_url: "ftp://id.example.com/r".to_owned(), ..ok.clone() },
            "`revocation_url`: the scheme",
        ),
        (
            OAuth2Settings { introspection_url: Some("https://u:p@id.example.com/i".to_owned()), ..ok.clone() },
            "`introspection_url`: must not embed credentials",
        ),
        (OAuth2Settings { client_id: " ".to_owned(), ..ok.clone() }, "`client_id`:"),
        (OAuth2Settings { client_secret: None, ..ok.clone() }, "`client_secret`: set one of"),
        (OAuth2Settings { client_secret_env: Some("X".to_owned()), ..ok.clone() }, "`client_secret`: set only one of"),
        (
            OAuth2Settings { client_secret: Some(SecretString::from("")), ..ok.clone() },
            "`client_secret`: the client secret is empty",
        ),
        (
            OAuth2Settings { client_secret: None, client_secret_file: Some(dir.path().join("missing")), ..ok.clone() },
            "`client_secret_file`: cannot read",
        ),
        (OAuth2Settings { key_id: Some("k".to_owned()), ..ok.clone() }, "`key_id`: only used with"),
        (
            OAuth2Settings { max_token_lifetime: Some("2days".to_owned()), ..ok.clone() },
            "`max_token_lifetime`: between",
        ),
        (
            OAuth2Settings { max_token_lifetime: Some("soon".to_owned()), ..ok.clone() },
            "`max_token_lifetime`: \"soon\"",
        ),
        (OAuth2Settings { audience: Some(" ".to_owned()), ..ok.clone() }, "`audience`:"),
        (
            OAuth2Settings { integration_scopes: vec!["a b".to_owned()], ..ok.clone() },
            "`scopes`: \"a b\" is not an OAuth scope",
        ),
        (OAuth2Settings { private_key_file: None, ..jwt(&ec, None) }, "`private_key_file`: auth_method"),
        (jwt(&junk, Some(SigningAlg::ES256)), "`private_key_file`: "),
        (jwt(&ec, Some(SigningAlg::RS256)), "`private_key_file`: "),
        (
            OAuth2Settings { client_secret: Some(SecretString::from(SECRET)), ..jwt(&ec, None) },
            "`client_secret`: not used",
        ),
    ];
    for (settings, want) in cases {
        let err = OAuth2Connector::new_with_env(&settings, &http(), |_| Ok("x".to_owned())).unwrap_err().to_string();
        assert!(err.starts_with(want), "want {want:?}, got {err:?}");
        assert_clean(&err);
    }
    // The environment variable is read, and its absence named.
    let env = OAuth2Settings { client_secret: None, client_secret_env: Some("OAUTH_SECRET".to_owned()), ..ok.clone() };
    let err = OAuth2Connector::new_with_env(&env, &http(), |_| Err(std::env::VarError::NotPresent)).unwrap_err();
    assert_eq!(err.to_string(), "`client_secret_env`: environment variable OAUTH_SECRET is not set");
    OAuth2Connector::new_with_env(&env, &http(), |_| Ok("from-env".to_owned())).unwrap();
    // Loopback may be plain HTTP; an EC key signs ES256.
    OAuth2Connector::new(&test_settings("http://127.0.0.1:9", SECRET), &http()).unwrap();
    OAuth2Connector::new(&test_settings("http://[::1]:9", SECRET), &http()).unwrap();
    OAuth2Connector::new(&jwt(&ec, Some(SigningAlg::ES256)), &http()).unwrap();
}

#[test]
fn config_is_parsed_strictly_from_the_integration_table() {
    let config: crate::connector::ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "oauth2",
        "token_url": "https://id.example.com/oauth2/v1/token",
        "revocation_url": "https://id.example.com/oauth2/v1/revoke",
        "introspection_url": "https://id.example.com/oauth2/v1/introspect",
        "client_id": "0oa1",
        "client_secret": "CANARY-secret",
        "auth_method": "client_secret_post",
        "max_token_lifetime": "15m",
        "timeout": "5s"
    }))
    .unwrap();
    assert_eq!(config.type_name(), "oauth2");
    assert_clean(&format!("{config:?}"));
    let c = crate::connector::build(&config, &http()).unwrap();
    assert_eq!(c.kind(), "oauth2");
    assert!(c.verifies() && c.needs_credential());
    assert_clean(&format!("{c:?}"));

    let bad = serde_json::from_value::<crate::connector::ConnectorConfig>(serde_json::json!({
        "type": "oauth2", "token_url": "https://x", "revocation_url": "https://x", "client_id": "a",
        "auth_method": "client_secret_jwt"
    }))
    .unwrap_err();
    assert!(bad.to_string().contains("unknown variant `client_secret_jwt`"), "{bad}");
    let unknown = serde_json::from_value::<crate::connector::ConnectorConfig>(serde_json::json!({
        "type": "oauth2", "token_url": "https://x", "revocation_url": "https://x", "client_id": "a", "scopes": ["a"]
    }))
    .unwrap_err();
    assert!(unknown.to_string().contains("unknown field `scopes`"), "{unknown}");
}
