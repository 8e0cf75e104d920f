//! Hostile input for the canonical hasher and the redactor: arbitrary and
//! deeply nested JSON, multi-megabyte strings, control characters. Never a
//! panic; typed errors; stored output bounded by the size cap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use warden_audit::{
    AuditError, AuditEvent, Decision, MAX_DEPTH, Redactor, ToolCall, canonical_hash, canonical_json,
};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "[\\x00-\\x1f\\\\\"']{0,40}".prop_map(Value::String),
        Just(Value::String("Bearer abcdefghijklmnop".into())),
        Just(Value::String(
            "' OR 1=1; DROP TABLE audit_events; --".into()
        )),
    ];
    leaf.prop_recursive(8, 256, 10, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..10)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn record(args: &Value, redactor: &Redactor) -> Result<AuditEvent, AuditError> {
    AuditEvent::record(
        &ToolCall {
            request_id: "r",
            caller_id: "c",
            api_key_id: None,
            method: "m",
            tool_name: None,
            raw_args: args.into(),
            decision: Decision::Allow,
            reason: Some("reason with \0 nul and \u{202e} bidi"),
            risk_labels: &[],
            status_code: None,
            latency_ms: None,
            timestamp: None,
        },
        redactor,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_json_is_hashed_and_redacted_without_panicking(args in arb_json()) {
        let redactor = Redactor::default().with_max_bytes(4096);
        let event = record(&args, &redactor).unwrap();
        prop_assert_eq!(event.raw_args_hash(), canonical_hash(&args).unwrap());
        let stored = canonical_json(event.sanitized_args()).unwrap();
        prop_assert!(stored.len() <= 4096 + 256, "stored {} bytes", stored.len());
        prop_assert!(!String::from_utf8_lossy(&stored).contains('\0'));
        // Hashing is a function of the value, not of key order.
        let reparsed: Value = serde_json::from_slice(&canonical_json(&args).unwrap()).unwrap();
        prop_assert_eq!(canonical_hash(&reparsed).unwrap(), canonical_hash(&args).unwrap());
    }

    #[test]
    fn any_identifier_is_accepted_or_refused_with_a_typed_error(id in any::<String>()) {
        let args = json!({});
        let mut call = ToolCall {
            request_id: &id, caller_id: &id, api_key_id: None, method: "m", tool_name: Some(&id), raw_args: (&args).into(),
            decision: Decision::Deny, reason: Some(&id), risk_labels: &[], status_code: None, latency_ms: None, timestamp: None,
        };
        match AuditEvent::record(&call, &Redactor::default()) {
            Ok(e) => prop_assert_eq!(e.request_id(), id.as_str()),
            Err(AuditError::InvalidField { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
        call.tool_name = None;
        let _ = AuditEvent::record(&call, &Redactor::default());
    }
}

#[test]
fn multi_megabyte_arguments_are_hashed_in_full_and_stored_truncated() {
    let big = "A".repeat(8 * 1024 * 1024);
    let args = json!({"upload": big, "password": "x"});
    let event = record(&args, &Redactor::default()).unwrap();
    assert_eq!(event.raw_args_hash(), canonical_hash(&args).unwrap());
    assert!(canonical_json(event.sanitized_args()).unwrap().len() < 70 * 1024);
    assert!(
        event
            .redaction_flags()
            .iter()
            .any(|f| f.reason == "truncated")
    );
    assert!(
        !event.sanitized_args().to_string().contains("\"x\""),
        "the password never reaches the preview"
    );
}

#[test]
fn nesting_far_past_the_limit_is_a_typed_error_not_a_stack_overflow() {
    for depth in [MAX_DEPTH + 1, 1_000, 10_000] {
        let mut v = json!("leaf");
        for i in 0..depth {
            // Built by moving, not with json!(…), which would re-serialize (recursively) each level.
            v = if i % 2 == 0 {
                Value::Array(vec![v])
            } else {
                Value::Object(Map::from_iter([("k".to_owned(), v)]))
            };
        }
        assert!(
            matches!(canonical_json(&v), Err(AuditError::TooDeep { .. })),
            "{depth}"
        );
        assert!(
            matches!(
                record(&v, &Redactor::default()),
                Err(AuditError::TooDeep { .. })
            ),
            "{depth}"
        );
        // Dropping the deep value iteratively keeps this test itself stack-safe.
        let mut cur = v;
        loop {
            cur = match cur {
                Value::Array(mut a) if !a.is_empty() => a.pop().unwrap(),
                Value::Object(mut m) if !m.is_empty() => m.remove("k").unwrap(),
                _ => break,
            };
        }
    }
}
