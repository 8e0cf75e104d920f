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
//! - Migrators serialize: [`run`] holds a database-wide lock (a transaction-
//!   scoped advisory lock on PostgreSQL, a file lock beside the SQLite file),
//!   so a second migrator started at the same time waits, then finds nothing
//!   to do.
//! - `Fresh` touches only Warden's own tables, functions and bookkeeping rows,
//!   never another application's objects in the same schema.
//! - Destructive commands (`Down`, `Fresh`, `Refresh`) are for the CLIs to
//!   guard with [`confirm_destructive`]: refused in production, elsewhere run
//!   only when the database's name is typed back, after [`inventory`] has
//!   shown what they can drop.
//!
//! [`run`] executes one [`Command`]; both the `migration` binary and `warden migrate`
//! go through it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::{MigrationStatus, sea_orm::DatabaseConnection};

/// The trait behind [`Migrator`]'s `up`/`down`/`fresh`/`refresh`, for callers that
/// drive migrations directly.
pub use sea_orm_migration::MigratorTrait;

mod lock;
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
    /// Drop Warden's tables (only Warden's), then apply all migrations.
    Fresh,
    /// Roll back all migrations, then apply them again.
    Refresh,
}

impl Command {
    /// True for the commands that can drop tables and the data in them.
    pub fn is_destructive(self) -> bool {
        matches!(self, Self::Down(_) | Self::Fresh | Self::Refresh)
    }

    /// The command's name, as the CLIs spell it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Up(_) => "up",
            Self::Down(_) => "down",
            Self::Status => "status",
            Self::Fresh => "fresh",
            Self::Refresh => "refresh",
        }
    }
}

/// Every table Warden's migrations create (the bookkeeping table aside).
pub const WARDEN_TABLES: [&str; 9] = [
    "audit_checkpoints",
    "audit_tree_hashes",
    "audit_leaves",
    "audit_pending",
    "audit_prune_permits",
    "audit_chain_anchors",
    "audit_events",
    "approval_requests",
    "api_keys",
];

/// The PostgreSQL functions Warden's migrations create.
const WARDEN_FUNCTIONS: [&str; 3] = [
    "warden_audit_log_append_only",
    "warden_audit_append_only",
    "warden_approval_history",
];

/// The migration subcommands as both CLIs (`migration` and `warden migrate`)
/// expose them.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum CliCommand {
    /// Apply pending migrations (the default when no command is given).
    Up {
        /// Apply at most this many.
        #[arg(short, long)]
        num: Option<u32>,
    },
    /// Roll back the last NUM applied migrations (or every one, with
    /// --all). Destructive: needs `--yes-i-am-sure=<database name>`; refused
    /// when ENVIRONMENT=production.
    Down {
        /// Roll back this many.
        #[arg(short, long, required_unless_present = "all", conflicts_with = "all")]
        num: Option<u32>,
        /// Roll back every migration (drops every Warden table).
        #[arg(long)]
        all: bool,
        /// The database's name, typed back to confirm.
        #[arg(long, value_name = "DATABASE")]
        yes_i_am_sure: Option<String>,
    },
    /// Show which migrations are applied; changes nothing.
    Status,
    /// Drop Warden's tables (only Warden's), then apply all migrations.
    /// Destructive: needs `--yes-i-am-sure=<database name>`.
    Fresh {
        /// The database's name, typed back to confirm.
        #[arg(long, value_name = "DATABASE")]
        yes_i_am_sure: Option<String>,
    },
    /// Roll back all migrations, then apply them again. Destructive: needs
    /// `--yes-i-am-sure=<database name>`.
    Refresh {
        /// The database's name, typed back to confirm.
        #[arg(long, value_name = "DATABASE")]
        yes_i_am_sure: Option<String>,
    },
}

impl CliCommand {
    /// The confirmation typed with a destructive command, if any.
    pub fn confirmation(&self) -> Option<&str> {
        match self {
            Self::Down { yes_i_am_sure, .. }
            | Self::Fresh { yes_i_am_sure }
            | Self::Refresh { yes_i_am_sure } => yes_i_am_sure.as_deref(),
            Self::Up { .. } | Self::Status => None,
        }
    }
}

impl From<Option<CliCommand>> for Command {
    fn from(command: Option<CliCommand>) -> Self {
        match command {
            None => Command::Up(None),
            Some(CliCommand::Up { num }) => Command::Up(num),
            Some(CliCommand::Down { num, all, .. }) => {
                Command::Down(if all { None } else { Some(num.unwrap_or(1)) })
            }
            Some(CliCommand::Status) => Command::Status,
            Some(CliCommand::Fresh { .. }) => Command::Fresh,
            Some(CliCommand::Refresh { .. }) => Command::Refresh,
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
/// writes to the database. Every other command first takes the migration
/// lock (see the crate docs); it uses one more pooled connection while it
/// runs.
pub async fn run(db: &DatabaseConnection, command: Command) -> Result<Vec<MigrationState>, DbErr> {
    if command == Command::Status {
        return status(db).await;
    }
    let lock = lock::MigrationLock::acquire(db).await?;
    let result = async {
        match command {
            Command::Up(steps) => Migrator::up(db, steps).await,
            Command::Down(steps) => Migrator::down(db, steps).await,
            Command::Status => Ok(()),
            Command::Fresh => {
                drop_warden_objects(db).await?;
                Migrator::up(db, None).await
            }
            Command::Refresh => Migrator::refresh(db).await,
        }
    }
    .await;
    lock.release().await;
    result?;
    status(db).await
}

/// Drops Warden's tables and functions and forgets Warden's migrations in
/// the bookkeeping table; nothing else in the schema is touched. Refuses
/// (before dropping anything) when the bookkeeping table records a migration
/// this build does not know. One transaction: all or nothing. Names are
/// schema-qualified and nothing cascades, so an object of another
/// application that depends on a Warden table makes it fail, not vanish.
async fn drop_warden_objects(db: &DatabaseConnection) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, TransactionTrait};
    status(db).await?;
    let postgres = db.get_database_backend() == DbBackend::Postgres;
    let schema = if postgres {
        Some(current_schema(db).await?)
    } else {
        None
    };
    let qualified = |name: &str| match &schema {
        Some(schema) => format!("{}.{}", quote(schema), quote(name)),
        None => quote(name),
    };
    let bookkeeping = table_exists(db, "seaql_migrations").await?;
    let txn = db.begin().await?;
    for table in WARDEN_TABLES {
        txn.execute_unprepared(&format!("DROP TABLE IF EXISTS {}", qualified(table)))
            .await?;
    }
    if postgres {
        for function in WARDEN_FUNCTIONS {
            txn.execute_unprepared(&format!(
                "DROP FUNCTION IF EXISTS {}()",
                qualified(function)
            ))
            .await?;
        }
    }
    if bookkeeping {
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| format!("'{}'", m.name()))
            .collect();
        txn.execute_unprepared(&format!(
            "DELETE FROM {} WHERE version IN ({})",
            qualified("seaql_migrations"),
            names.join(", ")
        ))
        .await?;
    }
    txn.commit().await
}

/// A quoted SQL identifier.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn current_schema(db: &DatabaseConnection) -> Result<String, DbErr> {
    use sea_orm_migration::sea_orm::{ConnectionTrait, Statement};
    db.query_one_raw(Statement::from_string(
        db.get_database_backend(),
        "SELECT current_schema()::text AS s",
    ))
    .await?
    .map(|row| row.try_get::<String>("", "s"))
    .transpose()?
    .ok_or_else(|| DbErr::Custom("the database has no current schema".into()))
}

async fn table_exists(db: &DatabaseConnection, table: &str) -> Result<bool, DbErr> {
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => format!(
            "SELECT COUNT(*) AS n FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_name = '{table}'"
        ),
        _ => format!(
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = '{table}'"
        ),
    };
    let n: i64 = db
        .query_one_raw(Statement::from_string(backend, sql))
        .await?
        .map(|row| row.try_get("", "n"))
        .transpose()?
        .unwrap_or(0);
    Ok(n > 0)
}

/// What a destructive command can drop: the database's name (what
/// `--yes-i-am-sure` must repeat) and each Warden table with its row count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Inventory {
    /// `current_database()` on PostgreSQL; the file's name on SQLite.
    pub database: String,
    /// Warden's tables that exist, with their rows.
    pub tables: Vec<(String, i64)>,
    /// API keys issued for the production environment: a database holding
    /// them is treated as production whatever `ENVIRONMENT` says locally.
    pub production_keys: i64,
}

impl std::fmt::Display for Inventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "database {:?} holds these Warden tables:", self.database)?;
        for (table, rows) in &self.tables {
            writeln!(f, "  {table:<20} {rows} rows")?;
        }
        Ok(())
    }
}

/// The database's name and Warden's tables with their row counts.
pub async fn inventory(db: &DatabaseConnection) -> Result<Inventory, DbErr> {
    use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};
    let backend = db.get_database_backend();
    let name_sql = match backend {
        DbBackend::Postgres => "SELECT current_database()::text AS name",
        _ => "SELECT file AS name FROM pragma_database_list WHERE name = 'main'",
    };
    let raw: String = db
        .query_one_raw(Statement::from_string(backend, name_sql))
        .await?
        .map(|row| row.try_get("", "name"))
        .transpose()?
        .unwrap_or_default();
    let database = match backend {
        DbBackend::Postgres => raw,
        _ => std::path::Path::new(&raw)
            .file_name()
            .map_or_else(|| raw.clone(), |n| n.to_string_lossy().into_owned()),
    };
    let mut tables = Vec::new();
    for table in WARDEN_TABLES {
        if table_exists(db, table).await? {
            let rows: i64 = db
                .query_one_raw(Statement::from_string(
                    backend,
                    format!("SELECT COUNT(*) AS n FROM {table}"),
                ))
                .await?
                .map(|row| row.try_get("", "n"))
                .transpose()?
                .unwrap_or(0);
            tables.push((table.to_owned(), rows));
        }
    }
    let production_keys = if table_exists(db, "api_keys").await? {
        db.query_one_raw(Statement::from_string(
            backend,
            "SELECT COUNT(*) AS n FROM api_keys WHERE environment = 'production'",
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0)
    } else {
        0
    };
    Ok(Inventory {
        database,
        tables,
        production_keys,
    })
}

/// Why a destructive command was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Production (`ENVIRONMENT`, or production API keys in the database):
    /// nothing may drop the schema there.
    #[error(
        "refusing `{command}` on a production database (ENVIRONMENT=production, an unrecognised \
         ENVIRONMENT, or production API keys stored): it would drop Warden's tables and the audit \
         trail. No flag overrides this"
    )]
    Production {
        /// The command.
        command: &'static str,
    },
    /// The confirmation is missing or names another database.
    #[error(
        "`{command}` can drop the tables above and every row in them; to proceed, re-run with \
         --yes-i-am-sure={database}"
    )]
    NotConfirmed {
        /// The command.
        command: &'static str,
        /// The name to type back.
        database: String,
    },
}

/// The gate in front of a destructive command: refused in production;
/// elsewhere allowed only when `confirmation` is the database's name.
/// Non-destructive commands always pass.
pub fn confirm_destructive(
    command: Command,
    production: bool,
    inventory: &Inventory,
    confirmation: Option<&str>,
) -> Result<(), Refusal> {
    if !command.is_destructive() {
        return Ok(());
    }
    if production || inventory.production_keys > 0 {
        return Err(Refusal::Production {
            command: command.name(),
        });
    }
    match confirmation {
        Some(name) if name == inventory.database => Ok(()),
        _ => Err(Refusal::NotConfirmed {
            command: command.name(),
            database: inventory.database.clone(),
        }),
    }
}

/// True when `ENVIRONMENT` names production — or anything unrecognised
/// (fail closed). Unset means development, as for `warden`.
pub fn production_environment(value: Option<&str>) -> bool {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) => !matches!(v.as_str(), "" | "development" | "dev" | "test" | "staging"),
    }
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
