//! Slack messages posted about a run, recorded one by one as they go out, so a retried delivery
//! skips what was posted and a later outcome can replace the messages in place.

use sea_orm::ActiveValue::Set;
use sea_orm::EntityTrait;

use crate::ids::RunId;
use crate::store::entity::slack_message;
use crate::store::tx::Tx;
use crate::store::writer::{Job, Refusal};

/// Records one posted message.
pub(crate) struct RecordSlackMessage {
    pub(crate) run_id: RunId,
    pub(crate) step_index: u32,
    pub(crate) channel_id: String,
    pub(crate) ts: String,
    pub(crate) recipient: String,
}

#[async_trait::async_trait]
impl Job for RecordSlackMessage {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        let now = tx.now();
        slack_message::Entity::insert(slack_message::ActiveModel {
            id: Set(uuid::Uuid::now_v7()),
            run_id: Set(self.run_id.0),
            step_index: Set(i32::try_from(self.step_index).unwrap_or(i32::MAX)),
            channel_id: Set(self.channel_id.clone()),
            ts: Set(self.ts.clone()),
            recipient: Set(self.recipient.clone()),
            created_at: Set(now),
        })
        .exec_without_returning(tx.write())
        .await?;
        Ok(())
    }
}
