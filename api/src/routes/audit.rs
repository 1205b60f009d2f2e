//! `/v1/audit`: the hash-chained audit log, for admins and auditors.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use tollgate_engine::ids::RunId;
use tollgate_engine::policy;
use tollgate_engine::store::query;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::dto::{AuditRecordOut, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT, Page, VerifyOut};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Query};
use crate::openapi;

fn require_auditor(caller: &Caller) -> ApiResult<()> {
    if policy::may_read_audit(caller.viewer()) {
        Ok(())
    } else {
        Err(ApiError::forbidden("the audit log is for admins and auditors"))
    }
}

/// Audit listing parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    /// Return records with a sequence greater than this (the previous page's `next_cursor`).
    cursor: Option<i64>,
    /// Only records of this request.
    request: Option<uuid::Uuid>,
    /// Page size.
    #[param(schema_with = openapi::audit_limit)]
    limit: Option<u64>,
}

/// Audit records in sequence order.
#[utoipa::path(get, path = "/v1/audit", tag = "audit", operation_id = "listAudit", params(AuditParams),
    responses(
        (status = 200, description = "A page of records", body = Page<AuditRecordOut>),
        (status = 403, description = "- `forbidden`: the audit log is for admins and auditors", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<AuditParams>,
) -> ApiResult<axum::Json<Page<AuditRecordOut>>> {
    require_auditor(&caller)?;
    let limit = p.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if !(1..=MAX_AUDIT_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!("limit must be between 1 and {MAX_AUDIT_LIMIT}"),
        ));
    }
    // One more than asked: a next page is announced only when there is one.
    let mut records =
        query::audit_page(&state.engine.db().read, p.cursor.unwrap_or(0), limit + 1, p.request.map(RunId)).await?;
    let more = records.len() as u64 > limit;
    records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { records.last().map(|r| r.seq.to_string()) } else { None };
    Ok(axum::Json(Page { items: records.into_iter().map(AuditRecordOut::from).collect(), next_cursor }))
}

/// Verifies every link of the chain; reports the first broken sequence.
#[utoipa::path(get, path = "/v1/audit/verify", tag = "audit", operation_id = "verifyAudit",
    responses(
        (status = 200, description = "Verification result (ok false with broken_at when the chain is broken)", body = VerifyOut),
        (status = 403, description = "- `forbidden`: the audit log is for admins and auditors", body = ErrorBody)
    ),
    security(("bearer" = [])))]
pub(crate) async fn verify(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<VerifyOut>> {
    require_auditor(&caller)?;
    Ok(axum::Json(VerifyOut::from(query::verify_audit(state.engine.db()).await?)))
}
