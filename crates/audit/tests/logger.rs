//! The batched logger: everything logged is stored exactly once — through
//! buffer overflow, a database killed and restarted mid-load, a shutdown during
//! an outage, and two processes writing the same log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::event;
use sea_orm::{ConnectOptions, Database, DatabaseConnection, EntityTrait, QueryOrder};
use warden_audit::{
    AuditLogger, AuditLoggerConfig, Integrator, IntegratorConfig, Verification, VerifyOptions,
    verify,
};
use warden_entity::audit_events;
use warden_testkit::{Backend, PrivatePostgres, TestDatabase};

async fn stored_request_ids(db: &DatabaseConnection) -> Vec<String> {
    audit_events::Entity::find()
        .order_by_asc(audit_events::Column::Id)
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.request_id)
        .collect()
}

async fn assert_exactly_once(db: &DatabaseConnection, expected: usize) {
    let ids = stored_request_ids(db).await;
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(ids.len(), expected, "stored rows");
    assert_eq!(distinct.len(), expected, "duplicates stored");
    // Whatever is still queued is integrated; then every row is one leaf.
    // The logger's own integrator may hold the integration lock at this
    // moment (integrate_all then returns without integrating): wait until
    // the queue is empty, whoever empties it.
    let integrator = Integrator::new(db.clone(), IntegratorConfig::default());
    for _ in 0..200 {
        integrator.integrate_all().await.unwrap();
        if warden_audit::backlog(db).await.unwrap() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        warden_audit::backlog(db).await.unwrap(),
        0,
        "never integrated"
    );
    match verify(db, &VerifyOptions::default()).await.unwrap() {
        Verification::Valid {
            tree_size,
            rows_checked,
            ..
        } => {
            assert_eq!(rows_checked as usize, expected);
            assert_eq!(tree_size as usize, expected, "leaves missing or extra");
        }
        broken => panic!("{broken:?}"),
    }
}

/// A `warden-audit-load` process logging as `name` into `t`, with its own
/// spill file in `dir`, plus `args`.
fn load_process(
    t: &TestDatabase,
    dir: &tempfile::TempDir,
    name: &str,
    args: &[&str],
) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_warden-audit-load"))
        .args(["--prefix", name])
        .args(args)
        .arg("--database-url")
        .arg(&t.url)
        .arg("--spill")
        .arg(dir.path().join(format!("{name}.spill")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn config(dir: &tempfile::TempDir) -> AuditLoggerConfig {
    let mut c = AuditLoggerConfig::new(dir.path().join("audit.spill"));
    c.max_retries = 1;
    c.retry_backoff = Duration::from_millis(20);
    c.max_backoff = Duration::from_millis(200);
    c.write_timeout = Duration::from_secs(2);
    c
}

#[tokio::test]
async fn logged_events_are_stored_in_batches_on_both_backends() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let logger = AuditLogger::start(t.db.clone(), config(&dir));
        for i in 0..1_000 {
            logger.log(event(i));
        }
        let report = logger.flush().await.unwrap();
        assert_eq!(report.spilled_pending, 0);
        assert_exactly_once(&t.db, 1_000).await;
        for i in 1_000..1_100 {
            logger.log(event(i));
        }
        logger.shutdown().await.unwrap();
        assert_exactly_once(&t.db, 1_100).await;
        let stats = logger.stats();
        assert_eq!(
            (stats.logged, stats.stored, stats.lost),
            (1_100, 1_100, 0),
            "{backend:?}"
        );
    }
}

#[tokio::test]
async fn a_full_buffer_spills_to_disk_and_nothing_is_lost() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&dir);
        c.buffer_capacity = 4;
        c.batch_size = 2;
        let logger = AuditLogger::start(t.db.clone(), c);
        for i in 0..400 {
            logger.log(event(i));
        }
        let report = logger.flush().await.unwrap();
        assert_eq!(report.spilled_pending, 0);
        let stats = logger.stats();
        assert!(
            stats.spilled > 0,
            "{backend:?}: the tiny buffer never overflowed: {stats:?}"
        );
        assert_eq!(stats.lost, 0);
        logger.shutdown().await.unwrap();
        assert_exactly_once(&t.db, 400).await;
        // The spill file contains no raw secret by construction: events are redacted before logging.
        assert!(
            !dir.path().join("audit.spill").exists()
                || std::fs::read(dir.path().join("audit.spill"))
                    .unwrap()
                    .is_empty()
        );
    }
}

async fn private_db(server: &PrivatePostgres) -> DatabaseConnection {
    let mut options = ConnectOptions::new(server.url());
    options
        .max_connections(4)
        .min_connections(0)
        .connect_timeout(Duration::from_secs(1))
        .acquire_timeout(Duration::from_secs(1))
        .sqlx_logging(false);
    let db = Database::connect(options).await.unwrap();
    migration::run(&db, migration::Command::Up(None))
        .await
        .unwrap();
    db
}

async fn flush_until_drained(logger: &AuditLogger) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let report = logger.flush().await.unwrap();
        if report.spilled_pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "spill never drained: {report:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_database_killed_mid_load_loses_nothing() {
    let mut server = PrivatePostgres::start().await;
    let db = private_db(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let logger = AuditLogger::start(db.clone(), config(&dir));

    let mut logged = 0;
    for _ in 0..600 {
        logger.log(event(logged));
        logged += 1;
        if logged % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    server.kill(); // crash: no clean shutdown, in-flight batches fail
    let outage_started = Instant::now();
    while outage_started.elapsed() < Duration::from_secs(2) {
        for _ in 0..50 {
            logger.log(event(logged));
            logged += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during = logger.flush().await.unwrap();
    assert!(
        during.spilled_pending > 0,
        "events logged during the outage must be on disk"
    );
    // Issue 20, item 2: a recovery probe during the outage asks the database
    // first and never takes up (renames, reads) the spill file.
    assert!(
        !dir.path().join("audit.spill.replaying").exists(),
        "a probe started a replay while the database was down"
    );

    server.resume_after_stop().await;
    for _ in 0..400 {
        logger.log(event(logged));
        logged += 1;
    }
    flush_until_drained(&logger).await;
    logger.shutdown().await.unwrap();

    let stats = logger.stats();
    assert_eq!(stats.lost, 0, "{stats:?}");
    assert!(stats.replayed > 0, "{stats:?}");
    let fresh = private_db(&server).await;
    assert_exactly_once(&fresh, logged).await;
}

#[tokio::test]
async fn shutdown_during_an_outage_spills_and_the_next_start_replays() {
    let mut server = PrivatePostgres::start().await;
    let db = private_db(&server).await;
    let dir = tempfile::tempdir().unwrap();

    let logger = AuditLogger::start(db.clone(), config(&dir));
    for i in 0..50 {
        logger.log(event(i));
    }
    logger.flush().await.unwrap();
    server.kill();
    for i in 50..150 {
        logger.log(event(i));
    }
    let report = logger.shutdown().await.unwrap();
    assert_eq!(report.spilled_pending, 100);
    assert_eq!(logger.stats().lost, 0);

    server.resume_after_stop().await;
    let db = private_db(&server).await;
    let next = AuditLogger::start(db.clone(), config(&dir));
    flush_until_drained(&next).await;
    next.shutdown().await.unwrap();
    assert_exactly_once(&db, 150).await;
}

#[tokio::test]
async fn two_processes_logging_at_once_leave_one_gap_free_log() {
    for backend in Backend::ALL {
        let t = TestDatabase::new(backend).await;
        let dir = tempfile::tempdir().unwrap();
        let spawn =
            |name: &str| load_process(&t, &dir, name, &["--count", "1500", "--batch-size", "32"]);
        let a = spawn("proc-a");
        let b = spawn("proc-b");
        for child in [a, b] {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{backend:?}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_exactly_once(&t.db, 3_000).await;
        // Both processes' events are in the one log.
        let ids = stored_request_ids(&t.db).await;
        for prefix in ["proc-a-", "proc-b-"] {
            assert_eq!(
                ids.iter().filter(|id| id.starts_with(prefix)).count(),
                1_500,
                "{backend:?}"
            );
        }
    }
}

/// Several processes log at once, each running an integrator; one is killed
/// with SIGKILL mid-run (writing, and quite possibly integrating). Another
/// takes over: every stored event is integrated exactly once, the leaves are
/// gap-free, and proofs check against the final signed checkpoint.
#[tokio::test]
async fn an_integrator_killed_mid_run_loses_duplicates_or_reorders_nothing() {
    let t = TestDatabase::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("audit.key");
    let (secret, signer) = warden_audit::CheckpointSigner::generate("kill.test/audit").unwrap();
    std::fs::write(&key_path, secret).unwrap();
    let key = key_path.display().to_string();
    let spawn = |name: &str| {
        load_process(
            &t,
            &dir,
            name,
            &[
                "--count",
                "4000",
                "--batch-size",
                "16",
                "--checkpoint-interval-ms",
                "5",
                "--pause-ms",
                "2",
                "--pause-every",
                "20",
                "--signing-key-file",
                &key,
            ],
        )
    };
    let mut victim = spawn("victim");
    let survivors = [spawn("proc-a"), spawn("proc-b")];
    // Let all three write and integrate for a while, then kill one outright.
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let leaves = t.strings("SELECT count(*)::text FROM audit_leaves").await;
        if leaves[0].parse::<u64>().unwrap() > 500 || started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    victim.kill().unwrap();
    let _ = victim.wait();
    for child in survivors {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The survivors integrated everything they could see at shutdown; one
    // more round picks up anything the victim committed last.
    let integrator = Integrator::new(
        t.db.clone(),
        IntegratorConfig {
            signer: Some(signer.clone()),
            ..IntegratorConfig::default()
        },
    );
    integrator.integrate_all().await.unwrap();
    let rows = t.strings("SELECT count(*)::text FROM audit_events").await;
    let leaves = t
        .strings(
            "SELECT count(*)::text || ' ' || coalesce(max(leaf_index), -1)::text FROM audit_leaves",
        )
        .await;
    let rows: u64 = rows[0].parse().unwrap();
    assert!(rows >= 8_000, "both survivors stored everything: {rows}");
    assert_eq!(
        leaves[0],
        format!("{rows} {}", rows - 1),
        "one gap-free leaf per row"
    );
    assert_eq!(
        t.strings("SELECT count(*)::text FROM audit_pending").await,
        ["0"]
    );
    let v = verify(
        &t.db,
        &VerifyOptions {
            verifier: Some(signer.verifier().unwrap()),
            ..VerifyOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(
        matches!(v, Verification::Valid { tree_size, .. } if tree_size == rows),
        "{v:?}"
    );
    let verifier = signer.verifier().unwrap();
    for id in ["proc-a-0", "proc-b-3999", "victim-0"] {
        let bundle = warden_audit::prove_inclusion(&t.db, id).await.unwrap();
        bundle.verify(&verifier).unwrap();
        assert_eq!(bundle.tree_size, rows);
    }
}
