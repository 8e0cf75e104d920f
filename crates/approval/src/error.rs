use crate::ApprovalStatus;

/// What went wrong with an approval. No variant carries a token.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// No approval has this token (or the token is malformed).
    #[error("no approval with this token")]
    NotFound,
    /// Someone already decided it; the decision stands.
    #[error("approval was already decided: {status}")]
    AlreadyDecided {
        /// The decision that was made.
        status: ApprovalStatus,
    },
    /// Its time ran out before anyone decided: treat it as denied.
    #[error("approval expired before it was decided")]
    Expired,
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
    /// A stored row is unreadable.
    #[error("stored approval is unreadable: {reason}")]
    CorruptRow {
        /// What could not be read.
        reason: String,
    },
}

impl From<sea_orm::DbErr> for ApprovalError {
    fn from(e: sea_orm::DbErr) -> Self {
        Self::Database {
            reason: e.to_string(),
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
