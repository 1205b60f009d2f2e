//! `/v1/tasks`: manual-connector tasks that a named operator confirms.

use axum::extract::State;
use tollgate_engine::ids::TaskId;
use tollgate_engine::policy;
use tollgate_engine::store::query;

use crate::app::AppState;
use crate::dto::{Page, TaskCompleteIn, TaskOut};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, IdPath, Json};

/// Open tasks: the caller's own, or all for admins.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks",
    responses((status = 200, body = Page<TaskOut>), (status = 401, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Page<TaskOut>>> {
    let operator = (!policy::may_view_all_tasks(caller.viewer())).then_some(caller.id.as_str());
    let tasks = query::list_tasks(&state.engine.db().read, operator).await?;
    Ok(axum::Json(Page { items: tasks.into_iter().map(TaskOut::from).collect(), next_cursor: None }))
}

/// Confirm a task was done (or report that it failed). Only its operator or an admin.
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    request_body = TaskCompleteIn,
    responses((status = 200, body = Page<TaskOut>), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    Json(body): Json<TaskCompleteIn>,
) -> ApiResult<axum::Json<Page<TaskOut>>> {
    let done = match body.outcome.as_deref() {
        None | Some("done") => true,
        Some("failed") => false,
        Some(_) => return Err(ApiError::validation("outcome: must be done or failed")),
    };
    state.engine.resolve_task(TaskId(id), &caller.id, caller.is_admin(), done, body.comment).await?;
    let task = query::task(&state.engine.db().read, TaskId(id)).await?;
    Ok(axum::Json(Page { items: task.into_iter().map(TaskOut::from).collect(), next_cursor: None }))
}
