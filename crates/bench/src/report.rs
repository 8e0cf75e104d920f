//! The results table and its JSON form.
#![allow(clippy::print_stdout, reason = "the benchmark's report")]

use serde::Serialize;

use crate::harness::Summary;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What Warden did.
    pub operation: String,
    /// Concurrent callers.
    pub concurrency: usize,
    /// Warden's numbers (median of rounds).
    pub warden: Summary,
    /// Spread of Warden's throughput across rounds, percent.
    pub noise_pct: f64,
    /// The raw-driver baseline, if any.
    pub baseline: Option<(String, Summary)>,
    /// warden / baseline throughput.
    pub ratio: Option<f64>,
    /// The target, as text.
    pub target: Option<String>,
    /// Whether the target was met.
    pub met: Option<bool>,
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.1}")
    }
}

fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}ms", v / 1000.0)
    } else {
        format!("{v:.0}µs")
    }
}

/// Prints the table as Markdown.
pub fn print(rows: &[Row]) {
    println!(
        "| operation | conc | warden /s | p50 | p99 | baseline | base /s | base p50 | base p99 | ratio | target | met | noise |"
    );
    println!("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|");
    for r in rows {
        let (bname, b) = match &r.baseline {
            Some((n, s)) => (n.clone(), Some(*s)),
            None => ("—".into(), None),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
            r.operation,
            r.concurrency,
            rate(r.warden.per_sec),
            us(r.warden.p50_us),
            us(r.warden.p99_us),
            bname,
            b.map_or("—".into(), |s| rate(s.per_sec)),
            b.map_or("—".into(), |s| us(s.p50_us)),
            b.map_or("—".into(), |s| us(s.p99_us)),
            r.ratio.map_or("—".into(), |x| format!("{x:.2}×")),
            r.target.clone().unwrap_or_else(|| "—".into()),
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "—",
            },
            r.noise_pct
        );
    }
}
