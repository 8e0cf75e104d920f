//! Warden's human approvals (being built; see the approval issue).
//!
//! Its job: issue one-time approval tokens for tool calls that need a person's
//! OK, store only their SHA-256 (PostgreSQL as the truth, Redis as the fast
//! path), and let exactly one decider approve or deny each before it expires.
//!
//! Architecture invariant: a token is never stored, logged or printed.
