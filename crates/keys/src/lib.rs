//! Warden's API keys: who is calling.
//!
//! - [`KeyManager::create`] issues `wdn_<env>_<lookup>_<secret>` keys and
//!   returns the plaintext once ([`PlainApiKey`]); only a bcrypt hash of the
//!   secret is stored.
//! - [`KeyManager::verify`]: one indexed fetch + one bcrypt verify, or a hit
//!   in the short-lived verification cache, whose entries are sealed with an
//!   HMAC under [`CacheMacKey`] (a cache write alone cannot authenticate).
//! - [`KeyManager::revoke`] takes effect at once across processes: through
//!   the revocation marker in a shared cache, and through a primary-key
//!   check of the key's state on every hit of an in-process cache.
//! - [`Policy`]: the roles and trust levels of `policies/default.yaml`.
//!
//! Architecture invariant: a plaintext key exists only in the value returned
//! at creation and in the caller's request; never in storage, logs or errors.

mod cache_seal;
mod error;
mod manager;
mod metrics;
mod plain_key;
mod policy;

pub use cache_seal::CacheMacKey;
pub use error::KeyError;
pub use manager::{BCRYPT_COSTS, CreatedKey, KeyInfo, KeyManager, NewKey, VerifiedKey};
pub use plain_key::PlainApiKey;
pub use policy::{
    Permission, Policy, Role, RuleKind, ToolDecision, ToolRateLimit, ToolRule, TrustLevel,
    glob_matches,
};
