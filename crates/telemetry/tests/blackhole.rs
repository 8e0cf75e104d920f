//! A collector that accepts connections and never answers: every operation
//! still succeeds, nothing on the request path waits for the exporter, and
//! what cannot be sent is dropped rather than kept.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tracing_subscriber::layer::SubscriberExt as _;
use warden_cache::{Cache, KeyPrefix, Ttl};
use warden_telemetry::{FlushOutcome, Telemetry, TelemetryConfig};
use warden_testkit::Blackhole;

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_collector_never_blocks_operations_and_memory_stays_bounded() {
    let blackhole = Blackhole::start().await;
    let telemetry = Telemetry::install(&TelemetryConfig {
        export: true,
        endpoint: Some(format!("http://{}", blackhole.addr())),
        flush_timeout: Duration::from_millis(500),
        ..TelemetryConfig::default()
    })
    .unwrap();
    let subscriber = tracing_subscriber::registry().with(telemetry.tracing_layer());
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let cache = Cache::in_process(KeyPrefix::new("bh").unwrap(), 1_000);
    let ttl = Ttl::from_secs(60).unwrap();
    // Warm up (allocator, first spans), then measure.
    for i in 0..2_000u32 {
        cache
            .set_json(&format!("k{}", i % 100), &i, ttl)
            .await
            .unwrap();
    }
    let before = rss_kib();
    // 200 000 spans (and as many metric updates): far more than the span
    // queue holds (2 048). Kept, they would take hundreds of MiB.
    let n = 100_000u32;
    for i in 0..n {
        let key = format!("k{}", i % 100);
        cache.set_json(&key, &i, ttl).await.unwrap();
        let got: Option<u32> = cache.get_json(&key).await.unwrap();
        assert_eq!(got, Some(i), "every operation succeeds");
    }
    let grown_kib = rss_kib().saturating_sub(before);
    assert!(
        grown_kib < 24 * 1024,
        "resident memory grew by {grown_kib} KiB while exporting to a silent collector"
    );

    // Shutdown is bounded by the flush timeout even though the collector
    // never answers (its own export timeout is 10 s).
    let started = Instant::now();
    let report = telemetry.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for a silent collector",
        started.elapsed()
    );
    assert_ne!(report.traces, FlushOutcome::Off);
    assert!(
        !report.is_complete(),
        "nothing reached a silent collector: {report:?}"
    );
}
