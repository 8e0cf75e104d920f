use warden_cache::CacheError;

use crate::SettingsError;

/// What went wrong while configuring or connecting Warden's storage.
/// Messages never contain passwords or connection URLs with credentials.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A setting is missing or malformed; the message names each variable.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The database could not be reached or refused the connection.
    /// Check DATABASE_URL and that the server is running.
    #[error("database unavailable: {reason}")]
    Database {
        /// What the driver reported.
        reason: String,
    },
    /// The cache could not be set up.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The key manager could not be set up.
    #[error(transparent)]
    Keys(#[from] warden_keys::KeyError),
    /// An approval notifier (webhook, Slack) could not be set up; check the
    /// `APPROVAL_*` and `CONSOLE_URL` settings.
    #[error("approval notifier {which} could not be set up: {error}")]
    Notifier {
        /// `webhook` or `slack`.
        which: &'static str,
        /// Why (never the URL or secret).
        error: warden_approval::NotifyError,
    },
}
