//! Warden's cache layer.
//!
//! Today it provides the shared Redis connection pool ([`RedisPool`]) with every
//! timeout set, so no caller can wait forever on a Redis that is down, slow or
//! blackholed, and the [`KeyPrefix`] that namespaces every key Warden writes.
//!
//! Architecture invariants:
//! - This crate knows nothing about SQL, audit events, approvals or keys: it
//!   stores opaque values for the crates above it.
//! - Errors are [`CacheError`] values that say what failed and what to check;
//!   they never contain a password or a cached value.

mod error;
mod key_prefix;
mod redis_pool;

pub use error::CacheError;
pub use key_prefix::KeyPrefix;
pub use redis_pool::{RedisPool, RedisPoolConfig};

/// The Redis client crate this layer is built on, re-exported so callers use the
/// same version.
pub use deadpool_redis::redis;
