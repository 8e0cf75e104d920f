//! The scrape text of a real flow (embedded default: SQLite + in-process
//! cache) is valid Prometheus exposition text, as Prometheus's own checker
//! reads it, and carries the documented series.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use warden_core::{StorageGauges, Warden};
use warden_telemetry::{Telemetry, TelemetryConfig};
use warden_testkit::{Backend, TestDatabase, promtool_check_metrics};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scrape_is_valid_prometheus_text_with_the_documented_series() {
    let telemetry = Telemetry::install(&TelemetryConfig {
        scrape: true,
        ..TelemetryConfig::default()
    })
    .unwrap();
    let db = TestDatabase::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings(&db.url, None, &dir.path().join("spill"));
    let storage = Warden::connect(&settings).await.unwrap();
    let secrets = common::gateway_flow(&storage).await;
    // A live logger (its queue depth) and the storage gauges, sampled once.
    let logger = storage.audit().logger();
    let gauges = StorageGauges::start(&storage, Duration::from_secs(60));
    let text = loop {
        let text = telemetry.prometheus_text().unwrap();
        if text.contains("warden_audit_integration_lag") {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if let Err(report) = promtool_check_metrics(&text) {
        panic!("promtool refused the scrape:\n{report}\n---\n{text}");
    }
    for series in [
        "# TYPE target_info gauge",
        "# TYPE warden_audit_events_written_total counter",
        "# TYPE warden_audit_write_duration_seconds histogram",
        "# TYPE warden_audit_queue_depth gauge",
        "# TYPE warden_approval_issued_total counter",
        "# TYPE warden_approval_decisions_total counter",
        "# TYPE warden_approval_decision_time_seconds histogram",
        "# TYPE warden_approval_consumed_total counter",
        "# TYPE warden_approval_pending gauge",
        "# TYPE warden_audit_integration_lag gauge",
        "# TYPE warden_cache_lookups_total counter",
        "# TYPE warden_keys_verifications_total counter",
        "# TYPE warden_keys_verify_duration_seconds histogram",
        "# TYPE warden_rate_limit_decisions_total counter",
        "# TYPE db_client_connections_usage gauge",
        "# TYPE db_client_connections_max gauge",
        r#"warden_approval_decisions_total{otel_scope_name="warden-approval",warden_approval_decision="approved"} 1"#,
        r#"warden_cache_lookups_total{otel_scope_name="warden-cache",warden_cache_backend="in-process",warden_cache_result="hit"}"#,
        r#"warden_rate_limit_decisions_total{otel_scope_name="warden-cache",warden_rate_limit_degraded="false",warden_rate_limit_outcome="denied"} 1"#,
        r#"warden_keys_verify_duration_seconds_bucket{otel_scope_name="warden-keys",warden_keys_path="database",le="+Inf"} 1"#,
        r#"warden_approval_pending{otel_scope_name="warden-core"} 0"#,
        r#"db_client_connections_max{db_client_connection_pool_name="database",otel_scope_name="warden-core"}"#,
        r#"warden_audit_queue_depth{otel_scope_name="warden-audit"} 0"#,
        r#"service_name="warden""#,
    ] {
        assert!(text.contains(series), "missing {series:?} in\n{text}");
    }
    // Every documented metric has a HELP line.
    assert!(text.lines().filter(|l| l.starts_with("# TYPE")).count() >= 15);
    for secret in secrets.all() {
        assert!(!text.contains(&secret), "a secret is in the scrape");
    }
    logger.shutdown().await.unwrap();
    drop(gauges);
}
