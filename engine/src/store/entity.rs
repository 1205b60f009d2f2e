//! sea-orm entities, one module per table. The migrations crate owns the schema; these mirror it.

#![expect(missing_docs, reason = "entity fields mirror the documented schema one to one")]

macro_rules! entity_boilerplate {
    () => {
        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    };
}

pub mod run {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub kind: String,
        pub workflow_key: String,
        pub workflow_version: i32,
        pub status: String,
        pub requester: String,
        pub integration: String,
        #[sea_orm(column_type = "Text")]
        pub scopes: String,
        pub duration_secs: i64,
        #[sea_orm(column_type = "Text")]
        pub justification: String,
        pub grant_id: Option<Uuid>,
        pub step_index: i32,
        #[sea_orm(column_type = "Text")]
        pub step_state: String,
        pub version: i64,
        #[sea_orm(column_type = "Text", nullable)]
        pub reason: Option<String>,
        pub break_glass: bool,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod decision {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "decisions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub run_id: Uuid,
        pub step_index: i32,
        pub approver: String,
        pub decision: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub comment: Option<String>,
        pub channel: String,
        pub decided_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub run_id: Uuid,
        pub integration: String,
        pub principal: String,
        #[sea_orm(column_type = "Text")]
        pub scopes: String,
        pub status: String,
        pub granted_at: Option<DateTimeUtc>,
        pub expires_at: Option<DateTimeUtc>,
        pub revoked_at: Option<DateTimeUtc>,
        pub reference: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod timer {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "timers")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub run_id: Uuid,
        pub kind: String,
        pub step_index: i32,
        pub due_at: DateTimeUtc,
        /// The replica (`node_id`) that armed it and fires it when due; others take over later.
        pub owner: Option<String>,
    }
    entity_boilerplate!();
}

pub mod outbox {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub run_id: Uuid,
        pub step_index: i32,
        pub kind: String,
        pub idempotency_key: String,
        #[sea_orm(column_type = "Text")]
        pub payload: String,
        pub status: String,
        pub attempts: i32,
        pub next_attempt_at: DateTimeUtc,
        pub lease_owner: Option<String>,
        pub lease_until: Option<DateTimeUtc>,
        #[sea_orm(column_type = "Text", nullable)]
        pub last_error: Option<String>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod task {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub outbox_id: Uuid,
        pub run_id: Uuid,
        pub operator: String,
        #[sea_orm(column_type = "Text")]
        pub instructions: String,
        pub status: String,
        pub resolved_by: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub comment: Option<String>,
        pub resolved_at: Option<DateTimeUtc>,
        pub created_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod audit_log {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub seq: i64,
        pub recorded_at: DateTimeUtc,
        pub event_type: String,
        pub channel: String,
        pub outcome: String,
        pub actor: String,
        pub subject: String,
        pub run_id: Option<Uuid>,
        #[sea_orm(column_type = "Text", nullable)]
        pub justification: Option<String>,
        pub workflow_key: Option<String>,
        pub workflow_version: Option<i32>,
        #[sea_orm(column_type = "Text")]
        pub details: String,
        pub prev_hash: String,
        pub hash: String,
    }
    entity_boilerplate!();
}

pub mod audit_head {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_head")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub seq: i64,
        pub hash: String,
    }
    entity_boilerplate!();
}

pub mod schedule {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "schedules")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        pub last_tick: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod api_token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_tokens")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub principal: String,
        pub name: String,
        pub token_hash: String,
        pub created_at: DateTimeUtc,
        pub revoked_at: Option<DateTimeUtc>,
        /// After this instant the token no longer authenticates; `None`: no expiry.
        pub expires_at: Option<DateTimeUtc>,
        /// When it last authenticated a request, to within [`crate::runtime::TOKEN_USE_GRANULARITY`].
        pub last_used_at: Option<DateTimeUtc>,
    }
    entity_boilerplate!();
}

pub mod idempotency_key {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub principal: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        pub request_hash: String,
        pub status_code: i32,
        #[sea_orm(column_type = "Text")]
        pub response: String,
        pub created_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod workflow_definition {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "workflow_definitions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        pub kind: String,
        #[sea_orm(column_type = "Text")]
        pub source: String,
        pub sha256: String,
        pub loaded_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod directory_entry {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "directory_entries")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        #[sea_orm(column_type = "Text")]
        pub document: String,
        pub active: bool,
        pub updated_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod approval_link {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "approval_links")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub token_hash: String,
        pub run_id: Uuid,
        pub step_index: i32,
        pub principal: String,
        pub created_at: DateTimeUtc,
        pub expires_at: DateTimeUtc,
        pub consumed_at: Option<DateTimeUtc>,
    }
    entity_boilerplate!();
}

pub mod slack_message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "slack_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub run_id: Uuid,
        pub step_index: i32,
        pub channel_id: String,
        pub ts: String,
        pub recipient: String,
        pub created_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod grant_secret {
    use sea_orm::entity::prelude::*;

    /// A credential minted for a grant's holder: sealed (`crate::sealed`, bound to the grant id)
    /// until handed over once or destroyed at `deliver_by`; then `sealed` is erased and `ended`
    /// says how (`retrieved`, `expired`). `held` is the engine's own sealed copy of the latest
    /// minted credential, for connectors that revoke and verify with it
    /// (`Connector::needs_credential`), kept until the credential is dead.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "grant_secrets")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub grant_id: Uuid,
        #[sea_orm(column_type = "Text", nullable)]
        pub sealed: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub held: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub held_previous: Option<String>,
        pub previous_expires_at: Option<DateTimeUtc>,
        pub minted_at: DateTimeUtc,
        pub deliver_by: DateTimeUtc,
        pub expires_at: Option<DateTimeUtc>,
        pub ended_at: Option<DateTimeUtc>,
        pub ended: Option<String>,
    }
    entity_boilerplate!();

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GrantSecret")
                .field("grant_id", &self.grant_id)
                .field("sealed", &self.sealed.as_ref().map(|_| "[sealed]"))
                .field("held", &self.held.as_ref().map(|_| "[sealed]"))
                .field("held_previous", &self.held_previous.as_ref().map(|_| "[sealed]"))
                .field("previous_expires_at", &self.previous_expires_at)
                .field("minted_at", &self.minted_at)
                .field("deliver_by", &self.deliver_by)
                .field("expires_at", &self.expires_at)
                .field("ended_at", &self.ended_at)
                .field("ended", &self.ended)
                .finish()
        }
    }
}

pub mod credential {
    use sea_orm::entity::prelude::*;

    /// An inventoried integration credential (`crate::credential`); its secret is in
    /// `credential_versions`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credentials")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        #[sea_orm(unique)]
        pub name: String,
        pub kind: String,
        pub integration: String,
        pub owner: String,
        #[sea_orm(column_type = "Text")]
        pub scopes: String,
        pub environment: String,
        pub issued_at: Option<DateTimeUtc>,
        pub expires_at: Option<DateTimeUtc>,
        pub last_used_at: Option<DateTimeUtc>,
        pub last_rotated_at: Option<DateTimeUtc>,
        pub revocation: String,
        #[sea_orm(column_type = "Text", nullable)]
        pub revocation_instructions: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub revocation_url: Option<String>,
        #[sea_orm(column_type = "Text")]
        pub description: String,
        pub current_version: i32,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }
    entity_boilerplate!();
}

pub mod credential_version {
    use sea_orm::entity::prelude::*;

    /// One version of a credential's secret: a reference to a secret store, or the value sealed
    /// (`crate::sealed`, bound to the credential id and version). `state`: `active` (the
    /// current version) or `retired`.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "credential_versions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        pub credential_id: Uuid,
        pub version: i32,
        pub state: String,
        pub hint: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub secret_ref: Option<String>,
        #[sea_orm(column_type = "Text", nullable)]
        pub sealed_value: Option<String>,
        pub created_at: DateTimeUtc,
        pub retired_at: Option<DateTimeUtc>,
    }
    entity_boilerplate!();

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("CredentialVersion")
                .field("credential_id", &self.credential_id)
                .field("version", &self.version)
                .field("state", &self.state)
                .field("secret_ref", &self.secret_ref)
                .field("sealed_value", &self.sealed_value.as_ref().map(|_| "[sealed]"))
                .finish_non_exhaustive()
        }
    }
}
