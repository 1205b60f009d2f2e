//! Email notifications: askama-rendered plain text + HTML, sent over SMTP or written as `.eml` files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use askama::Template;
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::{self, AsyncSmtpTransportBuilder, PoolConfig};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::clock::{Clock, SystemClock};
use crate::message::{Notification, RecipientInfo};
use crate::notify::{DeliveryContext, NotificationChannel};
use crate::outbound::{ConfigError, ConnectorError, Redacted, Timeout, read_secret_file};

/// Sender used when the configuration names none: enough for the `.eml` outbox of a quick start.
pub const DEFAULT_FROM: &str = "Tollgate <tollgate@localhost>";
/// Folder of the `.eml` outbox when the configuration names none (relative to the working directory).
pub const DEFAULT_OUTBOX_DIR: &str = "mail-outbox";
/// Timeout of one SMTP connection or command when the settings name none.
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most pooled SMTP connections when the settings name none.
pub const DEFAULT_POOL_MAX: u32 = 4;
/// Longest subject kept, in characters; longer ones are cut with an ellipsis.
pub const MAX_SUBJECT_CHARS: usize = 160;

/// The event names that have wording of their own (see `templates/email/events/`); any other
/// event is rendered with the wording of `message`.
pub const EVENTS: &[&str] = &[
    "approval_requested",
    "approval_reminder",
    "approval_escalated",
    "approved",
    "denied",
    "expired",
    "cancelled",
    "granted",
    "expiring",
    "revoked",
    "failed",
    "revoke_failed",
    "task_assigned",
    "task_reminder",
    "message",
];

/// The `email` section of the configuration:
///
/// ```yaml
/// email:
///   from: "Tollgate <tollgate@example.com>"
///   smtp:                      # omit to write .eml files to outbox_dir instead
///     host: smtp.example.com
///     port: 587                # default 587, or 465 with tls: tls
///     tls: starttls            # starttls (default) | tls | none (local relays only)
///     username: tollgate
///     password_file: /run/secrets/smtp-password
///     timeout: 10s
///     pool_max: 4
///   outbox_dir: mail-outbox
/// ```
///
/// `Debug` never shows the SMTP password.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Whether notifications are also sent by email (default on: without SMTP they are written
    /// to [`Self::outbox_dir`], so nothing leaves the machine until a server is configured).
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// The sender mailbox, `Name <address>` or a bare address.
    #[serde(default = "default_from")]
    pub from: String,
    /// The SMTP server; without it every message is written to [`Self::outbox_dir`].
    #[serde(default)]
    pub smtp: Option<SmtpSettings>,
    /// Where `.eml` files go when no SMTP server is configured.
    #[serde(default = "default_outbox_dir")]
    pub outbox_dir: PathBuf,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self { enabled: true, from: default_from(), smtp: None, outbox_dir: default_outbox_dir() }
    }
}

fn enabled_by_default() -> bool {
    true
}

fn default_from() -> String {
    DEFAULT_FROM.to_owned()
}

fn default_outbox_dir() -> PathBuf {
    PathBuf::from(DEFAULT_OUTBOX_DIR)
}

impl EmailSettings {
    /// The sender as a mailbox.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] on `from` when it is not a mailbox.
    pub fn from_mailbox(&self) -> Result<Mailbox, ConfigError> {
        self.from.parse::<Mailbox>().map_err(|e| ConfigError::Invalid {
            field: "from",
            reason: format!("{:?} is not a mailbox such as \"Tollgate <tollgate@example.com>\": {e}", self.from),
        })
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("implicit TLS", port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a trusted local network.
    None,
}

/// An SMTP server. `password` and `password_file` are mutually exclusive; `username` and a
/// password come together or not at all.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    /// Host name (also the name checked in the server's certificate).
    pub host: String,
    /// Port; default 465 with `tls: tls`, 587 otherwise.
    #[serde(default)]
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// User name for SMTP AUTH.
    #[serde(default)]
    pub username: Option<String>,
    /// The password itself (prefer `password_file`).
    #[serde(default)]
    pub password: Option<SecretString>,
    /// A file holding the password (e.g. a container secret); one trailing newline is ignored.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Timeout of connecting and of each SMTP command: `"10s"`, `"1m"` or a number of seconds.
    #[serde(default)]
    pub timeout: Option<Timeout>,
    /// Most pooled connections.
    #[serde(default = "default_pool_max")]
    pub pool_max: u32,
}

fn default_pool_max() -> u32 {
    DEFAULT_POOL_MAX
}

impl fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("host", &self.host)
            .field("port", &self.port())
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| Redacted))
            .field("password_file", &self.password_file)
            .field("timeout", &self.timeout())
            .field("pool_max", &self.pool_max)
            .finish()
    }
}

impl SmtpSettings {
    /// The configured port, or the usual one for [`Self::tls`].
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(if self.tls == SmtpTls::Tls { 465 } else { 587 })
    }

    /// The configured timeout, or [`DEFAULT_SMTP_TIMEOUT`].
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout.map_or(DEFAULT_SMTP_TIMEOUT, Timeout::as_duration)
    }

    /// Reads the password from `password` or `password_file`; `None` when no authentication is
    /// configured.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when both sources are set, the file cannot be read, the password
    /// is empty, or a username comes without a password (or the reverse). The password never
    /// appears in the error.
    pub fn resolve_password(&self) -> Result<Option<SecretString>, ConfigError> {
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid("password", "set `password` or `password_file`, not both"));
            }
            (Some(password), None) => Some(("password", password.clone())),
            (None, Some(path)) => Some(("password_file", read_secret_file("password_file", path)?)),
            (None, None) => None,
        };
        match (&self.username, password) {
            (None, None) => Ok(None),
            (Some(_), None) => {
                Err(ConfigError::invalid("password", "`username` is set but neither `password` nor `password_file` is"))
            }
            (None, Some((field, _))) => Err(ConfigError::invalid(field, "a password is set but `username` is not")),
            (Some(_), Some((field, password))) if password.expose_secret().is_empty() => {
                Err(ConfigError::invalid(field, "the password is empty"))
            }
            (Some(_), Some((_, password))) => Ok(Some(password)),
        }
    }
}

/// Sends notifications by email: one message per recipient with an address, each with a
/// `Message-ID` derived from the notification's idempotency key and the address.
pub struct EmailChannel {
    from: Mailbox,
    delivery: Delivery,
    clock: Arc<dyn Clock>,
    /// Base URL of approval links (`{public_url}/approvals/email/{token}`); none: no links.
    public_url: Option<String>,
}

enum Delivery {
    Smtp { host: String, builder: Box<AsyncSmtpTransportBuilder>, pool: OnceLock<Pool>, limit: Duration },
    Outbox { dir: PathBuf },
}

/// lettre's pooled transport spawns a Tokio task when it is built and another when it is
/// dropped, and panics outside a runtime. So it is built on first use (always inside `send`),
/// and dropped inside a throw-away runtime when the channel outlives the application's.
struct Pool(Option<AsyncSmtpTransport<Tokio1Executor>>);

impl Drop for Pool {
    fn drop(&mut self) {
        let Some(transport) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            return drop(transport);
        }
        match tokio::runtime::Builder::new_current_thread().build() {
            Ok(runtime) => {
                let _entered = runtime.enter();
                // The clean-up task is spawned here and cancelled with the runtime: the
                // pooled connections are then simply closed.
                drop(transport);
            }
            // Without a runtime the drop would panic: leak instead, at shutdown anyway.
            Err(_) => {
                let _leaked = std::mem::ManuallyDrop::new(transport);
            }
        }
    }
}

impl fmt::Debug for EmailChannel {
    // lettre's transport is left out: it holds the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("EmailChannel");
        s.field("from", &self.from.to_string());
        match &self.delivery {
            Delivery::Smtp { host, .. } => s.field("smtp", host),
            Delivery::Outbox { dir } => s.field("outbox_dir", dir),
        };
        s.finish_non_exhaustive()
    }
}

impl EmailChannel {
    /// Validates `settings`, resolves the SMTP password and prepares the SMTP transport; the
    /// connection pool starts with the first message (inside the caller's Tokio runtime).
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending field.
    pub fn new(settings: &EmailSettings) -> Result<Self, ConfigError> {
        let from = settings.from_mailbox()?;
        let delivery = match &settings.smtp {
            Some(smtp) => Delivery::Smtp {
                host: smtp.host.clone(),
                builder: Box::new(smtp_transport(smtp)?),
                pool: OnceLock::new(),
                // Greeting, EHLO, (STARTTLS, AUTH,) MAIL, RCPT, DATA, body: a few commands' worth.
                limit: smtp.timeout() * 3,
            },
            None => {
                if settings.outbox_dir.as_os_str().is_empty() {
                    return Err(ConfigError::invalid("outbox_dir", "must not be empty"));
                }
                Delivery::Outbox { dir: settings.outbox_dir.clone() }
            }
        };
        Ok(Self { from, delivery, clock: Arc::new(SystemClock), public_url: None })
    }

    /// Puts a single-use approval link (built on `public_url`, never on a request's Host header)
    /// into each approval request and reminder, one per approver.
    #[must_use]
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.public_url = Some(public_url.trim_end_matches('/').to_owned());
        self
    }

    /// Uses `clock` for the `Date` header instead of the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the message for one recipient.
    fn message(&self, n: &Notification, rendered: &RenderedEmail, to: Mailbox) -> Result<Message, ConnectorError> {
        let domain = self.from.email.domain().to_owned();
        let message_id = format!("<{}@{domain}>", short_hash(&[&n.idempotency_key, to.email.as_ref()]));
        // Every message about one request names the same (never sent) root, so mail clients
        // thread a request's approval, reminders and outcome together.
        let thread = format!("<request-{}@{domain}>", n.request_id);
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject.clone())
            .date(SystemTime::from(self.clock.now()))
            .message_id(Some(message_id))
            .references(thread)
            .header(AutoSubmitted)
            .multipart(MultiPart::alternative_plain_html(rendered.text.clone(), rendered.html.clone()))
            .map_err(|e| ConnectorError::Permanent { message: format!("email: cannot build message: {e}") })
    }

    /// Sends or writes one message. `Err((error, true))` when the server answered about this
    /// message (a reply code), `Err((error, false))` when the way out itself failed.
    async fn deliver_one(
        &self,
        n: &Notification,
        message: &Message,
        recipient: &str,
    ) -> Result<(), (ConnectorError, bool)> {
        match &self.delivery {
            Delivery::Smtp { host, builder, pool, limit } => {
                let pool = pool.get_or_init(|| Pool(Some(builder.as_ref().clone().build())));
                let Some(mailer) = &pool.0 else {
                    let message = format!("smtp {host}: transport closed");
                    return Err((ConnectorError::Permanent { message }, false));
                };
                // lettre's timeout covers each command, not waiting for a pooled connection or a
                // server that accepts and never greets: bound the whole send as well.
                match tokio::time::timeout(*limit, mailer.send(message.clone())).await {
                    Ok(sent) => sent.map(drop).map_err(|e| (smtp_error(host, &e), e.status().is_some())),
                    Err(_) => {
                        let message = format!("smtp {host}: no answer within {}s", limit.as_secs());
                        Err((ConnectorError::Retryable { message, retry_after: None }, false))
                    }
                }
            }
            Delivery::Outbox { dir } => {
                write_eml(dir, &eml_file_name(&n.idempotency_key, recipient), &message.formatted()).await.map_err(|e| {
                    let message = format!("email outbox {}: {}", dir.display(), e.kind());
                    (ConnectorError::Retryable { message, retry_after: None }, false)
                })
            }
        }
    }
}

/// Validates `smtp` and prepares (without connecting) the transport.
fn smtp_transport(smtp: &SmtpSettings) -> Result<AsyncSmtpTransportBuilder, ConfigError> {
    if smtp.host.trim().is_empty() {
        return Err(ConfigError::invalid("smtp.host", "must not be empty"));
    }
    if smtp.pool_max == 0 {
        return Err(ConfigError::invalid("smtp.pool_max", "must be at least 1"));
    }
    let password = smtp.resolve_password()?;
    if password.is_some() && smtp.tls == SmtpTls::None && !is_loopback(&smtp.host) {
        return Err(ConfigError::invalid(
            "smtp.tls",
            "`none` would send the SMTP password in clear text to a remote host; use `starttls` or `tls`",
        ));
    }
    let tls_parameters = || {
        // lettre uses the process-wide rustls provider when one is installed, ring otherwise.
        TlsParameters::new(smtp.host.clone())
            .map_err(|e| ConfigError::Invalid { field: "smtp.tls", reason: format!("cannot set up TLS: {e}") })
    };
    let tls = match smtp.tls {
        SmtpTls::Starttls => Tls::Required(tls_parameters()?),
        SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        SmtpTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port())
        .tls(tls)
        .timeout(Some(smtp.timeout()))
        .pool_config(PoolConfig::new().max_size(smtp.pool_max));
    if let (Some(username), Some(password)) = (&smtp.username, password) {
        builder = builder.credentials(Credentials::new(username.clone(), password.expose_secret().to_owned()));
    }
    Ok(builder)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Classifies an SMTP failure: 4xx, timeouts and connection or TLS failures are retryable, 5xx
/// is permanent. The message keeps the reply code and never the server's text (which may echo
/// addresses or parts of the conversation).
fn smtp_error(host: &str, e: &smtp::Error) -> ConnectorError {
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    if e.is_permanent() {
        ConnectorError::Permanent { message: format!("smtp {host} rejected the message with {code}") }
    } else if e.is_transient() {
        ConnectorError::Retryable { message: format!("smtp {host} answered {code}"), retry_after: None }
    } else if e.is_client() {
        // lettre refused before or without the server (e.g. no common AUTH mechanism).
        ConnectorError::Permanent { message: format!("smtp {host}: client error") }
    } else {
        let what = if e.is_timeout() {
            "timed out".to_owned()
        } else if e.is_tls() {
            "TLS failure".to_owned()
        } else if e.is_response() {
            "unreadable reply".to_owned()
        } else {
            match io_cause(e) {
                Some(kind) => format!("connection failed: {kind}"),
                None => "connection failed".to_owned(),
            }
        };
        ConnectorError::Retryable { message: format!("smtp {host}: {what}"), retry_after: None }
    }
}

/// The kind of the innermost I/O error ("connection refused"), which holds no server text.
fn io_cause(e: &smtp::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

/// `Auto-Submitted: auto-generated` (RFC 3834): auto-responders do not answer these.
#[derive(Debug, Clone, Copy)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// 32 hex digits of SHA-256 over `parts` (NUL-separated): stable ids and file names.
fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    hex::encode(&hasher.finalize()[..16])
}

/// `{key}.{recipient}.{hash}.eml` with everything but `[A-Za-z0-9@._-]` replaced by `_` and
/// the readable part shortened; the hash keeps names distinct after sanitising.
fn eml_file_name(key: &str, recipient: &str) -> String {
    let readable: String = format!("{key}.{recipient}")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '@' | '.' | '_' | '-') { c } else { '_' })
        .take(120)
        .collect();
    // A leading dot would hide the file, and temporary files start with one.
    let readable = readable.trim_start_matches('.');
    format!("{readable}.{}.eml", &short_hash(&[key, recipient])[..12])
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in the same folder, synced, then
/// renamed over any previous version. The messages hold live approval links, so the folder is
/// created `0700` and each file `0600` (readable by the server's user only).
async fn write_eml(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut folder = tokio::fs::DirBuilder::new();
    folder.recursive(true);
    #[cfg(unix)]
    folder.mode(0o700);
    folder.create(dir).await?;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let result = async {
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&temp).await?;
        tokio::io::AsyncWriteExt::write_all(&mut file, bytes).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&temp, &target).await
    }
    .await;
    if result.is_err() {
        // Best effort: the write already failed, and that is the error worth reporting.
        let _ = tokio::fs::remove_file(&temp).await;
    }
    result
}

#[async_trait::async_trait]
impl NotificationChannel for EmailChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    /// Sends one message per recipient with an address, without approval links (see
    /// [`NotificationChannel::deliver`]).
    async fn send(&self, n: &Notification) -> Result<(), ConnectorError> {
        let recipients = addressed(n);
        if recipients.is_empty() {
            return Ok(());
        }
        let rendered = render(n).map_err(|e| ConnectorError::Permanent { message: e.to_string() })?;
        self.send_each(n, recipients.into_iter().map(|(r, e)| (r, e, rendered.clone())).collect()).await
    }

    /// Like [`Self::send`], but approval requests and reminders carry a personal approval link
    /// per approver when a public URL is configured. An approver for whom no link can be issued
    /// (the requester, no longer eligible, already voted, step over) gets no message: there is
    /// nothing left for them to decide.
    async fn deliver(&self, n: &Notification, ctx: &dyn DeliveryContext) -> Result<(), ConnectorError> {
        let Some(base) = self.public_url.as_deref().filter(|_| LINK_EVENTS.contains(&n.event.as_str())) else {
            return self.send(n).await;
        };
        let recipients = addressed(n);
        if recipients.is_empty() {
            return Ok(());
        }
        let principals: Vec<String> = recipients.iter().map(|(r, _)| r.principal.clone()).collect();
        let links = ctx.approval_links(&principals).await?;
        let mut each = Vec::with_capacity(recipients.len());
        for ((recipient, email), link) in recipients.into_iter().zip(links) {
            let Some(link) = link else {
                tracing::debug!(request.id = %n.request_id, recipient.principal = %recipient.principal, "no approval link: the recipient cannot decide now; not sent");
                continue;
            };
            let link = LinkView { url: format!("{base}/approvals/email/{}", link.token), expires_at: link.expires_at };
            let rendered =
                render_with_link(n, Some(&link)).map_err(|e| ConnectorError::Permanent { message: e.to_string() })?;
            each.push((recipient, email, rendered));
        }
        self.send_each(n, each).await
    }
}

/// Events whose emails carry an approval link.
const LINK_EVENTS: &[&str] = &["approval_requested", "approval_reminder", "approval_escalated"];

/// The recipients with a (non-empty) address.
fn addressed(n: &Notification) -> Vec<(&RecipientInfo, &str)> {
    n.recipients
        .iter()
        .filter_map(|r| r.email.as_deref().map(|e| (r, e.trim())))
        .filter(|(_, e)| !e.is_empty())
        .collect()
}

impl EmailChannel {
    /// Sends one rendered message per recipient. A connection failure stops at once (the outbox
    /// retries the whole notification: a recipient may then get a message twice, with the same
    /// `Message-ID`). A rejected or invalid address does not stop the others; the result is then
    /// the worst outcome: retryable if any failure was, permanent otherwise.
    async fn send_each(
        &self,
        n: &Notification,
        each: Vec<(&RecipientInfo, &str, RenderedEmail)>,
    ) -> Result<(), ConnectorError> {
        let mut retryable = None;
        let mut permanent = None;
        for (recipient, email, rendered) in each {
            let Ok(address) = email.parse::<Address>() else {
                tracing::warn!(request.id = %n.request_id, recipient.principal = %recipient.principal, "email: recipient address is invalid; skipped");
                permanent.get_or_insert(ConnectorError::Permanent {
                    message: format!("email: the address of recipient {} is invalid", recipient.principal),
                });
                continue;
            };
            let name = Some(recipient.name.clone()).filter(|name| !name.trim().is_empty());
            let message = self.message(n, &rendered, Mailbox::new(name, address))?;
            match self.deliver_one(n, &message, email).await {
                Ok(()) => {
                    tracing::debug!(request.id = %n.request_id, recipient.principal = %recipient.principal, "email sent");
                }
                Err((e @ ConnectorError::Permanent { .. }, _)) => {
                    tracing::warn!(request.id = %n.request_id, recipient.principal = %recipient.principal, error = %e, "email rejected");
                    permanent.get_or_insert(e);
                }
                Err((e @ ConnectorError::Retryable { .. }, answered)) => {
                    retryable.get_or_insert(e);
                    // A refused connection will be refused for the next recipient too; a 4xx
                    // about one mailbox says nothing about the others.
                    if !answered {
                        break;
                    }
                }
            }
        }
        match (retryable, permanent) {
            (Some(e), _) | (None, Some(e)) => Err(e),
            (None, None) => Ok(()),
        }
    }
}

/// An approval link as shown in an email.
#[derive(Debug, Clone)]
pub struct LinkView {
    /// The full URL (secret: it carries the token).
    pub url: String,
    /// When it stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// A rendered email: the subject (one line) and both bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    /// One line, at most [`MAX_SUBJECT_CHARS`] characters.
    pub subject: String,
    /// The `text/plain` body.
    pub text: String,
    /// The `text/html` body; every value in it is escaped.
    pub html: String,
}

/// A template failed to render (a bug in a template, not in the data).
#[derive(Debug, thiserror::Error)]
#[error("email template {template} failed to render: {source}")]
pub struct RenderError {
    /// The template, e.g. `events/approved.txt (subject)`.
    pub template: String,
    /// What askama reported.
    #[source]
    pub source: askama::Error,
}

/// What the templates see: the notification's fields, formatted once.
struct View<'a> {
    request_id: String,
    kind: &'a str,
    requester: &'a str,
    integration: &'a str,
    environment: &'a str,
    scopes: String,
    duration: String,
    justification: &'a str,
    status: &'a str,
    approvals_needed: Option<u32>,
    deadline: Option<String>,
    expires_at: Option<String>,
    text: &'a str,
    link: Option<&'a str>,
    link_expires_at: Option<String>,
}

impl<'a> View<'a> {
    fn new(n: &'a Notification) -> Self {
        let r = &n.request;
        let time = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
        Self {
            request_id: n.request_id.to_string(),
            kind: &r.kind,
            requester: &r.requester,
            integration: &r.integration,
            environment: &r.environment,
            scopes: if r.scopes.is_empty() { "(none)".to_owned() } else { r.scopes.join(", ") },
            duration: humantime::format_duration(Duration::from_secs(r.duration_secs)).to_string(),
            justification: &r.justification,
            status: &r.status,
            approvals_needed: r.approvals_needed,
            deadline: r.deadline.map(time),
            expires_at: r.expires_at.map(time),
            text: n.text.trim(),
            link: None,
            link_expires_at: None,
        }
    }
}

/// The per-event wording, plain text (the HTML layout escapes it).
struct Wording {
    subject: String,
    headline: String,
    lead: String,
}

/// One set of templates per event: `templates/email/events/{event}.txt` with the blocks
/// `subject`, `headline` and `lead`.
macro_rules! wording {
    ($($event:literal => $module:ident, $path:literal;)*) => {
        $(
            mod $module {
                use askama::Template;

                #[derive(Template)]
                #[template(path = $path, block = "subject")]
                pub(super) struct Subject<'a> {
                    pub(super) v: &'a super::View<'a>,
                }

                #[derive(Template)]
                #[template(path = $path, block = "headline")]
                pub(super) struct Headline<'a> {
                    pub(super) v: &'a super::View<'a>,
                }

                #[derive(Template)]
                #[template(path = $path, block = "lead")]
                pub(super) struct Lead<'a> {
                    pub(super) v: &'a super::View<'a>,
                }
            }
        )*

        fn wording(event: &str, v: &View<'_>) -> Result<Wording, RenderError> {
            let failed = |event: &str, block: &str| {
                let template = format!("events/{event}.txt ({block})");
                move |source| RenderError { template, source }
            };
            match event {
                $(
                    $event => Ok(Wording {
                        subject: $module::Subject { v }.render().map_err(failed($event, "subject"))?,
                        headline: $module::Headline { v }.render().map_err(failed($event, "headline"))?,
                        lead: $module::Lead { v }.render().map_err(failed($event, "lead"))?,
                    }),
                )*
                _ => wording("message", v),
            }
        }
    };
}

wording! {
    "approval_requested" => approval_requested, "email/events/approval_requested.txt";
    "approval_reminder" => approval_reminder, "email/events/approval_reminder.txt";
    "approval_escalated" => approval_escalated, "email/events/approval_escalated.txt";
    "approved" => approved, "email/events/approved.txt";
    "denied" => denied, "email/events/denied.txt";
    "expired" => expired, "email/events/expired.txt";
    "cancelled" => cancelled, "email/events/cancelled.txt";
    "granted" => granted, "email/events/granted.txt";
    "expiring" => expiring, "email/events/expiring.txt";
    "revoked" => revoked, "email/events/revoked.txt";
    "failed" => failed, "email/events/failed.txt";
    "revoke_failed" => revoke_failed, "email/events/revoke_failed.txt";
    "task_assigned" => task_assigned, "email/events/task_assigned.txt";
    "task_reminder" => task_reminder, "email/events/task_reminder.txt";
    "message" => message, "email/events/message.txt";
}

#[derive(Template)]
#[template(path = "email/base.txt")]
struct TextLayout<'a> {
    headline: &'a str,
    lead: &'a str,
    v: &'a View<'a>,
}

#[derive(Template)]
#[template(path = "email/base.html")]
struct HtmlLayout<'a> {
    subject: &'a str,
    headline: &'a str,
    lead: &'a str,
    v: &'a View<'a>,
}

/// Renders `notification` with the wording of its event (`message` for events without wording
/// of their own) in the plain-text and HTML layouts of `templates/email/`.
///
/// # Errors
/// [`RenderError`] when a template fails, which the data alone cannot cause.
pub fn render(notification: &Notification) -> Result<RenderedEmail, RenderError> {
    render_with_link(notification, None)
}

/// [`render`] with a personal approval link (approval requests and reminders).
///
/// # Errors
/// [`RenderError`] when a template fails.
pub fn render_with_link(notification: &Notification, link: Option<&LinkView>) -> Result<RenderedEmail, RenderError> {
    let mut v = View::new(notification);
    if let Some(link) = link {
        v.link = Some(&link.url);
        v.link_expires_at = Some(link.expires_at.format("%Y-%m-%d %H:%M UTC").to_string());
    }
    let Wording { subject, headline, lead } = wording(&notification.event, &v)?;
    // Break-glass: emergency access already in place; every message about it says so first.
    let (subject, headline) = if notification.request.emergency {
        (format!("EMERGENCY (break-glass): {subject}"), format!("EMERGENCY (break-glass): {}", headline.trim()))
    } else {
        (subject, headline)
    };
    let subject = one_line(&subject, MAX_SUBJECT_CHARS);
    let (headline, lead) = (headline.trim(), lead.trim());
    let text = TextLayout { headline, lead, v: &v }
        .render()
        .map_err(|source| RenderError { template: "base.txt".to_owned(), source })?;
    let html = HtmlLayout { subject: &subject, headline, lead, v: &v }
        .render()
        .map_err(|source| RenderError { template: "base.html".to_owned(), source })?;
    Ok(RenderedEmail { subject, text, html })
}

/// Collapses all whitespace and control characters (no header injection) and cuts to `max` chars.
fn one_line(s: &str, max: usize) -> String {
    let line =
        s.split(|c: char| c.is_whitespace() || c.is_control()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ");
    if line.chars().count() <= max {
        line
    } else {
        let mut cut: String = line.chars().take(max.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// Renders the template of `event` (one of [`EVENTS`]) with sample data, for
/// `tollgate email preview <event>`; `None` for an unknown event.
///
/// # Errors
/// [`RenderError`] when a template fails.
pub fn preview(event: &str) -> Result<Option<RenderedEmail>, RenderError> {
    if !EVENTS.contains(&event) {
        return Ok(None);
    }
    let link = LINK_EVENTS.contains(&event).then(|| LinkView {
        url: "https://tollgate.example.com/approvals/email/SAMPLE-not-a-real-token-0000000000000000000".to_owned(),
        expires_at: chrono::DateTime::from_timestamp(1_893_499_200, 0).unwrap_or_default(),
    });
    render_with_link(&sample(event), link.as_ref()).map(Some)
}

/// A plausible notification for `event`, with a justification that shows escaping at work.
fn sample(event: &str) -> Notification {
    use crate::message::RequestSummary;

    let deadline = chrono::DateTime::from_timestamp(1_893_499_200, 0); // 2030-01-01 12:00 UTC
    let pending = matches!(event, "approval_requested" | "approval_reminder" | "approval_escalated");
    let text = match event {
        "approval_requested" => "alice asks for api, refresh_token on salesforce-prod (production) for 1h.",
        "approval_reminder" => "Reminder: alice is waiting for your approval on salesforce-prod.",
        "approval_escalated" => {
            "Escalated: alice is still waiting for approval on salesforce-prod; you may now decide."
        }
        "approved" => "Your request for api, refresh_token on salesforce-prod was approved.",
        "denied" => "Your request for api, refresh_token on salesforce-prod was denied by carol.",
        "expired" => "Your request for api, refresh_token on salesforce-prod expired without approval.",
        "cancelled" => "alice cancelled the request for api, refresh_token on salesforce-prod.",
        "granted" => "api, refresh_token on salesforce-prod is granted until 2030-01-01 13:00 UTC.",
        "revoked" => "api, refresh_token on salesforce-prod was revoked.",
        "failed" => "grant of api, refresh_token on salesforce-prod failed: webhook answered 500",
        "revoke_failed" => "revoke of api, refresh_token on salesforce-prod failed: webhook answered 503",
        "task_assigned" => {
            "Task 0190…0043 for you:\nGrant scopes api, refresh_token to principal alice on integration \
             salesforce-prod (salesforce, production) until 2030-01-01T13:00:00Z.\nWhen it is done, confirm \
             with `tollgate task complete 0190…0043`."
        }
        "task_reminder" => {
            "Reminder: task 0190…0043 (grant of api, refresh_token on salesforce-prod for alice) is still open."
        }
        _ => "Access to salesforce-prod is reviewed every quarter; reply in the ticket if you still need it.",
    };
    Notification {
        idempotency_key: format!("preview:{event}"),
        event: event.to_owned(),
        request_id: uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0042),
        recipients: vec![RecipientInfo {
            principal: "carol".to_owned(),
            name: "Carol Approver".to_owned(),
            email: Some("carol@example.com".to_owned()),
            slack_user_id: None,
        }],
        request: RequestSummary {
            kind: "grant".to_owned(),
            requester: "alice".to_owned(),
            integration: "salesforce-prod".to_owned(),
            environment: "production".to_owned(),
            scopes: vec!["api".to_owned(), "refresh_token".to_owned()],
            duration_secs: 3600,
            justification: "INC-4242: sync <Opportunity> & <Account> fields\nbefore the Q3 close.".to_owned(),
            status: if pending { "awaiting_approval" } else { event }.to_owned(),
            approvals_needed: pending.then_some(1),
            deadline: deadline.filter(|_| pending),
            expires_at: None,
            emergency: false,
        },
        text: text.to_owned(),
        route: crate::message::Route::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Mutex;

    use mail_parser::MessageParser;
    use mailin_embedded::response::{NO_MAILBOX, OK};
    use mailin_embedded::{Handler, Response, Server};
    use uuid::Uuid;

    use super::*;
    use crate::clock::ManualClock;

    const JUSTIFICATION: &str = "INC-42 <script>alert(\"x\")</script> & <b>now</b>\nsecond line";
    const CANARY: &str = "CANARY-smtp-password-0f9d8e";

    /// One message as the SMTP server received it.
    #[derive(Debug, Clone, Default)]
    struct Received {
        from: String,
        to: Vec<String>,
        data: Vec<u8>,
    }

    /// A real SMTP server on loopback (mailin-embedded, plain SMTP, no STARTTLS). It rejects
    /// `RCPT TO` with 550 for addresses starting with `bounce` and 451 for `busy`.
    #[derive(Clone, Default)]
    struct SmtpSink {
        received: Arc<Mutex<Vec<Received>>>,
        current: Received,
    }

    impl Handler for SmtpSink {
        fn rcpt(&mut self, to: &str) -> Response {
            if to.starts_with("bounce") {
                NO_MAILBOX
            } else if to.starts_with("busy") {
                Response::custom(451, "mailbox busy, try later".to_owned())
            } else {
                OK
            }
        }

        fn data_start(&mut self, _domain: &str, from: &str, _is8bit: bool, to: &[String]) -> Response {
            self.current = Received { from: from.to_owned(), to: to.to_vec(), data: Vec::new() };
            OK
        }

        fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
            self.current.data.extend_from_slice(buf);
            Ok(())
        }

        fn data_end(&mut self) -> Response {
            self.received.lock().unwrap().push(std::mem::take(&mut self.current));
            OK
        }
    }

    impl SmtpSink {
        /// Starts the server on `127.0.0.1:0` in a thread that lives as long as the test binary.
        fn start() -> (Self, u16) {
            let sink = Self::default();
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            let mut server = Server::new(sink.clone());
            server.with_name("sink.test").with_num_threads(8).with_tcp_listener(listener);
            std::thread::spawn(move || server.serve().map_err(|e| e.to_string()));
            (sink, port)
        }

        fn messages(&self) -> Vec<Received> {
            self.received.lock().unwrap().clone()
        }
    }

    fn smtp(port: u16) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".to_owned(),
            port: Some(port),
            tls: SmtpTls::None,
            username: None,
            password: None,
            password_file: None,
            timeout: Some(Timeout::new(Duration::from_secs(5)).unwrap()),
            pool_max: 2,
        }
    }

    fn start() -> chrono::DateTime<chrono::Utc> {
        "2030-01-01T09:30:00Z".parse().unwrap()
    }

    fn channel(smtp: Option<SmtpSettings>, outbox_dir: &Path) -> EmailChannel {
        let settings = EmailSettings {
            enabled: true,
            from: "Tollgate <tollgate@example.com>".to_owned(),
            smtp,
            outbox_dir: outbox_dir.to_owned(),
        };
        EmailChannel::new(&settings).unwrap().with_clock(Arc::new(ManualClock::new(start())))
    }

    fn person(principal: &str, name: &str, email: Option<&str>) -> RecipientInfo {
        RecipientInfo {
            principal: principal.to_owned(),
            name: name.to_owned(),
            email: email.map(str::to_owned),
            slack_user_id: None,
        }
    }

    /// The preview sample, with this test's key, request, recipients and justification.
    fn notification(recipients: Vec<RecipientInfo>) -> Notification {
        let mut n = sample("approval_requested");
        n.idempotency_key = "run-7:1:approval_requested".to_owned();
        n.request_id = Uuid::from_u128(7);
        n.recipients = recipients;
        n.request.justification = JUSTIFICATION.to_owned();
        n.request.approvals_needed = Some(2);
        n.request.deadline = Some("2030-01-02T09:30:00Z".parse().unwrap());
        n.text = "alice asks for api, refresh_token on salesforce-prod".to_owned();
        n
    }

    fn expected_message_id(recipient: &str) -> String {
        format!("{}@example.com", short_hash(&["run-7:1:approval_requested", recipient]))
    }

    /// Checks one delivered message: headers, both bodies, escaping. Returns its Message-ID.
    fn check_message(raw: &[u8], to: &str, name: &str) -> String {
        let message = MessageParser::default().parse(raw).expect("an RFC 5322 message");
        assert_eq!(message.subject(), Some("Approval needed: alice requests grant on salesforce-prod (production)"));
        let addressee = message.to().and_then(|a| a.first()).unwrap();
        assert_eq!(addressee.address(), Some(to));
        assert_eq!(addressee.name(), Some(name));
        let from = message.from().and_then(|a| a.first()).unwrap();
        assert_eq!((from.name(), from.address()), (Some("Tollgate"), Some("tollgate@example.com")));
        assert_eq!(message.date().unwrap().to_timestamp(), start().timestamp());
        assert_eq!(message.header_raw("Auto-Submitted").map(str::trim), Some("auto-generated"));
        assert_eq!(
            message.references().as_text(),
            Some(format!("request-{}@example.com", Uuid::from_u128(7)).as_str())
        );
        assert_eq!(message.text_body_count(), 1);
        assert_eq!(message.html_body_count(), 1);

        // Bodies travel with CRLF line ends.
        let text = message.body_text(0).unwrap().replace("\r\n", "\n");
        assert!(text.contains(JUSTIFICATION), "the justification is literal in text:\n{text}");
        assert!(text.contains("Requester:    alice"), "{text}");
        assert!(text.contains("Scopes:       api, refresh_token"), "{text}");
        assert!(text.contains("Approvals still needed: 2"), "{text}");
        assert!(text.contains("Decide by:    2030-01-02 09:30 UTC"), "{text}");
        assert!(!text.contains("&lt;") && !text.contains("&amp;"), "nothing is HTML-escaped in text:\n{text}");

        let html = message.body_html(0).unwrap().replace("\r\n", "\n");
        assert!(
            html.contains(
                "INC-42 &#60;script&#62;alert(&#34;x&#34;)&#60;/script&#62; &#38; &#60;b&#62;now&#60;/b&#62;\nsecond line"
            ),
            "the justification is escaped in HTML:\n{html}"
        );
        assert!(!html.contains("<script") && !html.contains("<b>now"), "{html}");
        assert!(html.contains("Your approval is needed: alice on salesforce-prod"), "{html}");
        message.message_id().unwrap().to_owned()
    }

    #[tokio::test]
    async fn smtp_delivers_text_and_html_to_each_recipient_with_an_address() {
        let (sink, port) = SmtpSink::start();
        let dir = tempfile::tempdir().unwrap();
        let channel = channel(Some(smtp(port)), dir.path());
        assert_eq!(channel.name(), "email");
        let recipients = vec![
            person("carol", "Carol Approver", Some("carol@example.com")),
            person("dave", "Dave", None),
            person("erin", "Erin O'Brien", Some(" erin@example.org ")),
        ];

        assert_eq!(channel.send(&notification(recipients.clone())).await, Ok(()));
        let messages = sink.messages();
        assert_eq!(messages.len(), 2, "dave has no address: {messages:?}");
        assert_eq!(messages[0].to, ["carol@example.com"]);
        assert_eq!(messages[1].to, ["erin@example.org"]);
        assert!(messages.iter().all(|m| m.from.contains("tollgate@example.com")), "{messages:?}");
        let id = check_message(&messages[0].data, "carol@example.com", "Carol Approver");
        assert_eq!(id, expected_message_id("carol@example.com"));
        let id = check_message(&messages[1].data, "erin@example.org", "Erin O'Brien");
        assert_eq!(id, expected_message_id("erin@example.org"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing goes to the outbox with SMTP");

        // A retry of the same notification carries the same Message-IDs.
        assert_eq!(channel.send(&notification(recipients)).await, Ok(()));
        let again = sink.messages();
        assert_eq!(again.len(), 4);
        let id = check_message(&again[2].data, "carol@example.com", "Carol Approver");
        assert_eq!(id, expected_message_id("carol@example.com"));

        // Nobody with an address: nothing to do, and no connection is needed.
        let nobody = notification(vec![person("dave", "Dave", None), person("frank", "Frank", Some(""))]);
        assert_eq!(channel.send(&nobody).await, Ok(()));
        assert_eq!(sink.messages().len(), 4);
    }

    #[tokio::test]
    async fn smtp_rejections_are_classified_by_reply_code_and_name_no_server_text() {
        let (sink, port) = SmtpSink::start();
        let channel = channel(Some(smtp(port)), Path::new("unused"));

        let err = channel.send(&notification(vec![person("x", "X", Some("bounce@example.com"))])).await.unwrap_err();
        assert_eq!(
            err,
            ConnectorError::Permanent { message: "smtp 127.0.0.1 rejected the message with 550".to_owned() }
        );

        let err = channel.send(&notification(vec![person("y", "Y", Some("busy@example.com"))])).await.unwrap_err();
        assert_eq!(
            err,
            ConnectorError::Retryable { message: "smtp 127.0.0.1 answered 451".to_owned(), retry_after: None }
        );
        assert!(!err.to_string().contains("try later"), "{err}");

        // One bad mailbox does not stop the others; the worst outcome is reported.
        let mixed = vec![
            person("x", "X", Some("bounce@example.com")),
            person("bad", "Bad", Some("not an address")),
            person("carol", "Carol", Some("carol@example.com")),
        ];
        let err = channel.send(&notification(mixed.clone())).await.unwrap_err();
        assert!(matches!(&err, ConnectorError::Permanent { message } if message.contains("550")), "{err:?}");
        let mut with_busy = mixed;
        with_busy.push(person("y", "Y", Some("busy@example.com")));
        let err = channel.send(&notification(with_busy)).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Retryable { .. }), "{err:?}");
        let delivered: Vec<_> = sink.messages().into_iter().map(|m| m.to).collect();
        assert_eq!(delivered, [["carol@example.com"], ["carol@example.com"]]);
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_is_retryable_not_a_hang() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // Accept every connection and keep it open without ever greeting.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                open.push(socket);
            }
        });
        let mut settings = smtp(port);
        settings.timeout = Some(Timeout::new(Duration::from_secs(1)).unwrap());
        let carol = notification(vec![person("carol", "Carol", Some("carol@example.com"))]);
        let sent =
            tokio::time::timeout(Duration::from_secs(10), channel(Some(settings), Path::new("unused")).send(&carol))
                .await
                .expect("the send gives up by itself");
        assert!(matches!(sent, Err(ConnectorError::Retryable { .. })), "{sent:?}");
        held.abort();
    }

    #[tokio::test]
    async fn smtp_down_is_retryable_and_starttls_is_never_skipped() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let carol = || notification(vec![person("carol", "Carol", Some("carol@example.com"))]);
        let err = channel(Some(smtp(port)), Path::new("unused")).send(&carol()).await.unwrap_err();
        assert_eq!(
            err,
            ConnectorError::Retryable {
                message: "smtp 127.0.0.1: connection failed: connection refused".to_owned(),
                retry_after: None
            }
        );

        // The sink offers no STARTTLS: a channel that requires it refuses to send in clear.
        let (sink, port) = SmtpSink::start();
        let settings = SmtpSettings { tls: SmtpTls::Starttls, ..smtp(port) };
        let err = channel(Some(settings), Path::new("unused")).send(&carol()).await.unwrap_err();
        assert!(matches!(err, ConnectorError::Permanent { .. }), "{err:?}");
        assert!(sink.messages().is_empty());
    }

    #[test]
    fn smtp_channel_is_built_and_dropped_outside_the_runtime_that_sent() {
        let (sink, port) = SmtpSink::start();
        let channel = channel(Some(smtp(port)), Path::new("unused"));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let carol = notification(vec![person("carol", "Carol", Some("carol@example.com"))]);
        assert_eq!(runtime.block_on(channel.send(&carol)), Ok(()));
        drop(runtime);
        // lettre's pool spawns a task on drop, which panics without a runtime.
        drop(channel);
        assert_eq!(sink.messages().len(), 1);
    }

    #[tokio::test]
    async fn outbox_writes_one_parseable_eml_per_recipient_and_overwrites_on_retry() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = dir.path().join("mail-outbox");
        let channel = channel(None, &outbox);
        let n = notification(vec![
            person("carol", "Carol Approver", Some("carol@example.com")),
            person("dave", "Dave", None),
            person("erin", "Erin O'Brien", Some("erin@example.org")),
        ]);

        assert_eq!(channel.send(&n).await, Ok(()));
        let list = || {
            let mut names: Vec<String> =
                std::fs::read_dir(&outbox).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            names.sort();
            names
        };
        let first = list();
        assert_eq!(first.len(), 2, "{first:?}");
        assert!(first[0].starts_with("run-7_1_approval_requested.carol@example.com.") && first[0].ends_with(".eml"));
        assert!(first[1].starts_with("run-7_1_approval_requested.erin@example.org."), "{first:?}");
        let carol = std::fs::read(outbox.join(&first[0])).unwrap();
        assert_eq!(
            check_message(&carol, "carol@example.com", "Carol Approver"),
            expected_message_id("carol@example.com")
        );
        let erin = std::fs::read(outbox.join(&first[1])).unwrap();
        assert_eq!(check_message(&erin, "erin@example.org", "Erin O'Brien"), expected_message_id("erin@example.org"));

        assert_eq!(channel.send(&n).await, Ok(()));
        assert_eq!(list(), first, "same files, no temporary files left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&outbox.join(&first[0])), 0o600, "live approval links are the server user's only");
            assert_eq!(mode(&outbox), 0o700);
        }
        let rewritten = std::fs::read(outbox.join(&first[0])).unwrap();
        assert_eq!(
            check_message(&rewritten, "carol@example.com", "Carol Approver"),
            expected_message_id("carol@example.com")
        );

        // Hostile keys and addresses cannot leave the folder or hide the file.
        let name = eml_file_name("../../etc/passwd", "a/b@example.com");
        assert!(!name.contains('/') && !name.starts_with('.'), "{name}");
    }

    #[test]
    fn every_event_renders_from_its_template_and_previews_escape_the_justification() {
        for event in EVENTS {
            let email = preview(event).unwrap().unwrap();
            assert!(!email.subject.is_empty() && !email.subject.contains('\n'), "{event}: {email:?}");
            assert!(email.text.contains("sync <Opportunity> & <Account> fields\nbefore the Q3 close."), "{event}");
            let escaped = "sync &#60;Opportunity&#62; &#38; &#60;Account&#62; fields\nbefore the Q3 close.";
            assert!(email.html.contains(escaped), "{event}: {}", email.html);
            assert!(!email.html.contains("<Opportunity>"), "{event}");
        }
        let approved = preview("approved").unwrap().unwrap();
        assert_eq!(approved.subject, "Approved: grant on salesforce-prod (production)");
        assert!(
            approved
                .text
                .starts_with("Approved: your request for salesforce-prod\n\nYour request for api, refresh_token")
        );
        assert!(preview("revoke_failed").unwrap().unwrap().subject.starts_with("ACTION NEEDED"));
        assert_eq!(preview("no_such_event").unwrap(), None);

        // Unknown events use the `message` wording; subjects stay one bounded line.
        let mut n = sample("message");
        n.event = "something_new".to_owned();
        n.request.integration = format!("evil\r\nBcc: x@example.com {}", "x".repeat(300));
        let email = render(&n).unwrap();
        assert!(email.subject.starts_with("Tollgate: grant on evil Bcc: x@example.com xxx"), "{}", email.subject);
        assert_eq!(email.subject.chars().count(), MAX_SUBJECT_CHARS);
        assert!(!email.subject.contains(['\r', '\n']));
    }

    #[test]
    fn settings_have_defaults_are_strict_and_never_print_the_password() {
        let settings: EmailSettings = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(settings.from, DEFAULT_FROM);
        assert_eq!(settings.outbox_dir, Path::new("mail-outbox"));
        assert!(settings.smtp.is_none());
        EmailChannel::new(&settings).unwrap();

        let settings: EmailSettings = serde_json::from_value(serde_json::json!({
            "from": "Tollgate <tollgate@example.com>",
            "smtp": {"host": "smtp.example.com", "username": "tollgate", "password": CANARY}
        }))
        .unwrap();
        let smtp = settings.smtp.as_ref().unwrap();
        assert_eq!(
            (smtp.port(), smtp.tls, smtp.timeout(), smtp.pool_max),
            (587, SmtpTls::Starttls, DEFAULT_SMTP_TIMEOUT, 4)
        );
        assert_eq!(smtp.resolve_password().unwrap().unwrap().expose_secret(), CANARY);
        let channel = EmailChannel::new(&settings).unwrap();
        for shown in [format!("{settings:?}"), format!("{settings:#?}"), format!("{channel:?}")] {
            assert!(!shown.contains(CANARY), "{shown}");
        }
        assert!(format!("{settings:?}").contains("password: Some([redacted])"));

        let tls: SmtpSettings =
            serde_json::from_value(serde_json::json!({"host": "h", "tls": "tls", "timeout": "3s"})).unwrap();
        assert_eq!((tls.port(), tls.timeout()), (465, Duration::from_secs(3)));

        let unknown = serde_json::from_value::<EmailSettings>(serde_json::json!({"smtp": {"host": "h", "user": "x"}}));
        assert!(unknown.unwrap_err().to_string().contains("unknown field `user`"));
        let bad_tls = serde_json::from_value::<SmtpSettings>(serde_json::json!({"host": "h", "tls": "ssl"}));
        assert!(bad_tls.is_err());

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smtp-password");
        std::fs::write(&file, format!("{CANARY}\n")).unwrap();
        let base = SmtpSettings { username: Some("tollgate".to_owned()), ..smtp_placeholder() };
        let from_file = SmtpSettings { password_file: Some(file.clone()), ..base.clone() };
        assert_eq!(from_file.resolve_password().unwrap().unwrap().expose_secret(), CANARY);

        let field = |s: &SmtpSettings| match s.resolve_password() {
            Err(ConfigError::Invalid { field, reason }) => {
                assert!(!reason.contains(CANARY));
                field
            }
            other => panic!("{:?}", other.map(|p| p.is_some())),
        };
        let both = SmtpSettings { password: Some(SecretString::from(CANARY)), ..from_file.clone() };
        assert_eq!(field(&both), "password");
        assert_eq!(field(&base), "password");
        let no_user = SmtpSettings { username: None, ..from_file.clone() };
        assert_eq!(field(&no_user), "password_file");
        let missing = SmtpSettings { password_file: Some(dir.path().join("nope")), ..base.clone() };
        assert_eq!(field(&missing), "password_file");

        let config_error = |settings: EmailSettings| EmailChannel::new(&settings).unwrap_err();
        let err = config_error(EmailSettings { from: "not a mailbox".to_owned(), ..EmailSettings::default() });
        assert!(matches!(err, ConfigError::Invalid { field: "from", .. }), "{err:?}");
        let clear = SmtpSettings { tls: SmtpTls::None, host: "relay.example.com".to_owned(), ..from_file.clone() };
        let err = config_error(EmailSettings { smtp: Some(clear), ..EmailSettings::default() });
        assert!(matches!(err, ConfigError::Invalid { field: "smtp.tls", .. }), "{err:?}");
        let local = SmtpSettings { tls: SmtpTls::None, host: "localhost".to_owned(), ..from_file };
        EmailChannel::new(&EmailSettings { smtp: Some(local), ..EmailSettings::default() }).unwrap();
        let no_pool = SmtpSettings { pool_max: 0, ..base };
        let err = config_error(EmailSettings { smtp: Some(no_pool), ..EmailSettings::default() });
        assert!(matches!(err, ConfigError::Invalid { field: "smtp.pool_max", .. }), "{err:?}");
    }

    #[test]
    fn break_glass_messages_say_emergency_first() {
        let mut n = sample("approval_requested");
        n.request.emergency = true;
        let email = render(&n).unwrap();
        assert!(email.subject.starts_with("EMERGENCY (break-glass): Approval needed"), "{}", email.subject);
        assert!(email.text.contains("EMERGENCY (break-glass)") && email.html.contains("EMERGENCY (break-glass)"));
        n.request.emergency = false;
        assert!(!render(&n).unwrap().subject.contains("EMERGENCY"));
    }

    fn smtp_placeholder() -> SmtpSettings {
        serde_json::from_value(serde_json::json!({"host": "smtp.example.com"})).unwrap()
    }
}
