//! `audit_tree_hashes`: every stored interior hash of the Merkle tree (level
//! 1 and up), keyed by the stored-hash index of Go's sumdb/tlog; level-0
//! hashes live in `audit_leaves`. Append-only.

use sea_orm::entity::prelude::*;

/// One stored tree hash.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_tree_hashes")]
pub struct Model {
    /// Stored-hash index (level and position in one number).
    #[sea_orm(primary_key, auto_increment = false)]
    pub idx: i64,
    /// The hash, lowercase hex.
    pub hash: String,
}

/// `audit_tree_hashes` has no declared relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
