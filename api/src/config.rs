//! Configuration: built-in defaults → config file (TOML) → `TOLLGATE_` environment variables
//! (`__` for nesting, `*_FILE` to read a value from a file) → command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Deserialize;
use tollgate_engine::directory::{Directory, Group, Integration, Principal, ReferenceError};
use tollgate_engine::outbound::webhook::WebhookSettings;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Public base URL of this server (used to build links; never taken from a Host header).
    #[serde(default)]
    pub public_url: Option<String>,
    /// This replica's name; defaults to the host name.
    #[serde(default)]
    pub node_id: Option<String>,
    /// Database.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// Workflow definitions.
    #[serde(default)]
    pub workflows: WorkflowsConfig,
    /// Notification channels.
    #[serde(default)]
    pub notifications: NotificationsConfig,
    /// Email: notifications by SMTP, or `.eml` files in `outbox_dir` when no server is set.
    #[serde(default)]
    pub email: tollgate_engine::notify::email::EmailSettings,
    /// Slack: approval messages with buttons, the interactivity endpoint and the slash command.
    #[serde(default)]
    pub slack: Option<tollgate_engine::slack::SlackSettings>,
    /// First-start bootstrap.
    #[serde(default)]
    pub bootstrap: BootstrapConfig,
    /// `[secrets]`: the key secrets are sealed with at rest.
    #[serde(default)]
    pub secrets: SecretsConfig,
    /// HTTP limits.
    #[serde(default)]
    pub http: HttpConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Engine tuning.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Principals by id.
    #[serde(default)]
    pub principals: BTreeMap<String, Principal>,
    /// Groups by name.
    #[serde(default)]
    pub groups: BTreeMap<String, Group>,
    /// Integrations by name.
    #[serde(default)]
    pub integrations: BTreeMap<String, Integration>,
    /// The file this configuration was read from, if any (set by [`load`]; named in errors).
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://tollgate.db?mode=rwc` (default) or `postgres://user@host/db`.
    #[serde(default = "default_db_url")]
    pub url: String,
    /// Connection pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: default_db_url(), max_connections: default_pool() }
    }
}

fn default_db_url() -> String {
    tollgate_engine::store::DEFAULT_SQLITE_URL.to_owned()
}

fn default_pool() -> u32 {
    8
}

/// `[workflows]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowsConfig {
    /// Load the definitions shipped inside the binary.
    #[serde(default = "yes")]
    pub bundled: bool,
    /// A directory of `*.yaml` definitions to load as well.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

impl Default for WorkflowsConfig {
    fn default() -> Self {
        Self { bundled: true, dir: None }
    }
}

fn yes() -> bool {
    true
}

/// `[notifications]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Signed JSON POSTs to a chat bridge or any receiver.
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
    /// Warn a grant's holder this long before access ends (e.g. `15m`), or `off`.
    #[serde(default = "default_expiry_warning")]
    pub expiry_warning: String,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        Self { webhook: None, expiry_warning: default_expiry_warning() }
    }
}

fn default_expiry_warning() -> String {
    "15m".to_owned()
}

impl NotificationsConfig {
    /// The expiry warning lead time, `None` when `off`.
    ///
    /// # Errors
    /// A message when the value is neither a positive duration nor `off`.
    pub fn expiry_warning(&self) -> Result<Option<chrono::Duration>, ConfigError> {
        if self.expiry_warning.trim() == "off" {
            return Ok(None);
        }
        let d = tollgate_workflows::Duration::parse(&self.expiry_warning)
            .map_err(|e| ConfigError(format!("notifications.expiry_warning: {e} (or \"off\")")))?;
        Ok(Some(chrono::Duration::from_std(d.as_std()).unwrap_or(chrono::Duration::MAX)))
    }
}

/// `[bootstrap]`: how the first admin gets a token.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapConfig {
    /// Principal that receives the bootstrap token (must have the admin role).
    #[serde(default)]
    pub admin_principal: Option<String>,
    /// A token to register for it on first start, when no token exists yet
    /// (`TOLLGATE_BOOTSTRAP__ADMIN_TOKEN` or `TOLLGATE_BOOTSTRAP__ADMIN_TOKEN_FILE`).
    #[serde(default)]
    pub admin_token: Option<secrecy::SecretString>,
}

/// `[secrets]`: secrets Tollgate keeps for a while (a credential minted for a requester until it is
/// retrieved, a credential's stored value) are sealed with this key (XChaCha20-Poly1305).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretsConfig {
    /// 64 hex digits (`openssl rand -hex 32`); give it with `TOLLGATE_SECRETS__KEY_FILE`. Without
    /// it, nothing that would store a secret is accepted. Changing it makes what is sealed
    /// unreadable (minted credentials not yet retrieved are lost; they can be minted again).
    #[serde(default)]
    pub key: Option<secrecy::SecretString>,
}

impl Config {
    /// The sealing key, when one is configured.
    ///
    /// # Errors
    /// A key that is not 64 hex digits.
    pub fn sealing_key(&self) -> Result<Option<tollgate_engine::sealed::SealingKey>, ConfigError> {
        self.secrets
            .key
            .as_ref()
            .map(tollgate_engine::sealed::SealingKey::from_hex)
            .transpose()
            .map_err(|e| ConfigError(e.to_string()))
    }
}

/// `[http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Largest accepted request body, bytes.
    #[serde(default = "default_body")]
    pub max_body_bytes: usize,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { max_body_bytes: default_body(), trusted_proxies: Vec::new() }
    }
}

impl HttpConfig {
    /// `trusted_proxies` parsed; a single address is a /32 (or /128) network.
    ///
    /// # Errors
    /// An entry that is neither an IP address nor a CIDR network, named with its key.
    pub fn trusted_proxies(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<ipnet::IpNet>().or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from)).map_err(
                    |_| anyhow::anyhow!("http.trusted_proxies[{i}]: {p:?} is not an IP address or CIDR network"),
                )
            })
            .collect()
    }
}

fn default_body() -> usize {
    64 * 1024
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A tracing filter, e.g. `info,tollgate=debug`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: default_log_format(), level: default_log_level() }
    }
}

fn default_log_format() -> String {
    "text".to_owned()
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Connector and notification calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub dispatch_concurrency: usize,
    /// Seconds between retries of a revocation that exhausted its retry budget.
    #[serde(default = "default_revoke_retry")]
    pub revoke_retry_secs: u64,
    /// Seconds an outbox lease lasts before another replica may take over.
    #[serde(default = "default_lease")]
    pub lease_secs: u64,
    /// Seconds between sweeps for grants still active past their expiry with no expiry timer
    /// (a safety net that should never find anything).
    #[serde(default = "default_expiry_sweep")]
    pub expiry_sweep_secs: u64,
    /// Seconds past a grant's expiry before the sweep treats it as lost rather than late.
    #[serde(default = "default_expiry_grace")]
    pub expiry_grace_secs: u64,
    /// Seconds past due before a replica fires a timer another replica armed (that replica fires
    /// its own when due; this is how long it gets before the others take over).
    #[serde(default = "default_timer_takeover")]
    pub timer_takeover_secs: u64,
    /// Readiness: seconds one write transaction may run, and how late past its 5-second scan the
    /// timer service or the outbox dispatcher may come round, before `/readyz` answers 503.
    #[serde(default = "default_stall_bound")]
    pub stall_bound_secs: u64,
    /// When to check every grant against its target (drift reconciliation): a five-field
    /// crontab line in UTC (`minute hour day month weekday`), or six fields with seconds first;
    /// `"off"` disables it. Default hourly, on the hour.
    #[serde(default = "default_reconcile_schedule")]
    pub reconcile_schedule: String,
    /// Days after its revocation a grant is still checked for absence by reconciliation.
    #[serde(default = "default_reconcile_lookback")]
    pub reconcile_lookback_days: u64,
    /// Seconds the holder has to retrieve a credential a connector minted for their grant
    /// (`POST /v1/grants/{id}/secret`) before it is destroyed unread; 1 to 604800 (7 days).
    #[serde(default = "default_secret_delivery")]
    pub secret_delivery_secs: u64,
}

/// Longest `engine.secret_delivery_secs`: a week.
pub const MAX_SECRET_DELIVERY_SECS: u64 = 7 * 86_400;

fn default_secret_delivery() -> u64 {
    3600
}

impl EngineConfig {
    /// The reconciliation schedule, or `None` when it is off.
    ///
    /// # Errors
    /// A schedule that does not parse, naming the key.
    pub fn reconcile_schedule(&self) -> Result<Option<tollgate_engine::schedule::CronSchedule>, ConfigError> {
        let written = self.reconcile_schedule.trim();
        if written.eq_ignore_ascii_case("off") {
            return Ok(None);
        }
        let schedule = written.parse().map_err(|e| ConfigError(format!("engine.reconcile_schedule: {e}")))?;
        Ok(Some(schedule))
    }
}

fn default_reconcile_schedule() -> String {
    "0 * * * *".to_owned()
}

fn default_reconcile_lookback() -> u64 {
    30
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            dispatch_concurrency: default_concurrency(),
            revoke_retry_secs: default_revoke_retry(),
            lease_secs: default_lease(),
            expiry_sweep_secs: default_expiry_sweep(),
            expiry_grace_secs: default_expiry_grace(),
            timer_takeover_secs: default_timer_takeover(),
            stall_bound_secs: default_stall_bound(),
            reconcile_schedule: default_reconcile_schedule(),
            reconcile_lookback_days: default_reconcile_lookback(),
            secret_delivery_secs: default_secret_delivery(),
        }
    }
}

fn default_concurrency() -> usize {
    256
}

fn default_revoke_retry() -> u64 {
    3600
}

fn default_lease() -> u64 {
    300
}

fn default_expiry_sweep() -> u64 {
    60
}

fn default_expiry_grace() -> u64 {
    60
}

fn default_timer_takeover() -> u64 {
    5
}

fn default_stall_bound() -> u64 {
    30
}

/// Top-level keys, so unrelated `TOLLGATE_*` variables (e.g. the CLI's `TOLLGATE_URL`) are not
/// mistaken for server configuration.
const SECTIONS: &[&str] = &[
    "listen",
    "public_url",
    "node_id",
    "database",
    "workflows",
    "notifications",
    "email",
    "slack",
    "bootstrap",
    "secrets",
    "http",
    "log",
    "engine",
    "principals",
    "groups",
    "integrations",
];

/// `TOLLGATE_*` variables that are not configuration but read by someone: the client commands'
/// (`TOLLGATE_URL`, `TOLLGATE_TOKEN`), `--config` (`TOLLGATE_CONFIG`), and the project's own
/// test and benchmark knobs (`TOLLGATE_TEST_*`, `TOLLGATE_CI_*`, `TOLLGATE_BIN`).
const NOT_CONFIG: &[&str] = &["URL", "TOKEN", "CONFIG", "BIN", "CREDENTIALS"];
const NOT_CONFIG_PREFIXES: &[&str] = &["TEST_", "CI_"];

/// A warning for each `TOLLGATE_*` variable among `names` that matches no configuration key
/// (a top-level typo such as `TOLLGATE_LISTN` would otherwise be ignored; a typo below a
/// section is an error of [`load`]), with the closest key when one is close.
#[must_use]
pub fn unknown_env_vars(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut warnings = Vec::new();
    for name in names {
        let Some(rest) = name.strip_prefix("TOLLGATE_") else { continue };
        if NOT_CONFIG.contains(&rest) || NOT_CONFIG_PREFIXES.iter().any(|p| rest.starts_with(p)) {
            continue;
        }
        let top = rest.split("__").next().unwrap_or_default().to_ascii_lowercase();
        let top = top.strip_suffix("_file").filter(|_| !rest.contains("__")).unwrap_or(&top);
        if SECTIONS.contains(&top) {
            continue;
        }
        let closest = SECTIONS
            .iter()
            .map(|s| (strsim::levenshtein(s, top), s))
            .filter(|(d, _)| *d <= 2)
            .min_by_key(|(d, _)| *d)
            .map(|(_, s)| format!(" (did you mean TOLLGATE_{}?)", s.to_ascii_uppercase()))
            .unwrap_or_default();
        warnings.push(format!("environment variable {name} matches no configuration key; it is ignored{closest}"));
    }
    warnings.sort();
    warnings
}

/// A configuration problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Loads the configuration. `file` is optional; `overrides` are CLI flags as `(key, value)`.
///
/// # Errors
/// A message naming the offending key and where it came from.
pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Config, ConfigError> {
    let mut fig = Figment::new();
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!("config file {} does not exist", path.display())));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    // Env keys keep their case (`DATABASE.URL`) until extraction: compare lowercased.
    let in_section = |key: &str| {
        let key = key.to_ascii_lowercase();
        let top = key.split("__").next().unwrap_or_default().split('.').next().unwrap_or_default();
        SECTIONS.contains(&top)
    };
    fig = fig.merge(
        Env::prefixed("TOLLGATE_")
            .split("__")
            .filter(move |k| !k.as_str().to_ascii_lowercase().ends_with("_file") && in_section(k.as_str())),
    );
    for (name, path) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        let Some(rest) = name.strip_prefix("TOLLGATE_").and_then(|n| n.strip_suffix("_FILE")) else { continue };
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if !in_section(&key) {
            continue;
        }
        let value = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("{name}: cannot read {}: {e}", Path::new(&path).display())))?;
        fig = fig.merge(Serialized::global(&key, value.trim_end_matches(['\n', '\r']).to_owned()));
    }
    for (key, value) in overrides {
        fig = fig.merge(Serialized::global(key, value.clone()));
    }
    let mut config: Config = fig.extract().map_err(|e| {
        let e = e.into_iter().next().map_or_else(
            || "unknown error".to_owned(),
            |e| {
                let key = if e.path.is_empty() { String::new() } else { format!("{}: ", e.path.join(".")) };
                let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
                format!("{key}{}{source}", without_value(&e.kind))
            },
        );
        ConfigError(e)
    })?;
    config.file = file.map(Path::to_path_buf);
    config.validate()?;
    Ok(config)
}

/// A figment error's kind as text, without the value it found: the value may be a secret (a
/// token given where a table was expected), and the message goes to logs, the audit log and API
/// answers (a refused reload).
fn without_value(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    match kind {
        Kind::InvalidType(_, expected) => format!("invalid type: expected {expected}"),
        Kind::InvalidValue(_, expected) => format!("invalid value: expected {expected}"),
        other => other.to_string(),
    }
}

impl Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError(format!("listen: {:?} is not an address like 127.0.0.1:8080", self.listen)));
        }
        if !tollgate_engine::store::is_supported_url(&self.database.url) {
            return Err(ConfigError("database.url: must start with sqlite: or postgres://".to_owned()));
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return Err(ConfigError(format!("log.format: {:?} must be text or json", self.log.format)));
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(ConfigError("public_url: must start with http:// or https://".to_owned()));
        }
        self.notifications.expiry_warning()?;
        self.sealing_key()?;
        self.engine.reconcile_schedule()?;
        if !(1..=MAX_SECRET_DELIVERY_SECS).contains(&self.engine.secret_delivery_secs) {
            return Err(ConfigError(format!(
                "engine.secret_delivery_secs: must be from 1 to {MAX_SECRET_DELIVERY_SECS} seconds"
            )));
        }
        if self.email.enabled {
            tollgate_engine::notify::email::EmailChannel::new(&self.email)
                .map_err(|e| ConfigError(format!("email: {e}")))?;
        }
        self.slack()?;
        if let Some(w) = &self.notifications.webhook {
            w.resolve_secret().map_err(|e| ConfigError(format!("notifications.webhook: {e}")))?;
        }
        if let (Some(p), Some(_)) = (&self.bootstrap.admin_principal, &self.bootstrap.admin_token)
            && !self.principals.contains_key(p)
        {
            return Err(ConfigError(format!("bootstrap.admin_principal: unknown principal {p:?}")));
        }
        if self.bootstrap.admin_token.is_some() && self.bootstrap.admin_principal.is_none() {
            return Err(ConfigError(
                "bootstrap.admin_principal: required when bootstrap.admin_token is set".to_owned(),
            ));
        }
        Ok(())
    }

    /// The directory described by this configuration.
    ///
    /// # Errors
    /// A dangling reference, naming its key.
    pub fn directory(&self) -> Result<Directory, ConfigError> {
        Directory::new(self.principals.clone(), self.groups.clone(), self.integrations.clone())
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// The directory described by this configuration, with the names its entries refer to left
    /// unchecked ([`Directory::unresolved`]): for callers that check them together with the
    /// workflows' ([`Self::reference_errors`]) and report them all at once.
    ///
    /// # Errors
    /// An invalid entry, naming its key.
    pub fn directory_unresolved(&self) -> Result<Directory, ConfigError> {
        Directory::unresolved(self.principals.clone(), self.groups.clone(), self.integrations.clone())
            .map_err(|e| ConfigError(e.to_string()))
    }

    /// One line per dangling reference, naming this configuration's file for the directory's own
    /// entries (workflow errors name their workflow file already).
    #[must_use]
    pub fn reference_errors(&self, errors: &[ReferenceError]) -> Vec<String> {
        let file = self.file.as_ref().map_or_else(|| "configuration".to_owned(), |f| f.display().to_string());
        errors
            .iter()
            .map(|e| if e.workflow.is_none() && e.source.is_empty() { format!("{file}: {e}") } else { e.to_string() })
            .collect()
    }

    /// The resolved `[slack]` settings, when Slack is configured and enabled.
    ///
    /// # Errors
    /// A missing or empty bot token or signing secret, or an invalid setting, naming the key.
    pub fn slack(&self) -> Result<Option<tollgate_engine::slack::ResolvedSlack>, ConfigError> {
        match &self.slack {
            Some(s) if s.enabled => s.resolve().map(Some).map_err(|e| ConfigError(format!("slack: {e}"))),
            _ => Ok(None),
        }
    }

    /// The base URL links are built on: `public_url`, or `http://{listen}` when unset.
    #[must_use]
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                // Good enough on the machine itself; anything reached from elsewhere sets it.
                let listen = self.listen.replace("0.0.0.0", "localhost").replace("[::]", "localhost");
                format!("http://{listen}")
            }
        }
    }

    /// This replica's name: `node_id`, or the host name.
    #[must_use]
    pub fn node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "tollgate".to_owned())
        })
    }
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment's Jail closures return figment::Error, which is large")]
mod tests {
    use figment::Jail;
    use secrecy::ExposeSecret;

    use super::{HttpConfig, load, unknown_env_vars};

    const FILE: &str = r#"
listen = "127.0.0.1:9000"
[database]
url = "sqlite://from-file.db?mode=rwc"
[principals.alice]
email = "alice@example.com"
"#;

    #[test]
    fn the_shipped_example_configuration_loads_and_its_directory_is_valid() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tollgate.toml");
        let c = load(Some(&path), &[]).expect("deploy/tollgate.toml loads");
        let directory = c.directory().expect("its directory is valid");
        assert!(directory.principals.values().any(|p| p.roles.contains(&tollgate_engine::directory::Role::Admin)));
        assert_eq!(c.http.trusted_proxies().expect("trusted_proxies parse"), Vec::<ipnet::IpNet>::new());
        let text = std::fs::read_to_string(&path).expect("read");
        for documented in [
            "enabled = true                   # false keeps",
            "disabled = true",
            "trusted_proxies",
            "timer_takeover_secs",
            "secret_delivery_secs",
        ] {
            assert!(text.contains(documented), "deploy/tollgate.toml documents {documented:?}");
        }
    }

    #[test]
    fn the_shipped_configuration_and_bundled_workflows_name_only_what_the_directory_defines() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/tollgate.toml");
        let c = load(Some(&path), &[]).expect("deploy/tollgate.toml loads");
        let directory = c.directory_unresolved().expect("valid entries");
        let bundled: Vec<_> = tollgate_workflows::BUNDLED
            .iter()
            .map(|(name, text)| (*name, *text, tollgate_workflows::parse_definition(name, text).expect("valid")))
            .collect();
        let workflows = bundled.iter().map(|(name, text, definition)| tollgate_engine::directory::WorkflowSourceRef {
            source: name,
            text: Some(text),
            definition,
        });
        let checked = directory.check_references(workflows).map_err(|e| c.reference_errors(&e));
        assert_eq!(checked, Ok(()));
        // And a dangling one is named with the file it is in.
        let mut c = c;
        c.groups.get_mut("security").expect("security").members.push("ghost".to_owned());
        let errors = c.directory_unresolved().expect("valid entries").check_references([]).expect_err("dangling");
        assert_eq!(
            c.reference_errors(&errors),
            [format!(r#"{}: groups.security.members: unknown principal "ghost""#, path.display())]
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_key_never_shown() {
        Jail::expect_with(|jail| {
            // A token pasted where a section belongs: the message (logged, audited when a reload
            // is refused) names the key and what was expected, not the token.
            jail.create_file("t.toml", "slack = \"xoxb-not-shown-1234\"\n[engine]\nlease_secs = 60\n")?;
            let e = load(Some(std::path::Path::new("t.toml")), &[]).expect_err("wrong type").to_string();
            assert!(e.contains("slack") && e.contains("invalid type: expected"), "{e}");
            assert!(!e.contains("xoxb-not-shown-1234"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks_and_errors_name_the_entry() {
        let http = HttpConfig {
            trusted_proxies: vec!["10.0.0.0/8".into(), "::1".into(), "192.0.2.7".into()],
            ..HttpConfig::default()
        };
        let nets = http.trusted_proxies().expect("valid");
        assert_eq!(nets.iter().map(ToString::to_string).collect::<Vec<_>>(), ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
        let bad =
            HttpConfig { trusted_proxies: vec!["10.0.0.0/8".into(), "proxy.local".into()], ..HttpConfig::default() };
        let e = bad.trusted_proxies().expect_err("a host name").to_string();
        assert!(e.contains("http.trusted_proxies[1]") && e.contains("proxy.local"), "{e}");
    }

    #[test]
    fn unknown_tollgate_variables_are_warned_about_with_a_suggestion() {
        let names = [
            "TOLLGATE_LISTN",
            "TOLLGATE_LISTEN",
            "TOLLGATE_DATABASE__URL",
            "TOLLGATE_DATABSE__URL",
            "TOLLGATE_PUBLIC_URL_FILE",
            "TOLLGATE_URL",
            "TOLLGATE_TOKEN",
            "TOLLGATE_CONFIG",
            "TOLLGATE_TEST_DATABASE_URL",
            "TOLLGATE_SOMETHING_ELSE",
            "PATH",
        ];
        let warnings = unknown_env_vars(names.map(str::to_owned));
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(
            warnings[0].contains("TOLLGATE_DATABSE__URL") && warnings[0].contains("did you mean TOLLGATE_DATABASE?")
        );
        assert!(warnings[1].contains("TOLLGATE_LISTN") && warnings[1].contains("did you mean TOLLGATE_LISTEN?"));
        assert!(warnings[2].contains("TOLLGATE_SOMETHING_ELSE") && !warnings[2].contains("did you mean"));
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_flags() {
        Jail::expect_with(|jail| {
            jail.create_file("tollgate.toml", FILE)?;
            let c = load(Some("tollgate.toml".as_ref()), &[]).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:9000", "file over default");
            assert_eq!(c.database.max_connections, 8, "default kept");
            jail.set_env("TOLLGATE_DATABASE__URL", "postgres://env@localhost/db");
            jail.set_env("TOLLGATE_LISTEN", "127.0.0.1:9001");
            jail.set_env("TOLLGATE_URL", "http://client-only"); // the CLI's variable, not config
            let c = load(Some("tollgate.toml".as_ref()), &[]).map_err(|e| e.to_string())?;
            assert_eq!(c.database.url, "postgres://env@localhost/db", "env over file");
            assert_eq!(c.listen, "127.0.0.1:9001");
            let c = load(Some("tollgate.toml".as_ref()), &[("listen", "127.0.0.1:9002".to_owned())])
                .map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:9002", "flag over env");
            assert_eq!(c.principals["alice"].email.as_deref(), Some("alice@example.com"));
            Ok(())
        });
    }

    #[test]
    fn file_variants_read_secrets_from_files() {
        Jail::expect_with(|jail| {
            jail.create_file("token", "0123456789abcdef0123456789abcdef\n")?;
            jail.create_file(
                "t.toml",
                "[principals.admin]\nroles = [\"admin\"]\n[bootstrap]\nadmin_principal = \"admin\"\n",
            )?;
            jail.set_env("TOLLGATE_BOOTSTRAP__ADMIN_TOKEN_FILE", "token");
            let c = load(Some("t.toml".as_ref()), &[]).map_err(|e| e.to_string())?;
            let token = c.bootstrap.admin_token.as_ref().map(|t| t.expose_secret().to_owned());
            assert_eq!(token.as_deref(), Some("0123456789abcdef0123456789abcdef"), "trailing newline trimmed");
            assert!(!format!("{c:?}").contains("0123456789abcdef"), "Debug must not print secrets");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_offending_key() {
        Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[database]\nurl = \"sqlite://x\"\npool = 3\n")?;
            let e = load(Some("bad.toml".as_ref()), &[]).expect_err("unknown key").to_string();
            assert!(e.contains("database") && e.contains("pool"), "{e}");
            jail.create_file("bad2.toml", "listen = \"nope\"\n")?;
            let e = load(Some("bad2.toml".as_ref()), &[]).expect_err("bad listen").to_string();
            assert!(e.contains("listen"), "{e}");
            jail.create_file("bad3.toml", "[engine]\nreconcile_schedule = \"0 0 * * 8\"\n")?;
            let e = load(Some("bad3.toml".as_ref()), &[]).expect_err("bad schedule").to_string();
            assert!(e.contains("engine.reconcile_schedule") && e.contains("out of range"), "{e}");
            for bad in ["0", "604801"] {
                jail.create_file("bad4.toml", &format!("[engine]\nsecret_delivery_secs = {bad}\n"))?;
                let e = load(Some("bad4.toml".as_ref()), &[]).expect_err("bad deadline").to_string();
                assert!(e.contains("engine.secret_delivery_secs"), "{e}");
            }
            jail.create_file("off.toml", "[engine]\nreconcile_schedule = \"off\"\n")?;
            let c = load(Some("off.toml".as_ref()), &[]).map_err(|e| e.to_string())?;
            assert!(c.engine.reconcile_schedule().map_err(|e| e.to_string())?.is_none());
            jail.create_file("ok.toml", "")?;
            jail.set_env("TOLLGATE_DATABASE__MAX_CONNECTIONS", "many");
            let e = load(Some("ok.toml".as_ref()), &[]).expect_err("bad type").to_string();
            assert!(e.contains("database.max_connections"), "{e}");
            let e = load(Some("missing.toml".as_ref()), &[]).expect_err("missing file").to_string();
            assert!(e.contains("missing.toml"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn directory_references_are_checked() {
        Jail::expect_with(|jail| {
            jail.create_file("d.toml", "[groups.sec]\nmembers = [\"ghost\"]\n")?;
            let c = load(Some("d.toml".as_ref()), &[]).map_err(|e| e.to_string())?;
            let e = c.directory().expect_err("dangling member").to_string();
            assert!(e.contains("groups.sec.members") && e.contains("ghost"), "{e}");
            Ok(())
        });
    }
}
