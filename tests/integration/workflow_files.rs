//! Workflow files as `tollgate workflows validate` and server start-up read them (issue 18): only
//! regular files, never more than 256 KiB read whatever size the file system reports, a FIFO
//! refused rather than waited on, a byte-order mark accepted.
//!
//! A regression here would read `/dev/zero` until memory runs out, so every process runs under a
//! memory cap (`ulimit -v`) and every CLI call under a time limit: a broken build fails these
//! tests instead of hanging them or starving the machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tollgate_tests::{Receiver, Server, TestDb};

use crate::common;

/// Address space each `tollgate` process may use, in KiB: plenty for the server, far below what
/// reading an endless file would take.
const MEMORY_CAP_KIB: u64 = 1024 * 1024;

/// The longest a CLI call may take before the test calls it hung.
const HANG: Duration = Duration::from_secs(30);

/// A valid workflow.
const REVOKE: &str = "key: files-revoke
version: 1
kind: revoke
description: Give access up early.
parameters:
  require_justification: false
steps:
  - action:
      operation: revoke
";

/// A renew workflow that names no `max_duration`: the `parameters` mapping is on line 5.
const UNBOUNDED_RENEW: &str = "key: files-renew
version: 1
kind: renew
description: Extend a grant.
parameters:
  default_duration: 1h
steps:
  - approval:
      approvers: {owner: true}
      timeout: 1h
  - action:
      operation: renew
";

/// Writes a shell script in `dir` that runs the test's `tollgate` binary under the memory cap.
fn capped_bin(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("tollgate-capped");
    let script = format!(
        "#!/bin/sh\nulimit -v {MEMORY_CAP_KIB} || exit 99\nexec '{}' \"$@\"\n",
        env!("CARGO_BIN_EXE_tollgate-server")
    );
    std::fs::write(&path, script)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Output of `tollgate workflows validate <paths>`.
#[derive(Debug)]
struct Validated {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `tollgate workflows validate <paths>` under the memory cap; fails if it takes longer than
/// [`HANG`] (and kills it).
async fn validate(paths: &[&Path]) -> anyhow::Result<Validated> {
    let scratch = tempfile::tempdir()?;
    let mut cmd = tokio::process::Command::new(capped_bin(scratch.path())?);
    cmd.args(["workflows", "validate"]).args(paths).env("NO_COLOR", "1").stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(HANG, cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("`workflows validate {paths:?}` still running after {HANG:?}: it hangs"))??;
    Ok(Validated {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn mkfifo(path: &Path) -> anyhow::Result<()> {
    let status = std::process::Command::new("mkfifo").arg(path).status()?;
    anyhow::ensure!(status.success(), "mkfifo {} failed: {status}", path.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_dev_zero_without_reading_it() -> anyhow::Result<()> {
    let out = validate(&[Path::new("/dev/zero")]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "error: /dev/zero: not a regular file (a character device); a workflow definition must be a regular file"
        ),
        "{out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_a_yaml_symlink_to_dev_zero_in_a_directory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("a-revoke.yaml"), REVOKE)?;
    let link = dir.path().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link)?;
    let out = validate(&[dir.path()]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains(&format!("{}: not a regular file (a character device)", link.display())), "{out:?}");

    // A symlink to a regular file is read through.
    std::fs::remove_file(&link)?;
    let target = dir.path().join("elsewhere.txt");
    std::fs::write(&target, REVOKE.replace("files-revoke", "files-revoke-2"))?;
    std::os::unix::fs::symlink(&target, dir.path().join("linked.yaml"))?;
    let out = validate(&[dir.path()]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("2 definition(s) valid"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_a_fifo_instead_of_waiting_for_a_writer() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("a.yaml");
    mkfifo(&fifo)?;
    for path in [fifo.as_path(), dir.path()] {
        let out = validate(&[path]).await?;
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains(&format!("{}: not a regular file (a FIFO)", fifo.display())), "{out:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_enforces_the_size_limit_on_what_it_reads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, format!("{REVOKE}# {}\n", "x".repeat(256 * 1024)))?;
    let out = validate(&[&big]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!("{}: the file is larger than the limit of 262144 bytes (256 KiB)", big.display())),
        "{out:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_accepts_a_byte_order_mark_and_crlf_line_ends() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bom = dir.path().join("bom.yaml");
    std::fs::write(&bom, format!("\u{feff}{REVOKE}"))?;
    let crlf = dir.path().join("crlf.yaml");
    std::fs::write(&crlf, format!("\u{feff}{}", REVOKE.replace("files-revoke", "files-crlf").replace('\n', "\r\n")))?;
    let out = validate(&[&bom, &crlf]).await?;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("(files-revoke v1, revoke)"), "{out:?}");
    assert!(out.stdout.contains("(files-crlf v1, revoke)"), "{out:?}");

    // Errors in such a file point where an editor shows them.
    std::fs::write(&bom, format!("\u{feff}{}", REVOKE.replace("version: 1", "version: one")))?;
    let out = validate(&[&bom]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("bom.yaml:2:10: version: invalid type"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_names_control_characters_and_unbounded_renewals() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let control = dir.path().join("control.yaml");
    std::fs::write(&control, REVOKE.replace("Give access up early.", "\"Give access up\\0 early.\""))?;
    let out = validate(&[&control]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("control.yaml:4:1: description: control character U+0000"), "{out:?}");

    let raw = dir.path().join("raw.yaml");
    std::fs::write(&raw, REVOKE.replace("Give access up early.", "Give access up\u{1b}[2J early."))?;
    let out = validate(&[&raw]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("raw.yaml:4:28: description: the control character U+001B"), "{out:?}");
    assert!(!out.stderr.contains('\u{1b}'), "{out:?}");

    let renew = dir.path().join("renew.yaml");
    std::fs::write(&renew, UNBOUNDED_RENEW)?;
    let out = validate(&[&renew]).await?;
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("renew.yaml:5:1: parameters.max_duration: renew without a limit"), "{out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refuses_to_start_on_a_fifo_or_a_device_instead_of_hanging() -> anyhow::Result<()> {
    tollgate_tests::install_crypto_provider();
    let receiver = Receiver::start().await?;
    let scratch = tempfile::tempdir()?;
    let options = common::options(&receiver).bin(capped_bin(scratch.path())?);
    let mut server = Server::configure(TestDb::new().await?, options)?;

    let fifo = server.workflows_dir().join("a.yaml");
    mkfifo(&fifo)?;
    let err = server.restart().await.expect_err("the server must refuse to start").to_string();
    assert!(err.contains(&format!("{}: not a regular file (a FIFO)", fifo.display())), "{err}");
    assert!(!server.is_running());

    std::fs::remove_file(&fifo)?;
    let link = server.workflows_dir().join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &link)?;
    let err = server.restart().await.expect_err("the server must refuse to start").to_string();
    assert!(err.contains(&format!("{}: not a regular file (a character device)", link.display())), "{err}");
    assert!(!server.is_running());

    // With the link gone (and a byte-order mark on a workflow) it starts.
    std::fs::remove_file(&link)?;
    let grant = server.workflows_dir().join("test-grant.yaml");
    std::fs::write(&grant, format!("\u{feff}{}", std::fs::read_to_string(&grant)?))?;
    server.restart().await?;
    let (status, body) = server.client("alice").await?.get("/v1/workflows").await?;
    assert_eq!(status, 200, "{body}");
    assert!(body["items"].as_array().is_some_and(|w| w.iter().any(|w| w["key"] == "test-grant")), "{body}");
    Ok(())
}
