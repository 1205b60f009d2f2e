//! The `[slack]` configuration section and its validated, secrets-resolved form.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::outbound::{ConfigError, Redacted, Timeout, read_secret_file};

/// Slack Web API base URL when the configuration names none.
pub const DEFAULT_API_URL: &str = "https://slack.com/api/";
/// Timeout of one Web API call when the settings name none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `slack` section of the configuration:
///
/// ```toml
/// [slack]
/// bot_token_file = "/run/secrets/slack-bot-token"        # or bot_token = "xoxb-…"
/// signing_secret_file = "/run/secrets/slack-signing-secret"  # or signing_secret = "…"
/// team_id = "T0123456789"          # clicks from any other workspace are refused
/// app_id = "A0123456789"           # payloads for any other app are refused
/// approvals_channel = "C0123456789" # omit to send each approver a direct message
/// lookup_by_email = false          # find approvers without a Slack id by their email
/// timeout = "10s"
/// # api_url = "https://slack.com/api/"  # only for a fake Slack in tests
/// ```
///
/// `Debug` never shows the bot token or the signing secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackSettings {
    /// Whether Slack is used (default on once the section is present).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The bot token (`xoxb-…`) itself (prefer `bot_token_file`).
    #[serde(default)]
    pub bot_token: Option<SecretString>,
    /// A file holding the bot token (e.g. a container secret); one trailing newline is ignored.
    #[serde(default)]
    pub bot_token_file: Option<PathBuf>,
    /// The app's signing secret itself (prefer `signing_secret_file`).
    #[serde(default)]
    pub signing_secret: Option<SecretString>,
    /// A file holding the signing secret; one trailing newline is ignored.
    #[serde(default)]
    pub signing_secret_file: Option<PathBuf>,
    /// Web API base URL, `https://` (or `http://` for a local fake); default
    /// [`DEFAULT_API_URL`].
    #[serde(default = "default_api_url")]
    pub api_url: String,
    /// The workspace (team) id expected in interactive payloads.
    #[serde(default)]
    pub team_id: Option<String>,
    /// The app id expected as `api_app_id` in interactive payloads.
    #[serde(default)]
    pub app_id: Option<String>,
    /// Channel id where approval requests are posted; without it each approver gets a DM.
    #[serde(default)]
    pub approvals_channel: Option<String>,
    /// Resolve approvers without a `slack_user_id` through `users.lookupByEmail` (default off).
    #[serde(default)]
    pub lookup_by_email: bool,
    /// Timeout of one Web API call: `"10s"`, `"500ms"` or a number of seconds. Default 10 s.
    #[serde(default)]
    pub timeout: Option<Timeout>,
}

fn enabled_by_default() -> bool {
    true
}

fn default_api_url() -> String {
    DEFAULT_API_URL.to_owned()
}

impl fmt::Debug for SlackSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackSettings")
            .field("enabled", &self.enabled)
            .field("bot_token", &self.bot_token.as_ref().map(|_| Redacted))
            .field("bot_token_file", &self.bot_token_file)
            .field("signing_secret", &self.signing_secret.as_ref().map(|_| Redacted))
            .field("signing_secret_file", &self.signing_secret_file)
            .field("api_url", &self.api_url)
            .field("team_id", &self.team_id)
            .field("app_id", &self.app_id)
            .field("approvals_channel", &self.approvals_channel)
            .field("lookup_by_email", &self.lookup_by_email)
            .field("timeout", &self.timeout())
            .finish()
    }
}

impl SlackSettings {
    /// The configured timeout, or [`DEFAULT_TIMEOUT`].
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_TIMEOUT, Timeout::as_duration)
    }

    /// Validates the section and reads both secrets (from their files when so configured).
    /// It does not look at [`Self::enabled`]: callers resolve only an enabled section.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the offending field when a secret is set both ways or not
    /// at all, a secret file cannot be read, a secret is empty, `api_url` is not an http(s) base
    /// URL, or an id is blank. Secret values never appear in the error.
    pub fn resolve(&self) -> Result<ResolvedSlack, ConfigError> {
        let bot_token = resolve_secret(
            self.bot_token.as_ref(),
            self.bot_token_file.as_deref(),
            ("bot_token", "bot_token_file"),
            "bot token",
        )?;
        let signing_secret = resolve_secret(
            self.signing_secret.as_ref(),
            self.signing_secret_file.as_deref(),
            ("signing_secret", "signing_secret_file"),
            "signing secret",
        )?;
        let approvals_channel = id("approvals_channel", self.approvals_channel.as_deref())?;
        if approvals_channel.as_deref().is_some_and(|c| c.starts_with('#')) {
            return Err(ConfigError::invalid(
                "approvals_channel",
                "use the channel id (e.g. C0123456789), not its name",
            ));
        }
        Ok(ResolvedSlack {
            bot_token,
            signing_secret,
            api_url: normalize_api_url(&self.api_url)?,
            team_id: id("team_id", self.team_id.as_deref())?,
            app_id: id("app_id", self.app_id.as_deref())?,
            approvals_channel,
            lookup_by_email: self.lookup_by_email,
            timeout: self.timeout(),
        })
    }
}

/// [`SlackSettings`] validated, with both secrets read: what the Slack client and the inbound
/// request handlers are built from.
///
/// `Debug` never shows the bot token or the signing secret.
#[derive(Clone)]
pub struct ResolvedSlack {
    /// The bot token, sent as a bearer token on every Web API call.
    pub bot_token: SecretString,
    /// The signing secret inbound requests are verified with; never empty.
    pub signing_secret: SecretString,
    /// Web API base URL, http(s), ending with `/`.
    pub api_url: String,
    /// The expected workspace id, if configured.
    pub team_id: Option<String>,
    /// The expected `api_app_id`, if configured.
    pub app_id: Option<String>,
    /// Channel id for approval requests; `None` means a DM to each approver.
    pub approvals_channel: Option<String>,
    /// Whether approvers without a Slack id are looked up by email.
    pub lookup_by_email: bool,
    /// Timeout of one Web API call.
    pub timeout: Duration,
}

impl fmt::Debug for ResolvedSlack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedSlack")
            .field("bot_token", &Redacted)
            .field("signing_secret", &Redacted)
            .field("api_url", &self.api_url)
            .field("team_id", &self.team_id)
            .field("app_id", &self.app_id)
            .field("approvals_channel", &self.approvals_channel)
            .field("lookup_by_email", &self.lookup_by_email)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Reads a secret from its value or its file (exactly one must be set) and refuses an empty one.
fn resolve_secret(
    value: Option<&SecretString>,
    file: Option<&Path>,
    (value_field, file_field): (&'static str, &'static str),
    what: &str,
) -> Result<SecretString, ConfigError> {
    let (field, secret) = match (value, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(value_field, &format!("set `{value_field}` or `{file_field}`, not both")));
        }
        (None, None) => {
            return Err(ConfigError::invalid(value_field, &format!("set `{value_field}` or `{file_field}`")));
        }
        (Some(secret), None) => (value_field, secret.clone()),
        (None, Some(path)) => (file_field, read_secret_file(file_field, path)?),
    };
    if secret.expose_secret().is_empty() {
        return Err(ConfigError::invalid(field, &format!("the {what} is empty")));
    }
    Ok(secret)
}

/// Checks that `url` is an http(s) base URL and returns it ending with `/`.
fn normalize_api_url(url: &str) -> Result<String, ConfigError> {
    let parsed = Url::parse(url.trim())
        .map_err(|e| ConfigError::Invalid { field: "api_url", reason: format!("not a valid URL: {e}") })?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(ConfigError::invalid("api_url", "the scheme must be https or http"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid("api_url", "the URL has no host"));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigError::invalid(
            "api_url",
            "a base URL such as https://slack.com/api/ takes no query or fragment",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ConfigError::invalid(
            "api_url",
            "credentials do not belong in the URL; the bot token is sent as a header",
        ));
    }
    let mut normalized = parsed.to_string();
    if !normalized.ends_with('/') {
        normalized.push('/');
    }
    Ok(normalized)
}

/// An optional Slack id: trimmed, and refused when blank (leave it out instead).
fn id(field: &'static str, value: Option<&str>) -> Result<Option<String>, ConfigError> {
    match value.map(str::trim) {
        None => Ok(None),
        Some("") => Err(ConfigError::invalid(field, "must not be empty (leave it out instead)")),
        Some(v) if v.contains(char::is_whitespace) => Err(ConfigError::invalid(field, "must not contain spaces")),
        Some(v) => Ok(Some(v.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "xoxb-1111-2222-abcdefabcdef";
    const SIGNING: &str = "8f742231b10e8888abcd99yyyzzz85a5";

    fn settings(json: serde_json::Value) -> SlackSettings {
        serde_json::from_value(json).unwrap()
    }

    fn field_of(err: &ConfigError) -> &'static str {
        match err {
            ConfigError::Invalid { field, .. } => field,
            ConfigError::SecretSource { .. } => panic!("unexpected {err:?}"),
        }
    }

    #[test]
    fn minimal_section_resolves_with_defaults() {
        let s = settings(serde_json::json!({"bot_token": TOKEN, "signing_secret": SIGNING}));
        assert!(s.enabled);
        assert!(!s.lookup_by_email);
        let r = s.resolve().unwrap();
        assert_eq!(r.bot_token.expose_secret(), TOKEN);
        assert_eq!(r.signing_secret.expose_secret(), SIGNING);
        assert_eq!(r.api_url, "https://slack.com/api/");
        assert_eq!(r.timeout, Duration::from_secs(10));
        assert_eq!((r.team_id, r.app_id, r.approvals_channel), (None, None, None));

        let full = settings(serde_json::json!({
            "enabled": false, "bot_token": TOKEN, "signing_secret": SIGNING,
            "api_url": "http://127.0.0.1:9999/api", "team_id": " T0001 ", "app_id": "A0001",
            "approvals_channel": "C0001", "lookup_by_email": true, "timeout": "3s"
        }))
        .resolve()
        .unwrap();
        assert_eq!(full.api_url, "http://127.0.0.1:9999/api/");
        assert_eq!(full.team_id.as_deref(), Some("T0001"));
        assert_eq!(full.app_id.as_deref(), Some("A0001"));
        assert_eq!(full.approvals_channel.as_deref(), Some("C0001"));
        assert!(full.lookup_by_email);
        assert_eq!(full.timeout, Duration::from_secs(3));
    }

    #[test]
    fn unknown_fields_and_bad_timeouts_are_rejected() {
        let err =
            serde_json::from_value::<SlackSettings>(serde_json::json!({"bot_token": TOKEN, "token": "x"})).unwrap_err();
        assert!(err.to_string().contains("unknown field `token`"), "{err}");
        let err = serde_json::from_value::<SlackSettings>(serde_json::json!({"timeout": "0s"})).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
    }

    #[test]
    fn secrets_come_from_exactly_one_source_and_are_never_empty() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\r\n")).unwrap();
        let secret_file = dir.path().join("signing");
        std::fs::write(&secret_file, format!("{SIGNING}\n\n")).unwrap();
        let r = settings(serde_json::json!({"bot_token_file": token_file, "signing_secret_file": secret_file}))
            .resolve()
            .unwrap();
        assert_eq!(r.bot_token.expose_secret(), TOKEN);
        // Only one trailing newline is dropped.
        assert_eq!(r.signing_secret.expose_secret(), format!("{SIGNING}\n"));

        let cases = [
            (serde_json::json!({"signing_secret": SIGNING}), "bot_token"),
            (
                serde_json::json!({"bot_token": TOKEN, "bot_token_file": token_file, "signing_secret": SIGNING}),
                "bot_token",
            ),
            (serde_json::json!({"bot_token": "", "signing_secret": SIGNING}), "bot_token"),
            (serde_json::json!({"bot_token": TOKEN}), "signing_secret"),
            (serde_json::json!({"bot_token": TOKEN, "signing_secret": ""}), "signing_secret"),
            (
                serde_json::json!({"bot_token": TOKEN, "signing_secret": SIGNING, "signing_secret_file": secret_file}),
                "signing_secret",
            ),
            (
                serde_json::json!({"bot_token": TOKEN, "signing_secret_file": dir.path().join("missing")}),
                "signing_secret_file",
            ),
        ];
        for (json, field) in cases {
            let err = settings(json.clone()).resolve().unwrap_err();
            assert_eq!(field_of(&err), field, "{json}: {err}");
            assert!(!err.to_string().contains(TOKEN) && !err.to_string().contains(SIGNING), "{err}");
        }
        let empty_file = dir.path().join("empty");
        std::fs::write(&empty_file, "\n").unwrap();
        let err = settings(serde_json::json!({"bot_token_file": empty_file, "signing_secret": SIGNING}))
            .resolve()
            .unwrap_err();
        assert_eq!(err.to_string(), "`bot_token_file`: the bot token is empty");
    }

    #[test]
    fn api_url_and_ids_are_validated() {
        let with = |extra: serde_json::Value| {
            let mut json = serde_json::json!({"bot_token": TOKEN, "signing_secret": SIGNING});
            json.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            settings(json).resolve()
        };
        for url in [
            "slack.com/api",
            "ftp://slack.com/api/",
            "https://",
            "https://slack.com/api?x=1",
            "https://u:p@slack.com/api/",
        ] {
            let err = with(serde_json::json!({"api_url": url})).unwrap_err();
            assert_eq!(field_of(&err), "api_url", "{url}: {err}");
        }
        assert_eq!(with(serde_json::json!({"api_url": "https://slack.com/api/"})).unwrap().api_url, DEFAULT_API_URL);
        assert_eq!(field_of(&with(serde_json::json!({"team_id": " "})).unwrap_err()), "team_id");
        assert_eq!(field_of(&with(serde_json::json!({"app_id": "A 1"})).unwrap_err()), "app_id");
        assert_eq!(
            field_of(&with(serde_json::json!({"approvals_channel": "#approvals"})).unwrap_err()),
            "approvals_channel"
        );
    }

    #[test]
    fn debug_redacts_both_secrets() {
        let s = settings(serde_json::json!({"bot_token": TOKEN, "signing_secret": SIGNING}));
        let r = s.resolve().unwrap();
        for text in [format!("{s:?}"), format!("{r:?}")] {
            assert!(!text.contains(TOKEN) && !text.contains(SIGNING), "{text}");
            assert!(text.contains("[redacted]"), "{text}");
        }
    }
}
