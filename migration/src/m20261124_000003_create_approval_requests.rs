//! `approval_requests`: human approvals, found by the SHA-256 of their token.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum ApprovalRequests {
    Table,
    Id,
    TokenHash,
    RequestId,
    CallerId,
    ToolName,
    ToolCall,
    RawArgsHash,
    RiskLabels,
    Status,
    CreatedAt,
    ExpiresAt,
    DecidedAt,
    ApproverId,
    Note,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ApprovalRequests as R;
        manager
            .create_table(
                Table::create()
                    .table(R::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(R::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(R::TokenHash).char_len(64).not_null())
                    .col(ColumnDef::new(R::RequestId).string_len(255).not_null())
                    .col(ColumnDef::new(R::CallerId).string_len(255).not_null())
                    .col(ColumnDef::new(R::ToolName).string_len(255).not_null())
                    .col(ColumnDef::new(R::ToolCall).json_binary().not_null())
                    .col(ColumnDef::new(R::RawArgsHash).char_len(64).not_null())
                    .col(ColumnDef::new(R::RiskLabels).json_binary().not_null())
                    .col(
                        ColumnDef::new(R::Status)
                            .string_len(16)
                            .not_null()
                            .default("PENDING")
                            .check(
                                Expr::col(R::Status)
                                    .is_in(["PENDING", "APPROVED", "DENIED", "EXPIRED"]),
                            ),
                    )
                    .col(
                        ColumnDef::new(R::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .col(
                        ColumnDef::new(R::ExpiresAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(R::DecidedAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(R::ApproverId).string_len(255))
                    .col(ColumnDef::new(R::Note).text())
                    .to_owned(),
            )
            .await?;
        let indexes: [(&str, &[R], bool); 4] = [
            ("ux_approval_requests_token_hash", &[R::TokenHash], true),
            ("ix_approval_requests_status", &[R::Status], false),
            ("ix_approval_requests_request_id", &[R::RequestId], false),
            // `expire_stale` scans PENDING rows by expiry.
            (
                "ix_approval_requests_status_expires_at",
                &[R::Status, R::ExpiresAt],
                false,
            ),
        ];
        for (name, columns, unique) in indexes {
            let mut index = Index::create();
            index.name(name).table(R::Table).if_not_exists();
            for column in columns {
                index.col(*column);
            }
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
                    .table(ApprovalRequests::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
