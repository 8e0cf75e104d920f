//! The secret-leak test: the demo flow (key, audited calls carrying secrets,
//! an approval) runs with every log line captured at TRACE, on both backend
//! pairs; no key, token or redacted secret appears in the logs, in any stored
//! column, or in the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use warden_approval::{ApprovalRequest, IssueOutcome};
use warden_audit::{AuditEvent, Decision, ToolCall, VerifyOptions, verify};
use warden_cache::redis;
use warden_core::{Settings, Warden};
use warden_keys::NewKey;
use warden_testkit::{Backend, LogCapture, TestDatabase, TestRedis};

const URL_QUERY_SECRET: &str = "url-query-s3cret";
const WEBHOOK_PATH_SECRET: &str = "hook-path-s3cret";

const SECRETS: [&str; 6] = [
    "hunter2-prod-password",
    "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
    "AKIAIOSFODNN7EXAMPLE",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.c2lnbmF0dXJlLXZhbHVl",
    "pg-url-s3cret",
];

async fn stored_text(db: &TestDatabase) -> String {
    let tables = [
        "api_keys",
        "audit_events",
        "approval_requests",
        "audit_leaves",
        "audit_tree_hashes",
        "audit_checkpoints",
        "audit_pending",
    ];
    let mut all = String::new();
    for table in tables {
        let sql = match db.backend {
            Backend::Postgres => format!("SELECT row_to_json(t)::text FROM {table} t"),
            // Every column of every row, as text (blobs as hex).
            Backend::Sqlite => format!("SELECT quote(t.*) FROM {table} t"),
        };
        let rows = match db.backend {
            Backend::Postgres => db.strings(&sql).await,
            Backend::Sqlite => {
                let cols = db
                    .strings(&format!("SELECT name FROM pragma_table_info('{table}')"))
                    .await;
                let expr = cols
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ' ' || ");
                db.strings(&format!("SELECT {expr} FROM {table}")).await
            }
        };
        all.push_str(&rows.join("\n"));
    }
    all
}

/// `db`'s URL as a role whose password (a unique string) travels in the
/// query: `postgres://role@host/db?password=…`.
async fn url_with_query_password(db: &TestDatabase) -> String {
    db.execute(&format!(
        "DO $$ BEGIN CREATE ROLE warden_url_secret LOGIN SUPERUSER PASSWORD '{URL_QUERY_SECRET}'; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
    ))
    .await;
    let mut url = url::Url::parse(&db.url).unwrap();
    url.set_username("warden_url_secret").unwrap();
    url.set_password(None).unwrap();
    url.query_pairs_mut()
        .append_pair("password", URL_QUERY_SECRET);
    url.to_string()
}

#[tokio::test]
async fn the_demo_flow_leaks_no_secret_anywhere() {
    let logs = LogCapture::install();
    for backend in Backend::ALL {
        let db = TestDatabase::new(backend).await;
        let redis = TestRedis::new().await;
        let spill = tempfile_path(backend);
        // Credentials in a URL's query (accepted by sqlx) must not be logged
        // either: `Warden::connect` logs the URL at INFO.
        let database_url = match backend {
            Backend::Postgres => url_with_query_password(&db).await,
            Backend::Sqlite => db.url.clone(),
        };
        let mut vars: HashMap<&str, String> = HashMap::from([
            ("DATABASE_URL", database_url),
            ("BCRYPT_COST", "4".into()),
            ("AUDIT_SPILL_PATH", spill.clone()),
            (
                "AUDIT_CHAIN_KEY",
                "chain-key-for-the-secret-leak-test-000000".into(),
            ),
        ]);
        if backend == Backend::Postgres {
            vars.insert("REDIS_URL", redis.url.clone());
            vars.insert("CACHE_KEY_PREFIX", redis.prefix.clone());
        }
        let settings = Settings::from_lookup(|n| vars.get(n).cloned()).unwrap();
        let storage = Warden::connect(&settings).await.unwrap();

        // Keys.
        let keys = storage.keys().unwrap();
        let created = keys
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
        let plain = created.plaintext.expose().to_owned();
        let verified = keys.verify(&plain).await.unwrap();
        keys.verify(&plain).await.unwrap();
        tracing::trace!(key = ?created.plaintext, shown = %created.plaintext, "key types redact themselves");
        let webhook = warden_approval::WebhookNotifier::new(
            &format!(
                "https://hooks.example.com/services/{WEBHOOK_PATH_SECRET}?t={WEBHOOK_PATH_SECRET}"
            ),
            b"webhook-signing-secret-0000",
            Duration::from_secs(1),
            1,
        )
        .unwrap();
        tracing::info!(notifier = ?webhook, settings = ?settings, "configured");

        // Audited calls carrying secrets.
        let logger = storage.audit().logger();
        let args = json!({
            "password": SECRETS[0],
            "headers": {"Authorization": format!("Bearer {}", SECRETS[1])},
            "note": format!("push with {} then {}", SECRETS[2], SECRETS[3]),
            "jwt": SECRETS[4],
            "dsn": format!("postgres://app:{}@db/app", SECRETS[5]),
        });
        for i in 0..5 {
            let e = AuditEvent::record(
                &ToolCall {
                    request_id: &format!("req-{i}"),
                    caller_id: &verified.caller_id,
                    api_key_id: Some(verified.key_id),
                    method: "tools/call",
                    tool_name: Some("http.post"),
                    raw_args: (&args).into(),
                    decision: Decision::Allow,
                    reason: None,
                    risk_labels: &[],
                    status_code: Some(200),
                    latency_ms: Some(1),
                    timestamp: None,
                },
                &settings.redactor().unwrap(),
            )
            .unwrap();
            tracing::trace!(event = ?e, "audit event");
            logger.log(e);
        }
        logger.shutdown().await.unwrap();
        assert!(
            verify(storage.database(), &VerifyOptions::default())
                .await
                .unwrap()
                .is_valid()
        );

        // An approval.
        let approvals = storage.approvals();
        let IssueOutcome::Issued { token, .. } = approvals
            .issue(&ApprovalRequest {
                request_id: "held".into(),
                caller_id: "agent".into(),
                tool_name: "http.post".into(),
                sanitized_tool_call: settings.redactor().unwrap().redact(&args).unwrap().value,
                raw_args_hash: warden_audit::canonical_hash(&args).unwrap(),
                risk_labels: vec!["egress".into()],
                policy_version: "default".into(),
                ttl: None,
            })
            .await
            .unwrap()
        else {
            panic!()
        };
        approvals.check(token.expose()).await.unwrap();
        approvals
            .approve(token.expose(), "ops", Some("ok"))
            .await
            .unwrap();
        approvals
            .wait_for_decision(token.expose(), Duration::from_millis(100))
            .await
            .unwrap();
        let _ = approvals.deny(token.expose(), "mallory", None).await;
        let _ = approvals.check("not-a-token").await;
        let _ = keys.verify(&format!("{plain}x")).await;
        keys.revoke("agent", "tester").await.unwrap();
        let _ = keys.verify(&plain).await;

        let mut cached = String::new();
        if backend == Backend::Postgres {
            let client = redis::Client::open(redis.url.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            for key in redis.keys().await {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .unwrap_or(None);
                cached.push_str(&key);
                cached.push_str(&String::from_utf8_lossy(&v.unwrap_or_default()));
            }
            assert!(!cached.is_empty());
        }
        let stored = stored_text(&db).await;
        let spilled = std::fs::read_to_string(&spill).unwrap_or_default();
        let logged = logs.contents();
        assert!(
            logged.contains("TRACE") || logged.contains("DEBUG"),
            "capture works"
        );
        let key_secret = &plain[created.plaintext.prefix().len() + 1..];
        let mut forbidden: Vec<&str> = SECRETS.to_vec();
        forbidden.extend([plain.as_str(), key_secret, token.expose()]);
        forbidden.extend([URL_QUERY_SECRET, WEBHOOK_PATH_SECRET]);
        for secret in forbidden {
            for (place, text) in [
                ("logs", &logged),
                ("stored columns", &stored),
                ("cache", &cached),
                ("spill file", &spilled),
            ] {
                if let Some(at) = text.find(secret) {
                    let start = text[..at]
                        .char_indices()
                        .rev()
                        .nth(200)
                        .map_or(0, |(i, _)| i);
                    panic!(
                        "{backend:?}: {secret:.12}… found in {place}: …{}",
                        &text[start..at]
                    );
                }
            }
        }
        assert!(
            stored.contains("[REDACTED"),
            "{backend:?}: the redacted copy is stored"
        );
        storage.close().await.unwrap();
    }
}

fn tempfile_path(backend: Backend) -> String {
    std::env::temp_dir()
        .join(format!(
            "warden-secrets-{}-{backend:?}.spill",
            std::process::id()
        ))
        .display()
        .to_string()
}
