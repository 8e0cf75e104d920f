//! `api_keys`: bcrypt-hashed API keys, found by their public prefix.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    CallerId,
    KeyPrefix,
    KeyHash,
    Role,
    TrustLevel,
    Environment,
    IsActive,
    CreatedAt,
    LastUsedAt,
    RevokedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::CallerId).string_len(255).not_null())
                    .col(ColumnDef::new(ApiKeys::KeyPrefix).string_len(64).not_null())
                    .col(ColumnDef::new(ApiKeys::KeyHash).string_len(128).not_null())
                    .col(ColumnDef::new(ApiKeys::Role).string_len(64).not_null())
                    .col(
                        ColumnDef::new(ApiKeys::TrustLevel)
                            .small_integer()
                            .not_null()
                            .check(Expr::col(ApiKeys::TrustLevel).gte(0)),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::Environment)
                            .string_len(64)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::IsActive)
                            .boolean()
                            .not_null()
                            .default(true),
                    )
                    .col(
                        ColumnDef::new(ApiKeys::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .col(ColumnDef::new(ApiKeys::LastUsedAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(ApiKeys::RevokedAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(ApiKeys::ExpiresAt).timestamp_with_time_zone())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_caller_id")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::CallerId)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_key_prefix")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::KeyPrefix)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Dropping the table drops its indexes on both backends.
        manager
            .drop_table(Table::drop().table(ApiKeys::Table).if_exists().to_owned())
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
