//! The `migration` binary as an operator runs it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

use warden_testkit::{Backend, TestDatabase};

fn migration(database_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_migration"));
    cmd.args(args).env_remove("DATABASE_URL");
    // Run where no .env can leak in.
    cmd.current_dir(std::env::temp_dir());
    if let Some(url) = database_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("running the migration binary")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn up_status_down_fresh_on_both_backends() {
    for backend in Backend::ALL {
        let t = TestDatabase::empty(backend).await;

        let out = migration(Some(&t.url), &["status"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout(&out).contains("0 applied, 7 pending"),
            "{}",
            stdout(&out)
        );

        for _ in 0..2 {
            let out = migration(Some(&t.url), &["up"]);
            assert!(out.status.success(), "{out:?}");
            assert!(
                stdout(&out).contains("7 applied, 0 pending"),
                "{}",
                stdout(&out)
            );
        }

        let sure = format!("--yes-i-am-sure={}", database_name(&t));
        let out = migration(Some(&t.url), &["down", "-n", "1", &sure]);
        assert!(
            stdout(&out).contains("6 applied, 1 pending"),
            "{}",
            stdout(&out)
        );

        let out = migration(Some(&t.url), &["down", "--all", &sure]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout(&out).contains("0 applied, 7 pending"),
            "{}",
            stdout(&out)
        );

        let out = migration(Some(&t.url), &["fresh", &sure]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout(&out).contains("7 applied, 0 pending"),
            "{}",
            stdout(&out)
        );
    }
}

/// The name `--yes-i-am-sure` must repeat: the PostgreSQL database, or the
/// SQLite file's name.
fn database_name(t: &TestDatabase) -> String {
    let url = t.url.split('?').next().unwrap_or_default();
    url.rsplit('/').next().unwrap_or_default().to_owned()
}

async fn count(t: &TestDatabase, table: &str) -> i64 {
    t.strings(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
        .await
        .join("")
        .parse()
        .unwrap()
}

/// Operator safety, item 1: destructive commands never run silently.
#[tokio::test]
async fn destructive_commands_need_the_database_name_and_never_run_in_production() {
    for backend in Backend::ALL {
        let t = TestDatabase::empty(backend).await;
        assert!(migration(Some(&t.url), &["up"]).status.success());
        t.execute(
            "INSERT INTO api_keys (id, caller_id, key_prefix, key_hash, role, trust_level, environment) \
             VALUES ('0191f6c2-0000-7000-8000-000000000001', 'c', 'p', 'h', 'r', 1, 'test')",
        )
        .await;
        // Another application's table in the same schema.
        t.execute("CREATE TABLE other_app_orders (id INTEGER PRIMARY KEY)")
            .await;
        t.execute("INSERT INTO other_app_orders (id) VALUES (1)")
            .await;

        // `down` alone is a usage error, not "roll back everything".
        let out = migration(Some(&t.url), &["down"]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        for args in [
            vec!["down", "-n", "1"],
            vec!["down", "--all"],
            vec!["fresh"],
            vec!["refresh"],
            vec!["fresh", "--yes-i-am-sure=some_other_db"],
        ] {
            let out = migration(Some(&t.url), &args);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("api_keys") && stderr.contains("1 rows"),
                "shows what it would drop: {stderr}"
            );
            assert!(stderr.contains("--yes-i-am-sure="), "{stderr}");
        }
        let sure = format!("--yes-i-am-sure={}", database_name(&t));
        for (args, environment) in [
            (vec!["fresh", sure.as_str()], "production"),
            (vec!["refresh", sure.as_str()], "PROD"),
            (vec!["down", "--all", sure.as_str()], "production"),
            (vec!["down", "-n", "1", sure.as_str()], "live"),
        ] {
            let mut production = Command::new(env!("CARGO_BIN_EXE_migration"));
            production
                .args(&args)
                .env("DATABASE_URL", &t.url)
                .env("ENVIRONMENT", environment)
                .current_dir(std::env::temp_dir());
            let out = production.output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{args:?} {environment}: {out:?}"
            );
            assert!(String::from_utf8_lossy(&out.stderr).contains("production"));
        }
        assert_eq!(
            count(&t, "api_keys").await,
            1,
            "{backend:?}: nothing was dropped"
        );

        // Another application's view on a Warden table: `fresh` fails whole
        // rather than cascading into it (PostgreSQL enforces dependencies).
        if backend == Backend::Postgres {
            t.execute("CREATE VIEW other_app_callers AS SELECT caller_id FROM api_keys")
                .await;
            let out = migration(Some(&t.url), &["fresh", &sure]);
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            assert_eq!(count(&t, "api_keys").await, 1, "all or nothing");
            assert_eq!(count(&t, "other_app_callers").await, 1);
            t.execute("DROP VIEW other_app_callers").await;
        }

        // Confirmed: `fresh` empties Warden's tables and leaves the rest alone.
        let out = migration(Some(&t.url), &["fresh", &sure]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(count(&t, "api_keys").await, 0);
        assert_eq!(count(&t, "other_app_orders").await, 1, "{backend:?}");

        // A database holding production keys is production, whatever the
        // local ENVIRONMENT says.
        t.execute(
            "INSERT INTO api_keys (id, caller_id, key_prefix, key_hash, role, trust_level, environment) \
             VALUES ('0191f6c2-0000-7000-8000-000000000002', 'p', 'pp', 'h', 'r', 1, 'production')",
        )
        .await;
        let out = migration(Some(&t.url), &["fresh", &sure]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert_eq!(count(&t, "api_keys").await, 1);
    }
}
/// `n` `migration up` processes on `url`, started together; their outputs.
fn migrate_up_at_once(url: &str, n: usize) -> Vec<std::process::Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_migration"))
                .arg("up")
                .env("DATABASE_URL", url)
                .env_remove("ENVIRONMENT")
                .current_dir(std::env::temp_dir())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .map(|child| child.wait_with_output().unwrap())
        .collect()
}

/// Operator safety, item 2: replicas that all migrate at start serialize.
#[tokio::test]
async fn concurrent_migrators_wait_for_each_other() {
    for backend in Backend::ALL {
        let t = TestDatabase::empty(backend).await;
        for out in migrate_up_at_once(&t.url, 4) {
            assert!(out.status.success(), "{backend:?}: {out:?}");
            assert!(stdout(&out).contains("7 applied, 0 pending"));
        }
    }
}

/// Scale-out: through PgBouncer in transaction pooling mode (3 server
/// connections for 4 migrators), concurrent migrators still wait for each
/// other: the lock is a transaction-scoped advisory lock in a transaction
/// held open, which keeps its server connection (a session lock would not).
#[tokio::test]
async fn concurrent_migrators_through_pgbouncer_wait_for_each_other() {
    let t = TestDatabase::empty(Backend::Postgres).await;
    let bouncer = warden_testkit::PgBouncer::start(&t.url, 3);
    let url = bouncer.url_for(&t.url);
    for out in migrate_up_at_once(&url, 4) {
        assert!(out.status.success(), "{out:?}");
        assert!(stdout(&out).contains("7 applied, 0 pending"));
    }
    // Nothing left holding the lock: a fifth migrator gets it at once.
    let again = migrate_up_at_once(&url, 1).remove(0);
    assert!(again.status.success(), "{again:?}");
}

#[test]
fn missing_database_url_is_a_clear_error_not_a_panic() {
    let out = migration(None, &["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DATABASE_URL is not set"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unreachable_database_is_a_clear_error_without_the_password() {
    let port = warden_testkit::free_port();
    let url = format!("postgres://warden:pa55-w0rd@127.0.0.1:{port}/warden");
    let out = migration(Some(&url), &["up"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect"), "{stderr}");
    assert!(
        !stderr.contains("pa55-w0rd") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn unknown_command_is_a_usage_error() {
    let out = migration(Some("sqlite::memory:"), &["sideways"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
