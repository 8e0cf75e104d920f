use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug_span, warn};

use crate::memory::InProcessStore;
use crate::rate_limit::{Gcra, RateDecision};
use crate::{CacheError, KeyPrefix, RedisPool, Ttl, redis_store};

/// The largest value the cache accepts (encoded), 4 MiB.
pub const MAX_VALUE_BYTES: usize = 4 * 1024 * 1024;
/// The in-process cache's default byte budget, 256 MiB.
pub const DEFAULT_IN_PROCESS_BYTES: usize = 256 * 1024 * 1024;
/// The longest key accepted (without the prefix), 1024 bytes.
pub const MAX_KEY_BYTES: usize = 1024;

#[derive(Clone)]
enum Backend {
    Redis(RedisPool),
    InProcess(Arc<InProcessStore>),
}

/// Warden's cache: Redis shared by every gateway process, or the in-process
/// backend of the embedded default, behind one contract.
///
/// Guarantees (both backends, checked by the same contract tests):
/// - Every write takes a [`Ttl`]; nothing is ever stored without an expiry.
/// - Every key is namespaced by the cache's [`KeyPrefix`].
/// - A value that is corrupt, of another type, or of another Redis type is a
///   miss (`Ok(None)`) with a warning — never a panic or an error.
/// - Counters get their expiry atomically with their creation; rate-limit
///   decisions are atomic and exact under concurrency.
///
/// Omitting the TTL does not compile:
///
/// ```compile_fail
/// # async fn f(cache: warden_cache::Cache) {
/// cache.set_json("session", &42).await; // no Ttl: error[E0061]
/// # }
/// ```
///
/// and there is no way to make a zero TTL to pass instead:
///
/// ```compile_fail
/// # async fn f(cache: warden_cache::Cache) {
/// cache.set_json("session", &42, warden_cache::Ttl::ZERO).await;
/// # }
/// ```
#[derive(Clone)]
pub struct Cache {
    backend: Backend,
    prefix: KeyPrefix,
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("backend", &self.backend_name())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Cache {
    /// A cache on Redis, shared by every process using the same server and prefix.
    pub fn redis(pool: RedisPool, prefix: KeyPrefix) -> Self {
        Self {
            backend: Backend::Redis(pool),
            prefix,
        }
    }

    /// A cache in this process's memory holding at most about `max_entries`
    /// live entries and [`DEFAULT_IN_PROCESS_BYTES`] (the soonest to expire
    /// are evicted first when full).
    pub fn in_process(prefix: KeyPrefix, max_entries: usize) -> Self {
        Self::in_process_bounded(
            prefix,
            max_entries,
            DEFAULT_IN_PROCESS_BYTES,
            MAX_VALUE_BYTES,
        )
    }

    /// A cache in this process's memory bounded by entries, by total bytes
    /// (keys, values and bookkeeping) and by bytes per value: a larger value
    /// is refused with [`CacheError::ValueTooLarge`]; when full, the entries
    /// closest to expiry (expired ones first) are evicted, each in O(log n).
    pub fn in_process_bounded(
        prefix: KeyPrefix,
        max_entries: usize,
        max_bytes: usize,
        max_value_bytes: usize,
    ) -> Self {
        Self {
            backend: Backend::InProcess(Arc::new(InProcessStore::new(
                max_entries,
                max_bytes,
                max_value_bytes.min(MAX_VALUE_BYTES),
            ))),
            prefix,
        }
    }

    /// `"redis"` or `"in-process"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Redis(_) => "redis",
            Backend::InProcess(_) => "in-process",
        }
    }

    /// True when every process using the same server and prefix sees the
    /// same data (Redis); false for the in-process backend.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
    }

    /// The namespace of this cache's keys.
    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The Redis pool, when this cache is on Redis (for scripts and pub/sub).
    pub fn redis_pool(&self) -> Option<&RedisPool> {
        match &self.backend {
            Backend::Redis(pool) => Some(pool),
            Backend::InProcess(_) => None,
        }
    }

    /// A round trip to the backend (`PING` on Redis; always fine in-process).
    pub async fn ping(&self) -> Result<(), CacheError> {
        match &self.backend {
            Backend::Redis(pool) => pool.ping().await,
            Backend::InProcess(_) => Ok(()),
        }
    }

    fn full_key(&self, key: &str) -> Result<String, CacheError> {
        if key.is_empty() {
            return Err(CacheError::InvalidKey {
                reason: "must not be empty".into(),
            });
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(CacheError::InvalidKey {
                reason: format!("{} bytes is longer than {MAX_KEY_BYTES}", key.len()),
            });
        }
        Ok(self.prefix.key(key))
    }

    fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CacheError> {
        let bytes = serde_json::to_vec(value).map_err(|e| CacheError::Encode {
            reason: e.to_string(),
        })?;
        check_size(&bytes)?;
        Ok(bytes)
    }

    fn decode<T: DeserializeOwned>(key: &str, bytes: Option<Vec<u8>>) -> Option<T> {
        let bytes = bytes?;
        match serde_json::from_slice(&bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                // The value itself is never logged: it may hold secrets.
                warn!(key, error = %e, bytes = bytes.len(), "cache value is not the expected JSON; treating it as a miss");
                None
            }
        }
    }

    /// Stores `value` as JSON under `key` for `ttl`, replacing any value.
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Ttl,
    ) -> Result<(), CacheError> {
        let bytes = Self::encode(value)?;
        self.set_bytes(key, bytes, ttl).await
    }

    /// Stores raw bytes under `key` for `ttl`, replacing any value.
    pub async fn set_bytes(&self, key: &str, value: Vec<u8>, ttl: Ttl) -> Result<(), CacheError> {
        check_size(&value)?;
        let key = self.full_key(key)?;
        let span = debug_span!("cache.set", backend = self.backend_name(), key = %key, ttl_ms = ttl.as_millis());
        async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::set(pool, &key, &value, ttl).await,
                Backend::InProcess(store) => {
                    store.check_value(&key, &value)?;
                    store.set(&key, value, ttl);
                    Ok(())
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Stores `value` only if `key` holds nothing; returns whether it did.
    pub async fn set_json_if_absent<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Ttl,
    ) -> Result<bool, CacheError> {
        let bytes = Self::encode(value)?;
        let key = self.full_key(key)?;
        let span = debug_span!("cache.set_if_absent", backend = self.backend_name(), key = %key);
        async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::set_if_absent(pool, &key, &bytes, ttl).await,
                Backend::InProcess(store) => {
                    store.check_value(&key, &bytes)?;
                    Ok(store.set_if_absent(&key, bytes, ttl))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Stores raw bytes under `key` for `ttl` unless `guard` holds a value,
    /// atomically (one script on Redis: keep both keys in one cluster slot
    /// with a hash tag); returns whether it stored. A guard written before
    /// this call is always seen.
    pub async fn set_bytes_unless(
        &self,
        key: &str,
        guard: &str,
        value: Vec<u8>,
        ttl: Ttl,
    ) -> Result<bool, CacheError> {
        check_size(&value)?;
        let (key, guard) = (self.full_key(key)?, self.full_key(guard)?);
        let span = debug_span!("cache.set_unless", backend = self.backend_name(), key = %key, guard = %guard);
        async {
            match &self.backend {
                Backend::Redis(pool) => {
                    redis_store::set_unless(pool, &key, &guard, &value, ttl).await
                }
                Backend::InProcess(store) => {
                    store.check_value(&key, &value)?;
                    Ok(store.set_unless(&key, &guard, value, ttl))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Replaces the value under `key` only if one is there, keeping its
    /// remaining TTL (never extending it); returns whether it replaced.
    pub async fn replace_json_keep_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<bool, CacheError> {
        let bytes = Self::encode(value)?;
        let key = self.full_key(key)?;
        let span = debug_span!("cache.replace_keep_ttl", backend = self.backend_name(), key = %key);
        async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::replace_keep_ttl(pool, &key, &bytes).await,
                Backend::InProcess(store) => {
                    store.check_value(&key, &bytes)?;
                    Ok(store.replace_keep_ttl(&key, bytes))
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The JSON value under `key`, or `None` when missing, expired, or not a
    /// `T` (a warning is logged).
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let bytes = self.get_bytes(key).await?;
        Ok(Self::decode(key, bytes))
    }

    /// The raw bytes under `key`, or `None`.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let key = self.full_key(key)?;
        let span = debug_span!("cache.get", backend = self.backend_name(), key = %key, hit = tracing::field::Empty);
        let found = async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::get(pool, &key, false).await,
                Backend::InProcess(store) => Ok(store.get(&key)),
            }
        }
        .instrument(span.clone())
        .await?;
        self.count_lookup(&span, found.is_some());
        Ok(found)
    }

    fn count_lookup(&self, span: &tracing::Span, hit: bool) {
        span.record("hit", hit);
        crate::metrics::lookup(self.backend_name(), hit);
    }

    /// The raw values under several keys in one round trip (`MGET`), in
    /// order. On Redis Cluster the keys must share a hash tag.
    pub async fn get_many_bytes(&self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, CacheError> {
        let full = keys
            .iter()
            .map(|k| self.full_key(k))
            .collect::<Result<Vec<_>, _>>()?;
        let span = debug_span!(
            "cache.get_many",
            backend = self.backend_name(),
            keys = full.len()
        );
        let found: Vec<Option<Vec<u8>>> = async {
            match &self.backend {
                Backend::Redis(pool) => {
                    let mut cmd = deadpool_redis::redis::cmd("MGET");
                    for key in &full {
                        cmd.arg(key);
                    }
                    pool.query(&cmd).await
                }
                Backend::InProcess(store) => Ok(full.iter().map(|k| store.get(k)).collect()),
            }
        }
        .instrument(span)
        .await?;
        // Not counted in `warden.cache.lookups`: a multi-key read is a
        // caller's composite (the key manager reads an entry with its
        // revocation marker, nearly always absent) that reports its own
        // outcome.
        Ok(found)
    }

    /// The raw value under `key` and whether `guard` exists, in one round
    /// trip (`MGET`; on Redis Cluster the two keys must share a hash tag):
    /// the read side of [`Cache::set_bytes_unless`]. Counted as one lookup
    /// of `key` (the guard is nearly always absent, and not a lookup).
    pub async fn get_bytes_and_guard(
        &self,
        key: &str,
        guard: &str,
    ) -> Result<(Option<Vec<u8>>, bool), CacheError> {
        let mut values = self.get_many_bytes(&[key, guard]).await?;
        let guarded = values.pop().flatten().is_some();
        let value = values.pop().flatten();
        crate::metrics::lookup(self.backend_name(), value.is_some());
        Ok((value, guarded))
    }

    /// Gets and deletes the value under `key` atomically: of concurrent takers,
    /// at most one gets it.
    pub async fn take_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let full = self.full_key(key)?;
        let span = debug_span!("cache.take", backend = self.backend_name(), key = %full, hit = tracing::field::Empty);
        let bytes = async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::get(pool, &full, true).await,
                Backend::InProcess(store) => Ok(store.take(&full)),
            }
        }
        .instrument(span.clone())
        .await?;
        self.count_lookup(&span, bytes.is_some());
        Ok(Self::decode(key, bytes))
    }

    /// Stores `value` as JSON under `set_key` for `ttl` and deletes
    /// `delete_key` (two keys of one hash tag, so one slot), then waits until
    /// a replica has both: a failover right after cannot undo them. On Redis
    /// with replicas and none acknowledging in time (the command timeout):
    /// [`CacheError::Unavailable`], for the caller to retry; on a server
    /// without replicas, or the in-process cache, the write itself suffices.
    pub async fn set_json_and_delete_replicated<T: Serialize + ?Sized>(
        &self,
        set_key: &str,
        value: &T,
        ttl: Ttl,
        delete_key: &str,
    ) -> Result<(), CacheError> {
        let bytes = Self::encode(value)?;
        check_size(&bytes)?;
        let (set_key, delete_key) = (self.full_key(set_key)?, self.full_key(delete_key)?);
        let span = debug_span!("cache.set_and_delete_replicated", backend = self.backend_name(), key = %set_key);
        async {
            match &self.backend {
                Backend::Redis(pool) => {
                    let mut set = deadpool_redis::redis::cmd("SET");
                    set.arg(&set_key).arg(&bytes).arg("PX").arg(ttl.as_millis());
                    let mut del = deadpool_redis::redis::cmd("DEL");
                    del.arg(&delete_key);
                    pool.query_replicated(&[set, del], &set_key).await
                }
                Backend::InProcess(store) => {
                    store.check_value(&set_key, &bytes)?;
                    store.set(&set_key, bytes.clone(), ttl);
                    store.delete(&delete_key);
                    Ok(())
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Deletes `key`; returns whether something was there.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        let key = self.full_key(key)?;
        let span = debug_span!("cache.delete", backend = self.backend_name(), key = %key);
        async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::delete(pool, &key).await,
                Backend::InProcess(store) => Ok(store.delete(&key)),
            }
        }
        .instrument(span)
        .await
    }

    /// The remaining lifetime of `key`, or `None` when it does not exist.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>, CacheError> {
        let key = self.full_key(key)?;
        match &self.backend {
            Backend::Redis(pool) => redis_store::ttl(pool, &key).await,
            Backend::InProcess(store) => Ok(store.ttl(&key)),
        }
    }

    /// Adds `by` to the counter under `key` and returns the new value. A new
    /// counter starts at 0 and gets `ttl` in the same atomic step; later
    /// increments keep its expiry (a fixed window).
    pub async fn incr(&self, key: &str, by: i64, ttl: Ttl) -> Result<i64, CacheError> {
        let key = self.full_key(key)?;
        let span = debug_span!("cache.incr", backend = self.backend_name(), key = %key, by);
        async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::incr(pool, &key, by, ttl).await,
                Backend::InProcess(store) => store.incr(&key, by, ttl),
            }
        }
        .instrument(span)
        .await
    }

    /// Publishes `message` on `channel` (namespaced by the prefix) to every
    /// current subscriber: other processes on Redis, other tasks in-process.
    pub async fn publish(&self, channel: &str, message: &[u8]) -> Result<(), CacheError> {
        let channel = self.full_key(channel)?;
        match &self.backend {
            Backend::Redis(pool) => {
                let mut cmd = deadpool_redis::redis::cmd("PUBLISH");
                cmd.arg(&channel).arg(message);
                pool.query::<i64>(&cmd).await.map(|_| ())
            }
            Backend::InProcess(store) => {
                // No subscribers is not an error.
                let _ = store.bus.send((channel, message.to_vec()));
                Ok(())
            }
        }
    }

    /// Subscribes to `channel` (namespaced by the prefix).
    pub async fn subscribe(&self, channel: &str) -> Result<crate::Subscription, CacheError> {
        let channel = self.full_key(channel)?;
        match &self.backend {
            Backend::Redis(pool) => pool.subscribe(&channel).await,
            Backend::InProcess(store) => Ok(crate::Subscription::in_process(&store.bus, channel)),
        }
    }

    pub(crate) async fn gcra(&self, key: &str, gcra: Gcra) -> Result<RateDecision, CacheError> {
        let key = self.full_key(key)?;
        let span = debug_span!("cache.rate_limit", backend = self.backend_name(), key = %key);
        async {
            match &self.backend {
                Backend::Redis(pool) => redis_store::gcra(pool, &key, gcra).await,
                Backend::InProcess(store) => Ok(store.gcra(&key, gcra)),
            }
        }
        .instrument(span)
        .await
    }
}

fn check_size(bytes: &[u8]) -> Result<(), CacheError> {
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(CacheError::ValueTooLarge {
            size: bytes.len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}
