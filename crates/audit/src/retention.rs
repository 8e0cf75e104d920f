//! Retention: pruning old rows (keeping the chain verifiable) and exporting
//! events as JSON lines.

use std::io::Write;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use tracing::{info, instrument};
use warden_entity::{audit_chain_anchors, audit_events};

use crate::{AuditError, AuditEvent};

/// Deletes the oldest rows whose timestamp is before `before`, at most
/// `batch_size` per transaction, and returns how many were deleted.
///
/// Only a contiguous prefix of the chain is removed (it stops at the first row
/// that is new enough), and each batch records the last deleted row's (seq,
/// hash) as the chain's anchor in the same transaction, so [`crate::verify`]
/// of what remains still succeeds. Deletion passes the append-only trigger
/// only inside this transaction (through a permit row).
#[instrument(skip(db))]
pub async fn prune(
    db: &DatabaseConnection,
    before: DateTime<Utc>,
    batch_size: u64,
) -> Result<u64, AuditError> {
    let batch_size = batch_size.clamp(1, 10_000);
    let mut total = 0u64;
    loop {
        let txn = db.begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!(
                "SELECT pg_advisory_xact_lock({})",
                crate::store::CHAIN_LOCK
            ))
            .await?;
        }
        let oldest: Vec<(i64, String, DateTime<Utc>)> = audit_events::Entity::find()
            .select_only()
            .column(audit_events::Column::Seq)
            .column(audit_events::Column::Hash)
            .column(audit_events::Column::Timestamp)
            .order_by_asc(audit_events::Column::Seq)
            .limit(batch_size)
            .into_tuple()
            .all(&txn)
            .await?;
        let Some((last_seq, last_hash)) = oldest
            .iter()
            .take_while(|(_, _, ts)| *ts < before)
            .last()
            .map(|(seq, hash, _)| (*seq, hash.clone()))
        else {
            txn.commit().await?;
            break;
        };
        txn.execute_unprepared("INSERT INTO audit_prune_permits (id) VALUES (1)")
            .await?;
        let deleted = audit_events::Entity::delete_many()
            .filter(audit_events::Column::Seq.lte(last_seq))
            .exec(&txn)
            .await?
            .rows_affected;
        audit_chain_anchors::ActiveModel {
            seq: Set(last_seq),
            hash: Set(last_hash),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await?;
        txn.execute_unprepared("DELETE FROM audit_prune_permits")
            .await?;
        txn.commit().await?;
        total += deleted;
        info!(deleted, up_to_seq = last_seq, "pruned audit rows");
        if deleted < batch_size {
            break;
        }
    }
    Ok(total)
}

/// Writes the events with seq in `from_seq..=to_seq` (either bound optional)
/// to `out` as JSON lines, oldest first, reading in pages. Returns the count.
#[instrument(skip(db, out))]
pub async fn export(
    db: &DatabaseConnection,
    from_seq: Option<i64>,
    to_seq: Option<i64>,
    out: &mut (dyn Write + Send),
) -> Result<u64, AuditError> {
    let mut cursor = from_seq.unwrap_or(1) - 1;
    let mut count = 0u64;
    loop {
        let mut select = audit_events::Entity::find()
            .filter(audit_events::Column::Seq.gt(cursor))
            .order_by_asc(audit_events::Column::Seq)
            .limit(1_000);
        if let Some(to) = to_seq {
            select = select.filter(audit_events::Column::Seq.lte(to));
        }
        let rows = select.all(db).await?;
        let Some(last) = rows.last() else { break };
        cursor = last.seq;
        for row in rows {
            let event = AuditEvent::from_model(row)?;
            serde_json::to_writer(&mut *out, &event).map_err(|e| AuditError::Export {
                reason: e.to_string(),
            })?;
            out.write_all(b"\n").map_err(|e| AuditError::Export {
                reason: e.to_string(),
            })?;
            count += 1;
        }
    }
    out.flush().map_err(|e| AuditError::Export {
        reason: e.to_string(),
    })?;
    Ok(count)
}
