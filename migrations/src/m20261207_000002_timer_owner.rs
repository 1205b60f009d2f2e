//! Timers remember the replica that armed them, so that replica fires them when due and the
//! others only once it has been gone a while: without an owner, every replica raced to fire
//! every timer and all but one spent a write transaction finding it gone.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::string_null;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("timers").add_column(string_null("owner")).to_owned()).await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("timers").drop_column("owner").to_owned()).await
    }
}
