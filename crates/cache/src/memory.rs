//! The in-process backend: the same contract as Redis, inside one process.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::rate_limit::{Gcra, RateDecision};
use crate::{CacheError, Ttl};

const SHARDS: usize = 16;
/// Bookkeeping bytes counted per entry besides its key and value.
const ENTRY_OVERHEAD: usize = 96;

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
    /// Tie-breaker in the expiry index (two entries may expire at once).
    seq: u64,
    class: Class,
}

/// Eviction classes: ordinary values go before any rate-limiter state.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Value = 0,
    Limiter = 1,
}

fn cost(key: &str, value: &[u8]) -> usize {
    // The key is held twice: in the map and in the expiry index.
    2 * key.len() + value.len() + ENTRY_OVERHEAD
}

/// One shard: its entries, an index by expiry per class (soonest first) and
/// the bytes it holds. Every operation is O(log n); nothing scans the shard.
#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    by_expiry: [BTreeMap<(Instant, u64), String>; 2],
    bytes: usize,
    next_seq: u64,
}

impl Shard {
    fn remove(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.remove(key)?;
        self.by_expiry[entry.class as usize].remove(&(entry.expires_at, entry.seq));
        self.bytes = self.bytes.saturating_sub(cost(key, &entry.value));
        Some(entry)
    }

    /// Drops entries that have expired, soonest first (amortized O(1) each).
    fn sweep(&mut self, now: Instant) {
        for class in [Class::Value, Class::Limiter] {
            let index = class as usize;
            while self.by_expiry[index]
                .first_key_value()
                .is_some_and(|(&(at, _), _)| at <= now)
            {
                if let Some((_, key)) = self.by_expiry[index].pop_first()
                    && let Some(entry) = self.entries.remove(&key)
                {
                    self.bytes = self.bytes.saturating_sub(cost(&key, &entry.value));
                }
            }
        }
    }

    /// Evicts the ordinary value closest to expiry; limiter state only when
    /// `limiter_too` and no ordinary value is left.
    fn evict_one(&mut self, limiter_too: bool) -> bool {
        let classes: &[Class] = if limiter_too {
            &[Class::Value, Class::Limiter]
        } else {
            &[Class::Value]
        };
        for class in classes {
            if let Some((_, victim)) = self.by_expiry[*class as usize].pop_first() {
                if let Some(entry) = self.entries.remove(&victim) {
                    self.bytes = self.bytes.saturating_sub(cost(&victim, &entry.value));
                }
                return true;
            }
        }
        false
    }
}

/// Memory of one process, sharded, every entry with an expiry, bounded both
/// by entries and by bytes. Expired entries are never returned and are
/// dropped as writes happen; when a shard is full, the entries closest to
/// expiry (expired ones first) are evicted, in O(log n) each.
pub(crate) struct InProcessStore {
    pub(crate) bus: crate::pubsub::LocalBus,
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    bytes_per_shard: usize,
    max_value_bytes: usize,
    epoch: Instant,
}

impl InProcessStore {
    pub(crate) fn new(max_entries: usize, max_bytes: usize, max_value_bytes: usize) -> Self {
        Self {
            bus: tokio::sync::broadcast::channel(1024).0,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            bytes_per_shard: max_bytes.div_ceil(SHARDS).max(1),
            max_value_bytes,
            epoch: Instant::now(),
        }
    }

    /// Refuses a value larger than the per-value limit (or than a shard can
    /// ever hold) with a typed error.
    pub(crate) fn check_value(&self, key: &str, value: &[u8]) -> Result<(), CacheError> {
        let limit = self.max_value_bytes.min(
            self.bytes_per_shard
                .saturating_sub(key.len() + ENTRY_OVERHEAD),
        );
        if value.len() > limit {
            return Err(CacheError::ValueTooLarge {
                size: value.len(),
                limit,
            });
        }
        Ok(())
    }

    fn shard_index(key: &str) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        usize::try_from(h.finish() % SHARDS as u64).unwrap_or(0)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // Nothing that runs under the lock can panic (no indexing, no
        // unwrapping), so a poisoned lock is safe to reuse.
        self.shards[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        self.lock(Self::shard_index(key))
    }

    /// Sets `key` unless `guard` is live, atomically: both shards are locked
    /// (in index order, so two such writes never deadlock).
    pub(crate) fn set_unless(&self, key: &str, guard: &str, value: Vec<u8>, ttl: Ttl) -> bool {
        let now = Instant::now();
        let (k, g) = (Self::shard_index(key), Self::shard_index(guard));
        let expires_at = now + ttl.as_duration();
        if k == g {
            let mut shard = self.lock(k);
            if Self::live(&mut shard, guard, now).is_some() {
                return false;
            }
            self.insert(&mut shard, key, value, expires_at, now);
            return true;
        }
        let (first, second) = (self.lock(k.min(g)), self.lock(k.max(g)));
        let (mut key_shard, mut guard_shard) = if k < g {
            (first, second)
        } else {
            (second, first)
        };
        if Self::live(&mut guard_shard, guard, now).is_some() {
            return false;
        }
        self.insert(&mut key_shard, key, value, expires_at, now);
        true
    }

    fn live<'a>(shard: &'a mut Shard, key: &str, now: Instant) -> Option<&'a mut Entry> {
        if shard.entries.get(key).is_some_and(|e| e.expires_at <= now) {
            shard.remove(key);
        }
        shard.entries.get_mut(key)
    }

    /// Stores `value` under `key` until `expires_at`, evicting the entries
    /// closest to expiry (ordinary values before limiter state) while the
    /// shard is over its entry or byte budget. Limiter state never evicts
    /// live limiter state: then it is not stored and this returns false.
    fn insert_class(
        &self,
        shard: &mut Shard,
        key: &str,
        value: Vec<u8>,
        expires_at: Instant,
        now: Instant,
        class: Class,
    ) -> bool {
        shard.remove(key);
        shard.sweep(now);
        let size = cost(key, &value);
        let over = |shard: &Shard| {
            shard.entries.len() >= self.per_shard
                || shard.bytes.saturating_add(size) > self.bytes_per_shard
        };
        while over(shard) {
            if !shard.evict_one(class == Class::Value) {
                break;
            }
        }
        if over(shard) {
            return false;
        }
        let seq = shard.next_seq;
        shard.next_seq = shard.next_seq.wrapping_add(1);
        shard.by_expiry[class as usize].insert((expires_at, seq), key.to_owned());
        shard.bytes = shard.bytes.saturating_add(size);
        shard.entries.insert(
            key.to_owned(),
            Entry {
                value,
                expires_at,
                seq,
                class,
            },
        );
        true
    }

    fn insert(
        &self,
        shard: &mut Shard,
        key: &str,
        value: Vec<u8>,
        expires_at: Instant,
        now: Instant,
    ) {
        self.insert_class(shard, key, value, expires_at, now, Class::Value);
    }

    pub(crate) fn set(&self, key: &str, value: Vec<u8>, ttl: Ttl) {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let expires_at = now + ttl.as_duration();
        self.insert(&mut shard, key, value, expires_at, now);
    }

    pub(crate) fn set_if_absent(&self, key: &str, value: Vec<u8>, ttl: Ttl) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if Self::live(&mut shard, key, now).is_some() {
            return false;
        }
        let expires_at = now + ttl.as_duration();
        self.insert(&mut shard, key, value, expires_at, now);
        true
    }

    pub(crate) fn replace_keep_ttl(&self, key: &str, value: Vec<u8>) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let Some(expires_at) = Self::live(&mut shard, key, now).map(|e| e.expires_at) else {
            return false;
        };
        // Through `insert`, so the byte budget holds for the new value too.
        self.insert(&mut shard, key, value, expires_at, now);
        true
    }

    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        Self::live(&mut shard, key, now).map(|e| e.value.clone())
    }

    pub(crate) fn take(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        Self::live(&mut shard, key, now)?;
        shard.remove(key).map(|e| e.value)
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        Self::live(&mut shard, key, now).is_some() && shard.remove(key).is_some()
    }

    pub(crate) fn ttl(&self, key: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        Self::live(&mut shard, key, now).map(|e| e.expires_at - now)
    }

    pub(crate) fn incr(&self, key: &str, by: i64, ttl: Ttl) -> Result<i64, CacheError> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let corrupt = || CacheError::CorruptValue {
            key: key.to_owned(),
        };
        match Self::live(&mut shard, key, now) {
            Some(entry) => {
                let current: i64 = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(corrupt)?;
                let next = current.checked_add(by).ok_or_else(corrupt)?;
                let expires_at = entry.expires_at;
                self.insert(
                    &mut shard,
                    key,
                    next.to_string().into_bytes(),
                    expires_at,
                    now,
                );
                Ok(next)
            }
            None => {
                let expires_at = now + ttl.as_duration();
                self.insert(
                    &mut shard,
                    key,
                    by.to_string().into_bytes(),
                    expires_at,
                    now,
                );
                Ok(by)
            }
        }
    }

    /// The same GCRA as the Redis script, on this process's monotonic clock.
    pub(crate) fn gcra(&self, key: &str, gcra: Gcra) -> RateDecision {
        let now_instant = Instant::now();
        let now =
            u64::try_from(now_instant.duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX);
        let mut shard = self.shard(key);
        let stored = Self::live(&mut shard, key, now_instant)
            .and_then(|e| std::str::from_utf8(&e.value).ok()?.parse::<u64>().ok());
        let (decision, new_tat) = gcra.decide(now, stored);
        if let Some(new_tat) = new_tat {
            let lifetime =
                Duration::from_micros(new_tat.saturating_sub(now)).max(Duration::from_millis(1));
            let expires_at = now_instant + lifetime;
            let stored = self.insert_class(
                &mut shard,
                key,
                new_tat.to_string().into_bytes(),
                expires_at,
                now_instant,
                Class::Limiter,
            );
            if !stored {
                // Full of live limiter state: refuse (fail closed) rather than
                // forget another subject's limit.
                return RateDecision {
                    allowed: false,
                    remaining: 0,
                    retry_after: Duration::from_secs(1),
                    degraded: true,
                };
            }
        }
        decision
    }
}
