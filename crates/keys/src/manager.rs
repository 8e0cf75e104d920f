//! [`KeyManager`]: create, verify, revoke, list.

use std::sync::Arc;
use std::time::{Duration, Instant};

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

use crate::{CacheMacKey, KeyError, PlainApiKey};

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

impl KeyInfo {
    /// Whether the key authenticates at `now`: active, not revoked, not
    /// expired.
    pub fn is_usable_at(&self, now: DateTime<Utc>) -> bool {
        self.is_active && self.revoked_at.is_none() && self.expires_at.is_none_or(|t| t > now)
    }
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
    /// Who creates it (an operator's name, `seed`, …): recorded in the
    /// `key.create` audit event.
    pub actor: &'a str,
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
    /// The entry is refused after this instant (row read + TTL), whatever
    /// the cache's own expiry says: a sealed entry saved and written back
    /// later cannot outlive its TTL.
    not_after: DateTime<Utc>,
}

/// The bcrypt costs a manager accepts.
pub const BCRYPT_COSTS: std::ops::RangeInclusive<u32> = 4..=14;

/// The longest a queued bcrypt waits for a slot before `Busy` (a backstop;
/// the queue bound refuses first under a flood).
const BCRYPT_WAIT: Duration = Duration::from_secs(10);

/// A bound on bcrypt work: slots that may run, and how many may queue.
#[derive(Debug, Clone)]
struct BcryptGate {
    slots: Arc<tokio::sync::Semaphore>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
    max_waiting: usize,
}

/// Counts a waiter for as long as it waits.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl BcryptGate {
    fn new(running: usize, waiting: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(running.max(1))),
            waiting: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_waiting: waiting,
        }
    }

    /// A running slot: at once when one is free; queued when the queue has
    /// room; `Busy` at once when it has none.
    async fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, KeyError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.max_waiting {
            return Err(KeyError::Busy);
        }
        tokio::time::timeout(BCRYPT_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| KeyError::Busy)?
            .map_err(|_| KeyError::Busy)
    }
}

/// last_used_at is written at most this often per key.
const LAST_USED_GRANULARITY: chrono::Duration = chrono::Duration::seconds(60);

/// Issues, verifies and revokes API keys.
///
/// Guarantees:
/// - Only the bcrypt hash of a key's secret is stored; the plaintext exists
///   once, in [`CreatedKey`].
/// - `verify` finds the row by the key's public prefix (one indexed fetch)
///   and does one bcrypt verify; a verification cache skips bcrypt for a
///   short TTL. Unknown prefixes cost a bcrypt too, so timing does not
///   reveal them.
/// - **No cache write alone authenticates.** Every cached verification is
///   sealed with an HMAC under the [`CacheMacKey`], bound to its cache key
///   and to a keyed fingerprint of the presented key; an entry that does not
///   open is a miss. Without a configured key each manager uses a random one
///   (entries are then trusted only by the manager that wrote them).
/// - **Revocation reaches every process.** `revoke` commits in the database,
///   then writes a revocation marker and deletes the entry. With a shared
///   cache, every hit reads the marker in the same round trip. With an
///   in-process cache (which another process cannot mark), every hit is
///   confirmed by a primary-key read of the key's row, which also supplies
///   the role and trust level: the cache only ever saves the bcrypt.
/// - **A late cache write cannot resurrect a revoked key.** The entry is
///   written by one atomic "set unless the marker exists" with only the
///   part of its TTL that is left since the row was read, and the marker
///   outlives that TTL: a write delayed past the marker finds no time left.
/// - bcrypt work is bounded (see [`KeyManager::with_bcrypt_limits`]): a
///   flood gets `Busy` at once instead of an unbounded queue.
/// - `last_used_at` is written at most once a minute per key.
#[derive(Debug, Clone)]
pub struct KeyManager {
    db: DatabaseConnection,
    cache: Cache,
    bcrypt_cost: u32,
    verify_ttl: Ttl,
    /// The hash an unknown prefix is checked against (so it costs a bcrypt
    /// too): made once, on the blocking pool, at first need.
    dummy_hash: Arc<tokio::sync::OnceCell<String>>,
    /// Bounds bcrypt work for known prefixes (verify) and key creation.
    bcrypt_gate: BcryptGate,
    /// A separate, smaller bound for the dummy bcrypt of unknown prefixes:
    /// a flood of invented keys cannot starve real ones.
    dummy_gate: BcryptGate,
    db_timeout: Duration,
    mac_key: CacheMacKey,
    write_delay: Duration,
}

fn field(field: &'static str, value: &str, max: usize) -> Result<String, KeyError> {
    warden_common::identifier(value, max)
        .map(str::to_owned)
        .map_err(|e| KeyError::InvalidField {
            field,
            reason: e.to_string(),
        })
}

fn entry_key(prefix: &str) -> String {
    // The hash tag keeps the entry and the marker in one Redis Cluster slot.
    format!("apikey:{{{prefix}}}:verified")
}

fn marker_key(prefix: &str) -> String {
    format!("apikey:{{{prefix}}}:revoked")
}

impl KeyManager {
    /// A manager hashing with `bcrypt_cost` (4..=14; 10..=14 recommended, 12
    /// by default) and caching verifications for `verify_ttl`. Cheap: no
    /// hashing happens until a key is created or verified.
    pub fn new(
        db: DatabaseConnection,
        cache: Cache,
        bcrypt_cost: u32,
        verify_ttl: Ttl,
    ) -> Result<Self, KeyError> {
        if !BCRYPT_COSTS.contains(&bcrypt_cost) {
            return Err(KeyError::InvalidField {
                field: "bcrypt_cost",
                reason: format!(
                    "{bcrypt_cost} is outside {}..={} (each step doubles the work of every verification)",
                    BCRYPT_COSTS.start(),
                    BCRYPT_COSTS.end()
                ),
            });
        }
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Ok(Self {
            db,
            cache,
            bcrypt_cost,
            verify_ttl,
            dummy_hash: Arc::new(tokio::sync::OnceCell::new()),
            bcrypt_gate: BcryptGate::new(cores * 2, cores * 64),
            dummy_gate: BcryptGate::new(cores.div_ceil(2), cores * 4),
            db_timeout: Duration::from_secs(5),
            mac_key: CacheMacKey::generate()?,
            write_delay: Duration::ZERO,
        })
    }

    /// Seals cached verifications with `key` (`CACHE_MAC_KEY`): every
    /// process sharing the cache must use the same key to share entries.
    pub fn with_cache_mac_key(mut self, key: CacheMacKey) -> Self {
        self.mac_key = key;
        self
    }

    /// Fault injection for tests: delays every verification-cache write by
    /// `delay`, as a saturated blocking pool would.
    #[doc(hidden)]
    pub fn with_injected_cache_write_delay(mut self, delay: Duration) -> Self {
        self.write_delay = delay;
        self
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
        warden_common::within(self.db_timeout, work).await
    }

    /// Bounds bcrypt work: at most `running` at once for known keys (and at
    /// most `waiting` queued behind them; beyond that, [`KeyError::Busy`] at
    /// once). Unknown prefixes get their own, smaller bound, so a flood of
    /// invented keys never delays a real one. Defaults: 2 × cores running,
    /// 64 × cores waiting (unknown prefixes: cores / 2 and 4 × cores).
    pub fn with_bcrypt_limits(mut self, running: usize, waiting: usize) -> Self {
        self.bcrypt_gate = BcryptGate::new(running, waiting);
        self.dummy_gate = BcryptGate::new(running.div_ceil(4), waiting.div_ceil(16));
        self
    }

    /// Runs `work` (a bcrypt) on the blocking pool through `gate`.
    async fn bcrypt<T: Send + 'static>(
        &self,
        gate: &BcryptGate,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, KeyError> {
        let permit = gate.enter().await?;
        let result = tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| KeyError::Hashing {
            reason: e.to_string(),
        })?;
        Ok(result)
    }

    /// The dummy hash for unknown prefixes, made once off the async threads.
    async fn dummy_hash(&self) -> Result<String, KeyError> {
        let cost = self.bcrypt_cost;
        self.dummy_hash
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || {
                    bcrypt::hash("warden-dummy-secret-for-timing", cost)
                })
                .await
                .map_err(|e| KeyError::Hashing {
                    reason: e.to_string(),
                })?
                .map_err(|e| KeyError::Hashing {
                    reason: e.to_string(),
                })
            })
            .await
            .cloned()
    }

    /// Creates a key for a caller that has none; returns its plaintext once.
    #[instrument(name = "keys.create", skip_all, fields(caller_id = %new.caller_id, role = %new.role, db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "api_keys", db.operation.name = "INSERT"))]
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
        let key_hash = self
            .bcrypt(&self.bcrypt_gate, move || bcrypt::hash(secret, cost))
            .await?
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
        let actor = field("actor", new.actor, 255)?;
        // The key and its `key.create` event commit together, or neither.
        let inserted = tokio::time::timeout(self.db_timeout, async {
            let txn = warden_audit::begin_write(&self.db).await?;
            let stored = row.insert(&txn).await?;
            let event = key_event(
                &stored,
                &actor,
                "key.create",
                serde_json::json!({"after": {
                    "key_id": stored.id,
                    "role": stored.role,
                    "trust_level": stored.trust_level,
                    "environment": stored.environment,
                    "expires_at": stored.expires_at,
                }}),
            )
            .map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
            warden_audit::record_in(&txn, &[event])
                .await
                .map_err(|e| sea_orm::DbErr::Custom(format!("audit trail: {e}")))?;
            txn.commit().await?;
            Ok::<_, sea_orm::DbErr>(stored)
        })
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
    #[instrument(name = "keys.verify", skip_all, fields(warden.keys.path = tracing::field::Empty, db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "api_keys"))]
    pub async fn verify(&self, presented: &str) -> Result<VerifiedKey, KeyError> {
        let started = Instant::now();
        let mut path = "database";
        let result = self.verify_once(presented, &mut path).await;
        tracing::Span::current().record("warden.keys.path", path);
        crate::metrics::verified(path, started, &result);
        result
    }

    async fn verify_once(
        &self,
        presented: &str,
        path: &mut &'static str,
    ) -> Result<VerifiedKey, KeyError> {
        let Some(key) = PlainApiKey::parse(presented.trim()) else {
            *path = "malformed";
            return Err(KeyError::Invalid);
        };
        let fingerprint = self.mac_key.fingerprint(key.expose());
        let (entry, marker) = (entry_key(key.prefix()), marker_key(key.prefix()));
        match self.cache.get_bytes_and_guard(&entry, &marker).await {
            // A revocation marker sends the key to the database: only a
            // caller holding the right secret learns that it was revoked
            // (anyone else gets `Invalid`, as before the revoke).
            Ok((_, true)) => {
                debug!("revocation marker present; verifying against the database");
            }
            Ok((sealed, false)) => {
                if let Some(cached) = sealed
                    .as_deref()
                    .and_then(|sealed| self.open_entry(&entry, sealed))
                    .filter(|cached| cached.fingerprint == fingerprint)
                    .filter(|cached| Utc::now() < cached.not_after)
                {
                    *path = "cache";
                    return self.cache_hit(cached.key).await;
                }
            }
            Err(e) => {
                warn!(error = %e, "verification cache unavailable; verifying against the database")
            }
        }
        let read_at = Instant::now();
        let verified = self.verify_in_database(&key).await?;
        self.remember(&entry, &marker, fingerprint, &verified, read_at)
            .await;
        Ok(verified)
    }

    /// The name a sealed entry is bound to: the cache key with its
    /// namespace, so an entry cannot be moved between namespaces either.
    fn sealed_name(&self, entry: &str) -> String {
        self.cache.prefix().key(entry)
    }

    fn open_entry(&self, entry: &str, sealed: &[u8]) -> Option<CachedVerification> {
        match self.mac_key.open(&self.sealed_name(entry), sealed) {
            Some(payload) => serde_json::from_slice(payload).ok(),
            None => {
                warn!(
                    key = entry,
                    "verification cache entry is not sealed by this server's key; ignoring it"
                );
                None
            }
        }
    }

    /// A sealed entry matched. From a shared cache it stands (the marker was
    /// read with it); from an in-process cache the key's row confirms it.
    async fn cache_hit(&self, cached: VerifiedKey) -> Result<VerifiedKey, KeyError> {
        if !self.cache.is_shared() {
            let row = self
                .bounded(async {
                    Ok(api_keys::Entity::find_by_id(cached.key_id)
                        .one(&self.db)
                        .await?)
                })
                .await?
                .ok_or(KeyError::Invalid)?;
            debug!(key_prefix = %row.key_prefix, "key verified from cache, state confirmed by the database");
            return usable(row, Utc::now());
        }
        if cached.expires_at.is_some_and(|t| t <= Utc::now()) {
            return Err(KeyError::Expired);
        }
        debug!("key verified from cache");
        Ok(cached)
    }

    /// Caches a verification for what is left of its TTL since `read_at`
    /// (when the row was read), unless the key's revocation marker exists.
    async fn remember(
        &self,
        entry: &str,
        marker: &str,
        fingerprint: String,
        verified: &VerifiedKey,
        read_at: Instant,
    ) {
        if !self.write_delay.is_zero() {
            tokio::time::sleep(self.write_delay).await;
        }
        let mut lifetime = self.verify_ttl.as_duration();
        if let Some(t) = verified.expires_at {
            lifetime = lifetime.min((t - Utc::now()).to_std().unwrap_or_default());
        }
        let Some(ttl) = lifetime
            .checked_sub(read_at.elapsed())
            .and_then(|left| Ttl::new(left).ok())
        else {
            debug!("verification not cached: its time ran out before the write");
            return;
        };
        let cached = CachedVerification {
            fingerprint,
            key: verified.clone(),
            not_after: Utc::now()
                + chrono::Duration::from_std(ttl.as_duration()).unwrap_or_default(),
        };
        let payload = match serde_json::to_vec(&cached) {
            Ok(payload) => payload,
            Err(e) => {
                debug!(error = %e, "verification not cached");
                return;
            }
        };
        let sealed = self.mac_key.seal(&self.sealed_name(entry), &payload);
        match self
            .cache
            .set_bytes_unless(entry, marker, sealed, ttl)
            .await
        {
            Ok(true) => {}
            Ok(false) => debug!("verification not cached: the key was revoked meanwhile"),
            Err(e) => debug!(error = %e, "verification not cached"),
        }
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
        let (hash, gate) = match row.as_ref() {
            Some(r) => (r.key_hash.clone(), &self.bcrypt_gate),
            None => (self.dummy_hash().await?, &self.dummy_gate),
        };
        let secret = key.secret().to_owned();
        let matches = self
            .bcrypt(gate, move || bcrypt::verify(secret, &hash).unwrap_or(false))
            .await?;
        let row = match row {
            Some(row) if matches => row,
            _ => return Err(KeyError::Invalid),
        };
        let now = Utc::now();
        let verified = usable(row, now)?;
        // Coarse last-use: one conditional write per key per minute at most.
        let stale_before = now - LAST_USED_GRANULARITY;
        let touched = tokio::time::timeout(
            self.db_timeout,
            api_keys::Entity::update_many()
                .col_expr(Column::LastUsedAt, Expr::value(now.trunc_subsecs(6)))
                .filter(Column::Id.eq(verified.key_id))
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
        Ok(verified)
    }

    /// Revokes the caller's key: at once, in every process sharing the cache.
    #[instrument(name = "keys.revoke", skip(self), fields(db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "api_keys", db.operation.name = "UPDATE"))]
    ///
    /// `actor` (who revokes) is recorded in the `key.revoke` audit event,
    /// written in the same transaction as the revocation. Revoking a key
    /// that is already revoked changes nothing and records nothing.
    pub async fn revoke(&self, caller_id: &str, actor: &str) -> Result<KeyInfo, KeyError> {
        let actor = field("actor", actor, 255)?;
        let row = self
            .bounded(async {
                Ok(api_keys::Entity::find()
                    .filter(Column::CallerId.eq(caller_id))
                    .one(&self.db)
                    .await?)
            })
            .await?
            .ok_or_else(|| KeyError::NotFound {
                caller_id: caller_id.to_owned(),
            })?;
        let now = Utc::now().trunc_subsecs(6);
        self.bounded(async {
            let txn = warden_audit::begin_write(&self.db).await?;
            let changed = api_keys::Entity::update_many()
                .col_expr(Column::IsActive, Expr::value(false))
                .col_expr(Column::RevokedAt, Expr::value(now))
                .filter(Column::Id.eq(row.id))
                .filter(Column::RevokedAt.is_null())
                .exec(&txn)
                .await?
                .rows_affected;
            if changed == 1 {
                let event = key_event(
                    &row,
                    &actor,
                    "key.revoke",
                    serde_json::json!({
                        "before": {"is_active": row.is_active},
                        "after": {"is_active": false, "revoked_at": now},
                    }),
                )?;
                warden_audit::record_in(&txn, &[event]).await.map_err(|e| {
                    KeyError::AuditTrail {
                        reason: e.to_string(),
                    }
                })?;
            }
            txn.commit().await?;
            Ok(())
        })
        .await?;
        // The marker outlives any verification cached before it was written.
        let marker_ttl = Ttl::new(self.verify_ttl.as_duration() * 2 + Duration::from_secs(1))
            .map_err(|e| KeyError::CacheNotCleared {
                reason: e.to_string(),
            })?;
        // Marker and entry removal reach a replica before revoke returns: a
        // failover right after cannot bring the verification back.
        let cleared = self
            .cache
            .set_json_and_delete_replicated(
                &marker_key(&row.key_prefix),
                &true,
                marker_ttl,
                &entry_key(&row.key_prefix),
            )
            .await;
        if let Err(e) = cleared {
            return Err(KeyError::CacheNotCleared {
                reason: e.to_string(),
            });
        }
        if !self.cache.is_shared() {
            warn!(
                caller_id,
                "revocation marker written to this process's own cache only: processes \
                 sharing a Redis cache keep cached verifications until they expire \
                 (KEY_VERIFY_CACHE_TTL_SECONDS); revoke with REDIS_URL set to reach them at once"
            );
        }
        let updated = self
            .bounded(async { Ok(api_keys::Entity::find_by_id(row.id).one(&self.db).await?) })
            .await?
            .unwrap_or(row);
        Ok(KeyInfo::from(updated))
    }

    /// Every key, newest first, without hashes.
    pub async fn list(&self) -> Result<Vec<KeyInfo>, KeyError> {
        Ok(self
            .bounded(async {
                Ok(api_keys::Entity::find()
                    .order_by_desc(Column::CreatedAt)
                    .all(&self.db)
                    .await?)
            })
            .await?
            .into_iter()
            .map(KeyInfo::from)
            .collect())
    }

    /// The caller's key, if any (no hash).
    pub async fn find_by_caller(&self, caller_id: &str) -> Result<Option<KeyInfo>, KeyError> {
        Ok(self
            .bounded(async {
                Ok(api_keys::Entity::find()
                    .filter(Column::CallerId.eq(caller_id))
                    .one(&self.db)
                    .await?)
            })
            .await?
            .map(KeyInfo::from))
    }
}

/// The verification a row grants at `now`: refused when revoked,
/// deactivated or expired.
fn usable(row: api_keys::Model, now: DateTime<Utc>) -> Result<VerifiedKey, KeyError> {
    if !row.is_active || row.revoked_at.is_some() {
        return Err(KeyError::Revoked);
    }
    if row.expires_at.is_some_and(|t| t <= now) {
        return Err(KeyError::Expired);
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

/// The admin event for `action` on the key in `row`, by `actor`. Never holds
/// the key, its hash or its prefix.
fn key_event(
    row: &api_keys::Model,
    actor: &str,
    action: &str,
    summary: serde_json::Value,
) -> Result<warden_audit::AuditEvent, KeyError> {
    warden_audit::AuditEvent::admin(
        &warden_audit::AdminAction {
            actor,
            action,
            resource_type: "api_key",
            resource_id: &row.caller_id,
            request_id: None,
            args_hash: None,
            note: None,
            summary: &summary,
        },
        &warden_audit::Redactor::default(),
    )
    .map_err(|e| KeyError::AuditTrail {
        reason: e.to_string(),
    })
}
