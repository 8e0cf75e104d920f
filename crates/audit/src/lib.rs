//! Warden's audit trail (being built; see the audit issue).
//!
//! Its job: turn every tool call into an `AuditEvent` that keeps only the
//! SHA-256 of the raw arguments and a redacted copy, write events in batches
//! without ever failing or blocking the request path, chain them with hashes so
//! tampering is detected, and query them.
//!
//! Architecture invariant: no type in this crate can hold raw tool arguments.
