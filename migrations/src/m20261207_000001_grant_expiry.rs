//! An index for the expiry sweep: active grants by expiry, so finding the overdue ones reads only
//! those (the sweep runs every minute on every replica).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(
            Index::create().name("grants_status_expiry").table("grants").col("status").col("expires_at").to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("grants_status_expiry").table("grants").to_owned()).await
    }
}
