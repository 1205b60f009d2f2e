//! Who sees the directory (issue 10): admins and auditors see every principal's details; anyone
//! else sees who each principal is (id, kind, name) and their own details only.

use serde_json::Value;

use crate::common;

fn entry<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["items"].as_array().unwrap().iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("no {id} in {page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_and_auditors_see_other_principals_details() -> anyhow::Result<()> {
    let t = common::start().await?;
    let details = ["email", "slack_user_id", "roles", "owner", "groups", "disabled"];
    for reader in ["admin", "audrey"] {
        let (st, page) = t.server.client(reader).await?.get("/v1/principals").await?;
        assert_eq!(st, 200, "{page}");
        let bob = entry(&page, "bob");
        assert_eq!((bob["email"].as_str(), bob["slack_user_id"].as_str()), (Some("bob@example.com"), Some("U0BOB")));
        assert_eq!(entry(&page, "carol")["groups"], serde_json::json!(["security"]));
        assert!(entry(&page, "alice")["slack_user_id"].is_null(), "present, and null: {page}");
    }
    for caller in ["alice", "ci-bot"] {
        let (st, page) = t.server.client(caller).await?.get("/v1/principals").await?;
        assert_eq!(st, 200, "{page}");
        for p in page["items"].as_array().unwrap() {
            let own = p["id"] == caller;
            assert!(p["name"].is_string() && p["kind"].is_string(), "{p}");
            for key in details {
                assert_eq!(p.get(key).is_some(), own, "{caller} sees {key} of {}: {p}", p["id"]);
            }
        }
        assert!(!page.to_string().contains("bob@example.com"), "{page}");
        let (_, me) = t.server.client(caller).await?.get("/v1/me").await?;
        assert!(details.iter().all(|k| me.get(*k).is_some()), "{me}");
    }
    Ok(())
}
