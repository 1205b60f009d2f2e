//! Email approval links: single-use tokens bound to one approver and one approval step.
//!
//! A token is 256 bits from the operating system's CSPRNG, encoded base64url (43 characters).
//! Only its SHA-256 is stored. A link is issued right before the email that carries it is sent
//! (so a retried email carries a fresh link; earlier ones stay valid until used or expired),
//! expires at the approval's deadline, and is consumed in the same transaction as the decision
//! it carries. Opening it (GET) changes nothing.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::audit::AuditEvent;
use crate::ids::RunId;
use crate::run::{Decision, RunState, RunStatus, StepState};
use crate::store::StoreError;
use crate::store::entity::approval_link;
use crate::store::query::{self, RunView};
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal, WriterHandle};
use crate::transition::{self, Cast, Command};

/// Length of an encoded token.
pub const TOKEN_LEN: usize = 43;

pub use crate::message::IssuedLink;

/// A new random token.
#[must_use]
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// How a token is stored: SHA-256 (domain-separated from API tokens), hex.
#[must_use]
pub fn hash(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"tollgate-approval-link\0");
    h.update(token.as_bytes());
    hex::encode(h.finalize())
}

/// Whether `token` has the shape of a token (checked before any database lookup).
#[must_use]
pub fn is_well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// An approval as seen through a usable link.
#[derive(Debug, Clone)]
pub struct LinkedApproval {
    /// The link's id.
    pub link_id: Uuid,
    /// The approver the link was issued to.
    pub principal: String,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    /// The request.
    pub view: RunView,
}

/// What an email link's token is.
#[derive(Debug, Clone)]
pub enum LinkLookup {
    /// A link that can still decide.
    Usable(Box<LinkedApproval>),
    /// A link Tollgate issued that can no longer decide: used, expired, or its approval over. A
    /// person re-opening an old email, not a guess.
    Spent,
    /// No link Tollgate issued (malformed, or no such token): a guess or a mangled link.
    Unknown,
}

/// What `token` is at `now`: usable when known, unused, unexpired, and its approval step still
/// pending. Reads only.
///
/// # Errors
/// Database failures.
pub(crate) async fn lookup(
    db: &sea_orm::DatabaseConnection,
    token: &str,
    now: DateTime<Utc>,
) -> Result<LinkLookup, StoreError> {
    if !is_well_formed(token) {
        return Ok(LinkLookup::Unknown);
    }
    let Some(link) = query::approval_link_by_hash(db, &hash(token)).await? else { return Ok(LinkLookup::Unknown) };
    if link.consumed_at.is_some() || now >= link.expires_at {
        return Ok(LinkLookup::Spent);
    }
    let Some(view) = query::run_view(db, RunId(link.run_id)).await? else { return Ok(LinkLookup::Spent) };
    let pending = view.run.status == RunStatus::AwaitingApproval
        && matches!(view.run.step, StepState::Approval { .. })
        && i64::from(view.run.step_index) == i64::from(link.step_index);
    if !pending {
        return Ok(LinkLookup::Spent);
    }
    Ok(LinkLookup::Usable(Box::new(LinkedApproval {
        link_id: link.id,
        principal: link.principal,
        expires_at: link.expires_at,
        view,
    })))
}

/// Decides through an email link: the decision is the link's approver's, with channel `email`
/// and the link id as evidence; the link is consumed in the decision's transaction.
///
/// # Errors
/// [`JobError::LinkUnusable`] when the link cannot decide (nothing is recorded);
/// [`JobError::Transition`] when the decision is refused (audited; the link stays unused).
pub(crate) async fn decide(
    writer: &WriterHandle,
    token: &str,
    decision: Decision,
    comment: Option<String>,
) -> Result<RunId, JobError> {
    if !is_well_formed(token) {
        return Err(JobError::LinkUnusable);
    }
    writer.submit(DecideByLink { token_hash: hash(token), decision, comment }).await
}

/// Issues links for `principals` on the approval step `step_index` of `run_id`, one per
/// principal in order; `None` for a principal who cannot decide there (the requester or the
/// same person, no longer eligible, already voted) or for everyone once the step is over.
pub(crate) async fn issue(
    writer: &WriterHandle,
    run_id: RunId,
    step_index: u32,
    principals: &[String],
) -> Result<Vec<Option<IssuedLink>>, JobError> {
    let tokens: Vec<(Uuid, String)> = principals.iter().map(|_| (Uuid::now_v7(), new_token())).collect();
    let links = tokens.iter().map(|(id, token)| (*id, hash(token))).collect();
    let expiries = writer.submit(IssueLinks { run_id, step_index, principals: principals.to_vec(), links }).await?;
    Ok(tokens
        .into_iter()
        .zip(expiries)
        .map(|((id, token), expires_at)| expires_at.map(|expires_at| IssuedLink { id, token, expires_at }))
        .collect())
}

/// Until when a link issued now for approval step `step_index` of a run in `state` may decide
/// (the step's deadline), for each principal in order; `None` where that principal cannot
/// decide there (the requester or the same person, not eligible, already voted) and for
/// everyone once the step is over. The same rule as a decision's, checked when issuing so a
/// link never reaches someone it could not serve.
fn issuable(
    state: &RunState,
    shared: &crate::context::Shared,
    step_index: u32,
    now: DateTime<Utc>,
    principals: &[String],
) -> Result<Vec<Option<DateTime<Utc>>>, JobError> {
    let run = &state.run;
    let none = || vec![None; principals.len()];
    let deadline = match &run.step {
        StepState::Approval { deadline, .. }
            if run.status == RunStatus::AwaitingApproval && run.step_index == step_index && now < *deadline =>
        {
            *deadline
        }
        _ => return Ok(none()),
    };
    let live = shared.live();
    let definition = live.definition(run)?;
    let Some(step) = transition::pending_approval_in(run, &definition) else {
        return Ok(none());
    };
    let (directory, integration) = (&live.directory, live.integration(run)?);
    let approvers = step.approvers_at(matches!(run.step, StepState::Approval { escalated: true, .. }));
    Ok(principals
        .iter()
        .map(|p| {
            transition::may_decide(directory, integration, &approvers, &run.requester, &state.votes, p)
                .is_ok()
                .then_some(deadline)
        })
        .collect())
}

/// Records link hashes for the principals who may decide at the run's current approval step;
/// answers each link's expiry, `None` where none was issued.
pub(crate) struct IssueLinks {
    pub(crate) run_id: RunId,
    pub(crate) step_index: u32,
    pub(crate) principals: Vec<String>,
    pub(crate) links: Vec<(Uuid, String)>,
}

#[async_trait::async_trait]
impl Job for IssueLinks {
    type Output = Vec<Option<DateTime<Utc>>>;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Self::Output, Refusal> {
        let state = tx.current_state(self.run_id).await?;
        let (now, run_id, step_index) = (tx.now(), self.run_id, self.step_index);
        let issued = issuable(&state, tx.shared(), step_index, now, &self.principals)?;
        let mut rows = Vec::new();
        for ((principal, (id, token_hash)), expires_at) in self.principals.iter().zip(&self.links).zip(&issued) {
            let Some(deadline) = *expires_at else { continue };
            rows.push(approval_link::ActiveModel {
                id: Set(*id),
                token_hash: Set(token_hash.clone()),
                run_id: Set(run_id.0),
                step_index: Set(i32::try_from(step_index).unwrap_or(i32::MAX)),
                principal: Set(principal.clone()),
                created_at: Set(now),
                expires_at: Set(deadline),
                consumed_at: Set(None),
            });
            tx.audit(AuditEvent {
                event_type: "approval_link_issued".to_owned(),
                channel: "email".to_owned(),
                outcome: "success".to_owned(),
                actor: "system".to_owned(),
                subject: format!("request:{run_id}"),
                run_id: Some(run_id.0),
                justification: None,
                workflow_key: Some(state.run.workflow_key.clone()),
                workflow_version: i32::try_from(state.run.workflow_version).ok(),
                details: serde_json::json!({
                    "link_id": id, "approver": principal, "step": step_index, "expires_at": deadline,
                }),
            });
        }
        if !rows.is_empty() {
            approval_link::Entity::insert_many(rows).exec_without_returning(tx.write()).await?;
        }
        Ok(issued)
    }
}

/// A decision through an email link: the link must be unused, unexpired and for the run's
/// current step; it is consumed only when the decision is recorded. Answers the run.
pub(crate) struct DecideByLink {
    pub(crate) token_hash: String,
    pub(crate) decision: Decision,
    pub(crate) comment: Option<String>,
}

#[async_trait::async_trait]
impl Job for DecideByLink {
    type Output = RunId;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<RunId, Refusal> {
        let now = tx.now();
        let link = query::approval_link_by_hash(tx.conn(), &self.token_hash)
            .await?
            .filter(|l| l.consumed_at.is_none() && now < l.expires_at)
            .ok_or(JobError::LinkUnusable)?;
        let run_id = RunId(link.run_id);
        let state = tx.current_state(run_id).await?;
        if i64::from(state.run.step_index) != i64::from(link.step_index) {
            return Err(JobError::LinkUnusable.into());
        }
        let command = Command::Decide(Cast {
            origin: serde_json::json!({ "link_id": link.id }),
            step: u32::try_from(link.step_index).ok(),
            ..Cast::new(&link.principal, self.decision, self.comment.clone(), "email")
        });
        tx.apply(run_id, &command).await?;
        let consumed = approval_link::Entity::update_many()
            .col_expr(approval_link::Column::ConsumedAt, Expr::value(now))
            .filter(approval_link::Column::Id.eq(link.id))
            .filter(approval_link::Column::ConsumedAt.is_null())
            .exec(tx.write())
            .await?;
        if consumed.rows_affected != 1 {
            // Used concurrently by another replica: undo the whole batch; the replay refuses it.
            return Err(StoreError::Conflict.into());
        }
        Ok(run_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(is_well_formed(&a), "{a}");
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 32, "256 bits");
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 64);
        assert_ne!(hash(&a), crate::runtime::hash_token(&a), "domain-separated from API tokens");
    }

    #[test]
    fn malformed_tokens_are_recognised_without_a_lookup() {
        for bad in ["", "short", &"a".repeat(44), &format!("{}=", "a".repeat(42)), &format!("{}/", "a".repeat(42))] {
            assert!(!is_well_formed(bad), "{bad}");
        }
    }
}
