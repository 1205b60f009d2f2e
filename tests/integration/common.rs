//! Shared set-up: a receiver, and a server on a fresh database using the test binary.

use std::time::Duration;

use serde_json::Value;
use tollgate_tests::{Call, Receiver, Server, ServerOptions, TestDb};

/// Generous bound for anything asynchronous the server does on its own (notifications, connector
/// calls, status changes); tests normally finish far sooner.
pub(crate) const PATIENCE: Duration = Duration::from_secs(15);

/// A server and its webhook receiver. The server is declared first so it dies first.
pub(crate) struct TestEnv {
    pub(crate) server: Server,
    pub(crate) receiver: Receiver,
}

/// Options for a server using this test binary.
pub(crate) fn options(receiver: &Receiver) -> ServerOptions {
    ServerOptions::new(receiver).bin(env!("CARGO_BIN_EXE_tollgate-server"))
}

/// A receiver and a ready server with the test directory and workflows.
pub(crate) async fn start() -> anyhow::Result<TestEnv> {
    start_with(|o| o).await
}

/// Like [`start`], with the options adjusted.
pub(crate) async fn start_with(adjust: impl FnOnce(ServerOptions) -> ServerOptions) -> anyhow::Result<TestEnv> {
    tollgate_tests::install_crypto_provider();
    let receiver = Receiver::start().await?;
    let server = Server::start(TestDb::new().await?, adjust(options(&receiver))).await?;
    Ok(TestEnv { server, receiver })
}

/// The request id of a request view.
pub(crate) fn id_of(request: &Value) -> String {
    request["id"].as_str().unwrap_or_else(|| panic!("no id in {request}")).to_owned()
}

/// Calls about one request.
pub(crate) fn of_run<'a>(calls: &'a [Call], run: &'a str) -> impl Iterator<Item = &'a Call> + 'a {
    calls.iter().filter(move |c| c.run_id() == Some(run))
}

/// Whether a connector call with `operation` for `run` arrived.
pub(crate) fn has_action(calls: &[Call], operation: &str, run: &str) -> bool {
    of_run(calls, run).any(|c| c.operation() == Some(operation))
}

/// Asserts the one error envelope: exactly `{"error": {"code": code, "detail": non-empty}}`.
#[track_caller]
pub(crate) fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "status; body: {body}");
    let obj = body.as_object().unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["error"], "envelope keys: {body}");
    let err = body["error"].as_object().unwrap_or_else(|| panic!("error is not an object: {body}"));
    let mut keys: Vec<&String> = err.keys().collect();
    keys.sort();
    assert_eq!(keys, ["code", "detail"], "error keys: {body}");
    assert_eq!(body["error"]["code"], want_code, "code; body: {body}");
    assert!(body["error"]["detail"].as_str().is_some_and(|d| !d.is_empty()), "detail: {body}");
}

/// Event types of audit records, in order.
pub(crate) fn event_types(records: &[Value]) -> Vec<String> {
    records.iter().map(|r| r["event_type"].as_str().unwrap_or_default().to_owned()).collect()
}

/// Asserts `want` appears in `have` in this order (other events may come between).
#[track_caller]
pub(crate) fn assert_in_order(have: &[String], want: &[&str]) {
    let mut it = have.iter();
    for w in want {
        assert!(
            it.any(|h| h == w),
            "audit events {have:?} do not contain {want:?} in order (missing or misplaced: {w})"
        );
    }
}
