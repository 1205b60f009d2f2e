//! The TOML configuration loader of the `tollgate` crate (`tollgate::config::load`, which reads a
//! file: the input is written to one), followed by what the server derives from a loaded
//! configuration (directory, Slack settings, public URL, expiry warning). Errors, never panics;
//! an error always names something (a non-empty message).
//!
//! `*_file` settings make the loader read files. An input whose strings name anything under
//! `/dev`, `/proc` or `/sys` is skipped: `/dev/zero` or `/dev/stdin` would make the loader read
//! forever, which is the configured behaviour of a trusted file, not a bug.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
}

/// Whether any key or string of `value` could name a device or kernel file.
fn names_special_file(value: &toml::Value) -> bool {
    let suspicious = |s: &str| {
        let s = s.to_ascii_lowercase();
        ["dev", "proc", "sys"].iter().any(|w| s.contains(w))
    };
    match value {
        toml::Value::String(s) => suspicious(s),
        toml::Value::Array(items) => items.iter().any(names_special_file),
        toml::Value::Table(t) => t.iter().any(|(k, v)| suspicious(k) || names_special_file(v)),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    // The loader reads the file as UTF-8 text; anything else is an error before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(value) = text.parse::<toml::Table>()
        && names_special_file(&toml::Value::Table(value))
    {
        return;
    }
    let path = scratch().path().join("tollgate.toml");
    std::fs::write(&path, data).expect("write the input");
    match tollgate::config::load(Some(&path), &[]) {
        Ok(config) => {
            // What `serve` does next with a configuration that loaded.
            let _ = config.directory().map_err(|e| assert!(!e.0.is_empty()));
            let _ = config.slack().map_err(|e| assert!(!e.0.is_empty()));
            let _ = config.notifications.expiry_warning().map_err(|e| assert!(!e.0.is_empty()));
            let url = config.public_url();
            assert!(url.starts_with("http://") || url.starts_with("https://"), "public URL {url:?}");
            let _ = config.node_id();
        }
        Err(e) => assert!(!e.0.is_empty(), "an empty configuration error"),
    }
});
