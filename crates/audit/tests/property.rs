//! Property: for any tool arguments, the hash computed at write equals the hash
//! recomputed from the row the database gives back (JSONB reorders keys and
//! normalizes numbers; SQLite keeps text), so `verify` accepts every chain.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value};
use warden_audit::{
    AuditQuery, Decision, Integrator, IntegratorConfig, VerifyOptions, append, verify,
};
use warden_testkit::{Backend, TestDatabase};

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z]{0,8}",
        Just("\u{0}nul\u{0}".to_owned()),
        Just("emoji 😀 and RTL \u{202e} and zero-width \u{200b}".to_owned()),
        Just("'; DROP TABLE audit_events; --".to_owned()),
        Just("\\\"quoted\\\" \n\t\r".to_owned()),
    ]
}

fn arb_number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(Value::from(-0.0)),
        Just(Value::from(1e300)),
        Just(Value::from(5e-324)),
        Just(Value::from(0.1 + 0.2)),
        Just(Value::from(100.0)),
        Just(Value::from(1e15)),
        Just(Value::from(1e16)),
        Just(Value::from(8.29871215518813e16)),
        Just(Value::from(1.8e19)),
        Just(Value::from(-9.3e18)),
        Just(Value::from(-9.2e18)),
        Just(Value::from(123456789012345.6)),
        (-1e20f64..1e20f64).prop_map(Value::from),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        arb_number(),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[test]
fn hash_at_write_equals_hash_recomputed_from_the_stored_row() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for backend in Backend::ALL {
        let t = rt.block_on(TestDatabase::new(backend));
        let query = AuditQuery::new(t.db.clone());
        let mut runner = TestRunner::new(Config {
            cases: 64,
            failure_persistence: None,
            ..Config::default()
        });
        let n = std::sync::atomic::AtomicUsize::new(0);
        runner
            .run(&prop::collection::vec(arb_json(), 1..6), |batch| {
                rt.block_on(async {
                    let events: Vec<_> = batch
                        .iter()
                        .map(|args| {
                            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            common::event_with(
                                &format!("p-{i}"),
                                "prop",
                                Decision::Allow,
                                args,
                                None,
                            )
                        })
                        .collect();
                    append(&t.db, events.clone(), Duration::from_secs(30))
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    Integrator::new(t.db.clone(), IntegratorConfig::default())
                        .integrate_all()
                        .await
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let v = verify(&t.db, &VerifyOptions::default()).await.unwrap();
                    prop_assert!(v.is_valid(), "{backend:?}: {v:?} for {batch:?}");
                    for e in &events {
                        let stored = query
                            .get_by_request_id(e.request_id())
                            .await
                            .unwrap()
                            .unwrap();
                        prop_assert_eq!(stored.sanitized_args(), e.sanitized_args());
                        prop_assert_eq!(stored.timestamp(), e.timestamp());
                    }
                    Ok(())
                })
            })
            .unwrap();
        drop(t);
    }
}
