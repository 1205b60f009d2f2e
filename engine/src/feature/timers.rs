//! Timer firings: the replica that deletes a due timer's row applies it, in the same
//! transaction, to the run's current state — so a timer fires once, and never against a stale
//! copy of the run.

use sea_orm::EntityTrait;

use crate::effect::TimerKind;
use crate::ids::{RunId, TimerId};
use crate::store::entity::timer;
use crate::store::tx::Tx;
use crate::store::writer::{Job, Refusal};
use crate::transition::Command;

/// Fires one due timer.
pub(crate) struct FireTimer {
    pub(crate) timer_id: TimerId,
    pub(crate) run_id: RunId,
    pub(crate) kind: TimerKind,
    pub(crate) step_index: u32,
}

#[async_trait::async_trait]
impl Job for FireTimer {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        let deleted = timer::Entity::delete_by_id(self.timer_id.0).exec(tx.write()).await?;
        if deleted.rows_affected == 0 {
            return Ok(()); // fired elsewhere, or cleared
        }
        tx.apply(self.run_id, &Command::TimerFired { kind: self.kind, step_index: self.step_index }).await
    }
}
