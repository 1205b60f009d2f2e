//! `tollgate reload`: the client command for `POST /v1/admin/reload` — admins apply the
//! directory and workflow changes in the server's files now and see what changed; anyone else,
//! and a bad change, get the server's error and exit 1.

use serde_json::{Value, json};
use tollgate_tests::Server;

use crate::common;

const FRANK: &str = "\n[principals.frank]\nname = \"Frank\"\nemail = \"frank@example.com\"\n";

/// A group naming a principal nobody defined: a change the server must refuse.
const GHOSTS: &str = "\n[groups.ghosts]\nmembers = [\"ghost\"]\n";

async fn principal_ids(server: &Server) -> anyhow::Result<Vec<String>> {
    let (st, body) = server.client("admin").await?.get("/v1/principals").await?;
    assert_eq!(st, 200, "{body}");
    Ok(body["items"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(str::to_owned)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_the_files_changes_for_admins_and_says_what_changed() -> anyhow::Result<()> {
    let mut t = common::start().await?;
    // Tokens first: `tollgate token create` opens the database with the configuration files, and
    // would store the directory changes itself.
    for who in ["alice", "admin"] {
        t.server.token(who).await?;
    }
    t.server.reconfigure(|o| o.extra_config.push_str(FRANK))?;

    // Not an admin: the server's refusal, exit 1, and nothing applied.
    let out = t.server.cli_as("alice", &["reload", "--json"]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("403 forbidden") && out.stderr.contains("only admins"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(!principal_ids(&t.server).await?.contains(&"frank".to_owned()), "nothing was applied");

    // An admin: applied at once, the change reported.
    let out = t.server.cli_as("admin", &["reload", "--json"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    let applied: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(
        applied,
        json!({ "workflows": [], "changes": [{ "kind": "principal", "name": "frank", "change": "added" }] }),
        "{out:?}"
    );
    assert!(principal_ids(&t.server).await?.contains(&"frank".to_owned()));

    // Without --json: a summary, then one line per change.
    t.server.reconfigure(|o| o.extra_config = o.extra_config.replace(FRANK, ""))?;
    let out = t.server.cli_as("admin", &["reload"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["reloaded: 0 workflow version(s), 1 directory change(s)", "removed   principal frank"],
        "{out:?}"
    );
    assert!(!principal_ids(&t.server).await?.contains(&"frank".to_owned()));

    // A bad change: the server's error listing the problem, exit 1, the running directory kept.
    t.server.reconfigure(|o| {
        o.extra_config.push_str(FRANK);
        o.extra_config.push_str(GHOSTS);
    })?;
    let out = t.server.cli_as("admin", &["reload"]).await?;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("422 invalid_config") && out.stderr.contains(r#"unknown principal "ghost""#),
        "{out:?}"
    );
    assert!(!principal_ids(&t.server).await?.contains(&"frank".to_owned()), "nothing of a refused change applies");
    Ok(())
}
