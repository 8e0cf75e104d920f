//! `warden-audit-load`: writes synthetic audit events through an
//! [`warden_audit::AuditLogger`] and prints its counters as JSON.
//!
//! A load generator for operators, and the second process in the
//! multi-process log tests (writers and integrators in several processes). Exit codes: 0 every event stored; 1 events left
//! in the spill file or lost; 2 bad arguments.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a CLI's report")]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sea_orm::{ConnectOptions, Database};
use serde_json::json;
use warden_audit::{AuditEvent, AuditLogger, AuditLoggerConfig, Decision, Redactor, ToolCall};

/// Write synthetic audit events through the batched logger.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Database URL (PostgreSQL or SQLite).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// How many events to log.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Prefix of the generated request ids (must be unique per run).
    #[arg(long)]
    prefix: String,
    /// Spill file for this process.
    #[arg(long)]
    spill: std::path::PathBuf,
    /// Events per write transaction.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Checkpoint signing key file (signed-note form, from `warden audit keygen`).
    #[arg(long)]
    signing_key_file: Option<std::path::PathBuf>,
    /// How often this process's integrator runs, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    checkpoint_interval_ms: u64,
    /// Pause this long after every `pause_every` events (to keep a run going
    /// while a test kills it).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// See `pause_ms`.
    #[arg(long, default_value_t = 100)]
    pause_every: u64,
    /// Only write: leave integration to another process.
    #[arg(long)]
    no_integrator: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("warden-audit-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let mut options = ConnectOptions::new(args.database_url.clone());
    options
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(10))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .context("connecting to the database")?;
    let mut config = AuditLoggerConfig::new(&args.spill);
    config.batch_size = args.batch_size;
    if args.no_integrator {
        config.integrator = None;
    }
    if let Some(integrator) = config.integrator.as_mut() {
        integrator.checkpoint_interval = Duration::from_millis(args.checkpoint_interval_ms);
        if let Some(path) = &args.signing_key_file {
            integrator.signer = Some(warden_audit::CheckpointSigner::load(path)?);
        }
    }
    let logger = AuditLogger::start(db, config);
    let redactor = Redactor::default();
    for i in 0..args.count {
        let request_id = format!("{}-{i}", args.prefix);
        let raw = json!({"i": i, "query": "SELECT * FROM t", "api_key": "sk-live-not-a-real-key"});
        let event = AuditEvent::record(
            &ToolCall {
                request_id: &request_id,
                caller_id: &args.prefix,
                api_key_id: None,
                method: "tools/call",
                tool_name: Some("db.query"),
                raw_args: (&raw).into(),
                decision: Decision::Allow,
                reason: None,
                risk_labels: &[],
                status_code: Some(200),
                latency_ms: Some(1),
                timestamp: None,
            },
            &redactor,
        )?;
        logger.log(event);
        if args.pause_ms > 0 && i % args.pause_every.max(1) == 0 {
            tokio::time::sleep(Duration::from_millis(args.pause_ms)).await;
        } else if i % 97 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let report = logger.shutdown().await?;
    let stats = logger.stats();
    println!(
        "{}",
        json!({
            "logged": stats.logged, "stored": stats.stored, "duplicates": stats.duplicates,
            "spilled": stats.spilled, "replayed": stats.replayed, "lost": stats.lost,
            "spilled_pending": report.spilled_pending,
        })
    );
    Ok(stats.lost == 0 && report.spilled_pending == 0)
}
