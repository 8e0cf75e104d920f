//! `audit_pending`: the writers' queue of events not yet in the Merkle tree.
//! Writers insert here in the same transaction as the event; the integrator
//! removes what it integrated, in the same transaction as the new leaves.

use sea_orm::entity::prelude::*;

/// One queued event.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_pending")]
pub struct Model {
    /// Arrival order (assigned by the database).
    #[sea_orm(primary_key)]
    pub pos: i64,
    /// The queued event's `audit_events.id` (unique).
    #[sea_orm(unique)]
    pub event_id: Uuid,
}

/// `audit_pending` has no declared relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
