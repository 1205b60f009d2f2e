//! `/v1/tasks`: manual-connector tasks that a named operator confirms.

use axum::extract::State;
use tollgate_engine::ids::TaskId;
use tollgate_engine::policy;
use tollgate_engine::store::query;

use crate::app::AppState;
use crate::dto::{Page, TaskCompleteIn, TaskOut};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, IdPath, Json};
use crate::openapi;

/// Open tasks: the caller's own, or all for admins.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", operation_id = "listTasks",
    responses((status = 200, description = "Open tasks", body = Page<TaskOut>, links(
        ("completeTask" = (operation_id = "completeTask", parameters(("id" = "$response.body#/items/0/id")), description = "Resolve the first task"))
    ))),
    security(("bearer" = [])))]
pub(crate) async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<Page<TaskOut>>> {
    let operator = (!policy::may_view_all_tasks(caller.viewer())).then_some(caller.id.as_str());
    let tasks = query::list_tasks(&state.engine.db().read, operator).await?;
    Ok(axum::Json(Page { items: tasks.into_iter().map(TaskOut::from).collect(), next_cursor: None }))
}

/// Confirm a task was done (or report that it failed). Only its operator or an admin.
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks", operation_id = "completeTask",
    params(("id" = uuid::Uuid, Path, description = "Task id")),
    request_body = TaskCompleteIn,
    responses(
        (status = 200, description = "The task, resolved (one item)", body = Page<TaskOut>, links(
            ("getRequest" = (operation_id = "getRequest", parameters(("id" = "$response.body#/items/0/request")), description = "The request the task belongs to"))
        )),
        (status = 403, description = "- `forbidden`: only the task's operator or an admin may resolve it", body = ErrorBody),
        (status = 404, description = "- `not_found`: no such task", body = ErrorBody),
        (status = 409, description = "- `task_resolved`: the task is already resolved", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn complete(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
    Json(body): Json<TaskCompleteIn>,
) -> ApiResult<axum::Json<Page<TaskOut>>> {
    let done = match body.outcome.as_deref() {
        None => true,
        Some(outcome) => openapi::TASK_OUTCOMES
            .into_iter()
            .find_map(|(name, done)| (name == outcome).then_some(done))
            .ok_or_else(|| ApiError::validation("outcome: must be done or failed"))?,
    };
    if let Some(comment) = &body.comment {
        tollgate_engine::policy::check_comment(comment)?;
    }
    state.engine.resolve_task(TaskId(id), &caller.id, caller.is_admin(), done, body.comment).await?;
    let task = query::task(&state.engine.db().read, TaskId(id)).await?;
    Ok(axum::Json(Page { items: task.into_iter().map(TaskOut::from).collect(), next_cursor: None }))
}
