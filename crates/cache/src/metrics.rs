//! The cache's instruments (OpenTelemetry API only: no-ops until a provider
//! is installed, see `warden-telemetry`).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `warden.cache.lookups` | counter | `{lookup}` | `warden.cache.result` (`hit`, `miss`), `warden.cache.backend` |
//! | `warden.rate_limit.decisions` | counter | `{decision}` | `warden.rate_limit.outcome` (`allowed`, `denied`), `warden.rate_limit.degraded` |
//! | `db.client.operation.duration` | histogram | `s` | `db.system.name`=`redis`, `db.operation.name`, `error.type` on failure |
//! | `db.client.connections.usage` | up-down counter | `{connection}` | `db.client.connection.pool.name`=`redis`, `db.client.connection.state` (`idle`, `used`) |
//! | `db.client.connections.max` | up-down counter | `{connection}` | `db.client.connection.pool.name` |
//! | `db.client.connections.pending_requests` | up-down counter | `{request}` | `db.client.connection.pool.name` |
//! | `db.client.connections.timeouts` | counter | `{timeout}` | `db.client.connection.pool.name` |

use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableUpDownCounter};

use crate::redis_pool::RedisManager;

/// Bucket bounds (seconds) for storage latencies: the OpenTelemetry
/// database convention's, with finer buckets below 5 ms for Redis.
pub(crate) const LATENCY_BOUNDS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5,
    0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const POOL: &str = "db.client.connection.pool.name";

pub(crate) struct CacheMetrics {
    lookups: Counter<u64>,
    rate_limit: Counter<u64>,
    operation: Histogram<f64>,
    timeouts: Counter<u64>,
    _pool_gauges: Vec<ObservableUpDownCounter<i64>>,
}

type WeakPool = deadpool::managed::WeakPool<RedisManager>;

/// Every live Redis pool, summed into the pool gauges.
static POOLS: Mutex<Vec<WeakPool>> = Mutex::new(Vec::new());

static METRICS: LazyLock<CacheMetrics> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter_with_scope(
        opentelemetry::InstrumentationScope::builder("warden-cache")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    CacheMetrics::new(&meter)
});

fn pool_status() -> Option<deadpool_redis::Status> {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    pools.retain(|p| p.upgrade().is_some());
    let live: Vec<_> = pools.iter().filter_map(WeakPool::upgrade).collect();
    drop(pools);
    if live.is_empty() {
        return None;
    }
    let mut total = deadpool_redis::Status {
        max_size: 0,
        size: 0,
        available: 0,
        waiting: 0,
    };
    for pool in live {
        let s = pool.status();
        total.max_size += s.max_size;
        total.size += s.size;
        total.available += s.available;
        total.waiting += s.waiting;
    }
    Some(total)
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl CacheMetrics {
    fn new(meter: &Meter) -> Self {
        let pool = || [KeyValue::new(POOL, "redis")];
        let count = meter
            .i64_observable_up_down_counter("db.client.connections.usage")
            .with_unit("{connection}")
            .with_description("Redis connections open in the pool, by state (idle or used).")
            .with_callback(move |observer| {
                if let Some(s) = pool_status() {
                    let used = s.size.saturating_sub(s.available);
                    observer.observe(
                        gauge(used),
                        &[
                            KeyValue::new(POOL, "redis"),
                            KeyValue::new("db.client.connection.state", "used"),
                        ],
                    );
                    observer.observe(
                        gauge(s.available),
                        &[
                            KeyValue::new(POOL, "redis"),
                            KeyValue::new("db.client.connection.state", "idle"),
                        ],
                    );
                }
            })
            .build();
        let max = meter
            .i64_observable_up_down_counter("db.client.connections.max")
            .with_unit("{connection}")
            .with_description("The most Redis connections the pool may open.")
            .with_callback(move |observer| {
                if let Some(s) = pool_status() {
                    observer.observe(gauge(s.max_size), &pool());
                }
            })
            .build();
        let pending = meter
            .i64_observable_up_down_counter("db.client.connections.pending_requests")
            .with_unit("{request}")
            .with_description(
                "Callers waiting for a Redis connection (a starved pool when it stays above zero).",
            )
            .with_callback(move |observer| {
                if let Some(s) = pool_status() {
                    observer.observe(gauge(s.waiting), &pool());
                }
            })
            .build();
        Self {
            lookups: meter
                .u64_counter("warden.cache.lookups")
                .with_unit("{lookup}")
                .with_description("Cache reads, by result (hit or miss); the hit ratio is hits over all.")
                .build(),
            rate_limit: meter
                .u64_counter("warden.rate_limit.decisions")
                .with_unit("{decision}")
                .with_description("Rate-limit decisions, by outcome (allowed or denied) and whether the cache was unreachable (degraded).")
                .build(),
            operation: meter
                .f64_histogram("db.client.operation.duration")
                .with_unit("s")
                .with_description("Duration of Redis commands, pool checkout included.")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            timeouts: meter
                .u64_counter("db.client.connections.timeouts")
                .with_unit("{timeout}")
                .with_description("Times a caller gave up waiting for a pooled connection.")
                .build(),
            _pool_gauges: vec![count, max, pending],
        }
    }
}

/// Adds `pool` to the pool gauges (until it is dropped).
pub(crate) fn register_pool(pool: WeakPool) {
    LazyLock::force(&METRICS);
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    // Dropped pools go here too, not only when metrics are collected (with
    // no provider installed they never are).
    pools.retain(|p| p.upgrade().is_some());
    pools.push(pool);
}

pub(crate) fn lookup(backend: &'static str, hit: bool) {
    METRICS.lookups.add(
        1,
        &[
            KeyValue::new("warden.cache.result", if hit { "hit" } else { "miss" }),
            KeyValue::new("warden.cache.backend", backend),
        ],
    );
}

pub(crate) fn rate_decision(allowed: bool, degraded: bool) {
    METRICS.rate_limit.add(
        1,
        &[
            KeyValue::new(
                "warden.rate_limit.outcome",
                if allowed { "allowed" } else { "denied" },
            ),
            KeyValue::new("warden.rate_limit.degraded", degraded),
        ],
    );
}

pub(crate) fn pool_timeout() {
    METRICS.timeouts.add(1, &[KeyValue::new(POOL, "redis")]);
}

/// Records one Redis operation that started at `started`.
pub(crate) fn operation<T>(
    operation: &'static str,
    started: Instant,
    result: &Result<T, crate::CacheError>,
) {
    let elapsed = started.elapsed().as_secs_f64();
    let system = KeyValue::new("db.system.name", "redis");
    let name = KeyValue::new("db.operation.name", operation);
    match result {
        Ok(_) => METRICS.operation.record(elapsed, &[system, name]),
        Err(e) => METRICS.operation.record(
            elapsed,
            &[system, name, KeyValue::new("error.type", e.kind())],
        ),
    }
}
