//! `migration`: apply, roll back or inspect Warden's schema.
//!
//! Reads `DATABASE_URL` (from the environment or `.env`). Exit codes: 0 success,
//! 1 the command failed or was refused (message on stderr), 2 bad usage.
//! `down`, `fresh` and `refresh` are refused when `ENVIRONMENT=production`, and
//! elsewhere run only with `--yes-i-am-sure=<database name>`, after printing
//! Warden's tables and their row counts.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a CLI: the status table goes to stdout, errors to stderr"
)]

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use migration::{CliCommand, Command, MigrationState};
use sea_orm_migration::sea_orm::{ConnectOptions, Database};

/// Apply, roll back or inspect Warden's database migrations.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Database URL (postgres://… or sqlite://…?mode=rwc). Falls back to DATABASE_URL.
    #[arg(long, short = 'u', env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Option<CliCommand>,
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
    let confirmation = cli
        .command
        .as_ref()
        .and_then(|c| c.confirmation().map(str::to_owned));
    let command = Command::from(cli.command);
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(2)
        .connect_timeout(std::time::Duration::from_secs(5))
        .acquire_timeout(std::time::Duration::from_secs(5))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .context("cannot connect to DATABASE_URL (is the database running and the URL right?)")?;
    if command.is_destructive() {
        let inventory = migration::inventory(&db)
            .await
            .context("reading what the command would drop")?;
        eprint!("{inventory}");
        let production =
            migration::production_environment(std::env::var("ENVIRONMENT").ok().as_deref());
        migration::confirm_destructive(command, production, &inventory, confirmation.as_deref())?;
    }
    let states = migration::run(&db, command)
        .await
        .context("migration failed")?;
    db.close()
        .await
        .context("closing the database connection")?;
    Ok(states)
}

#[expect(
    clippy::print_stdout,
    reason = "this binary's output is its status table"
)]
fn print_states(states: &[MigrationState]) {
    println!("{}", migration::status_table(states));
}
