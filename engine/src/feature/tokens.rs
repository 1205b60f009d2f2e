//! API tokens: only the SHA-256 of a token is stored; creating one is audited.

use sea_orm::{EntityTrait, IntoActiveModel};

use crate::audit::AuditEvent;
use crate::store::entity::api_token;
use crate::store::tx::Tx;
use crate::store::writer::{Job, Refusal};

/// Stores a token's hash for `principal`; answers the token's id.
pub(crate) struct CreateToken {
    pub(crate) principal: String,
    pub(crate) name: String,
    pub(crate) token_hash: String,
    pub(crate) actor: String,
    pub(crate) channel: String,
}

#[async_trait::async_trait]
impl Job for CreateToken {
    type Output = uuid::Uuid;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<uuid::Uuid, Refusal> {
        let id = uuid::Uuid::now_v7();
        let now = tx.now();
        api_token::Entity::insert(
            api_token::Model {
                id,
                principal: self.principal.clone(),
                name: self.name.clone(),
                token_hash: self.token_hash.clone(),
                created_at: now,
                revoked_at: None,
            }
            .into_active_model(),
        )
        .exec_without_returning(tx.write())
        .await?;
        tx.audit(AuditEvent {
            event_type: "token_created".to_owned(),
            channel: self.channel.clone(),
            outcome: "success".to_owned(),
            actor: self.actor.clone(),
            subject: format!("principal:{}", self.principal),
            run_id: None,
            justification: None,
            workflow_key: None,
            workflow_version: None,
            details: serde_json::json!({ "token_id": id, "name": self.name }),
        });
        Ok(id)
    }
}
