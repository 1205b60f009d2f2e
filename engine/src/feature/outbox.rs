//! Outbox items after their call: the result of a connector call, a failed attempt, a
//! notification delivered or given up, and taking over the lease of a dead replica's item.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use crate::action::ConnectorAction;
use crate::audit::AuditEvent;
use crate::effect::NewOutbox;
use crate::ids::{OutboxId, RunId};
use crate::store::entity::outbox;
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal};
use crate::transition::Command;

use super::grant_secrets::MintedFor;

/// A connector call finished: the item is done, failed, or (a revocation past its budget) left
/// pending for a slow retry; the result is applied to the run.
pub(crate) struct ActionResult {
    pub(crate) outbox_id: OutboxId,
    pub(crate) run_id: RunId,
    pub(crate) completed_at: DateTime<Utc>,
    pub(crate) result: Result<Option<String>, String>,
    pub(crate) keep_retrying_at: Option<DateTime<Utc>>,
    pub(crate) attempts: i32,
    /// The call, when it was a reconciliation's (its result goes to
    /// [`super::reconcile::record`], not to a run's step).
    pub(crate) reconcile: Option<Box<ConnectorAction>>,
    /// A credential the call minted for the grant's holder: sealed and stored with the result
    /// ([`super::grant_secrets`]), never put into the run, the outbox or the audit log.
    pub(crate) minted: Option<MintedFor>,
}

#[async_trait::async_trait]
impl Job for ActionResult {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        // A result recorded already (the call was repeated after a lost lease) changes nothing,
        // and must not bring back a secret handed over since.
        let minted = match &self.minted {
            Some(m) if !is_done(tx, self.outbox_id).await? => Some(m),
            _ => None,
        };
        match (&self.result, self.keep_retrying_at) {
            (Ok(_), _) => tx.outbox_done(self.outbox_id.0, self.attempts),
            (Err(e), Some(at)) => {
                tx.update_outbox(self.outbox_id, "pending", self.attempts, Some(at), Some(e.clone())).await?;
            }
            (Err(e), None) => tx.update_outbox(self.outbox_id, "failed", self.attempts, None, Some(e.clone())).await?,
        }
        if let Some(action) = &self.reconcile {
            return super::reconcile::record(tx, self.outbox_id, action, &self.result).await;
        }
        let (actor, channel) = ("system".to_owned(), "engine".to_owned());
        let command = match &self.result {
            Ok(reference) => Command::ActionSucceeded {
                outbox_id: self.outbox_id,
                reference: reference.clone(),
                at: Some(self.completed_at),
                actor,
                channel,
            },
            Err(error) => Command::ActionFailed { outbox_id: self.outbox_id, error: error.clone(), actor, channel },
        };
        tx.apply(self.run_id, &command).await?;
        if let (Ok(_), Some(m)) = (&self.result, minted) {
            tx.store_grant_secret(self.run_id, m).await?;
        }
        Ok(())
    }
}

/// Whether an outbox item's result was recorded already.
async fn is_done(tx: &Tx<'_>, id: OutboxId) -> Result<bool, JobError> {
    let status: Option<String> = outbox::Entity::find_by_id(id.0)
        .select_only()
        .column(outbox::Column::Status)
        .into_tuple()
        .one(tx.conn())
        .await?;
    Ok(status.as_deref() == Some("done"))
}

/// An attempt failed and will be retried at `next_attempt_at`.
pub(crate) struct AttemptFailed {
    pub(crate) outbox_id: OutboxId,
    pub(crate) attempts: i32,
    pub(crate) next_attempt_at: DateTime<Utc>,
    pub(crate) error: String,
}

#[async_trait::async_trait]
impl Job for AttemptFailed {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        let (id, next, error) = (self.outbox_id, Some(self.next_attempt_at), Some(self.error.clone()));
        tx.update_outbox(id, "pending", self.attempts, next, error).await?;
        Ok(())
    }
}

/// A notification was delivered, or given up on this channel (then audited as failed and,
/// when given, followed by the same notification on another channel: Slack → email).
pub(crate) struct NotificationResult {
    pub(crate) outbox_id: OutboxId,
    pub(crate) run_id: RunId,
    pub(crate) event: AuditEvent,
    pub(crate) delivered: bool,
    pub(crate) attempts: i32,
    pub(crate) fallback: Option<Box<NewOutbox>>,
}

#[async_trait::async_trait]
impl Job for NotificationResult {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        if let Some(item) = &self.fallback {
            tx.enqueue(self.run_id, (**item).clone());
        }
        if self.delivered {
            tx.outbox_done(self.outbox_id.0, self.attempts);
        } else {
            let error = self.event.details["error"].as_str().unwrap_or("delivery failed").to_owned();
            tx.update_outbox(self.outbox_id, "failed", self.attempts, None, Some(error)).await?;
        }
        tx.audit(self.event.clone());
        Ok(())
    }
}

/// Takes (or renews) the lease of a still-pending outbox item that is ours or whose lease
/// expired (another replica died). Answers whether it was taken.
pub(crate) struct ClaimOutbox {
    pub(crate) outbox_id: OutboxId,
}

#[async_trait::async_trait]
impl Job for ClaimOutbox {
    type Output = bool;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<bool, Refusal> {
        let (now, shared) = (tx.now(), tx.shared());
        let res = outbox::Entity::update_many()
            .col_expr(outbox::Column::LeaseOwner, Expr::value(shared.node_id.clone()))
            .col_expr(outbox::Column::LeaseUntil, Expr::value(now + shared.lease))
            .filter(outbox::Column::Id.eq(self.outbox_id.0))
            .filter(outbox::Column::Status.eq("pending"))
            .filter(
                sea_orm::Condition::any()
                    .add(outbox::Column::LeaseOwner.eq(shared.node_id.as_str()))
                    .add(outbox::Column::LeaseUntil.lt(now))
                    .add(outbox::Column::LeaseUntil.is_null()),
            )
            .exec(tx.write())
            .await?;
        Ok(res.rows_affected == 1)
    }
}

impl Tx<'_> {
    /// Records an outbox item's status after an attempt; with `next`, it stays leased to this
    /// replica until then plus the lease.
    pub(crate) async fn update_outbox(
        &mut self,
        id: OutboxId,
        status: &str,
        attempts: i32,
        next: Option<DateTime<Utc>>,
        error: Option<String>,
    ) -> Result<(), JobError> {
        let (now, shared) = (self.now(), self.shared());
        let mut q = outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(status))
            .col_expr(outbox::Column::Attempts, Expr::value(attempts))
            .col_expr(outbox::Column::LastError, Expr::value(error))
            .col_expr(outbox::Column::UpdatedAt, Expr::value(now));
        if let Some(next) = next {
            q = q
                .col_expr(outbox::Column::NextAttemptAt, Expr::value(next))
                .col_expr(outbox::Column::LeaseOwner, Expr::value(shared.node_id.clone()))
                .col_expr(outbox::Column::LeaseUntil, Expr::value(next + shared.lease));
        }
        q.filter(outbox::Column::Id.eq(id.0)).exec(self.write()).await?;
        Ok(())
    }
}
