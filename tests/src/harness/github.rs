//! A local fake of GitHub's REST endpoints for App installation tokens, speaking their HTTP
//! contract: `POST /app/installations/{id}/access_tokens` (authenticated by an App JWT it checks
//! against the App's public key), `DELETE /installation/token` and `GET
//! /installation/repositories` (authenticated by an installation token).
//!
//! It refuses what GitHub refuses: a JWT not signed RS256 by the App's key, with another `iss`,
//! issued in the future, living more than 10 minutes or expired (401); repositories or
//! permissions beyond the installation's (422); a request without `User-Agent` (403). Tokens are
//! random `ghs_…` strings living one hour, carrying `metadata: read` besides what was asked, as
//! GitHub's do. Every request is recorded, and failures can be scripted. Served at the root like
//! api.github.com, or under a prefix like GitHub Enterprise Server's `/api/v3`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// Where GitHub's error answers point.
const DOCS: &str = "https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app";

/// A file of `tests/fixtures/github_app/` (test-only keys: `app-key.pem`, `app-key.pkcs8.pem`,
/// `app-key.pub.pem`, `other-key.pem`).
#[must_use]
pub fn github_app_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/github_app").join(name)
}

/// The App and its installation, as GitHub knows them.
#[derive(Debug, Clone)]
pub struct GithubInstallation {
    /// The App's id: the `iss` its JWTs must carry.
    pub app_id: String,
    /// The installation's id.
    pub installation_id: u64,
    /// The App's public key (PEM), which its JWTs must verify with.
    pub public_key_pem: String,
    /// Names of the repositories the installation was given.
    pub repositories: Vec<String>,
    /// The installation's permissions: name to `read`, `write` or `admin`.
    pub permissions: BTreeMap<String, String>,
}

impl GithubInstallation {
    /// App `123456`, installation `42`, the fixture key `app-key.pub.pem`, repositories `widgets`,
    /// `gadgets` and `gizmos`, permissions `contents:write`, `issues:write`, `metadata:read`.
    ///
    /// # Panics
    /// If the fixture key cannot be read.
    #[must_use]
    pub fn fixture() -> Self {
        let public_key_pem =
            std::fs::read_to_string(github_app_fixture("app-key.pub.pem")).expect("the fixture public key");
        Self {
            app_id: "123456".to_owned(),
            installation_id: 42,
            public_key_pem,
            repositories: ["widgets", "gadgets", "gizmos"].map(str::to_owned).to_vec(),
            permissions: [("contents", "write"), ("issues", "write"), ("metadata", "read")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into_iter()
                .collect(),
        }
    }
}

/// One request the fake got, and what it answered.
#[derive(Debug, Clone)]
pub struct GithubRequest {
    /// `GET`, `POST`, `DELETE`…
    pub method: String,
    /// Path and query as received (with any prefix).
    pub path: String,
    /// Headers, lower-case names.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status answered.
    pub status: u16,
    /// Why the fake refused it (its own words, more precise than the answer's), if it did.
    pub refusal: Option<String>,
}

impl GithubRequest {
    /// A header's value.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Null` if it is not JSON).
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A token the fake issued.
#[derive(Debug, Clone)]
struct Issued {
    repositories: Vec<String>,
    expires_at: chrono::DateTime<chrono::Utc>,
    revoked: bool,
}

/// A scripted answer, served instead of the real one.
#[derive(Debug, Clone)]
struct Scripted {
    status: u16,
    headers: Vec<(String, String)>,
}

struct Shared {
    installation: GithubInstallation,
    key: jsonwebtoken::DecodingKey,
    prefix: String,
    requests: Mutex<Vec<GithubRequest>>,
    tokens: Mutex<HashMap<String, Issued>>,
    script: Mutex<VecDeque<Scripted>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running fake GitHub on `127.0.0.1:<random port>`; stopped on drop.
pub struct GithubServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GithubServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GithubServer").field("api_url", &self.api_url()).finish_non_exhaustive()
    }
}

impl GithubServer {
    /// Starts a fake api.github.com for `installation`.
    ///
    /// # Errors
    /// The public key is not an RSA PEM, or no port could be bound.
    pub async fn start(installation: GithubInstallation) -> anyhow::Result<Self> {
        Self::start_at(installation, "").await
    }

    /// Starts a fake serving under `prefix`, as GitHub Enterprise Server does under `/api/v3`;
    /// anything outside it is a 404.
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn start_at(installation: GithubInstallation, prefix: &str) -> anyhow::Result<Self> {
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(installation.public_key_pem.as_bytes())?;
        let shared = Arc::new(Shared {
            installation,
            key,
            prefix: prefix.trim_end_matches('/').to_owned(),
            requests: Mutex::new(Vec::new()),
            tokens: Mutex::new(HashMap::new()),
            script: Mutex::new(VecDeque::new()),
        });
        let app = axum::Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, shared, task })
    }

    /// The REST API root to configure as `api_url`: `http://127.0.0.1:PORT` plus the prefix.
    #[must_use]
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.addr, self.shared.prefix)
    }

    /// Every request so far, in arrival order.
    #[must_use]
    pub fn requests(&self) -> Vec<GithubRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Answers the next request with `status` and `headers` (and a GitHub-style message),
    /// whatever it is.
    pub fn fail_next(&self, status: u16, headers: &[(&str, &str)]) {
        let headers = headers.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        lock(&self.shared.script).push_back(Scripted { status, headers });
    }

    /// Whether `token` was issued here and still works (not revoked, not expired).
    #[must_use]
    pub fn is_live(&self, token: &str) -> bool {
        lock(&self.shared.tokens).get(token).is_some_and(live)
    }

    /// The repositories `token` was restricted to, if it was issued here.
    #[must_use]
    pub fn repositories_of(&self, token: &str) -> Option<Vec<String>> {
        lock(&self.shared.tokens).get(token).map(|t| t.repositories.clone())
    }
}

impl Drop for GithubServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn live(t: &Issued) -> bool {
    !t.revoked && t.expires_at > crate::wall_clock()
}

/// What an answer is: a status, a JSON body or none, and for the record why it refused.
struct Answer {
    status: StatusCode,
    body: Option<Value>,
    headers: Vec<(String, String)>,
    refusal: Option<String>,
}

impl Answer {
    fn ok(status: StatusCode, body: Option<Value>) -> Self {
        Self { status, body, headers: Vec::new(), refusal: None }
    }

    /// A GitHub-style error: `{"message", "documentation_url", "status"}`.
    fn error(status: StatusCode, message: &str, why: impl Into<String>) -> Self {
        let body = json!({"message": message, "documentation_url": DOCS, "status": status.as_str()});
        Self { status, body: Some(body), headers: Vec::new(), refusal: Some(why.into()) }
    }

    fn into_response(self) -> Response {
        let mut response = match self.body {
            Some(body) => (self.status, axum::Json(body)).into_response(),
            None => self.status.into_response(),
        };
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (axum::http::HeaderName::from_bytes(name.as_bytes()), axum::http::HeaderValue::from_str(&value))
            {
                response.headers_mut().insert(name, value);
            }
        }
        response
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let full = uri.path_and_query().map_or_else(|| uri.path().to_owned(), ToString::to_string);
    let answer = answer(&shared, &method, &uri, &headers, &body);
    lock(&shared.requests).push(GithubRequest {
        method: method.to_string(),
        path: full,
        headers: headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect(),
        body: body.to_vec(),
        status: answer.status.as_u16(),
        refusal: answer.refusal.clone(),
    });
    answer.into_response()
}

fn answer(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Answer {
    if let Some(scripted) = lock(&shared.script).pop_front() {
        let status = StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut answer = Answer::error(status, status.canonical_reason().unwrap_or("Error"), "scripted");
        answer.headers = scripted.headers;
        return answer;
    }
    let not_found = || Answer::error(StatusCode::NOT_FOUND, "Not Found", format!("no route {method} {}", uri.path()));
    let Some(path) = uri.path().strip_prefix(shared.prefix.as_str()) else { return not_found() };
    if headers.get("user-agent").is_none_or(|v| v.is_empty()) {
        return Answer::error(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
            "no User-Agent",
        );
    }
    let installation_path = format!("/app/installations/{}/access_tokens", shared.installation.installation_id);
    match (method.as_str(), path) {
        ("POST", p) if p == installation_path => mint(shared, headers, body),
        ("POST", p) if p.starts_with("/app/installations/") && p.ends_with("/access_tokens") => {
            match check_jwt(shared, headers) {
                Ok(()) => Answer::error(StatusCode::NOT_FOUND, "Not Found", "another installation"),
                Err(refused) => refused,
            }
        }
        ("DELETE", "/installation/token") => match installation_token(shared, headers) {
            Ok(token) => {
                if let Some(t) = lock(&shared.tokens).get_mut(&token) {
                    t.revoked = true;
                }
                Answer::ok(StatusCode::NO_CONTENT, None)
            }
            Err(refused) => refused,
        },
        ("GET", "/installation/repositories") => match installation_token(shared, headers) {
            Ok(token) => {
                let repositories = lock(&shared.tokens).get(&token).map(|t| t.repositories.clone()).unwrap_or_default();
                let per_page = uri
                    .query()
                    .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "per_page"))
                    .and_then(|(_, v)| v.parse::<usize>().ok())
                    .unwrap_or(30);
                let page: Vec<Value> =
                    repositories.iter().take(per_page).map(|name| repository(shared, name)).collect();
                Answer::ok(
                    StatusCode::OK,
                    Some(
                        json!({"total_count": repositories.len(), "repository_selection": "selected", "repositories": page}),
                    ),
                )
            }
            Err(refused) => refused,
        },
        _ => not_found(),
    }
}

fn repository(shared: &Shared, name: &str) -> Value {
    let id = shared.installation.repositories.iter().position(|r| r == name).unwrap_or(0) + 1;
    json!({"id": id, "name": name, "full_name": format!("acme/{name}"), "private": true})
}

/// The App JWT's claims GitHub reads.
#[derive(Deserialize)]
struct AppClaims {
    iat: i64,
    exp: i64,
}

/// Checks the `Authorization: Bearer <JWT>` of an App call as GitHub does.
fn check_jwt(shared: &Shared, headers: &HeaderMap) -> Result<(), Answer> {
    let unauthorized = |message: &str, why: String| Answer::error(StatusCode::UNAUTHORIZED, message, why);
    let jwt = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("A JSON web token could not be decoded", "no Bearer JWT".to_owned()))?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["iat", "exp", "iss"]);
    validation.set_issuer(&[&shared.installation.app_id]);
    let claims = jsonwebtoken::decode::<AppClaims>(jwt, &shared.key, &validation).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind;
        let message = match e.kind() {
            ErrorKind::ExpiredSignature => {
                "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the \
                 assertion expires"
            }
            ErrorKind::InvalidIssuer => "'Issuer' claim ('iss') must be an Integer",
            _ => "A JSON web token could not be decoded",
        };
        unauthorized(message, format!("JWT: {e}"))
    })?;
    let (iat, exp) = (claims.claims.iat, claims.claims.exp);
    let now = crate::wall_clock().timestamp();
    if iat > now + 60 {
        return Err(unauthorized(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued",
            format!("JWT: iat {iat} is {} s in the future", iat - now),
        ));
    }
    if exp - iat > 600 {
        return Err(unauthorized(
            "'Expiration time' claim ('exp') is too far in the future",
            format!("JWT: exp - iat = {} s > 600 s", exp - iat),
        ));
    }
    Ok(())
}

/// The live installation token of `Authorization: Bearer|token <token>`.
fn installation_token(shared: &Shared, headers: &HeaderMap) -> Result<String, Answer> {
    let bad = |why: &str| Answer::error(StatusCode::UNAUTHORIZED, "Bad credentials", why);
    let value = headers.get("authorization").and_then(|v| v.to_str().ok()).ok_or_else(|| bad("no Authorization"))?;
    let token =
        value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("token ")).ok_or_else(|| bad("no token"))?;
    match lock(&shared.tokens).get(token) {
        Some(t) if live(t) => Ok(token.to_owned()),
        Some(t) if t.revoked => Err(bad("revoked token")),
        Some(_) => Err(bad("expired token")),
        None => Err(bad("unknown token")),
    }
}

/// `POST /app/installations/{id}/access_tokens`.
fn mint(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Answer {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Request {
        #[serde(default)]
        repositories: Option<Vec<String>>,
        #[serde(default)]
        permissions: Option<BTreeMap<String, String>>,
    }
    if let Err(refused) = check_jwt(shared, headers) {
        return refused;
    }
    let request: Request = if body.is_empty() {
        Request { repositories: None, permissions: None }
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return Answer::error(StatusCode::BAD_REQUEST, "Problems parsing JSON", format!("body: {e}")),
        }
    };
    let installation = &shared.installation;
    let unprocessable = |message: &str, why: String| Answer::error(StatusCode::UNPROCESSABLE_ENTITY, message, why);
    let repositories = match &request.repositories {
        None => installation.repositories.clone(),
        Some(asked) => {
            let mut granted = Vec::new();
            for name in asked {
                match installation.repositories.iter().find(|r| r.eq_ignore_ascii_case(name)) {
                    Some(r) => granted.push(r.clone()),
                    None => {
                        return unprocessable(
                            "There is at least one repository that does not exist or is not accessible to the parent \
                             installation.",
                            format!("repository {name:?} is not the installation's"),
                        );
                    }
                }
            }
            granted
        }
    };
    let rank = |level: &str| ["read", "write", "admin"].iter().position(|l| *l == level);
    let permissions = match &request.permissions {
        None => installation.permissions.clone(),
        Some(asked) => {
            for (name, level) in asked {
                let held = installation.permissions.get(name).and_then(|l| rank(l));
                match rank(level) {
                    None => {
                        return unprocessable(
                            &format!("The permission level '{level}' is not valid for '{name}'."),
                            format!("unknown level {level:?}"),
                        );
                    }
                    Some(wanted) if held.is_none_or(|held| wanted > held) => {
                        return unprocessable(
                            "The permissions requested are not granted to this installation.",
                            format!("permission {name}:{level} is beyond the installation's"),
                        );
                    }
                    Some(_) => {}
                }
            }
            // Like GitHub: every App has `metadata: read`, and every token carries it.
            let mut granted = asked.clone();
            if installation.permissions.contains_key("metadata") {
                granted.entry("metadata".to_owned()).or_insert_with(|| "read".to_owned());
            }
            granted
        }
    };
    let token = format!("ghs_{}{}", uuid::Uuid::new_v4().simple(), &uuid::Uuid::new_v4().simple().to_string()[..4]);
    let expires_at = crate::wall_clock() + chrono::Duration::hours(1);
    lock(&shared.tokens)
        .insert(token.clone(), Issued { repositories: repositories.clone(), expires_at, revoked: false });
    let selection = if request.repositories.is_some() { "selected" } else { "all" };
    Answer::ok(
        StatusCode::CREATED,
        Some(json!({
            "token": token,
            "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "permissions": permissions,
            "repository_selection": selection,
            "repositories": repositories.iter().map(|name| repository(shared, name)).collect::<Vec<_>>(),
        })),
    )
}
