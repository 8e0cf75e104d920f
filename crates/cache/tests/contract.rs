//! The cache contract, run against real Redis and against the in-process
//! backend: every test below runs once per backend.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use warden_cache::{
    Cache, CacheError, FailMode, KeyPrefix, MAX_VALUE_BYTES, RateLimit, RateLimiter, RedisPool,
    RedisPoolConfig, Ttl, redis,
};
use warden_testkit::TestRedis;

/// A cache plus whatever must live as long as it (the Redis prefix guard).
struct Fixture {
    cache: Cache,
    redis: Option<TestRedis>,
}

impl Fixture {
    /// Another cache on the same backend and storage, under another prefix.
    fn sibling(&self, prefix: &str) -> Cache {
        let prefix = KeyPrefix::new(&format!("{}{prefix}", self.cache.prefix())).unwrap();
        match self.cache.redis_pool() {
            Some(pool) => Cache::redis(pool.clone(), prefix),
            None => panic!("in-process siblings share no storage; use a Redis fixture"),
        }
    }

    /// Writes raw bytes or a foreign Redis type under a key, bypassing the API.
    async fn plant_raw(&self, key: &str, value: &[u8]) {
        self.cache
            .set_bytes(key, value.to_vec(), Ttl::from_secs(60).unwrap())
            .await
            .unwrap();
    }
}

fn pool_config(url: &str, max_size: usize) -> RedisPoolConfig {
    RedisPoolConfig {
        wait_timeout: Duration::from_secs(5),
        ..RedisPoolConfig::new(url, max_size, Duration::from_secs(2))
    }
}

async fn redis_fixture() -> Fixture {
    let redis = TestRedis::new().await;
    let pool = RedisPool::new(pool_config(&redis.url, 16)).unwrap();
    Fixture {
        cache: Cache::redis(pool, KeyPrefix::new(&redis.prefix).unwrap()),
        redis: Some(redis),
    }
}

async fn in_process_fixture() -> Fixture {
    Fixture {
        cache: Cache::in_process(KeyPrefix::new("test").unwrap(), 10_000),
        redis: None,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Approval {
    id: u64,
    status: String,
    labels: Vec<String>,
    note: Option<String>,
}

fn sample() -> Approval {
    Approval {
        id: 7,
        status: "PENDING".into(),
        labels: vec!["destructive".into(), "ünïcødé ✓".into()],
        note: Some("'; DROP TABLE x; --\u{0}\n".into()),
    }
}

fn secs(n: u64) -> Ttl {
    Ttl::from_secs(n).unwrap()
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::redis_fixture().await).await; })*
        }
        mod in_process {
            $(#[tokio::test] async fn $name() { super::$name(super::in_process_fixture().await).await; })*
        }
    };
}

contract!(
    json_round_trip,
    missing_key_is_none,
    values_expire,
    every_write_has_a_ttl,
    set_if_absent_does_not_overwrite,
    replace_keeps_the_remaining_ttl_and_never_creates,
    take_returns_once,
    delete_reports_presence,
    corrupt_value_is_a_miss,
    foreign_json_shape_is_a_miss,
    counters_get_expiry_on_first_increment,
    concurrent_increments_lose_nothing,
    counter_over_a_corrupt_value_is_a_typed_error,
    rate_limiter_allows_exactly_the_limit_under_concurrency,
    rate_limiter_reports_remaining_and_retry_after,
    rate_limiter_refuses_invalid_costs,
    rate_limiter_subjects_are_independent,
    rate_limiter_names_and_subjects_never_share_state,
    hostile_keys_are_refused_or_stored_verbatim,
    oversized_values_are_refused,
    publish_reaches_subscribers_of_that_channel_only,
);

async fn publish_reaches_subscribers_of_that_channel_only(f: Fixture) {
    let mut mine = f.cache.subscribe("decided:1").await.unwrap();
    let mut other = f.cache.subscribe("decided:2").await.unwrap();
    f.cache.publish("decided:1", b"APPROVED").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), mine.next())
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"APPROVED"[..]));
    let nothing = tokio::time::timeout(Duration::from_millis(200), other.next()).await;
    assert!(nothing.is_err(), "a message leaked to another channel");
    // Publishing with no subscriber is fine.
    f.cache.publish("decided:3", b"x").await.unwrap();
}

async fn json_round_trip(f: Fixture) {
    f.cache.set_json("a:1", &sample(), secs(60)).await.unwrap();
    assert_eq!(
        f.cache.get_json::<Approval>("a:1").await.unwrap(),
        Some(sample())
    );
    // Overwrite.
    let other = Approval { id: 8, ..sample() };
    f.cache.set_json("a:1", &other, secs(60)).await.unwrap();
    assert_eq!(
        f.cache.get_json::<Approval>("a:1").await.unwrap(),
        Some(other)
    );
}

async fn missing_key_is_none(f: Fixture) {
    assert_eq!(f.cache.get_json::<Approval>("nope").await.unwrap(), None);
    assert_eq!(f.cache.ttl("nope").await.unwrap(), None);
    assert_eq!(f.cache.take_json::<Approval>("nope").await.unwrap(), None);
}

async fn values_expire(f: Fixture) {
    f.cache
        .set_json("short", &1, Ttl::from_millis(150).unwrap())
        .await
        .unwrap();
    assert_eq!(f.cache.get_json::<i32>("short").await.unwrap(), Some(1));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(f.cache.get_json::<i32>("short").await.unwrap(), None);
    assert_eq!(f.cache.ttl("short").await.unwrap(), None);
}

async fn every_write_has_a_ttl(f: Fixture) {
    f.cache.set_json("k1", &1, secs(30)).await.unwrap();
    f.cache
        .set_json_if_absent("k2", &2, secs(30))
        .await
        .unwrap();
    f.cache.incr("k3", 1, secs(30)).await.unwrap();
    RateLimiter::new(
        f.cache.clone(),
        "rl",
        RateLimit::new(5, Duration::from_secs(10)).unwrap(),
        FailMode::Closed,
    )
    .check("s")
    .await
    .unwrap();
    for key in ["k1", "k2", "k3"] {
        let ttl = f
            .cache
            .ttl(key)
            .await
            .unwrap()
            .expect("key must exist with a TTL");
        assert!(
            ttl > Duration::ZERO && ttl <= Duration::from_secs(30),
            "{key}: {ttl:?}"
        );
    }
    if let Some(redis) = &f.redis {
        // Directly on the server: no key under the prefix lacks an expiry.
        // A raw connection of the same kind (single server or cluster).
        let mut pooled = f.cache.redis_pool().unwrap().get().await.unwrap();
        let conn = &mut *pooled;
        let keys = redis.keys().await;
        assert_eq!(keys.len(), 4, "{keys:?}");
        for key in keys {
            let pttl: i64 = redis::cmd("PTTL")
                .arg(&key)
                .query_async(conn)
                .await
                .unwrap();
            assert!(pttl > 0, "{key} has no expiry");
        }
    }
}

async fn set_if_absent_does_not_overwrite(f: Fixture) {
    assert!(
        f.cache
            .set_json_if_absent("once", &"first", secs(60))
            .await
            .unwrap()
    );
    assert!(
        !f.cache
            .set_json_if_absent("once", &"second", secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        f.cache.get_json::<String>("once").await.unwrap().as_deref(),
        Some("first")
    );
}

async fn replace_keeps_the_remaining_ttl_and_never_creates(f: Fixture) {
    assert!(!f.cache.replace_json_keep_ttl("absent", &1).await.unwrap());
    assert_eq!(f.cache.get_json::<i32>("absent").await.unwrap(), None);

    f.cache
        .set_json("decided", &"PENDING", Ttl::from_millis(1_500).unwrap())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        f.cache
            .replace_json_keep_ttl("decided", &"APPROVED")
            .await
            .unwrap()
    );
    let left = f.cache.ttl("decided").await.unwrap().unwrap();
    assert!(
        left <= Duration::from_millis(900),
        "TTL was extended to {left:?}"
    );
    assert_eq!(
        f.cache
            .get_json::<String>("decided")
            .await
            .unwrap()
            .as_deref(),
        Some("APPROVED")
    );
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    assert_eq!(f.cache.get_json::<String>("decided").await.unwrap(), None);
}

async fn take_returns_once(f: Fixture) {
    f.cache.set_json("t", &sample(), secs(60)).await.unwrap();
    let takers: Vec<_> = (0..16)
        .map(|_| {
            let cache = f.cache.clone();
            tokio::spawn(async move { cache.take_json::<Approval>("t").await.unwrap() })
        })
        .collect();
    let mut got = 0;
    for t in takers {
        if t.await.unwrap().is_some() {
            got += 1;
        }
    }
    assert_eq!(got, 1);
    assert_eq!(f.cache.get_json::<Approval>("t").await.unwrap(), None);
}

async fn delete_reports_presence(f: Fixture) {
    f.cache.set_json("d", &1, secs(60)).await.unwrap();
    assert!(f.cache.delete("d").await.unwrap());
    assert!(!f.cache.delete("d").await.unwrap());
    assert_eq!(f.cache.get_json::<i32>("d").await.unwrap(), None);
}

async fn corrupt_value_is_a_miss(f: Fixture) {
    for garbage in [&b"{not json"[..], b"\xff\xfe\x00", b"", b"[1,2"] {
        f.plant_raw("corrupt", garbage).await;
        assert_eq!(f.cache.get_json::<Approval>("corrupt").await.unwrap(), None);
        assert_eq!(
            f.cache.take_json::<Approval>("corrupt").await.unwrap(),
            None
        );
    }
    if let Some(redis) = &f.redis {
        // A different Redis type under the key (a list) is also a miss.
        let mut pooled = f.cache.redis_pool().unwrap().get().await.unwrap();
        let conn = &mut *pooled;
        let key = format!("{}listy", redis.prefix);
        let _: () = redis::cmd("RPUSH")
            .arg(&key)
            .arg("x")
            .query_async(conn)
            .await
            .unwrap();
        let _: () = redis::cmd("EXPIRE")
            .arg(&key)
            .arg(60)
            .query_async(conn)
            .await
            .unwrap();
        assert_eq!(f.cache.get_json::<Approval>("listy").await.unwrap(), None);
    }
}

async fn foreign_json_shape_is_a_miss(f: Fixture) {
    f.cache
        .set_json("shape", &vec![1, 2, 3], secs(60))
        .await
        .unwrap();
    assert_eq!(f.cache.get_json::<Approval>("shape").await.unwrap(), None);
    // The value is still there for a reader of the right type.
    assert_eq!(
        f.cache.get_json::<Vec<i32>>("shape").await.unwrap(),
        Some(vec![1, 2, 3])
    );
}

async fn counters_get_expiry_on_first_increment(f: Fixture) {
    assert_eq!(
        f.cache
            .incr("c", 1, Ttl::from_millis(1_200).unwrap())
            .await
            .unwrap(),
        1
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        f.cache
            .incr("c", 5, Ttl::from_millis(1_200).unwrap())
            .await
            .unwrap(),
        6
    );
    let left = f.cache.ttl("c").await.unwrap().unwrap();
    assert!(
        left <= Duration::from_millis(800),
        "window was extended: {left:?}"
    );
    tokio::time::sleep(left + Duration::from_millis(200)).await;
    assert_eq!(
        f.cache.incr("c", 1, secs(10)).await.unwrap(),
        1,
        "a new window starts at zero"
    );
}

async fn concurrent_increments_lose_nothing(f: Fixture) {
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let cache = f.cache.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    cache
                        .incr("hits", 1, Ttl::from_secs(60).unwrap())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(f.cache.incr("hits", 0, secs(60)).await.unwrap(), 1_600);
}

async fn counter_over_a_corrupt_value_is_a_typed_error(f: Fixture) {
    f.plant_raw("notnum", b"abc").await;
    let err = f.cache.incr("notnum", 1, secs(60)).await.unwrap_err();
    assert!(matches!(err, CacheError::CorruptValue { .. }), "{err:?}");
}

async fn rate_limiter_allows_exactly_the_limit_under_concurrency(f: Fixture) {
    // One hour per 100 requests: no replenishment during the test.
    let limit = RateLimit::new(100, Duration::from_secs(3_600)).unwrap();
    let limiter = Arc::new(RateLimiter::new(
        f.cache.clone(),
        "exact",
        limit,
        FailMode::Closed,
    ));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let mut allowed = 0u32;
                for _ in 0..25 {
                    let d = limiter.check("agent-1").await.unwrap();
                    assert!(!d.degraded);
                    if d.allowed {
                        allowed += 1;
                    }
                }
                allowed
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 100, "400 attempts against a limit of 100");
}

async fn rate_limiter_reports_remaining_and_retry_after(f: Fixture) {
    let limit = RateLimit::new(3, Duration::from_secs(30)).unwrap();
    let limiter = RateLimiter::new(f.cache.clone(), "report", limit, FailMode::Closed);
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let d = limiter.check("s").await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.retry_after, Duration::ZERO);
        remaining.push(d.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let denied = limiter.check("s").await.unwrap();
    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    // One request comes back every 10 s.
    assert!(denied.retry_after > Duration::from_secs(9), "{denied:?}");
    assert!(denied.retry_after <= Duration::from_secs(10), "{denied:?}");
}

async fn rate_limiter_refuses_invalid_costs(f: Fixture) {
    let limiter = RateLimiter::new(
        f.cache.clone(),
        "cost",
        RateLimit::new(3, Duration::from_secs(30)).unwrap(),
        FailMode::Closed,
    );
    assert!(matches!(
        limiter.check_cost("s", 0).await,
        Err(CacheError::InvalidRateLimit { .. })
    ));
    assert!(matches!(
        limiter.check_cost("s", 4).await,
        Err(CacheError::InvalidRateLimit { .. })
    ));
    assert!(limiter.check_cost("s", 3).await.unwrap().allowed);
    assert!(!limiter.check_cost("s", 1).await.unwrap().allowed);
}

async fn rate_limiter_subjects_are_independent(f: Fixture) {
    let limiter = RateLimiter::new(
        f.cache.clone(),
        "subj",
        RateLimit::new(1, Duration::from_secs(30)).unwrap(),
        FailMode::Closed,
    );
    assert!(limiter.check("a").await.unwrap().allowed);
    assert!(!limiter.check("a").await.unwrap().allowed);
    assert!(limiter.check("b").await.unwrap().allowed);
}

/// Operator safety, item 5: a limiter's state is keyed unambiguously, and a
/// subject of any length gets a decision, never an error.
async fn rate_limiter_names_and_subjects_never_share_state(f: Fixture) {
    let one = RateLimit::new(1, Duration::from_secs(30)).unwrap();
    let exec = RateLimiter::new(f.cache.clone(), "tool:exec", one, FailMode::Closed);
    let tool = RateLimiter::new(f.cache.clone(), "tool", one, FailMode::Closed);
    assert!(exec.check("alice").await.unwrap().allowed);
    assert!(
        tool.check("exec:alice").await.unwrap().allowed,
        "shared state"
    );
    assert!(!exec.check("alice").await.unwrap().allowed);
    let long = "s".repeat(64 * 1024);
    assert!(exec.check(&long).await.unwrap().allowed);
    assert!(!exec.check(&long).await.unwrap().allowed);
}

async fn hostile_keys_are_refused_or_stored_verbatim(f: Fixture) {
    assert!(matches!(
        f.cache.set_json("", &1, secs(5)).await,
        Err(CacheError::InvalidKey { .. })
    ));
    let long = "k".repeat(warden_cache::MAX_KEY_BYTES + 1);
    assert!(matches!(
        f.cache.get_json::<i32>(&long).await,
        Err(CacheError::InvalidKey { .. })
    ));
    for key in [
        "with space",
        "new\nline",
        "*",
        "{tag}",
        "ключ",
        "a\u{0}b",
        "../../etc",
    ] {
        f.cache.set_json(key, &key, secs(5)).await.unwrap();
        assert_eq!(
            f.cache.get_json::<String>(key).await.unwrap().as_deref(),
            Some(key)
        );
    }
    // A glob-looking key never matched other keys.
    assert_eq!(
        f.cache
            .get_json::<String>("with space")
            .await
            .unwrap()
            .as_deref(),
        Some("with space")
    );
}

async fn oversized_values_are_refused(f: Fixture) {
    let big = "x".repeat(MAX_VALUE_BYTES);
    let err = f.cache.set_json("big", &big, secs(5)).await.unwrap_err();
    assert!(matches!(err, CacheError::ValueTooLarge { .. }), "{err:?}");
    assert_eq!(f.cache.get_json::<String>("big").await.unwrap(), None);
    // Just under the limit is fine.
    let fits = "x".repeat(MAX_VALUE_BYTES - 2);
    f.cache.set_json("big", &fits, secs(5)).await.unwrap();
    assert_eq!(
        f.cache
            .get_json::<String>("big")
            .await
            .unwrap()
            .map(|s| s.len()),
        Some(fits.len())
    );
}

#[tokio::test]
async fn prefixes_isolate_caches_on_one_redis() {
    let f = redis_fixture().await;
    let other = f.sibling("other");
    f.cache
        .set_json("shared-name", &"mine", secs(60))
        .await
        .unwrap();
    other
        .set_json("shared-name", &"theirs", secs(60))
        .await
        .unwrap();
    assert_eq!(
        f.cache
            .get_json::<String>("shared-name")
            .await
            .unwrap()
            .as_deref(),
        Some("mine")
    );
    assert_eq!(
        other
            .get_json::<String>("shared-name")
            .await
            .unwrap()
            .as_deref(),
        Some("theirs")
    );
    assert!(other.delete("shared-name").await.unwrap());
    assert_eq!(
        f.cache
            .get_json::<String>("shared-name")
            .await
            .unwrap()
            .as_deref(),
        Some("mine")
    );
}

#[tokio::test]
async fn in_process_caches_are_separate_and_bounded() {
    let a = Cache::in_process(KeyPrefix::new("a").unwrap(), 64);
    let b = Cache::in_process(KeyPrefix::new("a").unwrap(), 64);
    a.set_json("k", &1, secs(60)).await.unwrap();
    assert_eq!(b.get_json::<i32>("k").await.unwrap(), None);
    for i in 0..1_000 {
        a.set_json(&format!("fill-{i}"), &i, secs(60))
            .await
            .unwrap();
    }
    let mut live = 0;
    for i in 0..1_000 {
        if a.get_json::<i32>(&format!("fill-{i}"))
            .await
            .unwrap()
            .is_some()
        {
            live += 1;
        }
    }
    assert!(
        live <= 64 + 16,
        "capacity not enforced: {live} live entries"
    );
    assert_eq!(
        a.get_json::<i32>("fill-999").await.unwrap(),
        Some(999),
        "newest write kept"
    );
}

/// Operator safety, item 4: the in-process cache is bounded by bytes too,
/// refuses an oversized value with a typed error, and evicts expired and
/// soonest-to-expire entries before live, longer-lived limiter state.
#[tokio::test]
async fn in_process_cache_is_bounded_by_bytes_and_keeps_live_limiter_state() {
    let megabyte = 1024 * 1024;
    let cache = Cache::in_process_bounded(
        KeyPrefix::new("b").unwrap(),
        100_000,
        16 * megabyte,
        megabyte,
    );
    assert!(matches!(
        cache
            .set_bytes("big", vec![0; megabyte + 1], secs(60))
            .await,
        Err(CacheError::ValueTooLarge { .. })
    ));
    for i in 0..200 {
        cache
            .set_bytes(&format!("v-{i}"), vec![7; megabyte - 256], secs(60))
            .await
            .unwrap();
    }
    let mut live = 0;
    for i in 0..200 {
        if cache.get_bytes(&format!("v-{i}")).await.unwrap().is_some() {
            live += 1;
        }
    }
    assert!(live <= 16, "{live} MiB kept under a 16 MiB budget");
    assert!(
        cache.get_bytes("v-199").await.unwrap().is_some(),
        "newest kept"
    );

    // A cache full of entries that have expired: they make room before any
    // live limiter state does, so a limited subject stays limited.
    let small = Cache::in_process(KeyPrefix::new("rl").unwrap(), 320);
    for i in 0..400 {
        small
            .set_json(&format!("short-{i}"), &i, Ttl::from_millis(30).unwrap())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    let limiter = RateLimiter::new(
        small.clone(),
        "login",
        RateLimit::new(2, Duration::from_secs(60)).unwrap(),
        FailMode::Closed,
    );
    assert!(limiter.check("alice").await.unwrap().allowed);
    assert!(limiter.check("alice").await.unwrap().allowed);
    assert!(!limiter.check("alice").await.unwrap().allowed);
    for i in 0..400 {
        limiter.check(&format!("other-{}", i % 8)).await.unwrap();
    }
    assert!(
        !limiter.check("alice").await.unwrap().allowed,
        "eviction reset a limited subject"
    );

    // A cache full of live limiter state (an attacker's throwaway subjects):
    // new subjects are refused (fail closed), never by forgetting alice.
    let tiny = Cache::in_process(KeyPrefix::new("rl2").unwrap(), 32);
    let limiter = RateLimiter::new(
        tiny.clone(),
        "login",
        RateLimit::new(2, Duration::from_secs(60)).unwrap(),
        FailMode::Closed,
    );
    assert!(limiter.check("alice").await.unwrap().allowed);
    assert!(limiter.check("alice").await.unwrap().allowed);
    let mut refused_new = 0;
    for i in 0..400 {
        let d = limiter.check(&format!("throwaway-{i}")).await.unwrap();
        if !d.allowed {
            assert!(
                d.degraded,
                "a fresh subject is refused only for lack of room"
            );
            refused_new += 1;
        }
    }
    assert!(refused_new > 0);
    assert!(
        !limiter.check("alice").await.unwrap().allowed,
        "live limiter state was evicted"
    );

    // Replacing a small value with a large one respects the byte budget too.
    let replaced = Cache::in_process_bounded(
        KeyPrefix::new("r").unwrap(),
        100_000,
        16 * megabyte,
        megabyte,
    );
    for i in 0..100 {
        replaced
            .set_bytes(&format!("k-{i}"), vec![1], secs(60))
            .await
            .unwrap();
    }
    for i in 0..100 {
        replaced
            .replace_json_keep_ttl(&format!("k-{i}"), &"x".repeat(megabyte - 512))
            .await
            .unwrap();
    }
    let mut big = 0;
    for i in 0..100 {
        if replaced
            .get_bytes(&format!("k-{i}"))
            .await
            .unwrap()
            .is_some_and(|v| v.len() > 1024)
        {
            big += 1;
        }
    }
    assert!(
        big <= 16,
        "{big} MiB kept under a 16 MiB budget after replaces"
    );
}

mod hostile_values {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    /// Arbitrary bytes under a key are a miss (or, if they happen to be
    /// valid JSON of the type, a hit) — never an error or a panic.
    fn check(f: &Fixture, rt: &tokio::runtime::Runtime, cases: u32) {
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&prop::collection::vec(any::<u8>(), 0..300), |bytes| {
                rt.block_on(async {
                    f.plant_raw("hostile", &bytes).await;
                    let got = f.cache.get_json::<Approval>("hostile").await;
                    prop_assert!(got.is_ok(), "{:?}", got);
                    let as_value = f.cache.get_json::<serde_json::Value>("hostile").await;
                    prop_assert!(as_value.is_ok());
                    Ok(())
                })
            })
            .unwrap();
    }

    #[test]
    fn corrupt_values_are_misses_in_process() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let f = rt.block_on(in_process_fixture());
        check(&f, &rt, 3000);
    }

    #[test]
    fn corrupt_values_are_misses_on_redis() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let f = rt.block_on(redis_fixture());
        check(&f, &rt, 300);
        drop(f);
    }
}
