//! Slack interaction and slash-command payloads through the real router (`/slack/interactions`,
//! `/slack/commands`: signature check, replay window, form and JSON decoding, the handlers
//! behind them), and the signature verifier and request references on their own.
//!
//! Byte 0 picks the mode, byte 1 which request `@RUN@` stands for (see `with_run_ids`):
//! 0. interaction, the rest is the raw form body, signed with the configured secret;
//! 1. interaction, the rest is the JSON `payload` (form-encoded by the target), signed;
//! 2. slash command, the rest is the raw form body, signed;
//! 3. either endpoint, unsigned: the rest is `timestamp\nsignature\nbody`, sent as headers as is;
//! 4. `verify::verify` and `blocks::parse_request_ref` directly.
//!
//! Properties: never a 5xx; every 4xx is the JSON error envelope; a request signed with the
//! configured secret is never refused as badly signed; an unsigned one always is (400 or 401);
//! the verifier accepts exactly what `verify::sign` produces; a parsed request reference prints
//! back to itself.
#![no_main]

use std::sync::atomic::{AtomicI64, Ordering};

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use tollgate_engine::slack::blocks::{parse_request_ref, request_ref};
use tollgate_engine::slack::verify::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER, VerifyError};
use tollgate_fuzz::{App, Reply, SLACK_SECRET, app, with_run_ids};

fn secret() -> SecretString {
    SecretString::from(SLACK_SECRET)
}

/// A timestamp inside the verifier's window that differs from call to call, so that the replay
/// filter (one signature is handled once) does not swallow repeated bodies.
fn timestamp() -> i64 {
    static CALLS: AtomicI64 = AtomicI64::new(0);
    chrono::Utc::now().timestamp() - CALLS.fetch_add(1, Ordering::Relaxed) % 200
}

fn post(app: &App, path: &str, body: Vec<u8>, ts: Option<&[u8]>, sig: Option<&[u8]>) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    for (name, value) in [(TIMESTAMP_HEADER, ts), (SIGNATURE_HEADER, sig)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            req = req.header(name, v);
        }
    }
    app.send(req.body(Body::from(body)).expect("request"))
}

fn signed(app: &App, path: &str, body: Vec<u8>) {
    let ts = timestamp();
    let signature = verify::sign(&secret(), ts, &body);
    let reply = post(app, path, body, Some(ts.to_string().as_bytes()), Some(signature.as_bytes()));
    reply.assert_api_contract(path);
    assert!(!reply.text().contains("invalid_slack_signature"), "{path}: a signed request was refused: {}", reply.text());
    if reply.status == StatusCode::OK && !reply.body.is_empty() {
        serde_json::from_slice::<serde_json::Value>(&reply.body)
            .unwrap_or_else(|e| panic!("{path}: a 200 that is neither empty nor JSON ({e}): {}", reply.text()));
    }
}

fn unsigned(app: &App, path: &str, rest: &[u8]) {
    let mut parts = rest.splitn(3, |b| *b == b'\n');
    let (ts, sig, body) = (parts.next(), parts.next(), parts.next().unwrap_or_default());
    let reply = post(app, path, body.to_vec(), ts, sig);
    reply.assert_api_contract(path);
    assert!(
        matches!(reply.status.as_u16(), 400 | 401) && reply.text().contains("invalid_slack_signature"),
        "{path}: an unsigned request was not refused: {} {}",
        reply.status,
        reply.text()
    );
}

fn direct(rest: &[u8]) {
    let now = chrono::Utc::now();
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(3, '\n');
    let (ts, sig, body) = (parts.next().unwrap_or_default(), parts.next(), parts.next().unwrap_or_default());
    if let Ok(at) = verify::verify(&secret(), Some(ts), sig, body.as_bytes(), now) {
        assert_eq!(sig, Some(verify::sign(&secret(), at, body.as_bytes()).as_str()), "verified a forged signature");
    }
    // What `sign` makes verifies at its own time, and only for its own body.
    let at = now.timestamp();
    let good = verify::sign(&secret(), at, body.as_bytes());
    let ts = at.to_string();
    assert_eq!(verify::verify(&secret(), Some(&ts), Some(&good), body.as_bytes(), now), Ok(at));
    let mut other = body.as_bytes().to_vec();
    other.push(b'x');
    assert_eq!(verify::verify(&secret(), Some(&ts), Some(&good), &other, now), Err(VerifyError::Mismatch));
    let empty = SecretString::from("");
    assert!(verify::verify(&empty, Some(&ts), Some(&verify::sign(&empty, at, b"")), b"", now).is_err());

    for candidate in [ts.as_str(), sig.unwrap_or_default(), body, &text] {
        if let Some((id, step)) = parse_request_ref(candidate) {
            assert_eq!(parse_request_ref(&request_ref(id, step)), Some((id, step)), "{candidate:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, pick, rest @ ..] = data else { return };
    if mode % 5 == 4 {
        direct(rest);
        return;
    }
    let app = app();
    let rest = with_run_ids(rest, app, *pick);
    match mode % 5 {
        0 => signed(app, "/slack/interactions", rest),
        1 => {
            let json = String::from_utf8_lossy(&rest);
            let body = form_urlencoded::Serializer::new(String::new()).append_pair("payload", &json).finish();
            signed(app, "/slack/interactions", body.into_bytes());
        }
        2 => signed(app, "/slack/commands", rest),
        _ => unsigned(app, if pick & 1 == 0 { "/slack/interactions" } else { "/slack/commands" }, &rest),
    }
});
