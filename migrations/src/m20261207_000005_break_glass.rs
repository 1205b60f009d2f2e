//! Break-glass runs: emergency access granted before its review. The flag decides which approval
//! the run awaits after its grant (the workflow's `break_glass.review`) and is kept for the
//! evidence.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::boolean;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("runs").add_column(boolean("break_glass").default(false)).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("runs").drop_column("break_glass").to_owned()).await
    }
}
