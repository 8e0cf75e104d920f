//! Redis failure paths on servers the tests own: stopped, paused, blackholed,
//! exhausted, cancelled mid-command, scripts flushed. Every failure is a typed
//! error within the configured timeouts, and the pool recovers by itself.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use warden_cache::{
    Cache, CacheError, FailMode, KeyPrefix, RateLimit, RateLimiter, RedisPool, RedisPoolConfig,
    Ttl, redis,
};
use warden_testkit::{Blackhole, PrivateRedis, TestRedis};

/// Generous bound that proves "no hang" without timing anything finely.
const NO_HANG: Duration = Duration::from_secs(10);

fn config(url: &str, max_size: usize) -> RedisPoolConfig {
    RedisPoolConfig::new(url, max_size, Duration::from_millis(300))
}

fn cache(url: &str, max_size: usize) -> Cache {
    Cache::redis(
        RedisPool::new(config(url, max_size)).unwrap(),
        KeyPrefix::new("fault").unwrap(),
    )
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, f).await.expect("call hung")
}

fn ttl() -> Ttl {
    Ttl::from_secs(60).unwrap()
}

#[tokio::test]
async fn a_cancelled_command_never_hands_its_reply_to_the_next_one() {
    let redis = TestRedis::new().await;
    let mut cfg = config(&redis.url, 1);
    cfg.command_timeout = Duration::from_secs(5);
    let pool = RedisPool::new(cfg).unwrap();
    let cache = Cache::redis(pool.clone(), KeyPrefix::new(&redis.prefix).unwrap());
    cache.set_json("a", &"value-a", ttl()).await.unwrap();
    cache.set_json("b", &"value-b", ttl()).await.unwrap();
    let list = format!("{}empty-list", redis.prefix);

    for round in 0..10 {
        // A slow command (blocks server-side for 200 ms) cancelled after 20 ms.
        let mut blpop = redis::cmd("BLPOP");
        blpop.arg(&list).arg(0.2);
        let cancelled = tokio::time::timeout(
            Duration::from_millis(20),
            pool.query::<Option<(String, String)>>(&blpop),
        )
        .await;
        assert!(
            cancelled.is_err(),
            "round {round}: BLPOP should have been cancelled"
        );
        // The only pooled connection is reused: its next reply must be its own.
        assert_eq!(
            cache.get_json::<String>("b").await.unwrap().as_deref(),
            Some("value-b"),
            "round {round}"
        );
        // Cancel a fast command at a random point too.
        let _ =
            tokio::time::timeout(Duration::from_micros(50), cache.get_json::<String>("a")).await;
        assert_eq!(
            cache.get_json::<String>("a").await.unwrap().as_deref(),
            Some("value-a"),
            "round {round}"
        );
    }
}

#[tokio::test]
async fn stopped_redis_gives_typed_errors_and_the_pool_recovers_after_restart() {
    let mut server = PrivateRedis::start().await;
    let cache = cache(&server.url(), 4);
    cache.set_json("k", &1, ttl()).await.unwrap();

    server.stop();
    for _ in 0..5 {
        let started = Instant::now();
        let err = bounded(cache.get_json::<i32>("k")).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    server.restart().await; // a fresh, empty server on the same port
    let mut recovered = false;
    for _ in 0..50 {
        if bounded(cache.set_json("k", &2, ttl())).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recovered, "the pool never reconnected");
    assert_eq!(cache.get_json::<i32>("k").await.unwrap(), Some(2));
}

#[tokio::test]
async fn paused_redis_times_out_then_recovers() {
    let server = PrivateRedis::start().await;
    let cache = cache(&server.url(), 4);
    cache.set_json("k", &1, ttl()).await.unwrap();

    server.pause();
    let err = bounded(cache.get_json::<i32>("k")).await.unwrap_err();
    server.resume();
    assert!(matches!(err, CacheError::Timeout { .. }), "{err:?}");

    let mut value = None;
    for _ in 0..50 {
        if let Ok(v) = bounded(cache.get_json::<i32>("k")).await {
            value = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(value, Some(1));
}

#[tokio::test]
async fn blackholed_redis_times_out_on_connect() {
    let hole = Blackhole::start().await;
    let cache = cache(&format!("redis://127.0.0.1:{}", hole.port()), 4);
    let err = bounded(cache.set_json("k", &1, ttl())).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn an_exhausted_pool_is_a_typed_error_after_the_wait_timeout() {
    let redis = TestRedis::new().await;
    let pool = RedisPool::new(config(&redis.url, 2)).unwrap();
    let held_a = pool.get().await.unwrap();
    let held_b = pool.get().await.unwrap();
    let Err(err) = bounded(pool.get()).await else {
        panic!("a third connection was handed out of a pool of two");
    };
    assert!(matches!(err, CacheError::PoolExhausted { .. }), "{err:?}");
    drop(held_a);
    drop(bounded(pool.get()).await.unwrap());
    drop(held_b);
    // No permit leaked: both connections can be held again.
    let _a = pool.get().await.unwrap();
    let _b = pool.get().await.unwrap();
}

#[tokio::test]
async fn scripts_reload_after_script_flush_and_restart() {
    let mut server = PrivateRedis::start().await;
    let cache = cache(&server.url(), 2);
    assert_eq!(cache.incr("n", 1, ttl()).await.unwrap(), 1);

    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        cache.incr("n", 1, ttl()).await.unwrap(),
        2,
        "EVALSHA must fall back to loading"
    );

    server.restart().await;
    let mut value = None;
    for _ in 0..50 {
        if let Ok(v) = cache.incr("n", 1, ttl()).await {
            value = Some(v);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        value,
        Some(1),
        "a restarted (empty) server starts a new counter"
    );
}

#[tokio::test]
async fn rate_limiter_fails_closed_by_default_and_open_when_configured() {
    let mut server = PrivateRedis::start().await;
    let cache = cache(&server.url(), 2);
    let limit = RateLimit::new(10, Duration::from_secs(60)).unwrap();
    let closed = RateLimiter::new(cache.clone(), "closed", limit, FailMode::default());
    let open = RateLimiter::new(cache.clone(), "open", limit, FailMode::Open);
    assert!(closed.check("s").await.unwrap().allowed);

    server.stop();
    let d = bounded(closed.check("s")).await.unwrap();
    assert!(d.degraded && !d.allowed, "{d:?}");
    let d = bounded(open.check("s")).await.unwrap();
    assert!(d.degraded && d.allowed, "{d:?}");

    server.restart().await;
    let mut back = None;
    for _ in 0..50 {
        let d = closed.check("s").await.unwrap();
        if !d.degraded {
            back = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back.is_some_and(|d| d.allowed), "{back:?}");
}
