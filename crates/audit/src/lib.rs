//! Warden's audit trail: every tool call, redacted, in a transparency log.
//!
//! - [`AuditEvent::record`] builds an event from a [`ToolCall`]: it keeps the
//!   SHA-256 of the canonical JSON of the raw arguments and a redacted copy
//!   ([`Redactor`]: secrets by key name and by value pattern, each recorded as
//!   a [`RedactionFlag`]). No type in this crate can hold raw arguments.
//! - Writers ([`append`], driven by [`AuditLogger`]) store events in batches
//!   with their RFC 6962 leaf hashes, in parallel from any number of
//!   processes, with no global lock; the logger never fails the caller, and a
//!   database outage loses nothing (spill file + replay).
//! - The [`Integrator`] (one at a time across processes) gives queued events
//!   leaf indexes, extends the Merkle tree append-only and writes C2SP
//!   checkpoints, signed with Ed25519 ([`CheckpointSigner`]) and published
//!   ([`CheckpointPublisher`]).
//! - Anyone with the public key checks an [`InclusionBundle`] or a
//!   [`ConsistencyBundle`] without the database; [`verify`] recomputes the
//!   whole log and names the first problem.
//! - [`AuditQuery`] reads events back, newest first, with keyset pages, each
//!   saying where it sits in the log.
//! - [`prune`] deletes old rows under a signed prune leaf; [`export`] writes
//!   JSON lines.
//!
//! ```no_run
//! # async fn example(db: sea_orm::DatabaseConnection) -> Result<(), warden_audit::AuditError> {
//! use serde_json::json;
//! use warden_audit::*;
//! let logger = AuditLogger::start(db.clone(), AuditLoggerConfig::new("/var/lib/warden/audit.spill"));
//! let args = json!({"query": "SELECT 1", "password": "hunter2"});
//! let event = AuditEvent::record(&ToolCall {
//!     request_id: "req-1", caller_id: "agent-7", api_key_id: None, method: "tools/call",
//!     tool_name: Some("db.query"), raw_args: (&args).into(), decision: Decision::Allow, reason: None,
//!     risk_labels: &[], status_code: Some(200), latency_ms: Some(12), timestamp: None,
//! }, &Redactor::default())?;
//! logger.log(event);
//! logger.shutdown().await?; // drains, integrates and checkpoints
//! assert!(verify(&db, &VerifyOptions::default()).await?.is_valid());
//! # Ok(()) }
//! ```
//!
//! The database role the gateway runs as needs `SELECT, INSERT` on
//! `audit_events`, `audit_leaves`, `audit_tree_hashes`, `audit_checkpoints`
//! and `SELECT, INSERT, DELETE` on `audit_pending`; `prune` runs as a
//! maintenance role that also has `DELETE` on `audit_events` and `INSERT,
//! DELETE` on `audit_prune_permits`. Triggers refuse UPDATE, TRUNCATE and
//! DELETE on the log tables (event rows only inside `prune`).

mod canonical;
mod checkpoint;
mod copy_text;
mod detached;
mod error;
mod event;
mod integrator;
mod leaf;
mod logger;
pub mod metrics;
mod proof;
mod query;
mod redact;
mod retention;
mod secret_formats;
mod spill;
mod store;
mod tree;
mod verify;

pub use canonical::{
    MAX_DEPTH, canonical_hash, canonical_hash_text, canonical_json, canonical_json_text,
};
pub use checkpoint::{
    CheckpointPublisher, CheckpointSigner, CheckpointVerifier, DEFAULT_ORIGIN, ProofFailure,
    SignedCheckpoint,
};
pub use detached::DEFAULT_STEP_TIMEOUT;
pub use error::AuditError;
pub use event::{AdminAction, AuditEvent, Decision, Inclusion, RawArgs, ToolCall};
pub use integrator::{
    IntegrationReport, Integrator, IntegratorConfig, backlog, latest_checkpoint_at,
};
pub use leaf::{EventKind, StoredEvent, TreeHash, hash_hex, parse_hash_hex};
pub use logger::{AuditLogger, AuditLoggerConfig, AuditLoggerStats, FlushReport};
pub use proof::{
    CONSISTENCY_FORMAT, ConsistencyBundle, INCLUSION_FORMAT, InclusionBundle,
    consistency_proof_hashes, latest_checkpoint_note, prove_consistency, prove_inclusion,
    verify_consistency,
};
pub use query::{AuditFilter, AuditPage, AuditQuery, Cursor, MAX_LIMIT};
pub use redact::{
    ExtraPattern, MAX_EXTRA_KEY_NAMES, MAX_EXTRA_PATTERNS, MIN_PATTERN_MATCH_LEN, REDACTED,
    Redacted, RedactionFlag, RedactionRules, Redactor,
};
pub use retention::{PruneReport, export, prune};
pub use spill::SpillMacKey;
pub use store::{AppendOutcome, append, begin_write, change_with_events, record_in};
pub use tree::MAX_TREE_SIZE;
pub use verify::{BreakKind, ChainBreak, Verification, VerifyOptions, verify};
