//! `audit_leaves`: which event sits at which leaf index of the Merkle tree.
//! Append-only; indexes are gap-free from 0.

use sea_orm::entity::prelude::*;

/// One leaf.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_leaves")]
pub struct Model {
    /// Position in the tree (0, 1, 2, … without gaps).
    #[sea_orm(primary_key, auto_increment = false)]
    pub leaf_index: i64,
    /// The event at this leaf (unique: an event is integrated once). The event
    /// row may be gone if a prune leaf covers this index.
    #[sea_orm(unique)]
    pub event_id: Uuid,
    /// The leaf's RFC 6962 hash, lowercase hex (level 0 of the tree).
    pub leaf_hash: String,
    /// When the integrator added the leaf.
    pub integrated_at: DateTimeUtc,
}

/// `audit_leaves` has no declared relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
