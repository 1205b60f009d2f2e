//! Manual tasks: a connector that needs a person opens a task for its operator; the operator's
//! confirmation (or report of failure) becomes the action's result.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};

use crate::audit::AuditEvent;
use crate::ids::{OutboxId, RunId, TaskId};
use crate::store::entity::{run, task};
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal};
use crate::transition::Command;

/// Whether `actor` may resolve a task of `operator`: the operator named by the connector, or an
/// admin — nobody else, not the requester, not an approver.
///
/// # Errors
/// [`JobError::NotTaskOperator`] otherwise.
pub(crate) fn may_resolve(operator: &str, actor: &str, is_admin: bool) -> Result<(), JobError> {
    if actor == operator || is_admin { Ok(()) } else { Err(JobError::NotTaskOperator) }
}

/// Opens the task for an action that awaits its operator (once per outbox item).
pub(crate) struct OpenTask {
    pub(crate) outbox_id: OutboxId,
    pub(crate) run_id: RunId,
    pub(crate) operator: String,
    pub(crate) instructions: String,
    pub(crate) remind_every: Option<std::time::Duration>,
}

#[async_trait::async_trait]
impl Job for OpenTask {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        let existing = task::Entity::find().filter(task::Column::OutboxId.eq(self.outbox_id.0)).one(tx.conn()).await?;
        if existing.is_some() {
            return Ok(());
        }
        let id = TaskId::new();
        let now = tx.now();
        task::Entity::insert(
            task::Model {
                id: id.0,
                outbox_id: self.outbox_id.0,
                run_id: self.run_id.0,
                operator: self.operator.clone(),
                instructions: self.instructions.clone(),
                status: "open".to_owned(),
                resolved_by: None,
                comment: None,
                resolved_at: None,
                created_at: now,
            }
            .into_active_model(),
        )
        .exec_without_returning(tx.write())
        .await?;
        tx.update_outbox(self.outbox_id, "waiting_operator", 1, None, None).await?;
        let run = run::Entity::find_by_id(self.run_id.0).one(tx.conn()).await?;
        tx.audit(AuditEvent {
            event_type: "manual_task_opened".to_owned(),
            channel: "engine".to_owned(),
            outcome: "success".to_owned(),
            actor: "system".to_owned(),
            subject: format!("task:{id}"),
            run_id: Some(self.run_id.0),
            justification: run.as_ref().map(|r| r.justification.clone()),
            workflow_key: run.as_ref().map(|r| r.workflow_key.clone()),
            workflow_version: run.as_ref().map(|r| r.workflow_version),
            details: serde_json::json!({ "operator": self.operator, "outbox_id": self.outbox_id }),
        });
        // The operator is told (and reminded until done) by the run's own transition, so the
        // notification and the reminder timer commit with the task.
        let opened = Command::TaskOpened {
            outbox_id: self.outbox_id,
            task_id: id,
            operator: self.operator.clone(),
            instructions: self.instructions.clone(),
            remind_every: self.remind_every,
        };
        tx.apply(self.run_id, &opened).await?;
        Ok(())
    }
}

/// The operator confirms a task (`done`) or reports its failure; answers the task's run.
pub(crate) struct ResolveTask {
    pub(crate) task_id: TaskId,
    pub(crate) actor: String,
    pub(crate) is_admin: bool,
    pub(crate) done: bool,
    pub(crate) comment: Option<String>,
}

#[async_trait::async_trait]
impl Job for ResolveTask {
    type Output = RunId;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<RunId, Refusal> {
        let t = task::Entity::find_by_id(self.task_id.0).one(tx.conn()).await?.ok_or(JobError::NotFound("task"))?;
        may_resolve(&t.operator, &self.actor, self.is_admin)?;
        if t.status != "open" {
            return Err(JobError::TaskResolved.into());
        }
        let status = if self.done { "done" } else { "failed" };
        let now = tx.now();
        task::Entity::update_many()
            .col_expr(task::Column::Status, Expr::value(status))
            .col_expr(task::Column::ResolvedBy, Expr::value(self.actor.clone()))
            .col_expr(task::Column::Comment, Expr::value(self.comment.clone()))
            .col_expr(task::Column::ResolvedAt, Expr::value(now))
            .filter(task::Column::Id.eq(self.task_id.0))
            .exec(tx.write())
            .await?;
        let outbox_id = OutboxId(t.outbox_id);
        let comment = self.comment.clone();
        let error = (!self.done).then(|| comment.clone().unwrap_or_else(|| "operator reported failure".to_owned()));
        tx.update_outbox(outbox_id, status, 1, None, error).await?;
        let (actor, channel) = (self.actor.clone(), "api".to_owned());
        let command = if self.done {
            Command::ActionSucceeded { outbox_id, reference: None, at: None, actor, channel }
        } else {
            let error = format!("operator reported failure: {}", comment.unwrap_or_default());
            Command::ActionFailed { outbox_id, error, actor, channel }
        };
        let run_id = RunId(t.run_id);
        tx.apply(run_id, &command).await?;
        Ok(run_id)
    }
}

#[cfg(test)]
mod tests {
    use super::may_resolve;

    #[test]
    fn only_the_operator_or_an_admin_resolves_a_task() {
        let table = [
            ("erin", "erin", false, true),
            ("erin", "admin", true, true),
            ("erin", "bob", false, false),
            ("erin", "Erin", false, false),
            ("erin", "", false, false),
        ];
        for (operator, actor, is_admin, allowed) in table {
            assert_eq!(may_resolve(operator, actor, is_admin).is_ok(), allowed, "{operator} {actor} {is_admin}");
        }
    }
}
