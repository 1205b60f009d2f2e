//! The router: every route, the OpenAPI document, body limits, tracing and fallbacks.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::MatchedPath;
use axum::http::HeaderName;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tollgate_engine::Engine;
use tower_http::LatencyUnit;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ErrorBody, ErrorDetail};
use crate::routes::{
    admin, audit, credentials, directory, email_links, grants, health, requests, slack, tasks, tokens,
};
use crate::{dto, openapi};

/// What handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Email approval link pages.
    pub(crate) links: Arc<email_links::LinkPages>,
    /// Slack endpoints, when Slack is configured.
    pub(crate) slack: Option<Arc<slack::SlackState>>,
    /// Configuration reloads, when the server was started from configuration files.
    pub(crate) reloader: Option<Arc<crate::reload::Reloader>>,
}

/// The document's frame: info, tags, the shared schemas and the bearer scheme. The operations
/// come from [`documented_routes`], which registers each handler once for both routing and the
/// document; [`openapi::complete`] then adds what every operation answers by its shape.
#[derive(OpenApi)]
#[openapi(
    info(title = "Tollgate", description = "Human-in-the-loop, just-in-time access to SaaS integrations.\n\nEvery error is `{\"error\": {\"code\", \"detail\"}}` (`ErrorBody`); each operation lists every status it answers with the codes possible for it.", license(name = "Apache-2.0")),
    tags(
        (name = "requests", description = "Ask for access, follow a request, approve or deny, cancel."),
        (name = "grants", description = "Access granted: who holds what until when; revoke early."),
        (name = "tasks", description = "Manual-connector tasks that a named operator confirms."),
        (name = "directory", description = "Integrations, workflows and principals (read-only)."),
        (name = "audit", description = "The hash-chained audit log, for admins and auditors."),
        (name = "tokens", description = "API tokens: admins create them; everyone lists and revokes their own."),
        (name = "credentials", description = "The credential inventory: every integration credential, its owner, scopes, lifetime and versions (never a secret value)."),
        (name = "admin", description = "Operating Tollgate itself: configuration reloads (admins)."),
        (name = "health", description = "Liveness and readiness."),
    ),
    components(schemas(
        ErrorBody, ErrorDetail, dto::RequestIn, dto::RequestOut, dto::DecisionIn, dto::TaskCompleteIn, dto::WorkflowRef, dto::StepOut,
        dto::ApprovalOut, dto::GrantOut, dto::ScopeOut, dto::IntegrationOut, dto::PrincipalOut, dto::VerifyOut, dto::HealthOut,
        dto::TokenIn, dto::TokenOut, dto::TokenCreatedOut, dto::ReloadOut, dto::DirectoryChangeOut, dto::GrantSecretOut,
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

/// Every documented route, each registered once: `routes!` adds the handler to the router and
/// its `#[utoipa::path]` operation to the document.
fn documented_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(requests::create, requests::list))
        .routes(routes!(requests::show))
        .routes(routes!(requests::decide))
        .routes(routes!(requests::cancel))
        .routes(routes!(grants::list))
        .routes(routes!(grants::show))
        .routes(routes!(grants::revoke))
        .routes(routes!(grants::secret))
        .routes(routes!(directory::integrations))
        .routes(routes!(directory::integration))
        .routes(routes!(directory::workflows))
        .routes(routes!(directory::principals))
        .routes(routes!(directory::me))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(tasks::list))
        .routes(routes!(tasks::complete))
        .routes(routes!(tokens::list, tokens::create))
        .routes(routes!(tokens::revoke))
        .routes(routes!(admin::reload))
        .routes(routes!(credentials::list, credentials::create))
        .routes(routes!(credentials::import))
        .routes(routes!(credentials::show))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The OpenAPI document (committed as `api/openapi.json`; a test keeps them equal).
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = documented_routes().into_openapi();
    openapi::complete(&mut document);
    document
}

/// The OpenAPI document as pretty JSON.
#[must_use]
pub fn openapi_json() -> String {
    openapi().to_pretty_json().unwrap_or_default()
}

/// `path` as logs may show it: an email approval link's token is replaced by `…`.
fn loggable_path(path: &str) -> &str {
    if path.starts_with(LINK_PREFIX) { "/approvals/email/…" } else { path }
}

const LINK_PREFIX: &str = "/approvals/email/";

/// The header carrying each request's id.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Builds the router. `public_url` is the configured base URL of links (never a Host header);
/// `slack` enables the Slack endpoints.
pub fn router(
    engine: Arc<Engine>,
    max_body_bytes: usize,
    public_url: &str,
    slack: Option<&crate::server::Slack>,
) -> Router {
    router_behind(engine, max_body_bytes, public_url, slack, Vec::new())
}

/// [`router`] behind reverse proxies whose `X-Forwarded-For` names the client
/// (`http.trusted_proxies`; used to tell clients of email links apart).
pub fn router_behind(
    engine: Arc<Engine>,
    max_body_bytes: usize,
    public_url: &str,
    slack: Option<&crate::server::Slack>,
    trusted_proxies: Vec<ipnet::IpNet>,
) -> Router {
    serving(engine, max_body_bytes, public_url, slack, trusted_proxies, None)
}

/// [`router_behind`] with configuration reloads (`POST /v1/admin/reload`), as `serve` runs it.
pub fn serving(
    engine: Arc<Engine>,
    max_body_bytes: usize,
    public_url: &str,
    slack: Option<&crate::server::Slack>,
    trusted_proxies: Vec<ipnet::IpNet>,
    reloader: Option<Arc<crate::reload::Reloader>>,
) -> Router {
    let slack = slack.map(|(api, settings)| Arc::new(slack::SlackState::new(api.clone(), settings)));
    let links = Arc::new(email_links::LinkPages::new(public_url, trusted_proxies));
    let state = AppState { engine, links, slack, reloader };
    let (documented, mut document) = documented_routes().split_for_parts();
    openapi::complete(&mut document);
    let document: Arc<str> = document.to_pretty_json().unwrap_or_default().into();
    documented
        // Undocumented: browser pages behind email links, Slack's callbacks, the document itself.
        .route("/approvals/email/{token}", get(email_links::show).post(email_links::decide))
        .route("/slack/interactions", post(slack::interactions))
        .route("/slack/commands", post(slack::commands))
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], document.to_string()) }
            }),
        )
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<_>| {
                    // Method, route template and request id only: never query strings or other
                    // headers (they may carry tokens), and never an approval link's token.
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or_else(|| loggable_path(req.uri().path()).to_owned(), |m| m.as_str().to_owned());
                    let request_id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or_default();
                    tracing::info_span!("http", method = %req.method(), route = %route, request_id = %request_id)
                })
                // One line per request at info: status and latency, in the span above.
                .on_response(DefaultOnResponse::new().level(Level::INFO).latency_unit(LatencyUnit::Millis)),
        )
        // Every request gets an id (a client's own `X-Request-Id` is kept), returned in the
        // response and named in its log line.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
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
