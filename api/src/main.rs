//! The `tollgate` binary.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tollgate::install_crypto_provider();
    let cli = tollgate::cli::Cli::parse();
    match tollgate::cli::run(cli).await {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            tollgate::cli::eprintln_err(&format!("error: {e:#}"));
            std::process::ExitCode::FAILURE
        }
    }
}
