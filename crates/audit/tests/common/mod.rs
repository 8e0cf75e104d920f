//! Helpers shared by the audit tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use warden_audit::{AuditEvent, Decision, Redactor, ToolCall};
use warden_testkit::{Backend, TestDatabase};

/// An event for `request_id` by `caller` with `decision` and `args`.
pub fn event_with(
    request_id: &str,
    caller: &str,
    decision: Decision,
    args: &Value,
    at: Option<DateTime<Utc>>,
) -> AuditEvent {
    AuditEvent::record(
        &ToolCall {
            request_id,
            caller_id: caller,
            api_key_id: None,
            method: "tools/call",
            tool_name: Some("db.query"),
            raw_args: args.into(),
            decision,
            reason: Some("policy"),
            risk_labels: &["read"],
            status_code: Some(200),
            latency_ms: Some(3),
            timestamp: at,
        },
        &Redactor::default(),
    )
    .unwrap()
}

/// A plain event number `i`.
pub fn event(i: usize) -> AuditEvent {
    event_with(
        &format!("req-{i}"),
        "agent-1",
        Decision::Allow,
        &json!({"i": i, "q": "SELECT 1"}),
        None,
    )
}

/// Runs tampering SQL the way a database superuser would: with the
/// append-only triggers out of the way.
pub async fn tamper(t: &TestDatabase, sql: &str) {
    match t.backend {
        Backend::Postgres => {
            t.execute(&format!(
                "BEGIN; SET LOCAL session_replication_role = replica; {sql}; COMMIT;"
            ))
            .await
        }
        Backend::Sqlite => {
            t.execute(&format!(
                "DROP TRIGGER IF EXISTS audit_events_no_update; \
                 DROP TRIGGER IF EXISTS audit_events_no_delete; \
                 DROP TRIGGER IF EXISTS audit_leaves_no_update; \
                 DROP TRIGGER IF EXISTS audit_leaves_no_delete; \
                 DROP TRIGGER IF EXISTS audit_tree_hashes_no_update; \
                 DROP TRIGGER IF EXISTS audit_tree_hashes_no_delete; \
                 DROP TRIGGER IF EXISTS audit_checkpoints_no_update; \
                 DROP TRIGGER IF EXISTS audit_checkpoints_no_delete; {sql};"
            ))
            .await
        }
    }
}
