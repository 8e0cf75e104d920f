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
    let task = tokio::spawn(async move {
        if db.get_database_backend() == DbBackend::Postgres {
            append_postgres(db.get_postgres_connection_pool(), &events, key.as_ref()).await
        } else {
            append_in_transaction(&db, &events, key.as_ref()).await
        }
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(AuditError::Database {
            reason: format!("append task failed: {join}"),
        }),
        Err(_) => Err(AuditError::Timeout { after: timeout }),
    }
}

fn sqlx_error(e: sea_orm::sqlx::Error) -> AuditError {
    AuditError::Database {
        reason: e.to_string(),
    }
}

/// Seqs and hashes for the events not stored yet, chained after `head`.
fn chain_rows(
    events: &[AuditEvent],
    stored: &HashSet<String>,
    head: ChainHead,
    key: Option<&ChainKey>,
) -> Result<Vec<audit_events::Model>, AuditError> {
    let mut seen = HashSet::new();
    let mut prev_hash = head.hash;
    let mut rows = Vec::new();
    for event in events
        .iter()
        .filter(|e| !stored.contains(e.request_id()) && seen.insert(e.request_id()))
    {
        let seq = head.seq + 1 + rows.len() as i64;
        let mut row = event.to_model(seq, prev_hash);
        row.hash = row_hash(key, &row)?;
        prev_hash = row.hash.clone();
        rows.push(row);
    }
    Ok(rows)
}

/// PostgreSQL: the same transaction as [`append_in_transaction`], but the rows
/// go in with one `COPY … FROM STDIN` (text format) instead of a multi-row
/// INSERT with 18 bind parameters per row.
async fn append_postgres(
    pool: &sea_orm::sqlx::PgPool,
    events: &[AuditEvent],
    key: Option<&ChainKey>,
) -> Result<AppendOutcome, AuditError> {
    use sea_orm::sqlx;
    let mut tx = pool.begin().await.map_err(sqlx_error)?;
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *tx)
        .await
        .map_err(sqlx_error)?;
    sqlx::query("SET LOCAL statement_timeout = '30s'")
        .execute(&mut *tx)
        .await
        .map_err(sqlx_error)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CHAIN_LOCK)
        .execute(&mut *tx)
        .await
        .map_err(sqlx_error)?;
    let ids: Vec<String> = events.iter().map(|e| e.request_id().to_owned()).collect();
    let stored: HashSet<String> =
        sqlx::query_scalar("SELECT request_id FROM audit_events WHERE request_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(sqlx_error)?
            .into_iter()
            .collect();
    let last: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash::text FROM audit_events ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&mut *tx)
            .await
            .map_err(sqlx_error)?;
    let head = match last {
        Some((seq, hash)) => ChainHead { seq, hash },
        None => sqlx::query_as::<_, (i64, String)>(
            "SELECT seq, hash::text FROM audit_chain_anchors ORDER BY seq DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(sqlx_error)?
        .map_or_else(ChainHead::genesis, |(seq, hash)| ChainHead { seq, hash }),
    };
    let first_seq = head.seq + 1;
    let rows = chain_rows(events, &stored, head, key)?;
    let outcome = AppendOutcome {
        inserted: rows.len() as u64,
        duplicates: (events.len() - rows.len()) as u64,
    };
    if !rows.is_empty() {
        let mut copy = tx
            .copy_in_raw(
                "COPY audit_events (id, seq, request_id, timestamp, caller_id, api_key_id, method, tool_name, \
                 decision, reason, raw_args_hash, sanitized_args, redaction_flags, risk_labels, status_code, \
                 latency_ms, prev_hash, hash) FROM STDIN",
            )
            .await
            .map_err(sqlx_error)?;
        copy.send(crate::copy_text::encode(&rows)?)
            .await
            .map_err(sqlx_error)?;
        copy.finish().await.map_err(sqlx_error)?;
    }
    tx.commit().await.map_err(sqlx_error)?;
    debug!(
        inserted = outcome.inserted,
        duplicates = outcome.duplicates,
        first_seq,
        "audit batch appended"
    );
    Ok(outcome)
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
    let head = head(&txn).await?;
    let first_seq = head.seq + 1;
    let rows = chain_rows(events, &stored, head, key)?;
    let outcome = AppendOutcome {
        inserted: rows.len() as u64,
        duplicates: (events.len() - rows.len()) as u64,
    };
    if !rows.is_empty() {
        let models: Vec<audit_events::ActiveModel> = rows.into_iter().map(Into::into).collect();
        audit_events::Entity::insert_many(models)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    debug!(
        inserted = outcome.inserted,
        duplicates = outcome.duplicates,
        first_seq,
        "audit batch appended"
    );
    Ok(outcome)
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
