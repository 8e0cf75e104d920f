//! The test harness every Warden crate's integration tests use.
//!
//! - [`TestDatabase`]: a freshly created and migrated PostgreSQL database per test
//!   (or an SQLite file in a temporary directory), dropped when the value is.
//! - [`TestRedis`]: a unique key prefix on the shared Redis, whose keys are
//!   deleted when the value is dropped.
//! - [`PrivatePostgres`], [`PrivateRedis`] and [`Blackhole`]: servers a test owns, to stop, restart or
//!   leave unanswered without disturbing other tests.
//!
//! Tests run in parallel: nothing here shares mutable state between tests.
//!
//! A service that cannot be reached is a test failure naming the service and how
//! to start it — never a silent skip. The shared services are found through
//! `WARDEN_TEST_POSTGRES_URL` (default `postgres://postgres:postgres@127.0.0.1:5432/postgres`,
//! a role allowed to create databases) and `WARDEN_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).
//!
//! Harness failures panic on purpose: this crate is only used by tests, where a
//! panic is how a test fails.
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test harness fails tests by panicking and reports clean-up trouble on stderr"
)]

mod database;
mod http;
mod logs;
mod net;
mod otlp;
mod pgbouncer;
mod postgres;
mod promtool;
mod redis;
mod redis_cluster;
mod tls;

pub use database::{Backend, TestDatabase};
pub use http::{HttpSink, ReceivedRequest};
pub use logs::LogCapture;
pub use net::{Blackhole, free_port};
pub use otlp::{ExportedPoint, ExportedSpan, OtlpExport, OtlpReceiver};
pub use pgbouncer::PgBouncer;
pub use postgres::PrivatePostgres;
pub use promtool::{promtool, promtool_check_metrics};
pub use redis::{PrivateRedis, TestRedis};
pub use redis_cluster::PrivateRedisCluster;
pub use tls::TlsIdentity;

/// Runs `f` on a fresh current-thread runtime in its own OS thread and waits for
/// it: lets `Drop` impls do async clean-up even while a test's runtime is
/// shutting down.
pub(crate) fn block_on_side_thread<F>(f: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let handle = std::thread::spawn(move || {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(f),
            Err(e) => eprintln!("warden-testkit: clean-up runtime failed: {e}"),
        }
    });
    let _ = handle.join();
}
