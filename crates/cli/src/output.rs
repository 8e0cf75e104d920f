//! Everything the CLI prints goes through here: tables and JSON on stdout,
//! errors and logs on stderr.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "this is the CLI's output"
)]

use serde::Serialize;

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

pub(crate) fn line(text: &str) {
    println!("{text}");
}

pub(crate) fn error(error: &dyn std::fmt::Display) {
    eprintln!("warden: {error:#}");
}

pub(crate) fn json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("warden: cannot encode JSON: {e}"),
    }
}
