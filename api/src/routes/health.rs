//! Liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use sea_orm::ConnectionTrait;
use tollgate_engine::health::{Health, LoopState};

use crate::app::AppState;
use crate::dto::HealthOut;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The process is up (liveness: it answers; nothing else is checked).
#[utoipa::path(get, path = "/healthz", tag = "health", operation_id = "healthz", responses((status = 200, description = "Up", body = HealthOut)))]
pub(crate) async fn healthz() -> axum::Json<HealthOut> {
    axum::Json(HealthOut { status: "ok".to_owned() })
}

/// Ready to serve: the database answers, and the writer, the timer service and the outbox
/// dispatcher are running and in time (none stopped, none stuck past `engine.stall_bound_secs`).
/// 503 `unavailable` otherwise, saying which.
#[utoipa::path(get, path = "/readyz", tag = "health", operation_id = "readyz", responses(
    (status = 200, description = "Ready", body = HealthOut),
    (status = 503, description = "- `unavailable`: the database does not answer, or a loop is stopped or stuck (the detail says which)", body = ErrorBody,
        example = json!({ "error": { "code": "unavailable", "detail": "not ready: writer stuck for 42 s" } }))
))]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<HealthOut>> {
    let unavailable = |detail: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail);
    state
        .engine
        .db()
        .read
        .execute_unprepared("SELECT 1")
        .await
        .map_err(|_| unavailable("database unavailable".to_owned()))?;
    let health = state.engine.health();
    if !health.is_ready() {
        let detail = format!("not ready: {}", describe(&health));
        tracing::warn!(%detail, "readiness check failed");
        return Err(unavailable(detail));
    }
    Ok(axum::Json(HealthOut { status: "ok".to_owned() }))
}

/// `writer stuck for 42 s, timer service stopped`: the loops that are not ok.
fn describe(h: &Health) -> String {
    [("writer", h.writer), ("timer service", h.timers), ("outbox dispatcher", h.dispatcher)]
        .into_iter()
        .filter_map(|(name, state)| match state {
            LoopState::Ok => None,
            LoopState::Stopped => Some(format!("{name} stopped")),
            LoopState::Stuck { for_secs } => Some(format!("{name} stuck for {for_secs} s")),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
