//! Email approval links: single-use tokens bound to one approver and one approval step.
//!
//! A token is 256 bits from the operating system's CSPRNG, encoded base64url (43 characters).
//! Only its SHA-256 is stored. A link is issued right before the email that carries it is sent
//! (so a retried email carries a fresh link; earlier ones stay valid until used or expired),
//! expires at the approval's deadline, and is consumed in the same transaction as the decision
//! it carries. Opening it (GET) changes nothing.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::ids::RunId;
use crate::run::{Decision, RunStatus, StepState};
use crate::runtime::Engine;
use crate::store::StoreError;
use crate::store::query::{self, RunView};
use crate::store::writer::{Job, JobError, JobOutput, WriterHandle};

/// Length of an encoded token.
pub const TOKEN_LEN: usize = 43;

/// A freshly issued link token. `Debug` never shows the token.
#[derive(Clone)]
pub struct IssuedLink {
    /// The link's id (recorded in the audit log; not secret).
    pub id: Uuid,
    /// The token: goes into the email and nowhere else.
    pub token: String,
    /// When the link stops working (the approval's deadline).
    pub expires_at: DateTime<Utc>,
}

impl fmt::Debug for IssuedLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLink").field("id", &self.id).field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

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

impl Engine {
    /// The approval behind `token`, when the link can still decide: known, unused, unexpired,
    /// and its approval step still pending. Reads only.
    ///
    /// # Errors
    /// Database failures.
    pub async fn approval_link(&self, token: &str) -> Result<Option<LinkedApproval>, StoreError> {
        if !is_well_formed(token) {
            return Ok(None);
        }
        let db = &self.db().read;
        let Some(link) = query::approval_link_by_hash(db, &hash(token)).await? else { return Ok(None) };
        let now = self.shared().clock.now();
        if link.consumed_at.is_some() || now >= link.expires_at {
            return Ok(None);
        }
        let Some(view) = query::run_view(db, RunId(link.run_id)).await? else { return Ok(None) };
        let pending = view.run.status == RunStatus::AwaitingApproval
            && matches!(view.run.step, StepState::Approval { .. })
            && i64::from(view.run.step_index) == i64::from(link.step_index);
        Ok(pending.then_some(LinkedApproval {
            link_id: link.id,
            principal: link.principal,
            expires_at: link.expires_at,
            view,
        }))
    }

    /// Decides through an email link: the decision is the link's approver's, with channel `email`
    /// and the link id as evidence; the link is consumed in the decision's transaction.
    ///
    /// # Errors
    /// [`JobError::LinkUnusable`] when the link cannot decide (nothing is recorded);
    /// [`JobError::Transition`] when the decision is refused (audited; the link stays unused).
    pub async fn decide_by_link(
        &self,
        token: &str,
        decision: Decision,
        comment: Option<String>,
    ) -> Result<RunId, JobError> {
        if !is_well_formed(token) {
            return Err(JobError::LinkUnusable);
        }
        match self.writer.submit(Job::DecideByLink { token_hash: hash(token), decision, comment }).await? {
            JobOutput::LinkDecided(run_id) => Ok(run_id),
            other => Err(crate::runtime::unexpected(&other)),
        }
    }
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
    let job = Job::IssueLinks { run_id, step_index, principals: principals.to_vec(), links };
    match writer.submit(job).await? {
        JobOutput::LinksIssued(expiries) => Ok(tokens
            .into_iter()
            .zip(expiries)
            .map(|((id, token), expires_at)| expires_at.map(|expires_at| IssuedLink { id, token, expires_at }))
            .collect()),
        other => Err(crate::runtime::unexpected(&other)),
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
