//! Audit records that accompany no state change of their own (configuration changes seen at
//! start-up, operator actions recorded by the CLI).

use crate::audit::AuditEvent;
use crate::store::tx::Tx;
use crate::store::writer::{Job, Refusal};

/// Appends events to the chain.
pub(crate) struct AppendAudit(pub(crate) Vec<AuditEvent>);

#[async_trait::async_trait]
impl Job for AppendAudit {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        for event in &self.0 {
            tx.audit(event.clone());
        }
        Ok(())
    }
}
