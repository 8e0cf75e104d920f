//! Approvals bound to the whole call and consumed once; audit events
//! deduplicated by their own id.
//!
//! - `approval_requests` gains `policy_version` (the policy the call was held
//!   under; part of the binding a consume re-checks), `execute_by` (set with
//!   an APPROVED decision: the end of the bounded window in which the call may
//!   run) and `executed_at` (set once, when the gateway consumes the approval),
//!   and its `status` CHECK accepts `EXECUTED`.
//! - On PostgreSQL `approval_requests.token_hash` becomes `varchar(64)`: a
//!   text parameter against `char(64)` could not use the unique index.
//! - `audit_events.request_id` is no longer unique: one call may have several
//!   events (held for approval, then executed). Replays deduplicate by the
//!   event's own id (the primary key); a plain index keeps lookups by request
//!   id fast.
//!
//! - Approval history is immutable (a trigger, for every role): the call an
//!   approval was issued for never changes, and the only transitions are
//!   PENDING → APPROVED / DENIED / EXPIRED and APPROVED → EXECUTED (which
//!   keeps the decision as it was).
//!
//! `down` refuses while an approval is EXECUTED or two events share a request
//! id: the older schema cannot hold them.

use sea_orm_migration::SchemaManagerConnection;
use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApprovalRequests {
    Table,
    PolicyVersion,
    ExecuteBy,
    ExecutedAt,
}

const OLD_STATUSES: &str = "'PENDING', 'APPROVED', 'DENIED', 'EXPIRED'";
const NEW_STATUSES: &str = "'PENDING', 'APPROVED', 'DENIED', 'EXPIRED', 'EXECUTED'";

/// Drops every CHECK constraint on `approval_requests.status` (its generated
/// name is not part of the schema's contract) and adds one for `statuses`.
fn postgres_status_check(statuses: &str) -> String {
    format!(
        r"
DO $$
DECLARE c record;
BEGIN
  FOR c IN SELECT conname FROM pg_constraint
           WHERE conrelid = 'approval_requests'::regclass AND contype = 'c'
             AND pg_get_constraintdef(oid) LIKE '%status%'
  LOOP
    EXECUTE format('ALTER TABLE approval_requests DROP CONSTRAINT %I', c.conname);
  END LOOP;
END $$;
ALTER TABLE approval_requests ADD CONSTRAINT approval_requests_status_check
  CHECK (status IN ({statuses}));
"
    )
}

const POSTGRES_HISTORY_TRIGGER: &str = r"
CREATE OR REPLACE FUNCTION warden_approval_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.id <> OLD.id OR NEW.token_hash <> OLD.token_hash OR NEW.request_id <> OLD.request_id
     OR NEW.caller_id <> OLD.caller_id OR NEW.tool_name <> OLD.tool_name
     OR NEW.tool_call::text <> OLD.tool_call::text OR NEW.raw_args_hash <> OLD.raw_args_hash
     OR NEW.risk_labels::text <> OLD.risk_labels::text OR NEW.created_at <> OLD.created_at
     OR NEW.expires_at <> OLD.expires_at OR NEW.policy_version <> OLD.policy_version THEN
    RAISE EXCEPTION 'approval history is immutable: the call an approval was issued for cannot change';
  END IF;
  IF OLD.status = 'PENDING' AND NEW.status IN ('APPROVED', 'DENIED', 'EXPIRED') THEN
    RETURN NEW;
  END IF;
  IF OLD.status = 'APPROVED' AND NEW.status = 'EXECUTED'
     AND NEW.decided_at IS NOT DISTINCT FROM OLD.decided_at
     AND NEW.approver_id IS NOT DISTINCT FROM OLD.approver_id
     AND NEW.note IS NOT DISTINCT FROM OLD.note
     AND NEW.execute_by IS NOT DISTINCT FROM OLD.execute_by THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'approval history is immutable: % -> % is not a permitted change', OLD.status, NEW.status;
END $$;
DROP TRIGGER IF EXISTS approval_requests_history ON approval_requests;
CREATE TRIGGER approval_requests_history BEFORE UPDATE ON approval_requests
  FOR EACH ROW EXECUTE FUNCTION warden_approval_history();
";

const POSTGRES_DROP_HISTORY_TRIGGER: &str = r"
DROP TRIGGER IF EXISTS approval_requests_history ON approval_requests;
DROP FUNCTION IF EXISTS warden_approval_history();
";

const SQLITE_HISTORY_TRIGGER: &str = r"
CREATE TRIGGER IF NOT EXISTS approval_requests_history BEFORE UPDATE ON approval_requests
WHEN NOT (
  NEW.id IS OLD.id AND NEW.token_hash IS OLD.token_hash AND NEW.request_id IS OLD.request_id
  AND NEW.caller_id IS OLD.caller_id AND NEW.tool_name IS OLD.tool_name
  AND NEW.tool_call IS OLD.tool_call AND NEW.raw_args_hash IS OLD.raw_args_hash
  AND NEW.risk_labels IS OLD.risk_labels AND NEW.created_at IS OLD.created_at
  AND NEW.expires_at IS OLD.expires_at AND NEW.policy_version IS OLD.policy_version
  AND (
    (OLD.status = 'PENDING' AND NEW.status IN ('APPROVED', 'DENIED', 'EXPIRED'))
    OR (OLD.status = 'APPROVED' AND NEW.status = 'EXECUTED'
        AND NEW.decided_at IS OLD.decided_at AND NEW.approver_id IS OLD.approver_id
        AND NEW.note IS OLD.note AND NEW.execute_by IS OLD.execute_by)
  )
)
BEGIN
  SELECT RAISE(ABORT, 'approval history is immutable: not a permitted change');
END
";

async fn scalar_i64(db: &SchemaManagerConnection<'_>, sql: &str) -> Result<i64, DbErr> {
    Ok(db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0))
}

/// SQLite cannot alter a CHECK constraint: the table is rebuilt from its own
/// stored definition with the status list replaced, and its indexes recreated.
async fn sqlite_status_check(
    db: &SchemaManagerConnection<'_>,
    from: &str,
    to: &str,
) -> Result<(), DbErr> {
    let backend = db.get_database_backend();
    let table_sql: String = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'approval_requests'",
        ))
        .await?
        .ok_or_else(|| DbErr::Migration("approval_requests does not exist".into()))?
        .try_get("", "sql")?;
    if !table_sql.contains(from) {
        return Err(DbErr::Migration(format!(
            "approval_requests has an unexpected status CHECK (looked for {from})"
        )));
    }
    let rebuilt = table_sql.replacen(from, to, 1).replacen(
        "\"approval_requests\"",
        "\"approval_requests_rebuilt\"",
        1,
    );
    let index_sql: Vec<String> = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT sql FROM sqlite_master WHERE type = 'index' \
             AND tbl_name = 'approval_requests' AND sql IS NOT NULL",
        ))
        .await?
        .into_iter()
        .map(|row| row.try_get::<String>("", "sql"))
        .collect::<Result<_, _>>()?;
    db.execute_unprepared(&rebuilt).await?;
    db.execute_unprepared("INSERT INTO approval_requests_rebuilt SELECT * FROM approval_requests")
        .await?;
    db.execute_unprepared("DROP TABLE approval_requests")
        .await?;
    db.execute_unprepared("ALTER TABLE approval_requests_rebuilt RENAME TO approval_requests")
        .await?;
    for sql in index_sql {
        db.execute_unprepared(&sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(&postgres_status_check(NEW_STATUSES))
                    .await?;
                // Tokens are looked up with a text parameter: against
                // char(64) that comparison casts the column and cannot use
                // the unique index (a sequential scan per check).
                db.execute_unprepared(
                    "ALTER TABLE approval_requests ALTER COLUMN token_hash TYPE varchar(64)",
                )
                .await?;
            }
            _ => sqlite_status_check(db, OLD_STATUSES, NEW_STATUSES).await?,
        }
        use ApprovalRequests as R;
        for column in [
            ColumnDef::new(R::PolicyVersion)
                .string_len(128)
                .not_null()
                .default("")
                .to_owned(),
            ColumnDef::new(R::ExecuteBy)
                .timestamp_with_time_zone()
                .to_owned(),
            ColumnDef::new(R::ExecutedAt)
                .timestamp_with_time_zone()
                .to_owned(),
        ] {
            let mut column = column;
            manager
                .alter_table(
                    Table::alter()
                        .table(R::Table)
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        db.execute_unprepared("DROP INDEX IF EXISTS ux_audit_events_request_id")
            .await?;
        db.execute_unprepared(
            "CREATE INDEX IF NOT EXISTS ix_audit_events_request_id ON audit_events (request_id, id)",
        )
        .await?;
        db.execute_unprepared(match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_HISTORY_TRIGGER,
            _ => SQLITE_HISTORY_TRIGGER,
        })
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let executed = scalar_i64(
            db,
            "SELECT COUNT(*) AS n FROM approval_requests WHERE status = 'EXECUTED'",
        )
        .await?;
        if executed > 0 {
            return Err(DbErr::Migration(format!(
                "refusing to roll back: {executed} approvals are EXECUTED, a state the older \
                 schema cannot hold. Delete or archive them first"
            )));
        }
        let shared = scalar_i64(
            db,
            "SELECT COUNT(*) AS n FROM (SELECT request_id FROM audit_events \
             GROUP BY request_id HAVING COUNT(*) > 1) AS d",
        )
        .await?;
        if shared > 0 {
            return Err(DbErr::Migration(format!(
                "refusing to roll back: {shared} request ids have several audit events, and the \
                 older schema allows one. Export the trail first (warden audit export)"
            )));
        }
        db.execute_unprepared(match manager.get_database_backend() {
            DbBackend::Postgres => POSTGRES_DROP_HISTORY_TRIGGER,
            _ => "DROP TRIGGER IF EXISTS approval_requests_history",
        })
        .await?;
        db.execute_unprepared("DROP INDEX IF EXISTS ix_audit_events_request_id")
            .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX IF NOT EXISTS ux_audit_events_request_id ON audit_events (request_id)",
        )
        .await?;
        use ApprovalRequests as R;
        for column in [R::ExecutedAt, R::ExecuteBy, R::PolicyVersion] {
            manager
                .alter_table(
                    Table::alter()
                        .table(R::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(&postgres_status_check(OLD_STATUSES))
                    .await?;
                db.execute_unprepared(
                    "ALTER TABLE approval_requests ALTER COLUMN token_hash TYPE char(64)",
                )
                .await?;
            }
            _ => sqlite_status_check(db, NEW_STATUSES, OLD_STATUSES).await?,
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
