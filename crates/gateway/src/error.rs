/// What went wrong starting or running the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The gateway's configuration file is missing or invalid.
    #[error("gateway configuration: {reason}")]
    Config {
        /// What is wrong, and where.
        reason: String,
    },
    /// The policy file could not be loaded (see `POLICY_PATH`).
    #[error("policy: {reason}")]
    Policy {
        /// What is wrong.
        reason: String,
    },
    /// An upstream MCP server could not be started or reached.
    #[error("upstream {name:?} is unavailable: {reason}")]
    Upstream {
        /// The upstream's name.
        name: String,
        /// Why (never the call's arguments).
        reason: String,
    },
    /// Warden's storage could not be set up.
    #[error(transparent)]
    Core(#[from] warden_core::CoreError),
    /// A rate limit in the policy is invalid.
    #[error(transparent)]
    Cache(#[from] warden_cache::CacheError),
}
