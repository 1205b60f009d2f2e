//! The router: every route, the OpenAPI document, body limits, tracing and fallbacks.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tollgate_engine::Engine;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dto;
use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::routes::{audit, directory, email_links, grants, health, requests, slack, tasks};

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Email approval link pages.
    pub(crate) links: Arc<email_links::LinkPages>,
    /// Slack endpoints, when Slack is configured.
    pub(crate) slack: Option<Arc<slack::SlackState>>,
}

/// The OpenAPI document (committed as `api/openapi.json`; a test keeps them equal).
#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Human-in-the-loop, just-in-time access to SaaS integrations.", license(name = "Apache-2.0")),
    paths(
        requests::create, requests::list, requests::show, requests::decide, requests::cancel,
        grants::list, grants::show, grants::revoke,
        directory::integrations, directory::integration, directory::workflows, directory::principals, directory::me,
        audit::list, audit::verify,
        tasks::list, tasks::complete,
        health::healthz, health::readyz,
    ),
    components(schemas(
        ErrorBody, ErrorDetail, dto::RequestIn, dto::RequestOut, dto::DecisionIn, dto::TaskCompleteIn, dto::WorkflowRef, dto::StepOut,
        dto::ApprovalOut, dto::GrantOut, dto::ScopeOut, dto::IntegrationOut, dto::PrincipalOut, dto::WorkflowOut,
        dto::AuditRecordOut, dto::VerifyOut, dto::TaskOut, dto::HealthOut,
    )),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// The OpenAPI document as pretty JSON.
#[must_use]
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// `path` as logs may show it: an email approval link's token is replaced by `…`.
fn loggable_path(path: &str) -> &str {
    if path.starts_with(LINK_PREFIX) { "/approvals/email/…" } else { path }
}

const LINK_PREFIX: &str = "/approvals/email/";

/// Builds the router. `public_url` is the configured base URL of links (never a Host header);
/// `slack` enables the Slack endpoints.
pub fn router(
    engine: Arc<Engine>,
    max_body_bytes: usize,
    public_url: &str,
    slack: Option<&crate::server::Slack>,
) -> Router {
    let slack = slack.map(|(api, settings)| Arc::new(slack::SlackState::new(api.clone(), settings, &engine)));
    let state = AppState { engine, links: Arc::new(email_links::LinkPages::new(public_url)), slack };
    Router::new()
        .route("/v1/requests", post(requests::create).get(requests::list))
        .route("/v1/requests/{id}", get(requests::show))
        .route("/v1/requests/{id}/decisions", post(requests::decide))
        .route("/v1/requests/{id}/cancel", post(requests::cancel))
        .route("/v1/grants", get(grants::list))
        .route("/v1/grants/{id}", get(grants::show))
        .route("/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/v1/integrations", get(directory::integrations))
        .route("/v1/integrations/{id}", get(directory::integration))
        .route("/v1/workflows", get(directory::workflows))
        .route("/v1/principals", get(directory::principals))
        .route("/v1/me", get(directory::me))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/tasks", get(tasks::list))
        .route("/v1/tasks/{id}/complete", post(tasks::complete))
        .route("/approvals/email/{token}", get(email_links::show).post(email_links::decide))
        .route("/slack/interactions", post(slack::interactions))
        .route("/slack/commands", post(slack::commands))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/openapi.json",
            get(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_json()) }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // Method and path only: never query strings or headers (they may carry tokens), and
            // never an approval link's token.
            tracing::info_span!("http", method = %req.method(), path = %loggable_path(req.uri().path()))
        }))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    #[test]
    fn approval_link_tokens_never_reach_the_log() {
        let token = "Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4cXV1eHF1dXg";
        assert_eq!(super::loggable_path(&format!("/approvals/email/{token}")), "/approvals/email/…");
        assert_eq!(super::loggable_path("/v1/requests"), "/v1/requests");
    }
}
