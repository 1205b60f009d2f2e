//! Shared plumbing for anything that calls out: never tied to one adapter, never putting a secret in a message.
//!
//! Connectors, notification channels and Slack all need the same few things: errors that classify
//! a failure as retryable or permanent (the outbox dispatcher needs nothing else to schedule a
//! retry), call timeouts, secrets read from files, and redaction in `Debug` output. Configuration
//! errors name the offending field and never carry a secret value. [`webhook`] is the signed
//! webhook delivery that the webhook connector and the webhook notification channel share.

pub mod webhook;

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// Longest configurable timeout; longer waits belong in the receiver (answer 2xx, work async).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest `Retry-After` honoured; a receiver cannot park a call for longer than this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// Worth retrying (timeouts, connection errors, 5xx, 408, 429).
    #[error("retryable connector failure: {message}")]
    Retryable {
        /// Short description, safe to log (no secrets, no bodies).
        message: String,
        /// Minimum wait the far side asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help (4xx other than 408/429, invalid configuration).
    #[error("permanent connector failure: {message}")]
    Permanent {
        /// Short description, safe to log.
        message: String,
    },
}

/// An invalid connector or webhook configuration. Messages name the offending field and never
/// contain a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A field has an unusable value.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The field, as written in the configuration.
        field: &'static str,
        /// Why it is unusable.
        reason: String,
    },
    /// None, or more than one, of `secret`, `secret_file` and `secret_env` is set.
    #[error("set exactly one of `secret`, `secret_file` or `secret_env`: {found} set")]
    SecretSource {
        /// Which were set, e.g. "none is" or "`secret`, `secret_env` are".
        found: String,
    },
}

impl ConfigError {
    /// [`ConfigError::Invalid`] for `field`.
    pub(crate) fn invalid(field: &'static str, reason: &str) -> Self {
        Self::Invalid { field, reason: reason.to_owned() }
    }
}

/// Reads a secret file named by the setting `field`, dropping one trailing newline (editors and
/// `echo` add one). The error names the file and the kind of failure, never any content.
pub(crate) fn read_secret_file(field: &'static str, path: &std::path::Path) -> Result<SecretString, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Invalid { field, reason: format!("cannot read {}: {}", path.display(), e.kind()) })?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    Ok(SecretString::from(text.to_owned()))
}

/// Stands in for a secret in `Debug` output.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A call timeout, written `"10s"`, `"1m 30s"`, `"500ms"` or as a number of seconds; greater
/// than zero and at most [`MAX_TIMEOUT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout(Duration);

impl Timeout {
    /// Checks the bounds.
    ///
    /// # Errors
    /// A message when `duration` is zero or longer than [`MAX_TIMEOUT`].
    pub fn new(duration: Duration) -> Result<Self, String> {
        if duration.is_zero() {
            Err("the timeout must be greater than zero".to_owned())
        } else if duration > MAX_TIMEOUT {
            Err(format!("the timeout must be at most {}", humantime::format_duration(MAX_TIMEOUT)))
        } else {
            Ok(Self(duration))
        }
    }

    /// The duration.
    #[must_use]
    pub fn as_duration(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Timeout;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10s\" or \"500ms\", or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timeout, E> {
                let v = v.trim();
                // Environment variables arrive as text: "10" means seconds there too.
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    let secs = v.parse().unwrap_or(u64::MAX);
                    return Timeout::new(Duration::from_secs(secs)).map_err(E::custom);
                }
                let d = humantime::parse_duration(v)
                    .map_err(|e| E::custom(format!("invalid timeout {v:?}: {e} (write e.g. \"10s\")")))?;
                Timeout::new(d).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timeout, E> {
                Timeout::new(Duration::from_secs(v)).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Timeout, E> {
                let secs = u64::try_from(v).map_err(|_| E::custom("the timeout must be greater than zero"))?;
                self.visit_u64(secs)
            }
        }
        d.deserialize_any(Visitor)
    }
}
