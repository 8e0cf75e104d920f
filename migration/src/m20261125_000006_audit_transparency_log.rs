//! Replaces the hash chain with a transparency log (RFC 6962 Merkle tree).
//!
//! - `audit_events` loses the chain columns (`seq`, `prev_hash`, `hash`) and
//!   gains `kind` (`tool_call` or `prune`) and `leaf_hash` (the RFC 6962 leaf
//!   hash the writer computed; NULL only for rows carried over from the chain).
//! - `audit_pending`: the writers' queue. Every writer inserts each event's id
//!   here in the same transaction as the event; the integrator takes rows off
//!   the queue in arrival order and gives them leaf indexes.
//! - `audit_leaves` (leaf index → event and leaf hash), `audit_tree_hashes`
//!   (every stored interior hash, at the `stored_hash_index` layout of Go's
//!   sumdb/tlog; level-0 hashes are the leaves' own) and
//!   `audit_checkpoints` (signed C2SP checkpoints): append-only, refused UPDATE
//!   and DELETE by triggers.
//! - The chain anchors are gone: nothing in the database can tell the verifier
//!   to skip a row unless a leaf covered by a signed checkpoint says so.
//!
//! Existing events become the first leaves: they are queued in their chain
//! order, and the integrator computes their leaf hashes from the rows.
//! `down` restores the chain schema, but only on an empty trail: a
//! transparency log with entries cannot be turned back into a chain without
//! losing its evidence, so `down` refuses (export it first).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditPending {
    Table,
    Pos,
    EventId,
}

#[derive(DeriveIden)]
enum AuditLeaves {
    Table,
    LeafIndex,
    EventId,
    LeafHash,
    IntegratedAt,
}

#[derive(DeriveIden)]
enum AuditTreeHashes {
    Table,
    Idx,
    Hash,
}

#[derive(DeriveIden)]
enum AuditCheckpoints {
    Table,
    TreeSize,
    RootHash,
    Note,
    CreatedAt,
}

const POSTGRES_DROP_CHAIN_TRIGGERS: &str = r"
DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events;
DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events;
DROP TRIGGER IF EXISTS audit_chain_anchors_append_only ON audit_chain_anchors;
DROP FUNCTION IF EXISTS warden_audit_append_only();
";

const SQLITE_DROP_CHAIN_TRIGGERS: [&str; 4] = [
    "DROP TRIGGER IF EXISTS audit_events_no_update",
    "DROP TRIGGER IF EXISTS audit_events_no_delete",
    "DROP TRIGGER IF EXISTS audit_chain_anchors_no_update",
    "DROP TRIGGER IF EXISTS audit_chain_anchors_no_delete",
];

const POSTGRES_TLOG_TRIGGERS: &str = r"
CREATE OR REPLACE FUNCTION warden_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_events'
     AND EXISTS (SELECT 1 FROM audit_prune_permits) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION warden_audit_log_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION warden_audit_log_append_only();
CREATE TRIGGER audit_leaves_append_only BEFORE UPDATE OR DELETE ON audit_leaves
  FOR EACH ROW EXECUTE FUNCTION warden_audit_log_append_only();
CREATE TRIGGER audit_leaves_no_truncate BEFORE TRUNCATE ON audit_leaves
  FOR EACH STATEMENT EXECUTE FUNCTION warden_audit_log_append_only();
CREATE TRIGGER audit_tree_hashes_append_only BEFORE UPDATE OR DELETE ON audit_tree_hashes
  FOR EACH ROW EXECUTE FUNCTION warden_audit_log_append_only();
CREATE TRIGGER audit_tree_hashes_no_truncate BEFORE TRUNCATE ON audit_tree_hashes
  FOR EACH STATEMENT EXECUTE FUNCTION warden_audit_log_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
  FOR EACH ROW EXECUTE FUNCTION warden_audit_log_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
  FOR EACH STATEMENT EXECUTE FUNCTION warden_audit_log_append_only();
";

const POSTGRES_DROP_TLOG_TRIGGERS: &str = r"
DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events;
DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events;
DROP TRIGGER IF EXISTS audit_leaves_append_only ON audit_leaves;
DROP TRIGGER IF EXISTS audit_leaves_no_truncate ON audit_leaves;
DROP TRIGGER IF EXISTS audit_tree_hashes_append_only ON audit_tree_hashes;
DROP TRIGGER IF EXISTS audit_tree_hashes_no_truncate ON audit_tree_hashes;
DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints;
DROP TRIGGER IF EXISTS audit_checkpoints_no_truncate ON audit_checkpoints;
DROP FUNCTION IF EXISTS warden_audit_log_append_only();
";

const SQLITE_TLOG_TRIGGERS: [&str; 8] = [
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events \
     WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permits) \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_leaves_no_update BEFORE UPDATE ON audit_leaves \
     BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_leaves_no_delete BEFORE DELETE ON audit_leaves \
     BEGIN SELECT RAISE(ABORT, 'audit_leaves is append-only: DELETE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_tree_hashes_no_update BEFORE UPDATE ON audit_tree_hashes \
     BEGIN SELECT RAISE(ABORT, 'audit_tree_hashes is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_tree_hashes_no_delete BEFORE DELETE ON audit_tree_hashes \
     BEGIN SELECT RAISE(ABORT, 'audit_tree_hashes is append-only: DELETE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints \
     BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints \
     BEGIN SELECT RAISE(ABORT, 'audit_checkpoints is append-only: DELETE refused'); END",
];

const SQLITE_DROP_TLOG_TRIGGERS: [&str; 8] = [
    "DROP TRIGGER IF EXISTS audit_events_no_update",
    "DROP TRIGGER IF EXISTS audit_events_no_delete",
    "DROP TRIGGER IF EXISTS audit_leaves_no_update",
    "DROP TRIGGER IF EXISTS audit_leaves_no_delete",
    "DROP TRIGGER IF EXISTS audit_tree_hashes_no_update",
    "DROP TRIGGER IF EXISTS audit_tree_hashes_no_delete",
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_update",
    "DROP TRIGGER IF EXISTS audit_checkpoints_no_delete",
];

async fn run_all(db: &SchemaManagerConnection<'_>, statements: &[&str]) -> Result<(), DbErr> {
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        match backend {
            DbBackend::Postgres => {
                db.execute_unprepared(POSTGRES_DROP_CHAIN_TRIGGERS).await?;
            }
            _ => run_all(db, &SQLITE_DROP_CHAIN_TRIGGERS).await?,
        }

        // The writers' queue; existing events are queued in chain order.
        manager
            .create_table(
                Table::create()
                    .table(AuditPending::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditPending::Pos)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AuditPending::EventId).uuid().not_null())
                    .to_owned(),
            )
            .await?;
        run_all(
            db,
            &[
                "CREATE UNIQUE INDEX IF NOT EXISTS ux_audit_pending_event_id ON audit_pending (event_id)",
                "INSERT INTO audit_pending (event_id) SELECT id FROM audit_events ORDER BY seq",
                "DROP INDEX IF EXISTS ux_audit_events_seq",
                "DROP INDEX IF EXISTS ux_audit_events_prev_hash",
                "DROP INDEX IF EXISTS ix_audit_events_caller_seq",
                "DROP INDEX IF EXISTS ix_audit_events_decision_seq",
                "ALTER TABLE audit_events DROP COLUMN seq",
                "ALTER TABLE audit_events DROP COLUMN prev_hash",
                "ALTER TABLE audit_events DROP COLUMN hash",
                "ALTER TABLE audit_events ADD COLUMN kind varchar(32) NOT NULL DEFAULT 'tool_call'",
                "ALTER TABLE audit_events ADD COLUMN leaf_hash char(64)",
                "CREATE INDEX IF NOT EXISTS ix_audit_events_caller_id_id ON audit_events (caller_id, id)",
                "CREATE INDEX IF NOT EXISTS ix_audit_events_decision_id ON audit_events (decision, id)",
                "CREATE INDEX IF NOT EXISTS ix_audit_events_kind ON audit_events (kind)",
                "DROP TABLE IF EXISTS audit_chain_anchors",
            ],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditLeaves::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditLeaves::LeafIndex)
                            .big_integer()
                            .not_null()
                            .primary_key()
                            .check(Expr::col(AuditLeaves::LeafIndex).gte(0)),
                    )
                    .col(ColumnDef::new(AuditLeaves::EventId).uuid().not_null())
                    .col(
                        ColumnDef::new(AuditLeaves::LeafHash)
                            .char_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditLeaves::IntegratedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditTreeHashes::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditTreeHashes::Idx)
                            .big_integer()
                            .not_null()
                            .primary_key()
                            .check(Expr::col(AuditTreeHashes::Idx).gte(0)),
                    )
                    .col(
                        ColumnDef::new(AuditTreeHashes::Hash)
                            .char_len(64)
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditCheckpoints::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditCheckpoints::TreeSize)
                            .big_integer()
                            .not_null()
                            .primary_key()
                            .check(Expr::col(AuditCheckpoints::TreeSize).gte(0)),
                    )
                    .col(
                        ColumnDef::new(AuditCheckpoints::RootHash)
                            .char_len(64)
                            .not_null(),
                    )
                    .col(ColumnDef::new(AuditCheckpoints::Note).text().not_null())
                    .col(
                        ColumnDef::new(AuditCheckpoints::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        db.execute_unprepared(
            "CREATE UNIQUE INDEX IF NOT EXISTS ux_audit_leaves_event_id ON audit_leaves (event_id)",
        )
        .await?;
        match backend {
            DbBackend::Postgres => {
                db.execute_unprepared(POSTGRES_TLOG_TRIGGERS).await?;
            }
            _ => run_all(db, &SQLITE_TLOG_TRIGGERS).await?,
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let rows = db
            .query_one_raw(sea_orm_migration::sea_orm::Statement::from_string(
                manager.get_database_backend(),
                "SELECT (SELECT COUNT(*) FROM audit_events) + (SELECT COUNT(*) FROM audit_leaves) AS n",
            ))
            .await?
            .map(|row| row.try_get::<i64>("", "n"))
            .transpose()?
            .unwrap_or(0);
        if rows > 0 {
            return Err(DbErr::Migration(format!(
                "refusing to roll back the audit transparency log: it holds {rows} entries, and the \
                 hash-chain schema cannot keep their evidence. Export the trail first \
                 (warden audit export) and roll back on an empty database"
            )));
        }
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(POSTGRES_DROP_TLOG_TRIGGERS).await?;
            }
            _ => run_all(db, &SQLITE_DROP_TLOG_TRIGGERS).await?,
        }
        for table in [
            "audit_checkpoints",
            "audit_tree_hashes",
            "audit_leaves",
            "audit_pending",
            "audit_events",
            "audit_prune_permits",
        ] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        // The trail is empty: recreate the chain schema exactly as the two
        // migrations that made it did.
        crate::m20261124_000002_create_audit_events::Migration
            .up(manager)
            .await?;
        crate::m20261124_000004_audit_append_only::Migration
            .up(manager)
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
