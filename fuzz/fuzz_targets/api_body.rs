//! Request bodies of the HTTP API through the real router, in process (see `src/lib.rs`):
//! `POST /v1/requests` (as `alice`), `POST /v1/requests/{id}/decisions` (as `bob`, the owner, on
//! an existing request or a made-up id) and `POST /v1/tasks/{id}/complete` (as `admin`, on an
//! open task or a made-up id), with a valid token.
//!
//! Input: byte 0 picks the route, the id and the `Content-Type`; byte 1 whether an
//! `Idempotency-Key` goes along; the rest is the body. Properties: never a 5xx, and every 4xx
//! is the JSON error envelope.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request, header};
use libfuzzer_sys::fuzz_target;
use tollgate_fuzz::{app, token};

fuzz_target!(|data: &[u8]| {
    let [select, flags, body @ ..] = data else { return };
    let app = app();
    let made_up = uuid::Uuid::from_u128(0x0190_f0e1_7c2a_7d3e_8f40_1234_5678_9abc);
    let (path, principal) = match select % 3 {
        0 => ("/v1/requests".to_owned(), "alice"),
        1 => {
            let id = app.runs.get(usize::from(select / 3 % 8)).copied().unwrap_or(made_up);
            (format!("/v1/requests/{id}/decisions"), "bob")
        }
        _ => {
            let id = app.tasks.get(usize::from(select / 3 % 4)).copied().unwrap_or(made_up);
            (format!("/v1/tasks/{id}/complete"), "admin")
        }
    };
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(&path)
        .header(header::AUTHORIZATION, format!("Bearer {}", token(principal)));
    match select / 24 % 4 {
        0 | 1 => req = req.header(header::CONTENT_TYPE, "application/json"),
        2 => req = req.header(header::CONTENT_TYPE, "application/json; charset=utf-8"),
        _ => {}
    }
    if flags & 1 == 1 {
        req = req.header("Idempotency-Key", format!("fuzz-{}", flags >> 1));
    }
    let reply = app.send(req.body(Body::from(body.to_vec())).expect("request"));
    reply.assert_api_contract(&format!("POST {path}"));
});
