//! The leaf: exactly what the Merkle tree commits to for one stored event.
//!
//! A leaf hash is RFC 6962's `SHA-256(0x00 ‖ bytes)`, where the bytes are a
//! versioned, domain-separated, length-prefixed encoding of every stored
//! field of the row (JSON columns in canonical form, so the key order a
//! database returns never matters). Anyone holding a [`StoredEvent`] can
//! recompute its leaf hash without the database.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use warden_entity::audit_events;

use crate::AuditError;
use crate::canonical::{canonical_json, hex};

/// Domain tag of leaf encoding version 2 (version 1 was the hash chain's).
const LEAF_DOMAIN_V2: &[u8] = b"warden.audit.leaf.v2";

/// A 32-byte tree hash (leaf, node or root).
pub type TreeHash = tlog_tiles::Hash;

/// Lowercase hex of a tree hash.
pub fn hash_hex(hash: &TreeHash) -> String {
    hex(&hash.0)
}

/// Parses 64 hex digits (either case) into a tree hash.
pub fn parse_hash_hex(text: &str) -> Option<TreeHash> {
    warden_common::parse_hex::<32>(text.trim()).map(tlog_tiles::Hash)
}

/// What a stored row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A tool call the gateway handled.
    ToolCall,
    /// A retention act: event rows of a range of leaves were deleted. Only
    /// [`crate::prune`] writes these.
    Prune,
    /// An administrative action (a key created or revoked, an approval
    /// issued or decided, …), written in the same transaction as the change
    /// it records (see [`crate::AdminAction`]).
    Admin,
}

impl EventKind {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ToolCall => "tool_call",
            Self::Prune => "prune",
            Self::Admin => "admin",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tool_call" => Some(Self::ToolCall),
            "prune" => Some(Self::Prune),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// Every stored field of one event, as the tree commits to it: the content of
/// an inclusion proof bundle. (`leaf_hash` is not part of it: it is what
/// this content hashes to.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredEvent {
    /// Row id.
    pub id: Uuid,
    /// The gateway's id for the call.
    pub request_id: String,
    /// `tool_call` or `prune`.
    pub kind: String,
    /// When it happened (microsecond precision).
    pub timestamp: DateTime<Utc>,
    /// Who made the call.
    pub caller_id: String,
    /// The API key used.
    pub api_key_id: Option<Uuid>,
    /// Protocol method.
    pub method: String,
    /// Tool called.
    pub tool_name: Option<String>,
    /// What was decided (stored form).
    pub decision: String,
    /// Why.
    pub reason: Option<String>,
    /// SHA-256 hex of the canonical raw arguments.
    pub raw_args_hash: String,
    /// Redacted arguments.
    pub sanitized_args: Value,
    /// Redaction flags.
    pub redaction_flags: Value,
    /// Risk labels.
    pub risk_labels: Value,
    /// Status code.
    pub status_code: Option<i32>,
    /// Latency in milliseconds.
    pub latency_ms: Option<i64>,
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

impl StoredEvent {
    /// The content of a stored row.
    pub fn from_model(row: &audit_events::Model) -> Self {
        Self {
            id: row.id,
            request_id: row.request_id.clone(),
            kind: row.kind.clone(),
            timestamp: row.timestamp,
            caller_id: row.caller_id.clone(),
            api_key_id: row.api_key_id,
            method: row.method.clone(),
            tool_name: row.tool_name.clone(),
            decision: row.decision.clone(),
            reason: row.reason.clone(),
            raw_args_hash: row.raw_args_hash.clone(),
            sanitized_args: row.sanitized_args.clone(),
            redaction_flags: row.redaction_flags.clone(),
            risk_labels: row.risk_labels.clone(),
            status_code: row.status_code,
            latency_ms: row.latency_ms,
        }
    }

    /// The bytes the leaf hash covers: domain tag, then every field in a
    /// fixed order, each length-prefixed and marked present/absent.
    pub fn leaf_bytes(&self) -> Result<Vec<u8>, AuditError> {
        LeafFields {
            id: &self.id,
            request_id: &self.request_id,
            kind: &self.kind,
            timestamp: &self.timestamp,
            caller_id: &self.caller_id,
            api_key_id: self.api_key_id.as_ref(),
            method: &self.method,
            tool_name: self.tool_name.as_deref(),
            decision: &self.decision,
            reason: self.reason.as_deref(),
            raw_args_hash: &self.raw_args_hash,
            sanitized_args: &self.sanitized_args,
            redaction_flags: &self.redaction_flags,
            risk_labels: &self.risk_labels,
            status_code: self.status_code,
            latency_ms: self.latency_ms,
        }
        .bytes()
    }

    /// The RFC 6962 leaf hash: `SHA-256(0x00 ‖ leaf_bytes)`.
    pub fn leaf_hash(&self) -> Result<TreeHash, AuditError> {
        Ok(tlog_tiles::record_hash(&self.leaf_bytes()?))
    }
}

/// The leaf hash of a stored row, recomputed from its content.
pub fn leaf_hash_of(row: &audit_events::Model) -> Result<TreeHash, AuditError> {
    // Borrowed straight from the row: no copy of its JSON columns.
    let bytes = LeafFields {
        id: &row.id,
        request_id: &row.request_id,
        kind: &row.kind,
        timestamp: &row.timestamp,
        caller_id: &row.caller_id,
        api_key_id: row.api_key_id.as_ref(),
        method: &row.method,
        tool_name: row.tool_name.as_deref(),
        decision: &row.decision,
        reason: row.reason.as_deref(),
        raw_args_hash: &row.raw_args_hash,
        sanitized_args: &row.sanitized_args,
        redaction_flags: &row.redaction_flags,
        risk_labels: &row.risk_labels,
        status_code: row.status_code,
        latency_ms: row.latency_ms,
    }
    .bytes()?;
    Ok(tlog_tiles::record_hash(&bytes))
}

/// The fields a leaf covers, borrowed from a [`StoredEvent`] or a row: the
/// one place the leaf encoding is written.
struct LeafFields<'a> {
    id: &'a Uuid,
    request_id: &'a str,
    kind: &'a str,
    timestamp: &'a DateTime<Utc>,
    caller_id: &'a str,
    api_key_id: Option<&'a Uuid>,
    method: &'a str,
    tool_name: Option<&'a str>,
    decision: &'a str,
    reason: Option<&'a str>,
    raw_args_hash: &'a str,
    sanitized_args: &'a Value,
    redaction_flags: &'a Value,
    risk_labels: &'a Value,
    status_code: Option<i32>,
    latency_ms: Option<i64>,
}

impl LeafFields<'_> {
    fn bytes(&self) -> Result<Vec<u8>, AuditError> {
        let mut out = Vec::with_capacity(512);
        field(&mut out, Some(LEAF_DOMAIN_V2));
        field(&mut out, Some(self.id.as_bytes()));
        field(&mut out, Some(self.request_id.as_bytes()));
        field(&mut out, Some(self.kind.as_bytes()));
        field(
            &mut out,
            Some(&self.timestamp.timestamp_micros().to_be_bytes()),
        );
        field(&mut out, Some(self.caller_id.as_bytes()));
        field(&mut out, self.api_key_id.map(|id| &id.as_bytes()[..]));
        field(&mut out, Some(self.method.as_bytes()));
        field(&mut out, self.tool_name.map(str::as_bytes));
        field(&mut out, Some(self.decision.as_bytes()));
        field(&mut out, self.reason.map(str::as_bytes));
        field(&mut out, Some(self.raw_args_hash.as_bytes()));
        field(&mut out, Some(&canonical_json(self.sanitized_args)?));
        field(&mut out, Some(&canonical_json(self.redaction_flags)?));
        field(&mut out, Some(&canonical_json(self.risk_labels)?));
        field(
            &mut out,
            self.status_code
                .map(i32::to_be_bytes)
                .as_ref()
                .map(|b| &b[..]),
        );
        field(
            &mut out,
            self.latency_ms
                .map(i64::to_be_bytes)
                .as_ref()
                .map(|b| &b[..]),
        );
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::TimeZone;
    use serde_json::json;

    use super::*;

    pub(crate) fn golden() -> StoredEvent {
        StoredEvent {
            id: Uuid::from_u128(0x0191_f6c2_0000_7000_8000_0000_0000_0001),
            request_id: "req-1".into(),
            kind: "tool_call".into(),
            timestamp: Utc.timestamp_micros(1_790_000_000_123_456).unwrap(),
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
        }
    }

    /// Golden vector (cross-checked by `tests/data/rfc6962.py`): if it
    /// changes, every stored tree stops verifying.
    #[test]
    fn golden_leaf_hash() {
        let hash = golden().leaf_hash().unwrap();
        assert_eq!(hash_hex(&hash), GOLDEN_LEAF);
        // JSON key order does not matter.
        let mut reordered = golden();
        reordered.sanitized_args = json!({"a": "x", "b": [1, 2.5]});
        assert_eq!(reordered.leaf_hash().unwrap(), hash);
    }

    const GOLDEN_LEAF: &str = "3516e5596546bca4193ccb1a2da281481e8a6af519b4af43169dc0793265c8ea";

    #[test]
    fn every_field_changes_the_hash() {
        let base = golden().leaf_hash().unwrap();
        let mut variants = Vec::new();
        let mut e = golden();
        e.reason = Some(String::new());
        variants.push(e);
        let mut e = golden();
        e.kind = "prune".into();
        variants.push(e);
        let mut e = golden();
        e.request_id = "req-1a".into();
        e.caller_id = "gent-7".into();
        variants.push(e);
        let mut e = golden();
        e.timestamp += chrono::Duration::microseconds(1);
        variants.push(e);
        let mut e = golden();
        e.status_code = None;
        variants.push(e);
        for v in variants {
            assert_ne!(v.leaf_hash().unwrap(), base, "{v:?}");
        }
    }

    #[test]
    fn hex_round_trip() {
        let h = golden().leaf_hash().unwrap();
        assert_eq!(parse_hash_hex(&hash_hex(&h)), Some(h));
        assert_eq!(parse_hash_hex("zz"), None);
        assert_eq!(parse_hash_hex(&"g".repeat(64)), None);
    }
}
