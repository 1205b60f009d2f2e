//! API tokens get a lifecycle: an optional expiry, after which the token no longer authenticates,
//! and the time it was last used (kept to within a minute).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::timestamp_with_time_zone_null;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for column in ["expires_at", "last_used_at"] {
            m.alter_table(
                Table::alter().table("api_tokens").add_column(timestamp_with_time_zone_null(column)).to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in ["last_used_at", "expires_at"] {
            m.alter_table(Table::alter().table("api_tokens").drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
