//! The command line as a shell user meets it (issue 10): completion scripts for every shell, an
//! unreachable database named at once instead of "pool timed out" after half a minute, `tollgate
//! login` and its credentials file, lists that say when there are more rows, and `--json` on the
//! operator commands.

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_scripts_cover_every_command() -> anyhow::Result<()> {
    let t = common::start().await?;
    for (shell, marker) in [("bash", "_tollgate()"), ("zsh", "#compdef tollgate"), ("fish", "complete -c tollgate")] {
        let out = t.server.cli(&["completions", shell], &[]).await?;
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.stdout.contains(marker), "{shell}: {}", &out.stdout[..out.stdout.len().min(300)]);
        for command in ["token", "audit", "request", "approve", "completions", "grant", "task", "login", "logout"] {
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

fn json_of(out: &tollgate_tests::CliOutput) -> serde_json::Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_checks_the_token_and_stores_it_privately_for_the_client_commands() -> anyhow::Result<()> {
    let t = common::start().await?;
    let home = tempfile::tempdir()?;
    let file = home.path().join("nested").join("tollgate").join("credentials.toml");
    let creds = file.display().to_string();
    let url = t.server.url();
    let alice = t.server.token("alice").await?;
    let bob = t.server.token("bob").await?;
    let with_file = [("TOLLGATE_CREDENTIALS", creds.as_str())];

    // A token the server refuses writes nothing, not even the directory.
    let out = t.server.cli(&["login", "--url", &url, "--token", "tg_not-a-real-token"], &with_file).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("401 unauthenticated") && out.stderr.contains("nothing was written"), "{out:?}");
    assert!(!file.exists() && !file.parent().unwrap().exists(), "a refused login wrote {}", file.display());
    // So does a server that cannot be reached.
    let out = t.server.cli(&["login", "--url", "http://127.0.0.1:1", "--token", &alice], &with_file).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(!file.exists(), "{out:?}");

    // Without a stored token, a client command says how to get one.
    let out = t.server.cli(&["request", "list"], &with_file).await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("tollgate login") && out.stderr.contains("TOLLGATE_TOKEN"), "{out:?}");

    // A good token from standard input: checked, stored 0600 in a 0700 directory.
    let out = t.server.cli_stdin(&["login", "--url", &url, "--token-stdin"], &with_file, &format!("{alice}\n")).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), format!("logged in to {url} as alice (Alice Developer)"), "{out:?}");
    assert!(std::fs::read_to_string(&file)?.contains(&alice));
    #[cfg(unix)]
    {
        assert_eq!(mode(&file), 0o600, "credentials file mode");
        assert_eq!(mode(file.parent().unwrap()), 0o700, "credentials directory mode");
    }

    // Client commands need nothing else (no TOLLGATE_URL, no TOLLGATE_TOKEN).
    let out = t
        .server
        .cli(&["request", "create", "-i", "wiki-staging", "-s", "read", "-j", "from the file", "-q"], &with_file)
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    let view = t.server.client("admin").await?.request_view(&id).await?;
    assert_eq!(view["requester"], "alice", "{view}");
    let out = t.server.cli(&["request", "list", "-q"], &with_file).await?;
    assert_eq!((out.code, out.stdout.trim()), (0, id.as_str()), "{out:?}");

    // The environment comes before the file; the file's token goes only to the file's server.
    let out = t
        .server
        .cli(
            &["request", "create", "-i", "wiki-staging", "-s", "read", "-j", "as bob", "-q"],
            &[("TOLLGATE_CREDENTIALS", creds.as_str()), ("TOLLGATE_TOKEN", bob.as_str())],
        )
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let view = t.server.client("admin").await?.request_view(out.stdout.trim()).await?;
    assert_eq!(view["requester"], "bob", "{view}");
    let out = t
        .server
        .cli(&["request", "list"], &[("TOLLGATE_CREDENTIALS", creds.as_str()), ("TOLLGATE_URL", "http://127.0.0.1:1")])
        .await?;
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("no API token for http://127.0.0.1:1"), "{out:?}");
    assert!(!out.stderr.contains("cannot reach"), "the token was not sent elsewhere: {out:?}");
    let out = t.server.cli(&["request", "list", "-q", "--url", &format!("{url}/")], &with_file).await?;
    assert_eq!(out.code, 0, "the same server, written with a slash: {out:?}");

    // Logging in again replaces the file; logout removes it.
    let out = t
        .server
        .cli(
            &["login", "--url", &url, "--json"],
            &[("TOLLGATE_CREDENTIALS", creds.as_str()), ("TOLLGATE_TOKEN", bob.as_str())],
        )
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(json_of(&out)["principal"]["id"], "bob", "{out:?}");
    #[cfg(unix)]
    assert_eq!(mode(&file), 0o600);
    let out = t.server.cli(&["logout"], &with_file).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!file.exists(), "{out:?}");
    let out = t.server.cli(&["request", "list"], &with_file).await?;
    assert!(out.code != 0 && out.stderr.contains("no API token"), "{out:?}");
    let out = t.server.cli(&["logout", "--json"], &with_file).await?;
    assert_eq!((out.code, &json_of(&out)["removed"]), (0, &serde_json::json!(false)), "{out:?}");

    // Without TOLLGATE_CREDENTIALS: $XDG_CONFIG_HOME/tollgate/, else $HOME/.config/tollgate/.
    let xdg = home.path().join("xdg");
    let xdg_file = xdg.join("tollgate").join("credentials.toml");
    let xdg_str = xdg.display().to_string();
    let home_str = home.path().join("home").display().to_string();
    let out = t
        .server
        .cli(
            &["login", "--url", &url, "--token", &alice],
            &[("XDG_CONFIG_HOME", xdg_str.as_str()), ("HOME", home_str.as_str())],
        )
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(xdg_file.exists(), "{out:?}");
    let home_file = home.path().join("home").join(".config").join("tollgate").join("credentials.toml");
    let out = t
        .server
        .cli(&["login", "--url", &url, "--token", &alice], &[("XDG_CONFIG_HOME", ""), ("HOME", home_str.as_str())])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(home_file.exists(), "{out:?}");
    #[cfg(unix)]
    assert_eq!((mode(&xdg_file), mode(&home_file)), (0o600, 0o600));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_list_pages_and_says_when_there_are_more_rows() -> anyhow::Result<()> {
    let t = common::start().await?;
    let mut ids = Vec::new();
    for n in 0..3 {
        let out = t
            .server
            .cli_as(
                "alice",
                &["request", "create", "-i", "wiki-staging", "-s", "read", "-j", &format!("number {n}"), "-q"],
            )
            .await?;
        assert_eq!(out.code, 0, "{out:?}");
        ids.push(out.stdout.trim().to_owned());
    }
    ids.reverse();

    let out = t.server.cli_as("alice", &["request", "list", "--limit", "2"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 3, "header and two rows: {}", out.stdout);
    assert!(out.stderr.contains(&format!("more rows: --cursor {}", ids[1])), "{out:?}");
    let out = t.server.cli_as("alice", &["request", "list", "--limit", "2", "--json"]).await?;
    let page = json_of(&out);
    assert_eq!(page["next_cursor"], ids[1].as_str(), "{page}");
    let out = t.server.cli_as("alice", &["request", "list", "--limit", "2", "--cursor", &ids[1], "-q"]).await?;
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), [ids[2].as_str()], "{out:?}");
    assert!(!out.stderr.contains("more rows"), "{out:?}");
    let out = t.server.cli_as("alice", &["request", "list", "-q"]).await?;
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ids, "{out:?}");
    assert!(!out.stderr.contains("more rows"), "{out:?}");
    let out = t.server.cli_as("alice", &["request", "list", "--limit", "0"]).await?;
    assert!(out.code != 0 && out.stderr.contains("400 invalid_query"), "{out:?}");
    let out = t.server.cli_as("alice", &["request", "list", "-q", "--json"]).await?;
    assert_ne!(out.code, 0, "-q and --json exclude each other: {out:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_print_json_when_asked() -> anyhow::Result<()> {
    let t = common::start().await?;

    // workflows validate: every definition, or the error (exit status as without --json).
    let dir = t.server.workflows_dir();
    let out = t.server.cli(&["workflows", "validate", &dir.display().to_string(), "--json"], &[]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    let defs = json_of(&out);
    let grant = defs.as_array().unwrap().iter().find(|d| d["key"] == "test-grant").unwrap_or_else(|| panic!("{defs}"));
    assert_eq!((grant["version"].as_u64(), grant["kind"].as_str()), (Some(1), Some("grant")), "{grant}");
    assert!(grant["file"].as_str().unwrap().ends_with("test-grant.yaml"), "{grant}");
    let out = t.server.cli(&["workflows", "validate", &dir.display().to_string()], &[]).await?;
    assert!(
        out.stdout.contains("ok: ") && out.stdout.contains("definition(s) valid"),
        "human output unchanged: {out:?}"
    );
    let broken = tempfile::tempdir()?;
    let broken_file = broken.path().join("broken.yaml");
    std::fs::write(&broken_file, "key: broken\nversion: 1\nkind: grant\nsteps: nope\n")?;
    let out = t.server.cli(&["workflows", "validate", &broken_file.display().to_string(), "--json"], &[]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    let error = json_of(&out);
    assert!(error["error"]["detail"].as_str().is_some_and(|d| !d.is_empty()), "{error}");
    assert_eq!(error["error"]["file"], broken_file.display().to_string().as_str(), "{error}");

    // migrate.
    let config = t.server.config_path().display().to_string();
    let out = t.server.cli(&["migrate", "--config", &config, "--json"], &[]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    let migrated = json_of(&out);
    assert_eq!(migrated["migrations"], "applied", "{migrated}");
    assert!(migrated["database"].as_str().is_some_and(|d| !d.is_empty()), "{migrated}");

    // ready: up, and not.
    let out = t.server.cli(&["ready", "--url", &t.server.url(), "--json"], &[]).await?;
    let ready = json_of(&out);
    assert_eq!((out.code, &ready["ready"], &ready["status"]), (0, &serde_json::json!(true), &serde_json::json!(200)));
    let out = t.server.cli(&["ready", "--url", "http://127.0.0.1:1", "--json"], &[]).await?;
    let ready = json_of(&out);
    assert_eq!((out.code, &ready["ready"]), (1, &serde_json::json!(false)), "{out:?}");
    assert!(ready["detail"].as_str().is_some_and(|d| d.contains("cannot reach")), "{ready}");

    // email preview.
    let out = t.server.cli(&["email", "preview", "list", "--json"], &[]).await?;
    let names = json_of(&out);
    assert!(names.as_array().unwrap().iter().any(|n| n == "approval_requested"), "{names}");
    let out = t.server.cli(&["email", "preview", "approval_requested", "--json"], &[]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    let email = json_of(&out);
    assert_eq!(email["template"], "approval_requested");
    for part in ["subject", "text", "html"] {
        assert!(email[part].as_str().is_some_and(|p| !p.is_empty()), "{part}: {email}");
    }
    assert!(email["html"].as_str().unwrap().contains('<'), "{email}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_show_says_who_may_still_decide_as_the_server_does() -> anyhow::Result<()> {
    let t = common::start().await?;
    // crm-prod needs two approvals from the owner (bob) or security (carol, dave).
    let out = t
        .server
        .cli_as("alice", &["request", "create", "-i", "crm-prod", "-s", "read", "-j", "quarterly numbers", "-q"])
        .await?;
    assert_eq!(out.code, 0, "{out:?}");
    let id = out.stdout.trim().to_owned();
    let out = t.server.cli_as("bob", &["approve", &id]).await?;
    assert_eq!(out.code, 0, "{out:?}");

    let view = json_of(&t.server.cli_as("alice", &["request", "show", &id, "--json"]).await?);
    let out = t.server.cli_as("alice", &["request", "show", &id]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    let waiting: Vec<&str> = out.stdout.lines().filter(|l| l.starts_with("waiting for")).collect();
    // What the server says about the current step (servers before `eligible` say nothing).
    let current = view["steps"].as_array().and_then(|steps| steps.iter().find(|s| s["state"] == "current"));
    match current.and_then(|s| s["eligible"].as_array().map(|e| (e, &s["remaining"]))) {
        Some((eligible, remaining)) => {
            let names: Vec<&str> = eligible.iter().filter_map(serde_json::Value::as_str).collect();
            assert!(!names.contains(&"bob") && names.contains(&"carol"), "bob has decided: {view}");
            assert_eq!(remaining, &serde_json::json!(1), "{view}");
            assert_eq!(
                waiting,
                [format!("waiting for  1 more approval(s) from: {}", names.join(", "))],
                "{}",
                out.stdout
            );
        }
        None => assert_eq!(waiting, Vec::<&str>::new(), "{}", out.stdout),
    }
    Ok(())
}
