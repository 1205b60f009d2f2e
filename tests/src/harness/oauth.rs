//! A real OAuth 2.0 authorization server on loopback: `oidc-provider` (npm) with the
//! client-credentials grant, RFC 7009 revocation and RFC 7662 introspection, run by
//! `tests/oauth/server.mjs` on Node 22.
//!
//! The npm packages (pinned by `tests/oauth/package-lock.json`) are installed once into
//! `$HOME/.cache/tollgate-oauth-npm` by `tests/oauth/install.sh` (`.ci/run` calls it before the
//! tests). When they cannot be installed (no npm, no registry), [`OAuthServer::start`] answers
//! `None` after printing why — unless `TOLLGATE_TEST_REQUIRE_OAUTH=1` (CI sets it): then it fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Deserialize;

/// Set (to anything but `0`) to make a missing Node/npm installation a failure, not a skip.
pub const REQUIRE_OAUTH_ENV: &str = "TOLLGATE_TEST_REQUIRE_OAUTH";

/// One client registered at the test server.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthClient {
    /// Its id.
    pub client_id: String,
    /// `client_secret_basic`, `client_secret_post` or `private_key_jwt`.
    pub method: String,
    /// Its secret (secret-based methods); contains `:/+% &` to exercise encoding.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// `private_key_jwt`: `RS256` or `ES256`.
    #[serde(default)]
    pub alg: Option<String>,
    /// `private_key_jwt`: the `kid` of its key.
    #[serde(default)]
    pub key_id: Option<String>,
    /// `private_key_jwt`: its PKCS#8 PEM private key.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
}

/// What the server wrote once it listened.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthEndpoints {
    /// `http://127.0.0.1:<port>`.
    pub issuer: String,
    /// Token endpoint.
    pub token_url: String,
    /// RFC 7662 endpoint.
    pub introspection_url: String,
    /// RFC 7009 endpoint.
    pub revocation_url: String,
    /// Every scope the server knows (others are refused with `invalid_scope`).
    pub scopes: Vec<String>,
    /// The scopes each client may be given (space-separated).
    pub client_scope: String,
    /// Lifetime of tokens, in seconds (all clients but `long`).
    pub short_ttl: u64,
    /// Lifetime of the `long` client's tokens, in seconds.
    pub long_ttl: u64,
    /// Clients by role: `basic`, `post`, `long` (basic, day-long tokens), `rs256`, `es256`.
    pub clients: BTreeMap<String, OAuthClient>,
}

/// A running test authorization server; stopped on drop.
pub struct OAuthServer {
    child: Child,
    /// Endpoints and clients.
    pub endpoints: OAuthEndpoints,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for OAuthServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthServer").field("issuer", &self.endpoints.issuer).finish_non_exhaustive()
    }
}

fn required() -> bool {
    std::env::var(REQUIRE_OAUTH_ENV).is_ok_and(|v| !v.trim().is_empty() && v.trim() != "0")
}

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("oauth")
}

/// Runs `tests/oauth/install.sh` (a no-op once installed) and answers the package directory.
fn install() -> anyhow::Result<PathBuf> {
    let script = sources().join("install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({}): {}", script.display(), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    anyhow::ensure!(dir.join("node_modules/.bin/node").exists(), "no Node binary in {}", dir.display());
    Ok(dir)
}

impl OAuthServer {
    /// Installs the packages if needed and starts the server on a free loopback port.
    ///
    /// # Errors
    /// The server did not start, or the packages could not be installed while
    /// [`REQUIRE_OAUTH_ENV`] is set. Without it, a failed installation answers `Ok(None)` after
    /// printing why on stderr (the caller skips its test).
    pub async fn start() -> anyhow::Result<Option<Self>> {
        let packages = match tokio::task::spawn_blocking(install).await? {
            Ok(dir) => dir,
            Err(e) if required() => return Err(e.context(format!("{REQUIRE_OAUTH_ENV} is set"))),
            Err(e) => {
                eprintln!(
                    "SKIPPED: the OAuth 2.0 test server (oidc-provider on Node 22, tests/oauth) could not be installed: \
                     {e:#}. Set {REQUIRE_OAUTH_ENV}=1 to make this a failure."
                );
                return Ok(None);
            }
        };
        let dir = tempfile::tempdir()?;
        // The script resolves `oidc-provider` from its own directory: give it the installed tree.
        std::fs::copy(sources().join("server.mjs"), dir.path().join("server.mjs"))?;
        std::os::unix::fs::symlink(packages.join("node_modules"), dir.path().join("node_modules"))?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = Command::new(packages.join("node_modules/.bin/node"))
            .arg(dir.path().join("server.mjs"))
            .arg(dir.path())
            .current_dir(dir.path())
            .env("NODE_ENV", "test")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start Node")?;
        let mut server = Self {
            child,
            endpoints: OAuthEndpoints {
                issuer: String::new(),
                token_url: String::new(),
                introspection_url: String::new(),
                revocation_url: String::new(),
                scopes: Vec::new(),
                client_scope: String::new(),
                short_ttl: 0,
                long_ttl: 0,
                clients: BTreeMap::new(),
            },
            dir,
        };
        let ready = server.dir.path().join("ready.json");
        let started = crate::eventually("the OAuth test server to listen", Duration::from_secs(30), || {
            let ready = ready.clone();
            let exited = server.child.try_wait().ok().flatten();
            async move {
                if let Some(status) = exited {
                    bail!("the OAuth test server exited ({status})");
                }
                match std::fs::read(&ready) {
                    Ok(bytes) => Ok(Ok(serde_json::from_slice::<OAuthEndpoints>(&bytes)?)),
                    Err(_) => Ok(Err("no ready.json yet".to_owned())),
                }
            }
        })
        .await;
        match started {
            Ok(endpoints) => server.endpoints = endpoints,
            Err(e) => {
                let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
                return Err(e.context(format!("server log:\n{log}")));
            }
        }
        Ok(Some(server))
    }

    /// The client registered for `role` (`basic`, `post`, `long`, `rs256`, `es256`).
    ///
    /// # Panics
    /// For an unknown role.
    #[must_use]
    pub fn client(&self, role: &str) -> &OAuthClient {
        self.endpoints.clients.get(role).unwrap_or_else(|| panic!("no {role} client"))
    }

    /// What the server printed so far.
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for OAuthServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
