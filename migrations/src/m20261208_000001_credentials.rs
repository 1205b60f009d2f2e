//! The credential inventory: every integration credential an operator holds, with its owner,
//! scopes, lifetime and how it is revoked (`credentials`), and its secret's versions, current and
//! previous (`credential_versions`: a reference to a secret store, or the value sealed with the
//! configured key — never plaintext).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    integer, pk_uuid, string, string_null, text, text_null, timestamp_with_time_zone, timestamp_with_time_zone_null,
    uuid,
};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

fn index(name: &str, table: &'static str, cols: &[&'static str]) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table);
    for c in cols {
        i.col(*c);
    }
    i.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("credentials")
                .col(pk_uuid("id"))
                .col(string("name"))
                .col(string("kind"))
                .col(string("integration"))
                .col(string("owner"))
                .col(text("scopes"))
                .col(string("environment"))
                .col(timestamp_with_time_zone_null("issued_at"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone_null("last_used_at"))
                .col(timestamp_with_time_zone_null("last_rotated_at"))
                .col(string("revocation"))
                .col(text_null("revocation_instructions"))
                .col(text_null("revocation_url"))
                .col(text("description"))
                .col(integer("current_version"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("credentials_name", "credentials", &["name"]).unique().to_owned()).await?;
        // The list filters, each with the id the pages are ordered by: an equality filter's page
        // is a walk of its index, and a page filtered by expiry collects the ids it needs from
        // `(expires_at, id)` without reading the rows that do not match.
        m.create_index(index("credentials_integration", "credentials", &["integration", "id"])).await?;
        m.create_index(index("credentials_owner", "credentials", &["owner", "id"])).await?;
        m.create_index(index("credentials_kind", "credentials", &["kind", "id"])).await?;
        m.create_index(index("credentials_expires", "credentials", &["expires_at", "id"])).await?;

        m.create_table(
            Table::create()
                .table("credential_versions")
                .col(pk_uuid("id"))
                .col(uuid("credential_id"))
                .col(integer("version"))
                .col(string("state"))
                .col(string_null("hint"))
                .col(text_null("secret_ref"))
                .col(text_null("sealed_value"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("retired_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            index("credential_versions_one", "credential_versions", &["credential_id", "version"]).unique().to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table("credential_versions").to_owned()).await?;
        m.drop_table(Table::drop().table("credentials").to_owned()).await
    }
}
