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
pub use harness::receiver::{Call, Receiver};
pub use harness::server::{CliOutput, Server, ServerOptions, default_bin};
pub use harness::slack;
pub use harness::smtp::{Mail, SmtpServer};

/// The wall clock, as the server reads it (tests compare arrival times with server timestamps).
#[must_use]
pub fn wall_clock() -> chrono::DateTime<chrono::Utc> {
    use tollgate_engine::clock::Clock as _;
    tollgate_engine::clock::SystemClock.now()
}

/// Installs the process-wide rustls provider (ring) once; reqwest is built without one.
pub fn install_crypto_provider() {
    tollgate::install_crypto_provider();
}
