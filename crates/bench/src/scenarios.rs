//! The operations measured, each beside its raw-driver baseline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_redis::redis;
use futures_util::StreamExt;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use serde_json::{Value, json};
use warden_approval::{ApprovalManager, ApprovalRequest, ApprovalToken, IssueOutcome};
use warden_audit::{
    AuditEvent, AuditFilter, AuditLogger, Decision, Integrator, Redactor, ToolCall, VerifyOptions,
    append, verify,
};
use warden_cache::{Cache, FailMode, RateLimit, RateLimiter, RedisPool, Ttl};
use warden_entity::{approval_requests, audit_events};
use warden_keys::NewKey;

use crate::Runner;
use crate::harness::{Summary, median, summarize};
use crate::report::Row;
use crate::setup::Bench;

const CONCURRENCY: [usize; 2] = [1, 16];

fn pool(cache: &Cache) -> anyhow::Result<RedisPool> {
    cache
        .redis_pool()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the benchmark needs Redis"))
}

/// Runs every scenario (or the groups whose name starts with `only`).
pub async fn all(b: &Bench, r: &mut Runner, only: Option<&str>) -> anyhow::Result<()> {
    let run = |name: &str| {
        let yes = only.is_none_or(|o| name.starts_with(o));
        if yes {
            eprintln!("{name}");
        }
        yes
    };
    if run("cache") {
        cache_ops(b, r).await?;
        telemetry_off(r);
    }
    if run("rate limit") {
        rate_limit(b, r).await?;
    }
    if run("keys") {
        keys(b, r).await?;
    }
    if run("approvals") {
        approvals(b, r).await?;
    }
    if run("audit redaction") {
        audit_redaction(b, r).await?;
    }
    if run("audit writes") {
        audit_writes(b, r).await?;
    }
    if run("audit at scale") {
        audit_at_scale(b, r).await?;
    }
    Ok(())
}

async fn raw_query<T: redis::FromRedisValue>(
    pool: &RedisPool,
    cmd: &redis::Cmd,
) -> anyhow::Result<T> {
    let mut conn = pool.get().await?;
    Ok(cmd.query_async(&mut *conn).await?)
}

async fn cache_ops(b: &Bench, r: &mut Runner) -> anyhow::Result<()> {
    let cache = b.storage.cache().clone();
    let pool = pool(&cache)?;
    let prefix = cache.prefix().to_string();
    let value = Arc::new(json!({"blob": "x".repeat(480), "n": 1}));
    let bytes = Arc::new(serde_json::to_vec(&*value)?);
    let ttl = Ttl::from_secs(300)?;
    let ops = r.params().fast_ops;
    for c in CONCURRENCY {
        let (cw, v) = (cache.clone(), value.clone());
        let (pb, pre, by) = (pool.clone(), prefix.clone(), bytes.clone());
        r.compare(
            "cache set_json (512 B)",
            c,
            ops,
            move |i| {
                let (cache, v) = (cw.clone(), v.clone());
                async move { Ok(cache.set_json(&format!("c:{}", i % 1000), &*v, ttl).await?) }
            },
            Some(("raw SET EX", move |i| {
                let (pool, key, by) = (pb.clone(), format!("{pre}r:{}", i % 1000), by.clone());
                async move {
                    raw_query::<()>(
                        &pool,
                        redis::cmd("SET").arg(key).arg(&**by).arg("EX").arg(300),
                    )
                    .await
                }
            })),
            Some(0.8),
        )
        .await?;
        let cw = cache.clone();
        let (pb, pre) = (pool.clone(), prefix.clone());
        r.compare(
            "cache get_json (512 B)",
            c,
            ops,
            move |i| {
                let cache = cw.clone();
                async move {
                    let v: Option<Value> = cache.get_json(&format!("c:{}", i % 1000)).await?;
                    anyhow::ensure!(v.is_some(), "cache miss");
                    Ok(())
                }
            },
            Some(("raw GET", move |i| {
                let (pool, key) = (pb.clone(), format!("{pre}r:{}", i % 1000));
                async move {
                    let v: Option<Vec<u8>> = raw_query(&pool, redis::cmd("GET").arg(key)).await?;
                    anyhow::ensure!(v.is_some(), "miss");
                    Ok(())
                }
            })),
            Some(0.8),
        )
        .await?;
    }
    Ok(())
}

async fn rate_limit(b: &Bench, r: &mut Runner) -> anyhow::Result<()> {
    let cache = b.storage.cache().clone();
    let pool = pool(&cache)?;
    let limiter = RateLimiter::new(
        cache.clone(),
        "bench",
        RateLimit::new(1_000_000, Duration::from_secs(3_600))?,
        FailMode::Closed,
    );
    let sha: String = raw_query(&pool, redis::cmd("SCRIPT").arg("LOAD").arg("return 1")).await?;
    let ops = r.params().fast_ops;
    for c in CONCURRENCY {
        let l = limiter.clone();
        let (p, sha) = (pool.clone(), sha.clone());
        r.compare(
            "rate-limit decision (GCRA)",
            c,
            ops,
            move |i| {
                let l = l.clone();
                async move {
                    anyhow::ensure!(l.check(&format!("s{}", i % 100)).await?.allowed, "denied");
                    Ok(())
                }
            },
            Some(("raw EVALSHA (return 1)", move |i| {
                let (pool, sha) = (p.clone(), sha.clone());
                async move {
                    raw_query::<i64>(
                        &pool,
                        redis::cmd("EVALSHA")
                            .arg(sha)
                            .arg(1)
                            .arg(format!("k{}", i % 100)),
                    )
                    .await
                    .map(|_| ())
                }
            })),
            Some(0.7),
        )
        .await?;
    }
    Ok(())
}

async fn keys(b: &Bench, r: &mut Runner) -> anyhow::Result<()> {
    let keys = b.storage.keys()?;
    let created = keys
        .create(&NewKey {
            actor: "tester",
            caller_id: "bench-agent",
            role: "developer",
            trust_level: 2,
            environment: "bench",
            expires_at: None,
        })
        .await?;
    let plain = Arc::new(created.plaintext.expose().to_owned());
    keys.verify(&plain).await?;
    let pool = pool(b.storage.cache())?;
    let probe = format!("{}r:0", b.storage.cache().prefix());
    let ops = r.params().fast_ops;
    let mut cached_rate = 0.0;
    for c in CONCURRENCY {
        let (k, p) = (keys.clone(), plain.clone());
        let (pb, key) = (pool.clone(), probe.clone());
        r.compare(
            "key verify (cached)",
            c,
            ops,
            move |_| {
                let (k, p) = (k.clone(), p.clone());
                async move { k.verify(&p).await.map(|_| ()).map_err(Into::into) }
            },
            Some(("raw GET", move |_| {
                let (pool, key) = (pb.clone(), key.clone());
                async move {
                    raw_query::<Option<Vec<u8>>>(&pool, redis::cmd("GET").arg(key))
                        .await
                        .map(|_| ())
                }
            })),
            Some(0.7),
        )
        .await?;
        if c == 1 {
            cached_rate = r.rows.last().map_or(0.0, |row| row.warden.per_sec);
        }
    }
    // bcrypt at the configured cost, the work the cache saves.
    let hash = Arc::new(bcrypt::hash(
        "benchmark-secret-value",
        b.storage.settings().bcrypt_cost,
    )?);
    let mut lat = Vec::new();
    let started = Instant::now();
    for _ in 0..5 {
        let h = hash.clone();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || bcrypt::verify("benchmark-secret-value", &h)).await??;
        lat.push(t.elapsed());
    }
    let bcrypt = summarize(started.elapsed(), 5, &mut lat);
    let ratio = cached_rate / bcrypt.per_sec.max(1e-9);
    r.push_custom(Row {
        operation: format!(
            "key verify cached vs uncached (bcrypt cost {})",
            b.storage.settings().bcrypt_cost
        ),
        concurrency: 1,
        warden: r
            .rows
            .iter()
            .rev()
            .find(|row| row.operation == "key verify (cached)" && row.concurrency == 1)
            .map_or(bcrypt, |row| row.warden),
        noise_pct: 0.0,
        baseline: Some(("bcrypt verify".into(), bcrypt)),
        ratio: Some(ratio),
        target: Some("≥ 1000×".into()),
        met: Some(ratio >= 1000.0),
    });
    // An unauthenticated flood: well-formed keys with unknown prefixes each
    // cost a bcrypt; the manager bounds how many run at once and refuses the
    // rest quickly (Busy) instead of queueing them.
    let flood: u64 = 200;
    let started = Instant::now();
    let tasks: Vec<_> = (0..flood)
        .map(|i| {
            let keys = keys.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let forged = format!("wdn_bench_{i:012x}_{}", "A".repeat(43));
                let outcome = keys.verify(&forged).await;
                (
                    t.elapsed(),
                    matches!(outcome, Err(warden_keys::KeyError::Busy)),
                )
            })
        })
        .collect();
    let (mut lat, mut busy) = (Vec::new(), 0usize);
    for t in tasks {
        let (elapsed, refused) = t.await?;
        lat.push(elapsed);
        busy += usize::from(refused);
    }
    let answered = summarize(started.elapsed(), flood, &mut lat);
    r.push_custom(Row {
        operation: format!(
            "unauthenticated flood: {flood} forged keys at once, cost {} ({busy} refused Busy, {} bcrypts run)",
            b.storage.settings().bcrypt_cost,
            flood as usize - busy
        ),
        concurrency: flood as usize,
        warden: answered,
        noise_pct: 0.0,
        baseline: Some(("bcrypt verify (one per forged key, unbounded)".into(), bcrypt)),
        ratio: Some(answered.per_sec / bcrypt.per_sec.max(1e-9)),
        target: Some("bounded: at most running + queued bcrypts, the rest Busy".into()),
        met: None,
    });
    Ok(())
}

fn approval_request(id: String) -> ApprovalRequest {
    ApprovalRequest {
        request_id: id,
        caller_id: "bench-agent".into(),
        tool_name: "db.drop_table".into(),
        sanitized_tool_call: json!({"table": "orders"}),
        raw_args_hash: "ab".repeat(32),
        risk_labels: vec!["destructive".into()],
        policy_version: "bench".into(),
        ttl: None,
    }
}

async fn issue_many(m: &ApprovalManager, tag: &str, n: u64) -> anyhow::Result<Vec<ApprovalToken>> {
    let mut tokens = Vec::new();
    for i in 0..n {
        match m.issue(&approval_request(format!("{tag}-{i}"))).await? {
            IssueOutcome::Issued { token, .. } => tokens.push(token),
            IssueOutcome::Existing { .. } => anyhow::bail!("unexpected existing approval"),
        }
    }
    Ok(tokens)
}

fn raw_approval_row(i: String, token_hash: String) -> approval_requests::ActiveModel {
    let now = chrono::Utc::now();
    approval_requests::ActiveModel::from(approval_requests::Model {
        id: uuid::Uuid::now_v7(),
        token_hash,
        request_id: i,
        caller_id: "bench-agent".into(),
        tool_name: "db.drop_table".into(),
        tool_call: json!({"table": "orders"}),
        raw_args_hash: "ab".repeat(32),
        risk_labels: json!(["destructive"]),
        status: "PENDING".into(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        decided_at: None,
        approver_id: None,
        note: None,
        policy_version: "bench".into(),
        execute_by: None,
        executed_at: None,
    })
}

async fn approvals(b: &Bench, r: &mut Runner) -> anyhow::Result<()> {
    let m = b.storage.approvals();
    let cache = b.storage.cache().clone();
    let pool = pool(&cache)?;
    let prefix = cache.prefix().to_string();
    let (fast, slow) = (r.params().fast_ops, r.params().db_ops);
    let hot = Arc::new(issue_many(&m, "hot", 200).await?);
    let cold = Arc::new(issue_many(&m, "cold", 200).await?);
    for t in cold.iter() {
        cache.delete(&format!("approval:{}", t.hash())).await?;
    }
    let db = b.storage.database().clone();
    for c in CONCURRENCY {
        let (mm, h) = (m.clone(), hot.clone());
        let (pb, pre, h2) = (pool.clone(), prefix.clone(), hot.clone());
        r.compare(
            "approval check, Redis hit",
            c,
            fast,
            move |i| {
                let (m, h) = (mm.clone(), h.clone());
                async move {
                    m.check(h[(i % 200) as usize].expose())
                        .await
                        .map(|_| ())
                        .map_err(Into::into)
                }
            },
            Some(("raw GET", move |i| {
                let (pool, key) = (
                    pb.clone(),
                    format!("{pre}approval:{}", h2[(i % 200) as usize].hash()),
                );
                async move {
                    let v: Option<Vec<u8>> = raw_query(&pool, redis::cmd("GET").arg(key)).await?;
                    anyhow::ensure!(v.is_some(), "miss");
                    Ok(())
                }
            })),
            Some(0.7),
        )
        .await?;
        let (mm, cl) = (m.clone(), cold.clone());
        let (dbb, cl2) = (db.clone(), cold.clone());
        r.compare(
            "approval check, Postgres fallback",
            c,
            slow,
            move |i| {
                let (m, cl) = (mm.clone(), cl.clone());
                async move {
                    m.check(cl[(i % 200) as usize].expose())
                        .await
                        .map(|_| ())
                        .map_err(Into::into)
                }
            },
            Some(("raw point SELECT (unique index)", move |i| {
                let (db, hash) = (dbb.clone(), cl2[(i % 200) as usize].hash());
                async move {
                    let row = approval_requests::Entity::find()
                        .filter(approval_requests::Column::TokenHash.eq(hash))
                        .one(&db)
                        .await?;
                    anyhow::ensure!(row.is_some(), "missing");
                    Ok(())
                }
            })),
            Some(0.7),
        )
        .await?;
        // issue: Warden's full path vs raw INSERT + SET EX.
        let mm = m.clone();
        let tag = format!("issue-{c}-{}", uuid::Uuid::now_v7().simple());
        let (raw, pb, pre) = (b.raw_db.clone(), pool.clone(), prefix.clone());
        let tag2 = tag.clone();
        let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter2 = counter.clone();
        r.compare(
            "approval issue",
            c,
            slow,
            move |_| {
                let (m, id) = (
                    mm.clone(),
                    format!(
                        "{tag}-{}",
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    ),
                );
                async move {
                    m.issue(&approval_request(id))
                        .await
                        .map(|_| ())
                        .map_err(Into::into)
                }
            },
            Some(("raw INSERT + SET EX", move |_| {
                let n = counter2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (raw, pool, key) = (raw.clone(), pb.clone(), format!("{pre}raw-approval:{n}"));
                let hash = format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                );
                let row = raw_approval_row(format!("{tag2}-raw-{n}"), hash);
                async move {
                    approval_requests::Entity::insert(row)
                        .exec_without_returning(&raw)
                        .await?;
                    raw_query::<()>(
                        &pool,
                        redis::cmd("SET")
                            .arg(key)
                            .arg("x".repeat(400))
                            .arg("EX")
                            .arg(300),
                    )
                    .await
                }
            })),
            None,
        )
        .await?;
        // approve: needs fresh PENDING approvals for every call of every round.
        let total = slow * (r.params().rounds as u64 + 1) + slow / 10 + 10;
        let tokens = Arc::new(
            issue_many(
                &m,
                &format!("approve-{c}-{}", uuid::Uuid::now_v7().simple()),
                total,
            )
            .await?,
        );
        let raw_hashes: Arc<Vec<String>> = Arc::new(
            (0..total)
                .map(|_| {
                    format!(
                        "{}{}",
                        uuid::Uuid::new_v4().simple(),
                        uuid::Uuid::new_v4().simple()
                    )
                })
                .collect(),
        );
        for (n, h) in raw_hashes.iter().enumerate() {
            approval_requests::Entity::insert(raw_approval_row(
                format!("raw-approve-{c}-{n}"),
                h.clone(),
            ))
            .exec_without_returning(&b.raw_db)
            .await?;
        }
        let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let next2 = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (mm, tk) = (m.clone(), tokens.clone());
        let (raw, rh) = (b.raw_db.clone(), raw_hashes.clone());
        r.compare(
            "approval approve",
            c,
            slow,
            move |_| {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
                let (m, t) = (mm.clone(), tk[n].expose().to_owned());
                async move { m.approve(&t, "bench", None).await.map(|_| ()).map_err(Into::into) }
            },
            Some(("raw conditional UPDATE", move |_| {
                let n = next2.fetch_add(1, std::sync::atomic::Ordering::Relaxed) as usize;
                let (raw, hash) = (raw.clone(), rh[n].clone());
                async move {
                    let res = raw
                        .execute_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "UPDATE approval_requests SET status = 'APPROVED', decided_at = now(), approver_id = 'bench' \
                             WHERE token_hash = $1 AND status = 'PENDING' AND expires_at > now()",
                            [hash.into()],
                        ))
                        .await?;
                    anyhow::ensure!(res.rows_affected() == 1, "not updated");
                    Ok(())
                }
            })),
            None,
        )
        .await?;
    }
    Ok(())
}

fn tool_call_event(redactor: &Redactor, n: u64, caller: &str) -> anyhow::Result<AuditEvent> {
    let args = json!({"query": "SELECT * FROM orders WHERE id = $1", "params": [n], "token": "sk-live-abcdefghijklmnop0123456789"});
    Ok(AuditEvent::record(
        &ToolCall {
            request_id: &format!("{caller}-{n}"),
            caller_id: caller,
            api_key_id: None,
            method: "tools/call",
            tool_name: Some("db.query"),
            raw_args: (&args).into(),
            decision: Decision::Allow,
            reason: Some("policy: read-only"),
            risk_labels: &["read"],
            status_code: Some(200),
            latency_ms: Some(4),
            timestamp: None,
        },
        redactor,
    )?)
}

/// A row for the raw baselines: the same shape and size, unique keys, no
/// leaf hashing, no queue, no tree.
fn raw_row(e: &AuditEvent, seq: i64) -> audit_events::ActiveModel {
    audit_events::ActiveModel::from(audit_events::Model {
        id: uuid::Uuid::now_v7(),
        request_id: format!("{}-raw-{seq}", e.request_id()),
        timestamp: e.timestamp(),
        caller_id: e.caller_id().to_owned(),
        api_key_id: None,
        method: e.method().to_owned(),
        tool_name: e.tool_name().map(str::to_owned),
        decision: e.decision().as_str().to_owned(),
        reason: e.reason().map(str::to_owned),
        raw_args_hash: e.raw_args_hash().to_owned(),
        sanitized_args: e.sanitized_args().clone(),
        redaction_flags: serde_json::to_value(e.redaction_flags()).unwrap_or(Value::Null),
        risk_labels: json!(e.risk_labels()),
        status_code: e.status_code(),
        latency_ms: e.latency_ms(),
        kind: "tool_call".into(),
        leaf_hash: Some(format!("{seq:064x}")),
    })
}

/// The cost of building one event (canonical hash + every redaction rule +
/// leaf encoding happen later, at append) beside serializing the same
/// arguments: what redaction adds per event, against the sustained write's
/// per-row budget (the audit writes rows below).
async fn audit_redaction(b: &Bench, r: &mut Runner) -> anyhow::Result<()> {
    let redactor = b.storage.redactor().clone();
    // A 16 KiB document: prose, code, URLs, ids and hashes, with a few
    // secrets, the way a tool's arguments carry a file or a page.
    let mut doc = String::new();
    let mut i = 0u64;
    while doc.len() < 16 * 1024 {
        doc.push_str(&format!(
            "Line {i}: see https://docs.example.com/guide/{i} and commit {:040x}; \
             the request id is 7f3c{i:08x}-aaaa-4bbb-8ccc-0123456789ab and max_tokens=512.\n",
            i * 7919
        ));
        if i.is_multiple_of(40) {
            doc.push_str(&format!(
                "export DB_PASSWORD=hunter{i}x\nAuthorization: Bearer sk-live-{i:024}\n"
            ));
        }
        i += 1;
    }
    let shapes = [
        (
            "typical args (3 fields, 1 secret)",
            json!({"query": "SELECT * FROM orders WHERE id = $1", "params": [7], "token": "sk-live-abcdefghijklmnop0123456789"}),
        ),
        (
            "a 16 KiB document with secrets",
            json!({"path": "notes.md", "content": doc}),
        ),
    ];
    for (what, args) in shapes {
        let args = std::sync::Arc::new(args);
        let (a, red) = (args.clone(), redactor.clone());
        let a2 = args.clone();
        r.compare(
            &format!("audit event build (hash + redact), {what}"),
            1,
            r.params().fast_ops / 4,
            move |n| {
                let (a, red) = (a.clone(), red.clone());
                async move {
                    let event = AuditEvent::record(
                        &ToolCall {
                            request_id: &format!("build-{n}"),
                            caller_id: "bench",
                            api_key_id: None,
                            method: "tools/call",
                            tool_name: Some("fs.write"),
                            raw_args: a.as_ref().into(),
                            decision: Decision::Allow,
                            reason: None,
                            risk_labels: &[],
                            status_code: None,
                            latency_ms: None,
                            timestamp: None,
                        },
                        &red,
                    )?;
                    std::hint::black_box(event);
                    Ok(())
                }
            },
            Some(("serde_json::to_vec of the same args", move |_| {
                let a = a2.clone();
                async move {
                    std::hint::black_box(serde_json::to_vec(a.as_ref())?);
                    Ok(())
                }
            })),
            None,
        )
        .await?;
    }
    Ok(())
}

async fn audit_writes(b: &Bench, r: &mut Runner) -> anyhow::Result<()> {
    let events = r.params().audit_events;
    let redactor = b.storage.redactor().clone();
    let batch = b.storage.settings().audit_batch_size;
    let mut raw_seq: i64 = 0;
    for c in CONCURRENCY {
        let (mut warden_rounds, mut multi_rounds, mut single_rounds, mut log_latencies) =
            (vec![], vec![], vec![], vec![]);
        let mut lag_rounds = Vec::new();
        for round in 0..r.params().rounds {
            // Warden: c loggers (as c gateway processes would run), each fed by
            // one task that records (hash + redact) and logs; each logger runs
            // its integrator too (one integrates at a time). Flush makes the
            // events durable.
            let mut loggers = Vec::new();
            for t in 0..c {
                let mut config = b.storage.settings().audit_logger_config();
                config.spill_path = std::env::temp_dir().join(format!(
                    "warden-bench-{}-{c}-{round}-{t}.spill",
                    std::process::id()
                ));
                loggers.push(Arc::new(AuditLogger::start(
                    b.storage.database().clone(),
                    config,
                )));
            }
            let started = Instant::now();
            let mut tasks = Vec::new();
            for (t, logger) in loggers.iter().enumerate() {
                let (logger, redactor) = (logger.clone(), redactor.clone());
                let caller = format!("w{c}r{round}t{t}");
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    for n in (t as u64..events).step_by(c) {
                        let e = tool_call_event(&redactor, n, &caller)?;
                        let s = Instant::now();
                        logger.log(e);
                        lat.push(s.elapsed());
                        if n % 512 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    let report = logger.flush().await?;
                    anyhow::ensure!(
                        report.spilled_pending == 0,
                        "the logger spilled during the benchmark"
                    );
                    anyhow::Ok(lat)
                }));
            }
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await??);
            }
            warden_rounds.push(summarize(started.elapsed(), events, &mut lat.clone()));
            log_latencies.push(summarize(started.elapsed(), events, &mut lat));
            let mut stored = 0;
            for logger in &loggers {
                logger.shutdown().await?;
                stored += logger.stats().stored;
            }
            anyhow::ensure!(stored == events, "not every event was stored: {stored}");

            // Integration lag at the sustained rate: the same c loggers'
            // worth of load, paced at 80% of the rate just measured (an
            // unpaced burst would measure the writers' queue, not integration).
            let rate = events as f64 / started.elapsed().as_secs_f64() * 0.8;
            lag_rounds.push(paced_lag(b, c, round, rate, &redactor).await?);

            // Raw multi-row INSERT of the same rows, same batch size, c writers.
            let template = tool_call_event(&redactor, 0, "raw")?;
            let rows: Vec<_> = (0..events)
                .map(|_| {
                    raw_seq += 1;
                    raw_row(&template, raw_seq)
                })
                .collect();
            let chunks: Vec<Vec<_>> = rows.chunks(batch).map(<[_]>::to_vec).collect();
            let (wall, mut lat) =
                drain_in_parallel(c, chunks, b.raw_db.clone(), |db, chunk| async move {
                    audit_events::Entity::insert_many(chunk)
                        .exec_without_returning(&db)
                        .await?;
                    Ok(())
                })
                .await?;
            multi_rounds.push(summarize(wall, events, &mut lat));

            // Naive: one INSERT + COMMIT per event (a twentieth as many events).
            let n_single = (events / 20).max(100);
            let singles: Vec<_> = (0..n_single)
                .map(|_| {
                    raw_seq += 1;
                    raw_row(&template, raw_seq)
                })
                .collect();
            let (wall, mut lat) =
                drain_in_parallel(c, singles, b.raw_db.clone(), |db, row| async move {
                    audit_events::Entity::insert(row)
                        .exec_without_returning(&db)
                        .await?;
                    Ok(())
                })
                .await?;
            single_rounds.push(summarize(wall, n_single, &mut lat));
        }
        let (multi, _) = median(&multi_rounds);
        let (single, _) = median(&single_rounds);
        r.push(
            "audit sustained write (c loggers: redacted, leaf-hashed, queued) rows/s",
            c,
            &warden_rounds,
            Some((format!("raw multi-row INSERT ({batch}/stmt)"), multi)),
            Some(if c == 1 { 0.9 } else { 0.7 }),
        );
        let (lag, lag_noise) = median(&lag_rounds);
        r.push_custom(Row {
            operation:
                "audit integration lag at 80% of the sustained rate, logged → signed checkpoint"
                    .into(),
            concurrency: c,
            warden: lag,
            noise_pct: lag_noise,
            baseline: None,
            ratio: None,
            target: Some("p99 ≤ 2 s".into()),
            met: Some(lag.p99_us <= 2_000_000.0),
        });
        r.push(
            "audit sustained write vs one-commit-per-event",
            c,
            &warden_rounds,
            Some(("raw INSERT + COMMIT per event".into(), single)),
            Some(20.0),
        );
        let (lat, noise) = median(&log_latencies);
        r.push_custom(Row {
            operation: "audit log() call latency (max in the max column)".into(),
            concurrency: c,
            warden: lat,
            noise_pct: noise,
            baseline: None,
            ratio: None,
            target: Some("p99 < 50µs".into()),
            met: Some(lat.p99_us < 50.0),
        });
        if let Some(last) = r.rows.last() {
            eprintln!(
                "    log() p50 {:.1}µs p99 {:.1}µs max {:.0}µs",
                last.warden.p50_us, last.warden.p99_us, last.warden.max_us
            );
        }
    }
    Ok(())
}

/// Logs at `rate` events/s across `c` loggers for a few seconds, then
/// measures each event's lag from logged to covered by a signed checkpoint.
async fn paced_lag(
    b: &Bench,
    c: usize,
    round: usize,
    rate: f64,
    redactor: &Redactor,
) -> anyhow::Result<Summary> {
    let seconds = 4.0;
    let total = (rate * seconds) as u64;
    let mut loggers = Vec::new();
    for t in 0..c {
        let mut config = b.storage.settings().audit_logger_config();
        config.spill_path = std::env::temp_dir().join(format!(
            "warden-bench-lag-{}-{c}-{round}-{t}.spill",
            std::process::id()
        ));
        loggers.push(Arc::new(AuditLogger::start(
            b.storage.database().clone(),
            config,
        )));
    }
    let started = Instant::now();
    let tick = Duration::from_millis(10);
    let per_tick = ((rate * tick.as_secs_f64()) as u64).max(1);
    let mut n = 0u64;
    while n < total {
        for _ in 0..per_tick.min(total - n) {
            let logger = &loggers[(n as usize) % c];
            logger.log(tool_call_event(
                redactor,
                n,
                &format!("lag{c}r{round}t{}", n as usize % c),
            )?);
            n += 1;
        }
        let due = started + tick * ((n / per_tick) as u32);
        tokio::time::sleep_until(due.into()).await;
    }
    // Give the integrators time to catch up before stopping them (a
    // shutdown integrates everything itself, which would hide the lag).
    tokio::time::sleep(b.storage.settings().audit_checkpoint_interval * 3).await;
    for logger in &loggers {
        logger.shutdown().await?;
    }
    integration_lag(b, &format!("lag{c}r{round}t%")).await
}

/// Integration lag of the events whose caller matches `pattern`: from the
/// event's timestamp to the creation of the first checkpoint covering its leaf.
async fn integration_lag(b: &Bench, pattern: &str) -> anyhow::Result<Summary> {
    let rows = b
        .storage
        .database()
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT (EXTRACT(EPOCH FROM ((SELECT MIN(c.created_at) FROM audit_checkpoints c              WHERE c.tree_size > l.leaf_index) - e.timestamp)) * 1e6)::float8 AS lag_us              FROM audit_leaves l JOIN audit_events e ON e.id = l.event_id WHERE e.caller_id LIKE $1",
            [pattern.into()],
        ))
        .await?;
    let mut lat: Vec<Duration> = rows
        .iter()
        .filter_map(|r| r.try_get::<Option<f64>>("", "lag_us").ok().flatten())
        .map(|us| Duration::from_micros(us.max(0.0) as u64))
        .collect();
    anyhow::ensure!(!lat.is_empty(), "no integrated events matched {pattern}");
    let n = lat.len() as u64;
    let wall = lat.iter().copied().max().unwrap_or_default();
    Ok(summarize(wall, n, &mut lat))
}

/// Runs `work` over `items` with `concurrency` workers pulling from one queue;
/// returns the wall time and each call's latency.
async fn drain_in_parallel<T, F, Fut>(
    concurrency: usize,
    items: Vec<T>,
    db: sea_orm::DatabaseConnection,
    work: F,
) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    T: Send + 'static,
    F: Fn(sea_orm::DatabaseConnection, T) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let queue = Arc::new(std::sync::Mutex::new(items));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (db, queue, work) = (db.clone(), queue.clone(), work.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let next = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop();
                let Some(item) = next else { break };
                let s = Instant::now();
                work(db.clone(), item).await?;
                lat.push(s.elapsed());
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    Ok((started.elapsed(), lat))
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn audit_at_scale(b: &Bench, r: &mut Runner) -> anyhow::Result<()> {
    let rows = r.params().big_rows;
    let redactor = b.storage.redactor().clone();
    let db = b.storage.database().clone();
    let integrator = Integrator::new(db.clone(), b.storage.settings().integrator_config());
    integrator.integrate_all().await?;
    let before = audit_leaves_count(&db).await?;
    eprintln!("  loading {rows} rows…");
    let started = Instant::now();
    let callers = 1_000u64;
    let mut n = 0;
    while n < rows {
        let chunk: Vec<_> = (n..(n + 2_000).min(rows))
            .map(|i| tool_call_event(&redactor, i, &format!("caller-{}", i % callers)))
            .collect::<Result<_, _>>()?;
        n += chunk.len() as u64;
        append(&db, chunk, Duration::from_secs(120)).await?;
        integrator.integrate_once(false).await?;
    }
    integrator.integrate_all().await?;
    eprintln!(
        "  loaded and integrated in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let total = audit_leaves_count(&db).await?;
    anyhow::ensure!(total >= before + rows, "not every row was integrated");
    let total_rows = audit_events::Entity::find().count(&db).await?;

    // verify: rows/s and peak memory (reset the high-water mark first).
    let mut verify_rounds = Vec::new();
    let mut scan_rounds = Vec::new();
    let mut peak_delta = 0u64;
    for _ in 0..r.params().rounds.min(3) {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let base = peak_rss_kib();
        let t = Instant::now();
        let v = verify(
            &db,
            &VerifyOptions {
                verifier: b
                    .storage
                    .settings()
                    .audit_signing_key
                    .as_ref()
                    .map(|k| k.verifier())
                    .transpose()?,
                ..VerifyOptions::default()
            },
        )
        .await?;
        anyhow::ensure!(v.is_valid(), "the log did not verify: {v:?}");
        verify_rounds.push(summarize(t.elapsed(), total, &mut [t.elapsed()]));
        peak_delta = peak_delta.max(peak_rss_kib().saturating_sub(base));
        // Raw: one sequential scan streaming every row in id order.
        let t = Instant::now();
        let mut stream = audit_events::Entity::find()
            .order_by_asc(audit_events::Column::Id)
            .stream(&db)
            .await?;
        let mut count = 0u64;
        while let Some(row) = stream.next().await {
            row?;
            count += 1;
        }
        drop(stream);
        anyhow::ensure!(count == total_rows, "scan saw {count} rows");
        scan_rounds.push(summarize(t.elapsed(), total, &mut [t.elapsed()]));
    }
    let (scan, _) = median(&scan_rounds);
    r.push(
        &format!(
            "audit verify, {total} rows (rows/s; peak RSS +{} MiB)",
            peak_delta / 1024
        ),
        1,
        &verify_rounds,
        Some(("raw sequential scan (ORDER BY id)".into(), scan)),
        Some(0.3),
    );

    // Inclusion proofs at this size: generation (p99) and offline checks/s.
    let ops = r.params().db_ops;
    let sample: Vec<String> = audit_events::Entity::find()
        .select_only()
        .column(audit_events::Column::RequestId)
        .filter(audit_events::Column::CallerId.like("caller-%"))
        .limit(ops)
        .into_tuple()
        .all(&db)
        .await?;
    anyhow::ensure!(!sample.is_empty(), "no events to prove");
    let sample = Arc::new(sample);
    let mut prove_rounds = Vec::new();
    for _ in 0..r.params().rounds {
        let (db, sample) = (db.clone(), sample.clone());
        prove_rounds.push(
            crate::harness::sample(1, ops, 1, move |i| {
                let (db, id) = (db.clone(), sample[i as usize % sample.len()].clone());
                async move {
                    warden_audit::prove_inclusion(&db, &id).await?;
                    Ok(())
                }
            })
            .await?,
        );
    }
    let (s, noise) = median(&prove_rounds);
    r.push_custom(Row {
        operation: format!("inclusion proof generation at {total} leaves"),
        concurrency: 1,
        warden: s,
        noise_pct: noise,
        baseline: None,
        ratio: None,
        target: Some("p99 ≤ 5 ms".into()),
        met: Some(s.p99_us <= 5_000.0),
    });
    if let Some(key) = &b.storage.settings().audit_signing_key {
        let verifier = key.verifier()?;
        let bundle = warden_audit::prove_inclusion(&db, &sample[0]).await?;
        let checks = 20_000u64;
        let mut rounds = Vec::new();
        for _ in 0..r.params().rounds {
            let t = Instant::now();
            let mut lat = Vec::with_capacity(checks as usize);
            for _ in 0..checks {
                let s = Instant::now();
                bundle
                    .verify(&verifier)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                lat.push(s.elapsed());
            }
            rounds.push(summarize(t.elapsed(), checks, &mut lat));
        }
        let (s, noise) = median(&rounds);
        r.push_custom(Row {
            operation: "verify-proof (signature + leaf + path, offline) proofs/s".into(),
            concurrency: 1,
            warden: s,
            noise_pct: noise,
            baseline: None,
            ratio: None,
            target: Some("≥ 10k/s".into()),
            met: Some(s.per_sec >= 10_000.0),
        });
    }

    // Queries at scale: p99 of a caller's newest page, offset and keyset.
    let query = b.storage.audit().query();
    let ops = r.params().db_ops;
    for c in CONCURRENCY {
        let q = query.clone();
        let dbb = db.clone();
        r.compare(
            &format!("list_by_caller(50) at {total} rows"),
            c,
            ops,
            move |i| {
                let q = q.clone();
                async move {
                    let events = q.list_by_caller(&format!("caller-{}", i % callers), 50, 0).await?;
                    anyhow::ensure!(events.len() == 50, "short page");
                    Ok(())
                }
            },
            Some(("raw indexed SELECT … LIMIT 50", move |i| {
                let db = dbb.clone();
                async move {
                    let rows = db
                        .query_all_raw(Statement::from_sql_and_values(
                            DbBackend::Postgres,
                            "SELECT * FROM audit_events WHERE caller_id = $1 ORDER BY id DESC LIMIT 50",
                            [format!("caller-{}", i % callers).into()],
                        ))
                        .await?;
                    anyhow::ensure!(rows.len() == 50, "short page");
                    Ok(())
                }
            })),
            None,
        )
        .await?;
        let q = query.clone();
        let mut rounds = Vec::new();
        for _ in 0..r.params().rounds {
            let q = q.clone();
            rounds.push(
                crate::harness::sample(c, ops, 1, move |i| {
                    let q = q.clone();
                    async move {
                        let filter = AuditFilter {
                            caller_id: Some(format!("caller-{}", i % callers)),
                            ..AuditFilter::default()
                        };
                        let first = q.page(&filter, None, 50).await?;
                        let second = q.page(&filter, first.next, 50).await?;
                        anyhow::ensure!(second.events.len() == 50, "short page");
                        Ok(())
                    }
                })
                .await?,
            );
        }
        let (s, noise) = median(&rounds);
        r.push_custom(Row {
            operation: format!("keyset page 2 of a caller at {total} rows (2 queries)"),
            concurrency: c,
            warden: s,
            noise_pct: noise,
            baseline: None,
            ratio: None,
            target: Some("p99 < 10ms".into()),
            met: Some(s.p99_us < 10_000.0),
        });
        let last_cmp = r
            .rows
            .iter()
            .rev()
            .find(|row| row.operation.starts_with("list_by_caller") && row.concurrency == c)
            .map(|row| row.warden.p99_us);
        // The p99 target belongs on the measured row itself: one row, one
        // thing (no separate row with a 0/s rate).
        if let Some(p99) = last_cmp
            && let Some(row) = r
                .rows
                .iter_mut()
                .rev()
                .find(|row| row.operation.starts_with("list_by_caller") && row.concurrency == c)
        {
            row.target = Some("p99 < 10ms".into());
            row.met = Some(p99 < 10_000.0);
        }
    }
    Ok(())
}

async fn audit_leaves_count(db: &sea_orm::DatabaseConnection) -> anyhow::Result<u64> {
    Ok(warden_entity::audit_leaves::Entity::find()
        .count(db)
        .await?)
}

/// What the instruments add to each operation when no telemetry provider is
/// installed (the default): the work one Redis-backed cache read adds — a
/// clock read, a histogram record and a counter add, each with two static
/// attributes — on the OpenTelemetry no-op meter, against the raw `GET` it
/// sits on (from this run's cache rows).
fn telemetry_off(r: &mut Runner) {
    use opentelemetry::KeyValue;
    let meter = opentelemetry::global::meter("warden-bench");
    let counter = meter.u64_counter("bench.lookups").build();
    let histogram = meter.f64_histogram("bench.duration").build();
    let n: u64 = 2_000_000;
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        counter.add(
            1,
            &[
                KeyValue::new(
                    "warden.cache.result",
                    if i % 2 == 0 { "hit" } else { "miss" },
                ),
                KeyValue::new("warden.cache.backend", "redis"),
            ],
        );
        histogram.record(
            std::hint::black_box(t.elapsed().as_secs_f64()),
            &[
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.operation.name", "GET"),
            ],
        );
    }
    let elapsed = started.elapsed();
    let per_sec = n as f64 / elapsed.as_secs_f64().max(1e-9);
    let ns = elapsed.as_secs_f64() * 1e9 / n as f64;
    let recording = crate::harness::Summary {
        per_sec,
        p50_us: ns / 1e3,
        p99_us: ns / 1e3,
        max_us: ns / 1e3,
    };
    let raw_get = r
        .rows
        .iter()
        .find(|row| row.operation.starts_with("cache get_json") && row.concurrency == 1)
        .and_then(|row| row.baseline.clone());
    let ratio = raw_get.as_ref().map(|(_, b)| per_sec / b.per_sec.max(1e-9));
    r.push_custom(Row {
        operation: "telemetry off: one operation's recording (no-op instruments)".into(),
        concurrency: 1,
        warden: recording,
        noise_pct: 0.0,
        baseline: raw_get,
        ratio,
        target: Some("≥ 100× (under 1% of a raw GET)".into()),
        met: ratio.map(|x| x >= 100.0),
    });
}
