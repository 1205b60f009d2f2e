//! The `oauth2` connector: mints short-lived, down-scoped access tokens with the client-credentials
//! grant (RFC 6749 §4.4), revokes them (RFC 7009) and checks them by introspection (RFC 7662), at
//! any authorization server that speaks those RFCs (Okta, Keycloak, Salesforce, Ping, Curity, …).
//!
//! The connector keeps no state. A `grant` mints a token and returns it as
//! `ActionOutcome::Done::minted`, for the engine to hand over once; the `reference` is only the
//! token's fingerprint (`sha256:` and 16 hex digits), never the token. Revocation and
//! introspection need the token itself, so `renew`, `rotate`, `revoke` and `verify` run through
//! [`Connector::execute_with_credential`] with the token the engine kept, sealed, for the grant
//! ([`Connector::needs_credential`] says so); without it they fail permanently rather than report
//! a revocation that was not made.
//!
//! The three calls are form POSTs made with the shared [`crate::http::client`]: the `oauth2`
//! crate (5.0) pins reqwest 0.12, has no `private_key_jwt`, refuses `http://` revocation URLs
//! even on loopback, hides the HTTP status that tells a retryable failure from a permanent one,
//! and keeps raw response bodies (which hold tokens) in its error values. Client assertions
//! (RFC 7523) are signed with `jsonwebtoken` on ring. Client authentication per integration:
//! `client_secret_basic` (id and secret form-encoded before base64, RFC 6749 §2.3.1),
//! `client_secret_post` or `private_key_jwt` (a fresh `jti` on every call: servers accept each
//! assertion once).
//!
//! Errors: 408, 429, 5xx, timeouts and connection failures are retryable (`Retry-After` honoured on
//! 429/503); an OAuth error answer (`invalid_client`, `invalid_scope`, …) and any other status are
//! permanent. Messages carry the endpoint's host, the status and the RFC 6749 error code and
//! description, never a token, a secret or a URL path.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_workflows::Operation;

use super::{ActionOutcome, Connector, Minted};
use crate::action::{ConnectorAction, Expect};
use crate::clock::{Clock, SystemClock};
use crate::outbound::{ConfigError, ConnectorError, MAX_RETRY_AFTER, Redacted, Timeout, read_secret_file};

/// Timeout of one call when the settings name none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest lifetime of a minted token when the settings name none.
pub const DEFAULT_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Longest `max_token_lifetime` accepted: a longer-lived token is not "just in time".
pub const MAX_MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Lifetime of a client assertion (RFC 7523 `exp - iat`).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
/// Most bytes of an answer read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// How the client authenticates to the authorization server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// HTTP Basic with the form-encoded client id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A JWT signed with the client's private key (RFC 7523, OpenID Connect Core §9).
    PrivateKeyJwt,
}

impl AuthMethod {
    /// The name as written in the settings.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// Signature algorithm of `private_key_jwt` client assertions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    /// RSASSA-PKCS1-v1_5 with SHA-256 (an RSA key of at least 2048 bits).
    #[default]
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// ECDSA on P-256 with SHA-256 (a PKCS#8 key).
    ES256,
}

impl SigningAlg {
    fn algorithm(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::PS256 => jsonwebtoken::Algorithm::PS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// Settings of the oauth2 connector (`connector = { type = "oauth2", … }`).
///
/// `Debug` shows no secret and no URL path.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Settings {
    /// Token endpoint (RFC 6749 §3.2), `https://` (`http://` only on loopback).
    pub token_url: String,
    /// Revocation endpoint (RFC 7009). Required: a grant Tollgate cannot end is not just in time.
    pub revocation_url: String,
    /// Introspection endpoint (RFC 7662). With it, `verify` is answered by the server and drift
    /// reconciliation checks this integration's grants; without it `verify` fails.
    #[serde(default)]
    pub introspection_url: Option<String>,
    /// The client's id at the authorization server.
    pub client_id: String,
    /// The client secret itself (prefer `client_secret_file` or `client_secret_env`).
    #[serde(default)]
    pub client_secret: Option<SecretString>,
    /// A file holding the client secret; one trailing newline is ignored.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// `client_secret_basic` (default), `client_secret_post` or `private_key_jwt`.
    #[serde(default)]
    pub auth_method: AuthMethod,
    /// `private_key_jwt`: the PEM private key (RSA: PKCS#1 or PKCS#8; EC P-256: PKCS#8).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// `private_key_jwt`: the `kid` header naming the key registered at the server.
    #[serde(default)]
    pub key_id: Option<String>,
    /// `private_key_jwt`: `RS256` (default), `PS256` or `ES256`.
    #[serde(default)]
    pub signing_alg: Option<SigningAlg>,
    /// `private_key_jwt`: the assertion's `aud`; default `token_url` (OpenID Connect Core §9).
    #[serde(default)]
    pub assertion_audience: Option<String>,
    /// Sent as the `audience` parameter of the token request (Auth0, some gateways).
    #[serde(default)]
    pub audience: Option<String>,
    /// Longest lifetime a minted token may have, e.g. `"15m"` (default 1 h, at most 24 h). A
    /// longer-lived token is revoked at once and the grant fails: shorten the lifetime at the
    /// server.
    #[serde(default)]
    pub max_token_lifetime: Option<String>,
    /// Timeout of one call: `"10s"`, `"500ms"` or a number of seconds. Default 10 s.
    #[serde(default)]
    pub timeout: Option<Timeout>,
    /// The scopes that may be minted: the integration's `scopes`, filled in when the directory is
    /// loaded (not a configuration key). A grant for any other scope is refused.
    #[serde(skip)]
    pub integration_scopes: Vec<String>,
}

impl fmt::Debug for OAuth2Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuth2Settings")
            .field("token_url", &shown_url(&self.token_url))
            .field("revocation_url", &shown_url(&self.revocation_url))
            .field("introspection_url", &self.introspection_url.as_deref().map(shown_url))
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| Redacted))
            .field("client_secret_file", &self.client_secret_file)
            .field("client_secret_env", &self.client_secret_env)
            .field("auth_method", &self.auth_method)
            .field("private_key_file", &self.private_key_file)
            .field("key_id", &self.key_id)
            .field("signing_alg", &self.signing_alg)
            .field("audience", &self.audience)
            .field("max_token_lifetime", &self.max_token_lifetime)
            .field("timeout", &self.timeout)
            .field("integration_scopes", &self.integration_scopes)
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]`: safe to print.
fn shown_url(url: &str) -> String {
    Url::parse(url).map_or_else(|_| "[invalid url]".to_owned(), |u| host_of(&u))
}

fn host_of(url: &Url) -> String {
    match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or("")),
        None => url.host_str().unwrap_or("").to_owned(),
    }
}

/// How the connector authenticates, resolved at start-up.
enum ClientAuth {
    Basic(SecretString),
    Post(SecretString),
    Jwt { key: jsonwebtoken::EncodingKey, alg: SigningAlg, key_id: Option<String>, audience: String },
}

/// Mints, revokes and introspects access tokens at an OAuth 2.0 authorization server.
pub struct OAuth2Connector {
    token_url: Url,
    revocation_url: Url,
    introspection_url: Option<Url>,
    client_id: String,
    auth: ClientAuth,
    audience: Option<String>,
    scopes: BTreeSet<String>,
    max_lifetime: Duration,
    timeout: Duration,
    http: reqwest::Client,
    clock: std::sync::Arc<dyn Clock>,
}

impl fmt::Debug for OAuth2Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let method = match self.auth {
            ClientAuth::Basic(_) => AuthMethod::ClientSecretBasic,
            ClientAuth::Post(_) => AuthMethod::ClientSecretPost,
            ClientAuth::Jwt { .. } => AuthMethod::PrivateKeyJwt,
        };
        f.debug_struct("OAuth2Connector")
            .field("token_host", &host_of(&self.token_url))
            .field("client_id", &self.client_id)
            .field("auth_method", &method)
            .field("scopes", &self.scopes)
            .field("max_lifetime", &self.max_lifetime)
            .finish_non_exhaustive()
    }
}

/// Which endpoint a call goes to (for messages).
#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Token,
    Revocation,
    Introspection,
}

impl Endpoint {
    fn name(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Revocation => "revocation",
            Self::Introspection => "introspection",
        }
    }
}

/// A 400/401 answer carrying an RFC 6749 §5.2 error.
#[derive(Debug)]
struct Refusal {
    status: u16,
    error: Option<String>,
    description: Option<String>,
}

/// RFC 6749 §5.1, only what is used. `Debug` is never derived: the token would show.
#[derive(Deserialize)]
struct TokenReply {
    access_token: SecretString,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    refresh_token: Option<SecretString>,
}

/// RFC 7662 §2.2, only what is checked.
#[derive(Debug, Deserialize)]
struct Introspection {
    active: bool,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
}

/// RFC 7523 §3 client assertion claims.
#[derive(Serialize)]
struct Assertion<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    iat: i64,
    exp: i64,
}

impl OAuth2Connector {
    /// Validates `settings`, reads the client secret or private key, and binds the shared HTTP
    /// client ([`crate::http::client`]).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field; never containing a secret.
    pub fn new(settings: &OAuth2Settings, http: &reqwest::Client) -> Result<Self, ConfigError> {
        Self::new_with_env(settings, http, |name| std::env::var(name))
    }

    fn new_with_env(
        settings: &OAuth2Settings,
        http: &reqwest::Client,
        env: impl FnOnce(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Self, ConfigError> {
        let token_url = endpoint_url("token_url", &settings.token_url)?;
        let revocation_url = endpoint_url("revocation_url", &settings.revocation_url)?;
        let introspection_url =
            settings.introspection_url.as_deref().map(|u| endpoint_url("introspection_url", u)).transpose()?;
        let client_id = settings.client_id.trim();
        if client_id.is_empty() || client_id.chars().any(char::is_control) {
            return Err(ConfigError::invalid("client_id", "give the client's id at the authorization server"));
        }
        let auth = match settings.auth_method {
            AuthMethod::ClientSecretBasic | AuthMethod::ClientSecretPost => {
                for (field, set) in [
                    ("private_key_file", settings.private_key_file.is_some()),
                    ("key_id", settings.key_id.is_some()),
                    ("signing_alg", settings.signing_alg.is_some()),
                    ("assertion_audience", settings.assertion_audience.is_some()),
                ] {
                    if set {
                        return Err(ConfigError::invalid(field, "only used with auth_method = \"private_key_jwt\""));
                    }
                }
                let secret = client_secret(settings, env)?;
                if settings.auth_method == AuthMethod::ClientSecretBasic {
                    ClientAuth::Basic(secret)
                } else {
                    ClientAuth::Post(secret)
                }
            }
            AuthMethod::PrivateKeyJwt => {
                for (field, set) in [
                    ("client_secret", settings.client_secret.is_some()),
                    ("client_secret_file", settings.client_secret_file.is_some()),
                    ("client_secret_env", settings.client_secret_env.is_some()),
                ] {
                    if set {
                        return Err(ConfigError::invalid(
                            field,
                            "not used with auth_method = \"private_key_jwt\" (the private key authenticates)",
                        ));
                    }
                }
                let Some(path) = &settings.private_key_file else {
                    return Err(ConfigError::invalid(
                        "private_key_file",
                        "auth_method = \"private_key_jwt\" needs the client's PEM private key",
                    ));
                };
                let alg = settings.signing_alg.unwrap_or_default();
                let key = signing_key(path, alg)?;
                let key_id = settings.key_id.as_deref().map(str::trim).map(str::to_owned);
                if key_id.as_deref().is_some_and(|k| k.is_empty() || k.chars().any(char::is_control)) {
                    return Err(ConfigError::invalid("key_id", "must not be blank; omit it to send no `kid`"));
                }
                let audience = match &settings.assertion_audience {
                    Some(aud) if aud.trim().is_empty() => {
                        return Err(ConfigError::invalid("assertion_audience", "must not be blank"));
                    }
                    Some(aud) => aud.trim().to_owned(),
                    None => token_url.to_string(),
                };
                ClientAuth::Jwt { key, alg, key_id, audience }
            }
        };
        if settings.audience.as_deref().is_some_and(|a| a.trim().is_empty()) {
            return Err(ConfigError::invalid("audience", "must not be blank; omit it to send none"));
        }
        let max_lifetime = match settings.max_token_lifetime.as_deref().map(str::trim) {
            None => DEFAULT_MAX_TOKEN_LIFETIME,
            Some(text) => {
                let d = humantime::parse_duration(text).map_err(|e| ConfigError::Invalid {
                    field: "max_token_lifetime",
                    reason: format!("{text:?} is not a duration ({e}); write e.g. \"15m\""),
                })?;
                if d < Duration::from_secs(1) || d > MAX_MAX_TOKEN_LIFETIME {
                    return Err(ConfigError::invalid("max_token_lifetime", "between 1s and 24h"));
                }
                d
            }
        };
        let scopes: BTreeSet<String> = settings.integration_scopes.iter().cloned().collect();
        if let Some(bad) = scopes.iter().find(|s| !valid_scope(s)) {
            return Err(ConfigError::Invalid {
                field: "scopes",
                reason: format!(
                    "{bad:?} is not an OAuth scope (RFC 6749 §3.3: printable ASCII, no space, `\"` or `\\`)"
                ),
            });
        }
        let connector = Self {
            token_url,
            revocation_url,
            introspection_url,
            client_id: client_id.to_owned(),
            auth,
            audience: settings.audience.as_deref().map(str::trim).map(str::to_owned),
            scopes,
            max_lifetime,
            timeout: settings.timeout.map_or(DEFAULT_TIMEOUT, Timeout::as_duration),
            http: http.clone(),
            clock: std::sync::Arc::new(SystemClock),
        };
        if let ClientAuth::Jwt { .. } = connector.auth {
            // A key that does not fit the algorithm fails now, not at the first grant.
            connector.assertion().map_err(|_| ConfigError::Invalid {
                field: "private_key_file",
                reason: format!("the key cannot sign {:?} assertions", settings.signing_alg.unwrap_or_default()),
            })?;
        }
        Ok(connector)
    }

    /// Uses `clock` for assertion times and token expiry instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A fresh client assertion (RFC 7523), unique `jti`.
    fn assertion(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let ClientAuth::Jwt { key, alg, key_id, audience } = &self.auth else {
            return Ok(String::new());
        };
        let now = self.clock.now().timestamp();
        let mut header = jsonwebtoken::Header::new(alg.algorithm());
        header.kid.clone_from(key_id);
        let claims = Assertion {
            iss: &self.client_id,
            sub: &self.client_id,
            aud: audience,
            jti: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + i64::try_from(ASSERTION_LIFETIME.as_secs()).unwrap_or(60),
        };
        jsonwebtoken::encode(&header, &claims, key)
    }

    /// POSTs `form` plus client authentication to `endpoint`; the body of a 200, a 400/401's
    /// RFC 6749 error, or a classified failure.
    async fn post(
        &self,
        endpoint: Endpoint,
        form: &[(&str, &str)],
    ) -> Result<Result<Vec<u8>, Refusal>, ConnectorError> {
        let url = match endpoint {
            Endpoint::Token => &self.token_url,
            Endpoint::Revocation => &self.revocation_url,
            Endpoint::Introspection => self
                .introspection_url
                .as_ref()
                .ok_or_else(|| permanent_msg("no `introspection_url` is configured: cannot verify"))?,
        };
        let what = format!("oauth2 {} endpoint {}", endpoint.name(), host_of(url));
        let mut pairs: Vec<(&str, std::borrow::Cow<'_, str>)> =
            form.iter().map(|(k, v)| (*k, std::borrow::Cow::Borrowed(*v))).collect();
        let mut request = self
            .http
            .post(url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-www-form-urlencoded"))
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        match &self.auth {
            ClientAuth::Basic(secret) => {
                use base64::Engine as _;
                let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                let pair = format!("{}:{}", encode(&self.client_id), encode(secret.expose_secret()));
                let mut value =
                    HeaderValue::from_str(&format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
                        .map_err(|_| {
                            permanent_msg(&format!("{what}: the client credentials are not a usable header"))
                        })?;
                value.set_sensitive(true);
                request = request.header(AUTHORIZATION, value);
            }
            ClientAuth::Post(secret) => {
                pairs.push(("client_id", self.client_id.as_str().into()));
                pairs.push(("client_secret", secret.expose_secret().into()));
            }
            ClientAuth::Jwt { .. } => {
                let assertion = self
                    .assertion()
                    .map_err(|e| permanent_msg(&format!("{what}: cannot sign the client assertion: {e}")))?;
                pairs.push(("client_id", self.client_id.as_str().into()));
                pairs.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                pairs.push(("client_assertion", assertion.into()));
            }
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_ref())))
            .finish();
        let response = request.body(body).send().await.map_err(|e| self.transport_error(&what, &e))?;
        let status = response.status();
        tracing::debug!(oauth2.endpoint = endpoint.name(), oauth2.host = %host_of(url), http.status = status.as_u16(), "oauth2 answered");
        match status.as_u16() {
            200 => {
                let body = read_limited(response)
                    .await
                    .map_err(|e| retryable_msg(&format!("{what}: reading the answer failed: {e}")))?;
                Ok(Ok(body))
            }
            400 | 401 => {
                let body = read_limited(response).await.unwrap_or_default();
                Ok(Err(refusal(status, &body)))
            }
            code @ (408 | 429 | 500..=599) => {
                let retry_after = matches!(code, 429 | 503).then(|| retry_after(response.headers())).flatten();
                Err(ConnectorError::Retryable { message: format!("{what} answered {code}"), retry_after })
            }
            code @ 300..=399 => Err(permanent_msg(&format!(
                "{what} answered {code}; redirects are not followed, configure the final URL"
            ))),
            code => Err(permanent_msg(&format!("{what} answered {code}"))),
        }
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> ConnectorError {
        if e.is_builder() {
            return permanent_msg(&format!("{what}: invalid request"));
        }
        let message = if e.is_timeout() {
            format!("{what} timed out after {}", humantime::format_duration(self.timeout))
        } else {
            let kind = if e.is_connect() { "connection failed" } else { "request failed" };
            match root_cause(e) {
                Some(cause) => format!("{what}: {kind}: {cause}"),
                None => format!("{what}: {kind}"),
            }
        };
        ConnectorError::Retryable { message, retry_after: None }
    }

    /// Client-credentials token request for exactly `scopes`.
    async fn mint(&self, scopes: &BTreeSet<String>) -> Result<Minted, ConnectorError> {
        let scope = scopes.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
        let mut form = vec![("grant_type", "client_credentials"), ("scope", scope.as_str())];
        if let Some(audience) = &self.audience {
            form.push(("audience", audience));
        }
        let issued_at = self.clock.now();
        let body =
            self.post(Endpoint::Token, &form).await?.map_err(|r| refused(Endpoint::Token, &self.token_url, &r))?;
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            permanent_msg(&format!(
                "oauth2 token endpoint {}: the answer is not an RFC 6749 token response ({:?} error at line {} column {})",
                host_of(&self.token_url),
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let token = reply.access_token;
        if token.expose_secret().is_empty() {
            return Err(permanent_msg("the token endpoint returned an empty access_token"));
        }
        if let Some(refresh) = reply.refresh_token {
            // Renewal goes through Tollgate's approval, so nobody keeps a refresh token.
            if let Err(e) = self.revoke(&refresh, "refresh_token").await {
                tracing::warn!(error = %e, "could not revoke the refresh token issued with a client-credentials token");
            }
        }
        // RFC 6749 §5.1: `scope` is omitted when identical to the request.
        let granted: BTreeSet<String> =
            reply.scope.map_or_else(|| scopes.clone(), |s| s.split_whitespace().map(str::to_owned).collect());
        if &granted != scopes {
            return Err(self
                .refuse(
                    &token,
                    format!(
                        "the authorization server granted scopes [{}] for the requested [{}]; configure the client \
                 so that it grants exactly what is asked (no default scopes)",
                        join(&granted),
                        join(scopes)
                    ),
                )
                .await);
        }
        let lifetime = match reply.expires_in.as_ref().and_then(seconds) {
            Some(secs) => Some(secs),
            None if self.introspection_url.is_some() => match self.introspect(&token).await {
                Ok(i) => i.exp.map(|exp| exp.saturating_sub(issued_at.timestamp()).max(0).cast_unsigned()),
                Err(e) => return Err(self.refuse(&token, format!("cannot learn the token's lifetime: {e}")).await),
            },
            None => None,
        };
        let Some(lifetime) = lifetime else {
            return Err(self.refuse(&token,
                "the token's lifetime is unknown (no `expires_in`, no introspection `exp`): Tollgate hands out only \
                 tokens that expire"
                    .to_owned(),
            )
            .await);
        };
        let lifetime = Duration::from_secs(lifetime);
        if lifetime > self.max_lifetime {
            return Err(self
                .refuse(
                    &token,
                    format!(
                        "the token lives {}, longer than max_token_lifetime ({}): shorten the access-token lifetime \
                 at the authorization server",
                        humantime::format_duration(lifetime),
                        humantime::format_duration(self.max_lifetime)
                    ),
                )
                .await);
        }
        let expires_at = issued_at + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::zero());
        Ok(Minted { value: token, expires_at: Some(expires_at) })
    }

    /// A permanent error for a minted token that cannot be handed out, after revoking it.
    async fn refuse(&self, token: &SecretString, problem: String) -> ConnectorError {
        let outcome = match self.revoke(token, "access_token").await {
            Ok(()) => "the token was revoked".to_owned(),
            Err(e) => format!("revoking the token failed too ({e})"),
        };
        permanent_msg(&format!("{problem}; {outcome}"))
    }

    /// RFC 7009. An answer of 200 (the RFC's answer for unknown and already-invalid tokens too)
    /// or an `invalid_token` error means the token no longer works.
    async fn revoke(&self, token: &SecretString, hint: &str) -> Result<(), ConnectorError> {
        let form = [("token", token.expose_secret()), ("token_type_hint", hint)];
        match self.post(Endpoint::Revocation, &form).await? {
            Ok(_) => Ok(()),
            Err(r) if r.error.as_deref() == Some("invalid_token") => Ok(()),
            Err(r) => Err(refused(Endpoint::Revocation, &self.revocation_url, &r)),
        }
    }

    /// RFC 7662.
    async fn introspect(&self, token: &SecretString) -> Result<Introspection, ConnectorError> {
        let form = [("token", token.expose_secret()), ("token_type_hint", "access_token")];
        let url = self.introspection_url.as_ref().unwrap_or(&self.token_url);
        let body =
            self.post(Endpoint::Introspection, &form).await?.map_err(|r| refused(Endpoint::Introspection, url, &r))?;
        serde_json::from_slice(&body).map_err(|e| {
            permanent_msg(&format!(
                "oauth2 introspection endpoint {}: the answer is not an RFC 7662 response ({:?} error)",
                host_of(url),
                e.classify()
            ))
        })
    }

    /// The grant's scopes, checked against the integration's.
    fn requested_scopes(&self, action: &ConnectorAction) -> Result<BTreeSet<String>, ConnectorError> {
        if action.scopes.is_empty() {
            return Err(permanent_msg("the grant names no scope"));
        }
        let requested: BTreeSet<String> = action.scopes.iter().cloned().collect();
        let refused: Vec<&str> =
            requested.iter().filter(|s| !self.scopes.contains(*s) || !valid_scope(s)).map(String::as_str).collect();
        if !refused.is_empty() {
            return Err(permanent_msg(&format!(
                "scopes [{}] are not among the integration's scopes [{}]",
                refused.join(" "),
                join(&self.scopes)
            )));
        }
        Ok(requested)
    }

    async fn verify(&self, action: &ConnectorAction, token: &SecretString) -> Result<ActionOutcome, ConnectorError> {
        let i = self.introspect(token).await?;
        let now = self.clock.now().timestamp();
        match action.expect.unwrap_or(Expect::Present) {
            Expect::Absent if i.active => {
                Err(permanent_msg("the token is still active at the authorization server: the access is not gone"))
            }
            Expect::Absent => Ok(ActionOutcome::Done { reference: None, minted: None }),
            Expect::Present => {
                if !i.active || i.exp.is_some_and(|exp| exp <= now) {
                    return Err(permanent_msg(
                        "the token is not active at the authorization server (expired or revoked there)",
                    ));
                }
                if i.client_id.as_deref().is_some_and(|c| c != self.client_id) {
                    return Err(permanent_msg("the token belongs to another client"));
                }
                let granted: BTreeSet<String> =
                    i.scope.as_deref().unwrap_or("").split_whitespace().map(str::to_owned).collect();
                let allowed: BTreeSet<String> = action.scopes.iter().cloned().collect();
                let extra: Vec<&str> = granted.difference(&allowed).map(String::as_str).collect();
                if !extra.is_empty() {
                    return Err(permanent_msg(&format!(
                        "the token carries scopes beyond the grant: [{}]",
                        extra.join(" ")
                    )));
                }
                Ok(ActionOutcome::Done { reference: None, minted: None })
            }
        }
    }
}

#[async_trait::async_trait]
impl Connector for OAuth2Connector {
    fn kind(&self) -> &'static str {
        "oauth2"
    }

    fn verifies(&self) -> bool {
        self.introspection_url.is_some()
    }

    fn needs_credential(&self) -> bool {
        true
    }

    async fn execute(&self, action: &ConnectorAction) -> Result<ActionOutcome, ConnectorError> {
        self.execute_with_credential(action, None).await
    }

    async fn execute_with_credential(
        &self,
        action: &ConnectorAction,
        credential: Option<&SecretString>,
    ) -> Result<ActionOutcome, ConnectorError> {
        let held = || {
            credential.ok_or_else(|| {
                permanent_msg(&format!(
                    "{} needs the token minted for grant {}, and the engine holds none for it",
                    operation_name(action.operation),
                    action.grant_id
                ))
            })
        };
        match action.operation {
            Operation::Grant => {
                let scopes = self.requested_scopes(action)?;
                let minted = self.mint(&scopes).await?;
                Ok(ActionOutcome::Done { reference: Some(fingerprint(&minted.value)), minted: Some(minted) })
            }
            Operation::Renew | Operation::Rotate => {
                // Client-credentials tokens are not extended: the old one is revoked, a new one
                // minted. Revoking first keeps a retry from leaving two live tokens. The engine
                // holds no token when the old one has expired: then there is nothing to revoke. A
                // rotation with a grace period keeps the old one: the workflow revokes it later
                // (`version: previous`).
                let scopes = self.requested_scopes(action)?;
                let keep = action.operation == Operation::Rotate && action.keep_previous;
                if let Some(old) = credential.filter(|_| !keep) {
                    self.revoke(old, "access_token").await?;
                }
                let minted = self.mint(&scopes).await?;
                Ok(ActionOutcome::Done { reference: Some(fingerprint(&minted.value)), minted: Some(minted) })
            }
            Operation::Revoke => {
                let token = held()?;
                self.revoke(token, "access_token").await?;
                Ok(ActionOutcome::Done { reference: Some(fingerprint(token)), minted: None })
            }
            Operation::Verify => self.verify(action, held()?).await,
        }
    }
}

fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Grant => "grant",
        Operation::Renew => "renew",
        Operation::Revoke => "revoke",
        Operation::Rotate => "rotate",
        Operation::Verify => "verify",
    }
}

/// `sha256:` and the first 16 hex digits of the token's SHA-256: names a token in logs and the
/// audit trail without revealing it.
#[must_use]
pub fn fingerprint(token: &SecretString) -> String {
    let digest = Sha256::digest(token.expose_secret().as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..16])
}

fn join(scopes: &BTreeSet<String>) -> String {
    scopes.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
}

/// RFC 6749 §3.3 scope-token: `%x21 / %x23-5B / %x5D-7E`, at least one.
fn valid_scope(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// `expires_in` as a number of seconds (some servers send a numeric string).
fn seconds(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn endpoint_url(field: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(text.trim()).map_err(|e| ConfigError::Invalid { field, reason: format!("not a valid URL: {e}") })?;
    let host = url.host_str().unwrap_or("");
    if host.is_empty() {
        return Err(ConfigError::invalid(field, "the URL has no host"));
    }
    let loopback = host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        "http" => return Err(ConfigError::invalid(field, "must be https:// (client secrets and tokens cross it)")),
        _ => return Err(ConfigError::invalid(field, "the scheme must be https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(field, "must not embed credentials; use client_secret_file"));
    }
    Ok(url)
}

fn client_secret(
    settings: &OAuth2Settings,
    env: impl FnOnce(&str) -> Result<String, std::env::VarError>,
) -> Result<SecretString, ConfigError> {
    let (field, secret) = match (&settings.client_secret, &settings.client_secret_file, &settings.client_secret_env) {
        (Some(secret), None, None) => ("client_secret", secret.clone()),
        (None, Some(path), None) => ("client_secret_file", read_secret_file("client_secret_file", path)?),
        (None, None, Some(name)) => {
            let value = env(name).map_err(|e| ConfigError::Invalid {
                field: "client_secret_env",
                reason: match e {
                    std::env::VarError::NotPresent => format!("environment variable {name} is not set"),
                    std::env::VarError::NotUnicode(_) => format!("environment variable {name} is not valid UTF-8"),
                },
            })?;
            ("client_secret_env", SecretString::from(value))
        }
        (None, None, None) => {
            return Err(ConfigError::invalid(
                "client_secret",
                "set one of `client_secret`, `client_secret_file` or `client_secret_env` (or use auth_method = \
                 \"private_key_jwt\")",
            ));
        }
        _ => {
            return Err(ConfigError::invalid(
                "client_secret",
                "set only one of `client_secret`, `client_secret_file` or `client_secret_env`",
            ));
        }
    };
    if secret.expose_secret().is_empty() {
        return Err(ConfigError::invalid(field, "the client secret is empty"));
    }
    Ok(secret)
}

fn signing_key(path: &std::path::Path, alg: SigningAlg) -> Result<jsonwebtoken::EncodingKey, ConfigError> {
    let pem = read_secret_file("private_key_file", path)?;
    let pem = pem.expose_secret().as_bytes();
    let key = match alg {
        SigningAlg::RS256 | SigningAlg::PS256 => jsonwebtoken::EncodingKey::from_rsa_pem(pem),
        SigningAlg::ES256 => jsonwebtoken::EncodingKey::from_ec_pem(pem),
    };
    key.map_err(|_| ConfigError::Invalid {
        field: "private_key_file",
        reason: match alg {
            SigningAlg::RS256 | SigningAlg::PS256 => {
                format!("{} is not an RSA private key in PEM (PKCS#1 or PKCS#8)", path.display())
            }
            SigningAlg::ES256 => format!("{} is not a P-256 private key in PKCS#8 PEM", path.display()),
        },
    })
}

fn refusal(status: StatusCode, body: &[u8]) -> Refusal {
    #[derive(Deserialize)]
    struct Error {
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        error_description: Option<String>,
    }
    // RFC 6749 §5.2: both are printable ASCII without `"` and `\`; anything else is not shown.
    let clean = |s: String, max: usize| {
        let ok =
            !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x20..=0x7E).contains(&b) && b != b'"' && b != b'\\');
        ok.then_some(s)
    };
    let parsed = serde_json::from_slice::<Error>(body).ok();
    Refusal {
        status: status.as_u16(),
        error: parsed.as_ref().and_then(|p| p.error.clone()).and_then(|s| clean(s, 64)),
        description: parsed.and_then(|p| p.error_description).and_then(|s| clean(s, 200)),
    }
}

fn refused(endpoint: Endpoint, url: &Url, r: &Refusal) -> ConnectorError {
    let mut message = format!("oauth2 {} endpoint {} refused ({}", endpoint.name(), host_of(url), r.status);
    if let Some(error) = &r.error {
        message.push(' ');
        message.push_str(error);
    }
    if let Some(description) = &r.description {
        message.push_str(": ");
        message.push_str(description);
    }
    message.push(')');
    ConnectorError::Permanent { message }
}

pub(super) fn permanent_msg(message: &str) -> ConnectorError {
    ConnectorError::Permanent { message: message.to_owned() }
}

pub(super) fn retryable_msg(message: &str) -> ConnectorError {
    ConnectorError::Retryable { message: message.to_owned(), retry_after: None }
}

pub(super) async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, String> {
    let limit = u64::try_from(MAX_RESPONSE_BYTES).unwrap_or(u64::MAX);
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(format!("longer than {MAX_RESPONSE_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| root_cause(&e).unwrap_or_else(|| "cut off".to_owned()))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("longer than {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The innermost error below reqwest's own (reqwest's outermost layer prints the URL).
pub(super) fn root_cause(e: &reqwest::Error) -> Option<String> {
    let mut cause = std::error::Error::source(e)?;
    while let Some(next) = cause.source() {
        cause = next;
    }
    Some(cause.to_string())
}

/// `Retry-After` in delay-seconds form, capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX)).min(MAX_RETRY_AFTER))
}

/// Settings for tests: `client_secret_basic` with `secret`, endpoints under `base`.
#[cfg(test)]
pub(crate) fn test_settings(base: &str, secret: &str) -> OAuth2Settings {
    OAuth2Settings {
        token_url: format!("{base}/token"),
        revocation_url: format!("{base}/token/revocation"),
        introspection_url: Some(format!("{base}/token/introspection")),
        client_id: "tollgate".to_owned(),
        client_secret: Some(SecretString::from(secret)),
        client_secret_file: None,
        client_secret_env: None,
        auth_method: AuthMethod::ClientSecretBasic,
        private_key_file: None,
        key_id: None,
        signing_alg: None,
        assertion_audience: None,
        audience: None,
        max_token_lifetime: None,
        timeout: None,
        integration_scopes: vec!["billing:read".to_owned(), "billing:write".to_owned()],
    }
}

#[cfg(test)]
mod tests;
