//! Approvals under faults: a Redis the test owns stops mid-run, and deciders in
//! two processes race for the same approvals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{issued, redis_cache, request};
use warden_approval::{ApprovalManager, ApprovalStatus};
use warden_cache::redis;
use warden_testkit::{Backend, PrivateRedis, TestDatabase, TestRedis};

#[tokio::test]
async fn a_stopped_redis_falls_back_to_the_database_and_is_used_again_after_restart() {
    let db = TestDatabase::postgres().await;
    let mut redis = PrivateRedis::start().await;
    let cache = redis_cache(&redis.url(), "fault");
    let manager = ApprovalManager::new(db.db.clone(), cache.clone(), Duration::from_secs(60));
    let before = issued(manager.issue(&request("before")).await.unwrap());

    redis.stop();
    let mut ops = 0;
    // Every operation still works, through PostgreSQL.
    assert_eq!(
        manager.check(before.expose()).await.unwrap().status,
        ApprovalStatus::Pending
    );
    let during: Vec<_> = (0..10).map(|i| request(&format!("during-{i}"))).collect();
    let mut tokens = Vec::new();
    for r in &during {
        tokens.push(issued(manager.issue(r).await.unwrap()));
        ops += 1;
    }
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(
            manager.check(t.expose()).await.unwrap().status,
            ApprovalStatus::Pending
        );
        let decided = if i % 2 == 0 {
            manager.approve(t.expose(), "alice", None).await.unwrap()
        } else {
            manager.deny(t.expose(), "alice", None).await.unwrap()
        };
        assert_eq!(
            manager.check(t.expose()).await.unwrap().status,
            decided.status
        );
        ops += 3;
    }
    manager
        .approve(before.expose(), "alice", None)
        .await
        .unwrap();
    assert_eq!(ops, 40);

    redis.restart().await;
    let after = issued(manager.issue(&request("after")).await.unwrap());
    let mut cached = None;
    for _ in 0..50 {
        if let Ok(Some(v)) = cache
            .get_json::<serde_json::Value>(&common::cache_key(&after))
            .await
        {
            cached = Some(v);
            break;
        }
        // The pool reconnects on the next use; issue writes through again.
        let t = issued(
            manager
                .issue(&request(&format!("retry-{}", uuid_like())))
                .await
                .unwrap(),
        );
        if cache
            .get_json::<serde_json::Value>(&common::cache_key(&t))
            .await
            .ok()
            .flatten()
            .is_some()
        {
            cached = Some(serde_json::Value::Null);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cached.is_some(),
        "Redis was not used again after it came back"
    );
    // Decisions made while Redis was down are read correctly now too.
    assert_eq!(
        manager.check(tokens[0].expose()).await.unwrap().status,
        ApprovalStatus::Approved
    );
    assert_eq!(
        manager.check(tokens[1].expose()).await.unwrap().status,
        ApprovalStatus::Denied
    );
}

/// The backend pair's cache: Redis on PostgreSQL runs, in-process on SQLite.
fn backend_cache(backend: Backend, redis: &TestRedis, tag: &str) -> warden_cache::Cache {
    if backend == Backend::Postgres {
        redis_cache(&redis.url, &redis.prefix)
    } else {
        warden_cache::Cache::in_process(warden_cache::KeyPrefix::new(tag).unwrap(), 100)
    }
}

/// A `warden-approval-decide` process on the same storage, reading tokens from stdin.
fn decide_command(
    db: &TestDatabase,
    redis: &TestRedis,
    backend: Backend,
    approver: &str,
) -> Command {
    decide_command_at(db, redis, backend, approver, None)
}

/// `decide_command`, with the process's wall clock shifted by `skew` (e.g.
/// `-600s`) through libfaketime.
fn decide_command_at(
    db: &TestDatabase,
    redis: &TestRedis,
    backend: Backend,
    approver: &str,
    skew: Option<&str>,
) -> Command {
    let binary = env!("CARGO_BIN_EXE_warden-approval-decide");
    let mut cmd = match skew {
        Some(offset) => {
            let mut cmd = Command::new("faketime");
            cmd.args(["-f", offset, binary])
                .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
            cmd
        }
        None => Command::new(binary),
    };
    cmd.args(["--approver", approver, "--prefix", &redis.prefix])
        .arg("--database-url")
        .arg(&db.url)
        .env_remove("REDIS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if backend == Backend::Postgres {
        cmd.arg("--redis-url").arg(&redis.url);
    }
    cmd
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn deciders_in_two_processes_have_exactly_one_winner_per_approval() {
    for backend in Backend::ALL {
        let db = TestDatabase::new(backend).await;
        let redis = TestRedis::new().await;
        let use_redis = backend == Backend::Postgres;
        let cache = backend_cache(backend, &redis, "p");
        let manager = ApprovalManager::new(db.db.clone(), cache, Duration::from_secs(120));
        let tokens: Vec<_> = (0..4)
            .map(|i| request(&format!("race-{i}")))
            .collect::<Vec<_>>();
        let mut issued_tokens = Vec::new();
        for r in &tokens {
            issued_tokens.push(issued(manager.issue(r).await.unwrap()));
        }
        let input: String = issued_tokens
            .iter()
            .map(|t| format!("{}\n", t.expose()))
            .collect();
        let spawn = |name: &str, deny: bool| {
            let mut cmd = decide_command(&db, &redis, backend, name);
            cmd.args(["--attempts", "50"]);
            if deny {
                cmd.arg("--deny");
            }
            let mut child = cmd.spawn().unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child
        };
        let a = spawn("proc-a", false);
        let b = spawn("proc-b", true);
        let mut won = 0;
        let mut lost = 0;
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["other"], 0, "{backend:?}: {report}");
            assert_eq!(report["expired"], 0);
            assert_eq!(report["not_found"], 0);
            won += report["won"].as_u64().unwrap();
            lost += report["already_decided"].as_u64().unwrap();
        }
        // 4 approvals x 100 deciders: one winner each, 99 typed refusals each.
        assert_eq!((won, lost), (4, 396), "{backend:?}");
        // And exactly one decision event per approval in the trail.
        let decisions = db
            .strings(
                "SELECT request_id FROM audit_events WHERE kind = 'admin' \
                 AND method IN ('approval.approve', 'approval.deny')",
            )
            .await;
        assert_eq!(
            decisions,
            ["race-0", "race-1", "race-2", "race-3"],
            "{backend:?}"
        );
        // The in-process cache is per process: read the truth through a fresh one.
        let reader = if use_redis {
            manager.clone()
        } else {
            ApprovalManager::new(
                db.db.clone(),
                warden_cache::Cache::in_process(
                    warden_cache::KeyPrefix::new("fresh").unwrap(),
                    100,
                ),
                Duration::from_secs(120),
            )
        };
        for t in &issued_tokens {
            let a = reader.check(t.expose()).await.unwrap();
            assert_ne!(a.status, ApprovalStatus::Pending);
            let approver = a.result.unwrap().approver_id.unwrap();
            let expected = if a.status == ApprovalStatus::Approved {
                "proc-a"
            } else {
                "proc-b"
            };
            assert_eq!(approver, expected, "the stored decision is the winner's");
        }
    }
}

#[tokio::test]
async fn a_waiter_sees_a_decision_made_by_another_process() {
    for backend in Backend::ALL {
        let db = TestDatabase::new(backend).await;
        let redis = TestRedis::new().await;
        let cache = backend_cache(backend, &redis, "w");
        let manager = ApprovalManager::new(db.db.clone(), cache, Duration::from_secs(120))
            .with_poll_interval(Duration::from_millis(100));
        let token = issued(manager.issue(&request("held")).await.unwrap());
        let (m, t) = (manager.clone(), token.expose().to_owned());
        let waiter =
            tokio::spawn(async move { m.wait_for_decision(&t, Duration::from_secs(30)).await });
        tokio::time::sleep(Duration::from_millis(200)).await;

        let mut cmd = decide_command(&db, &redis, backend, "remote");
        let mut child = cmd.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{}\n", token.expose()).as_bytes())
            .unwrap();
        assert!(child.wait_with_output().unwrap().status.success());

        let outcome = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match outcome {
            warden_approval::WaitOutcome::Decided(a) => {
                assert_eq!(a.status, ApprovalStatus::Approved, "{backend:?}")
            }
            other => panic!("{backend:?}: {other:?}"),
        }
    }
}

/// Runs one `warden-approval-decide` process with a skewed clock on `token`
/// and returns its report.
fn decide_skewed(
    db: &TestDatabase,
    redis: &TestRedis,
    token: &warden_approval::ApprovalToken,
    skew: &str,
) -> serde_json::Value {
    let mut child = decide_command_at(db, redis, Backend::Postgres, "skewed", Some(skew))
        .spawn()
        .expect("faketime is installed by scripts/services.sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", token.expose()).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Security review, item 4: expiry and decision times are the database's.
/// A decider whose clock runs 10 minutes slow must not approve a call that
/// expired; one whose clock runs 10 minutes fast must not expire a valid one.
/// (PostgreSQL only: the embedded database runs inside the process and has
/// no other clock.)
#[tokio::test]
async fn a_skewed_process_clock_neither_approves_expired_calls_nor_expires_valid_ones() {
    let db = TestDatabase::postgres().await;
    let redis = TestRedis::new().await;
    let cache = redis_cache(&redis.url, &redis.prefix);
    let manager = ApprovalManager::new(db.db.clone(), cache, Duration::from_secs(120));

    let mut short = request("expired-by-db-clock");
    short.ttl = Some(Duration::from_secs(1));
    let expired = issued(manager.issue(&short).await.unwrap());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let report = decide_skewed(&db, &redis, &expired, "-600s");
    assert_eq!(
        (report["won"].as_u64(), report["expired"].as_u64()),
        (Some(0), Some(1)),
        "a slow clock approved an expired call: {report}"
    );
    assert!(matches!(
        manager.check(expired.expose()).await,
        Err(warden_approval::ApprovalError::Expired)
    ));

    let valid = issued(manager.issue(&request("valid-by-db-clock")).await.unwrap());
    let report = decide_skewed(&db, &redis, &valid, "+600s");
    assert_eq!(
        report["won"].as_u64(),
        Some(1),
        "a fast clock expired a valid call: {report}"
    );
    let approved = manager.check(valid.expose()).await.unwrap();
    assert_eq!(approved.status, ApprovalStatus::Approved);
    let decided_at = approved.result.unwrap().decided_at;
    let drift = (decided_at - chrono::Utc::now()).num_seconds().abs();
    assert!(
        drift < 60,
        "decided_at came from the skewed clock: {drift}s off"
    );
}

/// Security review, item 10: waiters share one subscription per manager
/// instead of one Redis connection each.
#[tokio::test]
async fn many_waiters_share_one_decision_subscription() {
    let db = TestDatabase::postgres().await;
    let redis = TestRedis::new().await;
    let cache = redis_cache(&redis.url, &redis.prefix);
    let manager = ApprovalManager::new(db.db.clone(), cache.clone(), Duration::from_secs(120))
        .with_poll_interval(Duration::from_secs(30));
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(issued(
            manager.issue(&request(&format!("w-{i}"))).await.unwrap(),
        ));
    }
    let waiters: Vec<_> = tokens
        .iter()
        .map(|t| {
            let (m, t) = (manager.clone(), t.expose().to_owned());
            tokio::spawn(async move { m.wait_for_decision(&t, Duration::from_secs(60)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pool = cache.redis_pool().unwrap();
    let channel = format!("{}approval:decided", redis.prefix);
    let (_, subscribers): (String, i64) = pool
        .query(redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel))
        .await
        .unwrap();
    assert_eq!(subscribers, 1, "one subscription for 40 waiters");
    let started = std::time::Instant::now();
    for t in &tokens {
        manager.approve(t.expose(), "alice", None).await.unwrap();
    }
    for w in waiters {
        match w.await.unwrap().unwrap() {
            warden_approval::WaitOutcome::Decided(a) => {
                assert_eq!(a.status, ApprovalStatus::Approved)
            }
            other => panic!("{other:?}"),
        }
    }
    // Woken by the shared subscription: the first poll would be 30 s away.
    assert!(started.elapsed() < Duration::from_secs(25));
}
