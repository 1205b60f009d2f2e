//! `/v1/grants`: who holds what access until when; revoke early.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tollgate_engine::ids::GrantId;
use tollgate_engine::policy;
use tollgate_engine::run::{Grant, GrantStatus};
use tollgate_engine::store::query::{self, GrantFilter};
use utoipa::IntoParams;

use crate::app::AppState;
use crate::dto::{GrantOut, Page};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Channel, IdPath, Query};
use crate::openapi;
use crate::routes::paging;

fn can_view(state: &AppState, caller: &Caller, g: &Grant) -> bool {
    policy::may_view_grant(caller.viewer(), g, &state.engine.shared().live().directory)
}

/// Grant listing filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// `provisioning`, `active`, `revoking`, `revoked`, `revoke_failed`, `failed`.
    #[param(schema_with = openapi::grant_status_filter)]
    status: Option<String>,
    /// Holder.
    principal: Option<String>,
    /// Integration.
    integration: Option<String>,
    /// Cursor from a previous page.
    #[param(schema_with = openapi::id_cursor)]
    cursor: Option<String>,
    /// Page size.
    #[param(schema_with = openapi::page_limit)]
    limit: Option<u64>,
}

/// List grants, newest first (admins and auditors: all; others: their own and those on
/// integrations they own).
#[utoipa::path(
    get, path = "/v1/grants", tag = "grants", operation_id = "listGrants", params(ListParams),
    responses((status = 200, description = "A page of grants", body = Page<GrantOut>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<Page<GrantOut>>> {
    let limit = paging::limit(p.limit)?;
    let status = paging::status(p.status.as_deref(), GrantStatus::parse)?;
    let mut cursor = paging::cursor::<GrantId>(p.cursor.as_deref())?;
    let filter = GrantFilter { status, principal: p.principal, integration: p.integration };
    let mut items = Vec::new();
    let mut exhausted = false;
    for _ in 0..20 {
        let batch = query::list_grants(&state.engine.db().read, &filter, cursor, limit).await?;
        exhausted = (batch.len() as u64) < limit;
        for g in batch {
            cursor = Some(g.id);
            if can_view(&state, &caller, &g) && (items.len() as u64) < limit {
                items.push(GrantOut::from(&g));
            }
        }
        if exhausted || items.len() as u64 >= limit {
            break;
        }
    }
    let next_cursor = if exhausted { None } else { items.last().map(|g| g.id.to_string()) };
    Ok(axum::Json(Page { items, next_cursor }))
}

/// One grant.
#[utoipa::path(
    get, path = "/v1/grants/{id}", tag = "grants", operation_id = "getGrant",
    params(("id" = uuid::Uuid, Path, description = "Grant id")),
    responses(
        (status = 200, description = "The grant", body = GrantOut, links(
            ("revokeGrant" = (operation_id = "revokeGrant", parameters(("id" = "$response.body#/id")), description = "End it early")),
            ("getRequest" = (operation_id = "getRequest", parameters(("id" = "$response.body#/request")), description = "The request that created it"))
        )),
        (status = 404, description = "- `not_found`: no such grant, or one the caller may not see", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> ApiResult<axum::Json<GrantOut>> {
    let g = query::grant(&state.engine.db().read, GrantId(id))
        .await?
        .filter(|g| can_view(&state, &caller, g))
        .ok_or_else(|| ApiError::not_found("grant"))?;
    Ok(axum::Json(GrantOut::from(&g)))
}

/// Revoke an active grant now (holder, the integration's owner, or an admin). The revoke call
/// happens asynchronously; the grant shows `revoking`, then `revoked` (or `revoke_failed`).
/// A grant whose revocation is already under way (`revoking`, or `revoke_failed` and retried)
/// is not revoked twice: the call answers 202 with the grant as it is.
#[utoipa::path(
    post, path = "/v1/grants/{id}/revoke", tag = "grants", operation_id = "revokeGrant",
    params(("id" = uuid::Uuid, Path, description = "Grant id")),
    responses(
        (status = 202, description = "Revocation under way: started now, or already (`revoking`, `revoke_failed`), in which case this call adds nothing to it", body = GrantOut, links(
            ("getGrant" = (operation_id = "getGrant", parameters(("id" = "$response.body#/id")), description = "Follow the revocation"))
        )),
        (status = 403, description = "- `forbidden`: only the grant's holder, the integration's owner or an admin may revoke it", body = ErrorBody),
        (status = 404, description = "- `not_found`: no such grant, or one the caller may not see", body = ErrorBody),
        (status = 409, description = "- `grant_not_active`: the grant is revoked already, was never granted, or is still being provisioned", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    IdPath(id): IdPath,
) -> ApiResult<(StatusCode, axum::Json<GrantOut>)> {
    let db = &state.engine.db().read;
    let g = query::grant(db, GrantId(id))
        .await?
        .filter(|g| can_view(&state, &caller, g))
        .ok_or_else(|| ApiError::not_found("grant"))?;
    // Checked after visibility: a grant the caller may not see stays a 404, not a 403.
    if !policy::may_revoke_grant(caller.viewer(), &g, &state.engine.shared().live().directory) {
        return Err(ApiError::forbidden("only the grant's holder, the integration's owner or an admin may revoke it"));
    }
    state.engine.revoke_grant(GrantId(id), &caller.id, channel).await?;
    let g = query::grant(db, GrantId(id)).await?.ok_or_else(|| ApiError::not_found("grant"))?;
    Ok((StatusCode::ACCEPTED, axum::Json(GrantOut::from(&g))))
}
