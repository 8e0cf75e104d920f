/// What went wrong in the audit layer. No variant carries raw tool arguments
/// or a chain key.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The tool arguments nest deeper than the limit; refuse the call (and log
    /// the refusal with empty arguments).
    #[error("tool arguments nest deeper than {limit} levels")]
    TooDeep {
        /// The configured depth limit.
        limit: usize,
    },
    /// A field of the event is unusable (empty, too long, contains NUL, …).
    #[error("invalid audit field {field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A redaction rule from the policy file is unusable: fix or remove it
    /// (the message names the rule and what is wrong; never a matched value).
    #[error("redaction rule {name:?}: {reason}")]
    RedactionRule {
        /// The rule's name (or its index when the name itself is bad).
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database refused or could not be reached.
    #[error("audit storage failed: {reason}")]
    Database {
        /// What the driver reported.
        reason: String,
    },
    /// A storage call did not finish in time (no transaction or lock is left behind).
    #[error("audit storage did not answer within {after:?}")]
    Timeout {
        /// The limit that was reached.
        after: std::time::Duration,
    },
    /// A stored row cannot be turned back into an event (unknown decision,
    /// malformed JSON column). `verify` reports tampering; this is for reads.
    #[error("stored audit row {request_id} is unreadable: {reason}")]
    CorruptRow {
        /// The row's request_id.
        request_id: String,
        /// What could not be read.
        reason: String,
    },
    /// The local spill file could not be written or read.
    #[error("audit spill file {path}: {reason}")]
    Spill {
        /// The spill file's path.
        path: String,
        /// The I/O error.
        reason: String,
    },
    /// The checkpoint signing key is unusable or unreadable; generate one
    /// with `warden audit keygen`.
    #[error("audit signing key: {reason}")]
    SigningKey {
        /// Why it was refused (never the key itself).
        reason: String,
    },
    /// The stored Merkle tree cannot be read as a tree (missing or malformed
    /// hashes); run `warden audit verify` to locate the damage.
    #[error("audit tree is unreadable: {reason}")]
    CorruptTree {
        /// What is wrong.
        reason: String,
    },
    /// The log has no checkpoint covering what was asked for yet; wait for
    /// the integrator (or run `warden audit integrate`).
    #[error("not yet in a checkpoint: {what}")]
    NotCheckpointed {
        /// What is not covered.
        what: String,
    },
    /// The stored log is not the tree of the latest signed checkpoint (rows
    /// added, removed or changed outside the integrator). Nothing is signed
    /// on top of it: run `warden audit verify` to locate the damage.
    #[error("the audit log was changed outside the integrator: {reason}")]
    Tampered {
        /// What does not match.
        reason: String,
    },
    /// No event has this request_id.
    #[error("no audit event with request_id {request_id}")]
    NotFound {
        /// The request_id asked for.
        request_id: String,
    },
    /// A pagination cursor that this build did not produce.
    #[error("invalid audit cursor")]
    InvalidCursor,
    /// The logger has been shut down.
    #[error("the audit logger has stopped")]
    LoggerStopped,
    /// Writing an export failed.
    #[error("audit export failed: {reason}")]
    Export {
        /// The I/O error.
        reason: String,
    },
}

impl From<sea_orm::DbErr> for AuditError {
    fn from(e: sea_orm::DbErr) -> Self {
        crate::metrics::record_db_error(&e);
        Self::Database {
            reason: e.to_string(),
        }
    }
}

impl From<warden_common::TimedOut> for AuditError {
    fn from(timed_out: warden_common::TimedOut) -> Self {
        Self::Timeout {
            after: timed_out.after,
        }
    }
}
