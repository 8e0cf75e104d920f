//! The writer side: appending events to the log. Writers never wait on each
//! other: a batch is one transaction that stores the event rows (one COPY on
//! PostgreSQL, one multi-row INSERT on SQLite) and queues their ids for the
//! integrator. There is no global lock; leaf indexes are assigned later.

use std::collections::HashSet;
use std::time::Duration;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use tracing::{debug, instrument};
use warden_entity::{audit_events, audit_pending};

use crate::{AuditError, AuditEvent};

/// What one append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AppendOutcome {
    /// Rows inserted.
    pub inserted: u64,
    /// Events skipped because their id is already stored (a replay).
    pub duplicates: u64,
}

/// Appends tool-call `events` in one transaction: the rows (each with its
/// leaf hash) and their places in the integrator's queue, both or neither.
/// Any other kind is refused ([`record_in`] writes admin events).
///
/// Events whose own id is already stored are skipped, so a replay stores
/// each event exactly once; distinct events of one call (same request_id)
/// are all stored. Two writers racing with the same event make one batch
/// fail on the primary key; its retry then skips the stored one.
///
/// The work runs in its own task: if the caller's future is dropped or times
/// out, the transaction still commits or rolls back on its own.
#[instrument(name = "audit.append", skip_all, fields(events = events.len(), otel.kind = "client", db.system.name = crate::metrics::db_system_name(db.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "INSERT"))]
pub async fn append(
    db: &DatabaseConnection,
    events: Vec<AuditEvent>,
    timeout: Duration,
) -> Result<AppendOutcome, AuditError> {
    if events.is_empty() {
        return Ok(AppendOutcome::default());
    }
    // Admin events are written only by `record_in`, inside the transaction
    // of the change they record: a writer cannot queue one that looks like
    // an operator's action.
    if events
        .iter()
        .any(|e| e.kind() != crate::EventKind::ToolCall)
    {
        return Err(AuditError::InvalidField {
            field: "kind",
            reason: "append takes tool-call events; admin events go through record_in".into(),
        });
    }
    let db = db.clone();
    let system = crate::metrics::db_system_name(db.get_database_backend());
    let started = std::time::Instant::now();
    let outcome = crate::detached::detached("append", timeout, async move {
        if db.get_database_backend() == DbBackend::Postgres {
            append_postgres(db.get_postgres_connection_pool(), &events).await
        } else {
            append_in_transaction(&db, &events).await
        }
    })
    .await?;
    crate::metrics::batch_written(system, started);
    crate::metrics::written("batch", outcome.inserted);
    Ok(outcome)
}

pub(crate) fn sqlx_error(e: sea_orm::sqlx::Error) -> AuditError {
    if matches!(e, sea_orm::sqlx::Error::PoolTimedOut) {
        crate::metrics::record_db_error(&sea_orm::DbErr::ConnectionAcquire(
            sea_orm::error::ConnAcquireErr::Timeout,
        ));
    }
    AuditError::Database {
        reason: e.to_string(),
    }
}

/// The rows for the events not stored yet (repeats within the batch dropped).
fn new_rows(
    events: &[AuditEvent],
    stored: &HashSet<uuid::Uuid>,
) -> Result<Vec<audit_events::Model>, AuditError> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter(|e| !stored.contains(&e.id()) && seen.insert(e.id()))
        .map(AuditEvent::to_model)
        .collect()
}

async fn append_postgres(
    pool: &sea_orm::sqlx::PgPool,
    events: &[AuditEvent],
) -> Result<AppendOutcome, AuditError> {
    use sea_orm::sqlx;
    // Leaf hashes are computed before the transaction opens.
    let ids: Vec<uuid::Uuid> = events.iter().map(AuditEvent::id).collect();
    let mut tx = pool.begin().await.map_err(sqlx_error)?;
    sqlx::query("SET LOCAL statement_timeout = '30s'")
        .execute(&mut *tx)
        .await
        .map_err(sqlx_error)?;
    let stored: HashSet<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM audit_events WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(sqlx_error)?
            .into_iter()
            .collect();
    let rows = new_rows(events, &stored)?;
    let outcome = AppendOutcome {
        inserted: rows.len() as u64,
        duplicates: (events.len() - rows.len()) as u64,
    };
    if !rows.is_empty() {
        let mut copy = tx
            .copy_in_raw(
                "COPY audit_events (id, request_id, timestamp, caller_id, api_key_id, method, tool_name, \
                 decision, reason, raw_args_hash, sanitized_args, redaction_flags, risk_labels, status_code, \
                 latency_ms, kind, leaf_hash) FROM STDIN",
            )
            .await
            .map_err(sqlx_error)?;
        copy.send(crate::copy_text::encode(&rows)?)
            .await
            .map_err(sqlx_error)?;
        copy.finish().await.map_err(sqlx_error)?;
        let event_ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        sqlx::query("INSERT INTO audit_pending (event_id) SELECT unnest($1::uuid[])")
            .bind(&event_ids)
            .execute(&mut *tx)
            .await
            .map_err(sqlx_error)?;
    }
    tx.commit().await.map_err(sqlx_error)?;
    debug!(
        inserted = outcome.inserted,
        duplicates = outcome.duplicates,
        "audit batch appended"
    );
    Ok(outcome)
}

async fn append_in_transaction(
    db: &DatabaseConnection,
    events: &[AuditEvent],
) -> Result<AppendOutcome, AuditError> {
    let txn = begin_write(db).await?;
    let ids: Vec<uuid::Uuid> = events.iter().map(AuditEvent::id).collect();
    let stored: HashSet<uuid::Uuid> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::Id)
        .filter(audit_events::Column::Id.is_in(ids))
        .into_tuple::<uuid::Uuid>()
        .all(&txn)
        .await?
        .into_iter()
        .collect();
    let rows = new_rows(events, &stored)?;
    let outcome = AppendOutcome {
        inserted: rows.len() as u64,
        duplicates: (events.len() - rows.len()) as u64,
    };
    insert_rows(&txn, rows).await?;
    txn.commit().await?;
    debug!(
        inserted = outcome.inserted,
        duplicates = outcome.duplicates,
        "audit batch appended"
    );
    Ok(outcome)
}

/// A write transaction for a change recorded with [`record_in`]:
/// `BEGIN IMMEDIATE` on SQLite (a deferred one that reads first fails with
/// "database is locked" instead of waiting when another writer is active);
/// an ordinary one on PostgreSQL.
pub async fn begin_write(
    db: &DatabaseConnection,
) -> Result<sea_orm::DatabaseTransaction, sea_orm::DbErr> {
    db.begin_with_options(TransactionOptions {
        isolation_level: None,
        access_mode: None,
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
    })
    .await
}

/// Records `events` inside the caller's transaction (any backend): they
/// exist if and only if the transaction commits — the way to record an
/// administrative action atomically with the change it describes.
#[instrument(name = "audit.record_in", skip_all, fields(events = events.len(), db.system.name = crate::metrics::db_system_name(txn.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "INSERT"))]
pub async fn record_in<C: ConnectionTrait>(
    txn: &C,
    events: &[AuditEvent],
) -> Result<(), AuditError> {
    let rows = events
        .iter()
        .map(AuditEvent::to_model)
        .collect::<Result<Vec<_>, _>>()?;
    insert_rows(txn, rows).await?;
    crate::metrics::written("in_transaction", events.len() as u64);
    Ok(())
}

/// One PostgreSQL statement that makes a change and records it: `change` is
/// a single data-modifying statement with a `RETURNING` clause (an
/// `INSERT … ON CONFLICT DO NOTHING RETURNING …` or a conditional
/// `UPDATE … RETURNING …`, placeholders `$1…`); `events` are stored and
/// queued for the integrator **if and only if** `change` returned a row, in
/// the same statement (so in the same implicit transaction: one round trip,
/// one commit). Returns what `change` returned: empty when it changed
/// nothing, and then nothing was recorded.
///
/// The events must already describe the change exactly (they are built by
/// the caller before the statement runs); callers bind every event field
/// taken from the row into `change`'s `WHERE` clause, so a row that does not
/// match them is not changed. Refused on SQLite (no data-modifying CTEs):
/// use [`begin_write`] + [`record_in`] there.
///
/// Errors: the outer one when an event cannot be encoded (or the backend is
/// not PostgreSQL), before anything is sent; the inner one is the database's
/// own answer, for the caller to map like its other statements (pool
/// exhausted, timeout, constraint).
#[instrument(name = "audit.change_with_events", skip_all, fields(events = events.len(), otel.kind = "client", db.system.name = "postgresql", db.collection.name = "audit_events", db.operation.name = "WITH"))]
pub async fn change_with_events<C: ConnectionTrait>(
    db: &C,
    change: sea_orm::Statement,
    events: &[AuditEvent],
) -> Result<Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr>, AuditError> {
    use sea_orm::{ActiveModelTrait, Iterable};
    if db.get_database_backend() != DbBackend::Postgres || change.db_backend != DbBackend::Postgres
    {
        return Err(AuditError::Database {
            reason: "change_with_events needs PostgreSQL".into(),
        });
    }
    let mut values = change.values.map(|v| v.0).unwrap_or_default();
    let columns: Vec<audit_events::Column> = audit_events::Column::iter().collect();
    let names = columns
        .iter()
        .map(|c| format!("\"{}\"", sea_orm::IdenStatic::as_str(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut rows = Vec::with_capacity(events.len());
    for event in events {
        let model = audit_events::ActiveModel::from(event.to_model()?);
        let mut placeholders = Vec::with_capacity(columns.len());
        for column in &columns {
            let value = model
                .get(*column)
                .into_value()
                .ok_or_else(|| AuditError::Database {
                    reason: format!(
                        "audit event column {} has no value",
                        sea_orm::IdenStatic::as_str(column)
                    ),
                })?;
            values.push(value);
            placeholders.push(format!("${}", values.len()));
        }
        rows.push(format!("({})", placeholders.join(", ")));
    }
    let sql = if rows.is_empty() {
        change.sql
    } else {
        format!(
            "WITH change AS ({}), \
             recorded AS (INSERT INTO audit_events ({names}) \
                 SELECT * FROM (VALUES {}) AS event ({names}) \
                 WHERE EXISTS (SELECT 1 FROM change) RETURNING id), \
             queued AS (INSERT INTO audit_pending (event_id) SELECT id FROM recorded) \
             SELECT * FROM change",
            change.sql,
            rows.join(", ")
        )
    };
    let answer = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        ))
        .await;
    match &answer {
        Ok(changed) if !changed.is_empty() => {
            crate::metrics::written("with_change", events.len() as u64);
        }
        // An error is the caller's to map (and count) like its others.
        _ => {}
    }
    Ok(answer)
}

/// Inserts rows and queues them, inside the caller's transaction (any backend).
pub(crate) async fn insert_rows<C: ConnectionTrait>(
    txn: &C,
    rows: Vec<audit_events::Model>,
) -> Result<(), AuditError> {
    // 17 bind parameters per row: stay well under every driver's limit.
    for chunk in rows.chunks(500) {
        let pending: Vec<audit_pending::ActiveModel> = chunk
            .iter()
            .map(|r| audit_pending::ActiveModel {
                event_id: sea_orm::Set(r.id),
                ..Default::default()
            })
            .collect();
        let models: Vec<audit_events::ActiveModel> =
            chunk.iter().cloned().map(Into::into).collect();
        audit_events::Entity::insert_many(models)
            .exec_without_returning(txn)
            .await?;
        audit_pending::Entity::insert_many(pending)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}
