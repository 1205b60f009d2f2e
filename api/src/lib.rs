//! Tollgate's server and CLI: HTTP API (axum), configuration, command line, telemetry.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod dto;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod reload;
mod routes;
pub mod server;
pub mod telemetry;

/// `User-Agent` of the official CLI (the server records its decisions with channel `cli`).
pub const USER_AGENT: &str = concat!("tollgate-cli/", env!("CARGO_PKG_VERSION"));

/// Installs the process-wide TLS crypto provider (ring), once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The whole `tollgate` program: parse the command line, run, exit. Shared by the `tollgate`
/// binary and the test suite's copy of it.
#[must_use]
pub fn main_entry() -> std::process::ExitCode {
    use clap::Parser as _;
    install_crypto_provider();
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            cli::eprintln_err(&format!("error: cannot start the runtime: {e}"));
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            cli::eprintln_err(&format!("error: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}
