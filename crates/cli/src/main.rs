//! `warden`: the operator CLI for Warden's storage.
//!
//! Exit codes (every command): 0 success; 1 the command ran and the answer is
//! "no" or it failed (unhealthy storage, broken audit chain, invalid key, a
//! refused decision, a storage error); 2 bad usage or invalid settings (the
//! message names each bad variable).

// The command futures nest deeply (approval decisions inside a command inside
// the root span): layout computation needs more than the default depth.
#![recursion_limit = "256"]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::Instrument as _;

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
    /// Load the policy file and create the development key if it is missing.
    Seed(commands::seed::Args),
    /// Create, list, revoke and verify API keys.
    #[command(subcommand)]
    Keys(commands::keys::Keys),
    /// Read and verify the audit trail.
    #[command(subcommand)]
    Audit(commands::audit::Audit),
    /// List and decide human approvals.
    #[command(subcommand)]
    Approvals(commands::approvals::Approvals),
    /// Check that the database, the cache and the schema are usable.
    ///
    /// Prints PASS, WARN or FAIL per check. Exit codes: 0 nothing failed
    /// (with --strict: everything passed); 1 a check failed (or, with
    /// --strict, was not PASS); 2 the settings are invalid.
    Health {
        /// Fail on anything but PASS.
        #[arg(long)]
        strict: bool,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the whole flow on the embedded default (SQLite + in-process
    /// cache) — or on PostgreSQL/Redis when DATABASE_URL/REDIS_URL are set.
    Demo(commands::demo::Args),
    /// Serve Prometheus metrics at /metrics: the storage gauges (pending
    /// approvals, audit integration lag, checkpoint age, pool state) sampled
    /// from the database. Runs until interrupted.
    Metrics(commands::metrics::Args),
    /// Serve the approver console: people with an approver key sign in,
    /// see held tool calls and approve or deny them (and /metrics).
    Serve(commands::serve::Args),
    /// Serve an MCP gateway in front of the upstream MCP servers named in
    /// a config file: every tool call authenticated, rate-limited, checked
    /// against the policy's tool rules, audited, and held for approval when
    /// a rule says so. Runs until interrupted.
    Gateway(commands::gateway::Args),
}

impl Command {
    /// The command's name, as its root span is called (`warden demo`).
    fn name(&self) -> &'static str {
        match self {
            Self::Migrate { .. } => "warden migrate",
            Self::Seed(_) => "warden seed",
            Self::Keys(_) => "warden keys",
            Self::Audit(_) => "warden audit",
            Self::Approvals(_) => "warden approvals",
            Self::Health { .. } => "warden health",
            Self::Demo(_) => "warden demo",
            Self::Metrics(_) => "warden metrics",
            Self::Serve(_) => "warden serve",
            Self::Gateway(_) => "warden gateway",
        }
    }
}

/// How a command ended, mapped to the documented exit codes.
pub(crate) enum Outcome {
    Success,
    Failed,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `.env` first, so telemetry sees its OTEL_* settings too (a malformed
    // file is reported by the settings below).
    let _ = warden_core::Settings::load_dotenv();
    let telemetry = match telemetry_config(&cli.command)
        .and_then(|config| warden_telemetry::Telemetry::install(&config))
    {
        Ok(telemetry) => telemetry,
        Err(e) => {
            output::init_tracing(&warden_telemetry::Telemetry::disabled());
            output::error(&e);
            return ExitCode::from(2);
        }
    };
    output::init_tracing(&telemetry);
    let telemetry = std::sync::Arc::new(telemetry);
    let span = tracing::info_span!(
        "warden",
        otel.name = cli.command.name(),
        warden.command = cli.command.name()
    );
    let code = run(cli, telemetry.clone()).instrument(span).await;
    // Flushed before exit (bounded), so a short command's spans and metric
    // points reach the collector.
    if let Ok(telemetry) = std::sync::Arc::try_unwrap(telemetry) {
        let report = telemetry.shutdown();
        if !report.is_complete() {
            tracing::warn!(?report, "telemetry was not fully exported before exit");
        }
    }
    code
}

/// Telemetry from the standard variables; `warden metrics` also keeps the
/// metrics for its scrape endpoint.
fn telemetry_config(
    command: &Command,
) -> Result<warden_telemetry::TelemetryConfig, warden_telemetry::TelemetryError> {
    let mut config = warden_telemetry::TelemetryConfig::from_env()?;
    config.scrape = matches!(command, Command::Metrics(_) | Command::Serve(_));
    Ok(config)
}

async fn run(cli: Cli, telemetry: std::sync::Arc<warden_telemetry::Telemetry>) -> ExitCode {
    if let Command::Audit(cmd) = &cli.command
        && cmd.is_offline()
    {
        let Command::Audit(cmd) = cli.command else {
            return ExitCode::from(2);
        };
        return match commands::audit::run_offline(cmd) {
            Ok(Outcome::Success) => ExitCode::SUCCESS,
            Ok(Outcome::Failed) => ExitCode::FAILURE,
            Err(e) => {
                output::error(&*e);
                ExitCode::from(2)
            }
        };
    }
    let settings = match &cli.command {
        Command::Demo(args) => commands::demo::settings(args),
        _ => warden_core::Settings::from_env(),
    };
    let settings = match settings {
        Ok(settings) => settings,
        Err(e) => {
            output::error(&e);
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Migrate { action, json } => commands::migrate::run(&settings, action, json).await,
        Command::Seed(args) => commands::seed::run(&settings, args).await,
        Command::Keys(cmd) => commands::keys::run(&settings, cmd).await,
        Command::Audit(cmd) => commands::audit::run(&settings, cmd).await,
        Command::Approvals(cmd) => commands::approvals::run(&settings, cmd).await,
        Command::Health { strict, json } => {
            Ok(commands::health::run(&settings, strict, json).await)
        }
        Command::Demo(args) => commands::demo::run(&settings, args).await,
        Command::Metrics(args) => commands::metrics::run(&settings, args, telemetry).await,
        Command::Serve(args) => commands::serve::run(&settings, args, telemetry).await,
        Command::Gateway(args) => commands::gateway::run(&settings, args).await,
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
