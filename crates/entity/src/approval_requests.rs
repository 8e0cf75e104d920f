//! `approval_requests`: tool calls waiting for, or decided by, a human. The token
//! itself is never stored; rows are found by its SHA-256.

use sea_orm::entity::prelude::*;

/// The status values the `status` column accepts (enforced by a CHECK constraint).
pub const STATUSES: [&str; 5] = ["PENDING", "APPROVED", "DENIED", "EXPIRED", "EXECUTED"];

/// One approval request as stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "approval_requests")]
pub struct Model {
    /// Row id (UUID v7, assigned by the application).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// SHA-256 hex of the approval token (unique). The token is never stored.
    #[sea_orm(unique)]
    pub token_hash: String,
    /// The gateway's id for the held tool call (indexed).
    pub request_id: String,
    /// Who made the call.
    pub caller_id: String,
    /// Tool the call wants to run.
    pub tool_name: String,
    /// The tool call, sanitized (secrets redacted).
    #[sea_orm(column_type = "JsonBinary")]
    pub tool_call: Json,
    /// SHA-256 hex of the raw arguments the approval is bound to.
    pub raw_args_hash: String,
    /// Risk labels that made the call need approval.
    #[sea_orm(column_type = "JsonBinary")]
    pub risk_labels: Json,
    /// One of [`STATUSES`] (indexed).
    pub status: String,
    /// Set by the database on insert.
    pub created_at: DateTimeUtc,
    /// After this instant the request can no longer be approved.
    pub expires_at: DateTimeUtc,
    /// When a person (or expiry) decided it.
    pub decided_at: Option<DateTimeUtc>,
    /// Who decided.
    pub approver_id: Option<String>,
    /// The decider's note.
    pub note: Option<String>,
    /// The policy version the call was held under (part of the binding).
    pub policy_version: String,
    /// Set with an APPROVED decision: the call must run before this instant.
    pub execute_by: Option<DateTimeUtc>,
    /// When the gateway consumed the approval (status EXECUTED).
    pub executed_at: Option<DateTimeUtc>,
}

/// `approval_requests` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
