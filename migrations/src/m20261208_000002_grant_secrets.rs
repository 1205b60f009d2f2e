//! Credentials minted for a grant's holder, kept sealed until handed over once
//! (`POST /v1/grants/{id}/secret`) or destroyed unread at their delivery deadline.
//!
//! One row per grant: a renewal or rotation that mints again replaces the value. Once handed
//! over or destroyed, `sealed` is erased and the row keeps only when and how it ended
//! (`ended`: `retrieved` or `expired`), so a second retrieval is told the secret is gone.

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
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("grant_secrets").to_owned()).await
    }
}
