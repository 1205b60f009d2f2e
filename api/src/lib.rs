//! Tollgate's server and CLI: HTTP API (axum), configuration, command line, telemetry.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod dto;
pub mod error;
pub mod extract;
mod routes;
pub mod server;
pub mod telemetry;

/// `User-Agent` of the official CLI (the server records its decisions with channel `cli`).
pub const USER_AGENT: &str = concat!("tollgate-cli/", env!("CARGO_PKG_VERSION"));

/// Installs the process-wide TLS crypto provider (ring), once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
