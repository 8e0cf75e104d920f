//! Warden's audit trail: every tool call, redacted, chained, queryable.
//!
//! - [`AuditEvent::record`] builds an event from a [`ToolCall`]: it keeps the
//!   SHA-256 of the canonical JSON of the raw arguments and a redacted copy
//!   ([`Redactor`]: secrets by key name and by value pattern, each recorded as
//!   a [`RedactionFlag`]). No type in this crate can hold raw arguments.
//! - [`AuditLogger`] writes events in batches off the request path; it never
//!   fails the caller, and a database outage loses nothing (spill file + replay).
//! - The chain: each row's hash covers the previous hash and the row
//!   ([`ChainKey`] makes it an HMAC). [`append`] serializes writers across
//!   processes; [`verify`] names the first break; [`checkpoint`] exports the head.
//! - [`AuditQuery`] reads events back, newest first, with keyset pages.
//! - [`prune`] and [`export`] handle retention.
//!
//! ```no_run
//! # async fn example(db: sea_orm::DatabaseConnection) -> Result<(), warden_audit::AuditError> {
//! use serde_json::json;
//! use warden_audit::*;
//! let logger = AuditLogger::start(db.clone(), AuditLoggerConfig::new("/var/lib/warden/audit.spill"));
//! let args = json!({"query": "SELECT 1", "password": "hunter2"});
//! let event = AuditEvent::record(&ToolCall {
//!     request_id: "req-1", caller_id: "agent-7", api_key_id: None, method: "tools/call",
//!     tool_name: Some("db.query"), raw_args: &args, decision: Decision::Allow, reason: None,
//!     risk_labels: &[], status_code: Some(200), latency_ms: Some(12), timestamp: None,
//! }, &Redactor::default())?;
//! logger.log(event);
//! logger.shutdown().await?;
//! assert!(verify(&db, None, &VerifyOptions::default()).await?.is_valid());
//! # Ok(()) }
//! ```
//!
//! The database role the gateway runs as needs only `SELECT, INSERT` on
//! `audit_events` and `SELECT` on `audit_chain_anchors`; `prune` runs as a
//! maintenance role that also has `DELETE` on `audit_events` and `INSERT,
//! DELETE` on `audit_prune_permits` and `INSERT` on `audit_chain_anchors`.
//! Triggers refuse UPDATE, TRUNCATE and (outside `prune`) DELETE for everyone.

mod canonical;
mod chain;
mod copy_text;
mod error;
mod event;
mod logger;
mod query;
mod redact;
mod retention;
mod spill;
mod store;
mod verify;

pub use canonical::{MAX_DEPTH, canonical_hash, canonical_json};
pub use chain::{ChainHead, ChainKey, GENESIS_HASH, row_hash};
pub use error::AuditError;
pub use event::{AuditEvent, ChainLink, Decision, ToolCall};
pub use logger::{AuditLogger, AuditLoggerConfig, AuditLoggerStats, FlushReport};
pub use query::{AuditFilter, AuditPage, AuditQuery, Cursor, MAX_LIMIT};
pub use redact::{REDACTED, Redacted, RedactionFlag, Redactor};
pub use retention::{export, prune};
pub use store::{AppendOutcome, append};
pub use verify::{BreakKind, ChainBreak, Verification, VerifyOptions, verify};

/// The chain's current head, to export outside the database and pass back to
/// [`verify`] later as a checkpoint.
pub async fn checkpoint(db: &sea_orm::DatabaseConnection) -> Result<ChainHead, AuditError> {
    store::head(db).await
}
