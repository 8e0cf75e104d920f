//! Warden's MCP gateway (`warden gateway`): an MCP server over streamable
//! HTTP, built on the official Rust SDK (`rmcp`), in front of one or more
//! upstream MCP servers (child processes over stdio, or streamable-HTTP
//! URLs). It uses Warden through the [`warden_core::Warden`] facade only.
//!
//! Every tool call goes, in order: authenticate the `Authorization: Bearer`
//! key (401 without a valid one; a revoked key is refused on its next
//! request; keys of roles that may approve cannot call tools) → rate-limit
//! per caller and per rule (a JSON-RPC error [`RATE_LIMITED`] saying when to
//! retry) → the policy's first matching tool rule (no rule: denied) → an
//! audit event (redacted arguments, their hash, the decision, the policy
//! version, latency, the upstream's outcome) → forward, refuse, or hold.
//!
//! A held call is bound to the whole call (caller, tool, arguments' hash,
//! policy version): the gateway issues an approval, sends MCP progress
//! notifications while it waits up to the hold budget, and runs the call
//! once when it is approved (the approval is consumed exactly once, across
//! processes); denied, expired or out of budget, nothing runs and the agent
//! gets a tool error that says so.
//!
//! Tools are listed as `<upstream>__<tool>`; policy rules match the two
//! parts with globs.

#![recursion_limit = "256"]

mod config;
mod error;
mod gateway;
mod server;
mod upstream;

pub use config::{GatewayConfig, TOOL_SEPARATOR, UpstreamConfig};
pub use error::GatewayError;
pub use gateway::{CALLS_PER_CALLER_PER_MINUTE, Caller, Gateway, RATE_LIMITED};
pub use server::{FORBIDDEN, MCP_PATH, UNAUTHENTICATED, UNAVAILABLE, serve, serve_stdio};

/// Installs the TLS provider (ring) the HTTP clients of the MCP SDK need:
/// without one, building a client for a `url:` upstream panics. Idempotent;
/// [`Gateway::start`] calls it.
pub fn install_tls_provider() {
    // Already installed (by us or the embedding application): fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether a log record may be written: the MCP SDK (`rmcp`) logs whole
/// messages — tool arguments included — below ERROR, so only its ERROR
/// records are. Every subscriber in a process running the gateway
/// must apply this (the `warden` CLI does, whatever `RUST_LOG` says).
pub fn allows_log(metadata: &tracing::Metadata<'_>) -> bool {
    let sdk = metadata.target() == "rmcp" || metadata.target().starts_with("rmcp::");
    // Its INFO records carry every notification (an upstream's log of its
    // arguments), its WARN records every error answered (upstream text):
    // only its ERROR records are written.
    !sdk || *metadata.level() <= tracing::Level::ERROR
}
