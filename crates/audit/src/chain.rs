//! The hash chain: each row's hash covers the previous row's hash and the
//! row's own stored fields, in a versioned, domain-separated, length-prefixed
//! encoding that can be reproduced exactly from what the database returns.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use warden_entity::audit_events;

use crate::AuditError;
use crate::canonical::{canonical_json, hex};

/// The `prev_hash` of the first row of a chain that was never pruned.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Domain tag of encoding version 1. A change to the encoding gets a new tag.
const DOMAIN_V1: &[u8] = b"warden.audit.row.v1";

/// A secret that turns the chain hash into HMAC-SHA256, so that someone who
/// can write to the database but does not hold the key cannot recompute a
/// consistent chain. At least 32 bytes. `Debug` never shows it.
#[derive(Clone)]
pub struct ChainKey(Vec<u8>);

impl ChainKey {
    /// A key from raw bytes; at least 32 of them.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, AuditError> {
        let bytes = bytes.into();
        if bytes.len() < 32 {
            return Err(AuditError::InvalidChainKey {
                reason: format!("{} bytes; at least 32 are required", bytes.len()),
            });
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey([redacted])")
    }
}

impl Drop for ChainKey {
    fn drop(&mut self) {
        // Cheap best effort: overwrite the key before the allocation is freed.
        for b in &mut self.0 {
            *b = 0;
        }
    }
}

/// The head of the chain: the last row's seq and hash. Export it somewhere
/// outside the database ([`crate::checkpoint`]) and pass it to
/// [`crate::verify`] to detect a truncated or rewritten tail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    /// Seq of the last row (0 for an empty chain).
    pub seq: i64,
    /// Hash of the last row ([`GENESIS_HASH`] for an empty chain).
    pub hash: String,
}

impl ChainHead {
    /// The head of an empty, never-pruned chain.
    pub fn genesis() -> Self {
        Self {
            seq: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }
}

fn field(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&(b.len() as u64).to_be_bytes());
            out.extend_from_slice(b);
        }
    }
}

/// The bytes a row's hash covers: domain tag, the previous hash, then every
/// stored field except `hash` in a fixed order, each length-prefixed and
/// marked present/absent. JSON columns use the canonical form, so the JSONB
/// key order a database returns does not matter.
pub(crate) fn encode_row(
    prev_hash: &str,
    row: &audit_events::Model,
) -> Result<Vec<u8>, AuditError> {
    let mut out = Vec::with_capacity(512);
    field(&mut out, Some(DOMAIN_V1));
    field(&mut out, Some(prev_hash.as_bytes()));
    field(&mut out, Some(&row.seq.to_be_bytes()));
    field(&mut out, Some(row.id.as_bytes()));
    field(&mut out, Some(row.request_id.as_bytes()));
    field(
        &mut out,
        Some(&row.timestamp.timestamp_micros().to_be_bytes()),
    );
    field(&mut out, Some(row.caller_id.as_bytes()));
    field(
        &mut out,
        row.api_key_id.as_ref().map(|id| &id.as_bytes()[..]),
    );
    field(&mut out, Some(row.method.as_bytes()));
    field(&mut out, row.tool_name.as_deref().map(str::as_bytes));
    field(&mut out, Some(row.decision.as_bytes()));
    field(&mut out, row.reason.as_deref().map(str::as_bytes));
    field(&mut out, Some(row.raw_args_hash.as_bytes()));
    field(&mut out, Some(&canonical_json(&row.sanitized_args)?));
    field(&mut out, Some(&canonical_json(&row.redaction_flags)?));
    field(&mut out, Some(&canonical_json(&row.risk_labels)?));
    field(
        &mut out,
        row.status_code
            .map(i32::to_be_bytes)
            .as_ref()
            .map(|b| &b[..]),
    );
    field(
        &mut out,
        row.latency_ms
            .map(i64::to_be_bytes)
            .as_ref()
            .map(|b| &b[..]),
    );
    Ok(out)
}

/// The hash of a stored `row` (over its `prev_hash` and fields, not its
/// `hash`): SHA-256, or HMAC-SHA256 with a chain key. Lowercase hex. This is
/// what [`crate::verify`] recomputes.
pub fn row_hash(key: Option<&ChainKey>, row: &audit_events::Model) -> Result<String, AuditError> {
    let bytes = encode_row(&row.prev_hash, row)?;
    Ok(match key {
        None => hex(&Sha256::digest(&bytes)),
        Some(ChainKey(k)) => {
            let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(k).map_err(|e| {
                AuditError::InvalidChainKey {
                    reason: e.to_string(),
                }
            })?;
            mac.update(&bytes);
            hex(&mac.finalize().into_bytes())
        }
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    fn golden_row() -> audit_events::Model {
        audit_events::Model {
            id: uuid::Uuid::from_u128(0x0191_f6c2_0000_7000_8000_0000_0000_0001),
            seq: 1,
            request_id: "req-1".into(),
            timestamp: chrono::Utc.timestamp_micros(1_790_000_000_123_456).unwrap(),
            caller_id: "agent-7".into(),
            api_key_id: None,
            method: "tools/call".into(),
            tool_name: Some("db.query".into()),
            decision: "ALLOW".into(),
            reason: None,
            raw_args_hash: "ab".repeat(32),
            sanitized_args: json!({"b": [1, 2.5], "a": "x"}),
            redaction_flags: json!([]),
            risk_labels: json!(["read"]),
            status_code: Some(200),
            latency_ms: Some(12),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    /// Golden vectors: if these change, every stored chain stops verifying.
    #[test]
    fn golden_vectors() {
        let row = golden_row();
        let key = ChainKey::new(vec![7u8; 32]).unwrap();
        assert_eq!(row_hash(None, &row).unwrap(), GOLDEN_SHA256);
        assert_eq!(row_hash(Some(&key), &row).unwrap(), GOLDEN_HMAC);
    }

    const GOLDEN_SHA256: &str = "5f0efd13280d7d454e4514bc5e22552b5a26b223ecc7507ca550a609e7472055";
    const GOLDEN_HMAC: &str = "e6ac10b0158c0e5394502cfbfb771ab0ead29048617da9b2c76ff09581ea1996";

    #[test]
    fn absent_and_empty_fields_hash_differently() {
        let mut a = golden_row();
        a.reason = None;
        let mut b = golden_row();
        b.reason = Some(String::new());
        assert_ne!(row_hash(None, &a).unwrap(), row_hash(None, &b).unwrap());
        // Moving bytes between adjacent fields changes the hash (length prefixes).
        let mut c = golden_row();
        c.request_id = "req-1a".into();
        c.caller_id = "gent-7".into();
        assert_ne!(
            row_hash(None, &golden_row()).unwrap(),
            row_hash(None, &c).unwrap()
        );
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert!(ChainKey::new(vec![1u8; 31]).is_err());
        let key = ChainKey::new(b"super-secret-chain-key-0123456789".to_vec()).unwrap();
        assert!(!format!("{key:?}").contains("super-secret"));
    }
}
