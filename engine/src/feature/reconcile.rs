//! Drift reconciliation: on a durable cron schedule, every grant of an integration whose
//! connector can verify is checked at the target — active grants must be present, grants revoked
//! within the look-back window must be absent. A mismatch is audited (`drift_detected`) and
//! alerted; access found on a revoked grant is revoked again at once (the grant shows `revoking`,
//! then `revoked` or `revoke_failed`: its status is the truth, I1).
//!
//! A tick is claimed inside the writer's transaction by moving the schedule's `last_tick`
//! forward, in the same transaction that queues its checks: two replicas never run the same
//! tick, and a tick is either wholly queued or not at all. After downtime only the latest missed
//! tick runs. The checks and re-revocations are ordinary outbox items (idempotency keys,
//! retries, leases), marked with [`RECONCILE_STEP`] so their results come back here instead of to
//! a run's step.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect};
use tollgate_workflows::{Operation, RetryPolicy};

use crate::action::{ConnectorAction, Expect, IntegrationRef};
use crate::audit::AuditEvent;
use crate::effect::{NewOutbox, OutboxPayload};
use crate::ids::OutboxId;
use crate::run::{Grant, GrantStatus};
use crate::store::entity::{grant, schedule};
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal};

/// The schedule's row in `schedules`.
pub(crate) const SCHEDULE: &str = "reconcile";

/// The step index of reconciliation's outbox items: no workflow step has it.
pub(crate) const RECONCILE_STEP: u32 = u32::MAX;

/// Most grants one tick checks (the oldest-checked first would need bookkeeping; a deployment
/// this large should run ticks more often or per integration — logged when reached).
pub(crate) const MAX_CHECKS: u64 = 20_000;

/// Retries of a reconciliation check (a revocation it starts is never given up).
const RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    backoff: tollgate_workflows::Duration::from_secs(2),
    max_backoff: tollgate_workflows::Duration::from_secs(60),
};

/// Reads the schedule's last claimed tick, starting the schedule at `now` the first time (so a
/// fresh installation does not run a "missed" tick at once).
pub(crate) struct StartSchedule {
    pub(crate) now: DateTime<Utc>,
}

#[async_trait::async_trait]
impl Job for StartSchedule {
    type Output = DateTime<Utc>;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<DateTime<Utc>, Refusal> {
        if let Some(row) = schedule::Entity::find_by_id(SCHEDULE).one(tx.conn()).await? {
            return Ok(row.last_tick);
        }
        let row = schedule::Model { name: SCHEDULE.to_owned(), last_tick: self.now };
        schedule::Entity::insert(row.into_active_model()).exec_without_returning(tx.write()).await?;
        Ok(self.now)
    }
}

/// Claims the tick at `tick` and queues its checks; answers the stored last tick and how many
/// checks were queued (`None`: another replica had claimed this tick or a later one).
pub(crate) struct ClaimTick {
    pub(crate) tick: DateTime<Utc>,
    /// Integrations whose connector can verify.
    pub(crate) integrations: Vec<String>,
    /// How long after its revocation a grant is still checked for absence.
    pub(crate) lookback: chrono::Duration,
}

#[async_trait::async_trait]
impl Job for ClaimTick {
    type Output = (DateTime<Utc>, Option<usize>);

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(DateTime<Utc>, Option<usize>), Refusal> {
        let stored = schedule::Entity::find_by_id(SCHEDULE).one(tx.conn()).await?;
        if let Some(row) = stored.as_ref().filter(|r| r.last_tick >= self.tick) {
            return Ok((row.last_tick, None));
        }
        let row = schedule::Model { name: SCHEDULE.to_owned(), last_tick: self.tick };
        if stored.is_some() {
            schedule::Entity::update_many()
                .col_expr(schedule::Column::LastTick, Expr::value(self.tick))
                .filter(schedule::Column::Name.eq(SCHEDULE))
                .exec(tx.write())
                .await?;
        } else {
            schedule::Entity::insert(row.into_active_model()).exec_without_returning(tx.write()).await?;
        }
        let since = self.tick.checked_sub_signed(self.lookback).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let grants = grant::Entity::find()
            .filter(grant::Column::Integration.is_in(self.integrations.iter().map(String::as_str)))
            .filter(
                Condition::any().add(grant::Column::Status.eq(GrantStatus::Active.as_str())).add(
                    Condition::all()
                        .add(grant::Column::Status.eq(GrantStatus::Revoked.as_str()))
                        .add(grant::Column::RevokedAt.gte(since)),
                ),
            )
            .order_by_asc(grant::Column::Id)
            .limit(MAX_CHECKS)
            .all(tx.conn())
            .await?;
        if grants.len() as u64 >= MAX_CHECKS {
            tracing::warn!(limit = MAX_CHECKS, "reconciliation tick reached its limit of checks; the rest wait");
        }
        let live = tx.shared().live();
        let mut queued = 0_usize;
        for g in grants {
            let g = Grant::try_from(g)?;
            let Some(integration) = live.directory.integrations.get(&g.integration) else { continue };
            let expect = if g.status == GrantStatus::Active { Expect::Present } else { Expect::Absent };
            let key = format!("{}:reconcile:{}", g.id, self.tick.timestamp());
            let action = call(&g, integration, Operation::Verify, key, Some(expect));
            tx.enqueue(g.run_id, item(action, None));
            queued += 1;
        }
        tx.audit(AuditEvent {
            event_type: "reconcile_started".to_owned(),
            channel: "engine".to_owned(),
            outcome: "success".to_owned(),
            actor: "system".to_owned(),
            subject: format!("schedule:{SCHEDULE}"),
            run_id: None,
            justification: None,
            workflow_key: None,
            workflow_version: None,
            details: serde_json::json!({ "tick": self.tick, "checks": queued }),
        });
        Ok((self.tick, Some(queued)))
    }
}

fn call(
    g: &Grant,
    integration: &crate::directory::Integration,
    operation: Operation,
    idempotency_key: String,
    expect: Option<Expect>,
) -> ConnectorAction {
    ConnectorAction {
        operation,
        idempotency_key,
        run_id: g.run_id.0,
        grant_id: g.id.0,
        integration: IntegrationRef {
            name: integration.name.clone(),
            app: integration.app.clone(),
            environment: integration.environment.clone(),
        },
        principal: g.principal.clone(),
        scopes: g.scopes.clone(),
        expires_at: g.expires_at,
        attempt: 0,
        expect,
        version: None,
        keep_previous: false,
    }
}

fn item(action: ConnectorAction, not_before: Option<DateTime<Utc>>) -> NewOutbox {
    NewOutbox {
        id: OutboxId::new(),
        idempotency_key: action.idempotency_key.clone(),
        step_index: RECONCILE_STEP,
        retry: RETRY,
        not_before,
        payload: OutboxPayload::Action { action },
    }
}

/// Records the result of a reconciliation check or re-revocation (instead of applying it to a
/// run's step).
pub(crate) async fn record(
    tx: &mut Tx<'_>,
    outbox_id: OutboxId,
    action: &ConnectorAction,
    result: &Result<Option<String>, String>,
) -> Result<(), Refusal> {
    let Some(mut g) = crate::store::query::grant(tx.conn(), crate::ids::GrantId(action.grant_id)).await? else {
        return Ok(());
    };
    let now = tx.now();
    let event = |event_type: &str, outcome: &str, details: serde_json::Value| AuditEvent {
        event_type: event_type.to_owned(),
        channel: "engine".to_owned(),
        outcome: outcome.to_owned(),
        actor: "system".to_owned(),
        subject: format!("grant:{}", g.id),
        run_id: Some(g.run_id.0),
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details,
    };
    match (action.operation, action.expect, result) {
        (Operation::Verify, _, Ok(_)) => Ok(()),
        (Operation::Verify, Some(expect), Err(error)) => {
            // A check queued before the grant changed (revoked since, renewed…) says nothing.
            let still = match expect {
                Expect::Present => g.status == GrantStatus::Active,
                Expect::Absent => g.status == GrantStatus::Revoked,
            };
            if !still {
                return Ok(());
            }
            tracing::error!(
                alert = true, grant.id = %g.id, integration = %g.integration, expected = expect.as_str(), error = %error,
                "drift: the target does not match the grant"
            );
            let mut details = serde_json::json!({
                "grant_id": g.id, "integration": g.integration, "expected": expect.as_str(),
                "grant_status": g.status.as_str(), "error": error,
            });
            if expect == Expect::Absent {
                // Revoked here, present there: revoke again, now. Not `revoked` until it holds.
                let live = tx.shared().live();
                let Some(integration) = live.directory.integrations.get(&g.integration) else { return Ok(()) };
                let key = format!("{}:revoke:drift:{outbox_id}", g.id);
                let revoke = call(&g, integration, Operation::Revoke, key, None);
                details["action"] = serde_json::json!("revoking again");
                g.status = GrantStatus::Revoking;
                g.updated_at = now;
                save(tx, &g).await?;
                tx.enqueue(g.run_id, item(revoke, None));
            }
            tx.audit(event("drift_detected", "failure", details));
            Ok(())
        }
        (Operation::Revoke, _, Ok(reference)) => {
            if g.status == GrantStatus::Revoked {
                return Ok(());
            }
            g.status = GrantStatus::Revoked;
            g.revoked_at = Some(now);
            g.updated_at = now;
            save(tx, &g).await?;
            let details = serde_json::json!({ "grant_id": g.id, "reference": reference, "reason": "drift" });
            tx.audit(event("revoke_repeated", "success", details));
            Ok(())
        }
        (Operation::Revoke, _, Err(error)) => {
            if g.status != GrantStatus::RevokeFailed {
                g.status = GrantStatus::RevokeFailed;
                g.updated_at = now;
                save(tx, &g).await?;
            }
            tracing::error!(alert = true, grant.id = %g.id, error = %error, "revoking drifted access failed; retrying");
            let details = serde_json::json!({ "grant_id": g.id, "error": error, "reason": "drift" });
            tx.audit(event("revoke_failed", "failure", details));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Writes the grant's status and makes the grant's run re-read it (its cached copy, here or on
/// another replica, is stale).
async fn save(tx: &mut Tx<'_>, g: &Grant) -> Result<(), JobError> {
    grant::Entity::update_many()
        .col_expr(grant::Column::Status, Expr::value(g.status.as_str()))
        .col_expr(grant::Column::RevokedAt, Expr::value(g.revoked_at))
        .col_expr(grant::Column::UpdatedAt, Expr::value(g.updated_at))
        .filter(grant::Column::Id.eq(g.id.0))
        .exec(tx.write())
        .await?;
    tx.touch_other_run(g.run_id).await
}
