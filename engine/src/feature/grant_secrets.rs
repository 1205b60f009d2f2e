//! One-time delivery of credentials minted for a grant's holder.
//!
//! A connector call that grants, renews or rotates may mint a credential for the holder
//! ([`crate::connector::Minted`]). The writer seals it ([`crate::sealed`], bound to the grant id)
//! and stores it in the transaction that records the call's result ([`Tx::store_grant_secret`],
//! audited `grant_secret_stored`); it never enters the outbox, the run state, an audit record or
//! a log. The holder — and only the holder — retrieves it once ([`RetrieveSecret`]): the value is
//! erased in the transaction that audits `grant_secret_retrieved`, and handed to the caller only
//! after that commit. What is not retrieved by its delivery deadline (`deliver_by`) is erased
//! unread by the secret sweep ([`ExpireSecret`], audited `grant_secret_expired`), checked again in
//! the writer's transaction, so a restart or several replicas change nothing: whichever replica
//! erases it audits it, once. A renewal or rotation that mints again replaces the value.
//!
//! An erased row keeps when and how it ended (`retrieved`, `expired`), so a second retrieval is
//! told the secret is gone rather than that there never was one.
//!
//! **The engine's copy.** A connector that revokes and verifies with the credential itself
//! ([`crate::connector::Connector::needs_credential`]: RFC 7009 revocation and RFC 7662
//! introspection take the token; GitHub revokes an installation token with the token) gets it
//! from a second sealed copy, `held`, bound to the grant with other associated data
//! ([`held_aad`]), which retrieval does not touch. A renewal or rotation that mints again
//! replaces it. It is erased ([`DiscardHeld`], by the same sweep) once the credential is dead: at
//! its `expires_at`, or, for a credential without one, an hour after the grant was revoked. A
//! revocation or absence check that finds the copy erased because the credential expired is done
//! without a call ([`Held::Expired`]): an expired credential no longer works.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect};
use secrecy::SecretString;
use tollgate_workflows::{CredentialVersion, Operation};

use crate::audit::AuditEvent;
use crate::connector::Minted;
use crate::ids::{GrantId, RunId};
use crate::run::GrantStatus;
use crate::store::entity::grant_secret;
use crate::store::query;
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal};
use crate::store::{Db, StoreError};

/// `ended` of a secret handed over to its holder.
pub const RETRIEVED: &str = "retrieved";
/// `ended` of a secret destroyed unread at its delivery deadline.
pub const EXPIRED: &str = "expired";

/// The associated data a grant's secret is sealed with: a sealed value copied to another grant's
/// row does not open.
#[must_use]
pub fn aad(grant_id: GrantId) -> Vec<u8> {
    format!("tollgate:grant_secret:{grant_id}").into_bytes()
}

/// The associated data of the engine's own copy ([`held`]): distinct from the holder's, so one
/// cannot be passed off as the other.
#[must_use]
pub fn held_aad(grant_id: GrantId) -> Vec<u8> {
    format!("tollgate:grant_secret:{grant_id}:held").into_bytes()
}

/// The associated data of the engine's copy of the version a rotation replaced.
#[must_use]
pub fn held_previous_aad(grant_id: GrantId) -> Vec<u8> {
    format!("tollgate:grant_secret:{grant_id}:held_previous").into_bytes()
}

/// How long the engine keeps its copy of a credential without an expiry after the grant's
/// revocation, for the checks that follow it.
pub const HELD_AFTER_REVOCATION: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Whether `caller` may retrieve the secret minted for `holder`'s grant: the holder alone — not
/// an admin, not the integration's owner. Anyone else is answered as for a grant that does not
/// exist (no existence oracle; see [`crate::policy`]).
#[must_use]
pub fn may_retrieve(caller: &str, holder: &str) -> bool {
    caller == holder
}

/// A credential a connector call minted, on its way to the writer with the call's result.
#[derive(Debug, Clone)]
pub(crate) struct MintedFor {
    /// The grant it is for.
    pub(crate) grant_id: GrantId,
    /// The call that minted it (grant, renew, rotate).
    pub(crate) operation: Operation,
    /// The value (redacted in `Debug`).
    pub(crate) minted: Minted,
    /// How long the holder has to retrieve it (`engine.secret_delivery_secs`).
    pub(crate) deliver_within: chrono::Duration,
    /// Whether the engine keeps its own copy: the connector revokes and verifies with it.
    pub(crate) hold: bool,
    /// A rotation whose replaced version stays valid for a grace period: the engine's copy of
    /// that version moves to `held_previous`, for the workflow's later revocation of it.
    pub(crate) keep_previous: bool,
}

impl Tx<'_> {
    /// Seals and stores a minted credential for its grant, replacing one not yet retrieved, and
    /// audits `grant_secret_stored` (never the value). Needs the sealing key: the dispatcher
    /// refuses a minted value without one before it gets here.
    pub(crate) async fn store_grant_secret(&mut self, run_id: RunId, m: &MintedFor) -> Result<(), JobError> {
        let Some(key) = self.shared().sealing.clone() else {
            // Unreachable through the dispatcher; never store a secret unsealed.
            tracing::error!(alert = true, grant.id = %m.grant_id, "a minted secret reached the writer without a sealing key; discarded");
            return Ok(());
        };
        let now = self.now();
        let previous = grant_secret::Entity::find_by_id(m.grant_id.0).one(self.conn()).await?;
        let replaced = previous.as_ref().is_some_and(|p| p.sealed.is_some());
        // The replaced version, resealed as the previous one, when the rotation keeps it valid.
        let (held_previous, previous_expires_at) = match previous.as_ref().filter(|_| m.hold && m.keep_previous) {
            Some(p) => match p.held.as_deref().map(|h| key.open(h, &held_aad(m.grant_id))) {
                Some(Ok(old)) => (Some(key.seal(&old, &held_previous_aad(m.grant_id))), p.expires_at),
                Some(Err(e)) => {
                    tracing::error!(alert = true, grant.id = %m.grant_id, error = %e, "the replaced credential's copy cannot be opened; its revocation will fail");
                    (None, None)
                }
                None => (None, None),
            },
            None => (None, None),
        };
        let deliver_by = now + m.deliver_within;
        let row = grant_secret::Model {
            grant_id: m.grant_id.0,
            sealed: Some(key.seal(&m.minted.value, &aad(m.grant_id))),
            held: m.hold.then(|| key.seal(&m.minted.value, &held_aad(m.grant_id))),
            held_previous,
            previous_expires_at,
            minted_at: now,
            deliver_by,
            expires_at: m.minted.expires_at.map(truncate_micros),
            ended_at: None,
            ended: None,
        };
        grant_secret::Entity::insert(row.into_active_model())
            .on_conflict(
                OnConflict::column(grant_secret::Column::GrantId)
                    .update_columns([
                        grant_secret::Column::Sealed,
                        grant_secret::Column::Held,
                        grant_secret::Column::HeldPrevious,
                        grant_secret::Column::PreviousExpiresAt,
                        grant_secret::Column::MintedAt,
                        grant_secret::Column::DeliverBy,
                        grant_secret::Column::ExpiresAt,
                        grant_secret::Column::EndedAt,
                        grant_secret::Column::Ended,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.write())
            .await?;
        self.audit(event(
            "grant_secret_stored",
            ("engine", "success", "system"),
            m.grant_id,
            Some(run_id),
            serde_json::json!({
                "grant_id": m.grant_id,
                "operation": m.operation.as_str(),
                "deliver_by": deliver_by,
                "expires_at": m.minted.expires_at.map(truncate_micros),
                "replaced": replaced,
            }),
        ));
        Ok(())
    }
}

/// What a retrieval found.
#[derive(Debug)]
pub enum Retrieval {
    /// The secret, handed over now and erased (this is its only appearance).
    Secret {
        /// The credential.
        value: SecretString,
        /// When the SaaS side expires it, if it said.
        expires_at: Option<DateTime<Utc>>,
    },
    /// It was retrieved already, or destroyed at its delivery deadline.
    Gone {
        /// [`RETRIEVED`] or [`EXPIRED`].
        how: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// The grant's connector minted no secret for it.
    NoSecret,
    /// The grant is not active (its secret, if any, stays sealed until its deadline).
    NotActive(GrantStatus),
    /// The secret cannot be opened with the configured key (none configured, or another key
    /// sealed it); it stays sealed until its deadline.
    Unreadable(String),
}

/// The holder retrieves the secret minted for their grant: opened, erased and audited
/// (`grant_secret_retrieved`) in one transaction; the caller gets it only after the commit. A
/// caller who is not the holder is refused as for a missing grant, and the attempt audited
/// (`grant_secret_refused`) when the grant exists.
pub(crate) struct RetrieveSecret {
    pub(crate) grant_id: GrantId,
    pub(crate) caller: String,
    pub(crate) channel: String,
}

#[async_trait::async_trait]
impl Job for RetrieveSecret {
    type Output = Retrieval;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<Retrieval, Refusal> {
        let grant = query::grant(tx.conn(), self.grant_id).await?.ok_or(JobError::NotFound("grant"))?;
        if !may_retrieve(&self.caller, &grant.principal) {
            let refused = event(
                "grant_secret_refused",
                (&self.channel, "denied", &self.caller),
                self.grant_id,
                Some(grant.run_id),
                serde_json::json!({ "grant_id": self.grant_id, "reason": "not_holder" }),
            );
            return Err(Refusal::Audited(JobError::NotFound("grant"), Box::new(refused)));
        }
        let Some(row) = grant_secret::Entity::find_by_id(self.grant_id.0).one(tx.conn()).await? else {
            return Ok(Retrieval::NoSecret);
        };
        let (Some(sealed), None) = (&row.sealed, &row.ended) else {
            let how = row.ended.clone().unwrap_or_else(|| EXPIRED.to_owned());
            return Ok(Retrieval::Gone { how, at: row.ended_at.unwrap_or(row.deliver_by) });
        };
        let now = tx.now();
        if row.deliver_by <= now {
            // Past its deadline, not yet swept: destroyed now, as the sweep would.
            expire(tx, &row, grant.run_id).await?;
            return Ok(Retrieval::Gone { how: EXPIRED.to_owned(), at: now });
        }
        if grant.status != GrantStatus::Active {
            return Ok(Retrieval::NotActive(grant.status));
        }
        let Some(key) = tx.shared().sealing.clone() else {
            return Ok(Retrieval::Unreadable("no [secrets] key is configured".to_owned()));
        };
        let value = match key.open(sealed, &aad(self.grant_id)) {
            Ok(value) => value,
            Err(e) => {
                tracing::error!(alert = true, grant.id = %self.grant_id, error = %e, "a grant's sealed secret cannot be opened");
                return Ok(Retrieval::Unreadable(e.to_string()));
            }
        };
        if !erase(tx, self.grant_id, RETRIEVED).await? {
            return Err(StoreError::Conflict.into());
        }
        tx.audit(event(
            "grant_secret_retrieved",
            (&self.channel, "success", &self.caller),
            self.grant_id,
            Some(grant.run_id),
            serde_json::json!({ "grant_id": self.grant_id, "minted_at": row.minted_at }),
        ));
        Ok(Retrieval::Secret { value, expires_at: row.expires_at })
    }
}

/// Destroys a grant's secret left unretrieved past its delivery deadline (checked again here:
/// the sweep read outside the transaction, and another replica may have got there first).
/// Answers whether it did.
pub(crate) struct ExpireSecret {
    pub(crate) grant_id: GrantId,
}

#[async_trait::async_trait]
impl Job for ExpireSecret {
    type Output = bool;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<bool, Refusal> {
        let Some(row) = grant_secret::Entity::find_by_id(self.grant_id.0).one(tx.conn()).await? else {
            return Ok(false);
        };
        if row.sealed.is_none() || row.deliver_by > tx.now() {
            return Ok(false);
        }
        let run_id = query::grant(tx.conn(), self.grant_id).await?.map(|g| g.run_id);
        Ok(expire_for(tx, &row, run_id).await?)
    }
}

async fn expire(tx: &mut Tx<'_>, row: &grant_secret::Model, run_id: RunId) -> Result<bool, JobError> {
    expire_for(tx, row, Some(run_id)).await
}

async fn expire_for(tx: &mut Tx<'_>, row: &grant_secret::Model, run_id: Option<RunId>) -> Result<bool, JobError> {
    let grant_id = GrantId(row.grant_id);
    if !erase(tx, grant_id, EXPIRED).await? {
        return Ok(false);
    }
    tracing::info!(grant.id = %grant_id, "a minted secret was not retrieved by its deadline; destroyed unread");
    tx.audit(event(
        "grant_secret_expired",
        ("engine", "expired", "system"),
        grant_id,
        run_id,
        serde_json::json!({ "grant_id": grant_id, "minted_at": row.minted_at, "deliver_by": row.deliver_by }),
    ));
    Ok(true)
}

/// Erases the sealed value, keeping when and how it ended. Answers whether there was one.
async fn erase(tx: &mut Tx<'_>, grant_id: GrantId, how: &str) -> Result<bool, JobError> {
    let now = tx.now();
    let res = grant_secret::Entity::update_many()
        .col_expr(grant_secret::Column::Sealed, Expr::value(Option::<String>::None))
        .col_expr(grant_secret::Column::Ended, Expr::value(how))
        .col_expr(grant_secret::Column::EndedAt, Expr::value(now))
        .filter(grant_secret::Column::GrantId.eq(grant_id.0))
        .filter(grant_secret::Column::Sealed.is_not_null())
        .exec(tx.write())
        .await?;
    Ok(res.rows_affected == 1)
}

fn event(
    event_type: &str,
    (channel, outcome, actor): (&str, &str, &str),
    grant_id: GrantId,
    run_id: Option<RunId>,
    details: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        event_type: event_type.to_owned(),
        channel: channel.to_owned(),
        outcome: outcome.to_owned(),
        actor: actor.to_owned(),
        subject: format!("grant:{grant_id}"),
        run_id: run_id.map(|r| r.0),
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details,
    }
}

/// Timestamps are kept to the microsecond on both backends.
fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::DurationRound as _;
    t.duration_trunc(chrono::Duration::microseconds(1)).unwrap_or(t)
}

/// Grants whose secret is still sealed past its delivery deadline, oldest deadline first.
///
/// # Errors
/// Database failures.
pub(crate) async fn overdue(db: &Db, now: DateTime<Utc>, limit: u64) -> Result<Vec<GrantId>, StoreError> {
    let ids: Vec<uuid::Uuid> = grant_secret::Entity::find()
        .select_only()
        .column(grant_secret::Column::GrantId)
        .filter(grant_secret::Column::Sealed.is_not_null())
        .filter(grant_secret::Column::DeliverBy.lte(now))
        .order_by_asc(grant_secret::Column::DeliverBy)
        .limit(limit)
        .into_tuple()
        .all(&db.read)
        .await?;
    Ok(ids.into_iter().map(GrantId).collect())
}

/// The earliest delivery deadline of a secret still sealed, or expiry of a credential the
/// engine still holds.
///
/// # Errors
/// Database failures.
pub(crate) async fn next_deadline(db: &Db) -> Result<Option<DateTime<Utc>>, StoreError> {
    let delivery: Option<DateTime<Utc>> = grant_secret::Entity::find()
        .select_only()
        .column(grant_secret::Column::DeliverBy)
        .filter(grant_secret::Column::Sealed.is_not_null())
        .order_by_asc(grant_secret::Column::DeliverBy)
        .into_tuple()
        .one(&db.read)
        .await?;
    let held: Option<DateTime<Utc>> = grant_secret::Entity::find()
        .select_only()
        .column(grant_secret::Column::ExpiresAt)
        .filter(grant_secret::Column::Held.is_not_null())
        .filter(grant_secret::Column::ExpiresAt.is_not_null())
        .order_by_asc(grant_secret::Column::ExpiresAt)
        .into_tuple()
        .one(&db.read)
        .await?;
    let previous: Option<DateTime<Utc>> = grant_secret::Entity::find()
        .select_only()
        .column(grant_secret::Column::PreviousExpiresAt)
        .filter(grant_secret::Column::HeldPrevious.is_not_null())
        .filter(grant_secret::Column::PreviousExpiresAt.is_not_null())
        .order_by_asc(grant_secret::Column::PreviousExpiresAt)
        .into_tuple()
        .one(&db.read)
        .await?;
    Ok(delivery.into_iter().chain(held).chain(previous).min())
}

/// What the engine holds of the credential minted for a grant, for a connector that revokes and
/// verifies with it.
#[derive(Debug)]
pub(crate) enum Held {
    /// The latest minted credential.
    Credential(SecretString),
    /// It expired (its `expires_at` has passed): it no longer works, whether or not the copy
    /// was erased yet.
    Expired,
    /// Nothing: no credential was minted for the grant, or the copy of one without an expiry was
    /// erased after the grant's revocation.
    Nothing,
}

/// The engine's copy of the credential minted for `grant_id` ([`held_aad`]).
///
/// # Errors
/// Database failures; a copy that does not open with the configured key (or no key) is a
/// permanent error message naming the grant, never the value.
pub(crate) async fn held(
    db: &Db,
    key: Option<&crate::sealed::SealingKey>,
    grant_id: GrantId,
    version: CredentialVersion,
    now: DateTime<Utc>,
) -> Result<Held, HeldError> {
    let Some(row) = grant_secret::Entity::find_by_id(grant_id.0).one(&db.read).await? else {
        return Ok(Held::Nothing);
    };
    let (sealed, expires_at, aad, what) = match version {
        CredentialVersion::Current => (row.held, row.expires_at, held_aad(grant_id), "the credential"),
        CredentialVersion::Previous => {
            (row.held_previous, row.previous_expires_at, held_previous_aad(grant_id), "the previous credential")
        }
    };
    if expires_at.is_some_and(|t| t <= now) {
        return Ok(Held::Expired);
    }
    let Some(sealed) = sealed else { return Ok(Held::Nothing) };
    let Some(key) = key else {
        return Err(HeldError::Unreadable(format!(
            "{what} minted for grant {grant_id} is sealed, and no [secrets] key is configured to open it"
        )));
    };
    key.open(&sealed, &aad)
        .map(Held::Credential)
        .map_err(|e| HeldError::Unreadable(format!("{what} minted for grant {grant_id} cannot be opened: {e}")))
}

/// Why [`held`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeldError {
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The copy does not open.
    #[error("{0}")]
    Unreadable(String),
}

impl From<sea_orm::DbErr> for HeldError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Store(e.into())
    }
}

/// Grants whose credential the engine holds past the time it may: expired, or without an expiry
/// and revoked for [`HELD_AFTER_REVOCATION`].
///
/// # Errors
/// Database failures.
pub(crate) async fn held_overdue(db: &Db, now: DateTime<Utc>, limit: u64) -> Result<Vec<GrantId>, StoreError> {
    use crate::store::entity::grant;
    use sea_orm::sea_query::Query;
    let revoked_long_ago = Query::select()
        .column(grant::Column::Id)
        .from(grant::Entity)
        .and_where(grant::Column::Status.eq(GrantStatus::Revoked.as_str()))
        .and_where(grant::Column::RevokedAt.lte(now - HELD_AFTER_REVOCATION))
        .to_owned();
    let dead = |held: grant_secret::Column, expires: grant_secret::Column| {
        sea_orm::Condition::all().add(held.is_not_null()).add(
            sea_orm::Condition::any().add(expires.lte(now)).add(
                sea_orm::Condition::all()
                    .add(expires.is_null())
                    .add(grant_secret::Column::GrantId.in_subquery(revoked_long_ago.clone())),
            ),
        )
    };
    let ids: Vec<uuid::Uuid> = grant_secret::Entity::find()
        .select_only()
        .column(grant_secret::Column::GrantId)
        .filter(
            sea_orm::Condition::any()
                .add(dead(grant_secret::Column::Held, grant_secret::Column::ExpiresAt))
                .add(dead(grant_secret::Column::HeldPrevious, grant_secret::Column::PreviousExpiresAt)),
        )
        .limit(limit)
        .into_tuple()
        .all(&db.read)
        .await?;
    Ok(ids.into_iter().map(GrantId).collect())
}

/// Erases the engine's copy of a grant's credential once it may no longer be held (checked again
/// here, as [`held_overdue`] read outside the transaction). Answers whether it did. Not audited:
/// the grant's state does not change, and the copy was never shown to anyone.
pub(crate) struct DiscardHeld {
    pub(crate) grant_id: GrantId,
}

#[async_trait::async_trait]
impl Job for DiscardHeld {
    type Output = bool;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<bool, Refusal> {
        let now = tx.now();
        let Some(row) = grant_secret::Entity::find_by_id(self.grant_id.0).one(tx.conn()).await? else {
            return Ok(false);
        };
        if row.held.is_none() && row.held_previous.is_none() {
            return Ok(false);
        }
        let revoked_long_ago = query::grant(tx.conn(), self.grant_id).await?.is_some_and(|g| {
            g.status == GrantStatus::Revoked && g.revoked_at.is_some_and(|t| t <= now - HELD_AFTER_REVOCATION)
        });
        let dead = |held: &Option<String>, expires: Option<DateTime<Utc>>| {
            held.is_some() && expires.map_or(revoked_long_ago, |t| t <= now)
        };
        let mut erase = grant_secret::Entity::update_many().filter(grant_secret::Column::GrantId.eq(self.grant_id.0));
        let mut any = false;
        if dead(&row.held, row.expires_at) {
            erase = erase.col_expr(grant_secret::Column::Held, Expr::value(Option::<String>::None));
            any = true;
        }
        if dead(&row.held_previous, row.previous_expires_at) {
            erase = erase.col_expr(grant_secret::Column::HeldPrevious, Expr::value(Option::<String>::None));
            any = true;
        }
        if !any {
            return Ok(false);
        }
        erase.exec(tx.write()).await?;
        tracing::debug!(grant.id = %self.grant_id, "the engine's copy of an expired or revoked credential was erased");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use sea_orm::{ConnectionTrait as _, EntityTrait as _, IntoActiveModel as _, Statement};
    use secrecy::{ExposeSecret as _, SecretString};
    use tollgate_workflows::{CredentialVersion, Operation};

    use super::{DiscardHeld, EXPIRED, ExpireSecret, Held, MintedFor, RETRIEVED, Retrieval, aad, held, may_retrieve};
    use crate::clock::{Clock as _, ManualClock};
    use crate::connector::Minted;
    use crate::ids::{GrantId, RunId};
    use crate::run::{Grant, GrantStatus};
    use crate::store::tx::Tx;
    use crate::store::writer::{Job, JobError, Refusal};
    use crate::store::{self, entity};
    use crate::{Engine, EngineSettings, Shared};

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn only_the_holder_may_retrieve() {
        let table =
            [("alice", "alice", true), ("admin", "alice", false), ("bob", "alice", false), ("", "alice", false)];
        for (caller, holder, want) in table {
            assert_eq!(may_retrieve(caller, holder), want, "{caller} for {holder}");
        }
    }

    #[test]
    fn a_secret_is_bound_to_its_grant() {
        let key = crate::sealed::SealingKey::from_hex(&SecretString::from(KEY.to_owned())).unwrap();
        let (g1, g2) = (GrantId(uuid::Uuid::from_u128(1)), GrantId(uuid::Uuid::from_u128(2)));
        let sealed = key.seal(&SecretString::from("CANARY".to_owned()), &aad(g1));
        assert!(key.open(&sealed, &aad(g1)).is_ok());
        assert!(key.open(&sealed, &aad(g2)).is_err(), "copied to another grant's row, it does not open");
    }

    /// Stores a minted secret as a connector result would.
    struct Store(RunId, MintedFor);

    #[async_trait::async_trait]
    impl Job for Store {
        type Output = ();

        async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
            Ok(tx.store_grant_secret(self.0, &self.1).await?)
        }
    }

    fn minted(grant_id: GrantId, value: &str, within_secs: i64) -> MintedFor {
        MintedFor {
            grant_id,
            operation: Operation::Grant,
            minted: Minted { value: SecretString::from(value.to_owned()), expires_at: None },
            deliver_within: chrono::Duration::seconds(within_secs),
            hold: false,
            keep_previous: false,
        }
    }

    async fn engine(clock: &ManualClock) -> (Arc<Engine>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let db = store::connect(&url, 2).await.unwrap();
        store::migrate(&db).await.unwrap();
        let key = crate::sealed::SealingKey::from_hex(&SecretString::from(KEY.to_owned())).unwrap();
        let shared = Shared {
            live: crate::context::LiveCell::new(
                tollgate_workflows::Catalog::new(),
                crate::directory::Directory::default(),
            ),
            clock: Arc::new(clock.clone()),
            node_id: "test".to_owned(),
            lease: chrono::Duration::seconds(60),
            channels: Vec::new(),
            expiry_warning: None,
            sealing: Some(Arc::new(key)),
        };
        let settings = EngineSettings { scan_interval: Duration::from_millis(20), ..EngineSettings::default() };
        let engine = Engine::start(db, shared, Default::default(), Vec::new(), settings).await.unwrap();
        (Arc::new(engine), dir)
    }

    async fn grant(e: &Engine, holder: &str, status: GrantStatus) -> (GrantId, RunId) {
        let now = e.shared().clock.now();
        let g = Grant {
            id: GrantId(uuid::Uuid::now_v7()),
            run_id: RunId(uuid::Uuid::now_v7()),
            integration: "crm".to_owned(),
            principal: holder.to_owned(),
            scopes: vec!["read".to_owned()],
            status,
            granted_at: Some(now),
            expires_at: Some(now + chrono::Duration::hours(1)),
            revoked_at: None,
            reference: None,
            created_at: now,
            updated_at: now,
        };
        entity::grant::Entity::insert(store::grant_model(&g).into_active_model())
            .exec_without_returning(&e.db().write)
            .await
            .unwrap();
        (g.id, g.run_id)
    }

    async fn audited(e: &Engine, kind: &str) -> Vec<String> {
        let sql = format!("SELECT details FROM audit_log WHERE event_type = '{kind}' ORDER BY seq");
        let rows = e.db().read.query_all_raw(Statement::from_string(e.db().backend(), sql)).await.unwrap();
        rows.iter().map(|r| r.try_get::<String>("", "details").unwrap()).collect()
    }

    async fn retrieve(e: &Engine, g: GrantId, who: &str) -> Result<Retrieval, JobError> {
        e.retrieve_grant_secret(g, who, "api").await
    }

    #[tokio::test]
    async fn a_secret_is_handed_over_once_replaced_by_a_new_mint_and_destroyed_at_its_deadline() {
        let clock = ManualClock::new("2030-01-01T00:00:00Z".parse().unwrap());
        let (e, _dir) = engine(&clock).await;
        let (g1, r1) = grant(&e, "alice", GrantStatus::Active).await;

        // Nothing minted yet.
        assert!(matches!(retrieve(&e, g1, "alice").await, Ok(Retrieval::NoSecret)));
        e.writer.submit(Store(r1, minted(g1, "first-CANARY", 600))).await.unwrap();
        e.writer.submit(Store(r1, minted(g1, "second-CANARY", 600))).await.unwrap();
        let stored = audited(&e, "grant_secret_stored").await;
        assert_eq!(stored.len(), 2);
        assert!(stored[0].contains("\"replaced\":false") && stored[1].contains("\"replaced\":true"), "{stored:?}");

        // Only the holder; the one not retrieved was replaced by the renewal's.
        assert!(matches!(retrieve(&e, g1, "bob").await, Err(JobError::NotFound("grant"))));
        assert!(matches!(retrieve(&e, GrantId(uuid::Uuid::now_v7()), "alice").await, Err(JobError::NotFound(_))));
        let Ok(Retrieval::Secret { value, .. }) = retrieve(&e, g1, "alice").await else { panic!("not handed over") };
        assert_eq!(value.expose_secret(), "second-CANARY");
        assert!(matches!(retrieve(&e, g1, "alice").await, Ok(Retrieval::Gone { how, .. }) if how == RETRIEVED));
        assert_eq!(audited(&e, "grant_secret_retrieved").await.len(), 1);
        assert_eq!(audited(&e, "grant_secret_refused").await.len(), 1);

        // Not retrieved by its deadline: destroyed unread by the sweep, audited once.
        let (g2, r2) = grant(&e, "alice", GrantStatus::Active).await;
        e.writer.submit(Store(r2, minted(g2, "third-CANARY", 30))).await.unwrap();
        clock.advance(chrono::Duration::seconds(29));
        assert!(!e.writer.submit(ExpireSecret { grant_id: g2 }).await.unwrap(), "not before its deadline");
        assert!(audited(&e, "grant_secret_expired").await.is_empty());
        clock.advance(chrono::Duration::seconds(2));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while audited(&e, "grant_secret_expired").await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the sweep did not destroy the overdue secret");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(retrieve(&e, g2, "alice").await, Ok(Retrieval::Gone { how, .. }) if how == EXPIRED));
        assert_eq!(audited(&e, "grant_secret_expired").await.len(), 1);

        // A grant no longer active hands nothing over; past the deadline, retrieval destroys it.
        let (g3, r3) = grant(&e, "alice", GrantStatus::Revoked).await;
        e.writer.submit(Store(r3, minted(g3, "fourth-CANARY", 600))).await.unwrap();
        assert!(matches!(retrieve(&e, g3, "alice").await, Ok(Retrieval::NotActive(GrantStatus::Revoked))));

        // Nothing the audit log or the table holds shows a value.
        let all = e.db().read.query_all_raw(Statement::from_string(
            e.db().backend(),
            "SELECT details FROM audit_log UNION ALL SELECT COALESCE(sealed, '') FROM grant_secrets".to_owned(),
        ));
        for row in all.await.unwrap() {
            let text: String = row.try_get_by_index(0).unwrap();
            assert!(!text.contains("CANARY"), "{text}");
        }
        e.shutdown().await;
    }

    /// The engine's own copy, for connectors that revoke with the credential: untouched by the
    /// holder's retrieval, replaced by a new mint, answered `Expired` once the credential's expiry
    /// has passed, and then erased by the sweep; a copy without an expiry stays while the grant is
    /// active.
    #[tokio::test]
    async fn the_engine_holds_its_own_copy_until_the_credential_is_dead() {
        let clock = ManualClock::new("2030-01-01T00:00:00Z".parse().unwrap());
        let (e, _dir) = engine(&clock).await;
        let key = e.shared().sealing.clone();
        let (g, r) = grant(&e, "alice", GrantStatus::Active).await;
        let expiring = |value: &str, secs: i64| MintedFor {
            hold: true,
            minted: Minted {
                value: SecretString::from(value.to_owned()),
                expires_at: Some(clock.now() + chrono::Duration::seconds(secs)),
            },
            ..minted(g, value, 3600)
        };
        let held_now = || held(e.db(), key.as_deref(), g, CredentialVersion::Current, clock.now());

        assert!(matches!(held_now().await.unwrap(), Held::Nothing), "nothing minted yet");
        e.writer.submit(Store(r, expiring("first-CANARY", 600))).await.unwrap();
        let Ok(Retrieval::Secret { .. }) = retrieve(&e, g, "alice").await else { panic!("not handed over") };
        let Held::Credential(c) = held_now().await.unwrap() else { panic!("the engine's copy went with the holder's") };
        assert_eq!(c.expose_secret(), "first-CANARY");
        e.writer.submit(Store(r, expiring("second-CANARY", 600))).await.unwrap();
        let Held::Credential(c) = held_now().await.unwrap() else { panic!("no copy after a renewal") };
        assert_eq!(c.expose_secret(), "second-CANARY", "a new mint replaces the copy");

        // Another key, or another grant's associated data, does not open it.
        let other = crate::sealed::SealingKey::from_hex(&SecretString::from("11".repeat(32))).unwrap();
        assert!(held(e.db(), Some(&other), g, CredentialVersion::Current, clock.now()).await.is_err());
        assert!(held(e.db(), None, g, CredentialVersion::Current, clock.now()).await.is_err());

        // Past its expiry: answered `Expired`, then erased by the sweep.
        clock.advance(chrono::Duration::seconds(601));
        assert!(matches!(held_now().await.unwrap(), Held::Expired));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let row = entity::grant_secret::Entity::find_by_id(g.0).one(&e.db().read).await.unwrap().unwrap();
            if row.held.is_none() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the sweep did not erase the expired copy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(held_now().await.unwrap(), Held::Expired));

        // Without an expiry: kept while the grant is active, whatever the clock says.
        let (g2, r2) = grant(&e, "alice", GrantStatus::Active).await;
        e.writer.submit(Store(r2, MintedFor { hold: true, ..minted(g2, "third-CANARY", 3600) })).await.unwrap();
        clock.advance(chrono::Duration::days(30));
        assert!(!e.writer.submit(DiscardHeld { grant_id: g2 }).await.unwrap());
        assert!(matches!(
            held(e.db(), key.as_deref(), g2, CredentialVersion::Current, clock.now()).await.unwrap(),
            Held::Credential(_)
        ));
        e.shutdown().await;
    }
}
