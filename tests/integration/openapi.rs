//! The served OpenAPI document is the committed `api/openapi.json` and describes every route.

use serde_json::Value;

use crate::common;

const COMMITTED: &str = include_str!("../../api/openapi.json");

/// Every route of the contract, with its methods.
const CONTRACT: &[(&str, &[&str])] = &[
    ("/v1/requests", &["get", "post"]),
    ("/v1/requests/{id}", &["get"]),
    ("/v1/requests/{id}/decisions", &["post"]),
    ("/v1/requests/{id}/cancel", &["post"]),
    ("/v1/grants", &["get"]),
    ("/v1/grants/{id}", &["get"]),
    ("/v1/grants/{id}/revoke", &["post"]),
    ("/v1/grants/{id}/secret", &["post"]),
    ("/v1/integrations", &["get"]),
    ("/v1/integrations/{id}", &["get"]),
    ("/v1/workflows", &["get"]),
    ("/v1/principals", &["get"]),
    ("/v1/me", &["get"]),
    ("/v1/audit", &["get"]),
    ("/v1/audit/verify", &["get"]),
    ("/v1/tasks", &["get"]),
    ("/v1/tasks/{id}/complete", &["post"]),
    ("/v1/tokens", &["get", "post"]),
    ("/v1/tokens/{id}/revoke", &["post"]),
    ("/v1/admin/reload", &["post"]),
    ("/v1/credentials", &["get", "post"]),
    ("/v1/credentials/import", &["post"]),
    ("/v1/credentials/{name}", &["get"]),
    ("/healthz", &["get"]),
    ("/readyz", &["get"]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_openapi_matches_the_committed_document_and_covers_every_route() -> anyhow::Result<()> {
    let t = common::start().await?;
    let reply =
        t.server.anonymous()?.send(t.server.anonymous()?.request(reqwest::Method::GET, "/openapi.json")).await?;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let committed: Value = serde_json::from_str(COMMITTED)?;
    assert!(
        reply.body == committed,
        "GET /openapi.json differs from api/openapi.json; regenerate it with `tollgate openapi > api/openapi.json`"
    );
    let printed = t.server.cli(&["openapi"], &[]).await?;
    assert_eq!(printed.code, 0, "{printed:?}");
    assert_eq!(
        serde_json::from_str::<Value>(&printed.stdout)?,
        committed,
        "`tollgate openapi` prints the same document"
    );

    let paths = committed["paths"].as_object().expect("paths");
    for (path, methods) in CONTRACT {
        let item = paths.get(*path).unwrap_or_else(|| panic!("{path} missing from the OpenAPI document"));
        for m in *methods {
            let op = &item[*m];
            assert!(op.is_object(), "{m} {path} missing");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{m} {path} documents no response");
        }
    }
    assert_eq!(paths.len(), CONTRACT.len(), "undocumented or unknown paths: {:?}", paths.keys().collect::<Vec<_>>());
    // Audit records appear only in pages (`Page_AuditRecordOut` inlines them).
    for schema in ["ErrorBody", "RequestIn", "RequestOut", "DecisionIn", "GrantOut", "Page_AuditRecordOut", "VerifyOut"]
    {
        assert!(committed["components"]["schemas"][schema].is_object(), "schema {schema} missing");
    }
    assert!(committed["components"]["securitySchemes"]["bearer"].is_object());

    // Documented routes are served (no 404 from the fallback for any of them).
    let alice = t.server.client("alice").await?;
    for (path, methods) in CONTRACT {
        if methods.contains(&"get") && !path.contains('{') {
            let (status, body) = alice.get(path).await?;
            assert_ne!(status, 404, "GET {path}: {body}");
        }
    }
    Ok(())
}
