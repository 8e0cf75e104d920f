//! The hash chain on real PostgreSQL and SQLite: appends verify, every kind of
//! tampering is found at the right seq, secrets never reach a row, the tables
//! are append-only, prune keeps the remainder verifiable, and a cancelled
//! append leaves no transaction or lock behind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{event, event_with, tamper};
use sea_orm::{ConnectionTrait, EntityTrait, QueryOrder, Statement};
use serde_json::json;
use warden_audit::{
    AuditQuery, BreakKind, ChainHead, ChainKey, Decision, Verification, VerifyOptions, append,
    checkpoint, export, prune, row_hash, verify,
};
use warden_entity::audit_events;
use warden_testkit::{Backend, TestDatabase};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn chain_of(t: &TestDatabase, n: usize, key: Option<&ChainKey>) {
    // Several batches, so links across batch boundaries are covered too.
    let events: Vec<_> = (1..=n).map(event).collect();
    for chunk in events.chunks(4) {
        append(&t.db, chunk.to_vec(), key.cloned(), TIMEOUT)
            .await
            .unwrap();
    }
}

async fn verdict(t: &TestDatabase, key: Option<&ChainKey>, options: VerifyOptions) -> Verification {
    verify(&t.db, key, &options).await.unwrap()
}

fn assert_break(v: Verification, kind: BreakKind, seq: i64) {
    match v {
        Verification::Broken(b) => assert_eq!((b.kind, b.seq), (kind, seq), "{b}"),
        other => panic!("expected {kind:?} at {seq}, got {other:?}"),
    }
}

async fn rows(t: &TestDatabase) -> Vec<audit_events::Model> {
    audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Seq)
        .all(&t.db)
        .await
        .unwrap()
}

fn key() -> ChainKey {
    ChainKey::new(b"0123456789abcdef0123456789abcdef-test-key".to_vec()).unwrap()
}

#[tokio::test]
async fn appended_chain_verifies_gap_free_on_both_backends() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        assert_eq!(
            verdict(&t, None, VerifyOptions::default()).await,
            Verification::Valid {
                checked: 0,
                head: ChainHead::genesis()
            }
        );
        chain_of(&t, 10, None).await;
        let seqs: Vec<i64> = rows(&t).await.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{backend:?}");
        let head = checkpoint(&t.db).await.unwrap();
        assert_eq!(head.seq, 10);
        match verdict(
            &t,
            None,
            VerifyOptions {
                checkpoint: Some(head.clone()),
                ..Default::default()
            },
        )
        .await
        {
            Verification::Valid { checked, head: h } => assert_eq!((checked, h), (10, head)),
            other => panic!("{backend:?}: {other:?}"),
        }
        // A range verifies from the row before it.
        let ranged = verdict(
            &t,
            None,
            VerifyOptions {
                from_seq: Some(4),
                to_seq: Some(7),
                ..Default::default()
            },
        )
        .await;
        assert!(
            matches!(ranged, Verification::Valid { checked: 4, .. }),
            "{ranged:?}"
        );
    }
}

#[tokio::test]
async fn replayed_events_are_stored_once() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let events: Vec<_> = (1..=5).map(event).collect();
        let first = append(&t.db, events.clone(), None, TIMEOUT).await.unwrap();
        assert_eq!((first.inserted, first.duplicates), (5, 0));
        let mut again = events.clone();
        again.push(event(6));
        again.push(event(6));
        let second = append(&t.db, again, None, TIMEOUT).await.unwrap();
        assert_eq!((second.inserted, second.duplicates), (1, 6), "{backend:?}");
        assert_eq!(rows(&t).await.len(), 6);
        assert!(verdict(&t, None, VerifyOptions::default()).await.is_valid());
    }
}

#[tokio::test]
async fn modified_row_is_found_at_its_seq() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        tamper(
            &t,
            "UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 5",
        )
        .await;
        assert_break(
            verdict(&t, None, VerifyOptions::default()).await,
            BreakKind::Modified,
            5,
        );
    }
}

#[tokio::test]
async fn modified_json_column_is_found_at_its_seq() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        tamper(&t, r#"UPDATE audit_events SET sanitized_args = '{"i": 3, "q": "DROP TABLE users"}' WHERE seq = 3"#).await;
        assert_break(
            verdict(&t, None, VerifyOptions::default()).await,
            BreakKind::Modified,
            3,
        );
    }
}

#[tokio::test]
async fn deleted_row_is_found_at_its_seq() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        tamper(&t, "DELETE FROM audit_events WHERE seq = 5").await;
        assert_break(
            verdict(&t, None, VerifyOptions::default()).await,
            BreakKind::Deleted,
            5,
        );
    }
}

#[tokio::test]
async fn deleted_row_with_renumbered_successors_is_found() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        tamper(
            &t,
            "DELETE FROM audit_events WHERE seq = 5; \
             UPDATE audit_events SET seq = seq + 1000 WHERE seq > 5; \
             UPDATE audit_events SET seq = seq - 1001 WHERE seq > 1000",
        )
        .await;
        assert_break(
            verdict(&t, None, VerifyOptions::default()).await,
            BreakKind::Deleted,
            5,
        );
    }
}

#[tokio::test]
async fn inserted_row_is_found_at_its_seq() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        let before = rows(&t).await;
        // The attacker makes room at seq 6 and forges a self-consistent row there.
        tamper(
            &t,
            "DROP INDEX ux_audit_events_prev_hash; \
             UPDATE audit_events SET seq = seq + 1000 WHERE seq > 5; \
             UPDATE audit_events SET seq = seq - 999 WHERE seq > 1000",
        )
        .await;
        let mut forged = before[5].clone();
        forged.id = uuid::Uuid::now_v7();
        forged.seq = 6;
        forged.request_id = "forged".into();
        forged.decision = "ALLOW".into();
        forged.prev_hash = before[4].hash.clone();
        forged.hash = row_hash(None, &forged).unwrap();
        audit_events::Entity::insert(audit_events::ActiveModel::from(forged))
            .exec_without_returning(&t.db)
            .await
            .unwrap();
        assert_break(
            verdict(&t, None, VerifyOptions::default()).await,
            BreakKind::Inserted,
            6,
        );
    }
}

#[tokio::test]
async fn reordered_rows_are_found() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        tamper(
            &t,
            "UPDATE audit_events SET seq = 1005 WHERE seq = 5; \
             UPDATE audit_events SET seq = 5 WHERE seq = 6; \
             UPDATE audit_events SET seq = 6 WHERE seq = 1005",
        )
        .await;
        assert_break(
            verdict(&t, None, VerifyOptions::default()).await,
            BreakKind::Reordered,
            5,
        );
    }
}

#[tokio::test]
async fn truncated_tail_is_found_against_an_exported_checkpoint() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        let exported = checkpoint(&t.db).await.unwrap();
        tamper(&t, "DELETE FROM audit_events WHERE seq > 8").await;
        // Without the checkpoint a cut tail is indistinguishable from a shorter log.
        assert!(verdict(&t, None, VerifyOptions::default()).await.is_valid());
        let options = VerifyOptions {
            checkpoint: Some(exported),
            ..Default::default()
        };
        assert_break(verdict(&t, None, options).await, BreakKind::Truncated, 9);
    }
}

/// Rewrites seq `from..` with `reason` changed at `from`, recomputing every
/// hash with plain SHA-256: what someone with database access but no chain key can do.
async fn rewrite_suffix_without_key(t: &TestDatabase, from: usize) {
    let mut rows = rows(t).await;
    rows[from - 1].reason = Some("rewritten".into());
    let mut prev = rows[from - 2].hash.clone();
    let mut sql = Vec::new();
    for row in rows.iter_mut().skip(from - 1) {
        row.prev_hash = prev.clone();
        row.hash = row_hash(None, row).unwrap();
        prev = row.hash.clone();
        sql.push(format!(
            "UPDATE audit_events SET reason = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {}",
            row.reason.clone().unwrap_or_default(),
            row.prev_hash,
            row.hash,
            row.seq
        ));
    }
    // prev_hash values shift by one row: lift the unique backstop as a superuser would.
    tamper(
        t,
        &format!("DROP INDEX ux_audit_events_prev_hash; {}", sql.join("; ")),
    )
    .await;
}

#[tokio::test]
async fn keyed_chain_detects_a_suffix_recomputed_without_the_key() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let key = key();
        chain_of(&t, 10, Some(&key)).await;
        assert!(
            verdict(&t, Some(&key), VerifyOptions::default())
                .await
                .is_valid()
        );
        rewrite_suffix_without_key(&t, 6).await;
        assert_break(
            verdict(&t, Some(&key), VerifyOptions::default()).await,
            BreakKind::Modified,
            6,
        );
        // Verifying with the wrong key fails at the first row.
        let wrong = ChainKey::new(vec![9u8; 32]).unwrap();
        assert_break(
            verdict(&t, Some(&wrong), VerifyOptions::default()).await,
            BreakKind::Modified,
            1,
        );
    }
}

#[tokio::test]
async fn unkeyed_chain_rewrite_is_caught_by_the_checkpoint() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 10, None).await;
        let exported = checkpoint(&t.db).await.unwrap();
        rewrite_suffix_without_key(&t, 6).await;
        // Internally consistent again — which is why the head must be exported.
        assert!(verdict(&t, None, VerifyOptions::default()).await.is_valid());
        let options = VerifyOptions {
            checkpoint: Some(exported),
            ..Default::default()
        };
        assert_break(verdict(&t, None, options).await, BreakKind::Modified, 10);
    }
}

#[tokio::test]
async fn audit_rows_refuse_update_delete_and_truncate() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 3, None).await;
        let mut statements = vec![
            "UPDATE audit_events SET reason = 'x' WHERE seq = 1",
            "DELETE FROM audit_events WHERE seq = 3",
        ];
        if backend == Backend::Postgres {
            statements.push("TRUNCATE audit_events");
        }
        for sql in statements {
            let err = t.db.execute_unprepared(sql).await.expect_err(sql);
            assert!(
                err.to_string().contains("append-only"),
                "{backend:?} {sql}: {err}"
            );
        }
        assert_eq!(rows(&t).await.len(), 3);
        assert!(verdict(&t, None, VerifyOptions::default()).await.is_valid());
    }
}

#[tokio::test]
async fn prune_keeps_the_rest_verifiable_and_records_an_anchor() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let old = chrono::Utc::now() - chrono::Duration::days(40);
        let events: Vec<_> = (1..=25)
            .map(|i| {
                let at = if i <= 17 {
                    Some(old + chrono::Duration::seconds(i as i64))
                } else {
                    None
                };
                event_with(
                    &format!("req-{i}"),
                    "agent-1",
                    Decision::Allow,
                    &json!({"i": i}),
                    at,
                )
            })
            .collect();
        append(&t.db, events, None, TIMEOUT).await.unwrap();
        let exported = checkpoint(&t.db).await.unwrap();
        let pruned = prune(&t.db, chrono::Utc::now() - chrono::Duration::days(30), 5)
            .await
            .unwrap();
        assert_eq!(pruned, 17, "{backend:?}");
        let remaining: Vec<i64> = rows(&t).await.iter().map(|r| r.seq).collect();
        assert_eq!(remaining, (18..=25).collect::<Vec<_>>());
        let v = verdict(
            &t,
            None,
            VerifyOptions {
                checkpoint: Some(exported),
                ..Default::default()
            },
        )
        .await;
        assert!(
            matches!(v, Verification::Valid { checked: 8, .. }),
            "{backend:?}: {v:?}"
        );
        // New appends continue the same chain.
        append(&t.db, vec![event(26)], None, TIMEOUT).await.unwrap();
        assert_eq!(checkpoint(&t.db).await.unwrap().seq, 26);
        assert!(verdict(&t, None, VerifyOptions::default()).await.is_valid());
        // Pruning everything still leaves a verifiable (empty) chain with its head.
        prune(&t.db, chrono::Utc::now() + chrono::Duration::days(1), 100)
            .await
            .unwrap();
        assert_eq!(checkpoint(&t.db).await.unwrap().seq, 26);
        assert!(verdict(&t, None, VerifyOptions::default()).await.is_valid());
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
        let e = event_with("req-secret", "agent-1", Decision::Allow, &args, None);
        append(&t.db, vec![e], None, TIMEOUT).await.unwrap();
        let row = rows(&t).await.remove(0);
        let text = format!("{row:?}");
        // The database's own text rendering of the row, too.
        let db_text = match backend {
            Backend::Postgres => t.strings("SELECT row_to_json(a)::text FROM audit_events a").await.join(""),
            Backend::Sqlite => t
                .strings(
                    "SELECT sanitized_args || redaction_flags || coalesce(reason, '') || request_id \
                     FROM audit_events",
                )
                .await
                .join(""),
        };
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{backend:?}: {secret} stored in {text}"
            );
            assert!(
                !db_text.contains(secret),
                "{backend:?}: {secret} stored in {db_text}"
            );
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
async fn export_writes_json_lines_in_seq_order() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        chain_of(&t, 7, None).await;
        let mut out = Vec::new();
        let n = export(&t.db, Some(3), Some(6), &mut out).await.unwrap();
        assert_eq!(n, 4);
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let seqs: Vec<i64> = lines
            .iter()
            .map(|l| l["chain"]["seq"].as_i64().unwrap())
            .collect();
        assert_eq!(seqs, [3, 4, 5, 6]);
        assert_eq!(lines[0]["request_id"], "req-3");
        assert_eq!(lines[0]["decision"], "ALLOW");
    }
}

#[tokio::test]
async fn a_cancelled_or_timed_out_append_leaves_no_transaction_or_lock() {
    let t = TestDatabase::postgres().await;
    chain_of(&t, 3, None).await;
    let mut all = Vec::new();
    for round in 0..20u64 {
        let batch: Vec<_> = (0..5)
            .map(|i| event(100 + (round * 5 + i) as usize))
            .collect();
        all.extend(batch.clone());
        if round % 2 == 0 {
            // Dropped mid-flight by the caller.
            let _ = tokio::time::timeout(
                Duration::from_micros(round * 150),
                append(&t.db, batch, None, TIMEOUT),
            )
            .await;
        } else {
            // Timed out by append itself.
            let r = append(&t.db, batch, None, Duration::from_micros(round * 150)).await;
            assert!(
                r.is_ok() || matches!(r, Err(warden_audit::AuditError::Timeout { .. })),
                "{r:?}"
            );
        }
    }
    // Whatever was in flight finishes on its own.
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
    // Replaying everything stores each event exactly once.
    append(&t.db, all.clone(), None, TIMEOUT).await.unwrap();
    let stored = rows(&t).await;
    assert_eq!(stored.len(), 3 + all.len());
    assert!(verdict(&t, None, VerifyOptions::default()).await.is_valid());
    let _ =
        t.db.query_one_raw(Statement::from_string(
            t.db.get_database_backend(),
            "SELECT 1",
        ))
        .await
        .unwrap();
}
