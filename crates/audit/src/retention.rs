//! Retention: pruning old event rows while keeping the tree (and every
//! proof) intact, and exporting events as JSON lines.

use std::collections::HashMap;
use std::io::Write;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};
use tracing::{info, instrument};
use uuid::Uuid;
use warden_entity::{audit_events, audit_leaves};

use crate::detached::{detached, step};
use crate::integrator::{Integrator, latest_checkpoint};
use crate::leaf::{EventKind, TreeHash, hash_hex, leaf_hash_of};
use crate::{AuditError, AuditEvent};

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Event rows deleted.
    pub deleted: u64,
    /// Prune leaves written (one per batch).
    pub prune_leaves: u64,
    /// The checkpoint written after the last batch.
    pub checkpoint: Option<String>,
}

/// Deletes the event rows (the payload) of the oldest leaves whose events
/// happened before `before`, at most `batch_size` leaves per transaction.
///
/// Only leaves already covered by a checkpoint are pruned, from the oldest
/// unpruned one up to the first that is too new. The tree is kept, and each
/// batch is recorded as a `prune` leaf (range, time, `actor`) written in the
/// same transaction, under the integrator lock, followed by a checkpoint that
/// covers it: [`crate::verify`] then accepts exactly those missing rows, and
/// proofs for the remaining events still work.
#[instrument(skip(integrator))]
pub async fn prune(
    integrator: &Integrator,
    before: DateTime<Utc>,
    actor: &str,
    batch_size: u64,
) -> Result<PruneReport, AuditError> {
    let batch_size = batch_size.clamp(1, 10_000);
    let mut report = PruneReport::default();
    for _attempt in 0..1_000_000u32 {
        let actor = actor.to_owned();
        // In its own task, bounded like an integration round: a caller that
        // gives up never leaves the transaction (or the lock) half-done.
        let this = integrator.clone();
        let outcome = detached("prune", integrator.config().timeout, async move {
            this.with_lock(
                async move |txn: &DatabaseTransaction, size: u64, root: TreeHash| {
                    prune_batch(txn, size, root, before, &actor, batch_size).await
                },
            )
            .await
        })
        .await?;
        let Some((deleted, checkpoint)) = outcome else {
            // Another process is integrating: try again shortly.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        if deleted == 0 {
            break;
        }
        report.deleted += deleted;
        report.prune_leaves += 1;
        report.checkpoint = checkpoint.or(report.checkpoint);
        info!(deleted, "pruned audit rows");
        if deleted < batch_size {
            break;
        }
    }
    Ok(report)
}

async fn prune_batch(
    txn: &DatabaseTransaction,
    size: u64,
    root: TreeHash,
    before: DateTime<Utc>,
    actor: &str,
    batch_size: u64,
) -> Result<(u64, Option<AuditEvent>), AuditError> {
    let covered = latest_checkpoint(txn).await?.map_or(0, |c| c.tree_size);
    let start = txn
        .query_one_raw(Statement::from_string(
            txn.get_database_backend(),
            "SELECT MIN(l.leaf_index) AS start FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id \
             WHERE e.kind <> 'prune'",
        ))
        .await?
        .map(|r| r.try_get::<Option<i64>>("", "start"))
        .transpose()?
        .flatten();
    let Some(start) = start else {
        return Ok((0, None));
    };
    let leaves = audit_leaves::Entity::find()
        .filter(audit_leaves::Column::LeafIndex.gte(start))
        .filter(audit_leaves::Column::LeafIndex.lt(covered))
        .order_by_asc(audit_leaves::Column::LeafIndex)
        .limit(batch_size)
        .all(txn)
        .await?;
    let rows: HashMap<Uuid, audit_events::Model> = audit_events::Entity::find()
        .filter(audit_events::Column::Id.is_in(leaves.iter().map(|l| l.event_id)))
        .all(txn)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let (earlier, prune_leaves) = pruned_ranges(txn, size, root).await?;
    let tampered = |index: i64, what: &str| AuditError::Tampered {
        reason: format!("leaf {index}: {what}; run `warden audit verify`"),
    };
    let mut doomed = Vec::new();
    let mut last = None;
    for leaf in &leaves {
        let index = leaf.leaf_index;
        match rows.get(&leaf.event_id) {
            // A missing row is passed over only when an earlier prune
            // declared it: a prune never covers a deletion it did not make.
            None if earlier.covers(index as u64) => {}
            None => {
                return Err(tampered(
                    index,
                    "the row is missing and no earlier prune covers it",
                ));
            }
            Some(row) => {
                // Decide on the content the tree commits to, never on a row
                // edited since.
                let matches = leaf_hash_of(row).ok().map(|h| hash_hex(&h)).as_deref()
                    == Some(leaf.leaf_hash.as_str());
                if !matches {
                    return Err(tampered(index, "the row does not match its leaf"));
                }
                if row.kind == EventKind::Prune.as_str() {
                    // A prune record is kept forever, if it is a proven one.
                    if !prune_leaves.contains(&index) {
                        return Err(tampered(index, "a prune record that is not a proven leaf"));
                    }
                } else if row.timestamp < before {
                    doomed.push(row.id);
                } else {
                    break;
                }
            }
        }
        last = Some(index);
    }
    let (Some(last), false) = (last, doomed.is_empty()) else {
        return Ok((0, None));
    };
    txn.execute_unprepared("INSERT INTO audit_prune_permits (id) VALUES (1)")
        .await?;
    let mut deleted = 0;
    for chunk in doomed.chunks(1_000) {
        deleted += audit_events::Entity::delete_many()
            .filter(audit_events::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?
            .rows_affected;
    }
    txn.execute_unprepared("DELETE FROM audit_prune_permits")
        .await?;
    let record = AuditEvent::prune_record(actor, start as u64, last as u64, before)?;
    Ok((deleted, Some(record)))
}

/// The leaf ranges that earlier prune records declared, merged — counting
/// only records proven to be leaves of the authenticated tree (`size`
/// leaves, root `root`): a prune row that is not in the tree, or whose
/// content differs from its leaf, excuses nothing.
pub(crate) async fn pruned_ranges<C: ConnectionTrait>(
    db: &C,
    size: u64,
    root: TreeHash,
) -> Result<(PrunedRanges, std::collections::HashSet<i64>), AuditError> {
    let records = audit_events::Entity::find()
        .filter(audit_events::Column::Kind.eq(EventKind::Prune.as_str()))
        .all(db)
        .await?;
    let mut ranges = Vec::with_capacity(records.len());
    let mut proven = std::collections::HashSet::new();
    for row in records {
        let Some(leaf) = audit_leaves::Entity::find()
            .filter(audit_leaves::Column::EventId.eq(row.id))
            .one(db)
            .await?
        else {
            continue;
        };
        let index = leaf.leaf_index as u64;
        let Ok(hash) = leaf_hash_of(&row) else {
            continue;
        };
        if index >= size {
            continue;
        }
        let proof = crate::tree::inclusion_proof(db, size, index).await?;
        if tlog_tiles::check_record(&proof, size, root, index, hash).is_err() {
            continue;
        }
        proven.insert(leaf.leaf_index);
        ranges.extend(declared_range(&row, index));
    }
    Ok((PrunedRanges::merge(ranges), proven))
}

/// The leaf range a prune record at leaf `at` declares: `first..=last`,
/// which must lie wholly before the record itself (a prune is recorded after
/// what it deleted). `None` for anything else.
pub(crate) fn declared_range(row: &audit_events::Model, at: u64) -> Option<(u64, u64)> {
    let bound = |k: &str| {
        row.sanitized_args
            .get(k)
            .and_then(serde_json::Value::as_u64)
    };
    let (first, last) = (bound("first_leaf")?, bound("last_leaf")?);
    (first <= last && last < at).then_some((first, last))
}

/// Leaf ranges whose rows prune records excuse, merged and sorted.
#[derive(Debug, Default)]
pub(crate) struct PrunedRanges(Vec<(u64, u64)>);

impl PrunedRanges {
    /// Merges overlapping and adjacent ranges.
    pub(crate) fn merge(mut ranges: Vec<(u64, u64)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some((_, end)) if a <= end.saturating_add(1) => *end = (*end).max(b),
                _ => merged.push((a, b)),
            }
        }
        Self(merged)
    }

    /// Whether leaf `index` lies in one of the ranges.
    pub(crate) fn covers(&self, index: u64) -> bool {
        let at = self.0.partition_point(|(a, _)| *a <= index);
        at > 0 && self.0[at - 1].1 >= index
    }
}

/// Writes the events at leaf indexes `from..=to` (either bound optional),
/// oldest first, to `out` as JSON lines, reading in pages; pruned leaves are
/// skipped. Returns the count. Each page's reads are bounded by
/// `step_timeout` ([`AuditError::Timeout`] past it; what was written stays
/// written).
#[instrument(skip(db, out))]
pub async fn export(
    db: &DatabaseConnection,
    from_leaf: Option<u64>,
    to_leaf: Option<u64>,
    step_timeout: std::time::Duration,
    out: &mut (dyn Write + Send),
) -> Result<u64, AuditError> {
    let mut cursor = from_leaf.unwrap_or(0) as i64;
    let mut count = 0u64;
    let io = |e: std::io::Error| AuditError::Export {
        reason: e.to_string(),
    };
    loop {
        let mut select = audit_leaves::Entity::find()
            .filter(audit_leaves::Column::LeafIndex.gte(cursor))
            .order_by_asc(audit_leaves::Column::LeafIndex)
            .limit(1_000);
        if let Some(to) = to_leaf {
            select = select.filter(audit_leaves::Column::LeafIndex.lte(to as i64));
        }
        let leaves = step(step_timeout, select.all(db)).await?;
        let Some(last) = leaves.last() else { break };
        cursor = last.leaf_index + 1;
        let ids: Vec<Uuid> = leaves.iter().map(|l| l.event_id).collect();
        let mut rows: HashMap<Uuid, audit_events::Model> = step(
            step_timeout,
            audit_events::Entity::find()
                .filter(audit_events::Column::Id.is_in(ids))
                .all(db),
        )
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
        for leaf in &leaves {
            let Some(row) = rows.remove(&leaf.event_id) else {
                continue;
            };
            let event = AuditEvent::from_model(row)?;
            serde_json::to_writer(&mut *out, &event).map_err(|e| AuditError::Export {
                reason: e.to_string(),
            })?;
            out.write_all(b"\n").map_err(io)?;
            count += 1;
        }
    }
    out.flush().map_err(io)?;
    Ok(count)
}
