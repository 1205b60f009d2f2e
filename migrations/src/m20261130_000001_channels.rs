//! Channel state: single-use email approval links (stored hashed) and the Slack messages posted
//! for each approval, so they can be replaced in place and threaded.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    integer, pk_uuid, string, timestamp_with_time_zone, timestamp_with_time_zone_null, uuid,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("approval_links")
                .col(pk_uuid("id"))
                // SHA-256 of the token, hex; the token itself is only ever in the email.
                .col(string("token_hash"))
                .col(uuid("run_id"))
                .col(integer("step_index"))
                .col(string("principal"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("expires_at"))
                .col(timestamp_with_time_zone_null("consumed_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create().name("approval_links_hash").table("approval_links").col("token_hash").unique().to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("approval_links_run").table("approval_links").col("run_id").to_owned())
            .await?;

        m.create_table(
            Table::create()
                .table("slack_messages")
                .col(pk_uuid("id"))
                .col(uuid("run_id"))
                .col(integer("step_index"))
                .col(string("channel_id"))
                .col(string("ts"))
                // The principal the message was sent to (a DM), or empty for a shared channel.
                .col(string("recipient"))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("slack_messages_run").table("slack_messages").col("run_id").to_owned())
            .await?;
        m.create_index(
            Index::create()
                .name("slack_messages_channel_ts")
                .table("slack_messages")
                .col("channel_id")
                .col("ts")
                .unique()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("slack_messages").to_owned()).await?;
        m.drop_table(Table::drop().table("approval_links").to_owned()).await
    }
}
