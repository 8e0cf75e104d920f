use std::time::Duration;

/// What went wrong in the cache layer. No variant carries a password, a key's
/// value or a connection URL with credentials.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A configuration value is unusable; fix the named setting.
    #[error("invalid cache configuration: {what}: {reason}")]
    InvalidConfig {
        /// The setting that is wrong.
        what: &'static str,
        /// Why it is wrong.
        reason: String,
    },
    /// Redis refused or dropped the connection, or rejected the credentials.
    /// Check that Redis is running at REDIS_URL and the password is right.
    #[error("redis is unavailable: {reason}")]
    Unavailable {
        /// What the driver reported (never includes credentials).
        reason: String,
    },
    /// Redis did not answer in time. It may be overloaded, paused or unreachable.
    #[error("redis did not answer within {after:?} ({operation})")]
    Timeout {
        /// The step that timed out: `connect`, `recycle` or `command`.
        operation: &'static str,
        /// The configured limit that was reached.
        after: Duration,
    },
    /// Every pooled connection stayed busy for the whole wait timeout.
    /// Raise REDIS_POOL_MAX_SIZE or reduce concurrent load.
    #[error("redis pool exhausted: no connection became free within {waited:?}")]
    PoolExhausted {
        /// The configured wait timeout.
        waited: Duration,
    },
    /// Redis answered with an error reply (wrong type, script error, …).
    #[error("redis command failed: {reason}")]
    Command {
        /// The server's error reply.
        reason: String,
    },
}
