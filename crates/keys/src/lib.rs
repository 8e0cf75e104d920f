//! Warden's API keys (being built; see the keys issue).
//!
//! Its job: issue keys shown once, store only their bcrypt hash, verify a
//! presented key with one indexed fetch and a short-lived verification cache,
//! and make revocation take effect at once.
//!
//! Architecture invariant: a plaintext key exists only in the value returned at
//! creation and in the caller's request; never in storage, logs or errors.
