//! Slack request signing (v0): checks that an inbound request really comes from Slack.
//!
//! Slack signs `v0:{X-Slack-Request-Timestamp}:{raw body}` with HMAC-SHA256 keyed by the app's
//! signing secret and sends `v0=<64 lowercase hex digits>` in `X-Slack-Signature`. The raw body
//! bytes must be verified *before* any form or JSON decoding. A valid signature does not prove
//! uniqueness: callers still deduplicate replays within the [`MAX_AGE_SECS`] window.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Header carrying the signing time, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Slack-Request-Timestamp";
/// Header carrying `v0=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Slack-Signature";
/// Largest accepted distance between the request timestamp and our clock, in either direction.
pub const MAX_AGE_SECS: u64 = 300;

/// Signature scheme prefix, also the version in the signed base string.
const V0: &str = "v0";
/// Hex digits of an HMAC-SHA256 tag.
const HEX_LEN: usize = 64;
/// A unix time in seconds has 10 digits until the year 2286; anything much longer is garbage.
const MAX_TIMESTAMP_DIGITS: usize = 12;

/// Why a Slack request was rejected.
///
/// `Display` never shows a header value, a signature or the secret: these messages may reach logs
/// and responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// `X-Slack-Request-Timestamp` or `X-Slack-Signature` is absent.
    #[error("missing X-Slack-Request-Timestamp or X-Slack-Signature header")]
    MissingHeaders,
    /// The timestamp is not a unix time in seconds, or the signature is not `v0=` followed by 64
    /// lowercase hex digits.
    #[error("malformed X-Slack-Request-Timestamp or X-Slack-Signature header")]
    Malformed,
    /// The timestamp is more than [`MAX_AGE_SECS`] away from our clock (past or future).
    #[error("X-Slack-Request-Timestamp outside the 300 s tolerance")]
    Stale,
    /// The signature does not match the body, the timestamp and the signing secret.
    #[error("Slack request signature mismatch")]
    Mismatch,
}

impl VerifyError {
    /// The HTTP status to answer with: 400 when the request is not a signed Slack request at all
    /// (missing or malformed headers), 401 when it is one but cannot be trusted (stale or wrong
    /// signature).
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::MissingHeaders | Self::Malformed => 400,
            Self::Stale | Self::Mismatch => 401,
        }
    }
}

/// Verifies a Slack request signature over the raw `body` and returns the request timestamp.
///
/// The signature must be exactly `v0=` followed by 64 *lowercase* hex digits, which is what Slack
/// sends; any other spelling (uppercase hex included) is [`VerifyError::Malformed`]. The tag is
/// compared in constant time. An empty secret never verifies anything.
///
/// # Errors
/// [`VerifyError::MissingHeaders`] when either header is absent, [`VerifyError::Malformed`] when
/// one is unparseable, [`VerifyError::Stale`] when the timestamp is more than [`MAX_AGE_SECS`]
/// away from `now`, [`VerifyError::Mismatch`] when the signature is wrong.
pub fn verify(
    secret: &SecretString,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<i64, VerifyError> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(VerifyError::MissingHeaders);
    };
    // Digits only: `str::parse` would also take "+123", and the base string must hold exactly
    // the text Slack signed.
    if timestamp.is_empty() || timestamp.len() > MAX_TIMESTAMP_DIGITS || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(VerifyError::Malformed);
    }
    let ts: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed)?;
    let tag = parse_signature(signature).ok_or(VerifyError::Malformed)?;
    if now.timestamp().abs_diff(ts) > MAX_AGE_SECS {
        return Err(VerifyError::Stale);
    }
    let secret = secret.expose_secret().as_bytes();
    if secret.is_empty() {
        return Err(VerifyError::Mismatch);
    }
    mac(secret, timestamp, body).verify_slice(&tag).map_err(|_| VerifyError::Mismatch)?;
    Ok(ts)
}

/// Computes the `X-Slack-Signature` value Slack would send for `body` at `timestamp`: for tests
/// and fakes of Slack that sign the requests they send.
#[must_use]
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret.expose_secret().as_bytes(), &timestamp.to_string(), body).finalize().into_bytes();
    format!("{V0}={}", hex::encode(tag))
}

/// The MAC state after feeding the v0 base string `v0:{timestamp}:{body}`.
fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC-SHA256 takes keys of any length")
    };
    mac.update(V0.as_bytes());
    mac.update(b":");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

/// The 32-byte tag of a `v0=<64 lowercase hex>` signature, or `None` for anything else.
fn parse_signature(signature: &str) -> Option<Vec<u8>> {
    let hex = signature.strip_prefix(V0)?.strip_prefix('=')?;
    if hex.len() != HEX_LEN || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    hex::decode(hex).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: &str = "1531420618";
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIGNATURE: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn secret() -> SecretString {
        SecretString::from(SECRET)
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn check(
        secret: &SecretString,
        ts: Option<&str>,
        sig: Option<&str>,
        body: &str,
        now: i64,
    ) -> Result<i64, VerifyError> {
        verify(secret, ts, sig, body.as_bytes(), at(now))
    }

    #[test]
    fn slack_known_answer_vector_verifies_only_near_its_timestamp() {
        let ts = 1_531_420_618;
        assert_eq!(check(&secret(), Some(TS), Some(SIGNATURE), BODY, ts), Ok(ts));
        assert_eq!(sign(&secret(), ts, BODY.as_bytes()), SIGNATURE);
        // The boundary is inclusive, in both directions.
        assert_eq!(check(&secret(), Some(TS), Some(SIGNATURE), BODY, ts + 300), Ok(ts));
        assert_eq!(check(&secret(), Some(TS), Some(SIGNATURE), BODY, ts - 300), Ok(ts));
        assert_eq!(check(&secret(), Some(TS), Some(SIGNATURE), BODY, ts + 301), Err(VerifyError::Stale));
        // A timestamp from the future is as suspect as an old one.
        assert_eq!(check(&secret(), Some(TS), Some(SIGNATURE), BODY, ts - 301), Err(VerifyError::Stale));
        // Today's clock: the published example is long stale.
        assert_eq!(check(&secret(), Some(TS), Some(SIGNATURE), BODY, 1_767_225_600), Err(VerifyError::Stale));
    }

    #[test]
    fn tampering_or_a_wrong_secret_is_a_mismatch() {
        let ts = 1_531_420_618;
        let tampered = BODY.replace("user_id=U2CERLKJA", "user_id=U0ATTACKR");
        assert_eq!(check(&secret(), Some(TS), Some(SIGNATURE), &tampered, ts), Err(VerifyError::Mismatch));
        let wrong = SecretString::from("8f742231b10e8888abcd99yyyzzz85a6");
        assert_eq!(check(&wrong, Some(TS), Some(SIGNATURE), BODY, ts), Err(VerifyError::Mismatch));
        // The timestamp is part of what is signed.
        assert_eq!(check(&secret(), Some("1531420619"), Some(SIGNATURE), BODY, ts), Err(VerifyError::Mismatch));
        // An empty secret verifies nothing, not even a signature made with it.
        let empty = SecretString::from("");
        let forged = sign(&empty, ts, BODY.as_bytes());
        assert_eq!(check(&empty, Some(TS), Some(&forged), BODY, ts), Err(VerifyError::Mismatch));
    }

    #[test]
    fn missing_and_malformed_headers_are_bad_requests() {
        let ts = 1_531_420_618;
        for (t, s) in [(None, Some(SIGNATURE)), (Some(TS), None), (None, None)] {
            let err = check(&secret(), t, s, BODY, ts).unwrap_err();
            assert_eq!(err, VerifyError::MissingHeaders);
            assert_eq!(err.status(), 400);
        }
        let upper = format!("v0={}", SIGNATURE["v0=".len()..].to_ascii_uppercase());
        let malformed_signatures = [
            "",
            "v0=",
            "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b50",
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b5033",
            "v0=g2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            " v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
            &upper,
        ];
        for s in malformed_signatures {
            assert_eq!(check(&secret(), Some(TS), Some(s), BODY, ts), Err(VerifyError::Malformed), "{s:?}");
        }
        for t in ["", "abc", "+1531420618", "-1531420618", "1531420618.5", " 1531420618", "99999999999999999999"] {
            assert_eq!(check(&secret(), Some(t), Some(SIGNATURE), BODY, ts), Err(VerifyError::Malformed), "{t:?}");
        }
        assert_eq!(VerifyError::Malformed.status(), 400);
        assert_eq!(VerifyError::Stale.status(), 401);
        assert_eq!(VerifyError::Mismatch.status(), 401);
    }

    #[test]
    fn messages_never_carry_signatures_or_the_secret() {
        let ts = 1_531_420_618;
        let wrong = SecretString::from("another-secret-of-some-length-xx");
        let err = check(&wrong, Some(TS), Some(SIGNATURE), BODY, ts).unwrap_err();
        let expected = sign(&wrong, ts, BODY.as_bytes());
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(&SIGNATURE[3..]), "{text}");
            assert!(!text.contains(&expected[3..]), "{text}");
            assert!(!text.contains(SECRET) && !text.contains("another-secret"), "{text}");
        }
    }
}
