//! `deploy/postgres-roles.sql`: the gateway role can run the whole gateway
//! flow (verify keys, approvals, audit append + integration) and cannot
//! UPDATE or DELETE the audit trail, prune it, or change API keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use sea_orm::ConnectionTrait;
use serde_json::json;
use warden_approval::{ApprovalRequest, IssueOutcome};
use warden_audit::{AuditEvent, Decision, Integrator, IntegratorConfig, ToolCall, append};
use warden_core::{Settings, Warden};
use warden_keys::NewKey;
use warden_testkit::TestDatabase;

const ROLES_SQL: &str = include_str!("../../../deploy/postgres-roles.sql");

const GATEWAY_LOGIN_PASSWORD: &str = "warden-gateway-login-test";

/// `db`'s URL as a login that is only a member of `warden_gateway`, as
/// the script's header tells operators to set it up.
async fn as_gateway_login(db: &TestDatabase) -> String {
    db.execute(&format!(
        "DO $$ BEGIN CREATE ROLE warden_gateway_login LOGIN PASSWORD '{GATEWAY_LOGIN_PASSWORD}'; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .await;
    db.execute("GRANT warden_gateway TO warden_gateway_login")
        .await;
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username("warden_gateway_login").unwrap();
    url.set_password(Some(GATEWAY_LOGIN_PASSWORD)).unwrap();
    url.to_string()
}

async fn storage(url: String) -> Warden {
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", url),
        ("BCRYPT_COST", "4".into()),
        ("DATABASE_MIN_CONNECTIONS", "0".into()),
    ]);
    Warden::connect(&Settings::from_lookup(|n| vars.get(n).cloned()).unwrap())
        .await
        .unwrap()
}

fn event(request_id: &str) -> AuditEvent {
    AuditEvent::record(
        &ToolCall {
            request_id,
            caller_id: "agent",
            api_key_id: None,
            method: "tools/call",
            tool_name: Some("db.drop_table"),
            raw_args: r#"{"table": "orders"}"#.into(),
            decision: Decision::Allow,
            reason: None,
            risk_labels: &[],
            status_code: Some(200),
            latency_ms: Some(1),
            timestamp: None,
        },
        &warden_audit::Redactor::default(),
    )
    .unwrap()
}

fn denied(result: Result<sea_orm::ExecResult, sea_orm::DbErr>, what: &str) {
    match result {
        Err(e) => assert!(
            [
                "permission denied",
                "must be owner",
                "immutable",
                "without its audit event",
                "cannot record",
            ]
            .iter()
            .any(|refusal| e.to_string().contains(refusal)),
            "{what}: refused for another reason: {e}"
        ),
        Ok(_) => panic!("{what}: the gateway role was allowed"),
    }
}

#[tokio::test]
async fn the_gateway_role_runs_the_gateway_and_cannot_rewrite_the_trail() {
    let t = TestDatabase::postgres().await;
    t.db.execute_unprepared(ROLES_SQL).await.unwrap();
    // Run twice: the script is safe to re-apply after upgrades.
    t.db.execute_unprepared(ROLES_SQL).await.unwrap();

    // The operator (owner) creates a key; the gateway does everything else.
    let admin = storage(t.url.clone()).await;
    let created = admin
        .keys()
        .unwrap()
        .create(&NewKey {
            actor: "tester",
            caller_id: "agent",
            role: "developer",
            trust_level: 2,
            environment: "test",
            expires_at: None,
        })
        .await
        .unwrap();

    let gateway = storage(as_gateway_login(&t).await).await;
    let who: String = gateway
        .database()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT current_user::text AS u",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "u")
        .unwrap();
    assert_eq!(who, "warden_gateway_login");

    let keys = gateway.keys().unwrap();
    keys.verify(created.plaintext.expose()).await.unwrap();

    let approvals = gateway.approvals();
    let request = ApprovalRequest {
        request_id: "held-1".into(),
        caller_id: "agent".into(),
        tool_name: "db.drop_table".into(),
        sanitized_tool_call: json!({"table": "orders"}),
        raw_args_hash: warden_audit::canonical_hash_text(r#"{"table": "orders"}"#).unwrap(),
        risk_labels: vec!["destructive".into()],
        policy_version: "default".into(),
        ttl: Some(Duration::from_secs(60)),
    };
    let IssueOutcome::Issued { token, .. } = approvals.issue(&request).await.unwrap() else {
        panic!("not issued")
    };
    approvals
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    approvals
        .consume(token.expose(), &request.binding())
        .await
        .unwrap();

    append(
        gateway.database(),
        vec![event("held-1"), event("held-1"), event("r-2")],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let integrated = Integrator::new(gateway.database().clone(), IntegratorConfig::default())
        .integrate_all()
        .await
        .unwrap();
    // 3 tool-call events + 4 admin events (key.create, approval.issue,
    // approval.approve, approval.consume) recorded with their changes.
    assert_eq!(integrated.tree_size, 7);

    // The gateway records its own approval changes, and nothing else.
    let forged = warden_audit::AuditEvent::admin(
        &warden_audit::AdminAction {
            actor: "secops",
            action: "key.revoke",
            resource_type: "api_key",
            resource_id: "agent",
            request_id: None,
            args_hash: None,
            note: None,
            summary: &json!({}),
        },
        &warden_audit::Redactor::default(),
    )
    .unwrap();
    let txn = sea_orm::TransactionTrait::begin(gateway.database())
        .await
        .unwrap();
    let err = warden_audit::record_in(&txn, &[forged]).await.unwrap_err();
    assert!(err.to_string().contains("cannot record"), "{err}");
    drop(txn);
    // A bare UPDATE cannot decide a held call off the record.
    let IssueOutcome::Issued { .. } = approvals
        .issue(&ApprovalRequest {
            request_id: "held-2".into(),
            ..request.clone()
        })
        .await
        .unwrap()
    else {
        panic!("not issued")
    };
    denied(
        gateway
            .database()
            .execute_unprepared(
                "UPDATE approval_requests SET status = 'APPROVED', approver_id = 'alice', \
                 decided_at = now(), execute_by = now() + interval '1 minute' \
                 WHERE request_id = 'held-2'",
            )
            .await,
        "approve off the record",
    );

    for (what, sql) in [
        (
            "UPDATE audit_events",
            "UPDATE audit_events SET caller_id = 'x'",
        ),
        ("DELETE audit_events", "DELETE FROM audit_events"),
        (
            "UPDATE audit_leaves",
            "UPDATE audit_leaves SET leaf_hash = leaf_hash",
        ),
        ("DELETE audit_leaves", "DELETE FROM audit_leaves"),
        ("DELETE audit_tree_hashes", "DELETE FROM audit_tree_hashes"),
        ("DELETE audit_checkpoints", "DELETE FROM audit_checkpoints"),
        ("TRUNCATE audit_events", "TRUNCATE audit_events"),
        (
            "grant itself a prune permit",
            "INSERT INTO audit_prune_permits (id) VALUES (1)",
        ),
        ("raise a key's role", "UPDATE api_keys SET role = 'admin'"),
        (
            "mint a key",
            "INSERT INTO api_keys (id, caller_id, key_prefix, key_hash, role, trust_level, environment) VALUES (gen_random_uuid(), 'c', 'p', 'h', 'admin', 9, 'test')",
        ),
        ("delete approvals", "DELETE FROM approval_requests"),
        (
            "rewrite who approved",
            "UPDATE approval_requests SET approver_id = 'mallory'",
        ),
        (
            "re-arm a used approval",
            "UPDATE approval_requests SET status = 'APPROVED'",
        ),
        (
            "change the schema",
            "ALTER TABLE audit_events DROP COLUMN leaf_hash",
        ),
    ] {
        denied(gateway.database().execute_unprepared(sql).await, what);
    }
    let rows: i64 = admin
        .database()
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT COUNT(*) AS n FROM audit_events",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get("", "n")
        .unwrap();
    assert_eq!(rows, 8, "nothing was lost (7 + the second issue's event)");
}
