//! API tokens: only the SHA-256 of a token is stored; creating and revoking one is audited,
//! and a use is recorded at most once a minute ([`crate::token::USE_GRANULARITY`]).

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter};

use crate::audit::AuditEvent;
use crate::directory::Role;
use crate::policy::{self, Viewer};
use crate::store::entity::api_token;
use crate::store::tx::Tx;
use crate::store::writer::{Job, JobError, Refusal};
use crate::token::{ApiToken, USE_GRANULARITY};

/// Stores a token's hash for `principal`; answers the stored token.
pub(crate) struct CreateToken {
    pub(crate) principal: String,
    pub(crate) label: String,
    pub(crate) token_hash: String,
    pub(crate) ttl: Option<std::time::Duration>,
    pub(crate) actor: String,
    pub(crate) channel: String,
}

#[async_trait::async_trait]
impl Job for CreateToken {
    type Output = ApiToken;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<ApiToken, Refusal> {
        let id = uuid::Uuid::now_v7();
        let now = tx.now();
        // Lifetimes are checked against `token::MAX_TTL` first; the fallback is never reached.
        let expires_at = self.ttl.map(|ttl| {
            chrono::Duration::from_std(ttl)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        });
        let model = api_token::Model {
            id,
            principal: self.principal.clone(),
            name: self.label.clone(),
            token_hash: self.token_hash.clone(),
            created_at: now,
            revoked_at: None,
            expires_at,
            last_used_at: None,
        };
        api_token::Entity::insert(model.clone().into_active_model()).exec_without_returning(tx.write()).await?;
        tx.audit(token_event("token_created", &self.actor, &self.channel, &model));
        Ok(ApiToken::from(model))
    }
}

/// Revokes a token, if the caller may ([`policy::may_manage_token`], checked here, in the
/// transaction, whatever path asked); a token already revoked is answered as it is. A caller who
/// may not manage the token is told it does not exist.
pub(crate) struct RevokeToken {
    pub(crate) token_id: uuid::Uuid,
    pub(crate) caller: String,
    pub(crate) caller_roles: Vec<Role>,
    pub(crate) channel: String,
}

#[async_trait::async_trait]
impl Job for RevokeToken {
    type Output = ApiToken;

    async fn run(&self, tx: &mut Tx<'_>) -> Result<ApiToken, Refusal> {
        let found = api_token::Entity::find_by_id(self.token_id).one(tx.conn()).await?;
        let viewer = Viewer::new(&self.caller, &self.caller_roles);
        let Some(mut model) = found.filter(|t| policy::may_manage_token(viewer, &t.principal)) else {
            return Err(JobError::NotFound("token").into());
        };
        if model.revoked_at.is_some() {
            return Ok(ApiToken::from(model));
        }
        let now = tx.now();
        api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedAt, Expr::value(now))
            .filter(api_token::Column::Id.eq(self.token_id))
            .exec(tx.write())
            .await?;
        let status = ApiToken::from(model.clone()).status(now);
        model.revoked_at = Some(now);
        let mut event = token_event("token_revoked", &self.caller, &self.channel, &model);
        if let Some(details) = event.details.as_object_mut() {
            details.insert("status_before".to_owned(), status.as_str().into());
        }
        tx.audit(event);
        Ok(ApiToken::from(model))
    }
}

/// Records that a token authenticated a request at `at`, unless a use within
/// [`USE_GRANULARITY`] is recorded already (two replicas recording the same minute write once).
pub(crate) struct TouchToken {
    pub(crate) token_id: uuid::Uuid,
    pub(crate) at: DateTime<Utc>,
}

#[async_trait::async_trait]
impl Job for TouchToken {
    type Output = ();

    async fn run(&self, tx: &mut Tx<'_>) -> Result<(), Refusal> {
        let stale = self.at - USE_GRANULARITY;
        api_token::Entity::update_many()
            .set(api_token::ActiveModel { last_used_at: Set(Some(self.at)), ..Default::default() })
            .filter(api_token::Column::Id.eq(self.token_id))
            .filter(
                sea_orm::Condition::any()
                    .add(api_token::Column::LastUsedAt.is_null())
                    .add(api_token::Column::LastUsedAt.lte(stale)),
            )
            .exec(tx.write())
            .await?;
        Ok(())
    }
}

fn token_event(event_type: &str, actor: &str, channel: &str, t: &api_token::Model) -> AuditEvent {
    AuditEvent {
        event_type: event_type.to_owned(),
        channel: channel.to_owned(),
        outcome: "success".to_owned(),
        actor: actor.to_owned(),
        subject: format!("principal:{}", t.principal),
        run_id: None,
        justification: None,
        workflow_key: None,
        workflow_version: None,
        details: serde_json::json!({ "token_id": t.id, "name": t.name, "expires_at": t.expires_at }),
    }
}

impl From<api_token::Model> for ApiToken {
    fn from(m: api_token::Model) -> Self {
        Self {
            id: m.id,
            principal: m.principal,
            label: m.name,
            created_at: m.created_at,
            expires_at: m.expires_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
        }
    }
}
