//! Traces and metrics of a real gateway flow (PostgreSQL + Redis), exported
//! over OTLP/HTTP to a receiver the test runs, decoded with the protocol's
//! own definitions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use tracing_subscriber::layer::SubscriberExt as _;
use warden_core::Warden;
use warden_telemetry::{FlushOutcome, Telemetry, TelemetryConfig};
use warden_testkit::{Backend, OtlpReceiver, TestDatabase, TestRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_flow_is_exported_with_conventions_and_without_secrets() {
    let mut receiver = OtlpReceiver::start().await;
    let telemetry = Telemetry::install(&TelemetryConfig {
        export: true,
        scrape: true,
        endpoint: Some(receiver.endpoint()),
        ..TelemetryConfig::default()
    })
    .unwrap();
    // Warden's spans, and this "gateway"'s own at INFO.
    let targets = warden_telemetry::warden_targets().with_target("export", tracing::Level::INFO);
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer_with(targets));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let db = TestDatabase::new(Backend::Postgres).await;
    let redis = TestRedis::new().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = common::settings(
        &db.url,
        Some((&redis.url, &redis.prefix)),
        &dir.path().join("spill"),
    );
    let storage = Warden::connect(&settings).await.unwrap();
    let root = tracing::info_span!("gateway.request");
    let secrets = {
        use tracing::Instrument as _;
        common::gateway_flow(&storage).instrument(root).await
    };
    let scraped = telemetry.prometheus_text().unwrap();
    let report = telemetry.shutdown();
    assert_eq!(report.traces, FlushOutcome::Flushed, "{report:?}");
    assert_eq!(report.metrics, FlushOutcome::Flushed, "{report:?}");
    let export = receiver.collect(Duration::from_secs(2)).await;
    assert!(export.rejected.is_empty(), "{:?}", export.rejected);

    // Spans: names, parent/child, semantic-convention attributes.
    let root = export.spans_named("gateway.request");
    assert_eq!(root.len(), 1, "one root span");
    let root = root[0];
    assert!(root.parent_span_id.is_empty());
    for name in [
        "keys.create",
        "keys.verify",
        "approval.issue",
        "approval.check",
        "approval.decide",
        "approval.consume",
    ] {
        let spans = export.spans_named(name);
        assert!(!spans.is_empty(), "no {name} span");
        for span in spans {
            assert_eq!(
                span.parent_span_id, root.span_id,
                "{name} is a child of the request"
            );
            assert_eq!(span.trace_id, root.trace_id);
        }
    }
    let issue = export.spans_named("approval.issue")[0];
    assert_eq!(issue.kind, 3, "a client span");
    assert_eq!(issue.attributes["db.system.name"], "postgresql");
    assert_eq!(issue.attributes["db.operation.name"], "INSERT");
    assert_eq!(issue.attributes["db.collection.name"], "approval_requests");
    // Redis commands are client spans under the operation that issued them.
    let verify_ids: Vec<&str> = export
        .spans_named("keys.verify")
        .iter()
        .map(|s| s.span_id.as_str())
        .collect();
    let under_verify: Vec<_> = export
        .spans
        .iter()
        .filter(|s| verify_ids.contains(&s.parent_span_id.as_str()))
        .collect();
    assert!(
        under_verify.iter().any(|s| s.name.starts_with("cache.")),
        "{under_verify:?}"
    );
    let redis_spans = export.spans_named("redis.query");
    assert!(!redis_spans.is_empty());
    for span in redis_spans {
        assert_eq!(span.kind, 3);
        assert_eq!(span.attributes["db.system.name"], "redis");
        assert!(
            ["GET", "SET", "MGET", "DEL", "PUBLISH", "PTTL", "PING"]
                .contains(&span.attributes["db.operation.name"].as_str()),
            "{span:?}"
        );
    }
    let verify_paths: Vec<&str> = export
        .spans_named("keys.verify")
        .iter()
        .map(|s| s.attributes["warden.keys.path"].as_str())
        .collect();
    assert!(verify_paths.contains(&"cache") && verify_paths.contains(&"database"));
    // No driver span (statement text) is exported.
    assert!(
        export
            .spans
            .iter()
            .all(|s| !s.scope.is_empty() && s.scope == "warden"),
        "only Warden's scope"
    );

    // Metrics: the documented instruments, with the flow's counts.
    let value = |m: &str, with: &[(&str, &str)]| {
        export
            .max_value(m, with)
            .unwrap_or_else(|| panic!("no {m} {with:?} point"))
    };
    assert_eq!(
        value(
            "warden.audit.events.written",
            &[("warden.audit.path", "batch")]
        ),
        2.0
    );
    // The key's creation, the issue, the decision and the consumption each
    // record an admin event with their change.
    let admin = value(
        "warden.audit.events.written",
        &[("warden.audit.path", "with_change")],
    ) + value(
        "warden.audit.events.written",
        &[("warden.audit.path", "in_transaction")],
    );
    assert_eq!(admin, 4.0);
    assert_eq!(value("warden.approval.issued", &[]), 1.0);
    assert_eq!(
        value(
            "warden.approval.decisions",
            &[("warden.approval.decision", "approved")]
        ),
        1.0
    );
    assert_eq!(value("warden.approval.decision.time", &[]), 1.0);
    assert_eq!(value("warden.approval.consumed", &[]), 1.0);
    assert!(value("warden.cache.lookups", &[("warden.cache.result", "hit")]) >= 1.0);
    assert!(value("warden.cache.lookups", &[("warden.cache.result", "miss")]) >= 1.0);
    assert_eq!(
        value(
            "warden.keys.verifications",
            &[
                ("warden.keys.path", "cache"),
                ("warden.keys.outcome", "valid")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "warden.keys.verifications",
            &[
                ("warden.keys.path", "database"),
                ("warden.keys.outcome", "valid")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "warden.keys.verify.duration",
            &[("warden.keys.path", "database")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "warden.keys.verifications",
            &[
                ("warden.keys.path", "malformed"),
                ("warden.keys.outcome", "invalid")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "warden.rate_limit.decisions",
            &[("warden.rate_limit.outcome", "allowed")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "warden.rate_limit.decisions",
            &[("warden.rate_limit.outcome", "denied")]
        ),
        1.0
    );
    assert!(
        value(
            "db.client.operation.duration",
            &[("db.system.name", "redis")]
        ) >= 1.0
    );
    assert!(
        value(
            "warden.audit.write.duration",
            &[("db.system.name", "postgresql")]
        ) >= 1.0
    );
    let pool = [("db.client.connection.pool.name", "database")];
    assert!(value("db.client.connections.max", &pool) >= 1.0);
    let redis_pool = [("db.client.connection.pool.name", "redis")];
    assert!(value("db.client.connections.max", &redis_pool) >= 1.0);

    // No key, token or raw argument in any exported byte, or in the scrape
    // (the scan does find what is exported: the tool's name is).
    assert!(export.contains_bytes(b"db.drop_table"));
    for secret in secrets.all() {
        assert!(
            !export.contains_bytes(secret.as_bytes()),
            "a secret was exported"
        );
        assert!(!scraped.contains(&secret), "a secret is in the scrape");
    }
    drop(storage);
}
