//! Makes `audit_events` append-only (UPDATE and TRUNCATE refused; DELETE only
//! while a prune permit row exists, i.e. inside `prune`'s transaction), adds the
//! chain anchors that `prune` leaves behind, and replaces the single-column
//! caller/decision indexes with (column, seq) ones that serve newest-first
//! keyset pages.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditChainAnchors {
    Table,
    Seq,
    Hash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditPrunePermits {
    Table,
    Id,
}

const POSTGRES_UP: &str = r"
CREATE OR REPLACE FUNCTION warden_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' AND EXISTS (SELECT 1 FROM audit_prune_permits) THEN
    RETURN OLD;
  END IF;
  RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
  FOR EACH ROW EXECUTE FUNCTION warden_audit_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
  FOR EACH STATEMENT EXECUTE FUNCTION warden_audit_append_only();
CREATE TRIGGER audit_chain_anchors_append_only BEFORE UPDATE OR DELETE ON audit_chain_anchors
  FOR EACH ROW EXECUTE FUNCTION warden_audit_append_only();
";

const POSTGRES_DOWN: &str = r"
DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events;
DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events;
DROP TRIGGER IF EXISTS audit_chain_anchors_append_only ON audit_chain_anchors;
DROP FUNCTION IF EXISTS warden_audit_append_only();
";

const SQLITE_UP: [&str; 4] = [
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events \
     WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permits) \
     BEGIN SELECT RAISE(ABORT, 'audit_events is append-only: DELETE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_chain_anchors_no_update BEFORE UPDATE ON audit_chain_anchors \
     BEGIN SELECT RAISE(ABORT, 'audit_chain_anchors is append-only: UPDATE refused'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_chain_anchors_no_delete BEFORE DELETE ON audit_chain_anchors \
     WHEN NOT EXISTS (SELECT 1 FROM audit_prune_permits) \
     BEGIN SELECT RAISE(ABORT, 'audit_chain_anchors is append-only: DELETE refused'); END",
];

const SQLITE_DOWN: [&str; 4] = [
    "DROP TRIGGER IF EXISTS audit_events_no_update",
    "DROP TRIGGER IF EXISTS audit_events_no_delete",
    "DROP TRIGGER IF EXISTS audit_chain_anchors_no_update",
    "DROP TRIGGER IF EXISTS audit_chain_anchors_no_delete",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditChainAnchors::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditChainAnchors::Seq)
                            .big_integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AuditChainAnchors::Hash)
                            .char_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AuditChainAnchors::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(AuditPrunePermits::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AuditPrunePermits::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for sql in [
            "DROP INDEX IF EXISTS ix_audit_events_caller_id",
            "DROP INDEX IF EXISTS ix_audit_events_decision",
            "CREATE INDEX IF NOT EXISTS ix_audit_events_caller_seq ON audit_events (caller_id, seq)",
            "CREATE INDEX IF NOT EXISTS ix_audit_events_decision_seq ON audit_events (decision, seq)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(POSTGRES_UP).await?;
            }
            _ => {
                for sql in SQLITE_UP {
                    db.execute_unprepared(sql).await?;
                }
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(POSTGRES_DOWN).await?;
            }
            _ => {
                for sql in SQLITE_DOWN {
                    db.execute_unprepared(sql).await?;
                }
            }
        }
        for sql in [
            "DROP INDEX IF EXISTS ix_audit_events_caller_seq",
            "DROP INDEX IF EXISTS ix_audit_events_decision_seq",
            "CREATE INDEX IF NOT EXISTS ix_audit_events_caller_id ON audit_events (caller_id)",
            "CREATE INDEX IF NOT EXISTS ix_audit_events_decision ON audit_events (decision)",
        ] {
            db.execute_unprepared(sql).await?;
        }
        manager
            .drop_table(
                Table::drop()
                    .table(AuditPrunePermits::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(
                Table::drop()
                    .table(AuditChainAnchors::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
