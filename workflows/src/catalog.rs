//! The known workflow definitions by key and version, and the rule that picks one for a request.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{AppliesTo, WorkflowDefinition, WorkflowKind};
use crate::parse::{DefinitionError, parse_definition};
use crate::validate;

/// Why a definition could not join a [`Catalog`].
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The text did not parse or validate.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// A definition built in code broke a workflow rule.
    #[error("workflow {key} v{version}: {path}: {message}")]
    Invalid {
        /// The definition's key.
        key: String,
        /// The definition's version.
        version: u32,
        /// Field path of the first broken rule.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The same key and version is already known with different content. Versions are
    /// immutable because runs pin them: change behaviour by bumping `version`.
    #[error("workflow {key} v{version} is already defined with different content; bump `version` to change it")]
    Conflict {
        /// The definition's key.
        key: String,
        /// The definition's version.
        version: u32,
    },
    /// Another version of the key has a different kind.
    #[error(
        "workflow {key} v{version} is a {kind} workflow, but v{other_version} is a {other_kind} workflow; use a new key"
    )]
    KindChanged {
        /// The definition's key.
        key: String,
        /// The rejected definition's version.
        version: u32,
        /// The rejected definition's kind.
        kind: WorkflowKind,
        /// A version already in the catalog.
        other_version: u32,
        /// That version's kind.
        other_kind: WorkflowKind,
    },
}

/// The integration a request is for, as far as workflow selection cares.
#[derive(Debug, Clone, Copy)]
pub struct IntegrationFacts<'a> {
    /// The integration's unique name.
    pub name: &'a str,
    /// The SaaS application behind it (e.g. `github`).
    pub app: &'a str,
    /// Its environment (e.g. `production`).
    pub environment: &'a str,
}

/// Every known version of every workflow, immutable once inserted and shared by `Arc`.
///
/// New runs use the latest version of a key; a run in flight keeps the version it started with,
/// which [`Catalog::get`] still returns after newer versions arrive.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    by_key: BTreeMap<String, BTreeMap<u32, Arc<WorkflowDefinition>>>,
}

impl Catalog {
    /// An empty catalog.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses every `(source name, YAML text)` pair — [`crate::BUNDLED`], or files read by the
    /// caller — into a new catalog.
    ///
    /// # Errors
    /// The first text that does not parse or validate, or the first insertion that fails.
    pub fn from_sources(sources: &[(&str, &str)]) -> Result<Self, CatalogError> {
        let mut catalog = Self::new();
        for (source, text) in sources {
            catalog.insert(parse_definition(source, text)?)?;
        }
        Ok(catalog)
    }

    /// Adds a definition. Inserting one identical to what is already there is a no-op.
    ///
    /// # Errors
    /// [`CatalogError::Invalid`] if it breaks a workflow rule (definitions from
    /// [`parse_definition`] never do), [`CatalogError::Conflict`] if the key and version are taken
    /// by different content, [`CatalogError::KindChanged`] if another version has another kind.
    pub fn insert(&mut self, definition: impl Into<Arc<WorkflowDefinition>>) -> Result<(), CatalogError> {
        let definition = definition.into();
        let (key, version) = (definition.key.clone(), definition.version);
        if let Err(problems) = validate::validate(&definition)
            && let Some(problem) = problems.into_iter().next()
        {
            return Err(CatalogError::Invalid { key, version, path: problem.path, message: problem.message });
        }
        let versions = self.by_key.entry(key.clone()).or_default();
        if let Some(existing) = versions.get(&version) {
            return if **existing == *definition { Ok(()) } else { Err(CatalogError::Conflict { key, version }) };
        }
        if let Some(other) = versions.values().find(|d| d.kind != definition.kind) {
            return Err(CatalogError::KindChanged {
                key,
                version,
                kind: definition.kind,
                other_version: other.version,
                other_kind: other.kind,
            });
        }
        versions.insert(version, definition);
        Ok(())
    }

    /// The definition with this key and version, for a run that pinned it.
    #[must_use]
    pub fn get(&self, key: &str, version: u32) -> Option<Arc<WorkflowDefinition>> {
        self.by_key.get(key)?.get(&version).cloned()
    }

    /// The latest version of every key, sorted by key.
    #[must_use]
    pub fn latest(&self) -> Vec<Arc<WorkflowDefinition>> {
        self.by_key.values().filter_map(|versions| versions.values().next_back().cloned()).collect()
    }

    /// Every version of every key, sorted by key, then version.
    #[must_use]
    pub fn all(&self) -> Vec<Arc<WorkflowDefinition>> {
        self.by_key.values().flat_map(|versions| versions.values().cloned()).collect()
    }

    /// The workflow that governs a request of `kind` for `integration`, if any.
    ///
    /// Candidates are the latest versions of the keys of that kind whose `applies_to` matches
    /// (each non-empty list holds the value or `"*"`). The most specific wins: naming the
    /// integration scores 4, the app 2, the environment 1 (a `"*"` scores nothing). Ties go to the
    /// smallest key.
    #[must_use]
    pub fn select(&self, kind: WorkflowKind, integration: &IntegrationFacts<'_>) -> Option<Arc<WorkflowDefinition>> {
        let mut best: Option<(u8, &Arc<WorkflowDefinition>)> = None;
        // Keys iterate in ascending order, so keeping the first of equal scores breaks ties.
        for definition in self.by_key.values().filter_map(|v| v.values().next_back()) {
            if definition.kind != kind {
                continue;
            }
            let Some(score) = specificity(&definition.applies_to, integration) else {
                continue;
            };
            if best.is_none_or(|(top, _)| score > top) {
                best = Some((score, definition));
            }
        }
        best.map(|(_, definition)| Arc::clone(definition))
    }
}

/// How specifically `applies_to` names the integration, or `None` if it does not match.
fn specificity(applies_to: &AppliesTo, integration: &IntegrationFacts<'_>) -> Option<u8> {
    let list = |values: &[String], value: &str, weight: u8| -> Option<u8> {
        if values.iter().any(|v| v == value) {
            Some(weight)
        } else if values.is_empty() || values.iter().any(|v| v == "*") {
            Some(0)
        } else {
            None
        }
    };
    Some(
        list(&applies_to.integrations, integration.name, 4)?
            + list(&applies_to.apps, integration.app, 2)?
            + list(&applies_to.environments, integration.environment, 1)?,
    )
}
