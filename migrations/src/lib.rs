//! Database migrations for Tollgate, for SQLite and PostgreSQL alike.
//!
//! Migrations own their table and column names as plain strings and never import the engine's
//! entities, so an entity can change without rewriting history. One migration per file: the
//! file name is the migration's name.

pub use sea_orm_migration::prelude::*;

mod m20261123_000001_initial;
mod m20261130_000001_channels;
mod m20261207_000001_grant_expiry;
mod m20261207_000002_timer_owner;
mod m20261207_000003_runs_grant;
mod m20261207_000004_schedules;
mod m20261207_000005_break_glass;
mod m20261207_000006_token_lifecycle;
mod m20261208_000001_credentials;
mod m20261208_000002_grant_secrets;

/// The ordered list of migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261130_000001_channels::Migration),
            Box::new(m20261207_000001_grant_expiry::Migration),
            Box::new(m20261207_000002_timer_owner::Migration),
            Box::new(m20261207_000003_runs_grant::Migration),
            Box::new(m20261207_000004_schedules::Migration),
            Box::new(m20261207_000005_break_glass::Migration),
            Box::new(m20261207_000006_token_lifecycle::Migration),
            Box::new(m20261208_000001_credentials::Migration),
            Box::new(m20261208_000002_grant_secrets::Migration),
        ]
    }
}
