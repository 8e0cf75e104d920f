//! Warden gauges: what only the database knows (approvals waiting for a
//! person, the audit integrator's backlog, the age of the newest signed
//! checkpoint) sampled on an interval, and the database pool's state read at
//! every collection. Instruments come from the OpenTelemetry API: no-ops
//! until a provider is installed (see `warden-telemetry`).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `warden.approval.pending` | gauge | `{approval}` | — |
//! | `warden.audit.integration.lag` | gauge | `{event}` | — (stored, not yet in the tree) |
//! | `warden.audit.checkpoint.age` | gauge | `s` | — (since the newest checkpoint was signed) |
//! | `db.client.connections.usage` | up-down counter | `{connection}` | `db.client.connection.pool.name`=`database`, `db.client.connection.state` (`idle`, `used`) |
//! | `db.client.connections.max` | up-down counter | `{connection}` | `db.client.connection.pool.name` |

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, ObservableGauge, ObservableUpDownCounter};
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;
use tracing::{Instrument as _, debug_span, warn};

use crate::Warden;

const UNKNOWN: i64 = i64::MIN;
const POOL: &str = "db.client.connection.pool.name";

fn meter() -> Meter {
    opentelemetry::global::meter_with_scope(
        opentelemetry::InstrumentationScope::builder("warden-core")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    )
}

/// The state of one database pool, read when metrics are collected.
pub(crate) struct PoolProbe {
    read: Box<dyn Fn() -> (u32, usize, u32) + Send + Sync>,
}

impl std::fmt::Debug for PoolProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolProbe")
    }
}

static POOLS: Mutex<Vec<Weak<PoolProbe>>> = Mutex::new(Vec::new());

static POOL_GAUGES: LazyLock<[ObservableUpDownCounter<i64>; 2]> = LazyLock::new(|| {
    let meter = meter();
    let count = meter
        .i64_observable_up_down_counter("db.client.connections.usage")
        .with_unit("{connection}")
        .with_description("Database connections open in the pool, by state (idle or used).")
        .with_callback(|observer| {
            if let Some((size, idle, _)) = pool_totals() {
                let used = i64::from(size) - i64::try_from(idle).unwrap_or(0);
                let state = |s: &'static str| {
                    [
                        KeyValue::new(POOL, "database"),
                        KeyValue::new("db.client.connection.state", s),
                    ]
                };
                observer.observe(used.max(0), &state("used"));
                observer.observe(i64::try_from(idle).unwrap_or(i64::MAX), &state("idle"));
            }
        })
        .build();
    let max = meter
        .i64_observable_up_down_counter("db.client.connections.max")
        .with_unit("{connection}")
        .with_description("The most database connections the pool may open.")
        .with_callback(|observer| {
            if let Some((_, _, max)) = pool_totals() {
                observer.observe(i64::from(max), &[KeyValue::new(POOL, "database")]);
            }
        })
        .build();
    [count, max]
});

fn pool_totals() -> Option<(u32, usize, u32)> {
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    pools.retain(|p| p.strong_count() > 0);
    let live: Vec<Arc<PoolProbe>> = pools.iter().filter_map(Weak::upgrade).collect();
    drop(pools);
    if live.is_empty() {
        return None;
    }
    Some(live.iter().map(|p| (p.read)()).fold((0, 0, 0), |a, b| {
        (
            a.0.saturating_add(b.0),
            a.1.saturating_add(b.1),
            a.2.saturating_add(b.2),
        )
    }))
}

/// Adds `db`'s pool to the pool gauges for as long as the returned probe
/// lives (the storage holds it).
pub(crate) fn observe_pool(db: &DatabaseConnection) -> Option<Arc<PoolProbe>> {
    let read: Box<dyn Fn() -> (u32, usize, u32) + Send + Sync> = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            let pool = db.get_postgres_connection_pool().clone();
            Box::new(move || {
                (
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                )
            })
        }
        sea_orm::DbBackend::Sqlite => {
            let pool = db.get_sqlite_connection_pool().clone();
            Box::new(move || {
                (
                    pool.size(),
                    pool.num_idle(),
                    pool.options().get_max_connections(),
                )
            })
        }
        _ => return None,
    };
    LazyLock::force(&POOL_GAUGES);
    let probe = Arc::new(PoolProbe { read });
    let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
    // Dropped pools go here too, not only when metrics are collected.
    pools.retain(|p| p.strong_count() > 0);
    pools.push(Arc::downgrade(&probe));
    drop(pools);
    Some(probe)
}

#[derive(Debug)]
struct Samples {
    pending: AtomicI64,
    backlog: AtomicI64,
    /// Milliseconds since the epoch.
    checkpoint_at: AtomicI64,
}

/// Samples storage-wide gauges from the database on an interval, until it
/// is dropped. Run one per fleet-watching process (`warden metrics`,
/// `warden serve`), not per request.
///
/// Guarantees: sampling never fails the process — a failed sample is logged
/// and its gauges are not reported until a later sample succeeds, so a
/// stale number is never shown as current; each sample is bounded by the
/// storage's database timeouts.
#[derive(Debug)]
pub struct StorageGauges {
    task: JoinHandle<()>,
    _gauges: Vec<ObservableGauge<f64>>,
}

impl Drop for StorageGauges {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StorageGauges {
    /// Starts sampling `storage` now and then every `interval` (at least one
    /// second), on the current tokio runtime.
    pub fn start(storage: &Warden, interval: Duration) -> Self {
        let samples = Arc::new(Samples {
            pending: AtomicI64::new(UNKNOWN),
            backlog: AtomicI64::new(UNKNOWN),
            checkpoint_at: AtomicI64::new(UNKNOWN),
        });
        let meter = meter();
        let gauge = |name: &'static str,
                     unit: &'static str,
                     description: &'static str,
                     read: fn(&Samples) -> Option<f64>| {
            let weak = Arc::downgrade(&samples);
            meter
                .f64_observable_gauge(name)
                .with_unit(unit)
                .with_description(description)
                .with_callback(move |observer| {
                    if let Some(value) = weak.upgrade().as_deref().and_then(read) {
                        observer.observe(value, &[]);
                    }
                })
                .build()
        };
        let gauges = vec![
            gauge(
                "warden.approval.pending",
                "{approval}",
                "Approvals waiting for a person (sampled from the database).",
                |s| {
                    let v = s.pending.load(Ordering::Relaxed);
                    (v != UNKNOWN).then_some(v as f64)
                },
            ),
            gauge(
                "warden.audit.integration.lag",
                "{event}",
                "Audit events stored but not yet integrated into the tree (sampled from the database).",
                |s| {
                    let v = s.backlog.load(Ordering::Relaxed);
                    (v != UNKNOWN).then_some(v as f64)
                },
            ),
            gauge(
                "warden.audit.checkpoint.age",
                "s",
                "Seconds since the newest audit checkpoint was signed (absent before the first).",
                |s| {
                    let at = s.checkpoint_at.load(Ordering::Relaxed);
                    (at != UNKNOWN).then(|| {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
                        (now.saturating_sub(at)).max(0) as f64 / 1000.0
                    })
                },
            ),
        ];
        let interval = interval.max(Duration::from_secs(1));
        let storage = storage.clone();
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                sample(&storage, &samples)
                    .instrument(debug_span!("storage.sample_gauges"))
                    .await;
            }
        });
        Self {
            task,
            _gauges: gauges,
        }
    }
}

async fn sample(storage: &Warden, samples: &Samples) {
    let approvals = storage.approvals();
    match approvals.pending_count().await {
        Ok(n) => samples
            .pending
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed),
        Err(e) => {
            samples.pending.store(UNKNOWN, Ordering::Relaxed);
            warn!(error = %e, "pending approvals not sampled");
        }
    }
    let bound = storage.settings().audit_step_timeout;
    match tokio::time::timeout(bound, warden_audit::backlog(storage.database())).await {
        Ok(Ok(n)) => samples
            .backlog
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed),
        Ok(Err(e)) => {
            samples.backlog.store(UNKNOWN, Ordering::Relaxed);
            warn!(error = %e, "audit integration lag not sampled");
        }
        Err(_) => {
            samples.backlog.store(UNKNOWN, Ordering::Relaxed);
            warn!("audit integration lag not sampled: the database did not answer in time");
        }
    }
    match tokio::time::timeout(
        bound,
        warden_audit::latest_checkpoint_at(storage.database()),
    )
    .await
    {
        Ok(Ok(Some(at))) => samples
            .checkpoint_at
            .store(at.timestamp_millis(), Ordering::Relaxed),
        Ok(Ok(None)) => samples.checkpoint_at.store(UNKNOWN, Ordering::Relaxed),
        Ok(Err(e)) => {
            samples.checkpoint_at.store(UNKNOWN, Ordering::Relaxed);
            warn!(error = %e, "audit checkpoint age not sampled");
        }
        Err(_) => {
            samples.checkpoint_at.store(UNKNOWN, Ordering::Relaxed);
            warn!("audit checkpoint age not sampled: the database did not answer in time");
        }
    }
}
