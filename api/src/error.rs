//! The one error envelope: `{"error":{"code":"…","detail":"…"}}` with a stable machine code.
//!
//! Domain errors become 4xx with their reason; infrastructure errors are logged once and
//! answered with a generic 500/503 that echoes nothing.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tollgate_engine::JobError;
use tollgate_engine::policy::InputError;
use tollgate_engine::transition::{RequestError, TransitionError};
use utoipa::ToSchema;

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable detail, safe to show.
    pub detail: String,
}

/// The error envelope.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({ "error": { "code": "not_found", "detail": "request not found" } }))]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside the envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code, e.g. `already_decided`, `validation_failed`, `not_found`.
    pub code: String,
    /// Human-readable explanation.
    pub detail: String,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self { status, code, detail: detail.into() }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", detail)
    }

    /// 422 `validation_failed`.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", detail)
    }

    /// 404 `not_found`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }

    /// 403 `forbidden`.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", "a valid bearer token is required")
    }

    /// 500 `internal`, logging the cause once.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), detail: self.detail } };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        let status = match &e {
            TransitionError::AlreadyDecided(_)
            | TransitionError::Expired
            | TransitionError::Cancelled
            | TransitionError::AlreadyVoted(_)
            | TransitionError::StepOver
            | TransitionError::GrantNotActive(_)
            | TransitionError::AccessGranted => StatusCode::CONFLICT,
            TransitionError::SelfApproval | TransitionError::NotAnApprover(_) | TransitionError::NotAllowed => {
                StatusCode::FORBIDDEN
            }
            TransitionError::TimeOutOfRange => StatusCode::UNPROCESSABLE_ENTITY,
            TransitionError::NotVisible => StatusCode::NOT_FOUND,
            // The workflow cannot serve this request as the directory stands (nobody, or too
            // few people, may approve one of its approvals): refused, like `no_workflow`.
            TransitionError::Invalid(RequestError::NoEligibleApprover { .. }) => StatusCode::UNPROCESSABLE_ENTITY,
            TransitionError::Invalid(inner) => match inner.code() {
                "forbidden" => StatusCode::FORBIDDEN,
                "grant_not_active" => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
        };
        Self::new(status, e.code(), e.to_string())
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::Transition(t) => t.into(),
            JobError::NotFound("integration") => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_integration", "no such integration")
            }
            JobError::NotFound("workflow") => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_workflow",
                "no workflow governs this kind of request on this integration",
            ),
            JobError::NotFound(what) => Self::not_found(what),
            JobError::IdempotencyMismatch => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused", e.to_string())
            }
            JobError::NotTaskOperator => Self::forbidden(e.to_string()),
            JobError::TaskResolved => Self::new(StatusCode::CONFLICT, "task_resolved", e.to_string()),
            JobError::LinkUnusable => Self::not_found("approval link"),
            JobError::ConfigRefused(detail) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", detail),
            JobError::Store(s @ tollgate_engine::store::StoreError::JobPanicked { .. }) => {
                // A bug, logged by the writer with its panic; this request alone failed.
                tracing::error!(error = %s, "request failed on an internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; the request was not carried out",
                )
            }
            JobError::Store(s) => {
                tracing::error!(error = %s, "store error");
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the service is temporarily unavailable")
            }
        }
    }
}

impl From<tollgate_engine::store::StoreError> for ApiError {
    fn from(e: tollgate_engine::store::StoreError) -> Self {
        JobError::Store(e).into()
    }
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;
