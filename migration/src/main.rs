//! `migration`: apply, roll back or inspect Warden's schema.
//!
//! Reads `DATABASE_URL` (from the environment or `.env`). Exit codes: 0 success,
//! 1 the command failed (message on stderr), 2 bad usage.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use migration::{Command, MigrationState};
use sea_orm_migration::sea_orm::{ConnectOptions, Database};

/// Apply, roll back or inspect Warden's database migrations.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Database URL (postgres://… or sqlite://…?mode=rwc). Falls back to DATABASE_URL.
    #[arg(long, short = 'u', env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Clone, Copy)]
enum Cmd {
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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // A missing .env is normal; a malformed one is reported by the URL check below.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(states) => {
            print_states(&states);
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("migration: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<Vec<MigrationState>> {
    let url = cli.database_url.filter(|u| !u.trim().is_empty()).context(
        "DATABASE_URL is not set: pass --database-url or set DATABASE_URL \
         (e.g. sqlite://warden.db?mode=rwc or postgres://user:pass@127.0.0.1:5432/warden)",
    )?;
    let command = match cli.command.unwrap_or(Cmd::Up { num: None }) {
        Cmd::Up { num } => Command::Up(num),
        Cmd::Down { num } => Command::Down(num),
        Cmd::Status => Command::Status,
        Cmd::Fresh => Command::Fresh,
        Cmd::Refresh => Command::Refresh,
    };
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(2)
        .connect_timeout(std::time::Duration::from_secs(10))
        .acquire_timeout(std::time::Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .context("cannot connect to DATABASE_URL (is the database running and the URL right?)")?;
    let states = migration::run(&db, command).await.context("migration failed")?;
    db.close().await.context("closing the database connection")?;
    Ok(states)
}

#[expect(clippy::print_stdout, reason = "this binary's output is its status table")]
fn print_states(states: &[MigrationState]) {
    let width = states.iter().map(|s| s.name.len()).max().unwrap_or(9).max(9);
    println!("{:<width$}  STATUS", "MIGRATION");
    for state in states {
        let status = if state.applied { "applied" } else { "pending" };
        println!("{:<width$}  {status}", state.name);
    }
    let pending = states.iter().filter(|s| !s.applied).count();
    println!("{} applied, {pending} pending", states.len() - pending);
}
