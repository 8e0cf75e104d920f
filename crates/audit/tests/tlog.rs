//! The transparency log on real PostgreSQL and SQLite: appended events become
//! leaves under signed checkpoints; every kind of tampering is found and
//! named (with its leaf and request_id); nothing stored in the database can
//! make the verifier skip a row unless a signed checkpoint covers it; proofs
//! check without the database; prune keeps the tree and every proof.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{event, event_with, tamper};
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder, Statement};
use serde_json::json;
use warden_audit::{
    AuditQuery, BreakKind, CheckpointSigner, CheckpointVerifier, ConsistencyBundle, Decision,
    InclusionBundle, Integrator, IntegratorConfig, ProofFailure, SignedCheckpoint, Verification,
    VerifyOptions, append, export, latest_checkpoint_note, prove_consistency, prove_inclusion,
    prune, verify, verify_consistency,
};
use warden_entity::{audit_events, audit_leaves};
use warden_testkit::{Backend, TestDatabase};

const TIMEOUT: Duration = Duration::from_secs(30);

fn signer() -> CheckpointSigner {
    CheckpointSigner::generate("test.warden/audit").unwrap().1
}

fn integrator(t: &TestDatabase, signer: &CheckpointSigner) -> Integrator {
    Integrator::new(
        t.db.clone(),
        IntegratorConfig {
            signer: Some(signer.clone()),
            checkpoint_interval: Duration::ZERO,
            ..IntegratorConfig::default()
        },
    )
}

/// Events req-1..=req-n at leaves 0..n, integrated in rounds of 4 (so there
/// are several signed checkpoints).
async fn log_of(t: &TestDatabase, n: usize, signer: &CheckpointSigner) -> Integrator {
    let integrator = integrator(t, signer);
    let events: Vec<_> = (1..=n).map(event).collect();
    for chunk in events.chunks(4) {
        append(&t.db, chunk.to_vec(), TIMEOUT).await.unwrap();
        integrator.integrate_once(true).await.unwrap();
    }
    integrator
}

/// Events req-1..=req-total, integrated; the first `old` happened 40 days
/// ago (before a 30-day retention cut), the rest now.
async fn aged_log(t: &TestDatabase, integrator: &Integrator, total: usize, old: usize) {
    let long_ago = chrono::Utc::now() - chrono::Duration::days(40);
    let events: Vec<_> = (1..=total)
        .map(|i| {
            let at = (i <= old).then(|| long_ago + chrono::Duration::seconds(i as i64));
            event_with(
                &format!("req-{i}"),
                "agent-1",
                Decision::Allow,
                &json!({"i": i}),
                at,
            )
        })
        .collect();
    append(&t.db, events, TIMEOUT).await.unwrap();
    integrator.integrate_all().await.unwrap();
}

fn options(signer: &CheckpointSigner) -> VerifyOptions {
    VerifyOptions {
        verifier: Some(signer.verifier().unwrap()),
        ..VerifyOptions::default()
    }
}

async fn verdict(t: &TestDatabase, options: &VerifyOptions) -> Verification {
    verify(&t.db, options).await.unwrap()
}

#[track_caller]
fn assert_break(v: &Verification, kind: BreakKind, leaf: Option<u64>) {
    match v {
        Verification::Broken(b) => assert_eq!((b.kind, b.leaf_index), (kind, leaf), "{b}"),
        other => panic!("expected {kind:?} at {leaf:?}, got {other:?}"),
    }
}

async fn newest_note(t: &TestDatabase) -> String {
    latest_checkpoint_note(&t.db).await.unwrap().unwrap()
}

#[tokio::test]
async fn appended_events_become_leaves_under_signed_checkpoints() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        log_of(&t, 10, &key).await;
        let v = verdict(&t, &options(&key)).await;
        assert!(
            matches!(
                v,
                Verification::Valid {
                    tree_size: 10,
                    rows_checked: 10,
                    pruned: 0,
                    checkpoints: 3,
                    signatures_checked: true
                }
            ),
            "{backend:?}: {v:?}"
        );
        let leaves: Vec<i64> = audit_leaves::Entity::find()
            .order_by_asc(audit_leaves::Column::LeafIndex)
            .all(&t.db)
            .await
            .unwrap()
            .iter()
            .map(|l| l.leaf_index)
            .collect();
        assert_eq!(leaves, (0..10).collect::<Vec<_>>());
        let cp = SignedCheckpoint::open(&newest_note(&t).await, &key.verifier().unwrap()).unwrap();
        assert_eq!((cp.origin.as_str(), cp.size), ("test.warden/audit", 10));
    }
}

#[tokio::test]
async fn replayed_events_are_stored_and_integrated_once() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let integrator = integrator(&t, &key);
        let events: Vec<_> = (1..=8).map(event).collect();
        append(&t.db, events[..6].to_vec(), TIMEOUT).await.unwrap();
        integrator.integrate_all().await.unwrap();
        // A replay re-sends the same events (same ids) with two new ones, and
        // a second event of an already-logged call (same request id, new id).
        let mut replay = events.clone();
        replay.push(event(1));
        let out = append(&t.db, replay, TIMEOUT).await.unwrap();
        assert_eq!((out.inserted, out.duplicates), (3, 6));
        integrator.integrate_all().await.unwrap();
        let v = verdict(&t, &options(&key)).await;
        assert!(
            matches!(v, Verification::Valid { tree_size: 9, .. }),
            "{v:?}"
        );
        let both = warden_audit::AuditQuery::new(t.db.clone())
            .list_by_request_id("req-1")
            .await
            .unwrap();
        assert_eq!(both.len(), 2, "both events of req-1 are kept");
        assert!(both[0].id() < both[1].id(), "in the order they happened");
    }
}

/// One UPDATE per stored column of the row at leaf 5 (req-6).
fn column_edits() -> Vec<(&'static str, String)> {
    let copy =
        |col: &str| format!("{col} = (SELECT {col} FROM audit_events WHERE request_id = 'req-2')");
    vec![
        ("request_id", "request_id = 'forged'".to_owned()),
        ("kind", "kind = 'prune'".to_owned()),
        ("timestamp", copy("timestamp")),
        ("caller_id", "caller_id = 'someone-else'".to_owned()),
        ("api_key_id", "api_key_id = id".to_owned()),
        ("method", "method = 'tools/list'".to_owned()),
        ("tool_name", "tool_name = 'shell.exec'".to_owned()),
        ("decision", "decision = 'DENY'".to_owned()),
        ("reason", "reason = 'edited'".to_owned()),
        (
            "raw_args_hash",
            format!("raw_args_hash = '{}'", "0".repeat(64)),
        ),
        ("sanitized_args", copy("sanitized_args")),
        (
            "redaction_flags",
            r#"redaction_flags = '[{"path":"$","reason":"key:x"}]'"#.to_owned(),
        ),
        ("risk_labels", r#"risk_labels = '["none"]'"#.to_owned()),
        ("status_code", "status_code = 500".to_owned()),
        ("latency_ms", "latency_ms = 99999".to_owned()),
        ("leaf_hash", copy("leaf_hash")),
    ]
}

#[tokio::test]
async fn every_modified_column_is_found_at_its_leaf() {
    for backend in Backend::ALL {
        for (column, set) in column_edits() {
            let t = TestDatabase::new(backend).await;
            let key = signer();
            log_of(&t, 10, &key).await;
            tamper(
                &t,
                &format!("UPDATE audit_events SET {set} WHERE request_id = 'req-6'"),
            )
            .await;
            let v = verdict(&t, &options(&key)).await;
            assert_break(&v, BreakKind::Modified, Some(5));
            if let Verification::Broken(b) = &v
                && column != "request_id"
            {
                assert_eq!(b.request_id.as_deref(), Some("req-6"), "{column}");
            }
        }
    }
}

#[tokio::test]
async fn deleted_inserted_and_swapped_rows_are_found() {
    for backend in Backend::ALL {
        let key = signer();
        // Deleted.
        let t = TestDatabase::new(backend).await;
        log_of(&t, 10, &key).await;
        tamper(&t, "DELETE FROM audit_events WHERE request_id = 'req-6'").await;
        assert_break(
            &verdict(&t, &options(&key)).await,
            BreakKind::Deleted,
            Some(5),
        );

        // Inserted: a row that is neither a leaf nor queued.
        let t = TestDatabase::new(backend).await;
        log_of(&t, 10, &key).await;
        let extra = event(77).to_owned();
        append(&t.db, vec![extra], TIMEOUT).await.unwrap();
        tamper(&t, "DELETE FROM audit_pending").await;
        let v = verdict(&t, &options(&key)).await;
        assert_break(&v, BreakKind::Inserted, None);
        let Verification::Broken(b) = v else {
            unreachable!()
        };
        assert_eq!(b.request_id.as_deref(), Some("req-77"));

        // Two rows' positions swapped.
        let t = TestDatabase::new(backend).await;
        log_of(&t, 10, &key).await;
        let as_text = match backend {
            Backend::Postgres => "CAST(event_id AS TEXT)",
            Backend::Sqlite => "lower(hex(event_id))",
        };
        let ids: Vec<String> = t
            .strings(&format!(
                "SELECT {as_text} FROM audit_leaves WHERE leaf_index IN (5, 6) ORDER BY leaf_index"
            ))
            .await;
        // Unique(event_id) would refuse the swap in one step: go through a placeholder.
        tamper(&t, &swap_via_placeholder(backend, &ids)).await;
        assert_break(
            &verdict(&t, &options(&key)).await,
            BreakKind::Reordered,
            Some(5),
        );
    }
}

/// A UUID literal as each backend stores it (SQLite: a 16-byte blob).
fn sql_uuid(backend: Backend, text: &str) -> String {
    match backend {
        Backend::Postgres => format!("'{text}'::uuid"),
        Backend::Sqlite => format!("X'{}'", text.replace('-', "")),
    }
}

fn swap_via_placeholder(backend: Backend, ids: &[String]) -> String {
    let placeholder = sql_uuid(backend, "00000000-0000-0000-0000-0000000000ff");
    format!(
        "UPDATE audit_leaves SET event_id = {placeholder} WHERE leaf_index = 5; \
         UPDATE audit_leaves SET event_id = {a} WHERE leaf_index = 6; \
         UPDATE audit_leaves SET event_id = {b} WHERE leaf_index = 5",
        a = sql_uuid(backend, &ids[0]),
        b = sql_uuid(backend, &ids[1]),
    )
}

#[tokio::test]
async fn tampered_tree_hashes_are_found() {
    for backend in Backend::ALL {
        let key = signer();
        for sql in [
            format!(
                "UPDATE audit_tree_hashes SET hash = '{}' WHERE idx = 2",
                "a".repeat(64)
            ),
            "DELETE FROM audit_tree_hashes WHERE idx = 2".to_owned(),
            format!(
                "INSERT INTO audit_tree_hashes (idx, hash) VALUES (100000, '{}')",
                "b".repeat(64)
            ),
            "DELETE FROM audit_leaves WHERE leaf_index = 3".to_owned(),
        ] {
            let t = TestDatabase::new(backend).await;
            log_of(&t, 10, &key).await;
            tamper(&t, &sql).await;
            let v = verdict(&t, &options(&key)).await;
            match &v {
                Verification::Broken(b) => {
                    assert_eq!(b.kind, BreakKind::TreeTampered, "{sql}: {b}")
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
    }
}

/// The attack the chain let through: rewrite a row, rebuild everything the
/// database holds so it is self-consistent. The integrator refuses to sign on
/// top of it, and the signatures (stored, or kept outside) expose it.
#[tokio::test]
async fn a_rewritten_history_with_a_rebuilt_tree_fails_against_signed_checkpoints() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let honest = log_of(&t, 10, &key).await;
        let kept_outside = newest_note(&t).await;
        // Rewrite req-6 and queue every row again for a rebuilt tree.
        tamper(
            &t,
            "UPDATE audit_events SET caller_id = 'innocent', leaf_hash = NULL WHERE request_id = 'req-6'; \
             DELETE FROM audit_leaves; DELETE FROM audit_tree_hashes; \
             INSERT INTO audit_pending (event_id) SELECT id FROM audit_events ORDER BY id",
        )
        .await;
        // The honest integrator will not sign a tree that is not its last one.
        let refused = honest.integrate_all().await;
        assert!(
            matches!(refused, Err(warden_audit::AuditError::Tampered { .. })),
            "{backend:?}: {refused:?}"
        );
        // The attacker rebuilds the tree themselves (an integrator without
        // the key) after deleting the signed checkpoints.
        tamper(&t, "DELETE FROM audit_checkpoints").await;
        Integrator::new(t.db.clone(), IntegratorConfig::default())
            .integrate_all()
            .await
            .unwrap();
        // Its checkpoint is unsigned: forged, for anyone with the public key.
        assert_break(
            &verdict(&t, &options(&key)).await,
            BreakKind::CheckpointForged,
            None,
        );
        // Without any stored checkpoint, the one kept outside names the rewrite.
        tamper(&t, "DELETE FROM audit_checkpoints").await;
        let with_external = VerifyOptions {
            external_checkpoint: Some(kept_outside.clone()),
            ..options(&key)
        };
        assert_break(
            &verdict(&t, &with_external).await,
            BreakKind::CheckpointInconsistent,
            Some(9),
        );
        // A checkpoint re-signed by another key is refused as forged.
        let (_, other) = CheckpointSigner::generate("test.warden/audit").unwrap();
        let forged = TestDatabase::new(backend).await;
        log_of(&forged, 4, &other).await;
        let v = verdict(&forged, &options(&key)).await;
        assert_break(&v, BreakKind::CheckpointForged, None);
    }
}

/// A database writer appends a leaf of their own (a prune declaration
/// covering rows they then delete) directly to the tree: the integrator
/// refuses to sign anything on top of it, and verify names the damage.
#[tokio::test]
async fn a_leaf_appended_outside_the_integrator_is_never_signed() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let integrator = log_of(&t, 10, &key).await;
        let id = uuid::Uuid::now_v7();
        let uid = sql_uuid(backend, &id.to_string());
        tamper(
            &t,
            &format!(
                "INSERT INTO audit_events (id, request_id, kind, timestamp, caller_id, method, decision, \
                 raw_args_hash, sanitized_args, redaction_flags, risk_labels) \
                 SELECT {uid}, 'prune-fake', 'prune', timestamp, 'operator', 'audit.prune', 'ALLOW', raw_args_hash, \
                 '{{\"first_leaf\":0,\"last_leaf\":4}}', '[]', '[]' FROM audit_events WHERE request_id = 'req-3'; \
                 INSERT INTO audit_leaves (leaf_index, event_id, leaf_hash, integrated_at) \
                 SELECT 10, {uid}, '{}', integrated_at FROM audit_leaves WHERE leaf_index = 9; \
                 INSERT INTO audit_prune_permits (id) VALUES (1); \
                 DELETE FROM audit_events WHERE request_id IN ('req-1', 'req-2', 'req-3', 'req-4', 'req-5'); \
                 DELETE FROM audit_prune_permits",
                "c".repeat(64)
            ),
        )
        .await;
        append(&t.db, vec![event(11)], TIMEOUT).await.unwrap();
        let refused = integrator.integrate_all().await;
        assert!(
            matches!(refused, Err(warden_audit::AuditError::Tampered { .. })),
            "{backend:?}: {refused:?}"
        );
        let v = verdict(&t, &options(&key)).await;
        assert_break(&v, BreakKind::Deleted, Some(0));
    }
}

/// A queued row whose stored leaf_hash is not the hash of its content (here:
/// the hash of a prune record the writer means to swap in later) is left out
/// of the tree: the integrator hashes what is stored.
#[tokio::test]
async fn the_integrator_hashes_what_is_stored_not_what_the_writer_claims() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let integrator = log_of(&t, 4, &key).await;
        append(&t.db, vec![event(5), event(6)], TIMEOUT)
            .await
            .unwrap();
        tamper(
            &t,
            &format!(
                "UPDATE audit_events SET leaf_hash = '{}' WHERE request_id = 'req-5'",
                "d".repeat(64)
            ),
        )
        .await;
        integrator.integrate_all().await.unwrap();
        let leaves = t
            .strings("SELECT CAST(count(*) AS TEXT) FROM audit_leaves")
            .await;
        assert_eq!(
            leaves,
            ["5"],
            "{backend:?}: req-5 left out, req-6 integrated"
        );
        let v = verdict(&t, &options(&key)).await;
        assert!(
            matches!(&v, Verification::Broken(b) if b.kind == BreakKind::Inserted && b.request_id.as_deref() == Some("req-5")),
            "{backend:?}: {v:?}"
        );
    }
}

/// A prune never covers a deletion it did not make.
#[tokio::test]
async fn prune_refuses_to_launder_an_earlier_deletion() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let integrator = integrator(&t, &key);
        aged_log(&t, &integrator, 10, 6).await;
        tamper(&t, "DELETE FROM audit_events WHERE request_id = 'req-4'").await;
        let refused = prune(
            &integrator,
            chrono::Utc::now() - chrono::Duration::days(30),
            "ops",
            100,
        )
        .await;
        assert!(
            matches!(&refused, Err(warden_audit::AuditError::Tampered { reason }) if reason.contains("leaf 3")),
            "{backend:?}: {refused:?}"
        );
        assert_eq!(
            t.strings("SELECT CAST(count(*) AS TEXT) FROM audit_events")
                .await,
            ["9"],
            "nothing pruned"
        );
        assert_break(
            &verdict(&t, &options(&key)).await,
            BreakKind::Deleted,
            Some(3),
        );
    }
}

#[tokio::test]
async fn rollbacks_are_found() {
    for backend in Backend::ALL {
        let key = signer();
        // Tree rows removed from the end: stored checkpoints are beyond it.
        let t = TestDatabase::new(backend).await;
        log_of(&t, 10, &key).await;
        tamper(
            &t,
            "DELETE FROM audit_leaves WHERE leaf_index >= 8; DELETE FROM audit_tree_hashes WHERE idx >= 15; \
             DELETE FROM audit_events WHERE request_id IN ('req-9', 'req-10')",
        )
        .await;
        assert_break(
            &verdict(&t, &options(&key)).await,
            BreakKind::Rollback,
            Some(8),
        );

        // Everything rolled back to an older, self-consistent state (the
        // checkpoint table too): only a checkpoint kept outside notices.
        let t = TestDatabase::new(backend).await;
        let integrator = log_of(&t, 8, &key).await;
        let older = newest_note(&t).await;
        append(&t.db, (9..=12).map(event).collect(), TIMEOUT)
            .await
            .unwrap();
        integrator.integrate_once(true).await.unwrap();
        let newer = newest_note(&t).await;
        tamper(
            &t,
            "DELETE FROM audit_checkpoints WHERE tree_size > 8; DELETE FROM audit_leaves WHERE leaf_index >= 8; \
             DELETE FROM audit_tree_hashes WHERE idx >= 15; \
             DELETE FROM audit_events WHERE request_id IN ('req-9', 'req-10', 'req-11', 'req-12')",
        )
        .await;
        assert!(verdict(&t, &options(&key)).await.is_valid());
        let external = VerifyOptions {
            external_checkpoint: Some(newer.clone()),
            ..options(&key)
        };
        assert_break(&verdict(&t, &external).await, BreakKind::Rollback, Some(8));
        // Presenting the older checkpoint as the newer one is refused too.
        assert!(matches!(
            verify_consistency(&newer, &older, &[], &key.verifier().unwrap()),
            Err(ProofFailure::Rollback(_))
        ));
    }
}

#[tokio::test]
async fn a_forked_log_fails_the_consistency_check() {
    let key = signer();
    let verifier = key.verifier().unwrap();
    let a = TestDatabase::new(Backend::Postgres).await;
    let b = TestDatabase::new(Backend::Sqlite).await;
    let (ia, ib) = (integrator(&a, &key), integrator(&b, &key));
    // The same six events in both: the same tree, the same signed root.
    let shared: Vec<_> = (1..=6).map(event).collect();
    append(&a.db, shared.clone(), TIMEOUT).await.unwrap();
    append(&b.db, shared, TIMEOUT).await.unwrap();
    ia.integrate_all().await.unwrap();
    ib.integrate_all().await.unwrap();
    let common_note = newest_note(&a).await;
    let root = |note: &str| SignedCheckpoint::open(note, &verifier).unwrap().root;
    assert_eq!(
        root(&common_note),
        root(&newest_note(&b).await),
        "same events, same root"
    );
    // Then they diverge.
    append(&a.db, (7..=9).map(event).collect(), TIMEOUT)
        .await
        .unwrap();
    append(&b.db, vec![event(70), event(80), event(90)], TIMEOUT)
        .await
        .unwrap();
    ia.integrate_all().await.unwrap();
    ib.integrate_all().await.unwrap();
    let (na, nb) = (newest_note(&a).await, newest_note(&b).await);
    // Same size, different roots: a fork, even without a proof.
    assert!(matches!(
        verify_consistency(&na, &nb, &[], &verifier),
        Err(ProofFailure::Fork(_))
    ));
    // Each extends the shared checkpoint…
    let pa = prove_consistency(&a.db, 6, None).await.unwrap();
    pa.verify(&verifier).unwrap();
    prove_consistency(&b.db, 6, None)
        .await
        .unwrap()
        .verify(&verifier)
        .unwrap();
    // …but a's proof does not make b's checkpoint an extension of it.
    let mismatched = ConsistencyBundle {
        new: nb.clone(),
        ..pa.clone()
    };
    assert!(matches!(
        mismatched.verify(&verifier),
        Err(ProofFailure::Fork(_))
    ));
    // A flipped bit in the proof fails.
    let mut flipped = pa.clone();
    let first = if flipped.proof[0].starts_with('0') {
        "1"
    } else {
        "0"
    };
    flipped.proof[0].replace_range(0..1, first);
    assert!(flipped.verify(&verifier).is_err());
}

#[tokio::test]
async fn nothing_in_the_database_can_excuse_a_deleted_row() {
    for backend in Backend::ALL {
        let key = signer();
        // A forged permit: the trigger lets the DELETE through, verify does not.
        let t = TestDatabase::new(backend).await;
        log_of(&t, 10, &key).await;
        t.execute("INSERT INTO audit_prune_permits (id) VALUES (1)")
            .await;
        t.execute("DELETE FROM audit_events WHERE request_id IN ('req-1', 'req-2')")
            .await;
        t.execute("DELETE FROM audit_prune_permits").await;
        assert_break(
            &verdict(&t, &options(&key)).await,
            BreakKind::Deleted,
            Some(0),
        );

        // A forged prune record queued by a database writer: the integrator
        // refuses to put it in the tree, so it excuses nothing.
        let t = TestDatabase::new(backend).await;
        let integrator = log_of(&t, 10, &key).await;
        let fake =
            serde_json::json!({"first_leaf": 0, "last_leaf": 4, "before": "2030-01-01T00:00:00Z"})
                .to_string();
        let id = uuid::Uuid::now_v7();
        tamper(
            &t,
            &format!(
                "DELETE FROM audit_events WHERE request_id IN ('req-1', 'req-2'); \
                 INSERT INTO audit_events (id, request_id, kind, timestamp, caller_id, method, decision, \
                 raw_args_hash, sanitized_args, redaction_flags, risk_labels) \
                 SELECT {uid}, 'prune-fake', 'prune', timestamp, 'operator', 'audit.prune', 'ALLOW', raw_args_hash, \
                 '{fake}', '[]', '[]' FROM audit_events WHERE request_id = 'req-3'; \
                 INSERT INTO audit_pending (event_id) VALUES ({uid})",
                uid = sql_uuid(backend, &id.to_string()),
            ),
        )
        .await;
        integrator.integrate_all().await.unwrap();
        let v = verdict(&t, &options(&key)).await;
        assert!(
            matches!(&v, Verification::Broken(b) if matches!(b.kind, BreakKind::Deleted | BreakKind::Inserted)),
            "{backend:?}: {v:?}"
        );

        // Deleted checkpoint rows: leaves left uncovered past the window.
        let t = TestDatabase::new(backend).await;
        log_of(&t, 5, &key).await;
        tamper(&t, "DELETE FROM audit_checkpoints").await;
        let strict = VerifyOptions {
            integration_window: Some(Duration::ZERO),
            ..options(&key)
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_break(
            &verdict(&t, &strict).await,
            BreakKind::Unintegrated,
            Some(0),
        );
    }
}

#[tokio::test]
async fn log_tables_refuse_update_delete_and_truncate() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        log_of(&t, 3, &key).await;
        let mut statements = vec![
            "UPDATE audit_events SET reason = 'x'",
            "DELETE FROM audit_events",
            "UPDATE audit_leaves SET leaf_index = leaf_index + 100",
            "DELETE FROM audit_leaves",
            "DELETE FROM audit_tree_hashes",
            "UPDATE audit_checkpoints SET note = 'x'",
            "DELETE FROM audit_checkpoints",
        ];
        if backend == Backend::Postgres {
            statements.extend([
                "TRUNCATE audit_events",
                "TRUNCATE audit_leaves",
                "TRUNCATE audit_tree_hashes",
                "TRUNCATE audit_checkpoints",
            ]);
        }
        for sql in statements {
            let err = t.db.execute_unprepared(sql).await.expect_err(sql);
            assert!(
                err.to_string().contains("append-only"),
                "{backend:?} {sql}: {err}"
            );
        }
        assert!(verdict(&t, &options(&key)).await.is_valid());
    }
}

#[tokio::test]
async fn inclusion_proofs_check_offline_and_name_what_was_altered() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let verifier = key.verifier().unwrap();
        log_of(&t, 13, &key).await;
        for i in 1..=13 {
            let bundle = prove_inclusion(&t.db, &format!("req-{i}")).await.unwrap();
            assert_eq!(bundle.leaf_index, i as u64 - 1);
            let json = serde_json::to_string(&bundle).unwrap();
            InclusionBundle::verify_json(&json, &verifier).unwrap();
        }
        let bundle = prove_inclusion(&t.db, "req-5").await.unwrap();
        let mut edited = bundle.clone();
        edited.event.caller_id = "someone-else".into();
        assert!(matches!(
            edited.verify(&verifier),
            Err(ProofFailure::LeafContent(_))
        ));
        let mut edited = bundle.clone();
        edited.leaf_index += 1;
        assert!(matches!(
            edited.verify(&verifier),
            Err(ProofFailure::Path(_))
        ));
        let mut edited = bundle.clone();
        edited.proof[0] = "0".repeat(64);
        assert!(matches!(
            edited.verify(&verifier),
            Err(ProofFailure::Path(_))
        ));
        let mut edited = bundle.clone();
        edited.checkpoint = edited.checkpoint.replacen("\n13\n", "\n14\n", 1);
        assert!(matches!(
            edited.verify(&verifier),
            Err(ProofFailure::Signature(_))
        ));
        let other = CheckpointVerifier::parse(signer().verifier_key()).unwrap();
        assert!(matches!(
            bundle.verify(&other),
            Err(ProofFailure::Signature(_))
        ));
        assert!(InclusionBundle::verify_json("{not json", &verifier).is_err());
    }
}

#[tokio::test]
async fn prune_keeps_the_tree_and_every_proof_and_is_itself_a_leaf() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let verifier = key.verifier().unwrap();
        let integrator = integrator(&t, &key);
        aged_log(&t, &integrator, 25, 17).await;
        let before_prune = newest_note(&t).await;
        let report = prune(
            &integrator,
            chrono::Utc::now() - chrono::Duration::days(30),
            "ops-alice",
            5,
        )
        .await
        .unwrap();
        assert_eq!(
            (report.deleted, report.prune_leaves),
            (17, 4),
            "{backend:?}"
        );
        let v = verdict(&t, &options(&key)).await;
        assert!(
            matches!(
                v,
                Verification::Valid {
                    tree_size: 29,
                    pruned: 17,
                    rows_checked: 12,
                    ..
                }
            ),
            "{backend:?}: {v:?}"
        );
        // Remaining events still prove; the new checkpoint extends the old one.
        let bundle = prove_inclusion(&t.db, "req-20").await.unwrap();
        bundle.verify(&verifier).unwrap();
        let after = newest_note(&t).await;
        verify_consistency(
            &before_prune,
            &after,
            &prove_consistency(&t.db, 25, None).await.unwrap().proof,
            &verifier,
        )
        .unwrap();
        // The prune leaves say who pruned what.
        let records = audit_events::Entity::find()
            .all(&t.db)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.kind == "prune")
            .collect::<Vec<_>>();
        assert_eq!(records.len(), 4);
        assert!(records.iter().all(|r| r.caller_id == "ops-alice"));
        // Pruning again changes nothing; new events still append and verify.
        let again = prune(
            &integrator,
            chrono::Utc::now() - chrono::Duration::days(30),
            "ops-alice",
            5,
        )
        .await
        .unwrap();
        assert_eq!(again.deleted, 0);
        append(&t.db, vec![event(26)], TIMEOUT).await.unwrap();
        integrator.integrate_all().await.unwrap();
        assert!(verdict(&t, &options(&key)).await.is_valid());
        // A pruned row that reappears is checked like any other row.
        let q = AuditQuery::new(t.db.clone());
        assert!(q.get_by_request_id("req-3").await.unwrap().is_none());
    }
}

#[tokio::test]
async fn raw_secrets_never_reach_a_stored_row() {
    let secrets = [
        "hunter2-correct-horse",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "AKIAIOSFODNN7EXAMPLE",
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
        "s3cr3t-bearer-value-xyz",
        "pg-pass-w0rd",
    ];
    let args = json!({
        "user": "alice",
        "password": secrets[0],
        "config": {"github": {"token": secrets[1]}, "note": format!("use {} please", secrets[1])},
        "headers": [{"Authorization": format!("Bearer {}", secrets[5])}, {"x": format!("jwt={}", secrets[2])}],
        "env": format!("AWS_ACCESS_KEY_ID={} other", secrets[3]),
        "key": format!("-----BEGIN RSA PRIVATE KEY-----\n{}\n-----END RSA PRIVATE KEY-----", secrets[4]),
        "dsn_text": format!("postgres://app:{}@db.internal:5432/app", secrets[6]),
    });
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let e = event_with("req-secret", "agent-1", Decision::Allow, &args, None);
        append(&t.db, vec![e], TIMEOUT).await.unwrap();
        integrator(&t, &key).integrate_all().await.unwrap();
        let row = audit_events::Entity::find()
            .one(&t.db)
            .await
            .unwrap()
            .unwrap();
        let text = format!("{row:?}");
        let db_text = match backend {
            Backend::Postgres => t
                .strings("SELECT row_to_json(a)::text FROM audit_events a")
                .await
                .join(""),
            Backend::Sqlite => t
                .strings(
                    "SELECT sanitized_args || redaction_flags || coalesce(reason, '') || request_id \
                     FROM audit_events",
                )
                .await
                .join(""),
        };
        let bundle =
            serde_json::to_string(&prove_inclusion(&t.db, "req-secret").await.unwrap()).unwrap();
        for secret in secrets {
            for (what, haystack) in [("row", &text), ("db", &db_text), ("proof", &bundle)] {
                assert!(
                    !haystack.contains(secret),
                    "{backend:?}: {secret} in the {what}"
                );
            }
        }
        assert!(db_text.contains("alice"), "non-secret data is kept");
        let stored = AuditQuery::new(t.db.clone())
            .get_by_request_id("req-secret")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.raw_args_hash(),
            warden_audit::canonical_hash(&args).unwrap()
        );
    }
}

#[tokio::test]
async fn export_writes_json_lines_in_leaf_order() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        log_of(&t, 7, &signer()).await;
        let mut out = Vec::new();
        let n = export(
            &t.db,
            Some(2),
            Some(5),
            warden_audit::DEFAULT_STEP_TIMEOUT,
            &mut out,
        )
        .await
        .unwrap();
        assert_eq!(n, 4);
        let ids: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["request_id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(ids, ["req-3", "req-4", "req-5", "req-6"]);
    }
}

#[tokio::test]
async fn a_cancelled_or_timed_out_append_or_integration_leaves_nothing_behind() {
    let t = TestDatabase::postgres().await;
    let key = signer();
    let integrator = log_of(&t, 3, &key).await;
    let mut all = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<_> = (0..5)
            .map(|i| event(100 + (round * 5 + i) as usize))
            .collect();
        all.extend(batch.clone());
        if round % 2 == 0 {
            let _ = tokio::time::timeout(
                Duration::from_micros(round * 150),
                append(&t.db, batch, TIMEOUT),
            )
            .await;
            let _ = tokio::time::timeout(
                Duration::from_micros(round * 100),
                integrator.integrate_once(true),
            )
            .await;
        } else {
            let r = append(&t.db, batch, Duration::from_micros(round * 150)).await;
            assert!(
                r.is_ok() || matches!(r, Err(warden_audit::AuditError::Timeout { .. })),
                "{r:?}"
            );
        }
    }
    let mut quiet = false;
    for _ in 0..100 {
        let busy = t
            .strings(
                "SELECT (count(*) FILTER (WHERE state LIKE 'idle in transaction%') + \
                 (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = \
                 (SELECT oid FROM pg_database WHERE datname = current_database())))::text \
                 FROM pg_stat_activity WHERE datname = current_database()",
            )
            .await;
        if busy == ["0"] {
            quiet = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(quiet, "a transaction or advisory lock was left behind");
    // Replaying everything stores each event once. A batch still committing in
    // the background can collide once on the unique index; the retry (as the
    // logger does) then skips what it stored.
    let mut replayed = append(&t.db, all.clone(), TIMEOUT).await;
    for _ in 0..5 {
        if replayed.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        replayed = append(&t.db, all.clone(), TIMEOUT).await;
    }
    replayed.unwrap();
    integrator.integrate_all().await.unwrap();
    let v = verdict(&t, &options(&key)).await;
    assert!(
        matches!(v, Verification::Valid { tree_size, .. } if tree_size == 3 + all.len() as u64),
        "{v:?}"
    );
    let _ =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT 1",
        ))
        .await
        .unwrap();
}

/// Rows written under the hash chain (migrations 1–5) become the first
/// leaves, in chain order, when migration 6 runs.
#[tokio::test]
async fn chain_rows_become_the_first_leaves_after_the_migration() {
    for backend in Backend::ALL {
        let t = TestDatabase::empty(backend).await;
        migration::run(&t.db, migration::Command::Up(Some(5)))
            .await
            .unwrap();
        // Three chain rows as the old writer stored them (ids deliberately
        // out of seq order: chain order wins).
        for (seq, id) in [
            (1, "00000000-0000-7000-8000-000000000003"),
            (2, "00000000-0000-7000-8000-000000000001"),
            (3, "00000000-0000-7000-8000-000000000002"),
        ] {
            let (uuid, now) = match backend {
                Backend::Postgres => (format!("'{id}'::uuid"), "now()".to_owned()),
                Backend::Sqlite => (
                    sql_uuid(backend, id),
                    "'2026-11-24T10:00:00.000000+00:00'".to_owned(),
                ),
            };
            t.execute(&format!(
                "INSERT INTO audit_events (id, seq, request_id, timestamp, caller_id, method, decision, \
                 raw_args_hash, sanitized_args, redaction_flags, risk_labels, prev_hash, hash) VALUES \
                 ({uuid}, {seq}, 'legacy-{seq}', {now}, 'agent', 'tools/call', 'ALLOW', '{h}', '{{\"n\":{seq}}}', \
                 '[]', '[]', '{prev:064x}', '{seq:064x}')",
                h = "e".repeat(64),
                prev = seq - 1,
            ))
            .await;
        }
        migration::run(&t.db, migration::Command::Up(None))
            .await
            .unwrap();
        let key = signer();
        let integrator = integrator(&t, &key);
        append(&t.db, vec![event(4)], TIMEOUT).await.unwrap();
        integrator.integrate_all().await.unwrap();
        let order: Vec<String> = {
            let leaves = audit_leaves::Entity::find()
                .order_by_asc(audit_leaves::Column::LeafIndex)
                .all(&t.db)
                .await
                .unwrap();
            let mut out = Vec::new();
            for l in leaves {
                let row = audit_events::Entity::find_by_id(l.event_id)
                    .one(&t.db)
                    .await
                    .unwrap()
                    .unwrap();
                out.push(row.request_id);
            }
            out
        };
        assert_eq!(
            order,
            ["legacy-1", "legacy-2", "legacy-3", "req-4"],
            "{backend:?}"
        );
        let v = verdict(&t, &options(&key)).await;
        assert!(
            matches!(v, Verification::Valid { tree_size: 4, .. }),
            "{backend:?}: {v:?}"
        );
        prove_inclusion(&t.db, "legacy-2")
            .await
            .unwrap()
            .verify(&key.verifier().unwrap())
            .unwrap();
    }
}

/// Each checkpoint reaches the publish file and the publish URL, and a URL
/// that refuses does not stop integration.
#[tokio::test]
async fn checkpoints_are_published_to_a_file_and_a_url() {
    let t = TestDatabase::new(Backend::Sqlite).await;
    let key = signer();
    let mut sink = warden_testkit::HttpSink::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("checkpoint.txt");
    let integrator = Integrator::new(
        t.db.clone(),
        IntegratorConfig {
            signer: Some(key.clone()),
            publisher: warden_audit::CheckpointPublisher::new(&[
                file.display().to_string(),
                sink.url(),
            ])
            .unwrap(),
            checkpoint_interval: Duration::ZERO,
            ..IntegratorConfig::default()
        },
    );
    for round in 0..2 {
        append(
            &t.db,
            vec![event(round * 2 + 1), event(round * 2 + 2)],
            TIMEOUT,
        )
        .await
        .unwrap();
        integrator.integrate_all().await.unwrap();
        let got = sink.next(Duration::from_secs(10)).await.expect("a POST");
        let note = String::from_utf8(got.body.clone()).unwrap();
        let cp = SignedCheckpoint::open(&note, &key.verifier().unwrap()).unwrap();
        assert_eq!(cp.size, (round as u64 + 1) * 2);
    }
    // The file always holds the latest note.
    let mut latest = String::new();
    for _ in 0..100 {
        latest = std::fs::read_to_string(&file).unwrap_or_default();
        if latest == newest_note(&t).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(latest, newest_note(&t).await);
}

/// Prune decides on the content the tree commits to: a row edited to look
/// old (or to look like a prune record) is refused, not deleted or passed over.
#[tokio::test]
async fn prune_refuses_rows_edited_to_look_prunable() {
    for backend in Backend::ALL {
        for edit in [
            "timestamp = (SELECT timestamp FROM audit_events WHERE request_id = 'req-1')",
            "kind = 'prune'",
        ] {
            let t = TestDatabase::new(backend).await;
            let key = signer();
            let integrator = integrator(&t, &key);
            aged_log(&t, &integrator, 10, 6).await;
            tamper(
                &t,
                &format!("UPDATE audit_events SET {edit} WHERE request_id = 'req-7'"),
            )
            .await;
            let refused = prune(
                &integrator,
                chrono::Utc::now() - chrono::Duration::days(30),
                "ops",
                100,
            )
            .await;
            assert!(
                matches!(&refused, Err(warden_audit::AuditError::Tampered { reason }) if reason.contains("leaf 6")),
                "{backend:?} {edit}: {refused:?}"
            );
            assert_eq!(
                t.strings("SELECT CAST(count(*) AS TEXT) FROM audit_events")
                    .await,
                ["10"],
                "nothing pruned"
            );
        }
    }
}

/// A log rolled back behind a running integrator's back and re-filled
/// differently is refused: the integrator never signs a fork of a tree it
/// signed before.
#[tokio::test]
async fn an_integrator_never_signs_a_fork_of_what_it_signed() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = signer();
        let integrator = log_of(&t, 8, &key).await;
        // Back to the 4-leaf checkpoint, req-6 gone, the rest queued again.
        tamper(
            &t,
            "DELETE FROM audit_checkpoints WHERE tree_size > 4; DELETE FROM audit_leaves WHERE leaf_index >= 4; \
             DELETE FROM audit_tree_hashes WHERE idx >= 7; DELETE FROM audit_events WHERE request_id = 'req-6'; \
             INSERT INTO audit_pending (event_id) SELECT id FROM audit_events WHERE request_id IN ('req-5', 'req-7', 'req-8')",
        )
        .await;
        let refused = integrator.integrate_all().await;
        assert!(
            matches!(&refused, Err(warden_audit::AuditError::Tampered { reason }) if reason.contains("rolled back")),
            "{backend:?}: {refused:?}"
        );
        assert_eq!(
            t.strings("SELECT CAST(max(tree_size) AS TEXT) FROM audit_checkpoints")
                .await,
            ["4"],
            "nothing signed on top of the rollback"
        );
    }
}
