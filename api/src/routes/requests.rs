//! `/v1/requests`: ask for access, follow a request, decide, cancel.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tollgate_engine::Created;
use tollgate_engine::Engine;
use tollgate_engine::ids::{GrantId, RunId};
use tollgate_engine::policy::{self, RequestFields};
use tollgate_engine::run::{Run, RunStatus};
use tollgate_engine::store::query::{self, RunFilter, RunView};
use tollgate_engine::transition::NewRequest;
use utoipa::IntoParams;

use crate::app::AppState;
use crate::dto::{DecisionIn, Page, RequestIn, RequestOut};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Caller, Channel, IdPath, Json, Query};
use crate::openapi;
use crate::routes::paging;

/// Renders a request as the API shows it, with each approval's eligible approvers and the
/// approvals it still needs ([`policy::approval_standing`], against the directory as it is now).
pub(crate) fn render(engine: &Engine, view: &RunView) -> RequestOut {
    let shared = engine.shared();
    let def = shared.live().catalog.get(&view.run.workflow_key, view.run.workflow_version);
    let mut out = RequestOut::new(view, def.as_deref());
    if let Some(def) = &def {
        let standing = policy::approval_standing(&view.run, &view.votes, def, &shared.live().directory);
        for (step, standing) in out.steps.iter_mut().zip(standing) {
            if let Some(s) = standing {
                step.eligible = Some(s.eligible);
                step.remaining = Some(s.remaining);
            }
        }
    }
    out
}

/// Whether `viewer` may see `run` ([`policy::may_view_request`] against the run's pinned
/// workflow and the directory as it is now).
pub(crate) fn can_view(engine: &Engine, viewer: policy::Viewer<'_>, run: &Run) -> bool {
    let shared = engine.shared();
    let definition = shared.live().catalog.get(&run.workflow_key, run.workflow_version);
    policy::may_view_request(viewer, run, definition.as_deref(), &shared.live().directory)
}

async fn load_visible(state: &AppState, caller: &Caller, id: RunId) -> ApiResult<RunView> {
    let view =
        query::run_view_snapshot(&state.engine.db().read, id).await?.ok_or_else(|| ApiError::not_found("request"))?;
    if !can_view(&state.engine, caller.viewer(), &view.run) {
        // Indistinguishable from a missing request: ids are not an oracle.
        return Err(ApiError::not_found("request"));
    }
    Ok(view)
}

/// The `Idempotency-Key` header of `POST /v1/requests`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Header)]
pub(crate) struct IdempotencyHeader {
    /// Makes the request safe to retry: the same key with the same body returns the first
    /// response again (with `Idempotent-Replayed: true`) and creates nothing; the same key with
    /// another body is a 422 `idempotency_key_reused`. Keys are the caller's own.
    #[param(rename = "Idempotency-Key", schema_with = openapi::idempotency_key)]
    key: Option<String>,
}

impl IdempotencyHeader {
    /// Reads the header: 400 `invalid_request` unless it is 1–255 visible ASCII characters.
    fn from_headers(headers: &HeaderMap) -> ApiResult<Self> {
        let Some(value) = headers.get("idempotency-key") else { return Ok(Self { key: None }) };
        if !openapi::is_idempotency_key(value.as_bytes()) {
            return Err(ApiError::bad_request(format!(
                "Idempotency-Key must be 1 to {} visible ASCII characters",
                openapi::MAX_IDEMPOTENCY_KEY
            )));
        }
        Ok(Self { key: Some(String::from_utf8_lossy(value.as_bytes()).into_owned()) })
    }
}

/// Create a request for access.
///
/// The request starts on the latest version of the workflow governing its kind on the
/// integration; its first approvers are notified.
#[utoipa::path(
    post, path = "/v1/requests", tag = "requests", operation_id = "createRequest",
    request_body = RequestIn,
    params(IdempotencyHeader),
    responses(
        (status = 201, description = "Created (or, for a repeated `Idempotency-Key` and body, the first response again)", body = RequestOut,
            headers(
                ("Location" = String, description = "The request's URL, `/v1/requests/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored response to an earlier request with the same `Idempotency-Key`; absent otherwise")
            ),
            links(
                ("getRequest" = (operation_id = "getRequest", parameters(("id" = "$response.body#/id")), description = "Follow the request")),
                ("decideRequest" = (operation_id = "decideRequest", parameters(("id" = "$response.body#/id")), description = "Approve or deny it (an approver)")),
                ("cancelRequest" = (operation_id = "cancelRequest", parameters(("id" = "$response.body#/id")), description = "Cancel it (the requester)"))
            )),
        (status = 200, description = "A `revoke` request for a grant whose revocation another revoke request, still open (awaiting approval or revoking), already asked for: that request, created by nobody new (one revocation per grant)", body = RequestOut,
            headers(
                ("Location" = String, description = "The open revoke request's URL, `/v1/requests/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when this is the stored response to an earlier request with the same `Idempotency-Key`; absent otherwise")
            ),
            links(
                ("getRequest" = (operation_id = "getRequest", parameters(("id" = "$response.body#/id")), description = "Follow the revocation"))
            )),
        (status = 400, description = "- `invalid_request`: `Idempotency-Key` is not 1–255 visible ASCII characters", body = ErrorBody),
        (status = 403, description = "- `forbidden`: the workflow does not let the caller ask (or take break-glass access), or the grant is not theirs (audited as `request_rejected`)", body = ErrorBody),
        (status = 409, description = "- `grant_not_active`: the grant to renew, rotate or revoke is not active (its status is in the detail; a grant whose revocation is under way is `revoking`)", body = ErrorBody),
        (status = 422, description = "- `validation_failed`: a field is out of its limits (kind, integration, scopes, justification)\n- `invalid_duration`: `duration` does not parse\n- `unknown_integration`: no such integration\n- `no_workflow`: no workflow governs this kind of request on the integration\n- `invalid_scope`: no scopes, or one the integration does not offer\n- `duration_required`, `duration_too_long`: against the workflow's parameters\n- `duration_too_short`: less than one second\n- `lifetime_exceeded`: a renewal would keep the grant past the renew workflow's `max_lifetime`\n- `scope_mismatch`: a renew, rotate or revoke request names scopes other than the grant's (name exactly those, or none)\n- `justification_required`: the workflow requires one (break-glass always does)\n- `break_glass_unavailable`: `break_glass` asked of a workflow that offers none, or of a renew, rotate or revoke\n- `invalid_grant`: `grant` missing, unexpected, unknown or of another integration\n- `idempotency_key_reused`: the `Idempotency-Key` was used with another body\n- `no_eligible_approver`: an approval the request would reach (named in the detail, e.g. `steps[0] (\"owner\")`) has fewer people who may approve it than its quorum, escalation included — often nobody, e.g. a workflow whose only approver is the requester; the workflow or the directory must change (audited as `request_rejected`)\n- `time_out_of_range`: a time computed from the request (an expiry, a deadline) is out of range", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    headers: HeaderMap,
    Json(body): Json<RequestIn>,
) -> ApiResult<Response> {
    let checked = policy::check_new_request(&RequestFields {
        kind: body.kind.as_deref(),
        integration: &body.integration,
        scopes: &body.scopes,
        duration: body.duration.as_deref(),
        justification: &body.justification,
    })?;
    let idempotency = match IdempotencyHeader::from_headers(&headers)?.key {
        None => None,
        Some(key) => {
            let canonical = serde_json::to_vec(&body).map_err(|e| ApiError::internal(&e))?;
            Some((caller.id.clone(), key, hex::encode(Sha256::digest(canonical))))
        }
    };
    let grant = match body.grant {
        Some(id) => Some(
            query::grant(&state.engine.db().read, GrantId(id))
                .await?
                .ok_or_else(|| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_grant", "no such grant"))?,
        ),
        None => None,
    };
    let request = NewRequest {
        id: RunId::new(),
        requester: caller.id.clone(),
        kind: checked.kind,
        integration: body.integration,
        scopes: body.scopes,
        duration: checked.duration,
        justification: body.justification.trim().to_owned(),
        grant,
        channel: channel.to_owned(),
        break_glass: body.break_glass,
    };
    let engine: Arc<Engine> = state.engine.clone();
    let render_with = engine.clone();
    let renderer =
        Box::new(move |view: &RunView| serde_json::to_string(&render(&render_with, view)).unwrap_or_default());
    // A refusal by policy (`no_eligible_approver`, `forbidden`) is audited by the engine, as on
    // every other path.
    let created = engine.create_request(request, caller.is_admin(), idempotency, renderer).await?;
    let (status, id, body, replayed) = match created {
        Created::New { id, body } => (StatusCode::CREATED, id.to_string(), body, false),
        Created::Attached { id, body } => {
            tracing::info!(run.id = %id, requester = %caller.id, "revoke request attached to the open one");
            (StatusCode::OK, id.to_string(), body, false)
        }
        Created::Replayed { status, body } => {
            // The stored first response is returned as it was; its id names the request.
            let id =
                serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["id"].as_str().map(str::to_owned));
            (StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED), id.unwrap_or_default(), body, true)
        }
    };
    let mut resp = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/requests/{id}")) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

/// Request listing filters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Status filter.
    #[param(schema_with = openapi::run_status_filter)]
    status: Option<String>,
    /// Requester filter.
    requester: Option<String>,
    /// Integration filter.
    integration: Option<String>,
    /// Cursor from a previous page.
    #[param(schema_with = openapi::id_cursor)]
    cursor: Option<String>,
    /// Page size.
    #[param(schema_with = openapi::page_limit)]
    limit: Option<u64>,
}

/// List requests, newest first. Admins and auditors see all; others see their own and those
/// they may approve.
///
/// `next_cursor` is given only when more rows follow: a page exactly full with nothing after it
/// has none. (A page for a caller who may see only some requests reads a bounded number of rows;
/// when it stops before knowing, `next_cursor` continues after the last row it read.)
#[utoipa::path(
    get, path = "/v1/requests", tag = "requests", operation_id = "listRequests", params(ListParams),
    responses((status = 200, description = "A page of requests", body = Page<RequestOut>)),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ListParams>,
) -> ApiResult<axum::Json<Page<RequestOut>>> {
    let limit = paging::limit(p.limit)?;
    let status = paging::status(p.status.as_deref(), RunStatus::parse)?;
    let cursor = paging::cursor::<RunId>(p.cursor.as_deref())?;
    let filter = RunFilter { status, requester: p.requester, integration: p.integration };
    // Non-privileged callers' pages are filtered after the query, over a bounded number of reads;
    // a next page is announced only when there is one (or when those reads ran out first).
    let viewer = caller.viewer();
    let page = query::list_visible_runs(&state.engine.db().read, &filter, cursor, limit, |run| {
        can_view(&state.engine, viewer, run)
    })
    .await?;
    let mut out = Vec::with_capacity(page.items.len());
    for run in page.items {
        if let Some(view) = query::run_view_snapshot(&state.engine.db().read, run.id).await? {
            out.push(render(&state.engine, &view));
        }
    }
    let next_cursor = page.next_cursor.map(|id| id.to_string());
    Ok(axum::Json(Page { items: out, next_cursor }))
}

/// One request: status, pinned workflow, steps, decisions, grant.
#[utoipa::path(
    get, path = "/v1/requests/{id}", tag = "requests", operation_id = "getRequest",
    params(("id" = uuid::Uuid, Path, description = "Request id")),
    responses(
        (status = 200, description = "The request", body = RequestOut, links(
            ("decideRequest" = (operation_id = "decideRequest", parameters(("id" = "$response.body#/id")), description = "Approve or deny it (an approver)")),
            ("cancelRequest" = (operation_id = "cancelRequest", parameters(("id" = "$response.body#/id")), description = "Cancel it (the requester)")),
            ("getGrant" = (operation_id = "getGrant", parameters(("id" = "$response.body#/grant/id")), description = "The grant, once the request has one"))
        )),
        (status = 404, description = "- `not_found`: no such request, or one the caller may not see", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn show(
    State(state): State<AppState>,
    caller: Caller,
    IdPath(id): IdPath,
) -> ApiResult<axum::Json<RequestOut>> {
    let view = load_visible(&state, &caller, RunId(id)).await?;
    Ok(axum::Json(render(&state.engine, &view)))
}

/// Approve or deny.
#[utoipa::path(
    post, path = "/v1/requests/{id}/decisions", tag = "requests", operation_id = "decideRequest",
    params(("id" = uuid::Uuid, Path, description = "Request id")),
    request_body = DecisionIn,
    responses(
        (status = 200, description = "Decision recorded; or the same decision repeated by the same approver (a retry after a lost answer), which records nothing and returns the request with the decision recorded first", body = RequestOut, links(
            ("getRequest" = (operation_id = "getRequest", parameters(("id" = "$response.body#/id")), description = "Follow the request")),
            ("getGrant" = (operation_id = "getGrant", parameters(("id" = "$response.body#/grant/id")), description = "The grant an approval led to"))
        )),
        (status = 403, description = "- `self_approval`: the requester may not approve their own request\n- `not_an_approver`: the caller may not decide at the current step", body = ErrorBody),
        (status = 404, description = "- `not_found`: no such request, or one the caller may not see (then nothing else about it is revealed: neither `not_an_approver` nor its status)", body = ErrorBody),
        (status = 409, description = "- `already_decided`: the request is past its approval steps\n- `already_voted`: the caller already decided otherwise at this step\n- `expired`: the approval deadline passed\n- `cancelled`: the request was cancelled\n- `step_over`: the step ended meanwhile", body = ErrorBody),
        (status = 422, description = "- `validation_failed`: `comment` is longer than its limit\n- `time_out_of_range`: the next step's deadline is out of range", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn decide(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    IdPath(id): IdPath,
    Json(body): Json<DecisionIn>,
) -> ApiResult<axum::Json<RequestOut>> {
    let decision = openapi::DECISIONS
        .into_iter()
        .find(|d| d.as_str() == body.decision)
        .ok_or_else(|| ApiError::validation("decision: must be approve or deny"))?;
    if let Some(comment) = &body.comment {
        policy::check_comment(comment)?;
    }
    state.engine.decide(RunId(id), &caller.id, decision, body.comment, channel).await?;
    let view = query::run_view_snapshot(&state.engine.db().read, RunId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("request"))?;
    Ok(axum::Json(render(&state.engine, &view)))
}

/// Cancel a pending request (requester or admin).
#[utoipa::path(
    post, path = "/v1/requests/{id}/cancel", tag = "requests", operation_id = "cancelRequest",
    params(("id" = uuid::Uuid, Path, description = "Request id")),
    responses(
        (status = 200, description = "Cancelled", body = RequestOut),
        (status = 403, description = "- `forbidden`: only the requester or an admin may cancel", body = ErrorBody),
        (status = 404, description = "- `not_found`: no such request, or one the caller may not see", body = ErrorBody),
        (status = 409, description = "- `already_decided`: the request is no longer pending\n- `expired`: the approval deadline passed\n- `cancelled`: already cancelled\n- `access_granted`: a break-glass request under review already has its access; revoke the grant instead", body = ErrorBody)
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Channel(channel): Channel,
    IdPath(id): IdPath,
) -> ApiResult<axum::Json<RequestOut>> {
    load_visible(&state, &caller, RunId(id)).await?;
    state.engine.cancel(RunId(id), &caller.id, caller.is_admin(), channel).await?;
    let view = query::run_view_snapshot(&state.engine.db().read, RunId(id))
        .await?
        .ok_or_else(|| ApiError::not_found("request"))?;
    Ok(axum::Json(render(&state.engine, &view)))
}
