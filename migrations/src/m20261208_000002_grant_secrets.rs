//! Credentials minted for a grant's holder, kept sealed until handed over once
//! (`POST /v1/grants/{id}/secret`) or destroyed unread at their delivery deadline.
//!
//! One row per grant: a renewal or rotation that mints again replaces the value. Once handed
//! over or destroyed, `sealed` is erased and the row keeps only when and how it ended
//! (`ended`: `retrieved` or `expired`), so a second retrieval is told the secret is gone.
//!
//! `held` is the engine's own sealed copy of the latest minted credential, for connectors that
//! revoke or verify with the credential itself (RFC 7009, RFC 7662, GitHub's
//! `DELETE /installation/token`). It outlives the holder's copy and is erased once the credential
//! has expired (`expires_at`), or, for one without an expiry, an hour after the grant's revocation.
//! `held_previous` (with `previous_expires_at`) is the version a rotation replaced, kept for the
//! grace period's end, when the workflow revokes it and checks that it is dead.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    pk_uuid, string_null, text_null, timestamp_with_time_zone, timestamp_with_time_zone_null,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("grant_secrets")
                .col(pk_uuid("grant_id"))
                .col(text_null("sealed"))
                .col(text_null("held"))
                .col(text_null("held_previous"))
                .col(timestamp_with_time_zone_null("previous_expires_at"))
                .col(timestamp_with_time_zone("minted_at"))
                .col(timestamp_with_time_zone("deliver_by"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone_null("ended_at"))
                .col(string_null("ended"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("idx_grant_secrets_deliver_by").table("grant_secrets").col("deliver_by").to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("idx_grant_secrets_expires_at").table("grant_secrets").col("expires_at").to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("grant_secrets").to_owned()).await
    }
}
