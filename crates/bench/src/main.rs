//! `warden-bench`: Warden's operations beside raw-driver baselines, measured in
//! the same run (being built; see the benchmark issue).
//!
//! Until the measured operations exist it only reports which benchmarks it has.
#![allow(clippy::print_stderr, reason = "a binary's report")]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "warden-bench: no benchmarks are implemented yet; they arrive with the \
         cache, audit, approval and keys crates"
    );
    ExitCode::from(2)
}
