/// What went wrong with an API key. No variant carries a key or a hash.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The presented key is malformed, unknown, or its secret is wrong (one
    /// error for all three, so a caller learns nothing about which).
    #[error("invalid API key")]
    Invalid,
    /// The key was revoked or deactivated.
    #[error("API key has been revoked")]
    Revoked,
    /// The key is past its expiry.
    #[error("API key has expired")]
    Expired,
    /// The caller already has a key; revoke it first.
    #[error("caller {caller_id:?} already has an API key")]
    AlreadyExists {
        /// The caller.
        caller_id: String,
    },
    /// No key matches (for revoke / lookups by caller).
    #[error("no API key for caller {caller_id:?}")]
    NotFound {
        /// The caller.
        caller_id: String,
    },
    /// A field is unusable; it is named.
    #[error("invalid key field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The policy file is malformed or a key does not fit it.
    #[error("policy: {reason}")]
    Policy {
        /// What is wrong.
        reason: String,
    },
    /// The database failed.
    #[error("key storage failed: {reason}")]
    Database {
        /// What the driver reported.
        reason: String,
    },
    /// Revocation is committed in the database but the shared cache could not
    /// be told; cached verifications may pass until they expire (at most the
    /// verification cache TTL). Retry the revoke.
    #[error(
        "key revoked in the database, but the verification cache could not be cleared: {reason}"
    )]
    CacheNotCleared {
        /// What the cache reported.
        reason: String,
    },
    /// Every database connection stayed busy for the whole acquire timeout.
    #[error("database pool exhausted: no connection became free in time")]
    PoolExhausted,
    /// The database did not answer within the operation timeout.
    #[error("database did not answer within {after:?}")]
    Timeout {
        /// The limit that was reached.
        after: std::time::Duration,
    },
    /// Too many bcrypt computations are running already (an unauthenticated
    /// flood, or more load than the cores can hash): refused at once instead
    /// of queueing. Retry after a short pause.
    #[error("key verification is busy: too many bcrypt computations in flight; retry shortly")]
    Busy,
    /// The change's audit event could not be recorded, so the change was
    /// not made either (they commit together).
    #[error("not recorded in the audit trail, so nothing was changed: {reason}")]
    AuditTrail {
        /// What the audit trail reported.
        reason: String,
    },
    /// Hashing failed.
    #[error("bcrypt failed: {reason}")]
    Hashing {
        /// What bcrypt reported.
        reason: String,
    },
}

impl From<sea_orm::DbErr> for KeyError {
    fn from(e: sea_orm::DbErr) -> Self {
        warden_audit::metrics::record_db_error(&e);
        match e {
            sea_orm::DbErr::ConnectionAcquire(sea_orm::error::ConnAcquireErr::Timeout) => {
                Self::PoolExhausted
            }
            other => Self::Database {
                reason: other.to_string(),
            },
        }
    }
}

impl From<warden_common::TimedOut> for KeyError {
    fn from(timed_out: warden_common::TimedOut) -> Self {
        Self::Timeout {
            after: timed_out.after,
        }
    }
}
