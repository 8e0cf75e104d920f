//! `audit_events`: the tamper-evident trail of every tool call. Raw tool arguments
//! are never stored here; only their SHA-256 and a redacted copy.

use sea_orm::entity::prelude::*;

/// One audit row as stored. Its place in the transparency log is in
/// `audit_leaves`; the row itself is never updated.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_events")]
pub struct Model {
    /// Row id (UUID v7, assigned by the application).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The gateway's id for the tool call; unique, so a replayed event is stored once.
    #[sea_orm(unique)]
    pub request_id: String,
    /// When the tool call happened (indexed).
    pub timestamp: DateTimeUtc,
    /// Who made the call (indexed).
    pub caller_id: String,
    /// The API key used, if any (no foreign key: audit outlives keys).
    pub api_key_id: Option<Uuid>,
    /// Protocol method, e.g. `tools/call`.
    pub method: String,
    /// Tool that was called, if any.
    pub tool_name: Option<String>,
    /// What the gateway decided (indexed).
    pub decision: String,
    /// Why it decided so.
    pub reason: Option<String>,
    /// SHA-256 hex of the canonical form of the raw arguments.
    pub raw_args_hash: String,
    /// Arguments with secrets redacted.
    #[sea_orm(column_type = "JsonBinary")]
    pub sanitized_args: Json,
    /// Which JSON paths were redacted and why.
    #[sea_orm(column_type = "JsonBinary")]
    pub redaction_flags: Json,
    /// Risk labels attached by the gateway's policy.
    #[sea_orm(column_type = "JsonBinary")]
    pub risk_labels: Json,
    /// Status code returned to the agent, if the call completed.
    pub status_code: Option<i32>,
    /// End-to-end latency of the call in milliseconds, if it completed.
    pub latency_ms: Option<i64>,
    /// What the row records: `tool_call`, or `prune` (a retention act, itself a leaf).
    pub kind: String,
    /// The RFC 6962 leaf hash of this row (lowercase hex) as its writer computed
    /// it; `None` only for rows carried over from the hash chain.
    pub leaf_hash: Option<String>,
}

/// `audit_events` has no relations (see `api_keys`).
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
