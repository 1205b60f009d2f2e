//! `/v1/admin`: operating Tollgate itself.

use axum::extract::State;
use tollgate_engine::config_sync::ReloadOrigin;
use tollgate_engine::policy;

use crate::app::AppState;
use crate::dto::{ReloadOut, WorkflowRef};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Caller;
use crate::reload::ReloadError;

/// Reload the directory (principals, groups, integrations) and the workflows from the
/// configuration files, without a restart: checked whole first (every setting, file, reference
/// and connector, as at start-up), so a bad change is refused and the running configuration
/// stays; then stored and audited (`config_reloaded`, one record per directory change and new
/// workflow version; a refusal as `config_reload_refused`), and applied on every replica.
/// Requests in flight keep their pinned workflow versions. Admins only; `SIGHUP` does the same.
#[utoipa::path(
    post, path = "/v1/admin/reload", tag = "admin", operation_id = "reloadConfig",
    responses(
        (status = 200, description = "Applied (`changes` is empty when the files had not changed)", body = ReloadOut),
        (status = 403, description = "- `forbidden`: only admins reload the configuration", body = ErrorBody),
        (status = 422, description = "- `invalid_config`: the configuration files are invalid; `detail` lists every problem found, and nothing was applied", body = ErrorBody),
        (status = 503, description = "- `reload_unavailable`: this server was not started from configuration files (`tollgate serve`)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn reload(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<ReloadOut>> {
    if !policy::may_reload_config(caller.viewer()) {
        return Err(ApiError::forbidden("only admins reload the configuration"));
    }
    let Some(reloader) = &state.reloader else {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "reload_unavailable",
            "this server was not started from configuration files",
        ));
    };
    let origin = ReloadOrigin { actor: caller.id.clone(), channel: "api".to_owned(), announce: true };
    match reloader.reload(origin).await {
        Ok(r) => Ok(axum::Json(ReloadOut {
            workflows: r.workflows.into_iter().map(|(key, version)| WorkflowRef { key, version }).collect(),
            changes: r.changes.into_iter().map(Into::into).collect(),
        })),
        Err(ReloadError::Invalid(detail)) => {
            Err(ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", detail))
        }
        Err(ReloadError::Failed(e)) => Err(e.into()),
    }
}
