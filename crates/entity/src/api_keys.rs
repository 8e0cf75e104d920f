//! `api_keys`: who is calling. One row per issued key; only the bcrypt hash of the
//! secret is stored.

use sea_orm::entity::prelude::*;

/// One API key as stored. `key_hash` is a bcrypt hash, never plaintext.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    /// Row id (UUID v7, assigned by the application).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    /// The caller this key belongs to; one key per caller (unique).
    #[sea_orm(unique)]
    pub caller_id: String,
    /// Public lookup part of the key (unique); finds the row in one indexed fetch.
    #[sea_orm(unique)]
    pub key_prefix: String,
    /// bcrypt hash of the key's secret part.
    pub key_hash: String,
    /// Role name from the policy file.
    pub role: String,
    /// Trust level (integer enum defined by the policy file).
    pub trust_level: i16,
    /// Deployment environment the key is valid for (e.g. `development`).
    pub environment: String,
    /// False once the key is disabled; defaults to true.
    pub is_active: bool,
    /// Set by the database on insert.
    pub created_at: DateTimeUtc,
    /// Last successful verification (coarse: updated at most about once a minute).
    pub last_used_at: Option<DateTimeUtc>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<DateTimeUtc>,
    /// When the key stops being valid, if ever.
    pub expires_at: Option<DateTimeUtc>,
}

/// `api_keys` has no relations: audit rows keep `api_key_id` without a foreign key
/// so that the audit trail outlives deleted keys.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
