//! Fuzzes the canonical JSON hasher and the redactor with arbitrary bytes:
//! as JSON documents, and as string values. They must never panic, must be
//! independent of key order, and must never store NUL characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden_audit::{Redactor, canonical_hash, canonical_json, canonical_json_text};

fuzz_target!(|data: &[u8]| {
    let redactor = Redactor::default().with_max_bytes(1024);
    if let Ok(value) = serde_json::from_slice::<Value>(data) {
        if let Ok(canonical) = canonical_json(&value) {
            let reparsed: Value = serde_json::from_slice(&canonical).expect("canonical JSON parses");
            assert_eq!(canonical_hash(&reparsed).ok(), canonical_hash(&value).ok());
        }
        if let Ok(redacted) = redactor.redact(&value) {
            let out = canonical_json(&redacted.value).expect("redacted output is within the depth limit");
            assert!(!out.contains(&0), "NUL stored");
            assert!(out.len() <= 1024 + 256, "size cap exceeded");
        }
    }
    // The strict text path: never panics; what it accepts is JSON, and its
    // canonical form is a fixed point.
    if let Ok(raw) = std::str::from_utf8(data)
        && let Ok(canonical) = canonical_json_text(raw)
    {
        let again = canonical_json_text(std::str::from_utf8(&canonical).expect("UTF-8"))
            .expect("canonical text is accepted");
        assert_eq!(again, canonical, "canonical form is not a fixed point");
    }
    let text = Value::String(String::from_utf8_lossy(data).into_owned());
    if let Ok(redacted) = redactor.redact(&text) {
        assert!(!redacted.value.to_string().contains('\0'));
    }
});
