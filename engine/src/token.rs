//! API tokens as the core sees them: what a stored token is, whether it still authenticates,
//! and the limits on what a caller may ask for when creating one.
//!
//! Only a token's SHA-256 is stored; the secret is shown once, when it is created.

use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Longest token label, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
/// Longest lifetime a token may be given: a year and a day. A token without a lifetime never
/// expires (until revoked); that is allowed for compatibility and discouraged in the docs.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);
/// How precisely `last_used_at` is kept: a use is recorded when the stored one is older than
/// this, so a busy token costs one write a minute, not one per request.
pub const USE_GRANULARITY: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// A stored API token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Token id (shown in listings, used to revoke).
    pub id: Uuid,
    /// The principal it acts as.
    pub principal: String,
    /// What it is for, as its creator wrote it.
    pub label: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// After this it no longer authenticates; `None`: no expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it last authenticated a request (to within [`USE_GRANULARITY`]).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Whether a token authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenStatus {
    /// It authenticates.
    Active,
    /// Its lifetime is over.
    Expired,
    /// It was revoked.
    Revoked,
}

impl TokenStatus {
    /// Every status, in the API's order.
    pub const ALL: [Self; 3] = [Self::Active, Self::Expired, Self::Revoked];

    /// The status's name in the API.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }

    /// The status named `s`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for TokenStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ApiToken {
    /// The token's status at `now`: revoked wins over expired.
    #[must_use]
    pub fn status(&self, now: DateTime<Utc>) -> TokenStatus {
        if self.revoked_at.is_some() {
            TokenStatus::Revoked
        } else if self.expires_at.is_some_and(|e| e <= now) {
            TokenStatus::Expired
        } else {
            TokenStatus::Active
        }
    }

    /// Whether a use at `now` should be recorded (see [`USE_GRANULARITY`]).
    #[must_use]
    pub fn use_worth_recording(&self, now: DateTime<Utc>) -> bool {
        self.last_used_at.is_none_or(|t| now - t >= USE_GRANULARITY)
    }
}

/// A new token's fields refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenInputError {
    /// The label is empty, too long, or holds control or invisible formatting characters.
    #[error("label: {0}")]
    Label(String),
    /// The lifetime does not parse, or is zero.
    #[error("ttl: {0}")]
    InvalidTtl(String),
    /// The lifetime is longer than [`MAX_TTL`].
    #[error("ttl: at most 366 days")]
    TtlTooLong,
}

impl TokenInputError {
    /// The stable machine-readable code (the HTTP API's error code).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Label(_) => "validation_failed",
            Self::InvalidTtl(_) => "invalid_duration",
            Self::TtlTooLong => "ttl_too_long",
        }
    }
}

/// Checks a new token's label and lifetime (`ttl` as `30d`, `12h`…), whichever path created it
/// (API or CLI); answers the lifetime.
///
/// # Errors
/// The first problem found, label first.
pub fn check_new_token(label: &str, ttl: Option<&str>) -> Result<Option<std::time::Duration>, TokenInputError> {
    if label.trim().is_empty() {
        return Err(TokenInputError::Label("required".to_owned()));
    }
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(TokenInputError::Label(format!("at most {MAX_LABEL_CHARS} characters")));
    }
    if label.chars().any(|c| c.is_control() || crate::policy::is_invisible_format(c)) {
        return Err(TokenInputError::Label("control and invisible formatting characters are not allowed".to_owned()));
    }
    let Some(ttl) = ttl else { return Ok(None) };
    let ttl = tollgate_workflows::Duration::parse(ttl).map_err(TokenInputError::InvalidTtl)?.as_std();
    if ttl > MAX_TTL {
        return Err(TokenInputError::TtlTooLong);
    }
    Ok(Some(ttl))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn token(expires: Option<i64>, revoked: bool, last_used: Option<i64>) -> ApiToken {
        let at = |s: i64| Utc.timestamp_opt(s, 0).single().expect("time");
        ApiToken {
            id: Uuid::nil(),
            principal: "ci".into(),
            label: "ci".into(),
            created_at: at(0),
            expires_at: expires.map(at),
            last_used_at: last_used.map(at),
            revoked_at: revoked.then(|| at(5)),
        }
    }

    #[test]
    fn status_is_revoked_over_expired_over_active() {
        let now = Utc.timestamp_opt(100, 0).single().expect("time");
        let cases = [
            (token(None, false, None), TokenStatus::Active),
            (token(Some(101), false, None), TokenStatus::Active),
            (token(Some(100), false, None), TokenStatus::Expired),
            (token(Some(50), false, None), TokenStatus::Expired),
            (token(Some(50), true, None), TokenStatus::Revoked),
            (token(None, true, None), TokenStatus::Revoked),
        ];
        for (t, want) in cases {
            assert_eq!(t.status(now), want, "{t:?}");
        }
        for s in TokenStatus::ALL {
            assert_eq!(TokenStatus::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn a_use_is_recorded_at_most_once_a_minute() {
        let now = Utc.timestamp_opt(1000, 0).single().expect("time");
        assert!(token(None, false, None).use_worth_recording(now));
        assert!(!token(None, false, Some(1000 - 59)).use_worth_recording(now));
        assert!(token(None, false, Some(1000 - 60)).use_worth_recording(now));
    }

    #[test]
    fn new_token_fields_are_checked_on_every_path() {
        type Case<'a> = (&'a str, Option<&'a str>, Result<Option<u64>, &'a str>);
        let cases: [Case<'_>; 9] = [
            ("ci", None, Ok(None)),
            ("ci", Some("30d"), Ok(Some(30 * 86400))),
            ("ci", Some("366d"), Ok(Some(366 * 86400))),
            ("ci", Some("367d"), Err("ttl_too_long")),
            ("ci", Some("0s"), Err("invalid_duration")),
            ("ci", Some("soon"), Err("invalid_duration")),
            ("  ", None, Err("validation_failed")),
            ("ci\u{202E}gnp", None, Err("validation_failed")),
            ("ci\nbot", None, Err("validation_failed")),
        ];
        for (label, ttl, want) in cases {
            let got = check_new_token(label, ttl).map(|d| d.map(|d| d.as_secs())).map_err(|e| e.code());
            assert_eq!(got, want, "{label:?} {ttl:?}");
        }
        assert_eq!(check_new_token(&"x".repeat(MAX_LABEL_CHARS), None), Ok(None));
        assert!(check_new_token(&"x".repeat(MAX_LABEL_CHARS + 1), None).is_err());
    }
}
