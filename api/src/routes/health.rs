//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use sea_orm::ConnectionTrait;

use crate::app::AppState;
use crate::dto::HealthOut;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = HealthOut)))]
pub(crate) async fn healthz() -> axum::Json<HealthOut> {
    axum::Json(HealthOut { status: "ok".to_owned() })
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = HealthOut), (status = 503, body = ErrorBody)))]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<HealthOut>> {
    state
        .engine
        .db()
        .read
        .execute_unprepared("SELECT 1")
        .await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "database unavailable"))?;
    Ok(axum::Json(HealthOut { status: "ok".to_owned() }))
}
