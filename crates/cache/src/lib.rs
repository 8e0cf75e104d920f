//! Warden's cache layer: one [`Cache`] contract over Redis (shared by every
//! gateway process) and an in-process backend (the embedded default).
//!
//! - [`Ttl`]: an expiry that cannot be zero or absurdly long. Every write takes
//!   one; there is no function that stores a value without expiry.
//! - [`Cache`]: JSON helpers (`set_json`, `get_json`, `set_json_if_absent`,
//!   `replace_json_keep_ttl`, `take_json`, `delete`), counters (`incr`).
//! - [`RateLimiter`]: GCRA, one atomic round trip, fail-open or fail-closed.
//! - [`RedisPool`]: a deadpool-redis pool with every timeout set, and
//!   [`LuaScript`] runs (`EVALSHA`, loading the script when Redis lacks it).
//! - [`KeyPrefix`]: the validated namespace of every key.
//!
//! ```no_run
//! # async fn example() -> Result<(), warden_cache::CacheError> {
//! use warden_cache::{Cache, KeyPrefix, Ttl};
//! let cache = Cache::in_process(KeyPrefix::new("warden")?, 10_000);
//! cache.set_json("greeting", &"hello", Ttl::from_secs(60)?).await?;
//! let got: Option<String> = cache.get_json("greeting").await?;
//! assert_eq!(got.as_deref(), Some("hello"));
//! # Ok(()) }
//! ```
//!
//! Architecture invariants:
//! - This crate knows nothing about SQL, audit events, approvals or keys: it
//!   stores opaque values for the crates above it.
//! - Errors are [`CacheError`] values that say what failed and what to check;
//!   they never contain a password or a cached value, and logs never show values.

mod cache;
mod error;
mod key_prefix;
mod lua;
mod memory;
mod metrics;
mod pubsub;
mod rate_limit;
mod redis_pool;
mod redis_store;
mod ttl;

pub use cache::{Cache, DEFAULT_IN_PROCESS_BYTES, MAX_KEY_BYTES, MAX_VALUE_BYTES};
pub use error::CacheError;
pub use key_prefix::KeyPrefix;
pub use lua::LuaScript;
pub use pubsub::Subscription;
pub use rate_limit::{FailMode, RateDecision, RateLimit, RateLimiter};
pub use redis_pool::{
    PooledConnection, RedisConnection, RedisManager, RedisPool, RedisPoolConfig, redis_nodes,
};
pub use ttl::Ttl;

/// The Redis client crate this layer is built on, re-exported so callers use the
/// same version.
pub use deadpool_redis::redis;
