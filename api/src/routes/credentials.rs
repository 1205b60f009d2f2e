//! `/v1/credentials`: the credential inventory. Admins record credentials (one at a time, or an
//! import file, all rows or none); admins and auditors see every credential, owners their own,
//! everyone else none. No response ever holds a secret value.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tollgate_engine::credential::{self, CredentialKind, CredentialStatus, ImportFormat, ParsedFile, RowError};
use tollgate_engine::feature::credentials::ImportMode;
use tollgate_engine::policy;
use tollgate_engine::store::query::{self, CredentialFilter};
use utoipa::IntoParams;

use crate::app::AppState;
use crate::dto::{CredentialImportIn, CredentialIn, CredentialOut, ImportRefusedOut, ImportReportOut, Page};
use crate::error::{ApiError, ApiResult, ErrorBody, ErrorDetail};
use crate::extract::{Caller, Channel, Json, Query};
use crate::openapi;
use crate::routes::paging;

/// Credential listing filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Only this integration's credentials.
    integration: Option<String>,
    /// Only this owner's (admins and auditors; everyone else sees only their own).
    owner: Option<String>,
    /// Only this kind.
    #[param(schema_with = openapi::credential_kind)]
    kind: Option<String>,
    /// Only those expiring before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    expiring_before: Option<String>,
    /// `active` or `expired`.
    #[param(schema_with = openapi::credential_status)]
    status: Option<String>,
    /// Cursor from a previous page.
    #[param(schema_with = openapi::id_cursor)]
    cursor: Option<String>,
    /// Page size.
    #[param(schema_with = openapi::page_limit)]
    limit: Option<u64>,
}

/// List inventoried credentials, newest first (admins and auditors: every credential; others:
/// those they own). Secret values are never shown.
#[utoipa::path(
    get, path = "/v1/credentials", tag = "credentials", operation_id = "listCredentials", params(ListParams),
    responses(
        (status = 200, description = "A page of credentials", body = Page<CredentialOut>),
        (status = 400, description = "- `invalid_query`: unknown kind or status, a time that is not RFC 3339, bad cursor or limit out of range", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<Page<CredentialOut>>> {
    let limit = paging::limit(p.limit)?;
    let now = state.engine.shared().clock.now();
    let status = paging::status(p.status.as_deref(), CredentialStatus::parse)?;
    let kind = p
        .kind
        .as_deref()
        .map(|k| CredentialKind::parse(k).ok_or_else(|| paging::invalid_query(format!("unknown kind {k:?}"))))
        .transpose()?;
    let expiring_before = p
        .expiring_before
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|_| paging::invalid_query("expiring_before must be an RFC 3339 time"))
        })
        .transpose()?;
    let cursor = paging::cursor::<uuid::Uuid>(p.cursor.as_deref())?;
    let viewer = caller.viewer();
    let owner = match p.owner {
        // Someone else's credentials, to a caller who may not see them: none to show.
        Some(o) if !policy::may_view_credential(viewer, &o) => {
            return Ok(axum::Json(Page { items: vec![], next_cursor: None }));
        }
        Some(o) => Some(o),
        None if policy::may_view_all_credentials(viewer) => None,
        None => Some(caller.id.clone()),
    };
    let filter =
        CredentialFilter { integration: p.integration, owner, kind, expiring_before, status: status.map(|s| (s, now)) };
    // One more than asked: a next page is announced only when there is one.
    let mut rows = query::list_credentials(&state.engine.db().read, &filter, cursor, limit + 1).await?;
    let more = rows.len() as u64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = if more { rows.last().map(|c| c.id.to_string()) } else { None };
    let items = rows.iter().map(|c| CredentialOut::new(c, now)).collect();
    Ok(axum::Json(Page { items, next_cursor }))
}

/// One credential, by name (or id), with its versions. A credential the caller may not see
/// answers 404, exactly as one that does not exist.
#[utoipa::path(
    get, path = "/v1/credentials/{name}", tag = "credentials", operation_id = "getCredential",
    params(("name" = String, Path, description = "Credential name (or id)")),
    responses(
        (status = 200, description = "The credential", body = CredentialOut),
        (status = 404, description = "- `not_found`: no such credential, or one the caller may not see", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<CredentialOut>> {
    let found = query::credential(&state.engine.db().read, &name).await?;
    let Some(c) = found.filter(|c| policy::may_view_credential(caller.viewer(), &c.owner)) else {
        return Err(ApiError::not_found("credential"));
    };
    Ok(axum::Json(CredentialOut::new(&c, state.engine.shared().clock.now())))
}

/// The error of a row refused by the engine, for a single create.
fn row_error(e: &RowError) -> ApiError {
    let detail = format!("{}: {}", e.field, e.message);
    match e.field.as_str() {
        "integration" if e.message.starts_with("no integration") => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_integration", detail)
        }
        "owner" if e.message.starts_with("no principal") => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_principal", detail)
        }
        "value" if e.message.contains("[secrets] key") => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "sealing_not_configured", detail)
        }
        "name" if e.message.ends_with("exists") => ApiError::new(StatusCode::CONFLICT, "credential_exists", detail),
        _ => ApiError::validation(detail),
    }
}

/// Record one credential (admins). A secret `value` is stored sealed with the server's
/// `[secrets] key` and never shown again; without a key, give `secret_ref`. Audited as
/// `credential_created`.
#[utoipa::path(
    post, path = "/v1/credentials", tag = "credentials", operation_id = "createCredential", request_body = CredentialIn,
    responses(
        (status = 201, description = "Recorded", body = CredentialOut),
        (status = 403, description = "- `forbidden`: only admins record credentials", body = ErrorBody),
        (status = 409, description = "- `credential_exists`: a credential has this name (change it with an import)", body = ErrorBody),
        (status = 422, description = "- `unknown_integration`: no such integration in the directory\n- `unknown_principal`: `owner` is no principal of the directory\n- `sealing_not_configured`: a `value` was given and the server has no `[secrets] key`\n- `validation_failed`: a field is missing, too long, of the wrong form, or both `secret_ref` and `value` are given", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    Json(body): Json<CredentialIn>,
) -> ApiResult<(StatusCode, axum::Json<CredentialOut>)> {
    if !policy::may_manage_credentials(caller.viewer()) {
        return Err(ApiError::forbidden("only admins record credentials"));
    }
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(&body) else {
        return Err(ApiError::validation("the body must be a credential"));
    };
    let input = credential::check_json(&fields).map_err(|e| row_error(&e))?;
    if query::credential(&state.engine.db().read, &input.name).await?.is_some_and(|c| c.name == input.name) {
        return Err(ApiError::new(StatusCode::CONFLICT, "credential_exists", "a credential has this name"));
    }
    let name = input.name.clone();
    let parsed = ParsedFile { rows: vec![input], invalid: Vec::new() };
    let report = state.engine.import_credentials(parsed, ImportMode::CreateOnly, false, &caller.id, channel).await?;
    if let Some(e) = report.invalid.first() {
        return Err(row_error(e));
    }
    let stored =
        query::credential(&state.engine.db().read, &name).await?.ok_or_else(|| ApiError::not_found("credential"))?;
    Ok((StatusCode::CREATED, axum::Json(CredentialOut::new(&stored, state.engine.shared().clock.now()))))
}

/// Import credentials from a YAML or CSV file (admins): each row is created, updated or left
/// unchanged, matched by `name`, in one transaction. If any row is invalid nothing is stored
/// and the answer names every invalid row by line. Importing the same file again changes
/// nothing and writes no audit record. Audited as one `credential_created` or
/// `credential_updated` per changed credential and a `credentials_imported` summary. The file
/// travels as a JSON string, so the body (`http.max_body_bytes`) bounds its size.
#[utoipa::path(
    post, path = "/v1/credentials/import", tag = "credentials", operation_id = "importCredentials",
    request_body = CredentialImportIn,
    responses(
        (status = 200, description = "Imported (or, with `dry_run`, what an import would do)", body = ImportReportOut),
        (status = 403, description = "- `forbidden`: only admins import credentials", body = ErrorBody),
        (status = 422, description = "- `invalid_rows`: at least one row is invalid; nothing was stored. Beside `error`, the body holds `report` (an `ImportReportOut`) whose `errors` name each invalid row by line, field and reason\n- `validation_failed`: `format` is not `yaml` or `csv`", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    Json(body): Json<CredentialImportIn>,
) -> ApiResult<Response> {
    if !policy::may_manage_credentials(caller.viewer()) {
        return Err(ApiError::forbidden("only admins import credentials"));
    }
    let format = ImportFormat::parse(&body.format)
        .filter(|_| matches!(body.format.as_str(), "yaml" | "csv"))
        .ok_or_else(|| ApiError::validation("format: must be `yaml` or `csv`"))?;
    // Parsing a large file is CPU work: off the async workers.
    let content = body.content;
    let parsed = tokio::task::spawn_blocking(move || credential::parse(format, &content, &mut |_| {}))
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let report = state.engine.import_credentials(parsed, ImportMode::Upsert, body.dry_run, &caller.id, channel).await?;
    let out = ImportReportOut::new(&report, body.dry_run);
    if let Some(first) = report.invalid.first() {
        let detail = format!("{} invalid row(s), nothing imported; first: {first}", report.invalid.len());
        let refused = ImportRefusedOut { error: ErrorDetail { code: "invalid_rows".to_owned(), detail }, report: out };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, axum::Json(refused)).into_response());
    }
    Ok(axum::Json(out).into_response())
}
