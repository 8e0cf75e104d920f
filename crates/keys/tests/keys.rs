//! The key contract on PostgreSQL + Redis and on SQLite + the in-process cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::Utc;
use sea_orm::ConnectionTrait;
use warden_cache::{Cache, KeyPrefix, RedisPool, RedisPoolConfig, Ttl};
use warden_keys::{CacheMacKey, KeyError, KeyManager, NewKey, PlainApiKey};
use warden_testkit::{TestDatabase, TestRedis};

struct Fixture {
    keys: KeyManager,
    cache: Cache,
    db: TestDatabase,
    _redis: Option<TestRedis>,
}

fn redis_cache(redis: &TestRedis) -> Cache {
    Cache::redis(
        RedisPool::new(RedisPoolConfig::new(
            redis.url.clone(),
            8,
            Duration::from_secs(2),
        ))
        .unwrap(),
        KeyPrefix::new(&redis.prefix).unwrap(),
    )
}

fn mac_key() -> CacheMacKey {
    CacheMacKey::from_bytes(b"test-cache-mac-key-of-32-bytes-or-more").unwrap()
}

fn manager(db: &TestDatabase, cache: &Cache) -> KeyManager {
    KeyManager::new(db.db.clone(), cache.clone(), 4, Ttl::from_secs(30).unwrap())
        .unwrap()
        .with_cache_mac_key(mac_key())
}

async fn postgres_redis() -> Fixture {
    let db = TestDatabase::postgres().await;
    let redis = TestRedis::new().await;
    let cache = redis_cache(&redis);
    Fixture {
        keys: manager(&db, &cache),
        cache,
        db,
        _redis: Some(redis),
    }
}

async fn sqlite_in_process() -> Fixture {
    let db = TestDatabase::sqlite().await;
    let cache = Cache::in_process(KeyPrefix::new("k").unwrap(), 1000);
    Fixture {
        keys: manager(&db, &cache),
        cache,
        db,
        _redis: None,
    }
}

fn new_key(caller: &str) -> NewKey<'_> {
    NewKey {
        actor: "test-operator",
        caller_id: caller,
        role: "developer",
        trust_level: 2,
        environment: "test",
        expires_at: None,
    }
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod postgres_redis {
            $(#[tokio::test] async fn $name() { super::$name(super::postgres_redis().await).await; })*
        }
        mod sqlite_in_process {
            $(#[tokio::test] async fn $name() { super::$name(super::sqlite_in_process().await).await; })*
        }
    };
}

contract!(
    created_key_verifies_and_only_its_hash_is_stored,
    the_second_verify_is_served_from_the_cache,
    wrong_unknown_and_malformed_keys_are_invalid,
    revocation_takes_effect_at_once_even_when_cached,
    expired_keys_are_refused,
    last_used_at_is_written_at_most_once_a_minute,
    one_key_per_caller,
    invalid_fields_are_refused,
    no_cache_write_authenticates_a_key_or_raises_its_rights,
    revocation_reaches_a_process_with_its_own_in_process_cache,
    a_late_cache_write_cannot_resurrect_a_revoked_key,
    a_saved_sealed_entry_written_back_cannot_resurrect_a_revoked_key,
    a_wrong_secret_learns_nothing_about_revocation,
    an_unauthenticated_flood_is_bounded_and_refused_quickly,
    key_changes_are_recorded_once_with_their_actor,
);

/// Admin actions in the trail (issue 13): `key.create` and `key.revoke`, each
/// once, with the actor, atomically with the change, never with key material.
async fn key_changes_are_recorded_once_with_their_actor(f: Fixture) {
    let created = f
        .keys
        .create(&NewKey {
            actor: "alice",
            ..new_key("audited")
        })
        .await
        .unwrap();
    f.keys.revoke("audited", "bob").await.unwrap();
    f.keys.revoke("audited", "bob").await.unwrap();
    assert!(f.keys.revoke("nobody", "bob").await.is_err());
    let mut events =
        f.db.strings(
            "SELECT method || ' by ' || caller_id || ' on ' || request_id FROM audit_events \
             WHERE kind = 'admin'",
        )
        .await;
    events.sort();
    assert_eq!(
        events,
        [
            "key.create by alice on api_key:audited",
            "key.revoke by bob on api_key:audited"
        ]
    );
    let stored =
        f.db.strings("SELECT CAST(sanitized_args AS TEXT) FROM audit_events WHERE kind = 'admin'")
            .await
            .join(" ");
    let hash = f.db.strings("SELECT key_hash FROM api_keys").await.join("");
    for secret in [
        created.plaintext.expose(),
        created.plaintext.prefix(),
        hash.as_str(),
    ] {
        assert!(!stored.contains(secret), "key material in an admin event");
    }
    // A create whose event cannot be written creates no key.
    f.db.execute("DROP TABLE audit_pending").await;
    assert!(f.keys.create(&new_key("unrecorded")).await.is_err());
    assert!(f.keys.find_by_caller("unrecorded").await.unwrap().is_none());
}

/// Operator safety, item 8: with a real prefix and a bogus secret, the
/// answer is the same before and after a revoke.
async fn a_wrong_secret_learns_nothing_about_revocation(f: Fixture) {
    let created = f.keys.create(&new_key("probed")).await.unwrap();
    let bogus = format!(
        "{}_{}",
        created.plaintext.prefix(),
        "B".repeat(created.plaintext.expose().len() - created.plaintext.prefix().len() - 1)
    );
    assert!(matches!(
        f.keys.verify(&bogus).await,
        Err(KeyError::Invalid)
    ));
    f.keys.revoke("probed", "test-operator").await.unwrap();
    assert!(matches!(
        f.keys.verify(&bogus).await,
        Err(KeyError::Invalid)
    ));
    assert!(matches!(
        f.keys.verify(created.plaintext.expose()).await,
        Err(KeyError::Revoked)
    ));
}

/// Operator safety, item 3: well-formed keys with unknown prefixes each cost
/// a bcrypt; beyond the concurrency bound they are refused as `Busy`
/// instead of queueing without limit.
async fn an_unauthenticated_flood_is_bounded_and_refused_quickly(f: Fixture) {
    // One real verification may run at a time with two queued; invented keys
    // get their own (smaller) bound.
    let keys = KeyManager::new(
        f.db.db.clone(),
        f.cache.clone(),
        10,
        Ttl::from_secs(30).unwrap(),
    )
    .unwrap()
    .with_cache_mac_key(mac_key())
    .with_bcrypt_limits(1, 2);
    let real = keys.create(&new_key("during-flood")).await.unwrap();
    let flood: Vec<_> = (0..48)
        .map(|i| {
            let keys = keys.clone();
            tokio::spawn(async move {
                let forged = format!("wdn_test_{i:012x}_{}", "A".repeat(43));
                keys.verify(&forged).await
            })
        })
        .collect();
    // A real key still verifies while the flood is refused.
    keys.verify(real.plaintext.expose()).await.unwrap();
    let (mut busy, mut invalid) = (0, 0);
    for t in flood {
        match t.await.unwrap() {
            Err(KeyError::Busy) => busy += 1,
            Err(KeyError::Invalid) => invalid += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(busy > 0, "48 invented keys were all queued");
    assert!(invalid > 0, "the bound still lets some through");
    assert!(matches!(
        KeyManager::new(
            f.db.db.clone(),
            f.cache.clone(),
            31,
            Ttl::from_secs(30).unwrap()
        ),
        Err(KeyError::InvalidField {
            field: "bcrypt_cost",
            ..
        })
    ));
}

/// Review of the security fix: someone who can read and write the cache saves
/// a genuine sealed entry, and writes it back (removing the marker) after the
/// revocation. The entry's own sealed deadline refuses it.
async fn a_saved_sealed_entry_written_back_cannot_resurrect_a_revoked_key(f: Fixture) {
    let keys = KeyManager::new(
        f.db.db.clone(),
        f.cache.clone(),
        4,
        Ttl::from_secs(1).unwrap(),
    )
    .unwrap()
    .with_cache_mac_key(mac_key());
    let created = keys.create(&new_key("saved")).await.unwrap();
    keys.verify(created.plaintext.expose()).await.unwrap();
    let entry = entry_key(&created.plaintext);
    let saved = f.cache.get_bytes(&entry).await.unwrap().expect("cached");
    keys.revoke("saved", "test-operator").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let marker = format!("apikey:{{{}}}:revoked", created.plaintext.prefix());
    f.cache.delete(&marker).await.unwrap();
    f.cache
        .set_bytes(&entry, saved, Ttl::from_secs(600).unwrap())
        .await
        .unwrap();
    assert!(matches!(
        keys.verify(created.plaintext.expose()).await,
        Err(KeyError::Revoked)
    ));
}

fn entry_key(key: &PlainApiKey) -> String {
    format!("apikey:{{{}}}:verified", key.prefix())
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Security review, item 1: an invented well-formed key plus one cache write
/// must not authenticate, and a cached entry must not grant more than the
/// database does.
async fn no_cache_write_authenticates_a_key_or_raises_its_rights(f: Fixture) {
    let invented =
        PlainApiKey::parse("wdn_test_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .expect("well-formed");
    let forged_identity = serde_json::json!({
        "key_id": uuid::Uuid::now_v7(), "caller_id": "root", "role": "admin",
        "trust_level": 9, "environment": "test", "expires_at": null,
    });
    // The entry format before sealing: a plain SHA-256 fingerprint.
    let unsealed = serde_json::json!({
        "fingerprint": sha256_hex(invented.expose()),
        "key": forged_identity,
    });
    f.cache
        .set_json(
            &entry_key(&invented),
            &unsealed,
            Ttl::from_secs(60).unwrap(),
        )
        .await
        .unwrap();
    assert!(matches!(
        f.keys.verify(invented.expose()).await,
        Err(KeyError::Invalid)
    ));

    // A genuine, sealed entry altered to raise the role is refused; the
    // database's answer stands.
    let created = f.keys.create(&new_key("agent-1")).await.unwrap();
    f.keys.verify(created.plaintext.expose()).await.unwrap();
    let entry = entry_key(&created.plaintext);
    let sealed = f.cache.get_bytes(&entry).await.unwrap().expect("cached");
    let text = String::from_utf8_lossy(&sealed).into_owned();
    assert!(text.contains("\"developer\""), "sealed, not encrypted");
    let raised: Vec<u8> = text.replace("\"developer\"", "\"admin\"").into_bytes();
    f.cache
        .set_bytes(&entry, raised, Ttl::from_secs(60).unwrap())
        .await
        .unwrap();
    let verified = f.keys.verify(created.plaintext.expose()).await.unwrap();
    assert_eq!(verified.role, "developer");
    // A genuine entry moved under another key's name does not open either.
    let other = f.keys.create(&new_key("agent-2")).await.unwrap();
    f.cache
        .set_bytes(
            &entry_key(&other.plaintext),
            sealed,
            Ttl::from_secs(60).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        f.keys
            .verify(other.plaintext.expose())
            .await
            .unwrap()
            .caller_id,
        "agent-2"
    );
}

/// Security review, item 2: `warden keys revoke` runs in its own process; a
/// running process with its own in-process cache must not keep accepting
/// the key.
async fn revocation_reaches_a_process_with_its_own_in_process_cache(f: Fixture) {
    let created = f.keys.create(&new_key("agent-1")).await.unwrap();
    let plain = created.plaintext.expose().to_owned();
    let gateway = KeyManager::new(
        f.db.db.clone(),
        Cache::in_process(KeyPrefix::new("gateway").unwrap(), 100),
        4,
        Ttl::from_secs(3_600).unwrap(),
    )
    .unwrap();
    gateway.verify(&plain).await.unwrap();
    gateway.verify(&plain).await.unwrap(); // served from its own memory
    let cli = KeyManager::new(
        f.db.db.clone(),
        Cache::in_process(KeyPrefix::new("cli").unwrap(), 100),
        4,
        Ttl::from_secs(3_600).unwrap(),
    )
    .unwrap();
    cli.revoke("agent-1", "test-operator").await.unwrap();
    assert!(matches!(
        gateway.verify(&plain).await,
        Err(KeyError::Revoked)
    ));
}

/// Security review, item 3: a verification that read the row before a revoke
/// and writes its cache entry late (after the revocation marker expired, or
/// while it is there) must not bring the key back.
async fn a_late_cache_write_cannot_resurrect_a_revoked_key(f: Fixture) {
    // A 1 s verification TTL: the revocation marker lives 3 s.
    let ttl = Ttl::from_secs(1).unwrap();
    for (caller, delay) in [("late", 3_500), ("during", 500)] {
        let created = f.keys.create(&new_key(caller)).await.unwrap();
        let plain = created.plaintext.expose().to_owned();
        let slow = KeyManager::new(f.db.db.clone(), f.cache.clone(), 4, ttl)
            .unwrap()
            .with_cache_mac_key(mac_key())
            .with_injected_cache_write_delay(Duration::from_millis(delay));
        let in_flight = tokio::spawn(async move { slow.verify(&plain).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let checker = KeyManager::new(f.db.db.clone(), f.cache.clone(), 4, ttl)
            .unwrap()
            .with_cache_mac_key(mac_key());
        checker.revoke(caller, "test-operator").await.unwrap();
        // The verify that was already past the database may succeed once.
        in_flight.await.unwrap().unwrap();
        assert_eq!(
            f.cache
                .get_bytes(&entry_key(&created.plaintext))
                .await
                .unwrap(),
            None,
            "{caller}: the late write stored an entry"
        );
        assert!(
            matches!(
                checker.verify(created.plaintext.expose()).await,
                Err(KeyError::Revoked)
            ),
            "{caller}"
        );
    }
}

async fn created_key_verifies_and_only_its_hash_is_stored(f: Fixture) {
    let created = f.keys.create(&new_key("agent-1")).await.unwrap();
    let plain = created.plaintext.expose().to_owned();
    assert!(plain.starts_with("wdn_test_"));
    let v = f.keys.verify(&plain).await.unwrap();
    assert_eq!(
        (v.caller_id.as_str(), v.role.as_str(), v.trust_level),
        ("agent-1", "developer", 2)
    );
    let stored =
        f.db.strings("SELECT key_hash || ' ' || key_prefix FROM api_keys")
            .await
            .join("");
    assert!(stored.starts_with("$2"), "bcrypt hash: {stored}");
    assert!(
        !stored.contains(&plain[created.plaintext.prefix().len() + 1..]),
        "the secret is not stored"
    );
    let listed = serde_json::to_string(&f.keys.list().await.unwrap()).unwrap();
    assert!(
        !listed.contains("$2") && listed.contains(created.plaintext.prefix()),
        "{listed}"
    );
}

async fn the_second_verify_is_served_from_the_cache(f: Fixture) {
    let created = f.keys.create(&new_key("agent-1")).await.unwrap();
    f.keys.verify(created.plaintext.expose()).await.unwrap();
    // Break the stored hash: a cache hit does not need it.
    f.db.execute("UPDATE api_keys SET key_hash = '$2b$04$broken'")
        .await;
    f.keys.verify(created.plaintext.expose()).await.unwrap();
    // A different manager sharing the cache is served too; without the cache entry the broken hash fails.
    let entry = format!("apikey:{{{}}}:verified", created.plaintext.prefix());
    assert!(f.cache.delete(&entry).await.unwrap());
    assert!(matches!(
        f.keys.verify(created.plaintext.expose()).await,
        Err(KeyError::Invalid)
    ));
}

async fn wrong_unknown_and_malformed_keys_are_invalid(f: Fixture) {
    let created = f.keys.create(&new_key("agent-1")).await.unwrap();
    let plain = created.plaintext.expose();
    let other = f.keys.create(&new_key("agent-2")).await.unwrap();
    // Right prefix, another key's secret.
    let swapped = format!(
        "{}_{}",
        created.plaintext.prefix(),
        &other.plaintext.expose()[other.plaintext.prefix().len() + 1..]
    );
    let unknown = format!("wdn_test_0123456789ab_{}", &plain[plain.len() - 43..]);
    for bad in [
        swapped.as_str(),
        unknown.as_str(),
        "",
        "wdn_",
        "Bearer x",
        &"A".repeat(100_000),
        "wdn_test_\0",
    ] {
        assert!(
            matches!(f.keys.verify(bad).await, Err(KeyError::Invalid)),
            "{bad:.30}"
        );
    }
    f.keys.verify(plain).await.unwrap();
}

async fn revocation_takes_effect_at_once_even_when_cached(f: Fixture) {
    let created = f.keys.create(&new_key("agent-1")).await.unwrap();
    let plain = created.plaintext.expose().to_owned();
    f.keys.verify(&plain).await.unwrap(); // now cached
    let other_instance = KeyManager::new(
        f.db.db.clone(),
        f.cache.clone(),
        4,
        Ttl::from_secs(30).unwrap(),
    )
    .unwrap();
    other_instance.verify(&plain).await.unwrap();
    let info = f.keys.revoke("agent-1", "test-operator").await.unwrap();
    assert!(!info.is_active && info.revoked_at.is_some());
    assert!(matches!(
        f.keys.verify(&plain).await,
        Err(KeyError::Revoked)
    ));
    assert!(matches!(
        other_instance.verify(&plain).await,
        Err(KeyError::Revoked)
    ));
    assert!(matches!(
        f.keys.revoke("nobody", "test-operator").await,
        Err(KeyError::NotFound { .. })
    ));
}

async fn expired_keys_are_refused(f: Fixture) {
    let mut k = new_key("agent-1");
    k.expires_at = Some(Utc::now() + chrono::Duration::milliseconds(400));
    let created = f.keys.create(&k).await.unwrap();
    f.keys.verify(created.plaintext.expose()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(matches!(
        f.keys.verify(created.plaintext.expose()).await,
        Err(KeyError::Expired)
    ));
    let mut past = new_key("agent-2");
    past.expires_at = Some(Utc::now() - chrono::Duration::seconds(1));
    let created = f.keys.create(&past).await.unwrap();
    assert!(matches!(
        f.keys.verify(created.plaintext.expose()).await,
        Err(KeyError::Expired)
    ));
}

async fn last_used_at_is_written_at_most_once_a_minute(f: Fixture) {
    let created = f.keys.create(&new_key("agent-1")).await.unwrap();
    assert!(
        f.keys
            .find_by_caller("agent-1")
            .await
            .unwrap()
            .unwrap()
            .last_used_at
            .is_none()
    );
    f.keys.verify(created.plaintext.expose()).await.unwrap();
    let first = f
        .keys
        .find_by_caller("agent-1")
        .await
        .unwrap()
        .unwrap()
        .last_used_at
        .unwrap();
    let entry = format!("apikey:{{{}}}:verified", created.plaintext.prefix());
    for _ in 0..3 {
        f.cache.delete(&entry).await.unwrap(); // force the database path
        f.keys.verify(created.plaintext.expose()).await.unwrap();
    }
    let again = f
        .keys
        .find_by_caller("agent-1")
        .await
        .unwrap()
        .unwrap()
        .last_used_at
        .unwrap();
    assert_eq!(first, again);
    // An hour-old last use is refreshed.
    let old = (Utc::now() - chrono::Duration::hours(1))
        .format("%Y-%m-%d %H:%M:%S%:z")
        .to_string();
    let sql = match f.db.backend {
        warden_testkit::Backend::Postgres => format!("UPDATE api_keys SET last_used_at = '{old}'"),
        warden_testkit::Backend::Sqlite => {
            format!(
                "UPDATE api_keys SET last_used_at = '{}'",
                (Utc::now() - chrono::Duration::hours(1)).to_rfc3339()
            )
        }
    };
    f.db.db.execute_unprepared(&sql).await.unwrap();
    f.cache.delete(&entry).await.unwrap();
    f.keys.verify(created.plaintext.expose()).await.unwrap();
    let refreshed = f
        .keys
        .find_by_caller("agent-1")
        .await
        .unwrap()
        .unwrap()
        .last_used_at
        .unwrap();
    assert!(refreshed > again, "{refreshed} vs {again}");
}

async fn one_key_per_caller(f: Fixture) {
    f.keys.create(&new_key("agent-1")).await.unwrap();
    assert!(matches!(
        f.keys.create(&new_key("agent-1")).await,
        Err(KeyError::AlreadyExists { .. })
    ));
    assert_eq!(f.keys.list().await.unwrap().len(), 1);
}

async fn invalid_fields_are_refused(f: Fixture) {
    let cases: [(NewKey<'_>, &str); 4] = [
        (
            NewKey {
                caller_id: "",
                ..new_key("x")
            },
            "caller_id",
        ),
        (
            NewKey {
                role: "r\n",
                ..new_key("x")
            },
            "role",
        ),
        (
            NewKey {
                trust_level: -1,
                ..new_key("x")
            },
            "trust_level",
        ),
        (
            NewKey {
                environment: "Prod_1",
                ..new_key("x")
            },
            "environment",
        ),
    ];
    for (k, expect) in cases {
        match f.keys.create(&k).await {
            Err(KeyError::InvalidField { field, .. }) => assert_eq!(field, expect),
            other => panic!("{expect}: {other:?}"),
        }
    }
    assert!(f.keys.list().await.unwrap().is_empty());
}

/// Scale-out: a revocation reaches a replica before `revoke` returns, so a
/// failover right after cannot bring the cached verification back. With
/// the only replica not answering, revoke reports `CacheNotCleared` (the key
/// is already revoked in the database) and succeeds once it is back.
#[tokio::test]
async fn a_revocation_is_replicated_before_revoke_returns() {
    use warden_testkit::PrivateRedis;
    let primary = PrivateRedis::start().await;
    let replica = PrivateRedis::start().await;
    let replica_of = std::process::Command::new("redis-cli")
        .args(["-p", &replica.port().to_string(), "replicaof", "127.0.0.1"])
        .arg(primary.port().to_string())
        .output()
        .unwrap();
    assert!(replica_of.status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let info = std::process::Command::new("redis-cli")
            .args(["-p", &replica.port().to_string(), "info", "replication"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&info.stdout).contains("master_link_status:up") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica never synced"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let db = TestDatabase::postgres().await;
    let cache = Cache::redis(
        RedisPool::new(RedisPoolConfig::new(
            primary.url(),
            8,
            std::time::Duration::from_millis(500),
        ))
        .unwrap(),
        KeyPrefix::new("repl").unwrap(),
    );
    let keys = manager(&db, &cache);
    let created = keys.create(&new_key("replicated")).await.unwrap();
    keys.verify(created.plaintext.expose()).await.unwrap();

    replica.pause();
    let err = keys.revoke("replicated", "tester").await.unwrap_err();
    assert!(matches!(err, KeyError::CacheNotCleared { .. }), "{err:?}");
    replica.resume();
    keys.revoke("replicated", "tester").await.unwrap();
    assert!(matches!(
        keys.verify(created.plaintext.expose()).await,
        Err(KeyError::Revoked | KeyError::Invalid)
    ));
}
