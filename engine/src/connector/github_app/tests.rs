use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tollgate_workflows::Operation;
use uuid::Uuid;

use super::*;
use crate::action::{ConnectorAction, Expect, IntegrationRef};
use crate::clock::ManualClock;
use crate::outbound::webhook::test_receiver::{Receiver, Reply};

/// A throw-away App key for tests (see README.md beside it): PKCS#1, the same in PKCS#8, and the
/// public half.
const KEY_PKCS1: &str = include_str!("app-key.pem");
const KEY_PKCS8: &str = include_str!("app-key.pkcs8.pem");
const PUBLIC_KEY: &str = include_str!("app-key.pub.pem");

const TOKEN: &str = "ghs_CANARY0123456789abcdefghijklmnopqrst";

fn http() -> reqwest::Client {
    crate::http::client(Duration::from_secs(10)).unwrap()
}

fn key_file(pem: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), pem).unwrap();
    file
}

fn settings(api_url: &str, key: &tempfile::NamedTempFile) -> GithubAppSettings {
    GithubAppSettings {
        api_url: api_url.to_owned(),
        app_id: "123456".to_owned(),
        installation_id: 42,
        private_key_file: Some(key.path().to_owned()),
        private_key_env: None,
        repositories: vec!["widgets".to_owned()],
        timeout: None,
        integration_scopes: ["contents:read", "contents:write", "issues:write", "repo:widgets", "repo:gadgets"]
            .map(str::to_owned)
            .to_vec(),
    }
}

/// A connector against `receiver`, and the key file it must outlive.
fn connector(receiver: &Receiver) -> (GithubAppConnector, tempfile::NamedTempFile) {
    let key = key_file(KEY_PKCS1);
    let c = GithubAppConnector::new(&settings(&format!("http://{}", receiver.addr), &key), &http()).unwrap();
    (c, key)
}

fn action(operation: Operation, scopes: &[&str], expect: Option<Expect>) -> ConnectorAction {
    ConnectorAction {
        operation,
        idempotency_key: "run-1:step-2".to_owned(),
        run_id: Uuid::from_u128(1),
        grant_id: Uuid::from_u128(2),
        integration: IntegrationRef {
            name: "github".to_owned(),
            app: "github".to_owned(),
            environment: "production".to_owned(),
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

fn token_reply(expires_at: &str) -> Reply {
    Reply::status(201).header("content-type", "application/json").body(format!(
        r#"{{"token":"{TOKEN}","expires_at":"{expires_at}","permissions":{{"contents":"read","metadata":"read"}},
            "repository_selection":"selected","repositories":[{{"id":1,"name":"Widgets","full_name":"acme/Widgets"}}]}}"#
    ))
}

/// Nothing secret in what is logged or stored.
fn assert_clean(shown: &str) {
    for secret in ["CANARY", "PRIVATE KEY", "eyJ"] {
        assert!(!shown.contains(secret), "{secret} leaked into {shown}");
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn scopes_map_to_permissions_and_repositories_by_one_rule() {
    let permission = |name: &str, level| GithubScope::Permission { name: name.to_owned(), level };
    for (scope, expected) in [
        ("contents:read", permission("contents", Level::Read)),
        ("pull_requests:write", permission("pull_requests", Level::Write)),
        ("organization_projects:admin", permission("organization_projects", Level::Admin)),
        ("repo:widgets", GithubScope::Repository("widgets".to_owned())),
        ("repo:my.repo-2_x", GithubScope::Repository("my.repo-2_x".to_owned())),
        // `repo:` always names a repository, even one called `read`.
        ("repo:read", GithubScope::Repository("read".to_owned())),
    ] {
        assert_eq!(parse_scope(scope), Ok(expected), "{scope}");
    }
    for (scope, why) in [
        ("contents", "neither a permission"),
        ("contents:delete", "neither a permission"),
        ("Contents:read", "neither a permission"),
        (":read", "neither a permission"),
        ("repo", "neither a permission"),
        ("contents:read:write", "neither a permission"),
        ("repo:acme/widgets", "without its owner"),
        ("repo:", "not a GitHub repository name"),
        ("repo:..", "not a GitHub repository name"),
        ("repo:wid gets", "not a GitHub repository name"),
    ] {
        let err = parse_scope(scope).unwrap_err();
        assert!(err.contains(why), "{scope}: {err}");
    }

    // The highest level of a permission named twice; repo: scopes replace the default set.
    let request = token_request(
        &strings(&["contents:read", "contents:write", "issues:read", "repo:gadgets"]),
        &strings(&["widgets"]),
    )
    .unwrap();
    assert_eq!(request.repositories, BTreeSet::from(["gadgets".to_owned()]));
    assert_eq!(
        request.permissions,
        BTreeMap::from([("contents".to_owned(), Level::Write), ("issues".to_owned(), Level::Read)])
    );
    assert_eq!(
        serde_json::to_value(&request).unwrap(),
        serde_json::json!({"repositories": ["gadgets"], "permissions": {"contents": "write", "issues": "read"}})
    );
    let default = token_request(&strings(&["contents:read"]), &strings(&["widgets", "gadgets"])).unwrap();
    assert_eq!(default.repositories, BTreeSet::from(["gadgets".to_owned(), "widgets".to_owned()]));

    for (scopes, defaults, why) in [
        (&["repo:widgets"][..], &[][..], "names no permission"),
        (&["contents:read"][..], &[][..], "names no repository"),
        (&["contents:read", "admin", "repo:a/b"][..], &["widgets"][..], "scope \"admin\" is neither"),
    ] {
        let err = token_request(&strings(scopes), &strings(defaults)).unwrap_err();
        assert!(err.contains(why), "{scopes:?}: {err}");
    }
    let many: Vec<String> =
        (0..=MAX_REPOSITORIES).map(|i| format!("repo:r{i}")).chain(["contents:read".to_owned()]).collect();
    assert!(token_request(&many, &[]).unwrap_err().contains("at most 500"));
}

#[test]
fn settings_are_checked_at_build_naming_the_field() {
    let http = http();
    let pkcs1 = key_file(KEY_PKCS1);
    let pkcs8 = key_file(KEY_PKCS8);

    // Through the tagged config, as the directory has it: ids as numbers, defaults filled in.
    let config: super::super::ConnectorConfig = serde_json::from_value(serde_json::json!({
        "type": "github_app", "app_id": 123_456, "installation_id": "42",
        "private_key_file": pkcs1.path(), "repositories": ["widgets"], "timeout": "5s"
    }))
    .unwrap();
    assert_eq!(config.type_name(), "github_app");
    let super::super::ConnectorConfig::GithubApp(parsed) = &config else { panic!() };
    assert_eq!(
        (parsed.api_url.as_str(), parsed.app_id.as_str(), parsed.installation_id),
        (DEFAULT_API_URL, "123456", 42)
    );
    let built = super::super::build(&config, &http).unwrap();
    assert_eq!(built.kind(), "github_app");
    assert!(built.verifies() && built.needs_credential());
    assert_clean(&format!("{built:?} {config:?}"));
    let unknown = serde_json::from_value::<super::super::ConnectorConfig>(serde_json::json!({
        "type": "github_app", "app_id": 1, "installation_id": 2, "private_key": "x"
    }))
    .unwrap_err();
    assert!(unknown.to_string().contains("unknown field `private_key`"), "{unknown}");

    // PKCS#8 works too, and so does a key in an environment variable (one line with `\n`).
    GithubAppConnector::new(&settings(DEFAULT_API_URL, &pkcs8), &http).unwrap();
    let mut from_env = settings(DEFAULT_API_URL, &pkcs1);
    from_env.private_key_file = None;
    from_env.private_key_env = Some("GITHUB_APP_KEY".to_owned());
    let one_line = KEY_PKCS1.replace('\n', "\\n");
    GithubAppConnector::new_with_env(&from_env, &http, |_| Ok(one_line.clone())).unwrap();
    let err = GithubAppConnector::new_with_env(&from_env, &http, |_| Err(std::env::VarError::NotPresent)).unwrap_err();
    assert_eq!(err.to_string(), "`private_key_env`: environment variable GITHUB_APP_KEY is not set");

    let garbage = key_file("-----BEGIN RSA PRIVATE KEY-----\nCANARY\n-----END RSA PRIVATE KEY-----\n");
    let public = key_file(PUBLIC_KEY);
    let ec = key_file(
        "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgCRVcmC9zkn/99yyh
gkIujeQ5YQE27p5Ps+zm8OrSTxmhRANCAARRNsBIl2pXPGrxhWrlt6LUCHvUTB8h
gqfzefgTTU/oRHzJQOV7RhKte/2S92nsY88Q7kNOIset8ExKbSv6Wkk6
-----END PRIVATE KEY-----
",
    );
    type Change<'a> = Box<dyn Fn(&mut GithubAppSettings) + 'a>;
    let cases: Vec<(Change<'_>, &str, &str)> = vec![
        (Box::new(|s| s.private_key_file = Some(garbage.path().to_owned())), "private_key_file", "RSA private key"),
        (Box::new(|s| s.private_key_file = Some(public.path().to_owned())), "private_key_file", "cannot sign RS256"),
        (Box::new(|s| s.private_key_file = Some(ec.path().to_owned())), "private_key_file", "not an RSA private key"),
        (Box::new(|s| s.private_key_file = Some("/nonexistent/key.pem".into())), "private_key_file", "cannot read"),
        (Box::new(|s| s.private_key_file = None), "private_key_file", "set `private_key_file` or"),
        (Box::new(|s| s.private_key_env = Some("X".to_owned())), "private_key_file", "only one"),
        (Box::new(|s| s.api_url = "http://github.example.com/api/v3".to_owned()), "api_url", "https://"),
        (Box::new(|s| s.api_url = "https://u:p@github.example.com".to_owned()), "api_url", "credentials"),
        (Box::new(|s| s.api_url = "https://github.example.com/api/v3?x=1".to_owned()), "api_url", "query"),
        (Box::new(|s| s.api_url = "github.example.com".to_owned()), "api_url", "not a valid URL"),
        (Box::new(|s| s.app_id = " ".to_owned()), "app_id", "App's id"),
        (Box::new(|s| s.installation_id = 0), "installation_id", "installation"),
        (Box::new(|s| s.repositories = strings(&["acme/widgets"])), "repositories", "without its owner"),
        (Box::new(|s| s.integration_scopes.push("admin".to_owned())), "scopes", "\"admin\" is neither"),
    ];
    for (change, field, reason) in cases {
        let mut s = settings(DEFAULT_API_URL, &pkcs1);
        change(&mut s);
        let err = GithubAppConnector::new(&s, &http).unwrap_err();
        let ConfigError::Invalid { field: got, reason: why } = &err else { panic!("{err:?}") };
        assert_eq!(*got, field, "{err}");
        assert!(why.contains(reason), "{field}: {err}");
        assert_clean(&format!("{err} {err:?}"));
    }
}

#[tokio::test]
async fn grant_signs_an_app_jwt_and_mints_a_token_restricted_to_the_grant() {
    let receiver = Receiver::start([token_reply("2030-01-01T01:00:00Z")]).await;
    let (c, _key) = connector(&receiver);
    let clock = ManualClock::new(chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().into());
    let c = c.with_clock(std::sync::Arc::new(clock));
    let outcome = c.execute(&action(Operation::Grant, &["contents:read", "repo:widgets"], None)).await.unwrap();

    let ActionOutcome::Done { reference: Some(reference), minted: Some(minted) } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(minted.value.expose_secret(), TOKEN);
    assert_eq!(minted.expires_at.unwrap().to_rfc3339(), "2030-01-01T01:00:00+00:00");
    assert_eq!(reference, &super::super::oauth2::fingerprint(&SecretString::from(TOKEN)));
    assert_clean(&format!("{outcome:?} {c:?}"));

    let [request] = receiver.requests().try_into().unwrap();
    assert_eq!(request.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(request.header("x-github-api-version"), Some(API_VERSION));
    assert_eq!(request.header("user-agent"), Some(crate::http::USER_AGENT));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.json(), serde_json::json!({"repositories": ["widgets"], "permissions": {"contents": "read"}}));
    let jwt = request.header("authorization").unwrap().strip_prefix("Bearer ").unwrap();
    #[derive(Deserialize)]
    struct Claims {
        iss: String,
        iat: i64,
        exp: i64,
    }
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false; // signed for 2030 by the manual clock
    validation.set_required_spec_claims(&["iss", "iat", "exp"]);
    let decoded = jsonwebtoken::decode::<Claims>(
        jwt,
        &jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).unwrap(),
        &validation,
    )
    .unwrap();
    let now = 1_893_456_000; // 2030-01-01T00:00:00Z
    assert_eq!(decoded.header.alg, jsonwebtoken::Algorithm::RS256);
    assert_eq!(decoded.claims.iss, "123456");
    assert_eq!((decoded.claims.iat, decoded.claims.exp), (now - 60, now + 540));
}

#[tokio::test]
async fn a_token_beyond_the_request_is_revoked_and_refused() {
    let broader = |body: &str| Reply::status(201).body(body.replace("TOKEN", TOKEN));
    let receiver = Receiver::start([
        broader(r#"{"token":"TOKEN","expires_at":"2030-01-01T00:00:00Z","permissions":{"contents":"write","metadata":"write"}}"#),
        Reply::status(204),
        broader(r#"{"token":"TOKEN","expires_at":"2030-01-01T00:00:00Z","permissions":{"contents":"read","actions":"read"}}"#),
        Reply::status(204),
        broader(r#"{"token":"TOKEN","expires_at":"2030-01-01T00:00:00Z","repository_selection":"all"}"#),
        Reply::status(401),
        broader(r#"{"token":"TOKEN","expires_at":"2030-01-01T00:00:00Z","repositories":[{"name":"secrets"}]}"#),
        Reply::status(500),
        broader(r#"{"token":"TOKEN"}"#),
        Reply::status(204),
    ])
    .await;
    let (c, _key) = connector(&receiver);
    let grant = action(Operation::Grant, &["contents:read"], None);
    let mut messages = Vec::new();
    for expected in [
        "granted permissions beyond the request: [contents:write metadata:write]",
        "granted permissions beyond the request: [actions:read]",
        "granted all of the installation's repositories",
        "granted repositories beyond the request: [secrets]",
        "without `expires_at`",
    ] {
        let err = c.execute(&grant).await.unwrap_err();
        let ConnectorError::Permanent { message } = &err else { panic!("{err:?}") };
        assert!(message.contains(expected), "{message}");
        messages.push(message.clone());
    }
    assert!(messages[0].ends_with("the token was revoked"), "{}", messages[0]);
    assert!(messages[2].ends_with("the token was revoked"), "401 on revocation: already gone: {}", messages[2]);
    assert!(messages[3].contains("revoking the token failed too"), "{}", messages[3]);
    assert_clean(&messages.join(" "));

    // Each revocation carried the minted token itself.
    let requests = receiver.requests();
    assert_eq!(requests.len(), 10);
    for revocation in requests.iter().skip(1).step_by(2) {
        assert_eq!(revocation.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert!(revocation.body.is_empty());
    }
}

#[tokio::test]
async fn failures_are_classified_and_never_show_a_token_or_the_jwt() {
    let receiver = Receiver::start([
        Reply::status(503).header("retry-after", "7").body(r#"{"message":"Service unavailable"}"#),
        Reply::status(429),
        Reply::status(403).header("x-ratelimit-remaining", "0").header("x-ratelimit-reset", "1893456120"),
        Reply::status(403).body(r#"{"message":"Resource not accessible by integration"}"#),
        Reply::status(422).body(
            r#"{"message":"The permissions requested are not granted to this installation.","documentation_url":"https://docs.github.com/rest"}"#,
        ),
        Reply::status(401).body(r#"{"message":"'Expiration time' claim ('exp') is too far in the future"}"#),
        Reply::status(404).body(r#"{"message":"Not Found"}"#),
        Reply::status(302).header("location", "http://127.0.0.1:9/x"),
        Reply::status(201).body("not json CANARY"),
        Reply::status(500).body(format!(r#"{{"message":"bad token {TOKEN}"}}"#)),
    ])
    .await;
    let (c, _key) = connector(&receiver);
    let clock = ManualClock::new(chrono::DateTime::from_timestamp(1_893_456_000, 0).unwrap());
    let c = c.with_clock(std::sync::Arc::new(clock));
    let grant = action(Operation::Grant, &["contents:read"], None);
    let mut results = Vec::new();
    for _ in 0..9 {
        results.push(c.execute(&grant).await.unwrap_err());
    }
    let token = SecretString::from(TOKEN);
    let echoed = c.execute_with_credential(&action(Operation::Revoke, &[], None), Some(&token)).await.unwrap_err();
    results.push(echoed);

    let retryable = |i: usize, wait: Option<u64>| {
        let ConnectorError::Retryable { message, retry_after } = &results[i] else { panic!("{i}: {:?}", results[i]) };
        assert_eq!(*retry_after, wait.map(Duration::from_secs), "{i}: {message}");
        message.clone()
    };
    let permanent = |i: usize| {
        let ConnectorError::Permanent { message } = &results[i] else { panic!("{i}: {:?}", results[i]) };
        message.clone()
    };
    let host = format!("github {}", receiver.addr);
    assert_eq!(
        retryable(0, Some(7)),
        format!("{host}: creating an installation access token answered 503: Service unavailable")
    );
    retryable(1, None);
    assert!(retryable(2, Some(120)).ends_with("answered 403"));
    assert!(permanent(3).ends_with("answered 403: Resource not accessible by integration"));
    assert!(permanent(4).ends_with("answered 422: The permissions requested are not granted to this installation."));
    assert!(permanent(5).contains("answered 401: 'Expiration time'") && permanent(5).contains("refused the App's JWT"));
    assert!(permanent(6).contains("answered 404: Not Found (no such installation"));
    assert!(permanent(7).contains("answered 302; redirects are not followed"));
    assert!(permanent(8).contains("the answer is not an installation token"));
    assert_eq!(retryable(9, None), format!("{host}: revoking an installation access token answered 500"));
    assert_clean(&format!("{results:?} {}", results.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")));
}

#[tokio::test]
async fn a_timeout_is_retryable() {
    let receiver = Receiver::start([Reply::status(201).delay(Duration::from_secs(5))]).await;
    let key = key_file(KEY_PKCS1);
    let mut s = settings(&format!("http://{}", receiver.addr), &key);
    s.timeout = Some(Timeout::new(Duration::from_millis(200)).unwrap());
    let c = GithubAppConnector::new(&s, &http()).unwrap();
    let err = c.execute(&action(Operation::Grant, &["contents:read"], None)).await.unwrap_err();
    let ConnectorError::Retryable { message, .. } = &err else { panic!("{err:?}") };
    assert!(message.ends_with("timed out after 200ms"), "{message}");
}

#[tokio::test]
async fn revoke_and_verify_use_the_held_token_and_fail_without_one() {
    let receiver = Receiver::start([
        Reply::status(204),
        Reply::status(401).body(r#"{"message":"Bad credentials"}"#),
        Reply::status(401),
        Reply::status(200).body(r#"{"total_count":1,"repositories":[]}"#),
        Reply::status(200).body(r#"{"total_count":1,"repositories":[]}"#),
        Reply::status(200).body(r#"{"total_count":3,"repositories":[]}"#),
        Reply::status(401),
    ])
    .await;
    let (c, _key) = connector(&receiver);
    let token = SecretString::from(TOKEN);
    let revoke = action(Operation::Revoke, &["contents:read"], None);
    let present = action(Operation::Verify, &["contents:read"], Some(Expect::Present));
    let absent = action(Operation::Verify, &["contents:read"], Some(Expect::Absent));

    // Nothing to act with: refused before any call.
    for a in [&revoke, &present, &absent] {
        let err = c.execute(a).await.unwrap_err();
        assert!(err.to_string().contains("needs the installation token minted for grant"), "{err}");
    }
    assert!(receiver.requests().is_empty());

    // Revoked (204), then already invalid (401): both done.
    for _ in 0..2 {
        let done = c.execute_with_credential(&revoke, Some(&token)).await.unwrap();
        assert!(matches!(done, ActionOutcome::Done { minted: None, reference: Some(_) }), "{done:?}");
    }
    let done = ActionOutcome::Done { reference: None, minted: None };
    assert_eq!(c.execute_with_credential(&absent, Some(&token)).await.unwrap(), done);
    let err = c.execute_with_credential(&absent, Some(&token)).await.unwrap_err();
    assert!(err.to_string().contains("still works: the access is not gone"), "{err}");
    assert_eq!(c.execute_with_credential(&present, Some(&token)).await.unwrap(), done);
    let err = c.execute_with_credential(&present, Some(&token)).await.unwrap_err();
    assert!(err.to_string().contains("reaches 3 repositories, more than the grant's 1"), "{err}");
    let err = c.execute_with_credential(&present, Some(&token)).await.unwrap_err();
    assert!(err.to_string().contains("refused (401: expired or revoked)"), "{err}");

    let requests = receiver.requests();
    assert_eq!(requests.len(), 7);
    for r in &requests {
        assert_eq!(r.header("authorization"), Some(format!("Bearer {TOKEN}").as_str()));
        assert_eq!(r.header("x-github-api-version"), Some(API_VERSION));
    }
}

#[tokio::test]
async fn scopes_outside_the_integration_or_the_rule_are_refused_without_a_call() {
    let receiver = Receiver::start([]).await;
    let (c, _key) = connector(&receiver);
    for (scopes, why) in [
        (&["contents:read", "actions:write"][..], "scopes [actions:write] are not among the integration's scopes"),
        (&[][..], "names no scope"),
        (&["repo:widgets"][..], "names no permission"),
    ] {
        let err = c.execute(&action(Operation::Grant, scopes, None)).await.unwrap_err();
        let ConnectorError::Permanent { message } = &err else { panic!("{err:?}") };
        assert!(message.contains(why), "{scopes:?}: {message}");
        let renew = c.execute_with_credential(&action(Operation::Renew, scopes, None), None).await.unwrap_err();
        assert!(renew.to_string().contains(why), "{renew}");
    }
    assert!(receiver.requests().is_empty());
}
