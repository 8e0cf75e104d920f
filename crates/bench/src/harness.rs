//! Measuring: run an operation N times over C concurrent tasks, record each
//! call's latency, and summarize rounds by their medians.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// One measured sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    /// Operations (or rows) per second.
    pub per_sec: f64,
    /// Median latency of one call, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// Slowest call, microseconds.
    pub max_us: f64,
}

/// Runs `op(i)` for i in 0..ops over `concurrency` tasks; `units` is how many
/// rows or items one call handles (for throughput).
pub async fn sample<F, Fut>(
    concurrency: usize,
    ops: u64,
    units: u64,
    op: F,
) -> anyhow::Result<Summary>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let concurrency = concurrency.max(1) as u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies =
                Vec::with_capacity(usize::try_from(ops / concurrency + 1).unwrap_or(0));
            let mut i = worker;
            while i < ops {
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
                i += concurrency;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::with_capacity(usize::try_from(ops).unwrap_or(0));
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(summarize(started.elapsed(), ops * units, &mut all))
}

/// Summary of `latencies` for `units` done in `wall`.
pub fn summarize(wall: Duration, units: u64, latencies: &mut [Duration]) -> Summary {
    latencies.sort_unstable();
    let pick = |q: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let idx = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies[idx.min(latencies.len() - 1)].as_secs_f64() * 1e6
    };
    Summary {
        per_sec: units as f64 / wall.as_secs_f64().max(1e-9),
        p50_us: pick(0.50),
        p99_us: pick(0.99),
        max_us: pick(1.0),
    }
}

/// The median of each field over rounds, and how far throughput spread
/// (max - min) / median, in percent.
pub fn median(rounds: &[Summary]) -> (Summary, f64) {
    let med = |f: &dyn Fn(&Summary) -> f64| {
        let mut v: Vec<f64> = rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let per_sec = med(&|s| s.per_sec);
    let (lo, hi) = rounds.iter().fold((f64::MAX, 0.0f64), |(lo, hi), s| {
        (lo.min(s.per_sec), hi.max(s.per_sec))
    });
    let noise = if per_sec > 0.0 && !rounds.is_empty() {
        (hi - lo) / per_sec * 100.0
    } else {
        0.0
    };
    (
        Summary {
            per_sec,
            p50_us: med(&|s| s.p50_us),
            p99_us: med(&|s| s.p99_us),
            max_us: med(&|s| s.max_us),
        },
        noise,
    )
}
