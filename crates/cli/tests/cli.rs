//! The `warden` binary end to end, as an operator runs it: against real
//! PostgreSQL + Redis and against the embedded default, asserting on output
//! and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use warden_approval::{ApprovalManager, ApprovalRequest, IssueOutcome};
use warden_testkit::{Backend, TestDatabase, TestRedis, free_port};

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/default.yaml");

/// The storage a CLI run talks to.
struct Env {
    db: TestDatabase,
    redis: Option<TestRedis>,
    dir: tempfile::TempDir,
    /// The checkpoint public key `warden audit keygen` printed.
    public_key: String,
}

impl Env {
    async fn new(backend: Backend) -> Self {
        let db = TestDatabase::new(backend).await;
        let redis = match backend {
            Backend::Postgres => Some(TestRedis::new().await),
            Backend::Sqlite => None,
        };
        let dir = tempfile::tempdir().unwrap();
        // The operator's first step: a checkpoint signing key (no database needed).
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args([
                "audit",
                "keygen",
                "--out",
                "audit.key",
                "--origin",
                "cli.test/audit",
            ])
            .current_dir(dir.path())
            .env_clear()
            .output()
            .unwrap();
        let public_key = ok(&out).trim().to_owned();
        assert!(public_key.starts_with("cli.test/audit+"), "{public_key}");
        Self {
            db,
            redis,
            dir,
            public_key,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.db.url)
            .env("BCRYPT_COST", "4")
            .env("POLICY_PATH", POLICY)
            .env("AUDIT_SPILL_PATH", self.dir.path().join("audit.spill"))
            .env("AUDIT_SIGNING_KEY_FILE", self.dir.path().join("audit.key"))
            .env("CACHE_MAC_KEY", "cli-test-cache-mac-key-0123456789abcdef")
            .env(
                "AUDIT_SPILL_MAC_KEY",
                "cli-test-spill-mac-key-0123456789abcdef",
            );
        if let Some(redis) = &self.redis {
            cmd.env("REDIS_URL", &redis.url)
                .env("CACHE_KEY_PREFIX", &redis.prefix);
        }
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn run_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // A command that refuses early closes its stdin: that is not a failure.
        if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        child.wait_with_output().unwrap()
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

fn failed(o: &Output, code: i32) -> String {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        stdout(o),
        stderr(o)
    );
    stderr(o)
}

/// Operator safety, item 1: `warden migrate` guards destructive commands and
/// records a confirmed one in the audit trail.
#[tokio::test]
async fn destructive_migrations_are_confirmed_and_recorded() {
    for backend in Backend::ALL {
        let env = Env::new(backend).await;
        let name = env
            .db
            .url
            .split('?')
            .next()
            .and_then(|u| u.rsplit('/').next())
            .unwrap()
            .to_owned();
        let refused = failed(&env.run(&["migrate", "down", "-n", "1"]), 1);
        assert!(
            refused.contains(&format!("--yes-i-am-sure={name}")),
            "{refused}"
        );
        let mut production = env.cmd(&[
            "migrate",
            "down",
            "-n",
            "1",
            &format!("--yes-i-am-sure={name}"),
        ]);
        production
            .env("ENVIRONMENT", "production")
            .env("BCRYPT_COST", "12")
            .env("CACHE_MAC_KEY", "cli-test-cache-mac-key-0123456789abcdef")
            .env(
                "AUDIT_SPILL_MAC_KEY",
                "cli-test-spill-mac-key-0123456789abcdef",
            );
        let out = production.output().unwrap();
        assert!(failed(&out, 1).contains("production"));
        let out = env.run(&[
            "migrate",
            "down",
            "-n",
            "1",
            &format!("--yes-i-am-sure={name}"),
        ]);
        assert!(ok(&out).contains("6 applied, 1 pending"));
        let note = stderr(&out);
        assert!(
            note.contains("recorded in the audit trail as admin-migrate-"),
            "{note}"
        );
        let request_id = note
            .split_whitespace()
            .find(|w| w.starts_with("admin-migrate-"))
            .unwrap()
            .to_owned();
        ok(&env.run(&["migrate", "up"]));
        let shown = ok(&env.run(&["audit", "show", &request_id]));
        assert!(
            shown.contains("confirmed with --yes-i-am-sure")
                && shown.contains("\"command\":\"down\""),
            "{shown}"
        );
        assert!(ok(&env.run(&["audit", "verify"])).contains("PASS"));
    }
}

#[tokio::test]
async fn keys_seed_and_revocation_end_to_end() {
    for backend in Backend::ALL {
        let env = Env::new(backend).await;
        assert!(ok(&env.run(&["migrate", "status"])).contains("7 applied, 0 pending"));

        let seeded = ok(&env.run(&["seed"]));
        let dev_key = seeded
            .lines()
            .find(|l| l.starts_with("wdn_"))
            .expect("plaintext printed once")
            .to_owned();
        let loaded = ok(&env.run(&["audit", "tail", "--action", "policy.load"]));
        assert!(
            loaded.contains("policy:") && loaded.lines().count() == 2,
            "one policy.load event: {loaded}"
        );
        let history = ok(&env.run(&["keys", "show", "dev-agent"]));
        assert!(history.contains("key.create"), "{history}");
        assert!(
            ok(&env.run(&["seed"])).contains("already exists"),
            "{backend:?}"
        );

        let verified = ok(&env.run_stdin(&["keys", "verify"], &format!("{dev_key}\n")));
        assert!(
            verified.contains("caller dev-agent role developer trust level 2"),
            "{verified}"
        );

        let created: serde_json::Value = serde_json::from_str(&ok(&env.run(&[
            "keys",
            "create",
            "--caller",
            "ci-bot",
            "--role",
            "service",
            "--trust-level",
            "3",
            "--json",
        ])))
        .unwrap();
        let ci_key = created["api_key"].as_str().unwrap().to_owned();
        let listed = ok(&env.run(&["keys", "list"]));
        assert!(listed.contains("ci-bot") && listed.contains("dev-agent"));
        assert!(
            !listed.contains(&ci_key) && !listed.contains("$2"),
            "list shows no secrets: {listed}"
        );

        // Policy violations and duplicates are clear errors.
        let err = failed(
            &env.run(&[
                "keys",
                "create",
                "--caller",
                "x",
                "--role",
                "viewer",
                "--trust-level",
                "3",
            ]),
            1,
        );
        assert!(err.contains("allows trust level 1 at most"), "{err}");
        let err = failed(
            &env.run(&[
                "keys",
                "create",
                "--caller",
                "ci-bot",
                "--role",
                "service",
                "--trust-level",
                "1",
            ]),
            1,
        );
        assert!(err.contains("already has an API key"), "{err}");

        // Revocation seen by the next process at once (the key was just verified, so cached).
        ok(&env.run_stdin(&["keys", "verify"], &ci_key));
        ok(&env.run(&["keys", "revoke", "ci-bot"]));
        let err = failed(&env.run_stdin(&["keys", "verify"], &ci_key), 1);
        assert!(err.contains("revoked"), "{err}");
        let err = failed(&env.run_stdin(&["keys", "verify"], "wdn_nope\n"), 1);
        assert!(err.contains("invalid API key"), "{err}");
        let err = failed(&env.run_stdin(&["keys", "verify"], ""), 1);
        assert!(err.contains("standard input"), "{err}");
        // Operator safety, item 9: a huge line is refused, not read whole.
        let huge = format!("{}\n", "A".repeat(1_000_000));
        let err = failed(&env.run_stdin(&["keys", "verify"], &huge), 1);
        assert!(err.contains("longer than 4096 bytes"), "{err}");
        // Operator safety, item 7: no panic, no key born expired.
        for days in ["0", "4294967295", "3651"] {
            failed(
                &env.run(&[
                    "keys",
                    "create",
                    "--caller",
                    "short-lived",
                    "--role",
                    "service",
                    "--trust-level",
                    "1",
                    "--expires-in-days",
                    days,
                ]),
                2,
            );
        }
    }
}

#[tokio::test]
async fn demo_audit_and_approvals_end_to_end() {
    for backend in Backend::ALL {
        let env = Env::new(backend).await;
        let demo = ok(&env.run(&["demo"]));
        assert!(
            demo.contains("log       verified, proof checked offline"),
            "{demo}"
        );
        assert!(
            demo.contains(&env.public_key),
            "the demo signs with the configured key: {demo}"
        );
        assert!(
            demo.contains("\"password\":\"[REDACTED]\""),
            "secrets shown redacted: {demo}"
        );
        assert!(
            !demo.contains("hunter2-prod") && !demo.contains("sk-live-4f9a"),
            "{demo}"
        );

        let tail = ok(&env.run(&["audit", "tail", "-n", "3"]));
        assert!(
            tail.contains("APPROVED") && tail.lines().count() == 4,
            "{tail}"
        );
        let events: serde_json::Value =
            serde_json::from_str(&ok(&env.run(&["audit", "tail", "--json"]))).unwrap();
        let request_id = events[0]["request_id"].as_str().unwrap().to_owned();
        assert!(ok(&env.run(&["audit", "show", &request_id])).contains("raw args sha256"));
        failed(&env.run(&["audit", "show", "no-such-request"]), 1);

        let verified = ok(&env.run(&["audit", "verify"]));
        // The 6 tool calls plus the admin actions (key creations, the
        // policy load, the approval's issue and decision), all leaves.
        assert!(
            verified.starts_with("PASS  ")
                && verified.contains("0 pruned")
                && verified.contains("signatures checked"),
            "{verified}"
        );
        let admin = ok(&env.run(&["audit", "tail", "--kind", "admin", "--json"]));
        let admin: serde_json::Value = serde_json::from_str(&admin).unwrap();
        let actions: Vec<&str> = admin
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["method"].as_str().unwrap())
            .collect();
        for action in ["key.create", "approval.issue", "approval.approve"] {
            assert!(actions.contains(&action), "{action} missing: {actions:?}");
        }
        // A checkpoint kept outside, a proof handed to an auditor.
        let old_note = ok(&env.run(&["audit", "checkpoint"]));
        assert!(
            old_note.starts_with("cli.test/audit\n16\n"),
            "6 calls + 4 admin events, then the gateway leg's 3 calls and 3 admin events: {old_note}"
        );
        let file = |name: &str| env.dir.path().join(name).display().to_string();
        std::fs::write(file("old.cp"), &old_note).unwrap();
        let verified = ok(&env.run(&["audit", "verify", "--checkpoint", &file("old.cp")]));
        assert!(verified.starts_with("PASS"), "{verified}");
        ok(&env.run(&["audit", "prove", &request_id, "--out", &file("proof.json")]));
        // The auditor has no database and no settings: only the bundle and the key.
        let auditor = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_warden"))
                .args(args)
                .env_clear()
                .output()
                .unwrap()
        };
        let pass = ok(&auditor(&[
            "audit",
            "verify-proof",
            &file("proof.json"),
            "--public-key",
            &env.public_key,
        ]));
        assert!(
            pass.starts_with(&format!("PASS  request {request_id} is leaf")),
            "{pass}"
        );
        let tampered = std::fs::read_to_string(file("proof.json"))
            .unwrap()
            .replacen("\"decision\": \"APPROVED\"", "\"decision\": \"DENY\"", 1);
        std::fs::write(file("tampered.json"), tampered).unwrap();
        let out = auditor(&[
            "audit",
            "verify-proof",
            &file("tampered.json"),
            "--public-key",
            &env.public_key,
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stdout(&out).contains("FAIL  leaf content"),
            "{}",
            stdout(&out)
        );
        let stranger = ok(&auditor(&["audit", "keygen", "--out", &file("other.key")]))
            .trim()
            .to_owned();
        let out = auditor(&[
            "audit",
            "verify-proof",
            &file("proof.json"),
            "--public-key",
            &stranger,
        ]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stdout(&out).contains("FAIL  signature"), "{}", stdout(&out));
        failed(
            &auditor(&[
                "audit",
                "verify-proof",
                &file("nope.json"),
                "--public-key",
                &env.public_key,
            ]),
            2,
        );

        // More events (a second demo run), a newer checkpoint that extends the old one.
        ok(&env.run(&["demo"]));
        std::fs::write(file("new.cp"), ok(&env.run(&["audit", "checkpoint"]))).unwrap();
        let pass = ok(&env.run(&[
            "audit",
            "consistency",
            "--old",
            &file("old.cp"),
            "--new",
            &file("new.cp"),
            "--public-key",
            &env.public_key,
        ]));
        assert!(
            pass.contains("PASS  the 32-leaf tree extends the 16-leaf tree"),
            "{pass}"
        );
        let rollback = env.run(&[
            "audit",
            "consistency",
            "--old",
            &file("new.cp"),
            "--new",
            &file("old.cp"),
            "--public-key",
            &env.public_key,
        ]);
        assert_eq!(rollback.status.code(), Some(1));
        assert!(
            stdout(&rollback).contains("FAIL  rollback"),
            "{}",
            stdout(&rollback)
        );
        let integrated = ok(&env.run(&["audit", "integrate"]));
        assert!(integrated.contains("tree size 32"), "{integrated}");
        // Published outside the database, the checkpoint becomes verify's reference.
        let mut demo = env.cmd(&["demo"]);
        demo.env("AUDIT_CHECKPOINT_PUBLISH", file("published.cp"));
        let one_more = ok(&demo.output().unwrap());
        assert!(
            one_more.contains("verified, proof checked offline"),
            "{one_more}"
        );
        let published = std::fs::read_to_string(file("published.cp")).unwrap();
        assert_eq!(
            published,
            ok(&env.run(&["audit", "checkpoint"])) + "",
            "the latest note is published"
        );
        let mut verify = env.cmd(&["audit", "verify"]);
        verify.env("AUDIT_CHECKPOINT_PUBLISH", file("published.cp"));
        let verified = ok(&verify.output().unwrap());
        assert!(
            verified.starts_with("against the published checkpoint")
                && verified.contains("PASS  48 leaves"),
            "{verified}"
        );
        let pruned = ok(&env.run(&["audit", "prune", "--before", "2000-01-01T00:00:00Z"]));
        assert!(pruned.contains("pruned 0 rows"), "{pruned}");
        let exported = ok(&env.run(&["audit", "export"]));
        assert_eq!(exported.lines().count(), 48, "{exported}");
        let admin = ok(&env.run(&["audit", "export", "--kind", "admin"]));
        let admin_lines: Vec<serde_json::Value> = admin
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Three demo runs: key.create, approval.issue, .approve, .consume each,
        // and their gateway legs approval.issue, .approve, .consume.
        assert_eq!(admin_lines.len(), 21, "{admin}");
        assert!(admin_lines.iter().all(|e| e["kind"] == "admin"), "{admin}");
        let revokes = ok(&env.run(&["audit", "export", "--action", "approval.approve"]));
        assert_eq!(revokes.lines().count(), 6, "{revokes}");
        failed(
            &env.run(&["audit", "verify", "--checkpoint", "nonsense"]),
            1,
        );

        // Approvals: issued by a gateway (the library), decided by an operator (the CLI).
        let cache = match &env.redis {
            Some(r) => warden_cache::Cache::redis(
                warden_cache::RedisPool::new(warden_cache::RedisPoolConfig::new(
                    r.url.clone(),
                    4,
                    Duration::from_secs(2),
                ))
                .unwrap(),
                warden_cache::KeyPrefix::new(&r.prefix).unwrap(),
            ),
            None => {
                warden_cache::Cache::in_process(warden_cache::KeyPrefix::new("t").unwrap(), 100)
            }
        };
        let manager = ApprovalManager::new(env.db.db.clone(), cache, Duration::from_secs(60));
        let IssueOutcome::Issued { id, token, .. } = manager
            .issue(&ApprovalRequest {
                request_id: "held-1".into(),
                caller_id: "agent".into(),
                tool_name: "db.drop_table".into(),
                sanitized_tool_call: serde_json::json!({"table": "orders"}),
                raw_args_hash: "cd".repeat(32),
                risk_labels: vec!["destructive".into()],
                policy_version: "default".into(),
                ttl: None,
            })
            .await
            .unwrap()
        else {
            panic!("not issued")
        };
        let pending = ok(&env.run(&["approvals", "list", "--status", "pending"]));
        assert!(
            pending.contains("held-1") && pending.contains("PENDING"),
            "{pending}"
        );
        assert!(ok(&env.run(&["approvals", "show", &id.to_string()])).contains("destructive"));
        let approved = ok(&env.run_stdin(
            &["approvals", "approve", "--approver", "ops", "--note", "ok"],
            token.expose(),
        ));
        assert!(approved.starts_with("APPROVED"), "{approved}");
        let err = failed(
            &env.run_stdin(&["approvals", "deny", "--approver", "ops"], token.expose()),
            1,
        );
        assert!(err.contains("already decided"), "{err}");
        let err = failed(
            &env.run_stdin(&["approvals", "approve", "--approver", "ops"], "garbage"),
            1,
        );
        assert!(err.contains("no approval"), "{err}");
        assert!(ok(&env.run(&["approvals", "expire"])).contains("0 approval(s) expired"));
        assert_eq!(
            manager.check(token.expose()).await.unwrap().status,
            warden_approval::ApprovalStatus::Approved
        );
        let listed: serde_json::Value =
            serde_json::from_str(&ok(&env.run(&["approvals", "list", "--json"]))).unwrap();
        assert!(
            !listed.to_string().contains(token.expose()),
            "no token in any output"
        );
    }
}

/// Hardening, item 2: an installed binary works from any directory: without
/// POLICY_PATH the policy built into it is in force, and health says so.
#[tokio::test]
async fn the_cli_works_outside_the_repository_with_the_built_in_policy() {
    let env = Env::new(Backend::Sqlite).await;
    let mut create = env.cmd(&[
        "keys",
        "create",
        "--caller",
        "anywhere",
        "--role",
        "service",
        "--trust-level",
        "1",
    ]);
    create.env_remove("POLICY_PATH");
    assert!(ok(&create.output().unwrap()).contains("API key (shown once"));
    let mut health = env.cmd(&["health", "--json"]);
    health.env_remove("POLICY_PATH");
    let report: serde_json::Value = serde_json::from_str(&ok(&health.output().unwrap())).unwrap();
    let posture = report["posture"]["detail"].as_str().unwrap();
    assert!(
        posture.contains("policy in force: built-in default"),
        "{posture}"
    );
}

#[tokio::test]
async fn health_and_exit_codes() {
    let env = Env::new(Backend::Postgres).await;
    // The tests' cheap bcrypt cost is outside the recommended band (a WARN).
    let mut strict = env.cmd(&["health", "--strict"]);
    strict.env("BCRYPT_COST", "12");
    let healthy = ok(&strict.output().unwrap());
    assert_eq!(
        healthy.lines().filter(|l| l.starts_with("PASS")).count(),
        6,
        "{healthy}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&env.run(&["health", "--json"]))).unwrap();
    assert_eq!(json["cache"]["status"], "PASS");

    let mut down = env.cmd(&["health", "--strict"]);
    down.env("BCRYPT_COST", "12")
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", free_port()))
        .env("HEALTH_TIMEOUT_MS", "1000");
    let out = down.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("FAIL  cache"), "{}", stdout(&out));

    let mut bad = env.cmd(&["health"]);
    bad.env("DATABASE_MAX_CONNECTIONS", "many")
        .env("REDIS_URL", "mysql://x");
    let err = failed(&bad.output().unwrap(), 2);
    assert!(
        err.contains("DATABASE_MAX_CONNECTIONS") && err.contains("REDIS_URL"),
        "{err}"
    );

    let mut bad_policy = env.cmd(&["seed"]);
    std::fs::write(env.dir.path().join("bad.yaml"), "roles: [").unwrap();
    bad_policy.env("POLICY_PATH", env.dir.path().join("bad.yaml"));
    let err = failed(&bad_policy.output().unwrap(), 1);
    assert!(err.contains("bad.yaml"), "{err}");

    let unmigrated = TestDatabase::empty(Backend::Sqlite).await;
    let mut cmd = env.cmd(&["keys", "list"]);
    cmd.env("DATABASE_URL", &unmigrated.url)
        .env_remove("REDIS_URL");
    let err = failed(&cmd.output().unwrap(), 1);
    assert!(err.contains("run `warden migrate up`"), "{err}");

    for args in [
        &["--help"][..],
        &["keys", "--help"],
        &["audit", "verify", "--help"],
        &["demo", "--help"],
    ] {
        assert!(!ok(&env.run(args)).is_empty());
    }
    assert_eq!(env.run(&["no-such-command"]).status.code(), Some(2));
}

#[test]
fn demo_runs_with_no_services_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("demo")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.contains("in-process (embedded default)"), "{text}");
    assert!(
        text.contains("log       verified, proof checked offline"),
        "{text}"
    );
    assert!(dir.path().join("warden-demo.db").exists());
    // A second run on the same file works too.
    let again = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("demo")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(ok(&again).contains("log       verified, proof checked offline"));
}

/// The demo never touches a spill file it did not create: a gateway's
/// unreplayed events at the configured AUDIT_SPILL_PATH stay where they are.
#[test]
fn demo_leaves_the_configured_spill_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("gateway.spill");
    let waiting = "{\"v\":1,\"request_id\":\"unreplayed-1\"}\n";
    std::fs::write(&spill, waiting).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("demo")
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AUDIT_SPILL_PATH", &spill)
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(std::fs::read_to_string(&spill).unwrap(), waiting);
}
