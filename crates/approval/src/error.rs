use crate::ApprovalStatus;

/// What went wrong with an approval. No variant carries a token.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No approval has this token (or the token is malformed).
    #[error("no approval with this token")]
    NotFound,
    /// The person deciding is the caller whose call is held: nobody
    /// approves their own call (ask another approver).
    #[error("the caller whose call is held cannot decide it; another approver must")]
    OwnCall,
    /// Someone already decided it; the decision stands.
    #[error("approval was already decided: {status}")]
    AlreadyDecided {
        /// The decision that was made.
        status: ApprovalStatus,
    },
    /// Its time ran out before anyone decided, or an approved call was not
    /// run within its execution window: treat it as denied (issue a new one).
    #[error(
        "approval expired (undecided in time, or approved but not used within its execution window)"
    )]
    Expired,
    /// The call about to run is not the call the approval was shown for; the
    /// differing part is named. Refuse the call (or ask for a new approval).
    #[error("approval is bound to another call: {field} differs")]
    BindingMismatch {
        /// `caller_id`, `tool_name`, `raw_args_hash` or `policy_version`.
        field: &'static str,
    },
    /// The approval was consumed already: one approval runs one call once.
    #[error("approval was already used to run its call")]
    AlreadyExecuted,
    /// The approval is not approved (still pending, or denied): the call may
    /// not run.
    #[error("approval is not approved: {status}")]
    NotApproved {
        /// Where it stands.
        status: ApprovalStatus,
    },
    /// The request or decision is malformed; the field is named.
    #[error("invalid approval field {field}: {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// PostgreSQL (the truth) failed; nothing was decided.
    #[error("approval storage failed: {reason}")]
    Database {
        /// What the driver reported.
        reason: String,
    },
    /// Every database connection stayed busy for the whole acquire timeout.
    /// Raise DATABASE_MAX_CONNECTIONS or reduce load.
    #[error("database pool exhausted: no connection became free in time")]
    PoolExhausted,
    /// The database did not answer within the operation timeout (it may be
    /// paused, overloaded or unreachable); nothing is left half-done.
    #[error("database did not answer within {after:?}")]
    Timeout {
        /// The limit that was reached.
        after: std::time::Duration,
    },
    /// The change's audit event could not be recorded, so the change was
    /// not made either (they commit together). Check the database.
    #[error("not recorded in the audit trail, so nothing was changed: {reason}")]
    AuditTrail {
        /// What the audit trail reported.
        reason: String,
    },
    /// A stored row is unreadable.
    #[error("stored approval is unreadable: {reason}")]
    CorruptRow {
        /// What could not be read.
        reason: String,
    },
}

impl From<warden_audit::AuditError> for ApprovalError {
    fn from(e: warden_audit::AuditError) -> Self {
        Self::AuditTrail {
            reason: e.to_string(),
        }
    }
}

impl From<sea_orm::DbErr> for ApprovalError {
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

/// A notifier failed (it never fails the approval itself).
#[derive(Debug, thiserror::Error)]
#[error("notification failed: {reason}")]
pub struct NotifyError {
    /// What went wrong (never the token).
    pub reason: String,
}

impl From<warden_common::TimedOut> for ApprovalError {
    fn from(timed_out: warden_common::TimedOut) -> Self {
        Self::Timeout {
            after: timed_out.after,
        }
    }
}
