//! Faults on servers the tests own: PostgreSQL paused past every timeout,
//! pools exhausted, blackholed servers, Redis killed under mixed load.
//! Every failure is a typed error within its timeout; nothing hangs; every
//! approval operation succeeds through PostgreSQL while Redis is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::request;
use sea_orm::TransactionTrait;
use warden_approval::{ApprovalError, ApprovalManager, ApprovalStatus, IssueOutcome};
use warden_audit::AuditError;
use warden_cache::{CacheError, Ttl};
use warden_core::{Settings, Warden};
use warden_keys::{KeyError, NewKey};
use warden_testkit::{Blackhole, PrivatePostgres, PrivateRedis, TestDatabase};

const NO_HANG: Duration = Duration::from_secs(20);

fn settings(database_url: &str, redis_url: Option<&str>, extra: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("DATABASE_URL".into(), database_url.to_owned()),
        ("DATABASE_CONNECT_TIMEOUT_MS".into(), "1000".into()),
        ("DATABASE_ACQUIRE_TIMEOUT_MS".into(), "1000".into()),
        ("REDIS_WAIT_TIMEOUT_MS".into(), "500".into()),
        ("REDIS_CREATE_TIMEOUT_MS".into(), "500".into()),
        ("REDIS_RECYCLE_TIMEOUT_MS".into(), "500".into()),
        ("REDIS_COMMAND_TIMEOUT_MS".into(), "500".into()),
        ("BCRYPT_COST".into(), "4".into()),
    ]);
    if let Some(url) = redis_url {
        vars.insert("REDIS_URL".into(), url.to_owned());
    }
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Settings::from_lookup(|name| vars.get(name).cloned()).unwrap()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, f).await.expect("hung")
}

#[tokio::test]
async fn postgres_paused_past_the_timeouts_gives_typed_timeouts_then_recovers() {
    let mut server = PrivatePostgres::start().await;
    let storage = Warden::connect(&settings(&server.url(), None, &[]))
        .await
        .unwrap();
    migration::run(storage.database(), migration::Command::Up(None))
        .await
        .unwrap();
    let approvals = storage.approvals().with_db_timeout(Duration::from_secs(1));
    let keys = storage
        .keys()
        .unwrap()
        .with_db_timeout(Duration::from_secs(1));
    let IssueOutcome::Issued { token, .. } = approvals.issue(&request("r-1")).await.unwrap() else {
        panic!()
    };
    let key = keys
        .create(&NewKey {
            actor: "tester",
            caller_id: "a",
            role: "developer",
            trust_level: 2,
            environment: "test",
            expires_at: None,
        })
        .await
        .unwrap();
    // Pending approvals are confirmed with the database when the cache is per-process.
    approvals.check(token.expose()).await.unwrap();
    // A pool that would wait 10 s for a connection: only the audit step
    // bound (1 s) can end its reads sooner.
    let patient = Warden::connect(&settings(
        &server.url(),
        None,
        &[("DATABASE_ACQUIRE_TIMEOUT_MS", "10000")],
    ))
    .await
    .unwrap();

    server.pause();
    let started = Instant::now();
    let check = bounded(approvals.check(token.expose())).await.unwrap_err();
    assert!(
        matches!(
            check,
            ApprovalError::Timeout { .. } | ApprovalError::PoolExhausted
        ),
        "{check:?}"
    );
    let decide = bounded(approvals.approve(token.expose(), "alice", None))
        .await
        .unwrap_err();
    assert!(
        matches!(
            decide,
            ApprovalError::Timeout { .. } | ApprovalError::PoolExhausted
        ),
        "{decide:?}"
    );
    let issue = bounded(approvals.issue(&request("r-2"))).await.unwrap_err();
    assert!(
        matches!(
            issue,
            ApprovalError::Timeout { .. } | ApprovalError::PoolExhausted
        ),
        "{issue:?}"
    );
    // The key was never verified, so this needs the database.
    let verify = bounded(keys.verify(key.plaintext.expose()))
        .await
        .unwrap_err();
    assert!(
        matches!(verify, KeyError::Timeout { .. } | KeyError::PoolExhausted),
        "{verify:?}"
    );
    let query = storage.audit().query().with_timeout(Duration::from_secs(1));
    let recent = bounded(query.list_recent(10)).await.unwrap_err();
    assert!(
        matches!(
            recent,
            AuditError::Timeout { .. } | AuditError::Database { .. }
        ),
        "{recent:?}"
    );
    // Hardening, item 4: the long audit reads are bounded per step too.
    let step = Duration::from_secs(1);
    let verify_started = Instant::now();
    let verdict = bounded(warden_audit::verify(
        patient.database(),
        &warden_audit::VerifyOptions {
            step_timeout: Some(step),
            ..Default::default()
        },
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(verdict, AuditError::Timeout { after } if after == step),
        "{verdict:?}"
    );
    let mut sink = Vec::new();
    let exported = bounded(warden_audit::export(
        patient.database(),
        None,
        None,
        step,
        &mut sink,
    ))
    .await
    .unwrap_err();
    assert!(
        matches!(exported, AuditError::Timeout { after } if after == step),
        "{exported:?}"
    );
    assert!(
        verify_started.elapsed() < Duration::from_secs(5),
        "{:?}",
        verify_started.elapsed()
    );
    let health = bounded(warden_core::health::check(&storage)).await;
    assert!(!health.is_healthy());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    server.resume();
    let mut recovered = false;
    for _ in 0..50 {
        if approvals
            .approve(token.expose(), "alice", None)
            .await
            .is_ok()
        {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "no recovery after resume");
    assert_eq!(
        approvals.check(token.expose()).await.unwrap().status,
        ApprovalStatus::Approved
    );
    keys.verify(key.plaintext.expose()).await.unwrap();
    // Only admin events (the key, the approval): no tool call was logged.
    assert!(
        query
            .list_recent(10)
            .await
            .unwrap()
            .iter()
            .all(|e| e.kind() == warden_audit::EventKind::Admin)
    );
    server.kill();
}

#[tokio::test]
async fn an_exhausted_database_pool_is_a_typed_error_and_leaks_nothing() {
    let db = TestDatabase::postgres().await;
    let storage = Warden::connect(&settings(
        &db.url,
        None,
        &[
            ("DATABASE_MAX_CONNECTIONS", "2"),
            ("DATABASE_MIN_CONNECTIONS", "0"),
            ("DATABASE_ACQUIRE_TIMEOUT_MS", "500"),
        ],
    ))
    .await
    .unwrap();
    let approvals = storage.approvals();
    let IssueOutcome::Issued { token, .. } = approvals.issue(&request("r-1")).await.unwrap() else {
        panic!()
    };
    let held = [
        storage.database().begin().await.unwrap(),
        storage.database().begin().await.unwrap(),
    ];
    let started = Instant::now();
    let err = bounded(approvals.check(token.expose())).await.unwrap_err();
    assert!(matches!(err, ApprovalError::PoolExhausted), "{err:?}");
    assert!(err.to_string().contains("pool exhausted"));
    assert!(started.elapsed() < Duration::from_secs(5));
    let keys = storage.keys().unwrap();
    let err =
        bounded(keys.verify("wdn_test_0123456789ab_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"))
            .await
            .unwrap_err();
    assert!(matches!(err, KeyError::PoolExhausted), "{err:?}");
    drop(held);
    // Both connections come back: two concurrent callers succeed.
    let (a, b) = tokio::join!(
        approvals.check(token.expose()),
        approvals.check(token.expose())
    );
    a.unwrap();
    b.unwrap();
}

#[tokio::test]
async fn a_blackholed_database_times_out_and_leaks_no_permit() {
    let hole = Blackhole::start().await;
    let url = format!("postgres://postgres@127.0.0.1:{}/warden", hole.port());
    let storage = Warden::connect_lazy(&settings(&url, None, &[("DATABASE_MAX_CONNECTIONS", "2")]))
        .await
        .unwrap();
    let approvals = storage
        .approvals()
        .with_db_timeout(Duration::from_millis(800));
    let token = warden_approval::ApprovalToken::generate().unwrap();
    for _ in 0..4 {
        let started = Instant::now();
        let err = bounded(approvals.check(token.expose())).await.unwrap_err();
        assert!(
            matches!(
                err,
                ApprovalError::Timeout { .. }
                    | ApprovalError::PoolExhausted
                    | ApprovalError::Database { .. }
            ),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // More calls than connections, all bounded: no permit was leaked by the failures.
    let calls: Vec<_> = (0..6).map(|_| approvals.check(token.expose())).collect();
    let results = bounded(futures_join(calls)).await;
    assert!(results.iter().all(Result::is_err));
}

async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let handles: Vec<_> = futures.into_iter().map(Box::pin).collect();
    for h in handles {
        out.push(h.await);
    }
    out
}

#[tokio::test]
async fn redis_killed_under_mixed_load_loses_no_approval_operation() {
    let db = TestDatabase::postgres().await;
    let mut redis = PrivateRedis::start().await;
    let storage = Warden::connect(&settings(&db.url, Some(&redis.url()), &[]))
        .await
        .unwrap();
    let approvals: ApprovalManager = storage.approvals();
    let cache = storage.cache().clone();
    let (approval_ops, cache_ok, cache_failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for w in 0..6 {
        let (approvals, cache) = (approvals.clone(), cache.clone());
        let (ops, ok, failed) = (approval_ops.clone(), cache_ok.clone(), cache_failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                n += 1;
                if w % 2 == 0 {
                    // Approval flow: must never fail, Redis or not.
                    let IssueOutcome::Issued { token, .. } = approvals
                        .issue(&request(&format!("w{w}-{n}")))
                        .await
                        .unwrap()
                    else {
                        panic!("duplicate")
                    };
                    assert_eq!(
                        approvals.check(token.expose()).await.unwrap().status,
                        ApprovalStatus::Pending
                    );
                    let decided = approvals
                        .approve(token.expose(), "ops", None)
                        .await
                        .unwrap();
                    assert_eq!(
                        approvals.check(token.expose()).await.unwrap().status,
                        decided.status
                    );
                    ops.fetch_add(4, Ordering::Relaxed);
                } else {
                    // Cache traffic: typed errors while Redis is down, never a panic or hang.
                    match cache
                        .set_json(&format!("k{w}-{n}"), &n, Ttl::from_secs(60).unwrap())
                        .await
                    {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            assert!(
                                e.is_unavailable() || matches!(e, CacheError::Command { .. }),
                                "{e:?}"
                            );
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    redis.stop();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.restart().await;
    for t in tasks {
        bounded(t).await.unwrap();
    }
    assert!(approval_ops.load(Ordering::Relaxed) > 0);
    assert!(
        cache_failed.load(Ordering::Relaxed) > 0,
        "the outage was not observed"
    );
    // The fast path is back.
    let mut back = false;
    for _ in 0..50 {
        if cache
            .set_json("after", &1, Ttl::from_secs(60).unwrap())
            .await
            .is_ok()
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back);
    let IssueOutcome::Issued { token, .. } = approvals.issue(&request("after")).await.unwrap()
    else {
        panic!()
    };
    let cached: Option<serde_json::Value> = cache
        .get_json(&format!("approval:{}", token.hash()))
        .await
        .unwrap();
    assert!(cached.is_some(), "approvals write through to Redis again");
}
