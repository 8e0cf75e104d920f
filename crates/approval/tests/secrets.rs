//! Tokens never appear in any log line (captured at TRACE for the whole
//! process), in any stored column, or in any cache key or value.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{issued, redis_cache, request};
use warden_approval::{ApprovalManager, LoggingNotifier};
use warden_cache::redis;
use warden_testkit::{LogCapture, TestDatabase, TestRedis};

#[tokio::test]
async fn tokens_never_reach_logs_columns_or_the_cache() {
    let logs = LogCapture::install();
    let db = TestDatabase::postgres().await;
    let redis_guard = TestRedis::new().await;
    let cache = redis_cache(&redis_guard.url, &redis_guard.prefix);
    let manager = ApprovalManager::new(db.db.clone(), cache.clone(), Duration::from_secs(60))
        .with_notifier(Arc::new(LoggingNotifier));

    let mut tokens = Vec::new();
    for i in 0..3 {
        let token = issued(manager.issue(&request(&format!("r-{i}"))).await.unwrap());
        manager.check(token.expose()).await.unwrap();
        if i == 0 {
            cache.delete(&common::cache_key(&token)).await.unwrap();
            manager.check(token.expose()).await.unwrap(); // database path
        }
        tracing::info!(token = ?token, shown = %token, "the token types redact themselves");
        tokens.push(token);
    }
    manager
        .approve(tokens[0].expose(), "alice", Some("ok"))
        .await
        .unwrap();
    manager.deny(tokens[1].expose(), "bob", None).await.unwrap();
    let _ = manager.approve(tokens[1].expose(), "carol", None).await;
    manager
        .wait_for_decision(tokens[2].expose(), Duration::from_millis(100))
        .await
        .unwrap();
    // Let background notifiers finish logging.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logged = logs.contents();
    assert!(
        logged.contains("approval pending"),
        "the logging notifier ran: {logged}"
    );
    let rows = db
        .strings("SELECT row_to_json(r)::text FROM approval_requests r")
        .await
        .join("\n");
    // A raw connection of the cache's own kind (single server or cluster).
    let mut pooled = cache.redis_pool().unwrap().get().await.unwrap();
    let conn = &mut *pooled;
    let mut cached = String::new();
    for key in redis_guard.keys().await {
        let value: Option<String> = redis::cmd("GET").arg(&key).query_async(conn).await.unwrap();
        cached.push_str(&key);
        cached.push_str(&value.unwrap_or_default());
    }
    assert!(!cached.is_empty());
    for token in &tokens {
        let secret = token.expose();
        assert!(!logged.contains(secret), "token in logs");
        assert!(!rows.contains(secret), "token in a stored column");
        assert!(!cached.contains(secret), "token in the cache");
        assert!(rows.contains(&token.hash()), "only the hash is stored");
    }
}
