//! The migrations, run against real PostgreSQL and SQLite: what `up` creates,
//! that `up` twice changes nothing, and that `down` removes all of it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use migration::{Command, Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::ConnectionTrait;
use warden_testkit::{Backend, TestDatabase};

const TABLES: [&str; 8] = [
    "api_keys",
    "approval_requests",
    "audit_checkpoints",
    "audit_events",
    "audit_leaves",
    "audit_pending",
    "audit_prune_permits",
    "audit_tree_hashes",
];

/// The tables before the transparency log (migrations 1–5).
const CHAIN_TABLES: [&str; 5] = [
    "api_keys",
    "approval_requests",
    "audit_chain_anchors",
    "audit_events",
    "audit_prune_permits",
];

const INDEXES: [&str; 15] = [
    "ux_approval_requests_pending_request",
    "ix_approval_requests_request_id",
    "ix_approval_requests_status",
    "ix_approval_requests_status_expires_at",
    "ix_audit_events_caller_id_id",
    "ix_audit_events_decision_id",
    "ix_audit_events_kind",
    "ix_audit_events_timestamp",
    "ux_api_keys_caller_id",
    "ux_api_keys_key_prefix",
    "ux_approval_requests_token_hash",
    "ix_audit_events_request_id",
    "ux_audit_leaves_event_id",
    "ux_audit_pending_event_id",
    "ux_api_keys_caller_id",
];

fn expected_indexes() -> Vec<String> {
    let mut v: Vec<String> = INDEXES.iter().map(|s| s.to_string()).collect();
    v.sort();
    v.dedup();
    v
}

async fn tables(t: &TestDatabase) -> Vec<String> {
    t.strings(match t.backend {
        Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name <> 'seaql_migrations'"
        }
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations'"
        }
    })
    .await
}

/// Named secondary indexes (primary keys and SQLite's automatic ones left out).
async fn indexes(t: &TestDatabase) -> Vec<String> {
    t.strings(match t.backend {
        Backend::Postgres => {
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' \
             AND indexname NOT LIKE '%_pkey'"
        }
        Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'"
        }
    })
    .await
}

/// Unique indexes only.
async fn unique_indexes(t: &TestDatabase) -> Vec<String> {
    match t.backend {
        Backend::Postgres => {
            t.strings(
                "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' \
                 AND indexdef LIKE 'CREATE UNIQUE INDEX%' AND indexname NOT LIKE '%_pkey'",
            )
            .await
        }
        Backend::Sqlite => {
            t.strings(
                "SELECT name FROM sqlite_master WHERE type = 'index' \
                 AND sql LIKE 'CREATE UNIQUE INDEX%'",
            )
            .await
        }
    }
}

/// Everything about the schema that a migration could change: columns with
/// their types, nullability and defaults, index definitions and constraints.
async fn catalog(t: &TestDatabase) -> Vec<String> {
    match t.backend {
        Backend::Postgres => {
            let mut all = t
                .strings(
                    "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || \
                     is_nullable || ' ' || coalesce(column_default, '') || ' ' || \
                     coalesce(character_maximum_length::text, '') \
                     FROM information_schema.columns WHERE table_schema = 'public'",
                )
                .await;
            all.extend(
                t.strings("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")
                    .await,
            );
            all.extend(
                t.strings(
                    "SELECT tgname::text || ' ' || pg_get_triggerdef(oid) FROM pg_trigger \
                     WHERE NOT tgisinternal",
                )
                .await,
            );
            all.extend(
                t.strings(
                    "SELECT conrelid::regclass::text || ' ' || contype::text || ' ' || \
                     pg_get_constraintdef(oid) FROM pg_constraint \
                     WHERE connamespace = 'public'::regnamespace",
                )
                .await,
            );
            all.sort();
            all
        }
        Backend::Sqlite => {
            t.strings(
                "SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master \
                 WHERE name NOT LIKE 'sqlite_%'",
            )
            .await
        }
    }
}

async fn for_each_backend<F, Fut>(test: F)
where
    F: Fn(TestDatabase) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for backend in Backend::ALL {
        test(TestDatabase::empty(backend).await).await;
    }
}

#[tokio::test]
async fn up_creates_every_table_and_named_index() {
    for_each_backend(|t| async move {
        migration::run(&t.db, Command::Up(None)).await.unwrap();
        assert_eq!(tables(&t).await, TABLES, "{:?}", t.backend);
        assert_eq!(indexes(&t).await, expected_indexes(), "{:?}", t.backend);
        assert_eq!(
            unique_indexes(&t).await,
            [
                "ux_api_keys_caller_id",
                "ux_api_keys_key_prefix",
                "ux_approval_requests_pending_request",
                "ux_approval_requests_token_hash",
                "ux_audit_leaves_event_id",
                "ux_audit_pending_event_id",
            ],
            "{:?}",
            t.backend
        );
    })
    .await;
}

#[tokio::test]
async fn postgres_uses_jsonb_and_timestamptz() {
    let t = TestDatabase::empty(Backend::Postgres).await;
    migration::run(&t.db, Command::Up(None)).await.unwrap();
    let json_types = t
        .strings(
            "SELECT DISTINCT data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND column_name IN \
             ('sanitized_args', 'redaction_flags', 'risk_labels', 'tool_call')",
        )
        .await;
    assert_eq!(json_types, ["jsonb"]);
    let time_types = t
        .strings(
            "SELECT DISTINCT data_type::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> 'seaql_migrations' AND \
             (column_name LIKE '%_at' OR column_name = 'timestamp')",
        )
        .await;
    assert_eq!(time_types, ["timestamp with time zone"]);
}

#[tokio::test]
async fn up_twice_is_a_noop_the_second_time() {
    for_each_backend(|t| async move {
        let first = migration::run(&t.db, Command::Up(None)).await.unwrap();
        let before = catalog(&t).await;
        let second = migration::run(&t.db, Command::Up(None)).await.unwrap();
        assert_eq!(first, second);
        assert!(second.iter().all(|m| m.applied));
        assert_eq!(catalog(&t).await, before, "{:?}", t.backend);
    })
    .await;
}

#[tokio::test]
async fn down_removes_everything_up_made() {
    for_each_backend(|t| async move {
        migration::run(&t.db, Command::Up(None)).await.unwrap();
        let states = migration::run(&t.db, Command::Down(None)).await.unwrap();
        assert!(states.iter().all(|m| !m.applied), "{states:?}");
        assert!(tables(&t).await.is_empty(), "{:?}", t.backend);
        assert!(indexes(&t).await.is_empty(), "{:?}", t.backend);
    })
    .await;
}

#[tokio::test]
async fn down_then_up_restores_the_identical_schema() {
    for_each_backend(|t| async move {
        Migrator::up(&t.db, None).await.unwrap();
        let before = catalog(&t).await;
        assert!(!before.is_empty());
        Migrator::refresh(&t.db).await.unwrap();
        assert_eq!(catalog(&t).await, before, "{:?}", t.backend);
    })
    .await;
}

#[tokio::test]
async fn down_one_step_reverts_only_the_newest_migration() {
    for_each_backend(|t| async move {
        migration::run(&t.db, Command::Up(None)).await.unwrap();
        // Back from bound approvals: request ids unique again, EXECUTED refused.
        let states = migration::run(&t.db, Command::Down(Some(1))).await.unwrap();
        let applied: Vec<bool> = states.iter().map(|m| m.applied).collect();
        assert_eq!(applied, [true, true, true, true, true, true, false]);
        assert_eq!(tables(&t).await, TABLES, "{:?}", t.backend);
        let back = indexes(&t).await;
        assert!(
            back.contains(&"ux_audit_events_request_id".to_owned())
                && back.contains(&"ux_approval_requests_pending_request".to_owned())
                && !back.contains(&"ix_audit_events_request_id".to_owned()),
            "{:?}: {back:?}",
            t.backend
        );
        // Back from the transparency log (empty): the chain schema returns.
        let states = migration::run(&t.db, Command::Down(Some(1))).await.unwrap();
        let applied: Vec<bool> = states.iter().map(|m| m.applied).collect();
        assert_eq!(applied, [true, true, true, true, true, false, false]);
        assert_eq!(tables(&t).await, CHAIN_TABLES, "{:?}", t.backend);
        assert!(
            indexes(&t)
                .await
                .contains(&"ux_audit_events_seq".to_owned()),
            "{:?}",
            t.backend
        );
        let states = migration::run(&t.db, Command::Down(Some(1))).await.unwrap();
        let applied: Vec<bool> = states.iter().map(|m| m.applied).collect();
        assert_eq!(applied, [true, true, true, true, false, false, false]);
        assert_eq!(tables(&t).await, CHAIN_TABLES, "{:?}", t.backend);
        let after_one = indexes(&t).await;
        assert!(
            !after_one.contains(&"ux_approval_requests_pending_request".to_owned()),
            "{after_one:?}"
        );
        // One more step back: migration 4's tables go, its replaced indexes return.
        migration::run(&t.db, Command::Down(Some(1))).await.unwrap();
        assert_eq!(
            tables(&t).await,
            ["api_keys", "approval_requests", "audit_events"],
            "{:?}",
            t.backend
        );
        let after_two = indexes(&t).await;
        assert!(
            after_two.contains(&"ix_audit_events_caller_id".to_owned()),
            "{after_two:?}"
        );
        assert!(
            !after_two.contains(&"ix_audit_events_caller_seq".to_owned()),
            "{after_two:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn status_on_an_empty_database_writes_nothing() {
    for_each_backend(|t| async move {
        let states = migration::status(&t.db).await.unwrap();
        assert_eq!(states.len(), 7);
        assert!(states.iter().all(|m| !m.applied));
        let all_tables = t
            .strings(match t.backend {
                Backend::Postgres => {
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = 'public'"
                }
                Backend::Sqlite => "SELECT name FROM sqlite_master WHERE type = 'table'",
            })
            .await;
        assert!(all_tables.is_empty(), "status created {all_tables:?}");
    })
    .await;
}

#[tokio::test]
async fn approval_status_outside_the_enum_is_refused() {
    for_each_backend(|t| async move {
        Migrator::up(&t.db, None).await.unwrap();
        let id = "'0191f6c2-0000-7000-8000-000000000001'";
        let insert = |status: &str| {
            format!(
                "INSERT INTO approval_requests (id, token_hash, request_id, caller_id, tool_name, \
                 tool_call, raw_args_hash, risk_labels, status, expires_at) VALUES ({id}, \
                 '{h}', 'r1', 'c1', 't', '{{}}', '{h}', '[]', '{status}', CURRENT_TIMESTAMP)",
                h = "a".repeat(64)
            )
        };
        let refused = t.db.execute_unprepared(&insert("MAYBE")).await;
        assert!(
            refused.is_err(),
            "{:?}: CHECK constraint missing",
            t.backend
        );
        t.db.execute_unprepared(&insert("PENDING")).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_transparency_log_refuses_to_roll_back_over_entries() {
    for_each_backend(|t| async move {
        migration::run(&t.db, Command::Up(None)).await.unwrap();
        t.execute(
            "INSERT INTO audit_pending (event_id) VALUES ('00000000-0000-0000-0000-000000000001')",
        )
        .await;
        t.execute(match t.backend {
            Backend::Postgres => {
                "INSERT INTO audit_leaves (leaf_index, event_id, leaf_hash, integrated_at) \
                 VALUES (0, '00000000-0000-0000-0000-000000000001', repeat('a', 64), now())"
            }
            Backend::Sqlite => {
                "INSERT INTO audit_leaves (leaf_index, event_id, leaf_hash, integrated_at) \
                 VALUES (0, X'00000000000000000000000000000001', 'aa', '2026-01-01T00:00:00+00:00')"
            }
        })
        .await;
        let err = migration::run(&t.db, Command::Down(Some(2)))
            .await
            .expect_err("rolled back over a non-empty log");
        assert!(err.to_string().contains("export"), "{err}");
        assert_eq!(tables(&t).await, TABLES, "{:?}: nothing dropped", t.backend);
    })
    .await;
}

#[tokio::test]
async fn executed_approvals_and_shared_request_ids_refuse_a_roll_back() {
    for_each_backend(|t| async move {
        migration::run(&t.db, Command::Up(None)).await.unwrap();
        let h = "a".repeat(64);
        t.execute(&format!(
            "INSERT INTO approval_requests (id, token_hash, request_id, caller_id, tool_name, \
             tool_call, raw_args_hash, risk_labels, status, expires_at) VALUES \
             ('0191f6c2-0000-7000-8000-000000000009', '{h}', 'r1', 'c1', 't', '{{}}', '{h}', \
             '[]', 'EXECUTED', CURRENT_TIMESTAMP)"
        ))
        .await;
        let err = migration::run(&t.db, Command::Down(Some(1)))
            .await
            .expect_err("EXECUTED cannot go back");
        assert!(err.to_string().contains("EXECUTED"), "{err}");
        let states = migration::status(&t.db).await.unwrap();
        assert!(
            states.iter().all(|m| m.applied),
            "{:?}: nothing rolled back",
            t.backend
        );
        assert_eq!(tables(&t).await, TABLES, "{:?}", t.backend);
    })
    .await;
}

#[tokio::test]
async fn approval_history_is_immutable_for_every_role() {
    for_each_backend(|t| async move {
        migration::run(&t.db, Command::Up(None)).await.unwrap();
        let h = "b".repeat(64);
        t.execute(&format!(
            "INSERT INTO approval_requests (id, token_hash, request_id, caller_id, tool_name, \
             tool_call, raw_args_hash, risk_labels, status, expires_at) VALUES \
             ('0191f6c2-0000-7000-8000-00000000000a', '{h}', 'r1', 'c1', 't', '{{}}', '{h}', \
             '[]', 'PENDING', CURRENT_TIMESTAMP)"
        ))
        .await;
        let update = |set: &str| format!("UPDATE approval_requests SET {set}");
        let refused = |sql: String| {
            let db = t.db.clone();
            async move {
                let result = db.execute_unprepared(&sql).await;
                assert!(
                    result
                        .as_ref()
                        .is_err_and(|e| e.to_string().contains("immutable")),
                    "{sql}: {result:?}"
                );
            }
        };
        refused(update("tool_name = 'other'")).await;
        refused(update("status = 'EXECUTED'")).await;
        t.execute(&update(
            "status = 'APPROVED', approver_id = 'alice', decided_at = CURRENT_TIMESTAMP",
        ))
        .await;
        refused(update("approver_id = 'mallory'")).await;
        refused(update("status = 'DENIED'")).await;
        t.execute(&update(
            "status = 'EXECUTED', executed_at = CURRENT_TIMESTAMP",
        ))
        .await;
        refused(update("status = 'APPROVED'")).await;
        let other_hash = format!("raw_args_hash = '{}'", "c".repeat(64));
        refused(update(&other_hash)).await;
    })
    .await;
}
