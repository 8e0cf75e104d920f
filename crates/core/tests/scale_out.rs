//! Scale-out on real servers: a Redis Cluster (3 primaries + 3 replicas)
//! whose primary is SIGKILLed under mixed load — approvals, cache, rate
//! limit, key verifies — with PostgreSQL as the truth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::request;
use warden_approval::{ApprovalStatus, IssueOutcome};
use warden_cache::{FailMode, RateLimit, RateLimiter, Ttl};
use warden_core::{Settings, Warden};
use warden_keys::{KeyError, NewKey};
use warden_testkit::{PrivateRedisCluster, TestDatabase};

/// Longest any one operation may take, window included (the Redis command
/// timeout is 500 ms; a cluster command retries within twice that).
const NO_HANG: Duration = Duration::from_secs(5);

fn settings(database_url: &str, redis_url: &str, prefix: &str) -> Settings {
    let vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", database_url.to_owned()),
        ("REDIS_URL", redis_url.to_owned()),
        ("REDIS_COMMAND_TIMEOUT_MS", "500".into()),
        ("REDIS_CREATE_TIMEOUT_MS", "500".into()),
        ("REDIS_WAIT_TIMEOUT_MS", "500".into()),
        ("REDIS_RECYCLE_TIMEOUT_MS", "500".into()),
        ("REDIS_POOL_MAX_SIZE", "4".into()),
        ("BCRYPT_COST", "4".into()),
        ("CACHE_KEY_PREFIX", prefix.to_owned()),
    ]);
    Settings::from_lookup(|name| vars.get(name).cloned()).unwrap()
}

async fn bounded<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung past {NO_HANG:?}"))
}

/// Issue 15, item 4: kill -9 a cluster primary during mixed load. In the
/// window operations get typed errors or fall back to PostgreSQL; once the
/// replica is promoted they succeed again on the same storage (no
/// restart); no approval decision, audit event or revocation is lost; the
/// rate limiter fails closed while it cannot reach its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_primary_loses_nothing_and_is_recovered_from_without_a_restart() {
    let mut cluster = PrivateRedisCluster::start();
    let db = TestDatabase::postgres().await;
    let prefix = format!("failover-{}:", uuid::Uuid::new_v4().simple());
    let storage = Warden::connect(&settings(&db.url, &cluster.url(), &prefix))
        .await
        .unwrap();
    assert_eq!(storage.cache().backend_name(), "redis");
    let approvals = storage.approvals();
    let keys = storage.keys().unwrap();
    let limiter = RateLimiter::new(
        storage.cache().clone(),
        "failover",
        RateLimit::new(1_000_000, Duration::from_secs(60)).unwrap(),
        FailMode::Closed,
    );
    let open_limiter = RateLimiter::new(
        storage.cache().clone(),
        "failover-open",
        RateLimit::new(1_000_000, Duration::from_secs(60)).unwrap(),
        FailMode::Open,
    );
    let ttl = Ttl::from_secs(60).unwrap();

    // A key verified once (cached), another to revoke in the window, and
    // approvals to decide before, during and after.
    let new_key = |caller: &'static str| NewKey {
        actor: "tester",
        caller_id: caller,
        role: "developer",
        trust_level: 2,
        environment: "test",
        expires_at: None,
    };
    let kept = keys.create(&new_key("kept")).await.unwrap();
    let doomed = keys.create(&new_key("doomed")).await.unwrap();
    keys.verify(kept.plaintext.expose()).await.unwrap();
    keys.verify(doomed.plaintext.expose()).await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..30 {
        let IssueOutcome::Issued { token, .. } =
            approvals.issue(&request(&format!("r-{i}"))).await.unwrap()
        else {
            panic!("not issued")
        };
        tokens.push(token);
    }
    // The probe key's primary is the one that dies.
    let probe = format!("{}probe", storage.settings().cache_key_prefix);
    let victim = cluster.primary_for(&probe);

    let mut approved = Vec::new();
    let mut window_errors = 0usize;
    let mut degraded_allowed = 0usize;
    let mut revoked_in_window = false;
    let started = Instant::now();
    let mut killed_at = None;
    let mut healed_at = None;
    let mut round = 0usize;
    let mut ok_after_heal = 0usize;
    let mut last_failures: Vec<String> = Vec::new();
    while ok_after_heal < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recovery within a minute (killed {killed_at:?}, healed {healed_at:?}): {last_failures:?}"
        );
        last_failures.clear();
        if round == 10 {
            cluster.kill(victim);
            killed_at = Some(started.elapsed());
        }
        let mut round_ok = true;
        // Cache.
        let set = bounded("cache set", storage.cache().set_json("probe", &round, ttl)).await;
        let got = bounded("cache get", storage.cache().get_json::<usize>("probe")).await;
        match (&set, &got) {
            (Ok(()), Ok(Some(v))) => assert_eq!(*v, round),
            _ => {
                last_failures.push(format!("cache: {set:?} {got:?}"));
                round_ok = false;
            }
        }
        // Rate limit: in the window it applies its fail mode (closed
        // refuses, open allows) — a decision, never an error.
        match bounded("rate limit", limiter.check("subject")).await {
            Ok(decision) if decision.degraded => {
                last_failures.push("limiter degraded".into());
                round_ok = false;
                if decision.allowed {
                    degraded_allowed += 1;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("the limiter failed instead of applying its fail mode: {e:?}"),
        }
        match bounded("open rate limit", open_limiter.check("subject")).await {
            Ok(decision) => assert!(decision.allowed, "fail-open limiter refused: {decision:?}"),
            Err(e) => panic!("the fail-open limiter failed instead of allowing: {e:?}"),
        }
        // Key verify: the cached key keeps working or fails typed.
        match bounded("verify", keys.verify(kept.plaintext.expose())).await {
            Ok(v) => assert_eq!(v.caller_id, "kept"),
            Err(e) => {
                last_failures.push(format!("verify: {e:?}"));
                round_ok = false;
                assert!(
                    !matches!(e, KeyError::Invalid | KeyError::Revoked),
                    "a valid key was refused: {e:?}"
                );
            }
        }
        // Revocation during the window: typed error or success; retried
        // until the cache has it.
        if killed_at.is_some() && !revoked_in_window {
            match bounded("revoke", keys.revoke("doomed", "tester")).await {
                Ok(_) => revoked_in_window = true,
                Err(e @ KeyError::CacheNotCleared { .. }) => {
                    last_failures.push(format!("revoke: {e:?}"));
                    round_ok = false;
                }
                Err(e) => panic!("revoke: {e:?}"),
            }
        }
        // Approvals: PostgreSQL is the truth; the cache only speeds them up.
        if let Some(token) = tokens.get(round) {
            let decided =
                bounded("approve", approvals.approve(token.expose(), "alice", None)).await;
            match decided {
                Ok(a) => {
                    assert_eq!(a.status, ApprovalStatus::Approved);
                    approved.push(a.id);
                }
                Err(e) => panic!("an approval decision failed with the cache down: {e:?}"),
            }
            let checked = bounded("check", approvals.check(token.expose()))
                .await
                .unwrap();
            assert_eq!(checked.status, ApprovalStatus::Approved);
        }
        if killed_at.is_some() && !round_ok {
            window_errors += 1;
        }
        if killed_at.is_some() && round_ok && revoked_in_window {
            healed_at.get_or_insert(started.elapsed());
            ok_after_heal += 1;
        } else if healed_at.is_some() && !round_ok {
            // A relapse after healing resets the count.
            ok_after_heal = 0;
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        window_errors > 0,
        "the kill was never felt: not a failover test"
    );
    assert_eq!(degraded_allowed, 0, "the limiter failed open");

    // Nothing lost: every approval decided in the run is APPROVED in the
    // database with exactly one decision event.
    let decided_rows = db
        .strings("SELECT id::text FROM approval_requests WHERE status = 'APPROVED'")
        .await;
    assert_eq!(decided_rows.len(), approved.len().min(tokens.len()));
    let events = db
        .strings(
            "SELECT (sanitized_args -> 'resource' ->> 'id') FROM audit_events \
             WHERE method = 'approval.approve'",
        )
        .await;
    assert_eq!(events, decided_rows);
    // The revocation holds in every process sharing the cluster: a fresh
    // storage (another gateway process) refuses the key too.
    let other = Warden::connect(&settings(&db.url, &cluster.url(), &prefix))
        .await
        .unwrap();
    for manager in [&keys, &other.keys().unwrap()] {
        let refused = bounded("verify revoked", manager.verify(doomed.plaintext.expose())).await;
        assert!(
            matches!(refused, Err(KeyError::Revoked) | Err(KeyError::Invalid)),
            "a revoked key verified after the failover: {refused:?}"
        );
    }
}
