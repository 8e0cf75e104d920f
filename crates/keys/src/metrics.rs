//! The key manager's instruments (OpenTelemetry API only: no-ops until a
//! provider is installed, see `warden-telemetry`).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `warden.keys.verifications` | counter | `{verification}` | `warden.keys.path` (`cache`, `database`, `malformed`), `warden.keys.outcome` (`valid`, `invalid`, `revoked`, `expired`, `error`) |
//! | `warden.keys.verify.duration` | histogram | `s` | `warden.keys.path` |
//!
//! `path=cache` is a verification answered from the sealed cache entry (no
//! bcrypt); `path=database` ran bcrypt.

use std::sync::LazyLock;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

use crate::KeyError;

/// Seconds: a cache hit is well under a millisecond, bcrypt tens to hundreds.
const VERIFY_BOUNDS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

struct KeyMetrics {
    verifications: Counter<u64>,
    duration: Histogram<f64>,
}

static METRICS: LazyLock<KeyMetrics> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter_with_scope(
        opentelemetry::InstrumentationScope::builder("warden-keys")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    KeyMetrics {
        verifications: meter
            .u64_counter("warden.keys.verifications")
            .with_unit("{verification}")
            .with_description("API key verifications, by path (cache hit or bcrypt against the database) and outcome.")
            .build(),
        duration: meter
            .f64_histogram("warden.keys.verify.duration")
            .with_unit("s")
            .with_description("Duration of one API key verification, by path.")
            .with_boundaries(VERIFY_BOUNDS.to_vec())
            .build(),
    }
});

/// One verification by `path` that started at `started`.
pub(crate) fn verified<T>(path: &'static str, started: Instant, result: &Result<T, KeyError>) {
    let outcome = match result {
        Ok(_) => "valid",
        Err(KeyError::Invalid) => "invalid",
        Err(KeyError::Revoked) => "revoked",
        Err(KeyError::Expired) => "expired",
        Err(_) => "error",
    };
    let path = KeyValue::new("warden.keys.path", path);
    METRICS
        .duration
        .record(started.elapsed().as_secs_f64(), std::slice::from_ref(&path));
    METRICS
        .verifications
        .add(1, &[path, KeyValue::new("warden.keys.outcome", outcome)]);
}
