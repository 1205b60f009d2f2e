//! `/v1/grants`: who holds what access until when; revoke early.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use tollgate_engine::feature::grant_secrets::Retrieval;
use tollgate_engine::ids::GrantId;
use tollgate_engine::policy;
use tollgate_engine::run::{Grant, GrantStatus};
use tollgate_engine::store::query::{self, GrantFilter};
use utoipa::IntoParams;

use crate::app::AppState;
use crate::dto::{GrantOut, GrantSecretOut, Page};
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
///
/// `next_cursor` is given only when more rows follow: a page exactly full with nothing after it
/// has none. (A page for a caller who may see only some grants reads a bounded number of rows;
/// when it stops before knowing, `next_cursor` continues after the last row it read.)
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
    let cursor = paging::cursor::<GrantId>(p.cursor.as_deref())?;
    let filter = GrantFilter { status, principal: p.principal, integration: p.integration };
    // Filtered after the query for callers who may see only some grants; a next page is
    // announced only when there is one (or when the page's bounded reads ran out first).
    let page =
        query::list_visible_grants(&state.engine.db().read, &filter, cursor, limit, |g| can_view(&state, &caller, g))
            .await?;
    let items = page.items.iter().map(GrantOut::from).collect();
    let next_cursor = page.next_cursor.map(|id| id.to_string());
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

/// Retrieve, once, the credential the grant's connector minted for its holder.
///
/// An access token, an installation token: only the holder may retrieve it (not an admin, not
/// the integration's owner), and the secret is erased as it is handed over
/// (audited `grant_secret_retrieved`, never the value), and a secret not retrieved within
/// `engine.secret_delivery_secs` of being minted is destroyed unread (`grant_secret_expired`).
/// A renewal or rotation that mints again makes a new one retrievable. The answer carries
/// `Cache-Control: no-store`; nothing else — logs, the audit log, notifications, other answers —
/// ever shows the secret.
#[utoipa::path(
    post, path = "/v1/grants/{id}/secret", tag = "grants", operation_id = "retrieveGrantSecret",
    params(("id" = uuid::Uuid, Path, description = "Grant id")),
    responses(
        (status = 200, description = "The secret, this once", body = GrantSecretOut,
            headers(("Cache-Control" = String, description = "`no-store`"))),
        (status = 404, description = "- `not_found`: no such grant, or the caller is not its holder (admins and the integration's owner included: only the holder may retrieve its secret; audited as `grant_secret_refused`)", body = ErrorBody),
        (status = 409, description = "- `no_secret`: the grant's connector minted no secret for it (or has not yet: the grant is still provisioning)\n- `grant_not_active`: the grant is not active (revoking, revoked, failed): its secret is not handed over, and is destroyed at its deadline\n- `secret_unreadable`: the secret cannot be opened with the configured `[secrets] key` (none configured, or another key sealed it); it stays sealed until its deadline", body = ErrorBody),
        (status = 410, description = "- `secret_gone`: the secret was retrieved already, or destroyed unread at its delivery deadline (which, and when, is in the detail)", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn secret(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    IdPath(id): IdPath,
) -> ApiResult<Response> {
    match state.engine.retrieve_grant_secret(GrantId(id), &caller.id, channel).await? {
        Retrieval::Secret { value, expires_at } => {
            let body = GrantSecretOut { secret: value.expose_secret().to_owned(), expires_at };
            let mut response = axum::Json(body).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Retrieval::Gone { how, at } => Err(ApiError::new(
            StatusCode::GONE,
            "secret_gone",
            format!("the grant's secret is gone: {how} at {}", at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        )),
        Retrieval::NoSecret => {
            Err(ApiError::new(StatusCode::CONFLICT, "no_secret", "the grant's connector minted no secret for it"))
        }
        Retrieval::NotActive(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "grant_not_active",
            format!("the grant is {}: its secret is not handed over", status.as_str()),
        )),
        Retrieval::Unreadable(why) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "secret_unreadable",
            format!("the grant's secret cannot be opened: {why}"),
        )),
    }
}
