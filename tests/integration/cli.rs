//! The command line as a shell user meets it (issue 10): completion scripts for every shell, and
//! an unreachable database named at once instead of "pool timed out" after half a minute.

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_scripts_cover_every_command() -> anyhow::Result<()> {
    let t = common::start().await?;
    for (shell, marker) in [("bash", "_tollgate()"), ("zsh", "#compdef tollgate"), ("fish", "complete -c tollgate")] {
        let out = t.server.cli(&["completions", shell], &[]).await?;
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}: {}", &out.stdout[..out.stdout.len().min(300)]);
        for command in ["token", "audit", "request", "approve", "completions"] {
            assert!(out.stdout.contains(command), "{shell} completes {command}");
        }
    }
    let out = t.server.cli(&["completions", "tcsh"], &[]).await?;
    assert_ne!(out.code, 0, "an unknown shell is refused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_named_at_once() -> anyhow::Result<()> {
    let t = common::start().await?;
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let url = "postgres://postgres@127.0.0.1:1/test";
    let config = t.server.config_path().display().to_string();
    let out = t.server.cli(&["token", "list", "--config", &config], &[("TOLLGATE_DATABASE__URL", url)]).await?;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("cannot reach PostgreSQL at 127.0.0.1:1"), "{}", out.stderr);
    assert_eq!(out.stderr.matches("cannot reach").count(), 1, "said once: {}", out.stderr);
    assert!(!out.stderr.contains("pool timed out"), "{}", out.stderr);
    Ok(())
}
