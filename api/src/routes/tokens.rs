//! `/v1/tokens`: the API tokens that authenticate callers. Admins create them (for any
//! principal) and see and revoke every one; everyone else sees and revokes their own.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tollgate_engine::policy;
use tollgate_engine::store::query::{self, TokenFilter};
use tollgate_engine::token::{self, TokenInputError, TokenStatus};
use utoipa::IntoParams;

use crate::app::AppState;
use crate::dto::{Page, TokenCreatedOut, TokenIn, TokenOut};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Channel, IdPath, Json, Query};
use crate::openapi;
use crate::routes::paging;

impl From<TokenInputError> for ApiError {
    fn from(e: TokenInputError) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.code(), e.to_string())
    }
}

/// Token listing filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Only this principal's tokens (admins; others always see only their own).
    principal: Option<String>,
    /// `active`, `expired` or `revoked`.
    #[param(schema_with = openapi::token_status)]
    status: Option<String>,
    /// Cursor from a previous page.
    #[param(schema_with = openapi::id_cursor)]
    cursor: Option<String>,
    /// Page size.
    #[param(schema_with = openapi::page_limit)]
    limit: Option<u64>,
}

/// List API tokens, newest first (admins: every token; others: their own). Secrets are never
/// shown.
#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens", operation_id = "listTokens", params(ListParams),
    responses(
        (status = 200, description = "A page of tokens", body = Page<TokenOut>),
        (status = 400, description = "- `invalid_query`: unknown status, bad cursor or limit out of range", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<Page<TokenOut>>> {
    let limit = paging::limit(p.limit)?;
    let now = state.engine.shared().clock.now();
    let status = paging::status(p.status.as_deref(), TokenStatus::parse)?;
    let cursor = paging::cursor::<uuid::Uuid>(p.cursor.as_deref())?;
    let viewer = caller.viewer();
    let principal = match p.principal {
        // Someone else's tokens, to a caller who may not manage them: none to show.
        Some(p) if !policy::may_manage_token(viewer, &p) => {
            return Ok(axum::Json(Page { items: vec![], next_cursor: None }));
        }
        Some(p) => Some(p),
        None if policy::may_manage_all_tokens(viewer) => None,
        None => Some(caller.id.clone()),
    };
    let filter = TokenFilter { principal, status: status.map(|s| (s, now)) };
    // One more than asked: a next page is announced only when there is one.
    let mut tokens = query::list_tokens(&state.engine.db().read, &filter, cursor, limit + 1).await?;
    let more = tokens.len() as u64 > limit;
    tokens.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { tokens.last().map(|t| t.id.to_string()) } else { None };
    let items = tokens.iter().map(|t| TokenOut::new(t, now)).collect();
    Ok(axum::Json(Page { items, next_cursor }))
}

/// Create an API token (admins only). The secret is in this response only: Tollgate stores its
/// SHA-256. Audited as `token_created`.
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens", operation_id = "createToken", request_body = TokenIn,
    responses(
        (status = 201, description = "Created; `secret` is shown this once", body = TokenCreatedOut),
        (status = 403, description = "- `forbidden`: only admins create tokens", body = ErrorBody),
        (status = 422, description = "- `unknown_principal`: no such active principal\n- `validation_failed`: `label` empty, over 100 characters, or holding control or invisible formatting characters\n- `invalid_duration`: `ttl` does not parse\n- `ttl_too_long`: `ttl` over 366 days", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    Json(body): Json<TokenIn>,
) -> ApiResult<(StatusCode, axum::Json<TokenCreatedOut>)> {
    if !policy::may_create_tokens(caller.viewer()) {
        return Err(ApiError::forbidden("only admins create tokens"));
    }
    let ttl = token::check_new_token(&body.label, body.ttl.as_deref())?;
    if state.engine.shared().live().directory.active_principal(&body.principal).is_none() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_principal", "no such active principal"));
    }
    let (stored, secret) = state.engine.create_token(&body.principal, &body.label, ttl, &caller.id, channel).await?;
    let now = state.engine.shared().clock.now();
    Ok((StatusCode::CREATED, axum::Json(TokenCreatedOut { secret, token: TokenOut::new(&stored, now) })))
}

/// Revoke an API token: it stops authenticating on the next request, on every replica. Admins
/// revoke any token, everyone else their own. Revoking a revoked token answers it as it is.
/// Audited as `token_revoked`.
#[utoipa::path(
    post, path = "/v1/tokens/{id}/revoke", tag = "tokens", operation_id = "revokeToken",
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses(
        (status = 200, description = "The token, revoked", body = TokenOut),
        (status = 404, description = "- `not_found`: no such token, or one the caller may not manage", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    IdPath(id): IdPath,
) -> ApiResult<axum::Json<TokenOut>> {
    let revoked = state.engine.revoke_token(id, &caller.id, &caller.roles, channel).await?;
    Ok(axum::Json(TokenOut::new(&revoked, state.engine.shared().clock.now())))
}
