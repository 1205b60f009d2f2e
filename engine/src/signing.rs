//! Webhook signing: `v1` HMAC-SHA256 signatures over `"{timestamp}.{raw body}"`, for connector calls and notifications.
//!
//! Every outgoing webhook carries [`TIMESTAMP_HEADER`] (unix seconds), [`SIGNATURE_HEADER`]
//! (`v1=<lowercase hex HMAC-SHA256(secret, "{timestamp}.{body}")>`) and
//! [`IDEMPOTENCY_KEY_HEADER`]. Binding the timestamp into the MAC lets receivers reject replays of
//! old requests; the idempotency key lets them deduplicate the retries we make on purpose.
//! `docs/WEBHOOKS.md` describes the scheme for receivers.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the signing time, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "Tollgate-Timestamp";
/// Header carrying one or more comma-separated `v1=<hex>` signatures.
pub const SIGNATURE_HEADER: &str = "Tollgate-Signature";
/// Header carrying the idempotency key: identical on every retry of the same action.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// The tolerance receivers should apply between the timestamp and their clock, in seconds.
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Signature scheme prefix.
const V1: &str = "v1=";
/// A signature header listing more entries than this is rejected rather than checked: rotation
/// needs two, and each entry costs a hex decode and a comparison.
const MAX_SIGNATURES: usize = 8;

/// Why a webhook signature was rejected.
///
/// `Display` never prints the header values, let alone the signature that would have been valid:
/// these messages may reach logs and responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The verifying side has no secret configured; an empty secret would let anyone sign.
    #[error("webhook signing secret is empty")]
    EmptySecret,
    /// The timestamp header is not a unix time in seconds.
    #[error("malformed Tollgate-Timestamp header")]
    MalformedTimestamp,
    /// The timestamp is further from the verifier's clock than the tolerance, in either direction.
    #[error("Tollgate-Timestamp outside the {tolerance_secs} s tolerance")]
    TimestampOutOfTolerance {
        /// The tolerance that was applied.
        tolerance_secs: i64,
    },
    /// The signature header holds no `v1=` entry (or too many entries).
    #[error("no usable v1 signature in Tollgate-Signature header")]
    MissingSignature,
    /// No `v1=` entry matches the body, timestamp and secret.
    #[error("webhook signature mismatch")]
    Mismatch,
}

/// Computes the signature header value for `body` sent at `timestamp` (unix seconds).
///
/// Returns `v1=` followed by 64 lowercase hex digits.
#[must_use]
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let tag = mac(secret, timestamp.to_string().as_bytes(), body).finalize().into_bytes();
    format!("{V1}{}", hex::encode(tag))
}

/// Verifies a signed webhook: the timestamp is within `tolerance_secs` of `now` (both unix
/// seconds) and at least one `v1=` entry of `signature_header` is the HMAC of
/// `"{timestamp}.{body}"` under `secret`.
///
/// `body` must be the raw bytes received, before any JSON decoding. Several comma-separated
/// entries are accepted so that a sender can sign with an old and a new secret during rotation;
/// entries with other scheme prefixes are ignored. Comparison is constant-time. A valid signature
/// does not make a request unique: deduplicate on the `Idempotency-Key` too.
///
/// # Errors
/// A [`SignatureError`] variant saying which check failed.
pub fn verify(
    secret: &[u8],
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    if secret.is_empty() {
        return Err(SignatureError::EmptySecret);
    }
    let timestamp = parse_timestamp(timestamp_header).ok_or(SignatureError::MalformedTimestamp)?;
    let tolerance = u64::try_from(tolerance_secs).unwrap_or(0);
    if now.abs_diff(timestamp) > tolerance {
        return Err(SignatureError::TimestampOutOfTolerance { tolerance_secs });
    }

    let candidates: Vec<&str> = signature_header.split(',').filter_map(|entry| entry.trim().strip_prefix(V1)).collect();
    if candidates.is_empty() || candidates.len() > MAX_SIGNATURES {
        return Err(SignatureError::MissingSignature);
    }

    // MAC the header text as received, exactly as a receiver in another language would.
    let expected = mac(secret, timestamp_header.as_bytes(), body).finalize().into_bytes();
    let mut matched = subtle::Choice::from(0);
    for candidate in candidates {
        // A malformed entry cannot match; keep checking the others rather than failing early.
        if let Ok(given) = hex::decode(candidate) {
            matched |= expected.as_slice().ct_eq(&given);
        }
    }
    if bool::from(matched) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// The MAC state after absorbing `"{timestamp}.{body}"`.
fn mac(secret: &[u8], timestamp: &[u8], body: &[u8]) -> Hmac<Sha256> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of any length");
    };
    mac.update(timestamp);
    mac.update(b".");
    mac.update(body);
    mac
}

/// Parses a unix time in seconds written as plain ASCII digits (no sign, no spaces).
fn parse_timestamp(header: &str) -> Option<i64> {
    if header.is_empty() || header.len() > 18 || !header.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    header.parse().ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"whsec_test_0123456789abcdef";
    const TS: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"type":"tollgate.action","idempotency_key":"run-1:step-2"}"#;
    // Computed independently with Python's `hmac.new(secret, b"1700000000." + body, sha256)`.
    const KNOWN: &str = "v1=b8959825837f501c131887c14cb9e35e1efb1ddfe2bbc5422fc2b0c1f4c7c16a";

    #[test]
    fn sign_matches_known_answer_and_verifies() {
        assert_eq!(sign(SECRET, TS, BODY), KNOWN);
        assert_eq!(verify(SECRET, "1700000000", KNOWN, BODY, TS, 300), Ok(()));
        // Uppercase hex is the same bytes.
        let upper = format!("v1={}", KNOWN[3..].to_uppercase());
        assert_eq!(verify(SECRET, "1700000000", &upper, BODY, TS, 300), Ok(()));
    }

    #[test]
    fn timestamp_outside_tolerance_is_rejected_in_both_directions() {
        let too_old = verify(SECRET, "1700000000", KNOWN, BODY, TS + 301, 300);
        let too_new = verify(SECRET, "1700000000", KNOWN, BODY, TS - 301, 300);
        let expected = Err(SignatureError::TimestampOutOfTolerance { tolerance_secs: 300 });
        assert_eq!(too_old, expected);
        assert_eq!(too_new, expected);
        assert_eq!(verify(SECRET, "1700000000", KNOWN, BODY, TS + 300, 300), Ok(()));
        assert_eq!(verify(SECRET, "1700000000", KNOWN, BODY, TS - 300, 300), Ok(()));
        // Extreme values must not overflow.
        assert!(verify(SECRET, "1700000000", KNOWN, BODY, i64::MIN, 300).is_err());
        assert!(verify(SECRET, "1700000000", KNOWN, BODY, i64::MAX, i64::MIN).is_err());
    }

    #[test]
    fn malformed_inputs_get_distinct_errors() {
        for bad in ["", " 1700000000", "+1700000000", "-5", "17e8", "1700000000.5", "99999999999999999999"] {
            assert_eq!(verify(SECRET, bad, KNOWN, BODY, TS, 300), Err(SignatureError::MalformedTimestamp), "{bad:?}");
        }
        for bad in ["", "v0=abcd", "sha256=abcd", "v1", "V1=abcd"] {
            assert_eq!(
                verify(SECRET, "1700000000", bad, BODY, TS, 300),
                Err(SignatureError::MissingSignature),
                "{bad:?}"
            );
        }
        let many = [KNOWN; MAX_SIGNATURES + 1].join(",");
        assert_eq!(verify(SECRET, "1700000000", &many, BODY, TS, 300), Err(SignatureError::MissingSignature));
        assert_eq!(verify(b"", "1700000000", KNOWN, BODY, TS, 300), Err(SignatureError::EmptySecret));
        assert_eq!(verify(SECRET, "1700000000", "v1=zz,v1=", BODY, TS, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn any_of_several_signatures_may_match_for_rotation() {
        let old = sign(b"old secret", TS, BODY);
        let header = format!("v0=ignored, {old} ,{KNOWN}");
        assert_eq!(verify(SECRET, "1700000000", &header, BODY, TS, 300), Ok(()));
        assert_eq!(verify(b"old secret", "1700000000", &header, BODY, TS, 300), Ok(()));
        assert_eq!(verify(b"other", "1700000000", &header, BODY, TS, 300), Err(SignatureError::Mismatch));
    }

    #[test]
    fn error_display_never_reveals_the_expected_signature() {
        let wrong = "v1=0000000000000000000000000000000000000000000000000000000000000000";
        let err = verify(SECRET, "1700000000", wrong, BODY, TS, 300).unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(&KNOWN[3..]), "{shown}");
        assert!(!shown.contains("0000000000"), "{shown}");
    }

    proptest! {
        #[test]
        fn signed_bodies_verify(secret in prop::collection::vec(any::<u8>(), 1..64),
                                body in prop::collection::vec(any::<u8>(), 0..512),
                                ts in 0i64..4_000_000_000, skew in -300i64..=300) {
            let sig = sign(&secret, ts, &body);
            prop_assert_eq!(sig.len(), 3 + 64);
            prop_assert_eq!(verify(&secret, &ts.to_string(), &sig, &body, ts + skew, 300), Ok(()));
        }

        #[test]
        fn tampered_body_is_rejected(secret in prop::collection::vec(any::<u8>(), 1..64),
                                     body in prop::collection::vec(any::<u8>(), 1..512),
                                     index in any::<prop::sample::Index>(), flip in 1u8..=255) {
            let sig = sign(&secret, TS, &body);
            let mut tampered = body.clone();
            let i = index.index(tampered.len());
            tampered[i] ^= flip;
            prop_assert_eq!(verify(&secret, "1700000000", &sig, &tampered, TS, 300),
                            Err(SignatureError::Mismatch));
        }

        #[test]
        fn truncated_or_extended_body_is_rejected(body in prop::collection::vec(any::<u8>(), 1..256),
                                                  extra in prop::collection::vec(any::<u8>(), 1..16)) {
            let sig = sign(SECRET, TS, &body);
            let mut longer = body.clone();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(verify(SECRET, "1700000000", &sig, &longer, TS, 300), Err(SignatureError::Mismatch));
            prop_assert_eq!(verify(SECRET, "1700000000", &sig, &body[..body.len() - 1], TS, 300),
                            Err(SignatureError::Mismatch));
        }

        #[test]
        fn changed_timestamp_or_secret_is_rejected(body in prop::collection::vec(any::<u8>(), 0..256),
                                                   delta in 1i64..=300,
                                                   other in prop::collection::vec(any::<u8>(), 1..64)) {
            let sig = sign(SECRET, TS, &body);
            let moved = (TS + delta).to_string();
            prop_assert_eq!(verify(SECRET, &moved, &sig, &body, TS, 300), Err(SignatureError::Mismatch));
            prop_assume!(other.as_slice() != SECRET);
            prop_assert_eq!(verify(&other, "1700000000", &sig, &body, TS, 300), Err(SignatureError::Mismatch));
        }

        #[test]
        fn tampered_signature_is_rejected(index in 3usize..67, digit in prop::sample::select(b"0123456789abcdef".to_vec())) {
            let mut sig = sign(SECRET, TS, BODY).into_bytes();
            prop_assume!(sig[index] != digit);
            sig[index] = digit;
            let sig = String::from_utf8(sig).unwrap();
            prop_assert_eq!(verify(SECRET, "1700000000", &sig, BODY, TS, 300), Err(SignatureError::Mismatch));
        }
    }
}
