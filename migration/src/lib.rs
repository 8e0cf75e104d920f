//! Warden's database schema as sea-orm migrations, for PostgreSQL and SQLite alike.
//!
//! Guarantees:
//! - The same migration files run on PostgreSQL and SQLite; nothing here branches
//!   into statements SQLite cannot run.
//! - Every migration runs in a transaction on both backends, so a failed `up`
//!   leaves the schema as it was.
//! - `up` on an up-to-date database is a no-op; [`Migrator::down`] reverses
//!   everything `up` made (only the bookkeeping table `seaql_migrations` stays).
//! - Migrations never use the entity crate: a migration is a fixed point in
//!   history, while entities follow the latest schema.
//!
//! [`run`] executes one [`Command`]; both the `migration` binary and `warden migrate`
//! go through it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::{MigrationStatus, sea_orm::DatabaseConnection};

/// The trait behind [`Migrator`]'s `up`/`down`/`fresh`/`refresh`, for callers that
/// drive migrations directly.
pub use sea_orm_migration::MigratorTrait;

mod m20261124_000001_create_api_keys;
mod m20261124_000002_create_audit_events;
mod m20261124_000003_create_approval_requests;
mod m20261124_000004_audit_append_only;
mod m20261124_000005_one_pending_approval_per_request;
mod m20261125_000006_audit_transparency_log;
mod m20261125_000007_bound_approvals_and_audit_events;

/// Warden's migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_api_keys::Migration),
            Box::new(m20261124_000002_create_audit_events::Migration),
            Box::new(m20261124_000003_create_approval_requests::Migration),
            Box::new(m20261124_000004_audit_append_only::Migration),
            Box::new(m20261124_000005_one_pending_approval_per_request::Migration),
            Box::new(m20261125_000006_audit_transparency_log::Migration),
            Box::new(m20261125_000007_bound_approvals_and_audit_events::Migration),
        ]
    }
}

/// One migration and whether it has been applied to the database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationState {
    /// The migration's name (its file name), e.g. `m20261124_000001_create_api_keys`.
    pub name: String,
    /// True when the database records it as applied.
    pub applied: bool,
}

/// A migration command, as the CLIs expose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Apply pending migrations (all, or at most `Some(n)`).
    Up(Option<u32>),
    /// Roll back applied migrations (all, or the last `Some(n)`).
    Down(Option<u32>),
    /// Report each migration's state; changes nothing.
    Status,
    /// Drop every table in the database, then apply all migrations.
    Fresh,
    /// Roll back all migrations, then apply them again.
    Refresh,
}

/// The migration subcommands as both CLIs (`migration` and `warden migrate`)
/// expose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum CliCommand {
    /// Apply pending migrations (the default when no command is given).
    Up {
        /// Apply at most this many.
        #[arg(short, long)]
        num: Option<u32>,
    },
    /// Roll back applied migrations: all of them, or the last NUM.
    Down {
        /// Roll back only this many.
        #[arg(short, long)]
        num: Option<u32>,
    },
    /// Show which migrations are applied; changes nothing.
    Status,
    /// Drop every table in the database, then apply all migrations.
    Fresh,
    /// Roll back all migrations, then apply them again.
    Refresh,
}

impl From<Option<CliCommand>> for Command {
    fn from(command: Option<CliCommand>) -> Self {
        match command {
            None => Command::Up(None),
            Some(CliCommand::Up { num }) => Command::Up(num),
            Some(CliCommand::Down { num }) => Command::Down(num),
            Some(CliCommand::Status) => Command::Status,
            Some(CliCommand::Fresh) => Command::Fresh,
            Some(CliCommand::Refresh) => Command::Refresh,
        }
    }
}

/// The states as an aligned table with a summary line, for people.
pub fn status_table(states: &[MigrationState]) -> String {
    use std::fmt::Write as _;
    let width = states
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(9)
        .max(9);
    let mut out = format!("{:<width$}  STATUS\n", "MIGRATION");
    for state in states {
        let status = if state.applied { "applied" } else { "pending" };
        let _ = writeln!(out, "{:<width$}  {status}", state.name);
    }
    let pending = states.iter().filter(|s| !s.applied).count();
    let _ = write!(out, "{} applied, {pending} pending", states.len() - pending);
    out
}

/// Runs `command` against `db` and returns every migration's state afterwards.
///
/// The state is read without creating the bookkeeping table, so `Status` never
/// writes to the database.
pub async fn run(db: &DatabaseConnection, command: Command) -> Result<Vec<MigrationState>, DbErr> {
    match command {
        Command::Up(steps) => Migrator::up(db, steps).await?,
        Command::Down(steps) => Migrator::down(db, steps).await?,
        Command::Status => {}
        Command::Fresh => Migrator::fresh(db).await?,
        Command::Refresh => Migrator::refresh(db).await?,
    }
    status(db).await
}

/// Every migration's state, read-only (no table is created if none exists yet).
///
/// Fails when the database records a migration this build does not know (a newer
/// deployment migrated it): that database must not be served by this build.
pub async fn status(db: &DatabaseConnection) -> Result<Vec<MigrationState>, DbErr> {
    Ok(Migrator::get_migration_with_status_read_only(db)
        .await?
        .iter()
        .map(|m| MigrationState {
            name: m.name().to_owned(),
            applied: m.status() == MigrationStatus::Applied,
        })
        .collect())
}
