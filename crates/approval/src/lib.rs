//! Warden's human approvals: a risky tool call waits for a person's OK.
//!
//! - [`ApprovalManager::issue`] creates a one-time [`ApprovalToken`] for an
//!   [`ApprovalRequest`], bound to the exact call by its raw-arguments hash;
//!   only the token's SHA-256 is stored.
//! - [`ApprovalManager::check`]: a shared cache may say "still pending";
//!   every other answer comes from the database, by the database's clock.
//! - [`ApprovalManager::approve`] / [`ApprovalManager::deny`]: exactly one
//!   decider wins, across processes.
//! - [`ApprovalManager::wait_for_decision`] lets the gateway hold the call.
//! - [`ApprovalManager::consume`] (APPROVED → EXECUTED, once, for the exact
//!   [`CallBinding`]) is the only step that lets the call run.
//! - [`Notifier`]s ([`LoggingNotifier`], [`WebhookNotifier`]) tell people.
//!
//! Architecture invariant: a token is never stored, logged or printed; the
//! database is the truth and no cache write can approve or decide a call.

mod db_clock;
mod decisions;
mod domain;
mod error;
mod manager;
mod metrics;
mod notify;
mod token;

pub use decisions::INBOX_CHANNEL;
pub use domain::{
    Approval, ApprovalRequest, ApprovalResult, ApprovalStatus, CallBinding, IssueOutcome,
    WaitOutcome,
};
pub use error::{ApprovalError, NotifyError};
pub use manager::ApprovalManager;
pub use notify::{LoggingNotifier, Notifier, SlackNotifier, WebhookNotifier, webhook_signature};
pub use token::ApprovalToken;
