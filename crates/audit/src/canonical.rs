//! The canonical JSON form: object keys sorted bytewise, no whitespace,
//! serde_json's string encoding. Key order and whitespace in the input never
//! change it, so neither does the hash over it.
//!
//! Two entry points:
//! - [`canonical_hash_text`] over the raw JSON text a caller sent: duplicate
//!   keys are refused and every number keeps its exact text, so two different
//!   payloads can never share a hash (use this when you have the bytes);
//! - [`canonical_hash`] over a parsed [`Value`] (numbers in serde_json's
//!   encoding): a `Value` has already collapsed duplicate keys and rounded
//!   integers beyond 64 bits, so it cannot tell such payloads apart.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
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

/// The canonical bytes of the raw JSON `text`: refuses malformed JSON,
/// duplicate object keys (after unescaping) and nesting past [`MAX_DEPTH`];
/// numbers are kept exactly as written.
pub fn canonical_json_text(text: &str) -> Result<Vec<u8>, AuditError> {
    let raw: &RawValue = serde_json::from_str(text).map_err(malformed)?;
    let mut out = Vec::with_capacity(text.len());
    write_text(raw, &mut out, 0)?;
    Ok(out)
}

/// Domain tag of the text hash: a text hash can never equal a [`canonical_hash`]
/// of a `Value` (whose numbers are re-formatted), whatever the payloads.
const TEXT_HASH_DOMAIN: &[u8] = b"warden.raw-args.text.v1\n";

/// Hex SHA-256 of the domain tag `warden.raw-args.text.v1\n` followed by
/// [`canonical_json_text`]: different payloads never share it, and it never
/// equals a [`canonical_hash`].
pub fn canonical_hash_text(text: &str) -> Result<String, AuditError> {
    let mut hasher = Sha256::new();
    hasher.update(TEXT_HASH_DOMAIN);
    hasher.update(canonical_json_text(text)?);
    Ok(hex(&hasher.finalize()))
}

fn malformed(e: serde_json::Error) -> AuditError {
    AuditError::InvalidField {
        field: "raw_args",
        reason: format!("not valid JSON: {e}"),
    }
}

/// An object's members in the order written, duplicates kept (to refuse them).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for MembersVisitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor(std::marker::PhantomData))
    }
}

fn write_text(raw: &RawValue, out: &mut Vec<u8>, depth: usize) -> Result<(), AuditError> {
    if depth > MAX_DEPTH {
        return Err(AuditError::TooDeep { limit: MAX_DEPTH });
    }
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'{') => {
            let Members(mut members) = serde_json::from_str(text).map_err(malformed)?;
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            if let Some(pair) = members.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(AuditError::InvalidField {
                    field: "raw_args",
                    reason: format!(
                        "duplicate key {:?}: the payload is ambiguous",
                        pair[0].0.chars().take(64).collect::<String>()
                    ),
                });
            }
            out.push(b'{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_text(v, out, depth + 1)?;
            }
            out.push(b'}');
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(malformed)?;
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_text(item, out, depth + 1)?;
            }
            out.push(b']');
        }
        Some(b'"') => {
            let s: String = serde_json::from_str(text).map_err(malformed)?;
            write_string(&s, out);
        }
        _ => match serde_json::from_str::<Value>(text).map_err(malformed)? {
            // The number exactly as written: no rounding, no re-formatting.
            Value::Number(_) => out.extend_from_slice(text.as_bytes()),
            scalar => write(&scalar, out, depth)?,
        },
    }
    Ok(())
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

pub(crate) use warden_common::hex;

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

    /// Security review, item 9: payloads that a parsed `Value` cannot tell
    /// apart get different text hashes, or are refused.
    #[test]
    fn raw_text_hashes_never_collide_where_values_do() {
        let big_a = r#"{"amount": 18446744073709551617}"#;
        let big_b = r#"{"amount": 18446744073709551618}"#;
        let va: Value = serde_json::from_str(big_a).unwrap();
        let vb: Value = serde_json::from_str(big_b).unwrap();
        assert_eq!(
            canonical_hash(&va).unwrap(),
            canonical_hash(&vb).unwrap(),
            "the Value path collides (the reason for the text path)"
        );
        assert_ne!(
            canonical_hash_text(big_a).unwrap(),
            canonical_hash_text(big_b).unwrap()
        );
        for ambiguous in [
            r#"{"to": "alice", "to": "mallory"}"#,
            r#"{"a": {"x": 1, "x": 1}}"#,
            r#"[{"k": 1, "k": 2}]"#,
        ] {
            assert!(
                matches!(
                    canonical_hash_text(ambiguous),
                    Err(AuditError::InvalidField {
                        field: "raw_args",
                        ..
                    })
                ),
                "{ambiguous}"
            );
        }
        // Order, whitespace and string escapes still do not matter.
        assert_eq!(
            canonical_json_text("{ \"b\" : [1, 2.50] ,\"a\":\"\\u0041\"}").unwrap(),
            br#"{"a":"A","b":[1,2.50]}"#
        );
        assert!(canonical_hash_text("{not json").is_err());
        // The two paths never meet: the Value path re-formats the big number
        // as 1.8446744073709552e+19, the text path hashes under its own tag.
        let as_float = r#"{"amount":1.8446744073709552e+19}"#;
        assert_eq!(canonical_json(&va).unwrap(), as_float.as_bytes());
        assert_ne!(
            canonical_hash_text(as_float).unwrap(),
            canonical_hash(&va).unwrap()
        );
        let deep = format!(
            "{}1{}",
            "[".repeat(MAX_DEPTH + 2),
            "]".repeat(MAX_DEPTH + 2)
        );
        assert!(canonical_hash_text(&deep).is_err());
    }

    proptest::proptest! {
        /// Different number texts (e.g. integers past 64 bits) never share a
        /// hash; a payload with a repeated key is always refused; key order
        /// and spacing never change the hash.
        #[test]
        fn text_hash_is_injective_and_order_free(
            a in "-?[1-9][0-9]{0,40}",
            b in "-?[1-9][0-9]{0,40}",
            keys in proptest::collection::btree_set("[a-z]{1,6}", 1..6),
            dup in 0usize..6,
            spaces in "[ \n\t]{0,3}",
        ) {
            let doc = |n: &str| format!(r#"{{"n":{n}}}"#);
            if a != b {
                proptest::prop_assert_ne!(
                    canonical_hash_text(&doc(&a)).unwrap(),
                    canonical_hash_text(&doc(&b)).unwrap()
                );
            }
            let keys: Vec<String> = keys.into_iter().collect();
            let members: Vec<String> =
                keys.iter().enumerate().map(|(i, k)| format!("{spaces}\"{k}\"{spaces}:{i}")).collect();
            let forward = format!("{{{}}}", members.join(","));
            let backward = format!(
                "{{{}}}",
                members.iter().rev().cloned().collect::<Vec<_>>().join(",")
            );
            proptest::prop_assert_eq!(
                canonical_hash_text(&forward).unwrap(),
                canonical_hash_text(&backward).unwrap()
            );
            let repeated = &keys[dup % keys.len()];
            let with_dup = format!("{{{},\"{repeated}\":null}}", members.join(","));
            proptest::prop_assert!(canonical_hash_text(&with_dup).is_err());
        }
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
