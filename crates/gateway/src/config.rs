//! The gateway's configuration file: its upstream MCP servers and how long
//! a held call waits.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::GatewayError;

/// One upstream MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Its name: the prefix of its tools (`<name>__<tool>`) and what policy
    /// rules match as `server`. Letters, digits, `-` and `.`.
    pub name: String,
    /// A child process speaking MCP over stdio: the program and its
    /// arguments (exactly one of `command` and `url`).
    #[serde(default)]
    pub command: Vec<String>,
    /// A streamable-HTTP MCP endpoint (exactly one of `command` and `url`).
    #[serde(default)]
    pub url: Option<String>,
    /// Environment variables for a child process. It gets only these and
    /// `PATH`, `HOME`, `LANG`, `TZ` — never the gateway's own environment
    /// (database URLs, keys, secrets).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// The longest one forwarded call may take, in milliseconds (default
    /// 30000).
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
}

fn default_call_timeout_ms() -> u64 {
    30_000
}

fn default_hold_budget_ms() -> u64 {
    60_000
}

fn default_progress_ms() -> u64 {
    2_000
}

/// The gateway's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// The upstream servers, at least one.
    pub upstreams: Vec<UpstreamConfig>,
    /// How long a held call waits for a decision before the agent is told
    /// to retry later, in milliseconds (default 60000).
    #[serde(default = "default_hold_budget_ms")]
    pub hold_budget_ms: u64,
    /// How often a held call tells the client it is still waiting
    /// (progress notifications), in milliseconds (default 2000).
    #[serde(default = "default_progress_ms")]
    pub progress_interval_ms: u64,
}

/// The separator between an upstream's name and its tool's.
pub const TOOL_SEPARATOR: &str = "__";

impl GatewayConfig {
    /// Reads and validates the file at `path`.
    pub fn from_file(path: &Path) -> Result<Self, GatewayError> {
        let text = std::fs::read_to_string(path).map_err(|e| GatewayError::Config {
            reason: format!("{} cannot be read: {e}", path.display()),
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates YAML; errors say what is wrong.
    pub fn from_yaml(text: &str) -> Result<Self, GatewayError> {
        let config: GatewayConfig =
            yaml_serde::from_str(text).map_err(|e| GatewayError::Config {
                reason: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), GatewayError> {
        let fail = |reason: String| Err(GatewayError::Config { reason });
        if self.upstreams.is_empty() {
            return fail("at least one upstream is required".into());
        }
        let mut names = HashSet::new();
        for u in &self.upstreams {
            if u.name.is_empty()
                || u.name.len() > 64
                || u.name.contains(TOOL_SEPARATOR)
                || u.name.starts_with('_')
                || u.name.ends_with('_')
                || !u
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
            {
                return fail(format!(
                    "upstream name {:?} must be 1-64 letters, digits, '-', '.' or single inner '_'",
                    u.name
                ));
            }
            if !names.insert(u.name.as_str()) {
                return fail(format!("upstream {:?} is defined twice", u.name));
            }
            match (u.command.is_empty(), &u.url) {
                (false, None) | (true, Some(_)) => {}
                _ => {
                    return fail(format!(
                        "upstream {:?}: give exactly one of command and url",
                        u.name
                    ));
                }
            }
            if let Some(url) = &u.url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                return fail(format!("upstream {:?}: url must be http(s)", u.name));
            }
            if !(1..=3_600_000).contains(&u.call_timeout_ms) {
                return fail(format!(
                    "upstream {:?}: call_timeout_ms must be 1..=3600000",
                    u.name
                ));
            }
        }
        if !(1..=3_600_000).contains(&self.hold_budget_ms) {
            return fail("hold_budget_ms must be 1..=3600000".into());
        }
        if !(100..=60_000).contains(&self.progress_interval_ms) {
            return fail("progress_interval_ms must be 100..=60000".into());
        }
        Ok(())
    }

    /// How long a held call waits.
    pub fn hold_budget(&self) -> Duration {
        Duration::from_millis(self.hold_budget_ms)
    }

    /// How often a held call reports progress.
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_valid_file_parses_and_bad_ones_are_refused_by_name() {
        let ok = GatewayConfig::from_yaml(
            "upstreams:\n  - { name: time, command: [python3, -m, mcp_server_time] }\n  - { name: docs, url: 'http://127.0.0.1:9000/mcp' }\nhold_budget_ms: 5000\n",
        )
        .unwrap();
        assert_eq!(ok.upstreams.len(), 2);
        assert_eq!(ok.hold_budget(), Duration::from_secs(5));
        for (bad, says) in [
            ("upstreams: []\n", "at least one"),
            ("upstreams:\n  - { name: a__b, command: [x] }\n", "a__b"),
            ("upstreams:\n  - { name: a_, command: [x] }\n", "a_"),
            (
                "upstreams:\n  - { name: a, command: [x], url: 'http://x' }\n",
                "exactly one",
            ),
            ("upstreams:\n  - { name: a }\n", "exactly one"),
            (
                "upstreams:\n  - { name: a, command: [x] }\n  - { name: a, command: [y] }\n",
                "twice",
            ),
            ("upstreams:\n  - { name: a, url: 'ftp://x' }\n", "http"),
            (
                "upstreams:\n  - { name: a, command: [x], shell: true }\n",
                "shell",
            ),
        ] {
            let e = GatewayConfig::from_yaml(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
