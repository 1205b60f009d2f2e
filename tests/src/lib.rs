//! Test harness for Tollgate's end-to-end tests and benchmarks: a fresh database per test, a
//! scripted webhook receiver standing in for the SaaS and the chat bridge, and the real `tollgate`
//! server spawned as a child process (so tests can SIGKILL it).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use tollgate_tests::{Receiver, Server, ServerOptions, TestDb};
//! let receiver = Receiver::start().await?;
//! let server = Server::start(TestDb::new().await?, ServerOptions::new(&receiver)).await?;
//! let (status, body) = server.client("alice").await?.get("/v1/me").await?;
//! # Ok(()) }
//! ```

mod harness;

pub use harness::client::{ApiClient, Reply};
pub use harness::db::{Backend, DATABASE_URL_ENV, TestDb};
pub use harness::fixtures::{CANARY, SECRET, directory_toml, test_workflows};
pub use harness::github::{GithubInstallation, GithubRequest, GithubServer, github_app_fixture};
pub use harness::oauth::{OAuthClient, OAuthEndpoints, OAuthServer, REQUIRE_OAUTH_ENV};
pub use harness::receiver::{Call, MINT_CANARY, MintedSecret, Receiver};
pub use harness::server::{CliOutput, Server, ServerOptions, default_bin};
pub use harness::slack;
pub use harness::smtp::{Mail, SmtpServer};

/// The wall clock, as the server reads it (tests compare arrival times with server timestamps).
#[must_use]
pub fn wall_clock() -> chrono::DateTime<chrono::Utc> {
    use tollgate_engine::clock::Clock as _;
    tollgate_engine::clock::SystemClock.now()
}

/// Polls `check` (every 25 ms) until it yields something, or fails after `patience` describing
/// `what` and the last state `check` reported. The way to wait for a condition the server
/// reaches on its own; never a sleep followed by an assertion.
///
/// # Errors
/// `check`'s own errors, or the timeout.
pub async fn eventually<T, F, Fut>(what: &str, patience: std::time::Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let deadline = std::time::Instant::now() + patience;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(25));
    loop {
        tick.tick().await;
        match check().await? {
            Ok(found) => return Ok(found),
            Err(state) => {
                anyhow::ensure!(
                    std::time::Instant::now() < deadline,
                    "timed out waiting for {what}; last seen: {state}"
                );
            }
        }
    }
}

/// Installs the process-wide rustls provider (ring) once; reqwest is built without one.
pub fn install_crypto_provider() {
    tollgate::install_crypto_provider();
}
