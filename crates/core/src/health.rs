//! Health: one call that says whether storage is reachable and migrated.
//!
//! [`check`] and [`probe`] never return an error and never panic: every failure
//! becomes a [`Check`] with status [`CheckStatus::Fail`] and a reason, and each
//! check is bounded by `HEALTH_TIMEOUT_MS`, so a hung server shows as a failed
//! check, not a hung caller.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{instrument, warn};

use crate::{Settings, Warden};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CheckStatus {
    /// Working as expected.
    Pass,
    /// Working, but not as a production deployment should be.
    Warn,
    /// Not working; `detail` says why.
    Fail,
}

/// One check's status, a human-readable detail (the reason on failure) and how
/// long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Pass, warn or fail.
    pub status: CheckStatus,
    /// What was found, or why it failed.
    pub detail: String,
    /// Time the check took, in milliseconds.
    pub elapsed_ms: u64,
}

impl Check {
    fn new(status: CheckStatus, detail: impl Into<String>, started: Instant) -> Self {
        Self {
            status,
            detail: detail.into(),
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The three checks: database reachable, cache reachable, schema migrated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// A round trip to the database.
    pub database: Check,
    /// A round trip to the cache (Redis PING), or the in-process cache.
    pub cache: Check,
    /// Every migration this build knows is applied, and no unknown one is.
    pub migrations: Check,
    /// Audit checkpoints are signed (a warning when no signing key is set).
    pub audit: Check,
    /// The secrets that make the guarantees real are set (a warning naming
    /// each missing one; production refuses to start without them).
    pub secrets: Check,
    /// The configuration's security posture: a warning for rate limits that
    /// fail open, a bcrypt cost outside the recommended band, and (in
    /// production) the embedded database or the in-process cache.
    pub posture: Check,
}

impl HealthReport {
    /// True when no check failed (warnings allowed).
    pub fn is_healthy(&self) -> bool {
        self.checks()
            .iter()
            .all(|(_, c)| c.status != CheckStatus::Fail)
    }

    /// True when every check passed (what `warden health --strict` requires).
    pub fn is_strictly_healthy(&self) -> bool {
        self.checks()
            .iter()
            .all(|(_, c)| c.status == CheckStatus::Pass)
    }

    /// The checks with their names, in display order.
    pub fn checks(&self) -> [(&'static str, &Check); 6] {
        [
            ("database", &self.database),
            ("cache", &self.cache),
            ("migrations", &self.migrations),
            ("audit", &self.audit),
            ("secrets", &self.secrets),
            ("posture", &self.posture),
        ]
    }
}

/// Builds storage from `settings` without failing on an unreachable service, and
/// checks it. Configuration that cannot even build a pool is a failed database
/// or cache check with the reason.
pub async fn probe(settings: &Settings) -> HealthReport {
    let started = Instant::now();
    match Warden::connect_lazy(settings).await {
        Ok(storage) => {
            let report = check(&storage).await;
            // Closing only returns pooled connections; nothing to report if it fails.
            let _ = storage.close().await;
            report
        }
        Err(e) => {
            let fail = |detail: String| Check::new(CheckStatus::Fail, detail, started);
            HealthReport {
                database: fail(e.to_string()),
                cache: fail("not checked: storage could not be configured".into()),
                migrations: fail("not checked: storage could not be configured".into()),
                audit: fail("not checked: storage could not be configured".into()),
                secrets: check_secrets(settings),
                posture: check_posture(settings),
            }
        }
    }
}

/// Runs the three checks concurrently, each bounded by the health timeout.
#[instrument(skip_all, fields(database = ?storage.database_backend()))]
pub async fn check(storage: &Warden) -> HealthReport {
    let limit = storage.settings().health_timeout;
    let (database, cache, migrations) = tokio::join!(
        bounded(limit, check_database(storage)),
        bounded(limit, check_cache(storage)),
        bounded(limit, check_migrations(storage)),
    );
    let audit = check_audit(storage);
    let report = HealthReport {
        database,
        cache,
        migrations,
        audit,
        secrets: check_secrets(storage.settings()),
        posture: check_posture(storage.settings()),
    };
    for (name, c) in report.checks() {
        if c.status != CheckStatus::Pass {
            warn!(check = name, status = ?c.status, detail = %c.detail, "health check not passing");
        }
    }
    report
}

async fn bounded(limit: Duration, check: impl Future<Output = Check>) -> Check {
    let started = Instant::now();
    tokio::time::timeout(limit, check)
        .await
        .unwrap_or_else(|_| {
            Check::new(
                CheckStatus::Fail,
                format!("no answer within {} ms", limit.as_millis()),
                started,
            )
        })
}

async fn check_database(storage: &Warden) -> Check {
    let started = Instant::now();
    match storage.database().ping().await {
        Ok(()) => Check::new(
            CheckStatus::Pass,
            format!("{:?} reachable", storage.database_backend()).to_lowercase(),
            started,
        ),
        Err(e) => Check::new(CheckStatus::Fail, e.to_string(), started),
    }
}

async fn check_cache(storage: &Warden) -> Check {
    let started = Instant::now();
    match storage.cache().ping().await {
        Ok(()) if storage.cache().redis_pool().is_some() => {
            Check::new(CheckStatus::Pass, "redis reachable", started)
        }
        Ok(()) => Check::new(
            CheckStatus::Pass,
            "in-process cache (embedded default; not shared between processes)",
            started,
        ),
        Err(e) => Check::new(CheckStatus::Fail, e.to_string(), started),
    }
}

/// Whether audit checkpoints are signed: without a key the log still
/// detects tampering by someone without database access, but its
/// checkpoints prove nothing to anyone else.
fn check_audit(storage: &Warden) -> Check {
    let started = Instant::now();
    match &storage.settings().audit_signing_key {
        Some(key) => Check::new(
            CheckStatus::Pass,
            format!("checkpoints signed for {}", key.origin()),
            started,
        ),
        None => Check::new(
            CheckStatus::Warn,
            "checkpoints are unsigned: set AUDIT_SIGNING_KEY_FILE (warden audit keygen)",
            started,
        ),
    }
}

/// Whether every secret a guarantee depends on is set; a warning names each
/// missing one and what is weaker without it.
fn check_secrets(settings: &Settings) -> Check {
    let started = Instant::now();
    let present = [
        settings.audit_signing_key.is_some(),
        settings.cache_mac_key.is_some(),
        settings.audit_spill_mac_key.is_some(),
    ];
    let missing: Vec<String> = crate::GUARANTEE_SECRETS
        .iter()
        .zip(present)
        .filter(|(_, present)| !present)
        .map(|((variable, without), _)| format!("{variable} unset: {without}"))
        .collect();
    if missing.is_empty() {
        Check::new(
            CheckStatus::Pass,
            "every guarantee's secret is set",
            started,
        )
    } else {
        Check::new(CheckStatus::Warn, missing.join("; "), started)
    }
}

/// Settings that weaken a guarantee without breaking anything: each is named.
fn check_posture(settings: &Settings) -> Check {
    let started = Instant::now();
    let production = settings.environment == crate::Environment::Production;
    let mut weak = Vec::new();
    if settings.rate_limit_fail_mode == warden_cache::FailMode::Open {
        weak.push(
            "RATE_LIMIT_FAIL_OPEN=true: an unreachable cache lets every request through".to_owned(),
        );
    }
    let (low, high) = crate::settings::RECOMMENDED_BCRYPT;
    if !(low..=high).contains(&settings.bcrypt_cost) {
        weak.push(format!(
            "BCRYPT_COST={} is outside the recommended {low}..={high}",
            settings.bcrypt_cost
        ));
    }
    if production && settings.database_backend == crate::DatabaseBackend::Sqlite {
        weak.push("SQLite in production: one file on one host, no replicas".to_owned());
    }
    if production && settings.redis_url.is_none() {
        weak.push(
            "in-process cache in production: rate limits and cached verifications are per process"
                .to_owned(),
        );
    }
    let policy = match settings.policy_source() {
        Ok((text, name)) => match warden_keys::Policy::from_yaml(&text) {
            Ok(_) => format!("policy in force: {name}"),
            Err(e) => {
                weak.push(format!("policy {name} is invalid: {e}"));
                format!("policy in force: none valid ({name})")
            }
        },
        Err(e) => {
            weak.push(e.to_string());
            "policy in force: none readable".to_owned()
        }
    };
    if weak.is_empty() {
        Check::new(
            CheckStatus::Pass,
            format!("no weakening setting; {policy}"),
            started,
        )
    } else {
        Check::new(
            CheckStatus::Warn,
            format!("{}; {policy}", weak.join("; ")),
            started,
        )
    }
}

async fn check_migrations(storage: &Warden) -> Check {
    let started = Instant::now();
    match migration::status(storage.database()).await {
        Ok(states) => {
            let pending: Vec<&str> = states
                .iter()
                .filter(|s| !s.applied)
                .map(|s| s.name.as_str())
                .collect();
            if pending.is_empty() {
                Check::new(
                    CheckStatus::Pass,
                    format!("{} applied, none pending", states.len()),
                    started,
                )
            } else {
                Check::new(
                    CheckStatus::Fail,
                    format!(
                        "{} pending: {} (run `warden migrate up`)",
                        pending.len(),
                        pending.join(", ")
                    ),
                    started,
                )
            }
        }
        Err(e) => Check::new(CheckStatus::Fail, e.to_string(), started),
    }
}
