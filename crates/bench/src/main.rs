//! `warden-bench`: every hot Warden operation beside a raw-driver baseline
//! doing the same storage work through the same drivers, interleaved in one
//! run, on the real PostgreSQL and Redis from the environment.
//!
//! `cargo run --release -p warden-bench -- [--quick] [--json FILE]`
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the benchmark's report"
)]

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod harness;
mod report;
mod scenarios;
mod setup;

use harness::{Summary, median, sample};
use report::Row;

/// Benchmark Warden against raw-driver baselines.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Fewer rounds and operations, 100k instead of 1M audit rows (~1 minute).
    #[arg(long)]
    quick: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Run only the scenario groups whose name starts with this
    /// (cache, rate, keys, approvals, audit).
    #[arg(long)]
    only: Option<String>,
}

/// Sizes of the run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Measured rounds per operation (medians are reported).
    pub rounds: usize,
    /// Operations per sample for Redis-bound operations.
    pub fast_ops: u64,
    /// Operations per sample for PostgreSQL-bound operations.
    pub db_ops: u64,
    /// Events per sustained audit-write sample.
    pub audit_events: u64,
    /// Rows in the large audit table.
    pub big_rows: u64,
}

/// Collects rows; runs Warden and its baseline alternately, round by round.
pub struct Runner {
    params: Params,
    rows: Vec<Row>,
}

impl Runner {
    /// Measures `warden` (and `baseline`) at `concurrency`; `min_ratio` is the target.
    pub async fn compare<W, WF, B, BF>(
        &mut self,
        operation: &str,
        concurrency: usize,
        ops: u64,
        warden: W,
        baseline: Option<(&str, B)>,
        min_ratio: Option<f64>,
    ) -> anyhow::Result<()>
    where
        W: Fn(u64) -> WF + Clone + Send + Sync + 'static,
        WF: Future<Output = anyhow::Result<()>> + Send,
        B: Fn(u64) -> BF + Clone + Send + Sync + 'static,
        BF: Future<Output = anyhow::Result<()>> + Send,
    {
        // Warm-up: connections, prepared statements, script cache.
        sample(concurrency, (ops / 10).max(10), 1, warden.clone()).await?;
        if let Some((_, b)) = &baseline {
            sample(concurrency, (ops / 10).max(10), 1, b.clone()).await?;
        }
        let (mut ws, mut bs) = (Vec::new(), Vec::new());
        for _ in 0..self.params.rounds {
            ws.push(sample(concurrency, ops, 1, warden.clone()).await?);
            if let Some((_, b)) = &baseline {
                bs.push(sample(concurrency, ops, 1, b.clone()).await?);
            }
        }
        let baseline = baseline.map(|(name, _)| (name.to_owned(), median(&bs).0));
        self.push(operation, concurrency, &ws, baseline, min_ratio);
        Ok(())
    }

    /// Records rounds measured by a scenario itself.
    pub fn push(
        &mut self,
        operation: &str,
        concurrency: usize,
        rounds: &[Summary],
        baseline: Option<(String, Summary)>,
        min_ratio: Option<f64>,
    ) {
        let (warden, noise_pct) = median(rounds);
        let ratio = baseline
            .as_ref()
            .map(|(_, b)| warden.per_sec / b.per_sec.max(1e-9));
        let row = Row {
            operation: operation.to_owned(),
            concurrency,
            warden,
            noise_pct,
            baseline,
            ratio,
            target: min_ratio.map(|r| format!("≥ {r}×")),
            met: min_ratio.zip(ratio).map(|(min, r)| r >= min),
        };
        eprintln!(
            "  {:<44} c={:<2} {:>10.0}/s  p99 {:>8.0}µs  ratio {}",
            row.operation,
            concurrency,
            row.warden.per_sec,
            row.warden.p99_us,
            row.ratio.map_or("—".into(), |r| format!("{r:.2}×"))
        );
        self.rows.push(row);
    }

    /// Records a row with a free-form target check.
    pub fn push_custom(&mut self, mut row: Row) {
        eprintln!(
            "  {:<44} c={:<2} {:>10.0}/s  p99 {:>8.0}µs",
            row.operation, row.concurrency, row.warden.per_sec, row.warden.p99_us
        );
        if row.target.is_none() {
            row.met = None;
        }
        self.rows.push(row);
    }

    /// The run's sizes.
    pub fn params(&self) -> Params {
        self.params
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("warden-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let params = if args.quick {
        Params {
            rounds: 3,
            fast_ops: 4_000,
            db_ops: 600,
            audit_events: 20_000,
            big_rows: 100_000,
        }
    } else {
        Params {
            rounds: 5,
            fast_ops: 20_000,
            db_ops: 2_000,
            audit_events: 100_000,
            big_rows: 1_000_000,
        }
    };
    eprintln!("warden-bench: {params:?}");
    let bench = setup::Bench::create().await?;
    let mut runner = Runner {
        params,
        rows: Vec::new(),
    };
    let outcome = scenarios::all(&bench, &mut runner, args.only.as_deref()).await;
    bench.destroy().await?;
    outcome?;
    println!(
        "\n# warden-bench ({}), {}\n",
        if args.quick { "quick" } else { "full" },
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    report::print(&runner.rows);
    let misses = runner.rows.iter().filter(|r| r.met == Some(false)).count();
    let noisy = runner.rows.iter().map(|r| r.noise_pct).fold(0.0, f64::max);
    println!(
        "\n{} rows, {} targets missed, largest round-to-round spread {:.0}%",
        runner.rows.len(),
        misses,
        noisy
    );
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&runner.rows)?)?;
    }
    Ok(())
}
