//! The canonical JSON form: object keys sorted bytewise, no whitespace,
//! serde_json's number and string encoding. Key order and whitespace in the
//! input never change it, so neither does the hash over it.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AuditError;

/// The deepest nesting accepted in tool arguments.
pub const MAX_DEPTH: usize = 64;

/// The canonical bytes of `value`, or [`AuditError::TooDeep`] past [`MAX_DEPTH`].
pub fn canonical_json(value: &Value) -> Result<Vec<u8>, AuditError> {
    let mut out = Vec::with_capacity(128);
    write(value, &mut out, 0)?;
    Ok(out)
}

/// Hex SHA-256 of the canonical form of `value`.
pub fn canonical_hash(value: &Value) -> Result<String, AuditError> {
    Ok(hex(&Sha256::digest(canonical_json(value)?)))
}

fn write(value: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), AuditError> {
    if depth > MAX_DEPTH {
        return Err(AuditError::TooDeep { limit: MAX_DEPTH });
    }
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out, depth + 1)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write(v, out, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping is deterministic; a &str always serializes.
    match serde_json::to_vec(s) {
        Ok(bytes) => out.extend_from_slice(&bytes),
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn key_order_and_whitespace_do_not_matter() {
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": {"y": [1, 2], "x": null}}"#).unwrap();
        let b: Value = serde_json::from_str("{\"a\":{\"x\":null,\n\"y\":[1,2]},\"b\":1}").unwrap();
        assert_eq!(canonical_json(&a).unwrap(), canonical_json(&b).unwrap());
        assert_eq!(
            canonical_json(&a).unwrap(),
            br#"{"a":{"x":null,"y":[1,2]},"b":1}"#
        );
    }

    #[test]
    fn golden_hash() {
        let v = json!({"query": "SELECT 1", "limit": 10, "tags": ["a", "ü"], "opts": {"z": true, "a": 1.5}});
        assert_eq!(
            canonical_json(&v).unwrap(),
            r#"{"limit":10,"opts":{"a":1.5,"z":true},"query":"SELECT 1","tags":["a","ü"]}"#
                .as_bytes()
        );
        // Golden vector: changing the canonical form is a breaking change.
        assert_eq!(
            canonical_hash(&v).unwrap(),
            "ead53e543f3451490dbcab3869b0a27c26f6e2bd7a57ca626ebebac505fba2a0"
        );
    }

    #[test]
    fn depth_limit_is_a_typed_error() {
        let mut v = json!(1);
        for _ in 0..(MAX_DEPTH + 1) {
            v = json!([v]);
        }
        assert!(matches!(
            canonical_json(&v),
            Err(AuditError::TooDeep { .. })
        ));
    }
}
