//! `audit_events`: the hash-chained audit trail.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    Seq,
    RequestId,
    Timestamp,
    CallerId,
    ApiKeyId,
    Method,
    ToolName,
    Decision,
    Reason,
    RawArgsHash,
    SanitizedArgs,
    RedactionFlags,
    RiskLabels,
    StatusCode,
    LatencyMs,
    PrevHash,
    Hash,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use AuditEvents as A;
        manager
            .create_table(
                Table::create()
                    .table(A::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(A::Id).uuid().not_null().primary_key())
                    .col(
                        ColumnDef::new(A::Seq)
                            .big_integer()
                            .not_null()
                            .check(Expr::col(A::Seq).gte(0)),
                    )
                    .col(ColumnDef::new(A::RequestId).string_len(255).not_null())
                    .col(
                        ColumnDef::new(A::Timestamp)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(A::CallerId).string_len(255).not_null())
                    .col(ColumnDef::new(A::ApiKeyId).uuid())
                    .col(ColumnDef::new(A::Method).string_len(255).not_null())
                    .col(ColumnDef::new(A::ToolName).string_len(255))
                    .col(ColumnDef::new(A::Decision).string_len(64).not_null())
                    .col(ColumnDef::new(A::Reason).text())
                    .col(ColumnDef::new(A::RawArgsHash).char_len(64).not_null())
                    .col(ColumnDef::new(A::SanitizedArgs).json_binary().not_null())
                    .col(ColumnDef::new(A::RedactionFlags).json_binary().not_null())
                    .col(ColumnDef::new(A::RiskLabels).json_binary().not_null())
                    .col(ColumnDef::new(A::StatusCode).integer())
                    .col(ColumnDef::new(A::LatencyMs).big_integer())
                    .col(ColumnDef::new(A::PrevHash).char_len(64).not_null())
                    .col(ColumnDef::new(A::Hash).char_len(64).not_null())
                    .to_owned(),
            )
            .await?;
        let indexes = [
            ("ux_audit_events_seq", A::Seq, true),
            ("ux_audit_events_request_id", A::RequestId, true),
            // Backstop against a chain-locking bug: no two rows may share a parent.
            ("ux_audit_events_prev_hash", A::PrevHash, true),
            ("ix_audit_events_timestamp", A::Timestamp, false),
            ("ix_audit_events_caller_id", A::CallerId, false),
            ("ix_audit_events_decision", A::Decision, false),
        ];
        for (name, column, unique) in indexes {
            let mut index = Index::create();
            index.name(name).table(A::Table).col(column).if_not_exists();
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(AuditEvents::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
