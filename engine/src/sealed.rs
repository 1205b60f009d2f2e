//! Secrets at rest: XChaCha20-Poly1305 under a 256-bit key from configuration (`[secrets] key`,
//! or `TOLLGATE_SECRETS__KEY_FILE`).
//!
//! A sealed value is text: `tg1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The 192-bit
//! nonce is random (no counter to share between replicas); the key id (8 hex digits of the key's
//! SHA-256) says which key sealed it, so a value sealed under another key is refused by name, not
//! decrypted into garbage. The associated data binds a value to where it is stored (e.g. the
//! grant it belongs to): a sealed value copied to another row does not open.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const PREFIX: &str = "tg1";
const NONCE_LEN: usize = 24;

/// Why a key or a sealed value is unusable. Never holds key material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The configured key is not 64 hex digits (32 bytes).
    #[error("secrets.key: must be 64 hexadecimal digits (32 random bytes, e.g. `openssl rand -hex 32`)")]
    BadKey,
    /// The value was sealed under another key.
    #[error("sealed under key {found}, but the configured key is {expected}")]
    OtherKey {
        /// Key id in the value.
        found: String,
        /// Key id of the configured key.
        expected: String,
    },
    /// Not a sealed value, or altered, or sealed for another place.
    #[error("sealed value is malformed, altered, or belongs elsewhere")]
    Invalid,
}

/// The key secrets are sealed with.
pub struct SealingKey {
    cipher: XChaCha20Poly1305,
    id: String,
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealingKey").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SealingKey {
    /// The key written as 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`SealError::BadKey`].
    pub fn from_hex(text: &SecretString) -> Result<Self, SealError> {
        let bytes = hex::decode(text.expose_secret().trim()).map_err(|_| SealError::BadKey)?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| SealError::BadKey)?;
        let id = hex::encode(&Sha256::digest(key)[..4]);
        Ok(Self { cipher: XChaCha20Poly1305::new(&key.into()), id })
    }

    /// This key's id: 8 hex digits of its SHA-256 (safe to log).
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `secret` for the place `aad` names.
    #[must_use]
    pub fn seal(&self, secret: &SecretString, aad: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload { msg: secret.expose_secret().as_bytes(), aad };
        // Encryption fails only for messages beyond 256 GiB.
        let sealed = self.cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}.{}.{}", self.id, URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens a value sealed for `aad`.
    ///
    /// # Errors
    /// [`SealError::OtherKey`] or [`SealError::Invalid`].
    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<SecretString, SealError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(PREFIX), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(SealError::Invalid);
        };
        if id != self.id {
            return Err(SealError::OtherKey { found: id.to_owned(), expected: self.id.clone() });
        }
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Invalid)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Invalid);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad })
            .map_err(|_| SealError::Invalid)?;
        String::from_utf8(plain).map(SecretString::from).map_err(|_| SealError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::{ExposeSecret, SecretString};

    use super::{SealError, SealingKey};

    fn key(hex: &str) -> SealingKey {
        SealingKey::from_hex(&SecretString::from(hex.to_owned())).expect("valid key")
    }

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const K2: &str = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_its_place() {
        let k = key(K1);
        let secret = SecretString::from("gho_canary-0123456789".to_owned());
        let sealed = k.seal(&secret, b"grant:1");
        assert!(sealed.starts_with(&format!("tg1.{}.", k.id())), "{sealed}");
        assert!(!sealed.contains("canary"), "{sealed}");
        assert_eq!(k.open(&sealed, b"grant:1").expect("opens").expose_secret(), "gho_canary-0123456789");
        assert_ne!(sealed, k.seal(&secret, b"grant:1"), "a fresh nonce each time");
        assert_eq!(k.open(&sealed, b"grant:2").unwrap_err(), SealError::Invalid, "another place");
        assert!(matches!(key(K2).open(&sealed, b"grant:1"), Err(SealError::OtherKey { .. })));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(k.open(&String::from_utf8(altered).unwrap(), b"grant:1").unwrap_err(), SealError::Invalid);
        for garbage in ["", "tg1", "tg1.x", &format!("tg1.{}.", k.id()), &format!("tg1.{}.!!!", k.id())] {
            assert!(k.open(garbage, b"grant:1").is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn keys_are_64_hex_digits_and_never_printed() {
        for bad in ["", "00", &K1[..62], &format!("{K1}00"), &K1.replace('0', "g")] {
            assert_eq!(SealingKey::from_hex(&SecretString::from(bad.to_owned())).unwrap_err(), SealError::BadKey);
        }
        let k = key(&format!("  {K1}\n"));
        let debug = format!("{k:?}");
        assert!(!debug.contains(K1) && debug.contains(k.id()), "{debug}");
    }
}
