//! `warden-audit-load`: writes synthetic audit events through an
//! [`AuditLogger`](warden_audit::AuditLogger) and prints its counters as JSON.
//!
//! A load generator for operators, and the second process in the
//! multi-process chain tests. Exit codes: 0 every event stored; 1 events left
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
    /// Events per INSERT.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
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
                raw_args: &raw,
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
        if i % 97 == 0 {
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
