//! Slack's requests to Tollgate: `POST /slack/interactions` (buttons and modals) and
//! `POST /slack/commands` (the slash command).
//!
//! Each request's v0 signature is verified over the raw body, within five minutes, before
//! anything is decoded; a signature seen before is acknowledged and ignored (replay). The
//! workspace (`team_id`) and app (`api_app_id`) must be the configured ones, and the clicking
//! user must map to a principal through the directory's `slack_user_id`: channel membership
//! proves nothing (Slack Connect). Decisions are recorded durably before the acknowledgement;
//! everything else (ephemeral answers, message updates) happens afterwards.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use tollgate_engine::Engine;
use tollgate_engine::audit::AuditEvent;
use tollgate_engine::ids::RunId;
use tollgate_engine::message::RequestSummary;
use tollgate_engine::policy::{self, Field, InputError, RequestFields, Viewer};
use tollgate_engine::run::{Decision, RunStatus};
use tollgate_engine::slack::blocks::{self, ACTION_APPROVE, ACTION_DENY, CALLBACK_DENY, CALLBACK_REQUEST};
use tollgate_engine::slack::verify::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use tollgate_engine::slack::{ResolvedSlack, SlackApi};
use tollgate_engine::store::query::{self, RunView};
use tollgate_engine::store::writer::JobError;
use tollgate_engine::transition::{Cast, NewRequest, RequestError, TransitionError};
use tollgate_engine::{Created, run::Run};

use crate::app::AppState;
use crate::error::ApiError;

/// What the Slack endpoints need.
#[derive(Debug)]
pub(crate) struct SlackState {
    api: Arc<SlackApi>,
    signing_secret: SecretString,
    team_id: Option<String>,
    app_id: Option<String>,
    /// Signatures seen in the replay window, with their timestamps.
    seen: Mutex<Seen>,
}

impl SlackState {
    /// State for `settings` (users are mapped through the engine's live directory).
    pub(crate) fn new(api: Arc<SlackApi>, settings: &ResolvedSlack) -> Self {
        Self {
            api,
            signing_secret: settings.signing_secret.clone(),
            team_id: settings.team_id.clone(),
            app_id: settings.app_id.clone(),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Verifies the signature; `Ok(false)` for a replay of a request already handled.
    fn check(&self, headers: &HeaderMap, body: &[u8], now: chrono::DateTime<chrono::Utc>) -> Result<bool, ApiError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let ts = verify::verify(&self.signing_secret, header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER), body, now)
            .map_err(|e| {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
                // The error's text names the failure only, never a signature.
                ApiError::new(status, "invalid_slack_signature", e.to_string())
            })?;
        let signature = header(SIGNATURE_HEADER).unwrap_or_default().to_owned();
        Ok(self.seen.lock().unwrap_or_else(PoisonError::into_inner).first_time(signature, ts, now.timestamp()))
    }

    /// Whether the request comes from the configured workspace and app.
    fn expected_source(&self, team: Option<&str>, app: Option<&str>) -> bool {
        self.team_id.as_deref().is_none_or(|t| team == Some(t)) && self.app_id.as_deref().is_none_or(|a| app == Some(a))
    }

    /// The active principal behind a Slack user of the configured workspace, as the directory
    /// has it now.
    fn principal(&self, engine: &Engine, user: Option<&str>, user_team: Option<&str>) -> Option<String> {
        if self.team_id.as_deref().is_some_and(|t| user_team.is_some_and(|ut| ut != t)) {
            return None;
        }
        let user = user?;
        let live = engine.shared().live();
        live.directory
            .principals
            .values()
            .find(|p| !p.disabled && p.slack_user_id.as_deref() == Some(user))
            .map(|p| p.id.clone())
    }
}

/// Signatures of verified requests still inside the signature window (older ones fail
/// verification anyway), pruned at most once a minute rather than on every request.
#[derive(Debug, Default)]
struct Seen {
    by_signature: HashMap<String, i64>,
    pruned_at: i64,
}

impl Seen {
    /// Records `signature` (timestamp `ts`); false if it was seen before.
    fn first_time(&mut self, signature: String, ts: i64, now: i64) -> bool {
        if now - self.pruned_at >= 60 {
            let horizon = now - 2 * i64::try_from(verify::MAX_AGE_SECS).unwrap_or(300);
            self.by_signature.retain(|_, t| *t >= horizon);
            self.pruned_at = now;
        }
        self.by_signature.insert(signature, ts).is_none()
    }
}

fn slack_state(state: &AppState) -> Result<&SlackState, ApiError> {
    state.slack.as_deref().ok_or_else(|| ApiError::not_found("route"))
}

fn ack() -> Response {
    StatusCode::OK.into_response()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

/// `POST /slack/interactions`: button clicks and modal submissions.
pub(crate) async fn interactions(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match interaction(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn interaction(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let slack = slack_state(state)?;
    if !slack.check(headers, body, state.engine.shared().clock.now())? {
        tracing::info!("slack: replayed interaction ignored");
        return Ok(ack());
    }
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .ok_or_else(|| ApiError::bad_request("expected a form field `payload` holding JSON"))?
        .1;
    // The same strict reading as every JSON body: one object, no repeated key, bounded nesting.
    let payload: Value = crate::extract::parse_body(payload.as_bytes())?;
    let user = str_at(&payload, &["user", "id"]);
    let user_team = str_at(&payload, &["user", "team_id"]).or_else(|| str_at(&payload, &["team", "id"]));
    let team = str_at(&payload, &["team", "id"]);
    let origin = json!({ "slack_user_id": user, "slack_team_id": user_team });
    // The request a refused click or dialog was about, so the refusal shows in its history.
    let about = payload["actions"][0]["value"]
        .as_str()
        .or_else(|| str_at(&payload, &["view", "private_metadata"]))
        .and_then(blocks::parse_request_ref)
        .map(|(id, _)| RunId(id));
    let refused = |reason: &str| refusal_event(user, user_team, reason, about);
    if !slack.expected_source(team, str_at(&payload, &["api_app_id"])) {
        audit(&state.engine, refused("foreign_workspace_or_app")).await;
        return Ok(ack());
    }
    let Some(principal) = slack.principal(&state.engine, user, user_team) else {
        audit(&state.engine, refused("unknown_slack_user")).await;
        if let (Some(channel), Some(user)) = (str_at(&payload, &["container", "channel_id"]), user) {
            ephemeral(
                slack,
                channel,
                user,
                "Your Slack account is not linked to a Tollgate approver; nothing was recorded.",
            );
        }
        return Ok(ack());
    };
    match str_at(&payload, &["type"]) {
        Some("block_actions") => block_action(state, slack, &payload, &principal, origin).await,
        Some("view_submission") => match str_at(&payload, &["view", "callback_id"]) {
            Some(CALLBACK_DENY) => deny_submission(state, &payload, &principal, origin).await,
            Some(CALLBACK_REQUEST) => request_submission(state, slack, &payload, &principal).await,
            _ => Ok(ack()),
        },
        _ => Ok(ack()),
    }
}

async fn block_action(
    state: &AppState,
    slack: &SlackState,
    payload: &Value,
    principal: &str,
    origin: Value,
) -> Result<Response, ApiError> {
    let action = &payload["actions"][0];
    let (Some(action_id), Some((run_id, step))) =
        (str_at(action, &["action_id"]), str_at(action, &["value"]).and_then(blocks::parse_request_ref))
    else {
        return Ok(ack());
    };
    let user = str_at(payload, &["user", "id"]).unwrap_or_default();
    let channel = str_at(payload, &["container", "channel_id"]).unwrap_or_default();
    match action_id {
        ACTION_APPROVE => {
            // No read first: the engine checks the step, the approver and the deadline in the
            // decision's own transaction, and audits a refusal.
            let decided =
                state.engine.cast(RunId(run_id), cast(principal, Decision::Approve, None, origin, step)).await;
            let text = match decided {
                Ok(()) => "✅ Your approval is recorded.".to_owned(),
                Err(JobError::Transition(e)) => format!("Not recorded: {}", refusal_text(&e)),
                Err(e) => return Err(e.into()),
            };
            ephemeral(slack, channel, user, &text);
            Ok(ack())
        }
        ACTION_DENY => {
            let Some(trigger) = str_at(payload, &["trigger_id"]) else { return Ok(ack()) };
            let view = query::run_view(&state.engine.db().read, RunId(run_id))
                .await?
                .ok_or_else(|| ApiError::not_found("request"))?;
            // The dialog shows the request: only to someone the API would show it to.
            if !may_view(&state.engine, principal, &view.run) {
                ephemeral(
                    slack,
                    channel,
                    user,
                    "You are not an eligible approver for this request; nothing was recorded.",
                );
                return Ok(ack());
            }
            if view.run.step_index != step && view.run.status == RunStatus::AwaitingApproval {
                ephemeral(slack, channel, user, "This approval step is over; nothing was recorded.");
                return Ok(ack());
            }
            let summary = summary(&state.engine, &view);
            if let Err(e) = slack.api.open_view(trigger, blocks::deny_modal(run_id, step, &summary)).await {
                tracing::warn!(error = %e, "slack: cannot open the deny dialog");
                ephemeral(slack, channel, user, "Could not open the dialog; try again.");
            }
            Ok(ack())
        }
        _ => Ok(ack()),
    }
}

async fn deny_submission(
    state: &AppState,
    payload: &Value,
    principal: &str,
    origin: Value,
) -> Result<Response, ApiError> {
    let Some((run_id, step)) = str_at(payload, &["view", "private_metadata"]).and_then(blocks::parse_request_ref)
    else {
        return Ok(ack());
    };
    let values = &payload["view"]["state"]["values"];
    let reason =
        str_at(values, &[blocks::BLOCK_DENY_REASON, blocks::INPUT_DENY_REASON, "value"]).map(str::trim).unwrap_or("");
    if reason.is_empty() {
        return Ok(modal_error(blocks::BLOCK_DENY_REASON, "Give a reason to deny."));
    }
    // The same limit as a comment sent through the API or an email link; Slack's client caps the
    // input lower, so only a hand-made submission meets it.
    if let Err(e) = policy::check_comment(reason) {
        return Ok(modal_error(blocks::BLOCK_DENY_REASON, &e.hint()));
    }
    let comment = Some(reason.to_owned());
    // The dialog may have stayed open while its step was decided and the next one began: the
    // engine refuses a denial meant for that step (`step_over`) instead of applying it here.
    match state.engine.cast(RunId(run_id), cast(principal, Decision::Deny, comment, origin, step)).await {
        Ok(()) => Ok(ack()),
        Err(JobError::Transition(e)) => Ok(modal_error(blocks::BLOCK_DENY_REASON, refusal_text(&e))),
        Err(e) => Err(e.into()),
    }
}

async fn request_submission(
    state: &AppState,
    slack: &SlackState,
    payload: &Value,
    principal: &str,
) -> Result<Response, ApiError> {
    let values = &payload["view"]["state"]["values"];
    let text = |block: &str, input: &str| str_at(values, &[block, input, "value"]).map(str::trim).unwrap_or("");
    let integration =
        str_at(values, &[blocks::BLOCK_INTEGRATION, blocks::INPUT_INTEGRATION, "selected_option", "value"])
            .unwrap_or_default()
            .to_owned();
    let scopes: Vec<String> = text(blocks::BLOCK_SCOPES, blocks::INPUT_SCOPES)
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let duration = Some(text(blocks::BLOCK_DURATION, blocks::INPUT_DURATION)).filter(|d| !d.is_empty());
    let justification = text(blocks::BLOCK_JUSTIFICATION, blocks::INPUT_JUSTIFICATION).to_owned();
    let break_glass = values[blocks::BLOCK_BREAK_GLASS][blocks::INPUT_BREAK_GLASS]["selected_options"]
        .as_array()
        .is_some_and(|o| o.iter().any(|o| o["value"] == blocks::BREAK_GLASS_VALUE));
    if integration.is_empty() {
        return Ok(modal_error(blocks::BLOCK_INTEGRATION, "Choose an integration."));
    }
    if scopes.is_empty() {
        return Ok(modal_error(blocks::BLOCK_SCOPES, "Name at least one scope."));
    }
    // The modal's own limits are Slack's, enforced by Slack's client: a submission is checked
    // again here, as an API request is.
    let fields = RequestFields {
        kind: None,
        integration: &integration,
        scopes: &scopes,
        duration,
        justification: &justification,
    };
    let checked = match policy::check_new_request(&fields) {
        Ok(checked) => checked,
        Err(e) => return Ok(modal_error(input_block(&e), &e.to_string())),
    };
    let request = NewRequest {
        id: RunId::new(),
        requester: principal.to_owned(),
        kind: checked.kind,
        integration,
        scopes,
        duration: checked.duration,
        justification,
        grant: None,
        channel: "slack".to_owned(),
        break_glass,
    };
    // The modal's view id makes the submission idempotent: a replay to any replica returns the
    // request created the first time.
    let key = str_at(payload, &["view", "id"]).map(|id| format!("slack-view:{id}"));
    let idempotency = key.map(|k| (principal.to_owned(), k, "slack-modal".to_owned()));
    let engine = state.engine.clone();
    let render_with = engine.clone();
    let render = Box::new(move |view: &RunView| {
        serde_json::to_string(&super::requests::render(&render_with, view)).unwrap_or_default()
    });
    let is_admin = engine
        .shared()
        .live()
        .directory
        .principals
        .get(principal)
        .is_some_and(|p| p.has_role(tollgate_engine::directory::Role::Admin));
    match engine.create_request(request, is_admin, idempotency, render).await {
        Ok(created) => {
            let id = match created {
                Created::New { id, .. } | Created::Attached { id, .. } => id.to_string(),
                Created::Replayed { body, .. } => serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["id"].as_str().map(str::to_owned))
                    .unwrap_or_default(),
            };
            if let Some(user) = str_at(payload, &["user", "id"]) {
                let text = format!("Your request {id} is created; you will hear here when it is decided.");
                direct(slack, user, &text);
            }
            Ok(ack())
        }
        Err(JobError::Transition(e)) => Ok(modal_error(refusal_block(&e), &e.to_string())),
        Err(JobError::NotFound(what)) => {
            Ok(modal_error(blocks::BLOCK_INTEGRATION, &format!("No {what} governs this request.")))
        }
        Err(e) => Err(e.into()),
    }
}

/// `POST /slack/commands`: `/tollgate` (or `/tollgate request`) opens the request dialog;
/// `/tollgate help` explains.
pub(crate) async fn commands(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    match command(&state, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn command(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Result<Response, ApiError> {
    let slack = slack_state(state)?;
    if !slack.check(headers, body, state.engine.shared().clock.now())? {
        return Ok(ack());
    }
    let form: HashMap<String, String> = form_urlencoded::parse(body).into_owned().collect();
    let field = |k: &str| form.get(k).map(String::as_str);
    let reply = |text: &str| axum::Json(json!({ "response_type": "ephemeral", "text": text })).into_response();
    if !slack.expected_source(field("team_id"), field("api_app_id")) {
        audit(&state.engine, refusal_event(field("user_id"), field("team_id"), "foreign_workspace_or_app", None)).await;
        return Ok(reply("This Slack workspace is not connected to Tollgate."));
    }
    if slack.principal(&state.engine, field("user_id"), field("team_id")).is_none() {
        audit(&state.engine, refusal_event(field("user_id"), field("team_id"), "unknown_slack_user", None)).await;
        return Ok(reply("Your Slack account is not linked to a Tollgate principal."));
    }
    match field("text").map(str::trim).unwrap_or_default() {
        "" | "request" => {
            let Some(trigger) = field("trigger_id") else { return Ok(reply("Slack sent no trigger id.")) };
            let integrations: Vec<(String, Vec<String>)> = state
                .engine
                .shared()
                .live()
                .directory
                .integrations
                .values()
                .map(|i| (i.name.clone(), i.scopes.iter().map(|s| s.name.clone()).collect()))
                .collect();
            let view = blocks::request_modal(&integrations, field("channel_id"));
            match slack.api.open_view(trigger, view).await {
                Ok(()) => Ok(ack()),
                Err(e) => {
                    tracing::warn!(error = %e, "slack: cannot open the request dialog");
                    Ok(reply("Could not open the request dialog; try again."))
                }
            }
        }
        _ => Ok(reply(
            "Usage: `/tollgate` or `/tollgate request` opens a dialog to ask for just-in-time access. \
             Approvers decide with the buttons on the approval messages.",
        )),
    }
}

fn cast(principal: &str, decision: Decision, comment: Option<String>, origin: Value, step: u32) -> Cast {
    Cast { origin, step: Some(step), ..Cast::new(principal, decision, comment, "slack") }
}

/// Whether `principal` may see `run`, by the rule the API applies.
fn may_view(engine: &Engine, principal: &str, run: &Run) -> bool {
    let live = engine.shared().live();
    let Some(p) = live.directory.active_principal(principal) else { return false };
    let definition = live.catalog.get(&run.workflow_key, run.workflow_version);
    policy::may_view_request(Viewer::of(p), run, definition.as_deref(), &live.directory)
}

/// The request dialog's block for the field an input error names.
fn input_block(e: &InputError) -> &'static str {
    match e.field() {
        Field::Integration => blocks::BLOCK_INTEGRATION,
        Field::Duration => blocks::BLOCK_DURATION,
        Field::Justification => blocks::BLOCK_JUSTIFICATION,
        Field::Kind | Field::Scopes | Field::Comment => blocks::BLOCK_SCOPES,
    }
}

/// The request dialog's block a refused request is about, so the error shows by its field.
fn refusal_block(e: &TransitionError) -> &'static str {
    match e.code() {
        "duration_too_long" | "duration_too_short" | "duration_required" => blocks::BLOCK_DURATION,
        "justification_required" => blocks::BLOCK_JUSTIFICATION,
        "break_glass_unavailable" => blocks::BLOCK_BREAK_GLASS,
        "forbidden" if matches!(e, TransitionError::Invalid(RequestError::BreakGlassNotAllowed(_))) => {
            blocks::BLOCK_BREAK_GLASS
        }
        "forbidden" => blocks::BLOCK_INTEGRATION,
        _ => blocks::BLOCK_SCOPES,
    }
}

fn modal_error(block: &str, text: &str) -> Response {
    axum::Json(json!({ "response_action": "errors", "errors": { block: text } })).into_response()
}

fn refusal_text(e: &TransitionError) -> &'static str {
    match e {
        TransitionError::NotAnApprover(_) | TransitionError::NotVisible => {
            "you are not an eligible approver for this request."
        }
        TransitionError::SelfApproval => "requesters cannot decide on their own requests.",
        TransitionError::AlreadyVoted(_) => "you have already decided on this request.",
        TransitionError::Expired => "the approval deadline has passed.",
        TransitionError::Cancelled => "the request was cancelled.",
        TransitionError::StepOver => "this approval step is over.",
        _ => "this request no longer awaits a decision.",
    }
}

/// The request as the deny dialog summarises it.
fn summary(engine: &Engine, view: &RunView) -> RequestSummary {
    let run: &Run = &view.run;
    RequestSummary {
        kind: run.kind.as_str().to_owned(),
        requester: run.requester.clone(),
        integration: run.integration.clone(),
        environment: engine
            .shared()
            .live()
            .directory
            .integrations
            .get(&run.integration)
            .map(|i| i.environment.clone())
            .unwrap_or_default(),
        scopes: run.scopes.clone(),
        duration_secs: run.duration_secs,
        justification: run.justification.clone(),
        status: run.status.as_str().to_owned(),
        approvals_needed: None,
        deadline: None,
        expires_at: None,
        emergency: run.break_glass,
    }
}

fn refusal_event(user: Option<&str>, team: Option<&str>, reason: &str, run: Option<RunId>) -> AuditEvent {
    AuditEvent {
        event_type: "slack_interaction_refused".to_owned(),
        channel: "slack".to_owned(),
        outcome: "rejected".to_owned(),
        actor: format!("slack:{}", user.unwrap_or("?")),
        subject: run.map_or_else(|| "slack".to_owned(), |r| format!("request:{r}")),
        run_id: run.map(|r| r.0),
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details: json!({ "reason": reason, "slack_user_id": user, "slack_team_id": team }),
    }
}

async fn audit(engine: &Engine, event: AuditEvent) {
    if let Err(e) = engine.audit(vec![event]).await {
        tracing::error!(error = %e, "cannot audit a refused Slack interaction");
    }
}

/// Posts an ephemeral answer after the acknowledgement (never delays it).
fn ephemeral(slack: &SlackState, channel: &str, user: &str, text: &str) {
    if channel.is_empty() || user.is_empty() {
        return;
    }
    let (api, channel, user, text) = (slack.api.clone(), channel.to_owned(), user.to_owned(), text.to_owned());
    tokio::spawn(async move {
        if let Err(e) = api.post_ephemeral(&channel, &user, &text).await {
            tracing::warn!(error = %e, "slack: ephemeral answer not delivered");
        }
    });
}

/// Sends a direct message after the acknowledgement.
fn direct(slack: &SlackState, user: &str, text: &str) {
    let (api, user, text) = (slack.api.clone(), user.to_owned(), text.to_owned());
    tokio::spawn(async move {
        let content = slack_morphism::prelude::SlackMessageContent::new().with_text(text);
        if let Err(e) = api.post_message(&user, content, None).await {
            tracing::warn!(error = %e, "slack: direct message not delivered");
        }
    });
}
