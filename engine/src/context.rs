//! What every part of the engine reads: the clock and this replica's identity, fixed while it
//! runs, and the live configuration — workflow catalog and directory — which a reload
//! replaces whole ([`Shared::live`] hands out one consistent snapshot). Owned by the runtime, lent
//! to the store and the features; it holds no connection and performs no I/O.

use std::sync::{Arc, PoisonError, RwLock};

use tollgate_workflows::{Catalog, IntegrationFacts, WorkflowDefinition};

use crate::clock::Clock;
use crate::directory::{Directory, Integration};
use crate::run::Run;
use crate::transition::NewRequest;

/// The configuration a reload replaces: read it through one [`Shared::live`] snapshot per
/// job or request, so a reload in between never mixes two versions.
#[derive(Debug, Default)]
pub struct Live {
    /// Workflow definitions, every version ever loaded (running requests keep theirs).
    pub catalog: Catalog,
    /// Principals, groups, integrations.
    pub directory: Directory,
}

/// The cell holding the current [`Live`] configuration.
#[derive(Debug, Default)]
pub struct LiveCell(RwLock<Arc<Live>>);

impl LiveCell {
    /// A cell holding `catalog` and `directory`.
    #[must_use]
    pub fn new(catalog: Catalog, directory: Directory) -> Self {
        Self(RwLock::new(Arc::new(Live { catalog, directory })))
    }
}

/// State every component reads.
#[derive(Debug)]
pub struct Shared {
    /// The live configuration; see [`Shared::live`].
    pub live: LiveCell,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// This replica's name, owner of the outbox leases it creates.
    pub node_id: String,
    /// How long an outbox lease lasts before another replica may take the item over.
    pub lease: chrono::Duration,
    /// Names of the notification channels every notification is fanned out to.
    pub channels: Vec<String>,
    /// Warn a grant's holder this long before it expires (none: no warning).
    pub expiry_warning: Option<chrono::Duration>,
    /// The key secrets are sealed with at rest (`[secrets] key`); without one, nothing that
    /// would store a secret is accepted.
    pub sealing: Option<Arc<crate::sealed::SealingKey>>,
}

/// Something a request or run names that the configuration does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0} not found")]
pub struct Missing(pub &'static str);

impl Shared {
    /// The current configuration: one snapshot, consistent for as long as it is held.
    #[must_use]
    pub fn live(&self) -> Arc<Live> {
        self.live.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the live configuration (a reload that was validated and stored).
    pub(crate) fn install(&self, live: Live) {
        *self.live.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(live);
    }
}

impl Live {
    /// The pinned definition of `run`.
    ///
    /// # Errors
    /// [`Missing`] when that workflow version was never loaded.
    pub fn definition(&self, run: &Run) -> Result<Arc<WorkflowDefinition>, Missing> {
        self.catalog.get(&run.workflow_key, run.workflow_version).ok_or(Missing("workflow version"))
    }

    /// The run's integration, as the directory has it now.
    ///
    /// # Errors
    /// [`Missing`] when the integration was removed from the directory.
    pub fn integration(&self, run: &Run) -> Result<&Integration, Missing> {
        self.directory.integrations.get(&run.integration).ok_or(Missing("integration"))
    }

    /// The workflow and integration governing a new request.
    ///
    /// # Errors
    /// [`Missing`] for an unknown integration or when no workflow matches it.
    pub fn resolve_for_request(&self, req: &NewRequest) -> Result<(Arc<WorkflowDefinition>, &Integration), Missing> {
        let integration = self.directory.integrations.get(&req.integration).ok_or(Missing("integration"))?;
        let facts =
            IntegrationFacts { name: &integration.name, app: &integration.app, environment: &integration.environment };
        let def = self.catalog.select(req.kind, &facts).ok_or(Missing("workflow"))?;
        Ok((def, integration))
    }
}
