//! Extractors whose rejections use the error envelope: JSON bodies, ids in paths, queries, and
//! the authenticated principal.

use std::cell::Cell;
use std::collections::HashSet;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use tollgate_engine::directory::Role;
use tollgate_engine::policy::Viewer;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON request body, read strictly. Every route that takes a JSON body uses this extractor,
/// and every refusal comes before the handler runs, so a refused body never writes anything.
///
/// In order:
/// - `Content-Type` must be `application/json` (or an `application/…+json` type), with no
///   charset or `charset=utf-8`: else 415 `unsupported_media_type`.
/// - The body must fit the configured limit (`http.max_body_bytes`): else 413
///   `payload_too_large`.
/// - It must be UTF-8, well-formed JSON (one value, nothing after it), nested at most
///   [`MAX_JSON_DEPTH`] levels: else 400 `invalid_request`.
/// - Its top-level value must be an object (not an array, which serde would read field by field
///   in declaration order, nor a scalar or `null`) and no object in it may repeat a key: else 422
///   `validation_failed`.
/// - It must then fit `T` (`T` denies unknown fields): else 422 `validation_failed`, naming the
///   field.
#[derive(Debug)]
pub struct Json<T>(pub T);

/// How deeply a request body may nest arrays and objects. The API's bodies need 2 levels.
pub const MAX_JSON_DEPTH: usize = 32;

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is too large")
            } else {
                ApiError::bad_request("cannot read the request body")
            }
        })?;
        parse_body(&bytes).map(Self)
    }
}

fn unsupported_media_type(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", detail)
}

/// `application/json` or `application/…+json`, charset UTF-8 if given.
fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    const EXPECTED: &str = "expected Content-Type: application/json";
    let value = headers
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| unsupported_media_type(EXPECTED))?
        .to_str()
        .map_err(|_| unsupported_media_type(EXPECTED))?;
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json = essence
        .strip_prefix("application/")
        .is_some_and(|sub| sub == "json" || (sub.ends_with("+json") && sub.len() > "+json".len()));
    if !json {
        return Err(unsupported_media_type(EXPECTED));
    }
    for param in parts {
        let (name, val) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("charset") && !val.trim().trim_matches('"').eq_ignore_ascii_case("utf-8") {
            return Err(unsupported_media_type("request bodies are JSON in UTF-8: charset must be utf-8 if given"));
        }
    }
    Ok(())
}

/// Reads a request body as `T`; see [`Json`] for the checks and their answers.
///
/// # Errors
/// 400 `invalid_request` for what is not readable JSON, 422 `validation_failed` for JSON that
/// does not fit.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::bad_request("request body is not valid UTF-8"));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("request body is empty; expected a JSON object"));
    }
    // First pass: the shape, whatever `T` is.
    let problem = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let top = serde::de::DeserializeSeed::deserialize(Shape { depth: 1, problem: &problem }, &mut de)
        .and_then(|top| de.end().map(|()| top));
    match (top, problem.take()) {
        (_, Some(Problem::TooDeep)) => {
            return Err(ApiError::bad_request(format!(
                "request body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        (_, Some(Problem::DuplicateKey(key))) => {
            return Err(ApiError::validation(format!("duplicate key {key:?} in the request body")));
        }
        (Err(e), None) => return Err(ApiError::bad_request(format!("request body is not valid JSON: {e}"))),
        (Ok(Kind::Object), None) => {}
        (Ok(other), None) => {
            return Err(ApiError::validation(format!("request body must be a JSON object, not {}", other.described())));
        }
    }
    // Second pass: the fields, naming the one at fault.
    let mut de = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::validation(inner.to_string())
        } else {
            ApiError::validation(format!("{path}: {inner}"))
        }
    })
}

/// What a JSON value is, for messages.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    Bool,
    Null,
}

impl Kind {
    fn described(self) -> &'static str {
        match self {
            Self::Object => "an object",
            Self::Array => "an array",
            Self::String => "a string",
            Self::Number => "a number",
            Self::Bool => "a boolean",
            Self::Null => "null",
        }
    }
}

/// Why the shape pass stopped (serde's error carries no structured reason).
#[derive(Debug)]
enum Problem {
    TooDeep,
    DuplicateKey(String),
}

/// Walks one JSON value without keeping it: refuses repeated keys and excessive nesting.
struct Shape<'a> {
    depth: usize,
    problem: &'a Cell<Option<Problem>>,
}

impl Shape<'_> {
    /// Entering an array or object at this depth.
    fn enter<E: serde::de::Error>(&self) -> Result<(), E> {
        if self.depth > MAX_JSON_DEPTH {
            self.problem.set(Some(Problem::TooDeep));
            return Err(E::custom("too deep"));
        }
        Ok(())
    }

    fn nested(&self) -> Self {
        Shape { depth: self.depth + 1, problem: self.problem }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Shape<'_> {
    type Value = Kind;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Kind, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Shape<'_> {
    type Value = Kind;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Kind, E> {
        Ok(Kind::Bool)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Kind, E> {
        Ok(Kind::Number)
    }

    fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
        Ok(Kind::String)
    }

    fn visit_unit<E>(self) -> Result<Kind, E> {
        Ok(Kind::Null)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
        self.enter()?;
        while seq.next_element_seed(self.nested())?.is_some() {}
        Ok(Kind::Array)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
        self.enter()?;
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                self.problem.set(Some(Problem::DuplicateKey(key)));
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(self.nested())?;
            seen.insert(key);
        }
        Ok(Kind::Object)
    }
}

/// Query parameters; unknown or malformed ones get the envelope.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
    }
}

/// A UUID path parameter; anything else is a 400 `invalid_id`.
#[derive(Debug, Clone, Copy)]
pub struct IdPath(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(raw) = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", "invalid id in path"))?;
        uuid::Uuid::parse_str(&raw)
            .map(Self)
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", "ids are UUIDs"))
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Principal id.
    pub id: String,
    /// Global roles.
    pub roles: Vec<Role>,
}

impl Caller {
    /// The caller as the engine's access rules ([`tollgate_engine::policy`]) see it.
    #[must_use]
    pub fn viewer(&self) -> Viewer<'_> {
        Viewer::new(&self.id, &self.roles)
    }

    /// Admin role.
    #[must_use]
    pub fn is_admin(&self) -> bool {
        self.viewer().is_admin()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::unauthenticated)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty() && t.len() <= 256)
            .ok_or_else(ApiError::unauthenticated)?;
        let hash = tollgate_engine::runtime::hash_token(token);
        let now = state.engine.shared().clock.now();
        // Looked up on every request (no cache): a revocation or an expiry holds on the next
        // request, on every replica.
        let token = tollgate_engine::store::query::authenticate_token(&state.engine.db().read, &hash, now)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        let live = state.engine.shared().live();
        let p = live.directory.active_principal(&token.principal).ok_or_else(ApiError::unauthenticated)?;
        state.engine.record_token_use(&token);
        Ok(Self { id: p.id.clone(), roles: p.roles.clone() })
    }
}

/// The channel a request came through, for the audit log: `cli` when the official CLI sent it
/// (it identifies itself by `User-Agent`), else `api`. Informative only: the bearer token, not
/// this header, binds the actor.
#[derive(Debug, Clone, Copy)]
pub struct Channel(pub &'static str);

impl<S: Send + Sync> FromRequestParts<S> for Channel {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let cli = parts
            .headers
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ua| ua.starts_with("tollgate-cli/"));
        Ok(Self(if cli { "cli" } else { "api" }))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use serde::Deserialize;

    use super::{MAX_JSON_DEPTH, check_json_content_type, parse_body};

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        a: String,
        #[serde(default)]
        b: Option<Vec<String>>,
        #[serde(default)]
        c: Option<serde_json::Value>,
    }

    /// Accepted, or refused with this status and a detail containing this text.
    type Expected = Result<(), (StatusCode, &'static str)>;

    #[test]
    fn bodies_are_one_object_without_repeated_keys() {
        let nested = |n: usize| format!(r#"{{"a":"x","c":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        let cases: Vec<(String, Expected)> = vec![
            (r#"{"a":"x"}"#.to_owned(), Ok(())),
            (r#" {"a":"x","b":["y"],"c":{"k":[1,2.5,true,null]}} "#.to_owned(), Ok(())),
            (nested(MAX_JSON_DEPTH - 1), Ok(())),
            (nested(MAX_JSON_DEPTH), Err((StatusCode::BAD_REQUEST, "deeper than 32"))),
            (r#"["x"]"#.to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "not an array"))),
            (r#""x""#.to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "not a string"))),
            ("-1.5e3".to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "not a number"))),
            ("false".to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "not a boolean"))),
            ("null".to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "not null"))),
            (r#"{"a":"x","a":"y"}"#.to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, r#"duplicate key "a""#))),
            (
                r#"{"a":"x","c":{"k":1,"k":1}}"#.to_owned(),
                Err((StatusCode::UNPROCESSABLE_ENTITY, r#"duplicate key "k""#)),
            ),
            // The same key spelled with an escape is the same key.
            (r#"{"a":"x","\u0061":"y"}"#.to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, r#"duplicate key "a""#))),
            // Equal keys in different objects are fine.
            (r#"{"a":"x","c":[{"k":1},{"k":2}]}"#.to_owned(), Ok(())),
            (r#"{"a":"x","z":1}"#.to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "unknown field `z`"))),
            (r#"{"a":1}"#.to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "a: invalid type"))),
            (r#"{"b":[]}"#.to_owned(), Err((StatusCode::UNPROCESSABLE_ENTITY, "missing field `a`"))),
            (r#"{"a":"x"}x"#.to_owned(), Err((StatusCode::BAD_REQUEST, "not valid JSON"))),
            (r#"{"a":"x",}"#.to_owned(), Err((StatusCode::BAD_REQUEST, "not valid JSON"))),
            (String::new(), Err((StatusCode::BAD_REQUEST, "empty"))),
            ("\t\r\n ".to_owned(), Err((StatusCode::BAD_REQUEST, "empty"))),
        ];
        for (body, want) in cases {
            let got = parse_body::<Body>(body.as_bytes()).map(|_| ()).map_err(|e| (e.status, e.detail));
            match (&got, want) {
                (Ok(()), Ok(())) => {}
                (Err((status, detail)), Err((want_status, want_detail))) => {
                    assert_eq!(*status, want_status, "{body}: {detail}");
                    assert!(detail.contains(want_detail), "{body}: {detail:?} lacks {want_detail:?}");
                }
                _ => panic!("{body}: got {got:?}, want {want:?}"),
            }
        }
        let err = parse_body::<Body>(b"{\"a\":\"\xff\"}").expect_err("not UTF-8");
        assert_eq!((err.status, err.code), (StatusCode::BAD_REQUEST, "invalid_request"));
        assert!(err.detail.contains("UTF-8"), "{}", err.detail);
    }

    #[test]
    fn json_media_types() {
        let check = |ct: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).expect("header"));
            }
            check_json_content_type(&h).is_ok()
        };
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/vnd.tollgate+json",
        ] {
            assert!(check(Some(ok)), "{ok}");
        }
        for refused in [
            None,
            Some(""),
            Some("json"),
            Some("text/json"),
            Some("text/plain"),
            Some("application/+json"),
            Some("application/jsonx"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/json; charset=iso-8859-1"),
            Some("application/json; charset=utf-16"),
        ] {
            assert!(!check(refused), "{refused:?}");
        }
    }
}
