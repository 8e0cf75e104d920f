//! Prometheus's own checker of the text exposition format.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Where promtool is: `WARDEN_TEST_PROMTOOL`, else `promtool` on `PATH`,
/// else the copy `scripts/services.sh` unpacks into `.cache/promtool`.
/// Missing is a test failure saying how to get it.
pub fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("WARDEN_TEST_PROMTOOL").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    }) {
        return found;
    }
    let cached =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/promtool/usr/bin/promtool");
    if cached.is_file() {
        return cached;
    }
    panic!(
        "promtool not found: run scripts/services.sh (it unpacks Debian's) or set WARDEN_TEST_PROMTOOL"
    );
}

/// Runs `promtool check metrics` (parse + lint) on `text`; `Err` carries
/// what it reported.
pub fn promtool_check_metrics(text: &str) -> Result<(), String> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
