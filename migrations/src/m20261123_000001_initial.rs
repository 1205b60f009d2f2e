//! The initial schema: runs, decisions, grants, timers, outbox, tasks, audit chain, tokens,
//! idempotency records, pinned workflow definitions and the mirrored directory.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, boolean, integer, integer_null, pk_uuid, string, string_null, text, text_null,
    timestamp_with_time_zone, timestamp_with_time_zone_null, uuid, uuid_null,
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
                .table("runs")
                .col(pk_uuid("id"))
                .col(string("kind"))
                .col(string("workflow_key"))
                .col(integer("workflow_version"))
                .col(string("status"))
                .col(string("requester"))
                .col(string("integration"))
                .col(text("scopes"))
                .col(big_integer("duration_secs"))
                .col(text("justification"))
                .col(uuid_null("grant_id"))
                .col(integer("step_index"))
                .col(text("step_state"))
                .col(big_integer("version"))
                .col(text_null("reason"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("runs_status", "runs", &["status", "id"])).await?;
        m.create_index(index("runs_requester", "runs", &["requester", "id"])).await?;
        m.create_index(index("runs_integration", "runs", &["integration", "id"])).await?;

        m.create_table(
            Table::create()
                .table("decisions")
                .col(pk_uuid("id"))
                .col(uuid("run_id"))
                .col(integer("step_index"))
                .col(string("approver"))
                .col(string("decision"))
                .col(text_null("comment"))
                .col(string("channel"))
                .col(timestamp_with_time_zone("decided_at"))
                .to_owned(),
        )
        .await?;
        // One vote per approver per step, enforced by the database as well as the engine.
        m.create_index(
            index("decisions_one_vote", "decisions", &["run_id", "step_index", "approver"]).unique().to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("grants")
                .col(pk_uuid("id"))
                .col(uuid("run_id"))
                .col(string("integration"))
                .col(string("principal"))
                .col(text("scopes"))
                .col(string("status"))
                .col(timestamp_with_time_zone_null("granted_at"))
                .col(timestamp_with_time_zone_null("expires_at"))
                .col(timestamp_with_time_zone_null("revoked_at"))
                .col(string_null("reference"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("grants_status", "grants", &["status", "id"])).await?;
        m.create_index(index("grants_principal", "grants", &["principal", "id"])).await?;

        m.create_table(
            Table::create()
                .table("timers")
                .col(pk_uuid("id"))
                .col(uuid("run_id"))
                .col(string("kind"))
                .col(integer("step_index"))
                .col(timestamp_with_time_zone("due_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("timers_due", "timers", &["due_at"])).await?;
        m.create_index(index("timers_run", "timers", &["run_id"])).await?;

        m.create_table(
            Table::create()
                .table("outbox")
                .col(pk_uuid("id"))
                .col(uuid("run_id"))
                .col(integer("step_index"))
                .col(string("kind"))
                .col(string("idempotency_key"))
                .col(text("payload"))
                .col(string("status"))
                .col(integer("attempts"))
                .col(timestamp_with_time_zone("next_attempt_at"))
                .col(string_null("lease_owner"))
                .col(timestamp_with_time_zone_null("lease_until"))
                .col(text_null("last_error"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("outbox_due", "outbox", &["status", "next_attempt_at"])).await?;
        m.create_index(index("outbox_run", "outbox", &["run_id"])).await?;

        m.create_table(
            Table::create()
                .table("tasks")
                .col(pk_uuid("id"))
                .col(uuid("outbox_id"))
                .col(uuid("run_id"))
                .col(string("operator"))
                .col(text("instructions"))
                .col(string("status"))
                .col(string_null("resolved_by"))
                .col(text_null("comment"))
                .col(timestamp_with_time_zone_null("resolved_at"))
                .col(timestamp_with_time_zone("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("tasks_outbox", "tasks", &["outbox_id"]).unique().to_owned()).await?;

        m.create_table(
            Table::create()
                .table("audit_log")
                .col(ColumnDef::new("seq").big_integer().not_null().primary_key())
                .col(timestamp_with_time_zone("recorded_at"))
                .col(string("event_type"))
                .col(string("channel"))
                .col(string("outcome"))
                .col(string("actor"))
                .col(string("subject"))
                .col(uuid_null("run_id"))
                .col(text_null("justification"))
                .col(string_null("workflow_key"))
                .col(integer_null("workflow_version"))
                .col(text("details"))
                .col(string("prev_hash"))
                .col(string("hash"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("audit_run", "audit_log", &["run_id", "seq"])).await?;

        // The chain's head: one row, locked by every appending transaction (FOR UPDATE on
        // PostgreSQL) so replicas append one after another.
        m.create_table(
            Table::create()
                .table("audit_head")
                .col(ColumnDef::new("id").integer().not_null().primary_key())
                .col(big_integer("seq"))
                .col(string("hash"))
                .to_owned(),
        )
        .await?;
        m.exec_stmt(
            Query::insert()
                .into_table("audit_head")
                .columns(["id", "seq", "hash"])
                .values_panic([1.into(), 0i64.into(), "0".repeat(64).into()])
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("api_tokens")
                .col(pk_uuid("id"))
                .col(string("principal"))
                .col(string("name"))
                .col(string("token_hash"))
                .col(timestamp_with_time_zone("created_at"))
                .col(timestamp_with_time_zone_null("revoked_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("api_tokens_hash", "api_tokens", &["token_hash"]).unique().to_owned()).await?;

        m.create_table(
            Table::create()
                .table("idempotency_keys")
                .col(string("principal"))
                .col(string("key"))
                .col(string("request_hash"))
                .col(integer("status_code"))
                .col(text("response"))
                .col(timestamp_with_time_zone("created_at"))
                .primary_key(Index::create().col("principal").col("key"))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("workflow_definitions")
                .col(string("key"))
                .col(integer("version"))
                .col(string("kind"))
                .col(text("source"))
                .col(string("sha256"))
                .col(timestamp_with_time_zone("loaded_at"))
                .primary_key(Index::create().col("key").col("version"))
                .to_owned(),
        )
        .await?;

        // The directory mirrored from configuration: one JSON document per entry, so changes
        // can be diffed and audited without a column per field.
        m.create_table(
            Table::create()
                .table("directory_entries")
                .col(string("kind"))
                .col(string("name"))
                .col(text("document"))
                .col(boolean("active"))
                .col(timestamp_with_time_zone("updated_at"))
                .primary_key(Index::create().col("kind").col("name"))
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            "directory_entries",
            "workflow_definitions",
            "idempotency_keys",
            "api_tokens",
            "audit_head",
            "audit_log",
            "tasks",
            "outbox",
            "timers",
            "grants",
            "decisions",
            "runs",
        ] {
            m.drop_table(Table::drop().table(t).to_owned()).await?;
        }
        Ok(())
    }
}
