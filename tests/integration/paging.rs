//! Paging never promises rows that are not there: every listing gives `next_cursor` only when
//! another row follows, so a page exactly full with nothing after it ends the listing (the CLI
//! then prints no "more rows" hint leading to an empty page).

use serde_json::{Value, json};
use tollgate_tests::ApiClient;

use crate::common::{self, PATIENCE, id_of};

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().into_iter().flatten().map(|i| i["id"].to_string().trim_matches('"').to_owned()).collect()
}

async fn page(client: &ApiClient, path: &str) -> anyhow::Result<Value> {
    let (st, body) = client.get(path).await?;
    anyhow::ensure!(st == 200, "GET {path}: {st} {body}");
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_exactly_full_with_nothing_after_has_no_next_cursor() -> anyhow::Result<()> {
    let t = common::start().await?;
    let (alice, bob, erin, admin, audrey) = (
        t.server.client("alice").await?,
        t.server.client("bob").await?,
        t.server.client("erin").await?,
        t.server.client("admin").await?,
        t.server.client("audrey").await?,
    );
    // Two requests by alice, approved by bob (each makes a grant); one by erin.
    let ask = json!({ "integration": "wiki-staging", "scopes": ["read"], "duration": "1h", "justification": "paging" });
    let mut mine = Vec::new();
    for _ in 0..2 {
        let id = id_of(&alice.create_request(&ask).await?);
        let (st, body) = bob.decide(&id, "approve").await?;
        assert_eq!(st, 200, "{body}");
        alice.wait_status(&id, "active", PATIENCE).await?;
        mine.push(id);
    }
    mine.reverse();
    let erins = id_of(&erin.create_request(&ask).await?);

    // Requests, for a caller who sees only some (alice: her own two) and for an admin (all three).
    let full = page(&alice, "/v1/requests?limit=2").await?;
    assert_eq!((ids(&full), &full["next_cursor"]), (mine.clone(), &Value::Null), "{full}");
    let first = page(&alice, "/v1/requests?limit=1").await?;
    assert_eq!((ids(&first), first["next_cursor"].as_str()), (vec![mine[0].clone()], Some(mine[0].as_str())));
    let rest = page(&alice, &format!("/v1/requests?limit=1&cursor={}", mine[0])).await?;
    assert_eq!((ids(&rest), &rest["next_cursor"]), (vec![mine[1].clone()], &Value::Null), "{rest}");
    let all = page(&admin, "/v1/requests?limit=3").await?;
    assert_eq!((ids(&all).len(), &all["next_cursor"]), (3, &Value::Null), "{all}");
    assert_eq!(ids(&all)[0], erins);
    let two = page(&admin, "/v1/requests?limit=2").await?;
    assert_eq!(two["next_cursor"].as_str(), Some(mine[0].as_str()), "{two}");

    // Grants: alice's two.
    let grants = page(&alice, "/v1/grants?limit=2").await?;
    assert_eq!((ids(&grants).len(), &grants["next_cursor"]), (2, &Value::Null), "{grants}");
    let first = page(&alice, "/v1/grants?limit=1").await?;
    let cursor = first["next_cursor"].as_str().unwrap_or_else(|| panic!("a second grant follows: {first}"));
    assert_eq!(cursor, ids(&first)[0]);
    let rest = page(&alice, &format!("/v1/grants?limit=1&cursor={cursor}")).await?;
    assert_eq!((ids(&rest).len(), &rest["next_cursor"]), (1, &Value::Null), "{rest}");
    let all = page(&admin, "/v1/grants?limit=2").await?;
    assert_eq!((ids(&all).len(), &all["next_cursor"]), (2, &Value::Null), "{all}");

    // Tokens: alice has one.
    let tokens = page(&alice, "/v1/tokens?limit=1").await?;
    assert_eq!((ids(&tokens).len(), &tokens["next_cursor"]), (1, &Value::Null), "{tokens}");

    // The audit log of one request, once nothing more is to happen to it.
    t.server.wait_quiet(PATIENCE).await?;
    let records = audrey.audit(Some(&mine[0])).await?;
    assert!(records.len() > 1, "{records:#?}");
    let path = format!("/v1/audit?request={}&limit={}", mine[0], records.len());
    let whole = page(&audrey, &path).await?;
    assert_eq!((whole["items"].as_array().map(Vec::len), &whole["next_cursor"]), (Some(records.len()), &Value::Null));
    let path = format!("/v1/audit?request={}&limit={}", mine[0], records.len() - 1);
    let short = page(&audrey, &path).await?;
    assert_eq!(short["next_cursor"], records[records.len() - 2]["seq"].to_string().as_str(), "{short}");

    // The CLI says "more rows" only when there are.
    let out = t.server.cli_as("alice", &["request", "list", "--limit", "2"]).await?;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(!out.stderr.contains("more rows"), "{out:?}");
    let out = t.server.cli_as("alice", &["grant", "list", "--limit", "2", "-q"]).await?;
    assert_eq!((out.code, out.stdout.lines().count()), (0, 2), "{out:?}");
    assert!(!out.stderr.contains("more rows"), "{out:?}");
    Ok(())
}
