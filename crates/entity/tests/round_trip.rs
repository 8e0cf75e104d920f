//! Every entity round-trips through the migrated tables on both backends, with
//! every column filled: the entities and the migrations agree.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, TimeZone, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel};
use serde_json::json;
use uuid::Uuid;
use warden_entity::{api_keys, approval_requests, audit_events};
use warden_testkit::{Backend, TestDatabase};

/// Microsecond precision: what `timestamptz` keeps.
fn at(micros: i64) -> DateTime<Utc> {
    Utc.timestamp_micros(1_790_000_000_000_000 + micros)
        .unwrap()
}

fn api_key() -> api_keys::Model {
    api_keys::Model {
        id: Uuid::now_v7(),
        caller_id: "agent-7".into(),
        key_prefix: "wdn_dev_abc123".into(),
        key_hash: "$2b$12$abcdefghijklmnopqrstuuJ3i1pDpB1Xh7pVfMZBLlK6Gd4yPjW6".into(),
        role: "developer".into(),
        trust_level: 2,
        environment: "development".into(),
        is_active: true,
        created_at: at(1),
        last_used_at: Some(at(2)),
        revoked_at: Some(at(3)),
        expires_at: Some(at(4)),
    }
}

fn audit_event() -> audit_events::Model {
    audit_events::Model {
        id: Uuid::now_v7(),
        request_id: "req-1".into(),
        timestamp: at(123_456),
        caller_id: "agent-7".into(),
        api_key_id: Some(Uuid::now_v7()),
        method: "tools/call".into(),
        tool_name: Some("shell.exec".into()),
        decision: "ALLOW".into(),
        reason: Some("policy: developer may run shell".into()),
        raw_args_hash: "b".repeat(64),
        sanitized_args: json!({"cmd": "ls", "env": {"TOKEN": "[REDACTED]"}, "n": [1, 2.5, null]}),
        redaction_flags: json!([{"path": "$.env.TOKEN", "reason": "key_name"}]),
        risk_labels: json!(["shell"]),
        status_code: Some(200),
        latency_ms: Some(42),
        kind: "tool_call".into(),
        leaf_hash: Some("c".repeat(64)),
    }
}

fn approval() -> approval_requests::Model {
    approval_requests::Model {
        id: Uuid::now_v7(),
        token_hash: "d".repeat(64),
        request_id: "req-2".into(),
        caller_id: "agent-7".into(),
        tool_name: "db.drop".into(),
        tool_call: json!({"name": "db.drop", "arguments": {"table": "users"}}),
        raw_args_hash: "e".repeat(64),
        risk_labels: json!(["destructive"]),
        status: "PENDING".into(),
        created_at: at(10),
        expires_at: at(20),
        decided_at: Some(at(30)),
        approver_id: Some("alice".into()),
        note: Some("ok'; DROP TABLE api_keys; --".into()),
        policy_version: "policy-v1".into(),
        execute_by: Some(at(40)),
        executed_at: Some(at(50)),
    }
}

#[tokio::test]
async fn every_entity_round_trips_on_both_backends() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;

        let key = api_key();
        key.clone().into_active_model().insert(&t.db).await.unwrap();
        let read = api_keys::Entity::find_by_id(key.id)
            .one(&t.db)
            .await
            .unwrap();
        assert_eq!(read, Some(key), "{backend:?}");

        let event = audit_event();
        event
            .clone()
            .into_active_model()
            .insert(&t.db)
            .await
            .unwrap();
        let read = audit_events::Entity::find_by_id(event.id)
            .one(&t.db)
            .await
            .unwrap();
        assert_eq!(read, Some(event), "{backend:?}");

        let request = approval();
        request
            .clone()
            .into_active_model()
            .insert(&t.db)
            .await
            .unwrap();
        let read = approval_requests::Entity::find_by_id(request.id)
            .one(&t.db)
            .await
            .unwrap();
        assert_eq!(read, Some(request), "{backend:?}");
        // The hostile-looking note was stored verbatim and did nothing.
        assert_eq!(api_keys::Entity::find().all(&t.db).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn unique_columns_refuse_duplicates_on_both_backends() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let first = api_key();
        first
            .clone()
            .into_active_model()
            .insert(&t.db)
            .await
            .unwrap();
        let same_caller = api_keys::Model {
            id: Uuid::now_v7(),
            key_prefix: "wdn_dev_other".into(),
            ..first.clone()
        };
        assert!(same_caller.into_active_model().insert(&t.db).await.is_err());
        let same_prefix = api_keys::Model {
            id: Uuid::now_v7(),
            caller_id: "someone-else".into(),
            ..first
        };
        assert!(same_prefix.into_active_model().insert(&t.db).await.is_err());

        let event = audit_event();
        event
            .clone()
            .into_active_model()
            .insert(&t.db)
            .await
            .unwrap();
        // One call may have several events (held, then executed): the same
        // request_id under a new id is stored; the same id never is.
        audit_events::Model {
            id: Uuid::now_v7(),
            ..event.clone()
        }
        .into_active_model()
        .insert(&t.db)
        .await
        .unwrap();
        let same_id = audit_events::Model {
            request_id: "req-x".into(),
            ..event.clone()
        };
        assert!(
            same_id.into_active_model().insert(&t.db).await.is_err(),
            "{backend:?}: a duplicate id was accepted"
        );
        let stored = audit_events::Entity::find().all(&t.db).await.unwrap();
        assert_eq!(stored.len(), 2, "{backend:?}");
        assert!(stored.contains(&event));
    }
}

#[tokio::test]
async fn server_defaults_fill_created_at_and_is_active() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let id = Uuid::now_v7();
        let id_literal = match backend {
            Backend::Postgres => format!("'{id}'"),
            // sqlx stores UUIDs in SQLite as 16-byte blobs.
            Backend::Sqlite => format!("x'{}'", id.simple()),
        };
        t.db.execute_unprepared(&format!(
            "INSERT INTO api_keys (id, caller_id, key_prefix, key_hash, role, trust_level, environment) \
             VALUES ({id_literal}, 'c', 'p', 'h', 'r', 1, 'test')"
        ))
        .await
        .unwrap();
        let row = api_keys::Entity::find_by_id(id)
            .one(&t.db)
            .await
            .unwrap()
            .unwrap();
        assert!(row.is_active, "{backend:?}");
        let age = Utc::now() - row.created_at;
        assert!(
            age.num_seconds().abs() < 300,
            "{backend:?}: created_at = {}",
            row.created_at
        );
    }
}
