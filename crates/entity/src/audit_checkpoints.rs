//! `audit_checkpoints`: the checkpoints the integrator published, as C2SP
//! signed notes. Append-only; the note (not this row) is the evidence.

use sea_orm::entity::prelude::*;

/// One checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_checkpoints")]
pub struct Model {
    /// Number of leaves the checkpoint commits to.
    #[sea_orm(primary_key, auto_increment = false)]
    pub tree_size: i64,
    /// Root hash of the tree of that size, lowercase hex.
    pub root_hash: String,
    /// The checkpoint as a signed note (or the bare checkpoint text when no
    /// signing key was configured).
    #[sea_orm(column_type = "Text")]
    pub note: String,
    /// When it was made.
    pub created_at: DateTimeUtc,
}

/// `audit_checkpoints` has no declared relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
