//! The health check against real services, including stopped, paused,
//! blackholed and password-protected ones: every failure is a failed check with
//! a reason, delivered within the configured timeout — never an error, a panic
//! or a hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use warden_core::health::{self, CheckStatus, HealthReport};
use warden_core::{CoreError, Settings, Warden};
use warden_testkit::{Backend, Blackhole, PrivateRedis, TestDatabase, TestRedis, free_port};

/// A bound no health call may exceed (its own timeout is 1 s per check).
const NO_HANG: Duration = Duration::from_secs(15);

/// A checkpoint signing key file for these tests (one per process).
fn key_file() -> String {
    static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("warden-health-{}.key", std::process::id()));
        let (secret, _) = warden_audit::CheckpointSigner::generate("health.test/audit").unwrap();
        std::fs::write(&path, secret).unwrap();
        path.display().to_string()
    })
    .clone()
}

fn settings(database_url: &str, redis_url: Option<&str>) -> Settings {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("AUDIT_SIGNING_KEY_FILE", key_file()),
        ("CACHE_MAC_KEY", "c".repeat(32)),
        ("AUDIT_SPILL_MAC_KEY", "s".repeat(32)),
        ("DATABASE_URL", database_url.to_owned()),
        ("HEALTH_TIMEOUT_MS", "1000".into()),
        ("DATABASE_CONNECT_TIMEOUT_MS", "1000".into()),
        ("DATABASE_ACQUIRE_TIMEOUT_MS", "1000".into()),
        ("REDIS_WAIT_TIMEOUT_MS", "500".into()),
        ("REDIS_CREATE_TIMEOUT_MS", "500".into()),
        ("REDIS_RECYCLE_TIMEOUT_MS", "500".into()),
        ("REDIS_COMMAND_TIMEOUT_MS", "500".into()),
    ]);
    if let Some(url) = redis_url {
        vars.insert("REDIS_URL", url.to_owned());
    }
    Settings::from_lookup(|name| vars.get(name).cloned()).unwrap()
}

async fn check(storage: &Warden) -> HealthReport {
    tokio::time::timeout(NO_HANG, health::check(storage))
        .await
        .expect("health check hung")
}

async fn probe(settings: &Settings) -> HealthReport {
    tokio::time::timeout(NO_HANG, health::probe(settings))
        .await
        .expect("health probe hung")
}

#[tokio::test]
async fn healthy_on_postgres_and_redis() {
    let db = TestDatabase::postgres().await;
    let redis = TestRedis::new().await;
    let storage = Warden::connect(&settings(&db.url, Some(&redis.url)))
        .await
        .unwrap();
    let report = check(&storage).await;
    assert!(report.is_strictly_healthy(), "{report:#?}");
    assert_eq!(report.migrations.detail, "7 applied, none pending");
    assert_eq!(
        report.audit.detail,
        "checkpoints signed for health.test/audit"
    );
}

#[tokio::test]
async fn unsigned_checkpoints_are_a_warning() {
    let db = TestDatabase::sqlite().await;
    let unsigned = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        _ => None,
    })
    .unwrap();
    let report = probe(&unsigned).await;
    assert_eq!(report.audit.status, CheckStatus::Warn, "{report:#?}");
    assert!(report.audit.detail.contains("AUDIT_SIGNING_KEY_FILE"));
    assert!(report.is_healthy() && !report.is_strictly_healthy());
    // Operator safety, item 6: a cheap bcrypt cost and fail-open limits warn.
    let weak = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "BCRYPT_COST" => Some("4".into()),
        "RATE_LIMIT_FAIL_OPEN" => Some("true".into()),
        _ => None,
    })
    .unwrap();
    let posture = probe(&weak).await.posture;
    assert_eq!(posture.status, CheckStatus::Warn, "{posture:?}");
    assert!(
        posture.detail.contains("BCRYPT_COST=4") && posture.detail.contains("RATE_LIMIT_FAIL_OPEN"),
        "{posture:?}"
    );
    // Security review, item 12: each missing guarantee secret is named.
    assert_eq!(report.secrets.status, CheckStatus::Warn, "{report:#?}");
    for variable in [
        "AUDIT_SIGNING_KEY_FILE",
        "CACHE_MAC_KEY",
        "AUDIT_SPILL_MAC_KEY",
    ] {
        assert!(report.secrets.detail.contains(variable), "{report:#?}");
    }
}

#[tokio::test]
async fn healthy_on_sqlite_with_the_in_process_cache() {
    let db = TestDatabase::sqlite().await;
    let report = probe(&settings(&db.url, None)).await;
    assert!(report.is_strictly_healthy(), "{report:#?}");
    assert!(report.cache.detail.contains("in-process"), "{report:#?}");
}

#[tokio::test]
async fn unmigrated_database_fails_the_migrations_check() {
    for backend in Backend::ALL {
        let db = TestDatabase::empty(backend).await;
        let report = probe(&settings(&db.url, None)).await;
        assert_eq!(report.database.status, CheckStatus::Pass, "{report:#?}");
        assert_eq!(report.migrations.status, CheckStatus::Fail, "{report:#?}");
        assert!(
            report.migrations.detail.starts_with("7 pending"),
            "{report:#?}"
        );
        assert!(!report.is_healthy());
    }
}

#[tokio::test]
async fn stopped_redis_fails_the_cache_check_then_recovers_after_restart() {
    let db = TestDatabase::postgres().await;
    let mut redis = PrivateRedis::start().await;
    let storage = Warden::connect(&settings(&db.url, Some(&redis.url())))
        .await
        .unwrap();
    assert_eq!(check(&storage).await.cache.status, CheckStatus::Pass);

    redis.stop();
    let report = check(&storage).await;
    assert_eq!(report.cache.status, CheckStatus::Fail, "{report:#?}");
    assert!(report.cache.detail.contains("redis"), "{report:#?}");
    assert_eq!(report.database.status, CheckStatus::Pass, "{report:#?}");

    redis.restart().await;
    // The same pool reconnects by itself: no new Warden.
    let report = check(&storage).await;
    assert_eq!(report.cache.status, CheckStatus::Pass, "{report:#?}");
}

#[tokio::test]
async fn paused_redis_fails_within_the_timeout_then_recovers() {
    let db = TestDatabase::sqlite().await;
    let redis = PrivateRedis::start().await;
    let storage = Warden::connect(&settings(&db.url, Some(&redis.url())))
        .await
        .unwrap();
    assert_eq!(check(&storage).await.cache.status, CheckStatus::Pass);

    redis.pause();
    let report = check(&storage).await;
    redis.resume();
    assert_eq!(report.cache.status, CheckStatus::Fail, "{report:#?}");
    assert!(report.cache.elapsed_ms <= 2_500, "{report:#?}");

    let report = check(&storage).await;
    assert_eq!(report.cache.status, CheckStatus::Pass, "{report:#?}");
}

#[tokio::test]
async fn wrong_redis_password_fails_with_a_reason_that_hides_the_password() {
    let db = TestDatabase::sqlite().await;
    let redis = PrivateRedis::start_with_password(Some("right-horse-battery")).await;
    let wrong = format!("redis://:wrong-staple-9@127.0.0.1:{}", redis.port());
    let report = probe(&settings(&db.url, Some(&wrong))).await;
    assert_eq!(report.cache.status, CheckStatus::Fail, "{report:#?}");
    let text = format!("{report:?}");
    assert!(
        !text.contains("wrong-staple-9") && !text.contains("right-horse"),
        "{text}"
    );
    assert!(
        report.cache.detail.to_lowercase().contains("pass")
            || report.cache.detail.to_lowercase().contains("auth"),
        "reason should say authentication failed: {report:#?}"
    );

    let right = format!("redis://:right-horse-battery@127.0.0.1:{}", redis.port());
    assert!(
        probe(&settings(&db.url, Some(&right)))
            .await
            .is_strictly_healthy()
    );
}

#[tokio::test]
async fn blackholed_redis_fails_within_the_timeout() {
    let db = TestDatabase::sqlite().await;
    let hole = Blackhole::start().await;
    let url = format!("redis://127.0.0.1:{}", hole.port());
    let report = probe(&settings(&db.url, Some(&url))).await;
    assert_eq!(report.cache.status, CheckStatus::Fail, "{report:#?}");
    assert!(report.cache.elapsed_ms <= 2_500, "{report:#?}");
}

#[tokio::test]
async fn unreachable_database_is_reported_not_thrown() {
    let url = format!("postgres://postgres@127.0.0.1:{}/warden", free_port());
    let report = probe(&settings(&url, None)).await;
    assert_eq!(report.database.status, CheckStatus::Fail, "{report:#?}");
    assert_eq!(report.migrations.status, CheckStatus::Fail, "{report:#?}");
    assert_eq!(report.cache.status, CheckStatus::Pass, "{report:#?}");
    assert!(!report.is_healthy());
}

#[tokio::test]
async fn blackholed_database_fails_within_the_timeout() {
    let hole = Blackhole::start().await;
    let url = format!("postgres://postgres@127.0.0.1:{}/warden", hole.port());
    let report = probe(&settings(&url, None)).await;
    assert_eq!(report.database.status, CheckStatus::Fail, "{report:#?}");
    assert!(report.database.elapsed_ms <= 2_500, "{report:#?}");
}

#[tokio::test]
async fn connect_to_a_stopped_database_is_a_typed_error() {
    let url = format!(
        "postgres://postgres:s3cret-pw@127.0.0.1:{}/warden",
        free_port()
    );
    let err = tokio::time::timeout(NO_HANG, Warden::connect(&settings(&url, None)))
        .await
        .expect("connect hung")
        .unwrap_err();
    assert!(matches!(err, CoreError::Database { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cret-pw"), "{err}");
}
