//! [`Settings`]: every knob Warden reads from the environment (and `.env`).
//!
//! Each variable is parsed into a typed value; all problems are collected and
//! reported at once, one line per variable, naming it. Secrets (passwords in
//! URLs) never appear in `Debug` output or in error messages.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use url::Url;
use warden_audit::{
    AuditLoggerConfig, CheckpointPublisher, CheckpointSigner, DEFAULT_ORIGIN, IntegratorConfig,
    Redactor, SpillMacKey,
};
use warden_cache::{FailMode, KeyPrefix, RedisPoolConfig, redis_nodes};
use warden_keys::{BCRYPT_COSTS, CacheMacKey};

/// The default policy, built into the binary.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.yaml");

/// The bcrypt costs `health` calls recommended (inclusive); production
/// refuses cheaper ones.
pub const RECOMMENDED_BCRYPT: (u32, u32) = (10, 14);

/// Which database engine `DATABASE_URL` points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseBackend {
    /// PostgreSQL (production).
    Postgres,
    /// SQLite file (embedded default).
    Sqlite,
}

/// The deployment environment: part of every API key's readable prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer's machine.
    Development,
    /// Automated tests.
    Test,
    /// Pre-production.
    Staging,
    /// Production.
    Production,
}

impl Environment {
    /// The lowercase name, as written in `ENVIRONMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Test => "test",
            Self::Staging => "staging",
            Self::Production => "production",
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Environment {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Ok(Self::Development),
            "test" => Ok(Self::Test),
            "staging" => Ok(Self::Staging),
            "production" | "prod" => Ok(Self::Production),
            _ => Err("expected one of development, test, staging, production".into()),
        }
    }
}

/// The query parameters the PostgreSQL driver understands.
const POSTGRES_URL_PARAMETERS: [&str; 18] = [
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// A connection URL whose password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// The full URL, credentials included: pass it to a driver, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with every part that can carry a credential masked, safe to
    /// print: the userinfo password, the value of every query parameter not
    /// known to be harmless (drivers accept `?password=…`, `?sslpassword=…`,
    /// tokens…), and any fragment.
    pub fn redacted(&self) -> String {
        // A Redis Cluster's node list: each node redacted on its own. Only
        // a comma that starts another redis:// URL separates nodes (a comma
        // may be part of a password, in any URL).
        let parts = redis_nodes(&self.0);
        if parts.len() > 1 {
            return parts
                .iter()
                .map(|p| SecretUrl((*p).to_owned()).redacted())
                .collect::<Vec<_>>()
                .join(",");
        }
        /// Query parameters whose values are never secret.
        const HARMLESS: [&str; 10] = [
            "sslmode",
            "application_name",
            "connect_timeout",
            "mode",
            "cache",
            "target_session_attrs",
            "options",
            "statement_cache_capacity",
            "protocol",
            "db",
        ];
        match Url::parse(&self.0) {
            Ok(mut url) => {
                if url.password().is_some() {
                    // Only fails for URLs that cannot have credentials, which have none.
                    let _ = url.set_password(Some("***"));
                }
                if url.query().is_some() {
                    let pairs: Vec<(String, String)> = url
                        .query_pairs()
                        .map(|(k, v)| {
                            let safe = HARMLESS.contains(&k.to_ascii_lowercase().as_str());
                            let value = if safe { v.into_owned() } else { "***".into() };
                            (k.into_owned(), value)
                        })
                        .collect();
                    url.query_pairs_mut().clear().extend_pairs(pairs);
                }
                if url.fragment().is_some() {
                    url.set_fragment(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "[unparseable URL]".into(),
        }
    }
}

impl SecretUrl {
    /// The URL with its credentials removed (the userinfo password and a
    /// `password` parameter) and everything else intact, for components that
    /// record the URL they are given; `None` if it cannot be parsed.
    pub(crate) fn without_credentials(&self) -> Option<String> {
        let mut url = Url::parse(&self.0).ok()?;
        if url.password().is_some() {
            url.set_password(None).ok()?;
        }
        if url.query().is_some() {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != "password")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            if kept.is_empty() {
                url.set_query(None);
            } else {
                url.query_pairs_mut().clear().extend_pairs(kept);
            }
        }
        Some(url.to_string())
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Database pool sizing and timeouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabasePoolSettings {
    /// `DATABASE_MAX_CONNECTIONS` (default 25: the gateway's 20 plus headroom).
    pub max_connections: u32,
    /// `DATABASE_MIN_CONNECTIONS` (default 2).
    pub min_connections: u32,
    /// `DATABASE_CONNECT_TIMEOUT_MS` (default 5000).
    pub connect_timeout: Duration,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS` (default 5000): longest wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// `DATABASE_IDLE_TIMEOUT_SECONDS` (default 300).
    pub idle_timeout: Duration,
}

/// Redis pool sizing and timeouts (used only when `REDIS_URL` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisPoolSettings {
    /// `REDIS_POOL_MAX_SIZE` (default 50).
    pub max_size: usize,
    /// `REDIS_WAIT_TIMEOUT_MS` (default 2000).
    pub wait_timeout: Duration,
    /// `REDIS_CREATE_TIMEOUT_MS` (default 2000).
    pub create_timeout: Duration,
    /// `REDIS_RECYCLE_TIMEOUT_MS` (default 1000).
    pub recycle_timeout: Duration,
    /// `REDIS_COMMAND_TIMEOUT_MS` (default 1000).
    pub command_timeout: Duration,
}

/// Every setting Warden reads. Build it with [`Settings::from_env`] (or
/// [`Settings::from_lookup`] in tests); the values are validated and typed.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `DATABASE_URL` (required): `postgres://…` or `sqlite://…`.
    pub database_url: SecretUrl,
    /// Which engine `database_url` names.
    pub database_backend: DatabaseBackend,
    /// Database pool sizing and timeouts.
    pub database_pool: DatabasePoolSettings,
    /// `REDIS_URL` (optional): unset selects the in-process cache. Several
    /// comma-separated `redis://` node URLs select Redis Cluster (any
    /// subset of the nodes: the rest is discovered).
    pub redis_url: Option<SecretUrl>,
    /// Redis pool sizing and timeouts.
    pub redis_pool: RedisPoolSettings,
    /// `CACHE_KEY_PREFIX` (default `warden:`): namespace of every cache key.
    pub cache_key_prefix: KeyPrefix,
    /// `CACHE_MAX_ENTRIES` (default 100000): capacity of the in-process cache.
    pub cache_max_entries: usize,
    /// `CACHE_MAX_BYTES` (default 268435456 = 256 MiB): the in-process
    /// cache's memory budget (keys, values and bookkeeping).
    pub cache_max_bytes: usize,
    /// `CACHE_MAX_VALUE_BYTES` (default 4194304 = 4 MiB, at most that): the
    /// largest value either cache accepts.
    pub cache_max_value_bytes: usize,
    /// `RATE_LIMIT_FAIL_OPEN` (default false): allow requests when the cache
    /// cannot be reached, instead of refusing them.
    pub rate_limit_fail_mode: FailMode,
    /// `APPROVAL_TOKEN_TTL_SECONDS` (default 300, 1..=86400): how long a person has to decide.
    pub approval_token_ttl: Duration,
    /// `ENVIRONMENT` (default `development`).
    pub environment: Environment,
    /// `HEALTH_TIMEOUT_MS` (default 3000): bound on each health check.
    pub health_timeout: Duration,
    /// `AUDIT_STEP_TIMEOUT_MS` (default 30000): bound on each storage step
    /// (one page, one query) of audit verify, export, prove, checkpoint and
    /// consistency, and on the CLI's schema check and standalone admin
    /// events; past it they fail with a timeout, not a hang. (Prune's
    /// batches are bounded by the integrator's own timeout.)
    pub audit_step_timeout: Duration,
    /// `AUDIT_SIGNING_KEY_FILE` (optional): the Ed25519 key file (from
    /// `warden audit keygen`) that signs audit checkpoints. Without it
    /// checkpoints are unsigned and `health` warns. The key is never printed.
    pub audit_signing_key: Option<CheckpointSigner>,
    /// `AUDIT_LOG_ORIGIN` (default `warden.local/audit`): the checkpoint
    /// origin line when no signing key names it.
    pub audit_log_origin: String,
    /// `AUDIT_CHECKPOINT_INTERVAL_MS` (default 1000): how often the
    /// integrator runs, and the least time between two checkpoints.
    pub audit_checkpoint_interval: Duration,
    /// `AUDIT_CHECKPOINT_PUBLISH` (optional, comma-separated): a file path
    /// that always holds the latest checkpoint, and/or an http(s) URL that
    /// gets each checkpoint POSTed.
    pub audit_checkpoint_publisher: CheckpointPublisher,
    /// `AUDIT_SPILL_PATH` (default `warden-audit.spill`): where the audit
    /// logger keeps events while the database is unreachable. One per process.
    pub audit_spill_path: std::path::PathBuf,
    /// `AUDIT_BATCH_SIZE` (default 1000, at most 10000): most events per
    /// write transaction. Writers never wait on each other, so larger batches
    /// only mean fewer commits.
    pub audit_batch_size: usize,
    /// `AUDIT_BUFFER_CAPACITY` (default 65536): events buffered in memory.
    pub audit_buffer_capacity: usize,
    /// `BCRYPT_COST` (default 12, 4..=14; production needs 10..=14): work
    /// factor for new API keys.
    pub bcrypt_cost: u32,
    /// `KEY_VERIFY_CACHE_TTL_SECONDS` (default 30, 1..=3600): how long a
    /// verified key is trusted from the cache.
    pub key_verify_cache_ttl: Duration,
    /// `POLICY_PATH` (optional): a policy file overriding the default one
    /// built into Warden (see [`Settings::policy_source`]).
    pub policy_path: Option<std::path::PathBuf>,
    /// `AUDIT_MAX_ARGS_BYTES` (default 65536): stored (redacted) arguments
    /// larger than this are truncated; the hash still covers them in full.
    pub audit_max_args_bytes: usize,
    /// `CACHE_MAC_KEY` (at least 32 characters; required in production):
    /// seals cached key verifications so a cache write alone cannot
    /// authenticate. Every process sharing a cache needs the same one;
    /// without it each process trusts only its own entries.
    pub cache_mac_key: Option<CacheMacKey>,
    /// `AUDIT_SPILL_MAC_KEY` (at least 32 characters; required in
    /// production): authenticates every spill-file line; lines that fail are
    /// quarantined at replay. Every process sharing a spill path needs the
    /// same one.
    pub audit_spill_mac_key: Option<SpillMacKey>,
    /// Where held calls are announced to people.
    pub notifiers: NotifierSettings,
}

/// Where held calls are announced: the approver console's public URL (the
/// link in every message), a generic signed webhook, a Slack incoming
/// webhook. None of them ever carries an approval token in a link; the
/// generic webhook's signed body does (its receiver decides by token).
#[derive(Clone, Default)]
pub struct NotifierSettings {
    /// `CONSOLE_URL` (optional): where people reach `warden serve`, e.g.
    /// `https://approvals.example.com`; messages link to an approval's page
    /// there. `warden serve` uses it as its `--public-url` by default.
    pub console_url: Option<String>,
    /// `APPROVAL_WEBHOOK_URL` with `APPROVAL_WEBHOOK_SECRET` (at least 16
    /// characters; both or neither): the generic HMAC-signed webhook.
    pub webhook: Option<(SecretText, SecretText)>,
    /// `APPROVAL_SLACK_WEBHOOK_URL` (needs `CONSOLE_URL`): a Slack incoming
    /// webhook (its URL is a credential: never printed).
    pub slack_webhook_url: Option<SecretText>,
}

impl fmt::Debug for NotifierSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifierSettings")
            .field("console_url", &self.console_url)
            .field("webhook", &self.webhook)
            .field("slack_webhook_url", &self.slack_webhook_url)
            .finish()
    }
}

/// A secret setting (a webhook secret, a URL that is itself a credential):
/// its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// The secret: pass it to what needs it, never to a log.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secrets without which a guarantee is not real, with what each one
/// protects: required when `ENVIRONMENT=production`, a health warning
/// elsewhere.
pub const GUARANTEE_SECRETS: [(&str, &str); 3] = [
    (
        "AUDIT_SIGNING_KEY_FILE",
        "audit checkpoints are unsigned (warden audit keygen)",
    ),
    (
        "CACHE_MAC_KEY",
        "cached key verifications are sealed with a per-process key, so processes do not share them",
    ),
    (
        "AUDIT_SPILL_MAC_KEY",
        "spill-file lines are not authenticated: lines written into the file are replayed as events",
    ),
];

/// One variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingProblem {
    /// The environment variable's name.
    pub variable: &'static str,
    /// What is wrong and what is expected (never the value of a secret).
    pub problem: String,
}

impl fmt::Display for SettingProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.problem)
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// One or more variables are missing or malformed; each is named.
    #[error("invalid settings: {}", join(.0))]
    Invalid(Vec<SettingProblem>),
    /// The `.env` file exists but cannot be read or parsed.
    #[error(".env: {reason}")]
    DotEnv {
        /// What dotenvy reported.
        reason: String,
    },
}

impl SettingsError {
    /// The problems, one per variable (empty for a `.env` error).
    pub fn problems(&self) -> &[SettingProblem] {
        match self {
            Self::Invalid(problems) => problems,
            Self::DotEnv { .. } => &[],
        }
    }
}

fn join(problems: &[SettingProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects problems while reading variables, so all are reported at once.
struct Reader<F> {
    lookup: F,
    problems: Vec<SettingProblem>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    fn get(&self, variable: &str) -> Option<String> {
        (self.lookup)(variable).filter(|v| !v.trim().is_empty())
    }

    fn problem(&mut self, variable: &'static str, problem: impl Into<String>) {
        self.problems.push(SettingProblem {
            variable,
            problem: problem.into(),
        });
    }

    /// A number in `range`, or `default` when unset.
    fn number<T>(&mut self, variable: &'static str, default: T, range: (T, T)) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
    {
        let Some(raw) = self.get(variable) else {
            return default;
        };
        match raw.trim().parse::<T>() {
            Ok(v) if v >= range.0 && v <= range.1 => v,
            Ok(v) => {
                self.problem(
                    variable,
                    format!("{v} is out of range (expected {} to {})", range.0, range.1),
                );
                default
            }
            Err(_) => {
                self.problem(
                    variable,
                    format!(
                        "{raw:?} is not a whole number (expected {} to {})",
                        range.0, range.1
                    ),
                );
                default
            }
        }
    }

    /// A MAC key from secret text (at least 32 characters); the problem
    /// never repeats the value.
    fn mac_key<T, E>(
        &mut self,
        variable: &'static str,
        from_bytes: impl FnOnce(&[u8]) -> Result<T, E>,
    ) -> Option<T> {
        let raw = self.get(variable)?;
        match from_bytes(raw.trim().as_bytes()) {
            Ok(key) => Some(key),
            Err(_) => {
                self.problem(
                    variable,
                    "too short: use at least 32 random characters (e.g. openssl rand -hex 32)",
                );
                None
            }
        }
    }

    fn notifiers(&mut self) -> NotifierSettings {
        let console_url = self
            .url("CONSOLE_URL", &["https", "http"])
            .map(|u| u.expose().trim_end_matches('/').to_owned());
        let webhook_url = self.notifier_url("APPROVAL_WEBHOOK_URL");
        let webhook_secret = self.get("APPROVAL_WEBHOOK_SECRET");
        let webhook = match (webhook_url, webhook_secret) {
            (Some(url), Some(secret)) if secret.trim().len() >= 16 => {
                Some((url, SecretText(secret.trim().to_owned())))
            }
            (Some(_), Some(_)) => {
                self.problem(
                    "APPROVAL_WEBHOOK_SECRET",
                    "too short: use at least 16 random characters (e.g. openssl rand -hex 32)",
                );
                None
            }
            (Some(_), None) => {
                self.problem(
                    "APPROVAL_WEBHOOK_SECRET",
                    "required with APPROVAL_WEBHOOK_URL: the receiver checks every message's signature",
                );
                None
            }
            (None, Some(_)) if self.get("APPROVAL_WEBHOOK_URL").is_none() => {
                self.problem(
                    "APPROVAL_WEBHOOK_URL",
                    "missing: APPROVAL_WEBHOOK_SECRET is set without a URL to send to",
                );
                None
            }
            _ => None,
        };
        let slack_webhook_url = self.notifier_url("APPROVAL_SLACK_WEBHOOK_URL");
        if slack_webhook_url.is_some() && console_url.is_none() {
            self.problem(
                "CONSOLE_URL",
                "required with APPROVAL_SLACK_WEBHOOK_URL: each message links to the approval's page",
            );
        }
        NotifierSettings {
            console_url,
            webhook,
            slack_webhook_url,
        }
    }

    /// A notifier's URL: itself a credential (a token in its path) or the
    /// way to one (the webhook body carries approval tokens), so `https://`
    /// only — plain `http://` only to a loopback address — and never
    /// printed, not even in the problem.
    fn notifier_url(&mut self, variable: &'static str) -> Option<SecretText> {
        let raw = self.get(variable)?;
        let loopback = |url: &Url| match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match Url::parse(raw.trim()) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => {
                Some(SecretText(raw.trim().to_owned()))
            }
            Ok(url) if url.scheme() == "http" && loopback(&url) => {
                Some(SecretText(raw.trim().to_owned()))
            }
            _ => {
                self.problem(
                    variable,
                    "not an https:// URL (plain http:// only to a loopback address)",
                );
                None
            }
        }
    }

    fn millis(&mut self, variable: &'static str, default_ms: u64) -> Duration {
        Duration::from_millis(self.number(variable, default_ms, (1, 600_000)))
    }

    /// One URL, or a comma-separated list of `redis://` URLs (each checked like
    /// [`url`](Self::url)); the problem names the position of a bad one.
    fn url_list(&mut self, variable: &'static str, schemes: &[&str]) -> Option<SecretUrl> {
        let raw = self.get(variable)?;
        let parts: Vec<String> = redis_nodes(&raw)
            .into_iter()
            .map(|p| p.trim().to_owned())
            .collect();
        if parts.len() == 1 {
            return self.url(variable, schemes);
        }
        for (i, part) in parts.iter().enumerate() {
            let problem = match Url::parse(part) {
                Ok(url) if schemes.contains(&url.scheme()) => continue,
                Ok(url) => format!(
                    "node {} has unsupported scheme {:?} (expected one of {})",
                    i + 1,
                    url.scheme(),
                    schemes.join(", ")
                ),
                Err(e) => format!("node {} is not a valid URL ({e})", i + 1),
            };
            self.problem(variable, problem);
            return None;
        }
        Some(SecretUrl(parts.join(",")))
    }

    fn url(&mut self, variable: &'static str, schemes: &[&str]) -> Option<SecretUrl> {
        let raw = self.get(variable)?;
        match Url::parse(raw.trim()) {
            Ok(url) if schemes.contains(&url.scheme()) => Some(SecretUrl(raw.trim().to_owned())),
            Ok(url) => {
                self.problem(
                    variable,
                    format!(
                        "unsupported scheme {:?} (expected one of {})",
                        url.scheme(),
                        schemes.join(", ")
                    ),
                );
                None
            }
            // The parse error names the defect, never the (possibly secret) text.
            Err(e) => {
                self.problem(variable, format!("not a valid URL ({e})"));
                None
            }
        }
    }
}

impl Settings {
    /// Loads `.env` (if present; real environment variables win) and reads the
    /// settings from the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        match dotenvy::dotenv() {
            Ok(_) => {}
            Err(e) if e.not_found() => {}
            Err(e) => {
                return Err(SettingsError::DotEnv {
                    reason: e.to_string(),
                });
            }
        }
        Self::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Loads `.env` into the process environment if the file exists (real
    /// environment variables win). A malformed file is an error.
    pub fn load_dotenv() -> Result<(), SettingsError> {
        match dotenvy::dotenv() {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(SettingsError::DotEnv {
                reason: e.to_string(),
            }),
        }
    }

    /// Reads the settings through `lookup` (variable name → value). Empty values
    /// count as unset. Every problem is collected and reported together.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let mut r = Reader {
            lookup,
            problems: Vec::new(),
        };

        let database_url = match r.get("DATABASE_URL") {
            None => {
                r.problem(
                    "DATABASE_URL",
                    "missing (e.g. sqlite://warden.db?mode=rwc or \
                     postgres://user:password@127.0.0.1:5432/warden)",
                );
                None
            }
            Some(_) => r.url("DATABASE_URL", &["postgres", "postgresql", "sqlite"]),
        };
        let database_backend = match database_url.as_ref().map(|u| u.expose()) {
            Some(u) if u.starts_with("sqlite:") => DatabaseBackend::Sqlite,
            _ => DatabaseBackend::Postgres,
        };
        if database_backend == DatabaseBackend::Postgres
            && let Some(url) = database_url
                .as_ref()
                .and_then(|u| Url::parse(u.expose()).ok())
        {
            // The driver logs an unrecognized parameter with its value (which
            // may be a credential) and then ignores it: refuse it here instead.
            for (key, _) in url.query_pairs() {
                if !POSTGRES_URL_PARAMETERS.contains(&key.as_ref()) && !key.starts_with("options[")
                {
                    r.problem(
                        "DATABASE_URL",
                        format!(
                            "unsupported parameter {key:?} (the driver would ignore it); \
                             supported: {}",
                            POSTGRES_URL_PARAMETERS.join(", ")
                        ),
                    );
                }
            }
        }
        let database_pool = DatabasePoolSettings {
            max_connections: r.number("DATABASE_MAX_CONNECTIONS", 25, (1, 1000)),
            min_connections: r.number("DATABASE_MIN_CONNECTIONS", 2, (0, 1000)),
            connect_timeout: r.millis("DATABASE_CONNECT_TIMEOUT_MS", 5_000),
            acquire_timeout: r.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 5_000),
            idle_timeout: Duration::from_secs(r.number(
                "DATABASE_IDLE_TIMEOUT_SECONDS",
                300,
                (1, 86_400),
            )),
        };
        if database_pool.min_connections > database_pool.max_connections {
            r.problem(
                "DATABASE_MIN_CONNECTIONS",
                format!(
                    "{} is more than DATABASE_MAX_CONNECTIONS ({})",
                    database_pool.min_connections, database_pool.max_connections
                ),
            );
        }
        let redis_url = r.url_list("REDIS_URL", &["redis", "rediss"]);
        let redis_pool = RedisPoolSettings {
            max_size: r.number("REDIS_POOL_MAX_SIZE", 50, (1, 10_000)),
            wait_timeout: r.millis("REDIS_WAIT_TIMEOUT_MS", 2_000),
            create_timeout: r.millis("REDIS_CREATE_TIMEOUT_MS", 2_000),
            recycle_timeout: r.millis("REDIS_RECYCLE_TIMEOUT_MS", 1_000),
            command_timeout: r.millis("REDIS_COMMAND_TIMEOUT_MS", 1_000),
        };
        let cache_key_prefix = {
            let raw = r
                .get("CACHE_KEY_PREFIX")
                .unwrap_or_else(|| "warden:".into());
            match KeyPrefix::new(raw.trim()) {
                Ok(prefix) => Some(prefix),
                Err(e) => {
                    r.problem("CACHE_KEY_PREFIX", e.to_string());
                    None
                }
            }
        };
        let cache_max_entries = r.number("CACHE_MAX_ENTRIES", 100_000, (1, 100_000_000));
        let cache_max_bytes = r.number(
            "CACHE_MAX_BYTES",
            warden_cache::DEFAULT_IN_PROCESS_BYTES,
            (1024 * 1024, 64 * 1024 * 1024 * 1024),
        );
        let cache_max_value_bytes = r.number(
            "CACHE_MAX_VALUE_BYTES",
            warden_cache::MAX_VALUE_BYTES,
            (1024, warden_cache::MAX_VALUE_BYTES),
        );
        let rate_limit_fail_mode = match r.get("RATE_LIMIT_FAIL_OPEN") {
            None => FailMode::Closed,
            Some(raw) => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => FailMode::Open,
                "false" | "0" | "no" => FailMode::Closed,
                _ => {
                    r.problem(
                        "RATE_LIMIT_FAIL_OPEN",
                        format!("{raw:?} is not true or false"),
                    );
                    FailMode::Closed
                }
            },
        };
        let approval_token_ttl =
            Duration::from_secs(r.number("APPROVAL_TOKEN_TTL_SECONDS", 300, (1, 86_400)));
        let environment = match r.get("ENVIRONMENT") {
            None => Environment::Development,
            Some(raw) => raw.parse().unwrap_or_else(|e: String| {
                r.problem("ENVIRONMENT", format!("{raw:?}: {e}"));
                Environment::Development
            }),
        };
        let health_timeout = r.millis("HEALTH_TIMEOUT_MS", 3_000);
        let audit_step_timeout = r.millis("AUDIT_STEP_TIMEOUT_MS", 30_000);
        let audit_signing_key = match r
            .get("AUDIT_SIGNING_KEY_FILE")
            .filter(|v| !v.trim().is_empty())
        {
            None => None,
            Some(path) => match CheckpointSigner::load(std::path::Path::new(path.trim())) {
                Ok(key) => Some(key),
                Err(e) => {
                    r.problem("AUDIT_SIGNING_KEY_FILE", e.to_string());
                    None
                }
            },
        };
        let audit_log_origin = r
            .get("AUDIT_LOG_ORIGIN")
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .unwrap_or_else(|| DEFAULT_ORIGIN.to_owned());
        if audit_log_origin
            .chars()
            .any(|c| c.is_whitespace() || c == '+')
        {
            r.problem("AUDIT_LOG_ORIGIN", "must not contain spaces or '+'");
        }
        let audit_checkpoint_interval = r.millis("AUDIT_CHECKPOINT_INTERVAL_MS", 1_000);
        let targets: Vec<String> = r
            .get("AUDIT_CHECKPOINT_PUBLISH")
            .map(|v| v.split(',').map(|t| t.trim().to_owned()).collect())
            .unwrap_or_default();
        let audit_checkpoint_publisher = match CheckpointPublisher::new(&targets) {
            Ok(p) => p,
            Err(e) => {
                r.problem("AUDIT_CHECKPOINT_PUBLISH", e.to_string());
                CheckpointPublisher::default()
            }
        };
        let audit_spill_path = r.get("AUDIT_SPILL_PATH").map_or_else(
            || "warden-audit.spill".into(),
            |p| std::path::PathBuf::from(p.trim()),
        );
        let audit_batch_size = r.number("AUDIT_BATCH_SIZE", 1_000, (1, 10_000));
        let audit_buffer_capacity = r.number("AUDIT_BUFFER_CAPACITY", 65_536, (1, 10_000_000));
        let bcrypt_cost = r.number(
            "BCRYPT_COST",
            12,
            (*BCRYPT_COSTS.start(), *BCRYPT_COSTS.end()),
        );
        if environment == Environment::Production && bcrypt_cost < RECOMMENDED_BCRYPT.0 {
            r.problem(
                "BCRYPT_COST",
                format!(
                    "{bcrypt_cost} is too cheap for production (use {} to {})",
                    RECOMMENDED_BCRYPT.0, RECOMMENDED_BCRYPT.1
                ),
            );
        }
        let key_verify_cache_ttl =
            Duration::from_secs(r.number("KEY_VERIFY_CACHE_TTL_SECONDS", 30, (1, 3_600)));
        let policy_path = r
            .get("POLICY_PATH")
            .map(|p| std::path::PathBuf::from(p.trim()));
        let audit_max_args_bytes =
            r.number("AUDIT_MAX_ARGS_BYTES", 65_536, (256, 16 * 1024 * 1024));
        let cache_mac_key = r.mac_key("CACHE_MAC_KEY", CacheMacKey::from_bytes);
        let audit_spill_mac_key = r.mac_key("AUDIT_SPILL_MAC_KEY", SpillMacKey::from_bytes);
        if environment == Environment::Production {
            let present = [
                r.get("AUDIT_SIGNING_KEY_FILE").is_some(),
                r.get("CACHE_MAC_KEY").is_some(),
                r.get("AUDIT_SPILL_MAC_KEY").is_some(),
            ];
            for ((variable, without), present) in GUARANTEE_SECRETS.iter().zip(present) {
                if !present {
                    r.problem(
                        variable,
                        format!("required when ENVIRONMENT=production: without it {without}"),
                    );
                }
            }
        }

        let notifiers = r.notifiers();

        match (database_url, cache_key_prefix) {
            (Some(database_url), Some(cache_key_prefix)) if r.problems.is_empty() => Ok(Self {
                database_url,
                database_backend,
                database_pool,
                redis_url,
                redis_pool,
                cache_key_prefix,
                cache_max_entries,
                cache_max_bytes,
                cache_max_value_bytes,
                rate_limit_fail_mode,
                approval_token_ttl,
                environment,
                health_timeout,
                audit_step_timeout,
                audit_signing_key,
                audit_log_origin,
                audit_checkpoint_interval,
                audit_checkpoint_publisher,
                audit_spill_path,
                audit_batch_size,
                audit_buffer_capacity,
                audit_max_args_bytes,
                bcrypt_cost,
                key_verify_cache_ttl,
                policy_path,
                cache_mac_key,
                audit_spill_mac_key,
                notifiers,
            }),
            _ => Err(SettingsError::Invalid(r.problems)),
        }
    }

    /// The audit logger's configuration.
    pub fn audit_logger_config(&self) -> AuditLoggerConfig {
        let mut config = AuditLoggerConfig::new(self.audit_spill_path.clone());
        config.batch_size = self.audit_batch_size;
        config.buffer_capacity = self.audit_buffer_capacity;
        config.integrator = Some(self.integrator_config());
        config.spill_mac_key = self.audit_spill_mac_key.clone();
        config
    }

    /// The audit integrator's configuration (signing key, origin, interval,
    /// publishing).
    pub fn integrator_config(&self) -> IntegratorConfig {
        IntegratorConfig {
            origin: self.audit_log_origin.clone(),
            signer: self.audit_signing_key.clone(),
            publisher: self.audit_checkpoint_publisher.clone(),
            checkpoint_interval: self.audit_checkpoint_interval,
            ..IntegratorConfig::default()
        }
    }

    /// The policy in force: the `POLICY_PATH` file's text and its name, or
    /// the default policy built into Warden (`policies/default.yaml` of this
    /// release), so an installed binary works from any directory.
    pub fn policy_source(&self) -> Result<(String, String), SettingsError> {
        match &self.policy_path {
            Some(path) => std::fs::read_to_string(path)
                .map(|text| (text, path.display().to_string()))
                .map_err(|e| {
                    SettingsError::Invalid(vec![SettingProblem {
                        variable: "POLICY_PATH",
                        problem: format!("cannot read {}: {e}", path.display()),
                    }])
                }),
            None => Ok((DEFAULT_POLICY.to_owned(), "built-in default".to_owned())),
        }
    }

    /// The redactor audit events are built with: the built-in rules plus
    /// the policy's `redaction:` rules, capped at `AUDIT_MAX_ARGS_BYTES`.
    /// A policy that cannot be read or parsed, or a redaction rule that does
    /// not compile, is an error naming `POLICY_PATH` (and the rule).
    pub fn redactor(&self) -> Result<Redactor, SettingsError> {
        let (text, name) = self.policy_source()?;
        let invalid = |problem: String| {
            SettingsError::Invalid(vec![SettingProblem {
                variable: "POLICY_PATH",
                problem: format!("policy {name}: {problem}"),
            }])
        };
        let policy = warden_keys::Policy::from_yaml(&text).map_err(|e| invalid(e.to_string()))?;
        Ok(policy
            .redactor()
            .map_err(|e| invalid(e.to_string()))?
            .with_max_bytes(self.audit_max_args_bytes))
    }

    /// The Redis pool configuration, when `REDIS_URL` is set.
    pub fn redis_pool_config(&self) -> Option<RedisPoolConfig> {
        self.redis_url.as_ref().map(|url| RedisPoolConfig {
            url: url.expose().to_owned(),
            max_size: self.redis_pool.max_size,
            wait_timeout: self.redis_pool.wait_timeout,
            create_timeout: self.redis_pool.create_timeout,
            recycle_timeout: self.redis_pool.recycle_timeout,
            command_timeout: self.redis_pool.command_timeout,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|name| map.get(name).cloned())
    }

    fn variables(err: &SettingsError) -> Vec<&'static str> {
        err.problems().iter().map(|p| p.variable).collect()
    }

    #[test]
    fn defaults_with_only_a_database_url() {
        let s = load(&[("DATABASE_URL", "sqlite://warden.db?mode=rwc")]).unwrap();
        assert_eq!(s.database_backend, DatabaseBackend::Sqlite);
        assert!(s.redis_url.is_none());
        assert_eq!(s.database_pool.max_connections, 25);
        assert_eq!(s.redis_pool.max_size, 50);
        assert_eq!(s.approval_token_ttl, Duration::from_secs(300));
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.cache_key_prefix.as_str(), "warden:");
        assert!(s.redis_pool_config().is_none());
        assert_eq!(s.rate_limit_fail_mode, FailMode::Closed);
    }

    #[test]
    fn rate_limit_fail_mode_is_a_boolean() {
        let open = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("RATE_LIMIT_FAIL_OPEN", "true"),
        ]);
        assert_eq!(open.unwrap().rate_limit_fail_mode, FailMode::Open);
        let err = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("RATE_LIMIT_FAIL_OPEN", "maybe"),
        ])
        .unwrap_err();
        assert_eq!(variables(&err), ["RATE_LIMIT_FAIL_OPEN"]);
    }

    /// Security review, item 12: production refuses to start without the
    /// secrets that make the guarantees real, naming each.
    /// Hardening, item 1: the policy's redaction rules are in force, and a
    /// bad one is an error naming POLICY_PATH and the rule, at start-up.
    #[test]
    fn the_policys_redaction_rules_are_validated_and_applied() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.yaml");
        std::fs::write(
            &good,
            format!(
                "{DEFAULT_POLICY}\nredaction:\n  extra_key_names: [tenant_seal]\n  \
                 extra_patterns:\n    - {{ name: acme_token, regex: 'acme_[0-9a-f]{{24}}' }}\n"
            ),
        )
        .unwrap();
        let s = load(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("POLICY_PATH", good.to_str().unwrap()),
        ])
        .unwrap();
        let redactor = s.redactor().unwrap();
        let r = redactor
            .redact(&serde_json::json!({"x": "acme_0123456789abcdef01234567", "tenant_seal": "s"}))
            .unwrap();
        assert_eq!(
            r.value,
            serde_json::json!({"x": "[REDACTED:acme_token]", "tenant_seal": warden_audit::REDACTED})
        );

        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            format!(
                "{DEFAULT_POLICY}\nredaction:\n  extra_patterns:\n    - {{ name: broken, regex: 'acme_[0-9' }}\n"
            ),
        )
        .unwrap();
        let s = load(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("POLICY_PATH", bad.to_str().unwrap()),
        ])
        .unwrap();
        let err = s.redactor().unwrap_err();
        assert_eq!(variables(&err), ["POLICY_PATH"]);
        let text = err.to_string();
        assert!(
            text.contains("broken") && text.contains("does not compile"),
            "{text}"
        );
        // The built-in policy has no extra rules and is always valid.
        let s = load(&[("DATABASE_URL", "sqlite::memory:")]).unwrap();
        assert!(s.redactor().is_ok());
    }

    #[test]
    fn production_requires_every_guarantee_secret() {
        let err = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("ENVIRONMENT", "production"),
        ])
        .unwrap_err();
        assert_eq!(
            variables(&err),
            [
                "AUDIT_SIGNING_KEY_FILE",
                "CACHE_MAC_KEY",
                "AUDIT_SPILL_MAC_KEY"
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("audit.key");
        let (secret, _) = CheckpointSigner::generate("prod.example/audit").unwrap();
        std::fs::write(&key, secret).unwrap();
        let s = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("ENVIRONMENT", "production"),
            ("AUDIT_SIGNING_KEY_FILE", key.to_str().unwrap()),
            ("CACHE_MAC_KEY", &"k".repeat(32)),
            ("AUDIT_SPILL_MAC_KEY", &"s".repeat(40)),
        ])
        .unwrap();
        assert!(s.cache_mac_key.is_some() && s.audit_spill_mac_key.is_some());
        let printed = format!("{s:?}");
        assert!(
            !printed.contains(&"k".repeat(32)) && !printed.contains(&"s".repeat(40)),
            "{printed}"
        );
        // Too short is refused everywhere, without echoing the value.
        let err = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("CACHE_MAC_KEY", "short-secret"),
        ])
        .unwrap_err();
        assert_eq!(variables(&err), ["CACHE_MAC_KEY"]);
        assert!(!err.to_string().contains("short-secret"));
    }

    /// Security review, item 5: a credential anywhere in a URL stays out of
    /// `Debug`, `Display` and `redacted`.
    /// Scale-out: REDIS_URL may list cluster nodes; a comma inside a
    /// password (in any URL) is never taken for a separator, and no part of
    /// a password is shown.
    #[test]
    fn redis_node_lists_are_parsed_and_redacted_per_node() {
        let s = load(&[
            ("DATABASE_URL", "postgres://app:7,Zq:Secr3t@db/warden"),
            (
                "REDIS_URL",
                "redis://:pw,a@n1:7000, redis://:pw-b@n2:7001,rediss://n3:7002",
            ),
        ])
        .unwrap();
        let shown = format!("{s:?} {} {}", s.database_url, s.redis_url.as_ref().unwrap());
        for secret in ["7,Zq", "Secr3t", "pw,a", "pw-b"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert_eq!(redis_nodes(s.redis_url.as_ref().unwrap().expose()).len(), 3);
        let single = load(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("REDIS_URL", "redis://:pa,ss@n1:6379"),
        ])
        .unwrap();
        assert_eq!(
            redis_nodes(single.redis_url.as_ref().unwrap().expose()).len(),
            1
        );
        let bad = load(&[
            ("DATABASE_URL", "sqlite::memory:"),
            ("REDIS_URL", "redis://n1:7000,redis://[bad"),
        ])
        .unwrap_err();
        assert_eq!(variables(&bad), ["REDIS_URL"]);
    }

    #[test]
    fn every_credential_bearing_url_part_is_redacted() {
        let s = load(&[
            (
                "DATABASE_URL",
                "postgres://u:pw-in-userinfo@h/db?password=pw-in-query&sslmode=require#frag-secret",
            ),
            ("REDIS_URL", "redis://h:6379/0?token=tok-in-query"),
        ])
        .unwrap();
        let printed = format!(
            "{s:?} {} {}",
            s.database_url,
            s.redis_url.as_ref().unwrap().redacted()
        );
        for secret in [
            "pw-in-userinfo",
            "pw-in-query",
            "frag-secret",
            "tok-in-query",
        ] {
            assert!(!printed.contains(secret), "{secret} leaked: {printed}");
        }
        assert!(printed.contains("sslmode=require"), "{printed}");
        assert!(printed.contains("postgres://u:***@h/db"), "{printed}");
        // What the pool builder is shown keeps every non-secret parameter
        // (so it still parses) and drops the credentials.
        let shown =
            SecretUrl("postgres://u:pw-a@h/db?port=5433&password=pw-b&sslmode=require".into())
                .without_credentials()
                .unwrap();
        assert_eq!(shown, "postgres://u@h/db?port=5433&sslmode=require");
        // A parameter the driver would ignore (and log with its value) is refused.
        let err =
            load(&[("DATABASE_URL", "postgres://u@h/db?sslpassword=pw-unknown")]).unwrap_err();
        assert_eq!(variables(&err), ["DATABASE_URL"]);
        assert!(!err.to_string().contains("pw-unknown"), "{err}");
    }

    #[test]
    fn missing_database_url_is_named() {
        let err = load(&[]).unwrap_err();
        assert_eq!(variables(&err), ["DATABASE_URL"]);
        assert!(err.to_string().contains("DATABASE_URL: missing"), "{err}");
    }

    #[test]
    fn every_malformed_variable_is_named_at_once() {
        let err = load(&[
            ("DATABASE_URL", "mysql://db/x"),
            ("REDIS_URL", "not a url"),
            ("DATABASE_MAX_CONNECTIONS", "lots"),
            ("REDIS_POOL_MAX_SIZE", "0"),
            ("APPROVAL_TOKEN_TTL_SECONDS", "-5"),
            ("ENVIRONMENT", "moon"),
            ("CACHE_KEY_PREFIX", "has space"),
            ("HEALTH_TIMEOUT_MS", "99999999999999999999999"),
        ])
        .unwrap_err();
        assert_eq!(
            variables(&err),
            [
                "DATABASE_URL",
                "DATABASE_MAX_CONNECTIONS",
                "REDIS_URL",
                "REDIS_POOL_MAX_SIZE",
                "CACHE_KEY_PREFIX",
                "APPROVAL_TOKEN_TTL_SECONDS",
                "ENVIRONMENT",
                "HEALTH_TIMEOUT_MS",
            ]
        );
        let text = err.to_string();
        assert!(text.contains("unsupported scheme \"mysql\""), "{text}");
        assert!(text.contains("\"lots\" is not a whole number"), "{text}");
    }

    #[test]
    fn min_connections_above_max_is_refused() {
        let err = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("DATABASE_MAX_CONNECTIONS", "4"),
            ("DATABASE_MIN_CONNECTIONS", "5"),
        ])
        .unwrap_err();
        assert_eq!(variables(&err), ["DATABASE_MIN_CONNECTIONS"]);
    }

    #[test]
    fn passwords_never_appear_in_debug_or_errors() {
        let s = load(&[
            (
                "DATABASE_URL",
                "postgres://warden:hunter2-db@127.0.0.1:5432/warden",
            ),
            ("REDIS_URL", "redis://:hunter2-redis@127.0.0.1:6379/0"),
        ])
        .unwrap();
        let debug = format!("{s:?} {:?}", s.redis_pool_config());
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("warden:***@127.0.0.1"), "{debug}");
        assert_eq!(
            s.database_url.expose(),
            "postgres://warden:hunter2-db@127.0.0.1:5432/warden"
        );

        // A malformed URL holding a password is reported without echoing it.
        let err = load(&[("DATABASE_URL", "postgres://warden:hunter2@[bad-host/db")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert_eq!(variables(&err), ["DATABASE_URL"]);
    }

    #[test]
    fn signing_key_is_checked_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "PRIVATE+KEY+not-a-key").unwrap();
        let err = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("AUDIT_SIGNING_KEY_FILE", bad.to_str().unwrap()),
        ])
        .unwrap_err();
        assert_eq!(variables(&err), ["AUDIT_SIGNING_KEY_FILE"]);
        let (secret, _) = CheckpointSigner::generate("example.org/audit").unwrap();
        let good = dir.path().join("good.key");
        std::fs::write(&good, &secret).unwrap();
        let s = load(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("AUDIT_SIGNING_KEY_FILE", good.to_str().unwrap()),
        ])
        .unwrap();
        let config = s.audit_logger_config().integrator.unwrap();
        assert_eq!(config.effective_origin(), "example.org/audit");
        let secret_part = secret.splitn(5, '+').nth(4).unwrap();
        assert!(!format!("{s:?}").contains(secret_part));
    }

    #[test]
    fn empty_redis_url_selects_the_in_process_cache() {
        let s = load(&[("DATABASE_URL", "postgres://u@h/db"), ("REDIS_URL", "  ")]).unwrap();
        assert!(s.redis_url.is_none());
        assert_eq!(s.database_backend, DatabaseBackend::Postgres);
    }

    #[test]
    fn environment_names_parse_case_insensitively() {
        for (raw, want) in [
            ("PRODUCTION", Environment::Production),
            ("prod", Environment::Production),
            ("Staging", Environment::Staging),
            ("test", Environment::Test),
        ] {
            let s = load(&[("DATABASE_URL", "postgres://u@h/db"), ("ENVIRONMENT", raw)]);
            let environment = match s {
                Ok(s) => s.environment,
                // Production refuses without its secrets: it was read as production.
                Err(e) => {
                    assert!(e.to_string().contains("ENVIRONMENT=production"), "{e}");
                    Environment::Production
                }
            };
            assert_eq!(environment, want);
        }
    }
}
