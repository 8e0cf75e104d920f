//! Everything the CLI prints goes through here: tables and JSON on stdout,
//! errors and logs on stderr.
//!
//! Writes never panic: a closed pipe (`warden audit tail | head`) just stops
//! the output.

use std::io::Write;

use serde::Serialize;

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}

fn err(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// Logs to standard error per `RUST_LOG` (errors only by default), and
/// Warden's spans to `telemetry`'s exporter when it exports traces. Each
/// layer has its own filter: the console's level does not hide spans from
/// the exporter.
pub(crate) fn init_tracing(telemetry: &warden_telemetry::Telemetry) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The MCP SDK's debug records carry tool arguments: never written,
    // whatever RUST_LOG asks for.
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"))
        .and(tracing_subscriber::filter::filter_fn(
            warden_gateway::allows_log,
        ));
    let console = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(console)
        .with(telemetry.tracing_layer())
        .init();
}

pub(crate) fn line(text: &str) {
    out(text);
}

pub(crate) fn error(error: &dyn std::fmt::Display) {
    err(&format!("warden: {error:#}"));
}

/// Who an operator action is recorded as: `--actor`, else the OS user name,
/// else `operator`.
pub(crate) fn actor(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("USERNAME").ok())
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "operator".into())
}

/// A notice for the operator, on standard error (stdout stays parseable).
pub(crate) fn notice(text: &str) {
    err(text);
}

pub(crate) fn json<T: Serialize + ?Sized>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => out(&text),
        Err(e) => err(&format!("warden: cannot encode JSON: {e}")),
    }
}

/// An aligned text table.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let render = |cells: Vec<&str>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    out(&render(headers.to_vec()));
    for row in rows {
        out(&render(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out("(none)");
    }
}

/// The longest secret line read from stdin: keys and tokens are far shorter.
const MAX_SECRET_LINE: u64 = 4096;

/// Reads one secret line from stdin (tokens and keys never go on the command
/// line), at most 4 KiB: a longer line is refused without reading the rest.
pub(crate) fn read_secret(what: &str) -> anyhow::Result<String> {
    use std::io::{BufRead, Read};
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_SECRET_LINE + 1)
        .read_until(b'\n', &mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_LINE {
        anyhow::bail!("the {what} on standard input is longer than {MAX_SECRET_LINE} bytes");
    }
    let line = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("the {what} on standard input is not UTF-8"))?;
    let secret = line.trim().to_owned();
    if secret.is_empty() {
        anyhow::bail!("expected the {what} on standard input");
    }
    Ok(secret)
}

pub(crate) fn time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

pub(crate) fn opt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}
