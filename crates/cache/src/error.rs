use std::time::Duration;

/// What went wrong in the cache layer. No variant carries a password, a cached
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
    /// A TTL outside 1 ms ..= 30 days was requested.
    #[error("invalid TTL: {reason}")]
    InvalidTtl {
        /// Why it was refused.
        reason: String,
    },
    /// A key that is empty or too long (keys are at most 1024 bytes).
    #[error("invalid cache key: {reason}")]
    InvalidKey {
        /// Why it was refused.
        reason: String,
    },
    /// A value larger than the cache accepts; store it in the database instead.
    #[error("value of {size} bytes exceeds the {limit}-byte cache limit")]
    ValueTooLarge {
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The value could not be encoded as JSON.
    #[error("cannot encode value as JSON: {reason}")]
    Encode {
        /// What serde_json reported.
        reason: String,
    },
    /// A counter or limiter key holds something that is not a number.
    #[error("the value under cache key {key:?} is not a number")]
    CorruptValue {
        /// The full key.
        key: String,
    },
    /// A rate limit with a zero limit, a zero period, or a cost above the limit.
    #[error("invalid rate limit: {reason}")]
    InvalidRateLimit {
        /// Why it was refused.
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

impl CacheError {
    /// A short, stable name for the kind of failure (`timeout`,
    /// `pool_exhausted`, …), for metrics and span attributes (`error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidConfig { .. } => "invalid_config",
            Self::InvalidTtl { .. } => "invalid_ttl",
            Self::InvalidKey { .. } => "invalid_key",
            Self::ValueTooLarge { .. } => "value_too_large",
            Self::Encode { .. } => "encode",
            Self::CorruptValue { .. } => "corrupt_value",
            Self::InvalidRateLimit { .. } => "invalid_rate_limit",
            Self::Unavailable { .. } => "unavailable",
            Self::Timeout { .. } => "timeout",
            Self::PoolExhausted { .. } => "pool_exhausted",
            Self::Command { .. } => "command",
        }
    }

    /// True when the cache could not be reached at all (down, hung, exhausted),
    /// as opposed to a refused request: the case fail-open/fail-closed covers.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable { .. } | Self::Timeout { .. } | Self::PoolExhausted { .. }
        )
    }
}
