//! Extractors whose rejections use the error envelope: JSON bodies, ids in paths, queries, and
//! the authenticated principal.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tollgate_engine::directory::Role;
use tollgate_engine::policy::Viewer;

use crate::app::AppState;
use crate::error::ApiError;

/// A JSON body; malformed, oversized or mistyped bodies get the envelope.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(r: &JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::validation(e.body_text()),
        JsonRejection::JsonSyntaxError(_) => ApiError::bad_request("request body is not valid JSON"),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "request body is too large")
        }
        other => ApiError::bad_request(other.body_text()),
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
        let principal = tollgate_engine::store::query::token_principal(&state.engine.db().read, &hash)
            .await?
            .ok_or_else(ApiError::unauthenticated)?;
        let p = state.engine.shared().directory.active_principal(&principal).ok_or_else(ApiError::unauthenticated)?;
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
