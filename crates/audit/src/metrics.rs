//! The audit trail's instruments (OpenTelemetry API only: no-ops until a
//! provider is installed, see `warden-telemetry`).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `warden.audit.events.written` | counter | `{event}` | `warden.audit.path` (`batch`, `with_change`, `in_transaction`; the last counted when inserted in the caller's transaction, a later rollback not subtracted) |
//! | `warden.audit.write.duration` | histogram | `s` | `db.system.name` |
//! | `warden.audit.queue.depth` | up-down counter | `{event}` | — (events waiting in the live loggers' buffers) |
//! | `warden.audit.events.spilled` | counter | `{event}` | — (written to the spill file) |
//! | `warden.audit.events.replayed` | counter | `{event}` | — (spilled, later stored) |
//! | `warden.audit.events.lost` | counter | `{event}` | — (neither stored nor spilled) |
//! | `warden.audit.events.quarantined` | counter | `{event}` | — (spill lines that failed authentication) |
//! | `db.client.connections.timeouts` | counter | `{timeout}` | `db.client.connection.pool.name`=`database` |

use std::sync::{LazyLock, Mutex, PoisonError, Weak};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableUpDownCounter};

/// Bucket bounds (seconds): the OpenTelemetry database convention's.
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// What the queue-depth gauge reads from one live logger.
pub(crate) struct LoggerProbe {
    pub(crate) counters: Weak<crate::logger::Counters>,
    /// Events queued and not yet taken by the writer.
    pub(crate) queued: Box<dyn Fn() -> Option<usize> + Send + Sync>,
}

static LOGGERS: Mutex<Vec<LoggerProbe>> = Mutex::new(Vec::new());

struct AuditMetrics {
    written: Counter<u64>,
    write_duration: Histogram<f64>,
    timeouts: Counter<u64>,
    spilled: Counter<u64>,
    replayed: Counter<u64>,
    lost: Counter<u64>,
    quarantined: Counter<u64>,
    _depth: ObservableUpDownCounter<i64>,
}

/// What happened to events during an outage.
#[derive(Clone, Copy)]
pub(crate) enum Outage {
    Spilled,
    Replayed,
    Lost,
    Quarantined,
}

/// `n` events went `how`.
pub(crate) fn outage(how: Outage, n: u64) {
    if n == 0 {
        return;
    }
    let counter = match how {
        Outage::Spilled => &METRICS.spilled,
        Outage::Replayed => &METRICS.replayed,
        Outage::Lost => &METRICS.lost,
        Outage::Quarantined => &METRICS.quarantined,
    };
    counter.add(n, &[]);
}

static METRICS: LazyLock<AuditMetrics> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter_with_scope(
        opentelemetry::InstrumentationScope::builder("warden-audit")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    AuditMetrics::new(&meter)
});

/// Sums `read` over the live loggers (dropping the dead), or `None` when
/// there are none.
fn sum_loggers(read: impl Fn(&LoggerProbe, &crate::logger::Counters) -> u64) -> Option<u64> {
    let mut loggers = LOGGERS.lock().unwrap_or_else(PoisonError::into_inner);
    loggers.retain(|l| l.counters.strong_count() > 0);
    if loggers.is_empty() {
        return None;
    }
    Some(
        loggers
            .iter()
            .filter_map(|l| l.counters.upgrade().map(|c| read(l, &c)))
            .sum(),
    )
}

impl AuditMetrics {
    fn new(meter: &Meter) -> Self {
        let depth = meter
            .i64_observable_up_down_counter("warden.audit.queue.depth")
            .with_unit("{event}")
            .with_description("Audit events queued in memory, not yet taken by a writer (a logger falling behind when it grows).")
            .with_callback(|observer| {
                let queued = sum_loggers(|l, _| (l.queued)().map_or(0, |n| n as u64));
                if let Some(queued) = queued {
                    observer.observe(i64::try_from(queued).unwrap_or(i64::MAX), &[]);
                }
            })
            .build();
        Self {
            written: meter
                .u64_counter("warden.audit.events.written")
                .with_unit("{event}")
                .with_description("Audit events stored in the database, by path (a logger's batch, with the change they record, or in a caller's transaction).")
                .build(),
            write_duration: meter
                .f64_histogram("warden.audit.write.duration")
                .with_unit("s")
                .with_description("Duration of one batch write of audit events (rows, leaf hashes and queue entries in one transaction).")
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            timeouts: meter
                .u64_counter("db.client.connections.timeouts")
                .with_unit("{timeout}")
                .with_description("Times a caller gave up waiting for a pooled connection.")
                .build(),
            spilled: meter
                .u64_counter("warden.audit.events.spilled")
                .with_unit("{event}")
                .with_description("Audit events written to the local spill file (the database was unreachable or the buffer full).")
                .build(),
            replayed: meter
                .u64_counter("warden.audit.events.replayed")
                .with_unit("{event}")
                .with_description("Spilled audit events later stored in the database.")
                .build(),
            lost: meter
                .u64_counter("warden.audit.events.lost")
                .with_unit("{event}")
                .with_description("Audit events neither stored nor spilled (the spill file was unwritable too).")
                .build(),
            quarantined: meter
                .u64_counter("warden.audit.events.quarantined")
                .with_unit("{event}")
                .with_description("Spill-file lines refused at replay (failed authentication or unreadable).")
                .build(),
            _depth: depth,
        }
    }
}

/// Adds a logger to the observed ones (until its counters are dropped).
pub(crate) fn register_logger(probe: LoggerProbe) {
    LazyLock::force(&METRICS);
    let mut loggers = LOGGERS.lock().unwrap_or_else(PoisonError::into_inner);
    // Dead loggers go here too, not only when metrics are collected (with
    // no provider installed they never are).
    loggers.retain(|l| l.counters.strong_count() > 0);
    loggers.push(probe);
}

/// `n` events stored by `path`.
pub(crate) fn written(path: &'static str, n: u64) {
    if n > 0 {
        METRICS
            .written
            .add(n, &[KeyValue::new("warden.audit.path", path)]);
    }
}

/// One batch write that started at `started`.
pub(crate) fn batch_written(db_system: &'static str, started: Instant) {
    METRICS.write_duration.record(
        started.elapsed().as_secs_f64(),
        &[KeyValue::new("db.system.name", db_system)],
    );
}

/// Counts `error` in `db.client.connections.timeouts` when it is a pool
/// checkout that timed out (any other error is not counted here).
pub fn record_db_error(error: &sea_orm::DbErr) {
    if matches!(
        error,
        sea_orm::DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout)
    ) {
        pool_timeout();
    }
}

fn pool_timeout() {
    METRICS.timeouts.add(
        1,
        &[KeyValue::new("db.client.connection.pool.name", "database")],
    );
}

/// The OpenTelemetry `db.system.name` of `backend`.
pub fn db_system_name(backend: sea_orm::DbBackend) -> &'static str {
    match backend {
        sea_orm::DbBackend::Postgres => "postgresql",
        sea_orm::DbBackend::Sqlite => "sqlite",
        sea_orm::DbBackend::MySql => "mysql",
        _ => "other_sql",
    }
}
