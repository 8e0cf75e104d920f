//! [`KeyManager`]: create, verify, revoke, list.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set, SqlErr,
};
use serde::{Deserialize, Serialize};
use tracing::{debug, instrument, warn};
use uuid::Uuid;
use warden_cache::{Cache, Ttl};
use warden_entity::api_keys::{self, Column};

use crate::{KeyError, PlainApiKey};

/// A key that passed verification: who is calling, with what rights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedKey {
    /// The key's id.
    pub key_id: Uuid,
    /// The caller.
    pub caller_id: String,
    /// Its role.
    pub role: String,
    /// Its trust level.
    pub trust_level: i16,
    /// Its environment.
    pub environment: String,
    /// When it stops being valid.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key as listed: everything but the hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The key's id.
    pub id: Uuid,
    /// The caller.
    pub caller_id: String,
    /// The public part of the key.
    pub key_prefix: String,
    /// Role.
    pub role: String,
    /// Trust level.
    pub trust_level: i16,
    /// Environment.
    pub environment: String,
    /// False once revoked.
    pub is_active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last verified (to about a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Expires.
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<api_keys::Model> for KeyInfo {
    fn from(m: api_keys::Model) -> Self {
        Self {
            id: m.id,
            caller_id: m.caller_id,
            key_prefix: m.key_prefix,
            role: m.role,
            trust_level: m.trust_level,
            environment: m.environment,
            is_active: m.is_active,
            created_at: m.created_at,
            last_used_at: m.last_used_at,
            revoked_at: m.revoked_at,
            expires_at: m.expires_at,
        }
    }
}

/// A newly created key: its plaintext is here and nowhere else.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored key (no hash).
    pub info: KeyInfo,
    /// The plaintext; show it to its owner once.
    pub plaintext: PlainApiKey,
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    /// The caller (one key per caller).
    pub caller_id: &'a str,
    /// Role name.
    pub role: &'a str,
    /// Trust level.
    pub trust_level: i16,
    /// Environment (lowercase letters; part of the key's readable prefix).
    pub environment: &'a str,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize)]
struct CachedVerification {
    fingerprint: String,
    key: VerifiedKey,
}

/// last_used_at is written at most this often per key.
const LAST_USED_GRANULARITY: chrono::Duration = chrono::Duration::seconds(60);

/// Issues, verifies and revokes API keys.
///
/// Guarantees:
/// - Only the bcrypt hash of a key's secret is stored; the plaintext exists
///   once, in [`CreatedKey`].
/// - `verify` finds the row by the key's public prefix (one indexed fetch)
///   and does one bcrypt verify; a verification cache in the shared cache
///   (keyed by SHA-256 of the key, never the key) skips bcrypt for a short TTL.
///   Unknown prefixes cost a bcrypt too, so timing does not reveal them.
/// - `revoke` commits in the database, then writes a revocation marker that
///   every verification-cache hit checks in the same round trip: revocation
///   takes effect at once in every process sharing the cache.
/// - `last_used_at` is written at most once a minute per key.
#[derive(Debug, Clone)]
pub struct KeyManager {
    db: DatabaseConnection,
    cache: Cache,
    bcrypt_cost: u32,
    verify_ttl: Ttl,
    dummy_hash: String,
    db_timeout: Duration,
}

fn field(field: &'static str, value: &str, max: usize) -> Result<String, KeyError> {
    let invalid = |reason: &str| KeyError::InvalidField {
        field,
        reason: reason.to_owned(),
    };
    if value.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.chars().count() > max {
        return Err(invalid(&format!("longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("contains control characters"));
    }
    Ok(value.to_owned())
}

fn entry_key(prefix: &str) -> String {
    // The hash tag keeps the entry and the marker in one Redis Cluster slot.
    format!("apikey:{{{prefix}}}:verified")
}

fn marker_key(prefix: &str) -> String {
    format!("apikey:{{{prefix}}}:revoked")
}

impl KeyManager {
    /// A manager hashing with `bcrypt_cost` (4..=31; 12 in production) and
    /// caching verifications for `verify_ttl`.
    pub fn new(
        db: DatabaseConnection,
        cache: Cache,
        bcrypt_cost: u32,
        verify_ttl: Ttl,
    ) -> Result<Self, KeyError> {
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(KeyError::InvalidField {
                field: "bcrypt_cost",
                reason: format!("{bcrypt_cost} is outside 4..=31"),
            });
        }
        let dummy_hash =
            bcrypt::hash("warden-dummy-secret-for-timing", bcrypt_cost).map_err(|e| {
                KeyError::Hashing {
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            db,
            cache,
            bcrypt_cost,
            verify_ttl,
            dummy_hash,
            db_timeout: Duration::from_secs(5),
        })
    }

    /// The longest any one database step may take (default 5 s); past it the
    /// call fails with [`KeyError::Timeout`] instead of hanging.
    pub fn with_db_timeout(mut self, timeout: Duration) -> Self {
        self.db_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, KeyError>>,
    ) -> Result<T, KeyError> {
        tokio::time::timeout(self.db_timeout, work)
            .await
            .unwrap_or(Err(KeyError::Timeout {
                after: self.db_timeout,
            }))
    }

    /// Creates a key for a caller that has none; returns its plaintext once.
    #[instrument(skip_all, fields(caller_id = %new.caller_id, role = %new.role))]
    pub async fn create(&self, new: &NewKey<'_>) -> Result<CreatedKey, KeyError> {
        let caller_id = field("caller_id", new.caller_id, 255)?;
        let role = field("role", new.role, 64)?;
        if new.trust_level < 0 {
            return Err(KeyError::InvalidField {
                field: "trust_level",
                reason: "must not be negative".into(),
            });
        }
        if new.environment.is_empty()
            || new.environment.len() > 16
            || !new.environment.bytes().all(|b| b.is_ascii_lowercase())
        {
            return Err(KeyError::InvalidField {
                field: "environment",
                reason: "must be 1-16 lowercase letters".into(),
            });
        }
        let plaintext = PlainApiKey::generate(new.environment)?;
        let secret = plaintext.secret().to_owned();
        let cost = self.bcrypt_cost;
        let key_hash = tokio::task::spawn_blocking(move || bcrypt::hash(secret, cost))
            .await
            .map_err(|e| KeyError::Hashing {
                reason: e.to_string(),
            })?
            .map_err(|e| KeyError::Hashing {
                reason: e.to_string(),
            })?;
        let row = api_keys::ActiveModel {
            id: Set(Uuid::now_v7()),
            caller_id: Set(caller_id.clone()),
            key_prefix: Set(plaintext.prefix().to_owned()),
            key_hash: Set(key_hash),
            role: Set(role),
            trust_level: Set(new.trust_level),
            environment: Set(new.environment.to_owned()),
            is_active: Set(true),
            created_at: Set(Utc::now().trunc_subsecs(6)),
            last_used_at: Set(None),
            revoked_at: Set(None),
            expires_at: Set(new.expires_at.map(|t| t.trunc_subsecs(6))),
        };
        let inserted = tokio::time::timeout(self.db_timeout, row.insert(&self.db))
            .await
            .map_err(|_| KeyError::Timeout {
                after: self.db_timeout,
            })?;
        let stored = match inserted {
            Ok(stored) => stored,
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                return Err(KeyError::AlreadyExists { caller_id });
            }
            Err(e) => return Err(e.into()),
        };
        Ok(CreatedKey {
            info: KeyInfo::from(stored),
            plaintext,
        })
    }

    /// Verifies a presented key. Malformed, unknown and wrong keys are all
    /// [`KeyError::Invalid`]; revoked → `Revoked`; expired → `Expired`.
    #[instrument(skip_all)]
    pub async fn verify(&self, presented: &str) -> Result<VerifiedKey, KeyError> {
        let Some(key) = PlainApiKey::parse(presented.trim()) else {
            return Err(KeyError::Invalid);
        };
        let fingerprint = key.fingerprint();
        let (entry, marker) = (entry_key(key.prefix()), marker_key(key.prefix()));
        match self
            .cache
            .get_many_bytes(&[entry.as_str(), marker.as_str()])
            .await
        {
            Ok(values) => {
                if values.get(1).is_some_and(Option::is_some) {
                    return Err(KeyError::Revoked);
                }
                if let Some(Some(bytes)) = values.first()
                    && let Ok(cached) = serde_json::from_slice::<CachedVerification>(bytes)
                    && cached.fingerprint == fingerprint
                {
                    if cached.key.expires_at.is_some_and(|t| t <= Utc::now()) {
                        return Err(KeyError::Expired);
                    }
                    debug!(key_prefix = key.prefix(), "key verified from cache");
                    return Ok(cached.key);
                }
            }
            Err(e) => {
                warn!(error = %e, "verification cache unavailable; verifying against the database")
            }
        }
        let verified = self.verify_in_database(&key).await?;
        let ttl = match verified.expires_at {
            Some(t) => (t - Utc::now())
                .to_std()
                .ok()
                .and_then(|d| Ttl::new(d.min(self.verify_ttl.as_duration())).ok()),
            None => Some(self.verify_ttl),
        };
        if let Some(ttl) = ttl {
            let cached = CachedVerification {
                fingerprint,
                key: verified.clone(),
            };
            if let Err(e) = self.cache.set_json(&entry, &cached, ttl).await {
                debug!(error = %e, "verification not cached");
            }
        }
        Ok(verified)
    }

    async fn verify_in_database(&self, key: &PlainApiKey) -> Result<VerifiedKey, KeyError> {
        let row = self
            .bounded(async {
                Ok(api_keys::Entity::find()
                    .filter(Column::KeyPrefix.eq(key.prefix()))
                    .one(&self.db)
                    .await?)
            })
            .await?;
        let hash = row
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |r| r.key_hash.clone());
        let secret = key.secret().to_owned();
        let matches =
            tokio::task::spawn_blocking(move || bcrypt::verify(secret, &hash).unwrap_or(false))
                .await
                .map_err(|e| KeyError::Hashing {
                    reason: e.to_string(),
                })?;
        let row = match row {
            Some(row) if matches => row,
            _ => return Err(KeyError::Invalid),
        };
        if !row.is_active || row.revoked_at.is_some() {
            return Err(KeyError::Revoked);
        }
        let now = Utc::now();
        if row.expires_at.is_some_and(|t| t <= now) {
            return Err(KeyError::Expired);
        }
        // Coarse last-use: one conditional write per key per minute at most.
        let stale_before = now - LAST_USED_GRANULARITY;
        let touched = tokio::time::timeout(
            self.db_timeout,
            api_keys::Entity::update_many()
                .col_expr(Column::LastUsedAt, Expr::value(now.trunc_subsecs(6)))
                .filter(Column::Id.eq(row.id))
                .filter(
                    Condition::any()
                        .add(Column::LastUsedAt.is_null())
                        .add(Column::LastUsedAt.lt(stale_before)),
                )
                .exec(&self.db),
        )
        .await;
        match touched {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "last_used_at not updated"),
            Err(_) => warn!("last_used_at not updated: the database did not answer in time"),
        }
        Ok(VerifiedKey {
            key_id: row.id,
            caller_id: row.caller_id,
            role: row.role,
            trust_level: row.trust_level,
            environment: row.environment,
            expires_at: row.expires_at,
        })
    }

    /// Revokes the caller's key: at once, in every process sharing the cache.
    #[instrument(skip(self))]
    pub async fn revoke(&self, caller_id: &str) -> Result<KeyInfo, KeyError> {
        let row = api_keys::Entity::find()
            .filter(Column::CallerId.eq(caller_id))
            .one(&self.db)
            .await?
            .ok_or_else(|| KeyError::NotFound {
                caller_id: caller_id.to_owned(),
            })?;
        let now = Utc::now().trunc_subsecs(6);
        api_keys::Entity::update_many()
            .col_expr(Column::IsActive, Expr::value(false))
            .col_expr(Column::RevokedAt, Expr::value(now))
            .filter(Column::Id.eq(row.id))
            .filter(Column::RevokedAt.is_null())
            .exec(&self.db)
            .await?;
        // The marker outlives any verification cached before it was written.
        let marker_ttl = Ttl::new(self.verify_ttl.as_duration() * 2 + Duration::from_secs(1))
            .map_err(|e| KeyError::CacheNotCleared {
                reason: e.to_string(),
            })?;
        let cleared = async {
            self.cache
                .set_json(&marker_key(&row.key_prefix), &true, marker_ttl)
                .await?;
            self.cache.delete(&entry_key(&row.key_prefix)).await
        }
        .await;
        if let Err(e) = cleared {
            return Err(KeyError::CacheNotCleared {
                reason: e.to_string(),
            });
        }
        let updated = api_keys::Entity::find_by_id(row.id)
            .one(&self.db)
            .await?
            .unwrap_or(row);
        Ok(KeyInfo::from(updated))
    }

    /// Every key, newest first, without hashes.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(api_keys::Entity::find()
            .order_by_desc(Column::CreatedAt)
            .all(&self.db)
            .await?
            .into_iter()
            .map(KeyInfo::from)
            .collect())
    }

    /// The caller's key, if any (no hash).
    pub async fn find_by_caller(&self, caller_id: &str) -> Result<Option<KeyInfo>, KeyError> {
        Ok(api_keys::Entity::find()
            .filter(Column::CallerId.eq(caller_id))
            .one(&self.db)
            .await?
            .map(KeyInfo::from))
    }
}
