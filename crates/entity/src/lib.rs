//! Warden's sea-orm entities: one module per table, the rows exactly as stored.
//!
//! This crate holds no logic. It knows nothing about Redis, hashing, redaction or
//! approval rules: the domain crates (`warden-audit`, `warden-approval`,
//! `warden-keys`) convert between these rows and their own types and enforce the
//! invariants. Table definitions (columns, indexes, constraints) live in the
//! `migration` crate; these entities mirror them column for column, and the
//! migration tests check that every entity can round-trip through the tables.
//!
//! JSON columns are `jsonb` on PostgreSQL and text on SQLite; timestamps are
//! `timestamptz` on PostgreSQL (microsecond precision) and RFC 3339 text on SQLite.

pub mod api_keys;
pub mod approval_requests;
pub mod audit_checkpoints;
pub mod audit_events;
pub mod audit_leaves;
pub mod audit_pending;
pub mod audit_tree_hashes;

/// The entities, re-exported under their table names for `use warden_entity::prelude::*`.
pub mod prelude {
    pub use crate::api_keys::Entity as ApiKeys;
    pub use crate::approval_requests::Entity as ApprovalRequests;
    pub use crate::audit_checkpoints::Entity as AuditCheckpoints;
    pub use crate::audit_events::Entity as AuditEvents;
    pub use crate::audit_leaves::Entity as AuditLeaves;
    pub use crate::audit_pending::Entity as AuditPending;
    pub use crate::audit_tree_hashes::Entity as AuditTreeHashes;
}
