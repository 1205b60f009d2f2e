//! `/v1/tasks`: manual-connector tasks that a named operator confirms.

use axum::extract::State;
use serde::Deserialize;
use tollgate_engine::ids::TaskId;
use tollgate_engine::policy;
use tollgate_engine::store::query::{self, TaskFilter, TaskState};
use utoipa::IntoParams;
use utoipa::openapi::schema::{ObjectBuilder, Type};

use crate::app::AppState;
use crate::dto::{Page, TaskCompleteIn, TaskOut};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, IdPath, Json, Query};
use crate::openapi;
use crate::routes::paging;

/// The `status` filter of `GET /v1/tasks`.
fn task_status_filter() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(TaskState::ALL.map(TaskState::as_str)))
        .default(Some(serde_json::json!(TaskState::Open.as_str())))
        .description(Some("`open` (the default), `done` (resolved: done or failed) or `all`."))
}

/// Task listing filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// `open` (default), `done` (resolved: done or failed) or `all`.
    #[param(schema_with = task_status_filter)]
    status: Option<String>,
    /// Cursor from a previous page.
    #[param(schema_with = openapi::id_cursor)]
    cursor: Option<String>,
    /// Page size.
    #[param(schema_with = openapi::page_limit)]
    limit: Option<u64>,
}

/// List manual tasks, newest first: open ones unless `status` says otherwise; the caller's own
/// (as operator), or everyone's for admins.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", operation_id = "listTasks", params(ListParams),
    responses(
        (status = 200, description = "A page of tasks", body = Page<TaskOut>, links(
            ("completeTask" = (operation_id = "completeTask", parameters(("id" = "$response.body#/items/0/id")), description = "Resolve the first task"))
        )),
        (status = 400, description = "- `invalid_query`: unknown status, bad cursor or limit out of range", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<Page<TaskOut>>> {
    let limit = paging::limit(p.limit)?;
    let status = paging::status(p.status.as_deref(), TaskState::parse)?.unwrap_or_default();
    let cursor = paging::cursor::<uuid::Uuid>(p.cursor.as_deref())?.map(TaskId);
    let operator = (!policy::may_view_all_tasks(caller.viewer())).then(|| caller.id.clone());
    let filter = TaskFilter { operator, state: status };
    // One more than asked: a next page is announced only when there is one.
    let mut tasks = query::list_tasks(&state.engine.db().read, &filter, cursor, limit + 1).await?;
    let more = tasks.len() as u64 > limit;
    tasks.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { tasks.last().map(|t| t.id.0.to_string()) } else { None };
    Ok(axum::Json(Page { items: tasks.into_iter().map(TaskOut::from).collect(), next_cursor }))
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
