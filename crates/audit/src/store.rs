//! Appending to the chain: one lock, one multi-row INSERT per batch.

use std::collections::HashSet;
use std::time::Duration;

use sea_orm::{
    AccessMode, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    IsolationLevel, QueryFilter, QueryOrder, QuerySelect, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};
use tracing::{debug, instrument};
use warden_entity::{audit_chain_anchors, audit_events};

use crate::chain::{ChainHead, ChainKey, row_hash};
use crate::{AuditError, AuditEvent};

/// The advisory lock every appending process takes for one batch ("WARDEN").
pub(crate) const CHAIN_LOCK: i64 = 0x5741_5244_454e;

/// What one append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Rows inserted.
    pub inserted: u64,
    /// Events skipped because their request_id is already stored (a replay).
    pub duplicates: u64,
}

/// Appends `events` to the chain in one transaction.
///
/// PostgreSQL: READ COMMITTED, `pg_advisory_xact_lock` on the chain (released
/// by commit or rollback; bounded by `lock_timeout`), head read under the lock,
/// seqs assigned there, hashes chained in process, one multi-row INSERT.
/// SQLite: `BEGIN IMMEDIATE` takes the single writer lock up front.
/// Events whose request_id is already stored are skipped, so a replay stores
/// each event exactly once.
///
/// The work runs in its own task: if the caller's future is dropped or times
/// out, the transaction still commits or rolls back on its own, so no
/// connection is returned to the pool inside a transaction and no lock is
/// left held.
#[instrument(skip_all, fields(events = events.len()))]
pub async fn append(
    db: &DatabaseConnection,
    events: Vec<AuditEvent>,
    key: Option<ChainKey>,
    timeout: Duration,
) -> Result<AppendOutcome, AuditError> {
    if events.is_empty() {
        return Ok(AppendOutcome::default());
    }
    let db = db.clone();
    let task = tokio::spawn(async move { append_in_transaction(&db, &events, key.as_ref()).await });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(AuditError::Database {
            reason: format!("append task failed: {join}"),
        }),
        Err(_) => Err(AuditError::Timeout { after: timeout }),
    }
}

async fn append_in_transaction(
    db: &DatabaseConnection,
    events: &[AuditEvent],
    key: Option<&ChainKey>,
) -> Result<AppendOutcome, AuditError> {
    let backend = db.get_database_backend();
    let options = match backend {
        DbBackend::Postgres => TransactionOptions {
            isolation_level: Some(IsolationLevel::ReadCommitted),
            access_mode: Some(AccessMode::ReadWrite),
            sqlite_transaction_mode: None,
        },
        _ => TransactionOptions {
            isolation_level: None,
            access_mode: None,
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        },
    };
    let txn = db.begin_with_options(options).await?;
    if backend == DbBackend::Postgres {
        txn.execute_unprepared(
            "SET LOCAL lock_timeout = '10s'; SET LOCAL statement_timeout = '30s'",
        )
        .await?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CHAIN_LOCK})"))
            .await?;
    }

    // Drop events already stored (a replay) and repeats within the batch.
    let ids: Vec<String> = events.iter().map(|e| e.request_id().to_owned()).collect();
    let stored: HashSet<String> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::RequestId)
        .filter(audit_events::Column::RequestId.is_in(ids))
        .into_tuple::<String>()
        .all(&txn)
        .await?
        .into_iter()
        .collect();
    let mut seen = HashSet::new();
    let fresh: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| !stored.contains(e.request_id()) && seen.insert(e.request_id()))
        .collect();
    let duplicates = (events.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        txn.commit().await?;
        return Ok(AppendOutcome {
            inserted: 0,
            duplicates,
        });
    }

    let head = head(&txn).await?;
    let mut prev_hash = head.hash;
    let mut rows = Vec::with_capacity(fresh.len());
    for (i, event) in fresh.iter().enumerate() {
        let seq = head.seq + 1 + i as i64;
        let mut row = event.to_model(seq, prev_hash);
        row.hash = row_hash(key, &row)?;
        prev_hash = row.hash.clone();
        rows.push(audit_events::ActiveModel::from(row));
    }
    let inserted = rows.len() as u64;
    audit_events::Entity::insert_many(rows)
        .exec_without_returning(&txn)
        .await?;
    txn.commit().await?;
    debug!(
        inserted,
        duplicates,
        first_seq = head.seq + 1,
        "audit batch appended"
    );
    Ok(AppendOutcome {
        inserted,
        duplicates,
    })
}

/// The chain's head: the last row, else the newest prune anchor, else genesis.
pub(crate) async fn head<C: ConnectionTrait>(db: &C) -> Result<ChainHead, AuditError> {
    let last: Option<(i64, String)> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Seq)
        .column(audit_events::Column::Hash)
        .order_by_desc(audit_events::Column::Seq)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    if let Some((seq, hash)) = last {
        return Ok(ChainHead { seq, hash });
    }
    Ok(anchor(db).await?.unwrap_or_else(ChainHead::genesis))
}

/// The newest prune anchor, if the chain was ever pruned.
pub(crate) async fn anchor<C: ConnectionTrait>(db: &C) -> Result<Option<ChainHead>, AuditError> {
    let anchor = audit_chain_anchors::Entity::find()
        .order_by_desc(audit_chain_anchors::Column::Seq)
        .one(db)
        .await?;
    Ok(anchor.map(|a| ChainHead {
        seq: a.seq,
        hash: a.hash,
    }))
}
