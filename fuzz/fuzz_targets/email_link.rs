//! Email approval links: the token format check (`links::is_well_formed`) and the pages behind
//! `/approvals/email/{token}` through the real router (`GET` shows, `POST` decodes the decision
//! form: anti-CSRF value, choice, reason), in process (see `src/lib.rs`).
//!
//! Byte 0 picks the mode, byte 1 the cookie; the rest is a token or a form body:
//! 0. `GET` of the rest as a token (percent-encoded into the path);
//! 1. `POST` of a form to the rest as a token (the form is the token's own text);
//! 2. `POST` of the rest as the form to a usable link whose approver already voted;
//! 3. the same with the page's valid `csrf` value first;
//! 4. the same to a link nobody used yet (a decision consumes it; once all are used, as 3).
//!
//! Properties: never a 5xx; a token that is not well formed, or not a usable link, always gets
//! the one "cannot be used" page (404) and never reaches the decision; the pages are HTML with
//! `Cache-Control: no-store`; a form whose `csrf` does not match the cookie never decides; a link
//! whose approver already voted never adds a vote (his same decision again is a retry, answered
//! as recorded; another one is refused); a decision is recorded at most once per link.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, percent_encode};
use tollgate_engine::links::is_well_formed;
use tollgate_fuzz::{App, LINK_COOKIE, Link, Reply, app};

fn send(app: &App, method: Method, token_path: &str, cookie: bool, form: Option<Vec<u8>>) -> Reply {
    let mut req = Request::builder().method(method).uri(format!("/approvals/email/{token_path}"));
    if cookie {
        req = req.header(header::COOKIE, format!("tollgate_csrf={LINK_COOKIE}"));
    }
    let body = match form {
        Some(form) => {
            req = req.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form)
        }
        None => Body::empty(),
    };
    let reply = app.send(req.body(body).expect("request"));
    assert!(!reply.status.is_server_error(), "{} {}", reply.status, reply.text());
    reply
}

/// The status and headers every page answers with.
fn assert_page(reply: &Reply) {
    let content_type = reply.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if content_type == Some("text/html; charset=utf-8") {
        assert_eq!(reply.headers.get(header::CACHE_CONTROL).map(|v| v.as_bytes()), Some(&b"no-store"[..]));
    } else {
        // Only axum's own rejection of a path that is not UTF-8 once decoded is not a page.
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}: {}", content_type, reply.text());
    }
}

fn recorded(reply: &Reply) -> bool {
    reply.status == StatusCode::OK && reply.text().contains("Decision recorded")
}

fn arbitrary_token(app: &App, rest: &[u8], cookie: bool, post: bool) {
    if rest.is_empty() {
        return; // `/approvals/email/` is another route (none: the API's 404).
    }
    let path = percent_encode(rest, NON_ALPHANUMERIC).to_string();
    let (method, form) = if post { (Method::POST, Some(rest.to_vec())) } else { (Method::GET, None) };
    let reply = send(app, method, &path, cookie, form);
    assert_page(&reply);
    let token = String::from_utf8_lossy(rest);
    let known = token == app.voted_link.token || app.fresh_links.lock().expect("links").iter().any(|l| l.token == token);
    if reply.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/html")) && !known {
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "token {token:?} (well formed: {})", is_well_formed(&token));
    }
}

fn decide(app: &App, link: &Link, rest: &[u8], cookie: bool, with_csrf: bool) -> Reply {
    let mut form = Vec::new();
    if with_csrf {
        form.extend_from_slice(format!("csrf={}&", link.csrf).as_bytes());
    }
    form.extend_from_slice(rest);
    let reply = send(app, Method::POST, &link.token, cookie, Some(form));
    assert_page(&reply);
    if !with_csrf || !cookie {
        assert!(
            // 404 once the link cannot be used any more (it was consumed): not decided either.
            matches!(reply.status.as_u16(), 400 | 403 | 404),
            "a form without the matching csrf value: {} {}",
            reply.status,
            reply.text()
        );
    }
    reply
}

fuzz_target!(|data: &[u8]| {
    let [mode, flags, rest @ ..] = data else { return };
    let app = app();
    // Mostly with the cookie the csrf values were made for.
    let cookie = flags % 8 != 0;
    match mode % 5 {
        0 | 1 => arbitrary_token(app, rest, cookie, mode % 5 == 1),
        2 | 3 => {
            let reply = decide(app, &app.voted_link, rest, cookie, mode % 5 == 3);
            // bob's approve again is answered as a retry of his vote; nothing may add a vote.
            let view = app.request_view(app.voted_run);
            let votes = view["approvals"].as_array().map_or(0, Vec::len);
            assert_eq!(votes, 1, "a second vote through the link of an approver who voted: {view}");
            assert_eq!(view["status"], "awaiting_approval", "{view}");
            if recorded(&reply) {
                assert_eq!(view["approvals"][0]["decision"], "approve", "{view}");
            }
        }
        _ => {
            let link = app.fresh_links.lock().expect("links").last().cloned();
            let Some(link) = link else {
                decide(app, &app.voted_link, rest, cookie, true);
                return;
            };
            let reply = decide(app, &link, rest, cookie, true);
            if recorded(&reply) {
                app.fresh_links.lock().expect("links").retain(|l| l.token != link.token);
                // Used: the link is now like any unknown one.
                let again = decide(app, &link, b"decision=approve", true, true);
                assert_eq!(again.status, StatusCode::NOT_FOUND, "a used link decided again: {}", again.text());
            }
        }
    }
});
