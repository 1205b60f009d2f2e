//! The pages behind email approval links: `GET /approvals/email/{token}` shows the request
//! read-only; only a `POST` of its form, with the anti-CSRF value bound to the cookie the `GET`
//! set and an explicit choice, decides.
//!
//! Mail scanners fetch (and some submit) every link they see, so nothing but that POST changes
//! state. Every page sends `Cache-Control: no-store`, `Referrer-Policy: no-referrer` and a CSP
//! that allows nothing but one nonce-tagged style sheet. Unknown, used and expired links, and
//! links whose approval is over, all get the same page; peers that keep presenting such links
//! are throttled.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::Rng;
use serde::Deserialize;
use sha2::Sha256;
use tollgate_engine::links::{LinkLookup, LinkedApproval};
use tollgate_engine::policy;
use tollgate_engine::run::{Decision, StepState};
use tollgate_engine::store::writer::JobError;
use tollgate_engine::transition::TransitionError;

use crate::app::AppState;

/// Name of the cookie carrying the anti-CSRF secret.
const CSRF_COOKIE: &str = "tollgate_csrf";

/// Pages for links, with their guess throttle.
#[derive(Debug)]
pub(crate) struct LinkPages {
    /// Whether cookies get `Secure` (the public URL is https).
    secure_cookies: bool,
    throttle: Throttle,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`http.trusted_proxies`).
    trusted_proxies: Vec<ipnet::IpNet>,
}

impl LinkPages {
    /// Pages for a server whose public URL is `public_url`, behind `trusted_proxies`.
    #[must_use]
    pub(crate) fn new(public_url: &str, trusted_proxies: Vec<ipnet::IpNet>) -> Self {
        Self { secure_cookies: public_url.starts_with("https://"), throttle: Throttle::default(), trusted_proxies }
    }
}

/// The client behind a request: the peer, unless the peer is a trusted proxy, in which case the
/// right-most address of `X-Forwarded-For` that is not itself a trusted proxy (each proxy
/// appends the address it saw, so addresses left of it are the client's own claims). `None`
/// without connection info.
fn client_ip(peer: Option<IpAddr>, forwarded_for: &[&str], trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops = forwarded_for.iter().flat_map(|h| h.split(',')).map(str::trim).collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => {}
            Ok(ip) => return Some(ip),
            // A malformed entry: nothing left of it can be trusted; count it against the proxy.
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

/// Counts *unknown* link tokens (guesses, mangled links) presented per client: after
/// [`Throttle::LIMIT`] within [`Throttle::WINDOW`], every link request from that client is
/// refused until the window ends. Links Tollgate issued that are used, expired or over do not
/// count (people re-open old emails). Behind a reverse proxy, list it in `http.trusted_proxies`
/// so that clients are told apart by `X-Forwarded-For`; otherwise every client shares the
/// proxy's address and its count.
#[derive(Debug, Default)]
struct Throttle {
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Throttle {
    const LIMIT: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(600);
    const MAX_PEERS: usize = 100_000;

    fn blocked(&self, ip: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = ip else { return false };
        let map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&ip).is_some_and(|(since, n)| now.duration_since(*since) < Self::WINDOW && *n >= Self::LIMIT)
    }

    fn fail(&self, ip: Option<IpAddr>, now: Instant) {
        let Some(ip) = ip else { return };
        let mut map = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= Self::MAX_PEERS {
            map.retain(|_, (since, _)| now.duration_since(*since) < Self::WINDOW);
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Self::WINDOW {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 == Self::LIMIT {
            tracing::warn!(
                client = %ip, limit = Self::LIMIT, window_secs = Self::WINDOW.as_secs(),
                "email approval links: too many unknown link tokens from one client; its link requests are refused until the window ends"
            );
        }
    }
}

/// The client's address: the peer's (when the server was started with connection info), or the
/// one a trusted proxy forwarded ([`client_ip`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(Option<IpAddr>);

impl FromRequestParts<AppState> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let forwarded: Vec<&str> =
            parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
        Ok(Self(client_ip(peer, &forwarded, &state.links.trusted_proxies)))
    }
}

#[derive(Template)]
#[template(path = "approval/decide.html")]
struct DecidePage<'a> {
    nonce: &'a str,
    csrf: &'a str,
    approver: &'a str,
    request_id: String,
    kind: &'a str,
    requester: &'a str,
    integration: &'a str,
    environment: String,
    scopes: String,
    duration: String,
    approvals: usize,
    quorum: u32,
    approved_by: Vec<&'a str>,
    deadline: String,
    expires_at: String,
    justification: &'a str,
    reason: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "approval/message.html")]
struct MessagePage<'a> {
    nonce: &'a str,
    title: &'a str,
    message: &'a str,
}

/// The form the page posts.
#[derive(Debug, Deserialize)]
pub(crate) struct DecisionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

/// The approval behind `token`, or the page to answer instead: throttled peers and unusable
/// links (which count against the peer) never reach the request.
async fn usable_link(state: &AppState, peer: Option<IpAddr>, token: &str) -> Result<LinkedApproval, Response> {
    let throttle = &state.links.throttle;
    if throttle.blocked(peer, Instant::now()) {
        return Err(throttled());
    }
    match state.engine.approval_link(token).await {
        Ok(LinkLookup::Usable(linked)) => Ok(*linked),
        Ok(LinkLookup::Spent) => Err(unusable()),
        Ok(LinkLookup::Unknown) => {
            throttle.fail(peer, Instant::now());
            Err(unusable())
        }
        Err(e) => Err(server_error(&e)),
    }
}

/// `GET /approvals/email/{token}` (and `HEAD`): the request, read-only.
pub(crate) async fn show(
    State(state): State<AppState>,
    Peer(peer): Peer,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    let linked = match usable_link(&state, peer, &token).await {
        Ok(linked) => linked,
        Err(page) => return page,
    };
    let (secret, fresh) = match cookie(&headers) {
        Some(secret) => (secret, false),
        None => (new_secret(), true),
    };
    let mut response = decide_page(&state, &linked, &secret, "", None, StatusCode::OK);
    if fresh {
        set_cookie(&mut response, &secret, state.links.secure_cookies);
    }
    response
}

/// `POST /approvals/email/{token}`: decides, once.
pub(crate) async fn decide(
    State(state): State<AppState>,
    Peer(peer): Peer,
    Path(token): Path<String>,
    headers: HeaderMap,
    form: Result<axum::Form<DecisionForm>, FormRejection>,
) -> Response {
    let linked = match usable_link(&state, peer, &token).await {
        Ok(linked) => linked,
        Err(page) => return page,
    };
    let Ok(axum::Form(form)) = form else {
        return message(StatusCode::BAD_REQUEST, "Not recorded", "The form could not be read. Open the link again.");
    };
    // The form must come from the page: its hidden value is derived from the cookie the page set.
    let Some(secret) = cookie(&headers).filter(|s| csrf_matches(s, &linked, &form.csrf)) else {
        return message(
            StatusCode::FORBIDDEN,
            "Not recorded",
            "This form is stale or did not come from the approval page. Open the link from your email again and decide there.",
        );
    };
    let reason = form.reason.trim();
    let retry = |error: &str| decide_page(&state, &linked, &secret, &form.reason, Some(error), StatusCode::BAD_REQUEST);
    let decision = match form.decision.as_str() {
        "approve" => Decision::Approve,
        "deny" => Decision::Deny,
        _ => return retry("Choose Approve or Deny."),
    };
    if decision == Decision::Deny && reason.is_empty() {
        return retry("Give a reason to deny.");
    }
    // The same limit as a comment sent through the API or Slack.
    if let Err(e) = policy::check_comment(reason) {
        return retry(&format!("The reason: {}", e.hint()));
    }
    let comment = Some(reason.to_owned()).filter(|r| !r.is_empty());
    match state.engine.decide_by_link(&token, decision, comment).await {
        Ok(run_id) => {
            let what = match decision {
                Decision::Approve => "approval",
                Decision::Deny => "denial",
            };
            let text = format!("Your {what} of request {run_id} was recorded. You can close this page.");
            message(StatusCode::OK, "Decision recorded", &text)
        }
        Err(JobError::LinkUnusable) => unusable(),
        Err(JobError::Transition(e)) => message(StatusCode::CONFLICT, "Not recorded", refusal_text(&e)),
        Err(e) => server_error(&e),
    }
}

fn refusal_text(e: &TransitionError) -> &'static str {
    match e {
        TransitionError::NotAnApprover(_) | TransitionError::NotVisible => {
            "You are no longer an eligible approver for this request."
        }
        TransitionError::SelfApproval => "Requesters cannot decide on their own requests.",
        TransitionError::AlreadyVoted(_) => "You have already decided on this request.",
        TransitionError::Expired => "The approval deadline has passed.",
        TransitionError::Cancelled => "The request was cancelled.",
        TransitionError::StepOver => "This approval step is over.",
        _ => "This request no longer awaits a decision.",
    }
}

fn decide_page(
    state: &AppState,
    linked: &LinkedApproval,
    secret: &str,
    reason: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let run = &linked.view.run;
    let engine = &state.engine;
    let live = engine.shared().live();
    let directory = &live.directory;
    let quorum = engine
        .shared()
        .live()
        .catalog
        .get(&run.workflow_key, run.workflow_version)
        .and_then(|d| tollgate_engine::transition::pending_approval_in(run, &d).map(|a| a.quorum))
        .unwrap_or(1);
    let approved_by: Vec<&str> = linked
        .view
        .votes
        .iter()
        .filter(|v| v.step_index == run.step_index && v.decision == Decision::Approve)
        .map(|v| v.approver.as_str())
        .collect();
    let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let deadline = match &run.step {
        StepState::Approval { deadline, .. } => time(*deadline),
        _ => time(linked.expires_at),
    };
    let nonce = new_secret();
    let page = DecidePage {
        nonce: &nonce,
        csrf: &csrf_value(secret, linked),
        approver: &linked.principal,
        request_id: run.id.to_string(),
        kind: run.kind.as_str(),
        requester: &run.requester,
        integration: &run.integration,
        environment: directory.integrations.get(&run.integration).map(|i| i.environment.clone()).unwrap_or_default(),
        scopes: run.scopes.join(", "),
        duration: humantime::format_duration(Duration::from_secs(run.duration_secs)).to_string(),
        approvals: approved_by.len(),
        quorum,
        approved_by,
        deadline,
        expires_at: time(linked.expires_at),
        justification: &run.justification,
        reason,
        error,
    };
    html(status, &nonce, page.render())
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let nonce = new_secret();
    html(status, &nonce, MessagePage { nonce: &nonce, title, message: text }.render())
}

/// The one page for every link that cannot be used, whatever the reason.
fn unusable() -> Response {
    message(
        StatusCode::NOT_FOUND,
        "This link cannot be used",
        "The link is invalid, was already used, or has expired, or the request no longer awaits your decision. \
         If you still need to act, ask for a new link or use Tollgate directly.",
    )
}

fn throttled() -> Response {
    let mut r = message(StatusCode::TOO_MANY_REQUESTS, "Too many attempts", "Try again later.");
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("600"));
    r
}

fn server_error(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "approval link page failed");
    message(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong", "Nothing was recorded. Try again later.")
}

fn html(status: StatusCode, nonce: &str, body: Result<String, askama::Error>) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "approval page template failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
        }
    };
    let csp = format!(
        "default-src 'none'; style-src 'nonce-{nonce}'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    response
}

/// 128 random bits, base64url.
fn new_secret() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The anti-CSRF secret from the request's cookie, if well formed.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == CSRF_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 22 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

fn set_cookie(response: &mut Response, secret: &str, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let value =
        format!("{CSRF_COOKIE}={secret}; Path=/approvals/email/; HttpOnly; SameSite=Strict; Max-Age=86400{secure}");
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// The form's hidden value: HMAC of the link id keyed with the cookie's secret, so it is only
/// valid with that cookie and for that link.
fn csrf_value(secret: &str, linked: &LinkedApproval) -> String {
    hex::encode(csrf_mac(secret, linked).finalize().into_bytes())
}

fn csrf_matches(secret: &str, linked: &LinkedApproval, presented: &str) -> bool {
    hex::decode(presented).is_ok_and(|bytes| csrf_mac(secret, linked).verify_slice(&bytes).is_ok())
}

fn csrf_mac(secret: &str, linked: &LinkedApproval) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!("any key length"));
    mac.update(b"approval-link-form\0");
    mac.update(linked.link_id.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_peer_unless_a_trusted_proxy_forwarded_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "192.0.2.7/32".parse().unwrap()];
        let cases: [(&str, &[&str], &str); 8] = [
            // Not a proxy: its own claims are ignored.
            ("203.0.113.9", &["198.51.100.1"], "203.0.113.9"),
            // A trusted proxy: the right-most address it appended.
            ("10.1.2.3", &["198.51.100.1"], "198.51.100.1"),
            // Spoofed entries left of what the proxy saw are ignored.
            ("10.1.2.3", &["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
            // Chained trusted proxies are skipped; headers repeated are one list.
            ("10.1.2.3", &["198.51.100.1", "192.0.2.7, 10.9.9.9"], "198.51.100.1"),
            ("10.1.2.3", &[" 2001:db8::1 "], "2001:db8::1"),
            // Nothing forwarded, only proxies, or a malformed hop: the proxy itself.
            ("10.1.2.3", &[], "10.1.2.3"),
            ("10.1.2.3", &["10.4.4.4"], "10.1.2.3"),
            ("10.1.2.3", &["198.51.100.1, garbage"], "10.1.2.3"),
        ];
        for (peer, forwarded, want) in cases {
            assert_eq!(client_ip(Some(ip(peer)), forwarded, &trusted), Some(ip(want)), "{peer} {forwarded:?}");
        }
        assert_eq!(client_ip(None, &["198.51.100.1"], &trusted), None);
    }

    #[test]
    fn throttle_blocks_a_peer_after_the_limit_and_forgets_after_the_window() {
        let t = Throttle::default();
        let ip = Some(IpAddr::from([10, 0, 0, 1]));
        let other = Some(IpAddr::from([10, 0, 0, 2]));
        let start = Instant::now();
        for _ in 0..Throttle::LIMIT {
            assert!(!t.blocked(ip, start));
            t.fail(ip, start);
        }
        assert!(t.blocked(ip, start));
        assert!(!t.blocked(other, start), "per peer");
        assert!(!t.blocked(ip, start + Throttle::WINDOW), "the window ends");
        t.fail(ip, start + Throttle::WINDOW);
        assert!(!t.blocked(ip, start + Throttle::WINDOW), "a new window starts from zero");
    }

    #[test]
    fn cookie_parsing_takes_only_a_well_formed_secret() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; tollgate_csrf=AAAAAAAAAAAAAAAAAAAAAA; c=d"));
        assert_eq!(cookie(&h).as_deref(), Some("AAAAAAAAAAAAAAAAAAAAAA"));
        h.insert(header::COOKIE, HeaderValue::from_static("tollgate_csrf=<script>"));
        assert_eq!(cookie(&h), None);
    }
}
