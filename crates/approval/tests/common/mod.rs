//! Fixtures shared by the approval tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use warden_approval::{ApprovalManager, ApprovalRequest, ApprovalToken, IssueOutcome};
use warden_cache::{Cache, KeyPrefix, RedisPool, RedisPoolConfig};
use warden_testkit::{TestDatabase, TestRedis};

/// A manager plus the storage behind it (kept alive for the test).
pub struct Fixture {
    pub manager: ApprovalManager,
    pub cache: Cache,
    pub db: TestDatabase,
    pub redis: Option<TestRedis>,
}

pub fn redis_cache(url: &str, prefix: &str) -> Cache {
    Cache::redis(
        RedisPool::new(RedisPoolConfig::new(url, 16, Duration::from_millis(500))).unwrap(),
        KeyPrefix::new(prefix).unwrap(),
    )
}

/// PostgreSQL + Redis (production pair).
pub async fn postgres_redis() -> Fixture {
    let db = TestDatabase::postgres().await;
    let redis = TestRedis::new().await;
    let cache = redis_cache(&redis.url, &redis.prefix);
    Fixture {
        manager: ApprovalManager::new(db.db.clone(), cache.clone(), Duration::from_secs(60))
            .with_poll_interval(Duration::from_millis(50)),
        cache,
        db,
        redis: Some(redis),
    }
}

/// SQLite + in-process cache (embedded default).
pub async fn sqlite_in_process() -> Fixture {
    let db = TestDatabase::sqlite().await;
    let cache = Cache::in_process(KeyPrefix::new("test").unwrap(), 10_000);
    Fixture {
        manager: ApprovalManager::new(db.db.clone(), cache.clone(), Duration::from_secs(60))
            .with_poll_interval(Duration::from_millis(50)),
        cache,
        db,
        redis: None,
    }
}

pub fn request(request_id: &str) -> ApprovalRequest {
    ApprovalRequest {
        request_id: request_id.to_owned(),
        caller_id: "agent-7".into(),
        tool_name: "db.drop_table".into(),
        sanitized_tool_call: json!({"table": "users", "password": "[REDACTED]"}),
        raw_args_hash: "ab".repeat(32),
        risk_labels: vec!["destructive".into()],
        policy_version: "default".into(),
        ttl: None,
    }
}

pub fn issued(outcome: IssueOutcome) -> ApprovalToken {
    match outcome {
        IssueOutcome::Issued { token, .. } => token,
        other => panic!("expected a new approval, got {other:?}"),
    }
}

/// The cache key the manager uses for `token`.
pub fn cache_key(token: &ApprovalToken) -> String {
    format!("approval:{}", token.hash())
}
