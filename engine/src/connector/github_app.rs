//! The `github_app` connector: mints GitHub App installation access tokens restricted to a grant's
//! repositories and permissions, revokes them, and checks that a revoked one no longer works.
//!
//! GitHub (and GitHub Enterprise Server, `https://HOST/api/v3`) issues an installation token to
//! whoever presents a JWT signed with the App's private key; the token lives one hour, cannot be
//! extended, and can be narrowed to some of the installation's repositories and permissions. So a
//! `grant` mints a token for exactly what the grant's scopes name, a `renew` or `rotate` mints a
//! new one (revoking the old one first when the engine holds it, unless a rotation keeps it for a
//! grace period), `revoke` deletes it and `verify` asks GitHub whether it still works. The connector keeps no state: revoking and checking need
//! the token itself, which the engine keeps sealed for the grant and passes to
//! [`Connector::execute_with_credential`] ([`Connector::needs_credential`]); without it `revoke`
//! and `verify` fail permanently rather than report something that was not checked.
//!
//! How scopes map to GitHub ([`token_request`]): `NAME:LEVEL` (`contents:read`, `issues:write`,
//! `administration:admin`) is a permission at a level; `repo:NAME` restricts the token to that
//! repository of the installation's account; with no `repo:` scope the `repositories` setting is
//! the set. A grant must name at least one permission and end up with at least one repository,
//! so a token is never the whole installation. A token GitHub returns with more than was asked
//! (other than the `metadata: read` every token carries) is revoked and refused.
//!
//! Errors: 408, 429, 5xx, a 403 that is a rate limit (`x-ratelimit-remaining: 0` or
//! `Retry-After`), timeouts and connection failures are retryable; anything else GitHub refuses is
//! permanent, with GitHub's `message`. Nothing here puts a token, the App's JWT or its key in an
//! error, a log line or `Debug` output.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tollgate_workflows::Operation;

use super::oauth2::{permanent_msg, read_limited, retryable_msg, root_cause};
use super::{ActionOutcome, Connector, Minted};
use crate::action::{ConnectorAction, Expect};
use crate::clock::{Clock, SystemClock};
use crate::outbound::{ConfigError, ConnectorError, MAX_RETRY_AFTER, Timeout, read_secret_file};

/// `api_url` when the settings name none.
pub const DEFAULT_API_URL: &str = "https://api.github.com";
/// The REST API version asked for (`X-GitHub-Api-Version`).
pub const API_VERSION: &str = "2022-11-28";
/// Timeout of one call when the settings name none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How far the App JWT's `iat` is backdated, for clock drift between Tollgate and GitHub.
pub const JWT_BACKDATE: Duration = Duration::from_secs(60);
/// How long after now the App JWT expires (GitHub refuses more than 10 minutes).
pub const JWT_EXPIRES_IN: Duration = Duration::from_secs(9 * 60);
/// Most repositories one token request may name (GitHub's limit).
pub const MAX_REPOSITORIES: usize = 500;
/// Most bytes of an answer read.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Settings of the github_app connector (`connector = { type = "github_app", … }`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubAppSettings {
    /// REST API root: `https://api.github.com` (default) or, on GitHub Enterprise Server,
    /// `https://HOST/api/v3`. `http://` only on loopback.
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The App's id or client id (`Iv23…`): the JWT's `iss`. A number or a string.
    #[serde(deserialize_with = "id_text")]
    pub app_id: String,
    /// The id of the App's installation on the account that owns the repositories.
    #[serde(deserialize_with = "id_number")]
    pub installation_id: u64,
    /// A file holding the App's private key (PEM, RSA, PKCS#1 as GitHub hands it out, or PKCS#8).
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// An environment variable holding the App's private key (PEM; `\n` escapes are accepted).
    #[serde(default)]
    pub private_key_env: Option<String>,
    /// Repository names (without the owner) a token is restricted to when the grant names no
    /// `repo:` scope.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Timeout of one call: `"10s"`, `"500ms"` or a number of seconds. Default 10 s.
    #[serde(default)]
    pub timeout: Option<Timeout>,
    /// The scopes that may be minted: the integration's `scopes`, filled in when the directory is
    /// loaded (not a configuration key). A grant for any other scope is refused.
    #[serde(skip)]
    pub integration_scopes: Vec<String>,
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

impl fmt::Debug for GithubAppSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubAppSettings")
            .field("api_url", &shown_url(&self.api_url))
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("private_key_file", &self.private_key_file)
            .field("private_key_env", &self.private_key_env)
            .field("repositories", &self.repositories)
            .field("timeout", &self.timeout)
            .field("integration_scopes", &self.integration_scopes)
            .finish()
    }
}

/// An id written as a number or a string (TOML users write `app_id = 123456`).
fn id_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u64),
        Text(String),
    }
    Ok(match Id::deserialize(d)? {
        Id::Number(n) => n.to_string(),
        Id::Text(s) => s,
    })
}

/// A numeric id, also accepted as a string of digits (environment variables arrive as text).
fn id_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = id_text(d)?;
    text.trim().parse().map_err(|_| serde::de::Error::custom(format!("{text:?} is not a numeric installation id")))
}

/// A permission level, in GitHub's order (`write` includes `read`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// `read`.
    Read,
    /// `write`.
    Write,
    /// `admin` (the few permissions that have it, e.g. `organization_projects`).
    Admin,
}

impl Level {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// The name as GitHub writes it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Admin => "admin",
        }
    }
}

/// What one scope asks of GitHub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubScope {
    /// `NAME:LEVEL`: an App permission at a level.
    Permission {
        /// GitHub's permission name, e.g. `contents`, `pull_requests`.
        name: String,
        /// The level.
        level: Level,
    },
    /// `repo:NAME`: one repository of the installation's account.
    Repository(String),
}

/// Reads one scope by the connector's rule: `repo:NAME` is a repository, `NAME:LEVEL` a
/// permission (`LEVEL` is `read`, `write` or `admin`; `NAME` lowercase letters, digits and `_`).
///
/// # Errors
/// A message saying why `scope` fits neither form.
pub fn parse_scope(scope: &str) -> Result<GithubScope, String> {
    if let Some(name) = scope.strip_prefix("repo:") {
        check_repository(name)?;
        return Ok(GithubScope::Repository(name.to_owned()));
    }
    let neither = || {
        format!(
            "scope {scope:?} is neither a permission `NAME:LEVEL` (e.g. `contents:read`; LEVEL is read, write or \
             admin) nor a repository `repo:NAME`"
        )
    };
    let (name, level) = scope.split_once(':').ok_or_else(neither)?;
    let level = Level::parse(level).ok_or_else(neither)?;
    let valid_name = !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !valid_name {
        return Err(neither());
    }
    Ok(GithubScope::Permission { name: name.to_owned(), level })
}

/// A repository name as GitHub allows it: letters, digits, `.`, `-`, `_`, at most 100.
fn check_repository(name: &str) -> Result<(), String> {
    if name.contains('/') {
        return Err(format!(
            "repository {name:?}: name it without its owner (`repo:widgets`, not `repo:acme/widgets`); an \
             installation belongs to one account"
        ));
    }
    let valid = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if valid { Ok(()) } else { Err(format!("{name:?} is not a GitHub repository name")) }
}

/// The body of `POST /app/installations/{id}/access_tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRequest {
    /// Repository names the token is restricted to.
    pub repositories: BTreeSet<String>,
    /// Permission levels the token carries.
    pub permissions: BTreeMap<String, Level>,
}

/// What a grant for `scopes` asks GitHub for: the permissions its `NAME:LEVEL` scopes name (the
/// highest level when a permission is named twice), restricted to its `repo:` scopes or, when it
/// names none, to `default_repositories`.
///
/// # Errors
/// A message when a scope fits no form, no permission is named (GitHub would grant all of the
/// installation's), no repository results (the token would reach every repository of the
/// installation) or more than [`MAX_REPOSITORIES`] do.
pub fn token_request(scopes: &[String], default_repositories: &[String]) -> Result<TokenRequest, String> {
    let mut repositories = BTreeSet::new();
    let mut permissions: BTreeMap<String, Level> = BTreeMap::new();
    let mut problems = Vec::new();
    for scope in scopes {
        match parse_scope(scope) {
            Ok(GithubScope::Repository(name)) => {
                repositories.insert(name);
            }
            Ok(GithubScope::Permission { name, level }) => {
                let held = permissions.entry(name).or_insert(level);
                *held = (*held).max(level);
            }
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if permissions.is_empty() {
        return Err("the grant names no permission (`NAME:LEVEL`, e.g. `contents:read`): GitHub would grant every \
                    permission of the installation"
            .to_owned());
    }
    if repositories.is_empty() {
        repositories.extend(default_repositories.iter().cloned());
    }
    if repositories.is_empty() {
        return Err("the grant names no repository (`repo:NAME`) and the connector sets no `repositories`: the \
                    token would reach every repository of the installation"
            .to_owned());
    }
    if repositories.len() > MAX_REPOSITORIES {
        return Err(format!(
            "{} repositories; GitHub restricts a token to at most {MAX_REPOSITORIES}",
            repositories.len()
        ));
    }
    Ok(TokenRequest { repositories, permissions })
}

/// The App JWT's claims (GitHub: RS256, `iss` the App, at most 10 minutes).
#[derive(Serialize)]
struct AppClaims<'a> {
    iat: i64,
    exp: i64,
    iss: &'a str,
}

/// `201` of the token endpoint, only what is used. `Debug` is never derived: the token would show.
#[derive(Deserialize)]
struct TokenReply {
    token: SecretString,
    #[serde(default)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    permissions: Option<BTreeMap<String, String>>,
    #[serde(default)]
    repository_selection: Option<String>,
    #[serde(default)]
    repositories: Option<Vec<RepositoryName>>,
}

#[derive(Deserialize)]
struct RepositoryName {
    name: String,
}

/// `200` of `GET /installation/repositories`.
#[derive(Deserialize)]
struct RepositoriesReply {
    #[serde(default)]
    total_count: Option<u64>,
}

/// Which call went wrong (for messages).
#[derive(Debug, Clone, Copy)]
enum Call {
    Mint,
    Revoke,
    Check,
}

impl Call {
    fn doing(self) -> &'static str {
        match self {
            Self::Mint => "creating an installation access token",
            Self::Revoke => "revoking an installation access token",
            Self::Check => "checking an installation access token",
        }
    }
}

/// Mints, revokes and checks GitHub App installation access tokens.
pub struct GithubAppConnector {
    host: String,
    access_tokens_url: Url,
    token_url: Url,
    repositories_url: Url,
    app_id: String,
    installation_id: u64,
    key: jsonwebtoken::EncodingKey,
    repositories: Vec<String>,
    scopes: BTreeSet<String>,
    timeout: Duration,
    http: reqwest::Client,
    clock: std::sync::Arc<dyn Clock>,
}

impl fmt::Debug for GithubAppConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GithubAppConnector")
            .field("api_host", &self.host)
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("repositories", &self.repositories)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl GithubAppConnector {
    /// Validates `settings`, reads the App's private key, and binds the shared HTTP client
    /// ([`crate::http::client`]).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field; never containing the key.
    pub fn new(settings: &GithubAppSettings, http: &reqwest::Client) -> Result<Self, ConfigError> {
        Self::new_with_env(settings, http, |name| std::env::var(name))
    }

    fn new_with_env(
        settings: &GithubAppSettings,
        http: &reqwest::Client,
        env: impl FnOnce(&str) -> Result<String, std::env::VarError>,
    ) -> Result<Self, ConfigError> {
        let base = api_url(&settings.api_url)?;
        let endpoint = |path: &str| {
            Url::parse(&format!("{}{path}", base.as_str().trim_end_matches('/')))
                .map_err(|e| ConfigError::Invalid { field: "api_url", reason: format!("not a valid URL: {e}") })
        };
        let app_id = settings.app_id.trim();
        if app_id.is_empty() || !app_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
            return Err(ConfigError::invalid("app_id", "give the App's id (a number) or its client id (`Iv23…`)"));
        }
        if settings.installation_id == 0 {
            return Err(ConfigError::invalid("installation_id", "give the id of the App's installation"));
        }
        let (field, pem) = private_key(settings, env)?;
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes()).map_err(|_| {
            ConfigError::Invalid {
                field,
                reason: format!("{} is not an RSA private key in PEM (PKCS#1 or PKCS#8)", key_source(settings)),
            }
        })?;
        for name in &settings.repositories {
            check_repository(name).map_err(|reason| ConfigError::Invalid { field: "repositories", reason })?;
        }
        if settings.repositories.len() > MAX_REPOSITORIES {
            return Err(ConfigError::invalid("repositories", "GitHub restricts a token to at most 500 repositories"));
        }
        let scopes: BTreeSet<String> = settings.integration_scopes.iter().cloned().collect();
        for scope in &scopes {
            parse_scope(scope).map_err(|reason| ConfigError::Invalid { field: "scopes", reason })?;
        }
        let connector = Self {
            host: host_of(&base),
            access_tokens_url: endpoint(&format!("/app/installations/{}/access_tokens", settings.installation_id))?,
            token_url: endpoint("/installation/token")?,
            repositories_url: endpoint("/installation/repositories?per_page=1")?,
            app_id: app_id.to_owned(),
            installation_id: settings.installation_id,
            key,
            repositories: settings.repositories.clone(),
            scopes,
            timeout: settings.timeout.map_or(DEFAULT_TIMEOUT, Timeout::as_duration),
            http: http.clone(),
            clock: std::sync::Arc::new(SystemClock),
        };
        // ring checks the key when signing: a key it cannot use (e.g. under 2048 bits) fails now,
        // not at the first grant.
        connector.app_jwt().map_err(|_| ConfigError::Invalid {
            field,
            reason: format!(
                "{} cannot sign RS256 JWTs: give the App's RSA private key (PEM, 2048 to 4096 bits)",
                key_source(settings)
            ),
        })?;
        Ok(connector)
    }

    /// Uses `clock` for JWT times and rate-limit waits instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A fresh App JWT: RS256, `iss` the App, `iat` a minute ago, `exp` in nine minutes.
    fn app_jwt(&self) -> Result<SecretString, jsonwebtoken::errors::Error> {
        let now = self.clock.now().timestamp();
        let claims = AppClaims {
            iat: now - JWT_BACKDATE.as_secs().cast_signed(),
            exp: now + JWT_EXPIRES_IN.as_secs().cast_signed(),
            iss: &self.app_id,
        };
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        jsonwebtoken::encode(&header, &claims, &self.key).map(SecretString::from)
    }

    /// Sends one call authenticated by `bearer`; the status, headers and (bounded) body of any
    /// answer, or a retryable transport failure.
    async fn send(
        &self,
        call: Call,
        method: Method,
        url: &Url,
        bearer: &SecretString,
        body: Option<&TokenRequest>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), ConnectorError> {
        let what = format!("github {}: {}", self.host, call.doing());
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", bearer.expose_secret()))
            .map_err(|_| permanent_msg(&format!("{what}: the credential is not a usable header")))?;
        auth.set_sensitive(true);
        let mut request = self
            .http
            .request(method, url.clone())
            .timeout(self.timeout)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, HeaderValue::from_static("application/vnd.github+json"))
            .header("x-github-api-version", HeaderValue::from_static(API_VERSION))
            .header(USER_AGENT, HeaderValue::from_static(crate::http::USER_AGENT));
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&what, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        tracing::debug!(github.host = %self.host, github.call = call.doing(), http.status = status.as_u16(), "github answered");
        let body = read_limited(response)
            .await
            .map_err(|e| retryable_msg(&format!("{what}: reading the answer failed: {e}")))?;
        Ok((status, headers, body))
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> ConnectorError {
        if e.is_builder() {
            return permanent_msg(&format!("{what}: invalid request"));
        }
        let message = if e.is_timeout() {
            format!("{what}: timed out after {}", humantime::format_duration(self.timeout))
        } else {
            let kind = if e.is_connect() { "connection failed" } else { "request failed" };
            match root_cause(e) {
                Some(cause) => format!("{what}: {kind}: {cause}"),
                None => format!("{what}: {kind}"),
            }
        };
        ConnectorError::Retryable { message, retry_after: None }
    }

    /// The error for an answer that is not the call's success. `bearer` is the credential sent,
    /// kept out of the message even if GitHub echoed it.
    fn failure(
        &self,
        call: Call,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        bearer: &SecretString,
    ) -> ConnectorError {
        let code = status.as_u16();
        let mut message = format!("github {}: {} answered {code}", self.host, call.doing());
        if let Some(said) = github_message(body, bearer) {
            message.push_str(": ");
            message.push_str(&said);
        }
        let rate_limited = header(headers, "x-ratelimit-remaining") == Some("0");
        match code {
            408 | 429 | 500..=599 => ConnectorError::Retryable { message, retry_after: self.wait(headers) },
            403 if rate_limited || headers.contains_key(RETRY_AFTER) => {
                ConnectorError::Retryable { message, retry_after: self.wait(headers) }
            }
            300..=399 => {
                message.push_str("; redirects are not followed, configure the final API URL");
                ConnectorError::Permanent { message }
            }
            401 if matches!(call, Call::Mint) => {
                message.push_str(
                    " (GitHub refused the App's JWT: check app_id, the private key and this machine's clock)",
                );
                ConnectorError::Permanent { message }
            }
            404 if matches!(call, Call::Mint) => {
                message.push_str(" (no such installation of this App: check installation_id and app_id)");
                ConnectorError::Permanent { message }
            }
            _ => ConnectorError::Permanent { message },
        }
    }

    /// How long GitHub asks to wait: `Retry-After`, or until `x-ratelimit-reset` when the rate
    /// limit is spent; at most [`MAX_RETRY_AFTER`].
    fn wait(&self, headers: &HeaderMap) -> Option<Duration> {
        let seconds = |name: &str| header(headers, name).and_then(|v| v.trim().parse::<u64>().ok());
        if let Some(secs) = seconds(RETRY_AFTER.as_str()) {
            return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
        }
        if header(headers, "x-ratelimit-remaining") == Some("0") {
            let reset = seconds("x-ratelimit-reset")?;
            let now = self.clock.now().timestamp().max(0).cast_unsigned();
            return Some(Duration::from_secs(reset.saturating_sub(now).max(1)).min(MAX_RETRY_AFTER));
        }
        None
    }

    /// `POST /app/installations/{id}/access_tokens` for exactly `request`.
    async fn mint(&self, request: &TokenRequest) -> Result<Minted, ConnectorError> {
        let jwt = self
            .app_jwt()
            .map_err(|e| permanent_msg(&format!("github {}: cannot sign the App's JWT ({:?})", self.host, e.kind())))?;
        let (status, headers, body) =
            self.send(Call::Mint, Method::POST, &self.access_tokens_url, &jwt, Some(request)).await?;
        if !matches!(status.as_u16(), 200 | 201) {
            return Err(self.failure(Call::Mint, status, &headers, &body, &jwt));
        }
        let reply: TokenReply = serde_json::from_slice(&body).map_err(|e| {
            permanent_msg(&format!(
                "github {}: {}: the answer is not an installation token ({:?} error at line {} column {})",
                self.host,
                Call::Mint.doing(),
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let beyond = beyond_request(request, &reply);
        let TokenReply { token, expires_at, .. } = reply;
        if token.expose_secret().is_empty() {
            return Err(permanent_msg(&format!("github {}: the token endpoint returned an empty token", self.host)));
        }
        if let Some(problem) = beyond {
            return Err(self.refuse(&token, problem).await);
        }
        let Some(expires_at) = expires_at else {
            return Err(self
                .refuse(
                    &token,
                    "GitHub returned a token without `expires_at`: Tollgate hands out only tokens that expire"
                        .to_owned(),
                )
                .await);
        };
        Ok(Minted { value: token, expires_at: Some(expires_at) })
    }

    /// A permanent error for a minted token that cannot be handed out, after revoking it.
    async fn refuse(&self, token: &SecretString, problem: String) -> ConnectorError {
        let outcome = match self.revoke(token).await {
            Ok(()) => "the token was revoked".to_owned(),
            Err(e) => format!("revoking the token failed too ({e})"),
        };
        permanent_msg(&format!("github {}: {problem}; {outcome}", self.host))
    }

    /// `DELETE /installation/token` with the token itself. `204`, and `401` (the token is
    /// already expired or revoked), mean it no longer works.
    async fn revoke(&self, token: &SecretString) -> Result<(), ConnectorError> {
        let (status, headers, body) = self.send(Call::Revoke, Method::DELETE, &self.token_url, token, None).await?;
        match status.as_u16() {
            204 | 401 => Ok(()),
            _ => Err(self.failure(Call::Revoke, status, &headers, &body, token)),
        }
    }

    /// `GET /installation/repositories?per_page=1` with the token: how many repositories it
    /// reaches, or `None` when GitHub refuses it (401: expired or revoked).
    async fn check(&self, token: &SecretString) -> Result<Option<u64>, ConnectorError> {
        let (status, headers, body) = self.send(Call::Check, Method::GET, &self.repositories_url, token, None).await?;
        match status.as_u16() {
            200 => {
                let reply: RepositoriesReply = serde_json::from_slice(&body).map_err(|e| {
                    permanent_msg(&format!(
                        "github {}: {}: the answer is not a repository list ({:?} error)",
                        self.host,
                        Call::Check.doing(),
                        e.classify()
                    ))
                })?;
                Ok(Some(reply.total_count.unwrap_or(0)))
            }
            401 => Ok(None),
            _ => Err(self.failure(Call::Check, status, &headers, &body, token)),
        }
    }

    /// The grant's scopes, checked against the integration's and mapped to a token request.
    fn requested(&self, action: &ConnectorAction) -> Result<TokenRequest, ConnectorError> {
        if action.scopes.is_empty() {
            return Err(permanent_msg("the grant names no scope"));
        }
        let refused: BTreeSet<&str> =
            action.scopes.iter().filter(|s| !self.scopes.contains(*s)).map(String::as_str).collect();
        if !refused.is_empty() {
            return Err(permanent_msg(&format!(
                "scopes [{}] are not among the integration's scopes [{}]",
                refused.into_iter().collect::<Vec<_>>().join(" "),
                self.scopes.iter().map(String::as_str).collect::<Vec<_>>().join(" ")
            )));
        }
        token_request(&action.scopes, &self.repositories).map_err(|e| permanent_msg(&e))
    }

    async fn verify(&self, action: &ConnectorAction, token: &SecretString) -> Result<ActionOutcome, ConnectorError> {
        let reach = self.check(token).await?;
        let done = ActionOutcome::Done { reference: None, minted: None };
        match (action.expect.unwrap_or(Expect::Present), reach) {
            (Expect::Absent, None) => Ok(done),
            (Expect::Absent, Some(_)) => Err(permanent_msg(&format!(
                "github {}: the installation token still works: the access is not gone",
                self.host
            ))),
            (Expect::Present, None) => Err(permanent_msg(&format!(
                "github {}: the installation token is refused (401: expired or revoked)",
                self.host
            ))),
            (Expect::Present, Some(count)) => {
                let allowed = self.requested(action)?.repositories.len();
                if usize::try_from(count).unwrap_or(usize::MAX) > allowed {
                    return Err(permanent_msg(&format!(
                        "github {}: the installation token reaches {count} repositories, more than the grant's \
                         {allowed}",
                        self.host
                    )));
                }
                Ok(done)
            }
        }
    }
}

#[async_trait::async_trait]
impl Connector for GithubAppConnector {
    fn kind(&self) -> &'static str {
        "github_app"
    }

    /// GitHub itself answers whether a token still works.
    fn verifies(&self) -> bool {
        true
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
                    "{} needs the installation token minted for grant {}, and the engine holds none for it",
                    operation_name(action.operation),
                    action.grant_id
                ))
            })
        };
        match action.operation {
            Operation::Grant => {
                let request = self.requested(action)?;
                let minted = self.mint(&request).await?;
                Ok(ActionOutcome::Done {
                    reference: Some(super::oauth2::fingerprint(&minted.value)),
                    minted: Some(minted),
                })
            }
            Operation::Renew | Operation::Rotate => {
                // An installation token cannot be extended: a new one is minted. The old one is
                // revoked first when the engine holds it (so a retry leaves no second live
                // token); without it, it still ends within the hour GitHub gives every token. A
                // rotation with a grace period keeps it: a later `revoke` of the previous version
                // ends it.
                let request = self.requested(action)?;
                if let Some(old) = credential.filter(|_| !action.keep_previous) {
                    self.revoke(old).await?;
                }
                let minted = self.mint(&request).await?;
                Ok(ActionOutcome::Done {
                    reference: Some(super::oauth2::fingerprint(&minted.value)),
                    minted: Some(minted),
                })
            }
            Operation::Revoke => {
                let token = held()?;
                self.revoke(token).await?;
                Ok(ActionOutcome::Done { reference: Some(super::oauth2::fingerprint(token)), minted: None })
            }
            Operation::Verify => self.verify(action, held()?).await,
        }
    }
}

/// Why the token GitHub returned exceeds `request` (more permissions, a higher level, other or
/// all repositories), if it does. `metadata: read` is not extra: every App has it, and GitHub adds
/// it to every token.
fn beyond_request(request: &TokenRequest, reply: &TokenReply) -> Option<String> {
    let mut extra = Vec::new();
    for (name, level) in reply.permissions.iter().flatten() {
        let within = Level::parse(level).zip(request.permissions.get(name)).is_some_and(|(got, asked)| got <= *asked)
            || (name == "metadata" && level == "read");
        if !within {
            extra.push(format!("{name}:{}", printable(level, 16).unwrap_or_default()));
        }
    }
    if !extra.is_empty() {
        return Some(format!("GitHub granted permissions beyond the request: [{}]", extra.join(" ")));
    }
    if reply.repository_selection.as_deref() == Some("all") {
        return Some("GitHub granted all of the installation's repositories, not the requested ones".to_owned());
    }
    let asked: BTreeSet<String> = request.repositories.iter().map(|r| r.to_ascii_lowercase()).collect();
    let other: Vec<String> = reply
        .repositories
        .iter()
        .flatten()
        .filter(|r| !asked.contains(&r.name.to_ascii_lowercase()))
        .map(|r| printable(&r.name, 100).unwrap_or_default())
        .collect();
    (!other.is_empty()).then(|| format!("GitHub granted repositories beyond the request: [{}]", other.join(" ")))
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

fn key_source(settings: &GithubAppSettings) -> String {
    match (&settings.private_key_file, &settings.private_key_env) {
        (Some(path), _) => path.display().to_string(),
        (None, Some(name)) => format!("environment variable {name}"),
        (None, None) => "the key".to_owned(),
    }
}

/// The PEM and the field it came from.
fn private_key(
    settings: &GithubAppSettings,
    env: impl FnOnce(&str) -> Result<String, std::env::VarError>,
) -> Result<(&'static str, SecretString), ConfigError> {
    match (&settings.private_key_file, &settings.private_key_env) {
        (Some(path), None) => Ok(("private_key_file", read_secret_file("private_key_file", path)?)),
        (None, Some(name)) => {
            let value = env(name).map_err(|e| ConfigError::Invalid {
                field: "private_key_env",
                reason: match e {
                    std::env::VarError::NotPresent => format!("environment variable {name} is not set"),
                    std::env::VarError::NotUnicode(_) => format!("environment variable {name} is not valid UTF-8"),
                },
            })?;
            // Some platforms keep a PEM in one line with `\n` escapes.
            let value = if value.contains('\n') { value } else { value.replace("\\n", "\n") };
            Ok(("private_key_env", SecretString::from(value)))
        }
        (None, None) => Err(ConfigError::invalid(
            "private_key_file",
            "set `private_key_file` or `private_key_env`: the App's private key (PEM) signs its JWT",
        )),
        (Some(_), Some(_)) => {
            Err(ConfigError::invalid("private_key_file", "set only one of `private_key_file` or `private_key_env`"))
        }
    }
}

fn api_url(text: &str) -> Result<Url, ConfigError> {
    let field = "api_url";
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
        "http" => return Err(ConfigError::invalid(field, "must be https:// (the App's JWT and tokens cross it)")),
        _ => return Err(ConfigError::invalid(field, "the scheme must be https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(field, "must not embed credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::invalid(
            field,
            "give the API root without a query, e.g. https://api.github.com or https://HOST/api/v3",
        ));
    }
    Ok(url)
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

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// GitHub's `message`, if the answer has one that is fit to log: printable, at most 200
/// characters, and not containing `bearer` (a server echoing the credential must not leak it).
fn github_message(body: &[u8], bearer: &SecretString) -> Option<String> {
    #[derive(Deserialize)]
    struct Error {
        message: String,
    }
    let message = serde_json::from_slice::<Error>(body).ok()?.message;
    let secret = bearer.expose_secret();
    if secret.is_empty() || message.contains(secret) {
        return None;
    }
    printable(&message, 200)
}

/// `text` if it is non-empty printable text of at most `max` characters.
fn printable(text: &str, max: usize) -> Option<String> {
    let ok = !text.trim().is_empty() && text.chars().count() <= max && !text.chars().any(char::is_control);
    ok.then(|| text.trim().to_owned())
}

#[cfg(test)]
mod tests;
