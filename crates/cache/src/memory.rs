//! The in-process backend: the same contract as Redis, inside one process.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::rate_limit::{Gcra, RateDecision};
use crate::{CacheError, Ttl};

const SHARDS: usize = 16;
/// Every this many writes to a shard, its expired entries are swept.
const SWEEP_EVERY: u32 = 256;

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<String, Entry>,
    writes: u32,
}

/// Memory of one process, sharded, every entry with an expiry. Expired entries
/// are never returned and are swept as writes happen; when a shard is full the
/// entry closest to expiry is evicted first.
pub(crate) struct InProcessStore {
    pub(crate) bus: crate::pubsub::LocalBus,
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    epoch: Instant,
}

impl InProcessStore {
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            bus: tokio::sync::broadcast::channel(1024).0,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            epoch: Instant::now(),
        }
    }

    fn shard_index(key: &str) -> usize {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        usize::try_from(h.finish() % SHARDS as u64).unwrap_or(0)
    }

    fn lock(&self, index: usize) -> MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave an entry half-written
        // (every mutation is a single map operation), so a poisoned lock is safe to reuse.
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
        let entry = Entry {
            value,
            expires_at: now + ttl.as_duration(),
        };
        if k == g {
            let mut shard = self.lock(k);
            if Self::live(&mut shard, guard, now).is_some() {
                return false;
            }
            self.insert(&mut shard, key, entry, now);
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
        self.insert(&mut key_shard, key, entry, now);
        true
    }

    fn live<'a>(shard: &'a mut Shard, key: &str, now: Instant) -> Option<&'a mut Entry> {
        if shard.entries.get(key).is_some_and(|e| e.expires_at <= now) {
            shard.entries.remove(key);
        }
        shard.entries.get_mut(key)
    }

    fn insert(&self, shard: &mut Shard, key: &str, entry: Entry, now: Instant) {
        shard.writes = shard.writes.wrapping_add(1);
        if shard.writes.is_multiple_of(SWEEP_EVERY) || shard.entries.len() >= self.per_shard {
            shard.entries.retain(|_, e| e.expires_at > now);
        }
        if !shard.entries.contains_key(key) && shard.entries.len() >= self.per_shard {
            let soonest = shard
                .entries
                .iter()
                .min_by_key(|(_, e)| e.expires_at)
                .map(|(k, _)| k.clone());
            if let Some(victim) = soonest {
                shard.entries.remove(&victim);
            }
        }
        shard.entries.insert(key.to_owned(), entry);
    }

    pub(crate) fn set(&self, key: &str, value: Vec<u8>, ttl: Ttl) {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let entry = Entry {
            value,
            expires_at: now + ttl.as_duration(),
        };
        self.insert(&mut shard, key, entry, now);
    }

    pub(crate) fn set_if_absent(&self, key: &str, value: Vec<u8>, ttl: Ttl) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        if Self::live(&mut shard, key, now).is_some() {
            return false;
        }
        let entry = Entry {
            value,
            expires_at: now + ttl.as_duration(),
        };
        self.insert(&mut shard, key, entry, now);
        true
    }

    pub(crate) fn replace_keep_ttl(&self, key: &str, value: Vec<u8>) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match Self::live(&mut shard, key, now) {
            Some(entry) => {
                entry.value = value;
                true
            }
            None => false,
        }
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
        shard.entries.remove(key).map(|e| e.value)
    }

    pub(crate) fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        Self::live(&mut shard, key, now).is_some() && shard.entries.remove(key).is_some()
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
                entry.value = next.to_string().into_bytes();
                Ok(next)
            }
            None => {
                let entry = Entry {
                    value: by.to_string().into_bytes(),
                    expires_at: now + ttl.as_duration(),
                };
                self.insert(&mut shard, key, entry, now);
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
            let entry = Entry {
                value: new_tat.to_string().into_bytes(),
                expires_at: now_instant + lifetime,
            };
            self.insert(&mut shard, key, entry, now_instant);
        }
        decision
    }
}
