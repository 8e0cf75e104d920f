//! Warden's human approvals: a risky tool call waits for a person's OK.
//!
//! - [`ApprovalManager::issue`] creates a one-time [`ApprovalToken`] for an
//!   [`ApprovalRequest`], bound to the exact call by its raw-arguments hash;
//!   only the token's SHA-256 is stored.
//! - [`ApprovalManager::check`] reads the cache, falls back to the database,
//!   and refuses expired approvals on both paths.
//! - [`ApprovalManager::approve`] / [`ApprovalManager::deny`]: exactly one
//!   decider wins, across processes.
//! - [`ApprovalManager::wait_for_decision`] lets the gateway hold the call.
//! - [`Notifier`]s ([`LoggingNotifier`], [`WebhookNotifier`]) tell people.
//!
//! Architecture invariant: a token is never stored, logged or printed; the
//! database is the truth and the cache only ever holds what it committed.

mod domain;
mod error;
mod manager;
mod notify;
mod token;

pub use domain::{
    Approval, ApprovalRequest, ApprovalResult, ApprovalStatus, IssueOutcome, WaitOutcome,
};
pub use error::{ApprovalError, NotifyError};
pub use manager::ApprovalManager;
pub use notify::{LoggingNotifier, Notifier, WebhookNotifier, webhook_signature};
pub use token::ApprovalToken;
