//! `audit_chain_anchors`: where a pruned audit chain now starts. Each prune
//! records the (seq, hash) of the last row it deleted; the newest anchor is the
//! predecessor of the oldest remaining row. Append-only.

use sea_orm::entity::prelude::*;

/// One anchor as stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_chain_anchors")]
pub struct Model {
    /// Seq of the last pruned row.
    #[sea_orm(primary_key, auto_increment = false)]
    pub seq: i64,
    /// Chain hash of the last pruned row.
    pub hash: String,
    /// When the prune ran.
    pub created_at: DateTimeUtc,
}

/// `audit_chain_anchors` has no relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
