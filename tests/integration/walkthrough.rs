//! The README's walkthrough stays true: its shell blocks are read from README.md and run, line
//! by line, with `sh` against a server started from `deploy/tollgate.toml` itself, the way the
//! README tells a reader to (the configuration's own SQLite file in the working directory, or the
//! test's PostgreSQL database). A full-line comment under a command is the output it must print
//! (`…` standing for anything); a trailing `# error: …` is a refusal it must end in.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tollgate_tests::{Backend, TestDb};

use crate::common::PATIENCE;

/// The URL the README uses; the test's server listens elsewhere.
const README_URL: &str = "http://127.0.0.1:8080";

/// One command of the walkthrough and what it must print.
#[derive(Debug)]
struct Line {
    command: String,
    /// Lines its standard output must hold (`…`: anything).
    expect: Vec<String>,
    /// A refusal: it must exit non-zero, saying this.
    error: Option<String>,
}

/// The commands of the README section `## Walkthrough…`, in order.
fn walkthrough(readme: &str) -> Vec<Line> {
    let start = readme.find("## Walkthrough").expect("README has a walkthrough");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut lines: Vec<Line> = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for raw in section.lines() {
        if raw.trim_start().starts_with("```") {
            in_sh = !in_sh && raw.trim() == "```sh";
            continue;
        }
        if !in_sh || raw.trim().is_empty() || raw.starts_with("alias ") {
            continue;
        }
        if let Some(expected) = raw.strip_prefix("# ") {
            lines.last_mut().expect("an expected output follows a command").expect.push(expected.to_owned());
            continue;
        }
        if let Some(head) = raw.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        let full = format!("{pending}{raw}");
        pending.clear();
        let (command, comment) = match full.find(" # ") {
            Some(i) => (full[..i].trim_end().to_owned(), Some(full[i + 3..].trim().to_owned())),
            None => (full.trim_end().to_owned(), None),
        };
        let error = comment.and_then(|c| c.strip_prefix("error: ").map(str::to_owned));
        lines.push(Line { command, expect: Vec::new(), error });
    }
    lines
}

/// Whether `line` shows `pattern`: its `…`-separated parts, in order.
fn shows(line: &str, pattern: &str) -> bool {
    let mut rest = line;
    for part in pattern.split('…').map(str::trim).filter(|p| !p.is_empty()) {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The server, started from the README's configuration; killed on drop (its log printed if the
/// test failed).
struct ReadmeServer {
    child: std::process::Child,
    log: PathBuf,
}

impl Drop for ReadmeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- server log -----\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

struct Shell {
    dir: PathBuf,
    env: Vec<(String, String)>,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Shell {
    async fn run(&self, command: &str) -> anyhow::Result<Run> {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .current_dir(&self.dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.context("sh hung")??;
        Ok(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn set(&mut self, name: &str, value: &str) {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_owned(), value.to_owned()));
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Whether running `command` again changes nothing (it only reads).
fn reads_only(command: &str) -> bool {
    !["create", "approve", "deny", "complete", "revoke", "login", "logout", "cancel"]
        .iter()
        .any(|w| command.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written() -> anyhow::Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(repo.join("README.md"))?;
    let lines = walkthrough(&readme);
    let commands: Vec<&str> = lines.iter().map(|l| l.command.as_str()).collect();
    for must in [
        "tollgate login",
        "tollgate request create",
        "tollgate approve",
        "tollgate task complete",
        "tollgate grant revoke",
        "tollgate audit verify",
    ] {
        assert!(commands.iter().any(|c| c.contains(must)), "the walkthrough no longer uses `{must}`: {commands:#?}");
    }

    // The working directory of the README: deploy/tollgate.toml, and `tollgate` on the PATH.
    let work = tempfile::Builder::new().prefix("tollgate-walkthrough-").tempdir()?;
    std::fs::create_dir_all(work.path().join("deploy"))?;
    std::fs::copy(repo.join("deploy/tollgate.toml"), work.path().join("deploy/tollgate.toml"))?;
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin)?;
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tollgate-server"), bin.join("tollgate"))?;
    let home = work.path().join("home");
    std::fs::create_dir_all(&home)?;
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut base_env = vec![("PATH".to_owned(), path), ("HOME".to_owned(), home.display().to_string())];
    // On PostgreSQL the configuration's SQLite file gives way to the test's database, as an
    // operator would override it.
    let db = TestDb::new().await?;
    if db.backend() == Backend::Postgres {
        base_env.push(("TOLLGATE_DATABASE__URL".to_owned(), db.url().to_owned()));
    }

    let addr = format!("127.0.0.1:{}", free_port()?);
    let url = format!("http://{addr}");
    let log = work.path().join("server.log");
    let log_file = std::fs::File::create(&log)?;
    let child = std::process::Command::new(bin.join("tollgate"))
        .args(["serve", "--config", "deploy/tollgate.toml"])
        .current_dir(work.path())
        .env_clear()
        .envs(base_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("TOLLGATE_LISTEN", &addr)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()?;
    let _server = ReadmeServer { child, log };
    let http = tollgate_engine::http::client(Duration::from_secs(2))?;
    tollgate_tests::eventually("the README's server ready", Duration::from_secs(60), || async {
        Ok(match http.get(format!("{url}/readyz")).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        })
    })
    .await?;

    let mut sh = Shell { dir: work.path().to_owned(), env: base_env };
    for line in &lines {
        let command = line.command.replace(README_URL, &url);
        let expect: Vec<String> = line.expect.iter().map(|e| e.replace(README_URL, &url)).collect();
        // `export A=… B=…`
        if let Some(assignments) = command.strip_prefix("export ") {
            for a in assignments.split_whitespace() {
                let (k, v) = a.split_once('=').with_context(|| format!("not an assignment: {a}"))?;
                sh.set(k, v);
            }
            continue;
        }
        // `NAME=$(command)`
        let capture = command.split_once("=$(").filter(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase()));
        let (name, run) = match capture {
            Some((name, inner)) => (
                Some(name),
                inner.strip_suffix(')').with_context(|| format!("no closing parenthesis: {command}"))?.to_owned(),
            ),
            None => (None, command.clone()),
        };
        let retry = reads_only(&run);
        // What the engine does after a command happens on its own: a read is retried until it
        // shows what the README says (or, for a capture, anything at all).
        let out = tollgate_tests::eventually(&format!("`{command}` as the README shows"), PATIENCE, || async {
            let out = sh.run(&run).await?;
            let done = if let Some(error) = &line.error {
                out.code != 0 && out.stderr.contains(error.as_str())
            } else {
                out.code == 0
                    && (name.is_none() || !out.stdout.trim().is_empty())
                    && expect.iter().all(|e| out.stdout.lines().any(|l| shows(l, e)))
            };
            if done || !retry {
                return Ok(Ok(out));
            }
            Ok(Err(format!("exit {}\n{}\n{}", out.code, out.stdout, out.stderr)))
        })
        .await?;
        let shown = format!("`{command}` exited {}\nstdout:\n{}\nstderr:\n{}", out.code, out.stdout, out.stderr);
        match &line.error {
            Some(error) => assert!(out.code != 0 && out.stderr.contains(error.as_str()), "expected `{error}`: {shown}"),
            None => {
                assert_eq!(out.code, 0, "{shown}");
                for e in &expect {
                    assert!(out.stdout.lines().any(|l| shows(l, e)), "expected a line `{e}`: {shown}");
                }
            }
        }
        if let Some(name) = name {
            let value = out.stdout.trim();
            assert!(!value.is_empty() && !value.contains('\n'), "{name} is one value: {shown}");
            sh.set(name, value);
        }
    }

    // What the walkthrough says besides the commands.
    let credentials = home.join(".config/tollgate/credentials.toml");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&credentials)?.permissions().mode() & 0o777, 0o600, "{}", credentials.display());
    let csv = std::fs::read_to_string(work.path().join("audit.csv"))?;
    for event in ["request_created", "approval_recorded", "token_created"] {
        assert!(csv.contains(event), "audit.csv lacks {event}");
    }
    Ok(())
}

#[test]
fn the_walkthrough_reader_finds_commands_outputs_and_refusals() {
    let readme = "# T\n## Walkthrough: x\n\n```sh\nalias tollgate='cargo run'\nA=$(tollgate token create \\\n  --principal alice)\ntollgate approve $ID    # error: 403 self_approval\n# status      active\n```\n\n```\nnot sh\n```\n## API\n```sh\nnot this\n```\n";
    let lines = walkthrough(readme);
    let got: Vec<(&str, Vec<String>, Option<&str>)> =
        lines.iter().map(|l| (l.command.as_str(), l.expect.clone(), l.error.as_deref())).collect();
    assert_eq!(
        got,
        [
            ("A=$(tollgate token create   --principal alice)", vec![], None),
            ("tollgate approve $ID", vec!["status      active".to_owned()], Some("403 self_approval")),
        ]
    );
    assert!(shows("grant       abc active until 2026-01-01", "grant       … active until …"));
    assert!(!shows("grant       abc revoked", "grant       … active until …"));
    assert!(shows("status      active", "status      active"));
    assert!(!shows("status      revoking", "status      revoked"));
}
