//! `warden`: the operator CLI for Warden's storage.
//!
//! Exit codes: 0 success; 1 the command ran and failed (e.g. unhealthy storage,
//! a failed migration); 2 bad usage or settings (the message names the variable).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod output;

/// Warden: persistence for the AI-agent security gateway.
#[derive(Parser)]
#[command(name = "warden", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply, roll back or inspect the database schema.
    Migrate {
        #[command(subcommand)]
        action: Option<migration::CliCommand>,
        /// Print machine-readable JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Check that the database, the cache and the schema are usable.
    ///
    /// Exit codes: 0 nothing failed (with --strict: everything passed);
    /// 1 a check failed (or, with --strict, warned); 2 the settings are invalid.
    Health {
        /// Fail on anything but PASS.
        #[arg(long)]
        strict: bool,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

/// How a command ended, mapped to the documented exit codes.
pub(crate) enum Outcome {
    Success,
    Failed,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    output::init_tracing();
    let settings = match warden_core::Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            output::error(&e);
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Migrate { action, json } => commands::migrate::run(&settings, action, json).await,
        Command::Health { strict, json } => {
            Ok(commands::health::run(&settings, strict, json).await)
        }
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failed) => ExitCode::FAILURE,
        Err(e) => {
            output::error(&*e);
            ExitCode::FAILURE
        }
    }
}
