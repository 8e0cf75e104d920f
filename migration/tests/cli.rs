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

        let out = migration(Some(&t.url), &["down", "-n", "1"]);
        assert!(
            stdout(&out).contains("6 applied, 1 pending"),
            "{}",
            stdout(&out)
        );

        let out = migration(Some(&t.url), &["down"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout(&out).contains("0 applied, 7 pending"),
            "{}",
            stdout(&out)
        );

        let out = migration(Some(&t.url), &["fresh"]);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout(&out).contains("7 applied, 0 pending"),
            "{}",
            stdout(&out)
        );
    }
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
