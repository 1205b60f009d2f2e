//! Logging set-up: `tracing` with an env-filter, text or JSON. sqlx is kept at `warn` because it
//! logs every statement at `info`.

use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

/// Installs the global subscriber (`RUST_LOG` overrides `log.level`).
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{},sqlx=warn,sea_orm=warn,hyper=warn", config.level)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if config.format == "json" { builder.json().try_init() } else { builder.try_init() };
}
