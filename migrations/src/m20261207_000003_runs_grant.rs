//! Runs by the grant they act on: one revocation per grant is checked inside the writer's
//! transaction by looking for a revoke request of the grant still open, and the grant's renew,
//! rotate and revoke requests are found without a scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_index(Index::create().name("runs_grant").table("runs").col("grant_id").col("kind").to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name("runs_grant").table("runs").to_owned()).await
    }
}
