//! The registry and directory, read-only over the API: integrations, workflows, principals.

use axum::extract::{Path, State};
use tollgate_engine::policy;

use crate::app::AppState;
use crate::dto::{IntegrationOut, Page, PrincipalOut, WorkflowOut};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Caller;

/// Every integration (connector settings are never shown).
#[utoipa::path(get, path = "/v1/integrations", tag = "directory", operation_id = "listIntegrations",
    responses((status = 200, description = "Every integration (one page)", body = Page<IntegrationOut>)), security(("bearer" = [])))]
pub(crate) async fn integrations(State(state): State<AppState>, _caller: Caller) -> axum::Json<Page<IntegrationOut>> {
    let items = state.engine.shared().live().directory.integrations.values().map(IntegrationOut::from).collect();
    axum::Json(Page { items, next_cursor: None })
}

/// One integration, by name.
#[utoipa::path(get, path = "/v1/integrations/{id}", tag = "directory", operation_id = "getIntegration",
    params(("id" = String, Path, description = "Integration name")),
    responses(
        (status = 200, description = "The integration", body = IntegrationOut),
        (status = 404, description = "- `not_found`: no such integration", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn integration(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<IntegrationOut>> {
    let live = state.engine.shared().live();
    let i = live.directory.integrations.get(&id).ok_or_else(|| ApiError::not_found("integration"))?;
    Ok(axum::Json(IntegrationOut::from(i)))
}

/// Every loaded workflow version (older versions stay while runs may use them).
#[utoipa::path(get, path = "/v1/workflows", tag = "directory", operation_id = "listWorkflows",
    responses((status = 200, description = "Every loaded workflow version (one page)", body = Page<WorkflowOut>)), security(("bearer" = [])))]
pub(crate) async fn workflows(State(state): State<AppState>, _caller: Caller) -> axum::Json<Page<WorkflowOut>> {
    let catalog = &state.engine.shared().live().catalog;
    let latest: Vec<(String, u32)> = catalog.latest().iter().map(|d| (d.key.clone(), d.version)).collect();
    let items = catalog
        .all()
        .iter()
        .map(|d| WorkflowOut {
            key: d.key.clone(),
            version: d.version,
            kind: d.kind.as_str().to_owned(),
            description: d.description.clone(),
            latest: latest.contains(&(d.key.clone(), d.version)),
            definition: serde_json::to_value(&**d).unwrap_or_default(),
        })
        .collect();
    axum::Json(Page { items, next_cursor: None })
}

/// Every principal: admins and auditors see every field; everyone else sees `id`, `kind` and
/// `name` of each (enough to pick an approver), and every field of their own entry only.
#[utoipa::path(get, path = "/v1/principals", tag = "directory", operation_id = "listPrincipals",
    responses((status = 200, description = "Every principal (one page)", body = Page<PrincipalOut>)), security(("bearer" = [])))]
pub(crate) async fn principals(State(state): State<AppState>, caller: Caller) -> axum::Json<Page<PrincipalOut>> {
    let principals = &state.engine.shared().live().directory.principals;
    let items = principals
        .values()
        .map(|p| {
            if policy::may_see_principal_details(caller.viewer(), &p.id) {
                PrincipalOut::new(p, groups_of(&state, &p.id))
            } else {
                PrincipalOut::short(p)
            }
        })
        .collect();
    axum::Json(Page { items, next_cursor: None })
}

/// The caller.
#[utoipa::path(get, path = "/v1/me", tag = "directory", operation_id = "getMe",
    responses((status = 200, description = "The caller", body = PrincipalOut)), security(("bearer" = [])))]
pub(crate) async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<PrincipalOut>> {
    let live = state.engine.shared().live();
    let p = live.directory.active_principal(&caller.id).ok_or_else(ApiError::unauthenticated)?;
    Ok(axum::Json(PrincipalOut::new(p, groups_of(&state, &caller.id))))
}

fn groups_of(state: &AppState, id: &str) -> Vec<String> {
    state
        .engine
        .shared()
        .live()
        .directory
        .groups
        .iter()
        .filter(|(_, g)| g.members.iter().any(|m| m == id))
        .map(|(n, _)| n.clone())
        .collect()
}
