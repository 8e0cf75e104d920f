//! `warden-approval-decide`: approve (or deny) approvals whose tokens arrive
//! on standard input, one per line, with N concurrent attempts per token, and
//! print how each attempt ended as JSON.
//!
//! Tokens are read from stdin, never from arguments (which other users can
//! see). Used by the multi-process decision tests; also a way to exercise a
//! deployment. Exit codes: 0 done, 2 bad arguments or connection failure.
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "a CLI's report")]

use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use sea_orm::{ConnectOptions, Database};
use serde_json::json;
use warden_approval::{ApprovalError, ApprovalManager};
use warden_cache::{Cache, KeyPrefix, RedisPool, RedisPoolConfig};

/// Decide approvals read from stdin, concurrently.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Database URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Redis URL (omit for the in-process cache).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Cache key prefix.
    #[arg(long, default_value = "warden:")]
    prefix: String,
    /// Concurrent attempts per token.
    #[arg(long, default_value_t = 1)]
    attempts: usize,
    /// Deny instead of approve.
    #[arg(long)]
    deny: bool,
    /// Approver id recorded with the decision.
    #[arg(long)]
    approver: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-approval-decide: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut options = ConnectOptions::new(args.database_url.clone());
    options
        .max_connections(20)
        .acquire_timeout(Duration::from_secs(30))
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .context("connecting to the database")?;
    let prefix = KeyPrefix::new(&args.prefix)?;
    let cache = match &args.redis_url {
        Some(url) => Cache::redis(
            RedisPool::new(RedisPoolConfig {
                wait_timeout: Duration::from_secs(5),
                ..RedisPoolConfig::new(url.clone(), 20, Duration::from_secs(2))
            })?,
            prefix,
        ),
        None => Cache::in_process(prefix, 10_000),
    };
    let manager = ApprovalManager::new(db, cache, Duration::from_secs(300));
    let tokens: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    let mut tasks = Vec::new();
    for token in tokens.iter().filter(|t| !t.trim().is_empty()) {
        for _ in 0..args.attempts {
            let (manager, token, approver, deny) = (
                manager.clone(),
                token.trim().to_owned(),
                args.approver.clone(),
                args.deny,
            );
            tasks.push(tokio::spawn(async move {
                if deny {
                    manager.deny(&token, &approver, Some("raced")).await
                } else {
                    manager.approve(&token, &approver, Some("raced")).await
                }
            }));
        }
    }
    let (mut won, mut already, mut expired, mut not_found, mut other) = (0, 0, 0, 0, 0);
    for task in tasks {
        match task.await? {
            Ok(_) => won += 1,
            Err(ApprovalError::AlreadyDecided { .. }) => already += 1,
            Err(ApprovalError::Expired) => expired += 1,
            Err(ApprovalError::NotFound) => not_found += 1,
            Err(e) => {
                eprintln!("attempt failed: {e}");
                other += 1;
            }
        }
    }
    println!(
        "{}",
        json!({"won": won, "already_decided": already, "expired": expired, "not_found": not_found, "other": other})
    );
    Ok(())
}
