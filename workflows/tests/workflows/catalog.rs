//! Catalog: versions are immutable, the latest version competes, the most specific match wins.

use std::sync::Arc;

use tollgate_workflows::{BUNDLED, Catalog, CatalogError, IntegrationFacts, WorkflowKind};

use crate::{accept, grant_with};

/// A valid definition of `kind` with the given key, version and `applies_to` (flow mapping).
fn def(key: &str, version: u32, kind: &str, applies_to: &str) -> tollgate_workflows::WorkflowDefinition {
    let text = if kind == "grant" {
        grant_with("")
    } else {
        let parameters = if kind == "renew" { "parameters: {max_duration: 1h}\n" } else { "" };
        format!("key: t\nversion: 1\nkind: {kind}\n{parameters}steps:\n  - action: {{operation: {kind}}}\n")
    };
    accept(
        &text
            .replace("key: t", &format!("key: {key}\napplies_to: {applies_to}"))
            .replace("version: 1", &format!("version: {version}")),
    )
}

const GH_PROD: IntegrationFacts<'static> =
    IntegrationFacts { name: "gh-prod", app: "github", environment: "production" };

fn selected(catalog: &Catalog, kind: WorkflowKind, facts: &IntegrationFacts<'_>) -> Option<String> {
    catalog.select(kind, facts).map(|d| d.key.clone())
}

#[test]
fn the_most_specific_definition_wins() {
    let mut catalog = Catalog::new();
    let entries = [
        ("any", "{}"),
        ("any-star", "{integrations: ['*'], apps: ['*'], environments: ['*']}"),
        ("prod", "{environments: [production]}"),
        ("github", "{apps: [github]}"),
        ("github-prod", "{apps: [github], environments: [production, staging]}"),
        ("by-name", "{integrations: [gh-prod, other]}"),
        ("by-name-prod", "{integrations: [gh-prod], environments: [production]}"),
        ("by-name-app", "{integrations: [gh-prod], apps: [github, '*']}"),
    ];
    for (key, applies_to) in entries {
        catalog.insert(def(key, 1, "grant", applies_to)).expect("insert");
    }
    let pick =
        |name, app, environment| selected(&catalog, WorkflowKind::Grant, &IntegrationFacts { name, app, environment });
    // name + app (6) beats name + environment (5) beats name (4).
    assert_eq!(pick("gh-prod", "github", "production").as_deref(), Some("by-name-app"));
    assert_eq!(pick("gh-prod", "gitlab", "production").as_deref(), Some("by-name-prod"));
    assert_eq!(pick("gh-prod", "gitlab", "dev").as_deref(), Some("by-name"));
    // app + environment (3) beats app (2) beats environment (1).
    assert_eq!(pick("gh-2", "github", "staging").as_deref(), Some("github-prod"));
    assert_eq!(pick("gh-2", "github", "dev").as_deref(), Some("github"));
    assert_eq!(pick("sf", "salesforce", "production").as_deref(), Some("prod"));
    // `*` matches but scores nothing, so the two catch-alls tie and the smaller key wins.
    assert_eq!(pick("sf", "salesforce", "dev").as_deref(), Some("any"));
}

#[test]
fn selection_skips_other_kinds_and_non_matching_definitions() {
    let mut catalog = Catalog::new();
    catalog.insert(def("grant-github", 1, "grant", "{apps: [github]}")).expect("insert");
    catalog.insert(def("revoke-any", 1, "revoke", "{}")).expect("insert");
    assert_eq!(selected(&catalog, WorkflowKind::Revoke, &GH_PROD).as_deref(), Some("revoke-any"));
    assert_eq!(selected(&catalog, WorkflowKind::Renew, &GH_PROD), None);
    let slack = IntegrationFacts { name: "slack", app: "slack", environment: "production" };
    assert_eq!(selected(&catalog, WorkflowKind::Grant, &slack), None);
}

#[test]
fn only_the_latest_version_of_a_key_competes() {
    let mut catalog = Catalog::new();
    catalog.insert(def("a-specific", 1, "grant", "{apps: [github]}")).expect("insert");
    catalog.insert(def("a-specific", 2, "grant", "{apps: [gitlab]}")).expect("insert");
    catalog.insert(def("z-general", 1, "grant", "{}")).expect("insert");
    assert_eq!(selected(&catalog, WorkflowKind::Grant, &GH_PROD).as_deref(), Some("z-general"));
    // The pinned older version stays available to runs that started on it.
    let v1 = catalog.get("a-specific", 1).expect("v1");
    assert_eq!(v1.applies_to.apps, ["github"]);
    assert!(catalog.get("a-specific", 3).is_none());
    assert!(catalog.get("nope", 1).is_none());
}

#[test]
fn versions_are_immutable_and_insertion_is_idempotent() {
    let mut catalog = Catalog::new();
    let first = def("k", 1, "revoke", "{}");
    catalog.insert(first.clone()).expect("insert");
    catalog.insert(Arc::new(first.clone())).expect("identical insert is a no-op");
    assert_eq!(catalog.all().len(), 1);

    let mut changed = first;
    changed.description = "changed".to_owned();
    let e = catalog.insert(changed).expect_err("conflict");
    assert!(matches!(e, CatalogError::Conflict { ref key, version: 1 } if key == "k"), "{e}");
    assert!(e.to_string().contains("bump `version`"), "{e}");

    let e = catalog.insert(def("k", 2, "renew", "{}")).expect_err("kind change");
    assert!(
        matches!(
            e,
            CatalogError::KindChanged {
                version: 2,
                kind: WorkflowKind::Renew,
                other_version: 1,
                other_kind: WorkflowKind::Revoke,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn definitions_built_in_code_are_validated_on_insert() {
    let mut broken = def("k", 1, "grant", "{}");
    broken.parameters.max_duration = None;
    let e = Catalog::new().insert(broken).expect_err("invalid");
    match e {
        CatalogError::Invalid { key, version, path, message } => {
            assert_eq!((key.as_str(), version, path.as_str()), ("k", 1, "parameters.max_duration"));
            assert!(message.contains("grant without expiry"), "{message}");
        }
        other => panic!("unexpected {other}"),
    }

    let mut unbounded = def("r", 1, "renew", "{}");
    unbounded.parameters.max_duration = None;
    let e = Catalog::new().insert(unbounded).expect_err("invalid");
    assert!(matches!(e, CatalogError::Invalid { ref path, .. } if path == "parameters.max_duration"), "{e}");
    let mut control = def("d", 1, "revoke", "{}");
    control.description = "ok\u{7}".to_owned();
    let e = Catalog::new().insert(control).expect_err("invalid");
    assert!(matches!(e, CatalogError::Invalid { ref path, .. } if path == "description"), "{e}");
}

#[test]
fn listings_are_sorted_by_key_then_version() {
    let mut catalog = Catalog::new();
    for (key, version) in [("b", 2), ("a", 1), ("b", 1), ("c", 7), ("a", 3)] {
        catalog.insert(def(key, version, "revoke", "{}")).expect("insert");
    }
    let ids = |defs: Vec<Arc<tollgate_workflows::WorkflowDefinition>>| {
        defs.iter().map(|d| format!("{}@{}", d.key, d.version)).collect::<Vec<_>>()
    };
    assert_eq!(ids(catalog.latest()), ["a@3", "b@2", "c@7"]);
    assert_eq!(ids(catalog.all()), ["a@1", "a@3", "b@1", "b@2", "c@7"]);
}

#[test]
fn bundled_catalog_has_a_workflow_of_every_kind_for_any_integration() {
    let catalog = Catalog::from_sources(BUNDLED).expect("bundled definitions load");
    let facts = IntegrationFacts { name: "anything", app: "whatever", environment: "dev" };
    for (kind, key) in [
        (WorkflowKind::Grant, "standard-grant"),
        (WorkflowKind::Renew, "standard-renew"),
        (WorkflowKind::Rotate, "standard-rotate"),
        (WorkflowKind::Revoke, "standard-revoke"),
    ] {
        assert_eq!(selected(&catalog, kind, &facts).as_deref(), Some(key));
    }
}

#[test]
fn from_sources_reports_the_failing_source() {
    let e = Catalog::from_sources(&[("good.yaml", BUNDLED[0].1), ("bad.yaml", "key: k\n")]).expect_err("bad");
    assert!(matches!(e, CatalogError::Definition(ref d) if d.source == "bad.yaml"), "{e}");
    assert!(e.to_string().starts_with("bad.yaml:1:1: "), "{e}");
}
