//! The outbound HTTP client for webhooks: rustls on the ring provider, platform roots, no redirects.
//!
//! reqwest is built with `rustls-no-provider`, so on its own it would look for a process-wide
//! rustls provider and panic if none is installed. Handing it a ready [`rustls::ClientConfig`]
//! built from [`rustls::crypto::ring::default_provider`] avoids both the global and the panic, and
//! keeps aws-lc-rs out of the build. Certificates are checked by `rustls-platform-verifier` (the
//! verifier reqwest itself uses), which on Linux trusts the system store (`/etc/ssl/certs`,
//! `SSL_CERT_FILE`, `SSL_CERT_DIR`) — where operators put the private CA of an internal receiver.

use std::sync::Arc;
use std::time::Duration;

/// `User-Agent` sent with every request.
pub const USER_AGENT: &str = concat!("tollgate/", env!("CARGO_PKG_VERSION"));

/// Longest time spent establishing a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// TLS set-up failed, typically because the system has no CA certificates.
    #[error("cannot set up TLS for outbound HTTP: {0}")]
    Tls(#[from] rustls::Error),
    /// reqwest rejected the configuration.
    #[error("cannot build the outbound HTTP client: {0}")]
    Build(#[from] reqwest::Error),
}

/// Builds the shared client for connector and notification webhooks.
///
/// `timeout` bounds a whole request (connect, send, response headers and body); callers may
/// override it per request. Connecting is bounded by [`CONNECT_TIMEOUT`] (or `timeout` if
/// shorter). Redirects are never followed: a redirect must not carry a signed body, or the
/// approval it represents, to another address. Proxies from `HTTPS_PROXY`/`HTTP_PROXY` are not
/// consulted (the `system-proxy` feature is off).
///
/// # Errors
/// [`HttpClientError::Tls`] when no usable root certificates are found,
/// [`HttpClientError::Build`] when reqwest rejects the configuration.
pub fn client(timeout: Duration) -> Result<reqwest::Client, HttpClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous() // not dangerous: this installs the platform verifier, as reqwest does
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    // reqwest leaves ALPN alone on a preconfigured config; offer what it would offer itself.
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_builds_without_a_global_crypto_provider() {
        // If the preconfigured TLS were not recognised reqwest would fail here; without it,
        // reqwest would panic for lack of a process-wide provider (none is installed in tests).
        client(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn user_agent_names_tollgate_and_version() {
        assert_eq!(USER_AGENT, format!("tollgate/{}", env!("CARGO_PKG_VERSION")));
    }
}
