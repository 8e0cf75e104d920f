//! The approval flow's instruments (OpenTelemetry API only: no-ops until a
//! provider is installed, see `warden-telemetry`).
//!
//! | name | kind | unit | attributes |
//! |---|---|---|---|
//! | `warden.approval.issued` | counter | `{approval}` | — |
//! | `warden.approval.decisions` | counter | `{decision}` | `warden.approval.decision` (`approved`, `denied`) |
//! | `warden.approval.decision.time` | histogram | `s` | `warden.approval.decision` — from issue to decision |
//! | `warden.approval.expired` | counter | `{approval}` | — (marked EXPIRED by `expire_stale`) |
//! | `warden.approval.consumed` | counter | `{approval}` | — (approved calls run) |
//!
//! The number of PENDING approvals is a gauge sampled from the database by
//! `warden-core` (`warden.approval.pending`).

use std::sync::LazyLock;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

use crate::{Approval, ApprovalStatus};

/// Seconds: a person answers in seconds to hours.
const DECISION_BOUNDS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1_800.0, 3_600.0, 7_200.0, 21_600.0, 86_400.0,
];

struct ApprovalMetrics {
    issued: Counter<u64>,
    decisions: Counter<u64>,
    decision_time: Histogram<f64>,
    expired: Counter<u64>,
    consumed: Counter<u64>,
}

static METRICS: LazyLock<ApprovalMetrics> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter_with_scope(
        opentelemetry::InstrumentationScope::builder("warden-approval")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build(),
    );
    ApprovalMetrics {
        issued: meter
            .u64_counter("warden.approval.issued")
            .with_unit("{approval}")
            .with_description("Approvals issued (a call waiting for a person).")
            .build(),
        decisions: meter
            .u64_counter("warden.approval.decisions")
            .with_unit("{decision}")
            .with_description("Approvals decided, by decision (approved or denied).")
            .build(),
        decision_time: meter
            .f64_histogram("warden.approval.decision.time")
            .with_unit("s")
            .with_description("Time from an approval's issue to its decision.")
            .with_boundaries(DECISION_BOUNDS.to_vec())
            .build(),
        expired: meter
            .u64_counter("warden.approval.expired")
            .with_unit("{approval}")
            .with_description("Pending approvals marked EXPIRED (nobody decided in time).")
            .build(),
        consumed: meter
            .u64_counter("warden.approval.consumed")
            .with_unit("{approval}")
            .with_description("Approved calls run (an approval consumed for its exact binding).")
            .build(),
    }
});

pub(crate) fn issued() {
    METRICS.issued.add(1, &[]);
}

pub(crate) fn decided(approval: &Approval) {
    let decision = match approval.status {
        ApprovalStatus::Approved => "approved",
        ApprovalStatus::Denied => "denied",
        _ => return,
    };
    let attributes = [KeyValue::new("warden.approval.decision", decision)];
    METRICS.decisions.add(1, &attributes);
    if let Some(result) = &approval.result {
        let waited = (result.decided_at - approval.created_at)
            .to_std()
            .unwrap_or_default();
        METRICS
            .decision_time
            .record(waited.as_secs_f64(), &attributes);
    }
}

pub(crate) fn expired(n: u64) {
    if n > 0 {
        METRICS.expired.add(n, &[]);
    }
}

pub(crate) fn consumed() {
    METRICS.consumed.add(1, &[]);
}
