//! Durable schedules: the last tick of each engine schedule (drift reconciliation) that some
//! replica claimed. A tick is claimed by moving `last_tick` forward inside the writer's
//! transaction, so two replicas never run the same tick, and a tick missed during downtime is
//! found (and run once) after start.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string, timestamp_with_time_zone};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("schedules")
                .col(string("name").primary_key())
                .col(timestamp_with_time_zone("last_tick"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("schedules").to_owned()).await
    }
}
