//! The approver console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver), against `warden_console::serve` on PostgreSQL +
//! Redis. An approver signs in, watches a held call arrive live in the inbox,
//! opens it, approves it with a note; the gateway side's `wait_for_decision`
//! returns that approver and note, and the audit view shows the decision.
//!
//! Screenshots of the inbox and the decision page are saved under
//! `target/test-artifacts/console/` (or `$WARDEN_TEST_ARTIFACTS/console/`).
//! `scripts/services.sh` installs Chromium and chromedriver when missing;
//! `scripts/test.sh` sets `WARDEN_TEST_CHROMEDRIVER`. A missing driver fails
//! the test: it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use warden_approval::{ApprovalRequest, ApprovalStatus, IssueOutcome, WaitOutcome};
use warden_audit::{AuditEvent, Decision, RawArgs, ToolCall};
use warden_core::{Settings, Warden};
use warden_keys::NewKey;
use warden_testkit::{Backend, TestDatabase, TestRedis};

/// How long the browser may take for any one step.
const STEP: Duration = Duration::from_secs(30);

fn artifacts_dir() -> PathBuf {
    let base = std::env::var_os("WARDEN_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("test-artifacts"))
        })
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts")
        });
    let dir = base.join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let path =
            std::env::var("WARDEN_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = std::process::Command::new(&path)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "chromedriver ({path}) could not be started: {e}. \
                     Run scripts/services.sh (it installs chromium and chromium-driver)."
                )
            });
        let url = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not listen on {url}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self { child, url }
    }

    async fn browser(&self, profile: &std::path::Path) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1200,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        // Chromium's sandbox cannot start as root (CI containers).
        if running_as_root() {
            args.push("--no-sandbox".to_owned());
        }
        let mut options = serde_json::Map::new();
        options.insert("args".into(), json!(args));
        if let Ok(binary) = std::env::var("WARDEN_TEST_CHROMIUM") {
            options.insert("binary".into(), json!(binary));
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), json!(options));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let mut last = None;
        for _ in 0..5 {
            match ClientBuilder::new(connector.clone())
                .capabilities(capabilities.clone())
                .connect(&self.url)
                .await
            {
                Ok(client) => return client,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("no browser session: {last:?}");
    }
}

fn running_as_root() -> bool {
    // The effective uid, from /proc (no libc dependency for one number).
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

async fn text_of(client: &Client, css: &str) -> String {
    match client
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element.text().await.unwrap(),
        Err(e) => {
            let url = client.current_url().await.map(|u| u.to_string());
            let source = client.source().await.unwrap_or_default();
            panic!("{css} never appeared ({e}); at {url:?}:\n{source}")
        }
    }
}

#[tokio::test]
async fn an_approver_decides_a_held_call_in_a_real_browser() {
    // Warden, as `warden serve` builds it.
    let db = TestDatabase::new(Backend::Postgres).await;
    let redis = TestRedis::new().await;
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "BCRYPT_COST" => Some("4".into()),
        "AUDIT_SPILL_PATH" => Some(spill.display().to_string()),
        "REDIS_URL" => Some(redis.url.clone()),
        "CACHE_KEY_PREFIX" => Some(redis.prefix.clone()),
        _ => None,
    })
    .unwrap();
    let storage = Warden::connect(&settings).await.unwrap();
    migration::run(storage.database(), migration::Command::Up(None))
        .await
        .unwrap();
    let approver_key = storage
        .keys()
        .unwrap()
        .create(&NewKey {
            actor: "test",
            caller_id: "alice",
            role: "approver",
            trust_level: 0,
            environment: "development",
            expires_at: None,
        })
        .await
        .unwrap()
        .plaintext
        .expose()
        .to_owned();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let console =
        warden_console::Console::new(storage.clone(), warden_console::ConsoleOptions::default())
            .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warden_console::serve(
        listener,
        console.router(),
        warden_console::ServeLimits::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;
    let artifacts = artifacts_dir();

    // Unauthenticated: the inbox sends the browser to sign in.
    browser.goto(&format!("{base}/inbox")).await.unwrap();
    let key_field = browser
        .wait()
        .at_most(STEP)
        .for_element(Locator::Css("#key"))
        .await
        .unwrap();
    assert!(
        browser
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/sign-in")
    );
    key_field.send_keys(&approver_key).await.unwrap();
    browser
        .find(Locator::Css("#sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let empty = text_of(&browser, "#live-inbox #empty").await;
    assert!(empty.contains("Nothing is waiting"), "{empty}");
    // Let the page's event stream subscribe before the call arrives.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The gateway side: a risky call, audited (its password redacted) and held.
    let raw = r#"{"table":"<script>alert('x')</script>","where":"\"><img src=x onerror=alert(1)>","password":"hunter2-do-not-show"}"#;
    let call = ToolCall {
        request_id: "req-browser-1",
        caller_id: "agent-7",
        api_key_id: None,
        method: "tools/call",
        tool_name: Some("db.drop_table"),
        raw_args: RawArgs::Text(raw),
        decision: Decision::RequireApproval,
        reason: Some("destructive tool"),
        risk_labels: &["destructive", "production"],
        status_code: None,
        latency_ms: None,
        timestamp: None,
    };
    let event = AuditEvent::record(&call, storage.redactor()).unwrap();
    let sanitized = event.sanitized_args().clone();
    let args_hash = event.raw_args_hash().to_owned();
    let logger = storage.audit().logger();
    logger.log(event);
    logger.flush().await.unwrap();
    let approvals = storage.approvals();
    let IssueOutcome::Issued { id, token, .. } = approvals
        .issue(&ApprovalRequest {
            request_id: "req-browser-1".into(),
            caller_id: "agent-7".into(),
            tool_name: "db.drop_table".into(),
            sanitized_tool_call: sanitized,
            raw_args_hash: args_hash,
            risk_labels: vec!["destructive".into(), "production".into()],
            policy_version: "policy-v1".into(),
            ttl: Some(Duration::from_secs(600)),
        })
        .await
        .unwrap()
    else {
        panic!("a new approval");
    };
    let token = token.expose().to_owned();
    let gateway = {
        let approvals = approvals.clone();
        tokio::spawn(async move {
            approvals
                .wait_for_decision(&token, Duration::from_secs(120))
                .await
        })
    };

    // It appears in the open inbox without anyone reloading it.
    let row = format!("tr[data-approval=\"{id}\"]");
    let row_text = text_of(&browser, &row).await;
    assert!(row_text.contains("db.drop_table"), "{row_text}");
    assert!(row_text.contains("agent-7"), "{row_text}");
    assert!(row_text.contains("destructive"), "{row_text}");
    std::fs::write(
        artifacts.join("inbox.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // Open it: the call as the approver must judge it, inert.
    browser
        .find(Locator::Css(&format!("{row} a")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let args = text_of(&browser, "#args").await;
    assert!(args.contains("<script>alert('x')</script>"), "{args}");
    assert!(
        !args.contains("hunter2"),
        "the redacted password is shown: {args}"
    );
    let redactions = text_of(&browser, "#redactions").await;
    assert!(redactions.contains("password"), "{redactions}");
    let injected = browser
        .execute(
            "return document.querySelectorAll('main script, main img').length",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(injected, json!(0), "markup from the arguments was rendered");
    // The countdown runs in the page (the script is allowed by the CSP).
    let first = text_of(&browser, "#time-left").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = text_of(&browser, "#time-left").await;
    assert_ne!(first, later, "the countdown does not tick");
    assert!(later.contains('m'), "{later}");

    browser
        .find(Locator::Css("#note"))
        .await
        .unwrap()
        .send_keys("Checked with the owner: the table is a scratch copy.")
        .await
        .unwrap();
    std::fs::write(
        artifacts.join("decision.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();
    browser
        .find(Locator::Css("#approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let decided = text_of(&browser, "#decided").await;
    assert!(decided.contains("APPROVED by alice"), "{decided}");
    assert!(decided.contains("scratch copy"), "{decided}");
    std::fs::write(
        artifacts.join("decided.png"),
        browser.screenshot().await.unwrap(),
    )
    .unwrap();

    // The gateway's wait returns the decision, with who and why.
    let outcome = tokio::time::timeout(STEP, gateway)
        .await
        .expect("the gateway heard of the decision")
        .unwrap()
        .unwrap();
    let WaitOutcome::Decided(approval) = outcome else {
        panic!("decided, not timed out: {outcome:?}");
    };
    assert_eq!(approval.status, ApprovalStatus::Approved);
    let result = approval.result.unwrap();
    assert_eq!(result.approver_id.as_deref(), Some("alice"));
    assert_eq!(
        result.note.as_deref(),
        Some("Checked with the owner: the table is a scratch copy.")
    );

    // The audit view shows the decision, by the approver.
    browser
        .goto(&format!("{base}/audit?kind=admin&caller=alice"))
        .await
        .unwrap();
    let trail = text_of(&browser, "#audit").await;
    assert!(trail.contains("approval.approve"), "{trail}");
    assert!(trail.contains("alice"), "{trail}");
    assert!(!trail.contains("hunter2"), "{trail}");

    // Back in the inbox, nothing is waiting any more.
    browser.goto(&format!("{base}/inbox")).await.unwrap();
    text_of(&browser, "#live-inbox #empty").await;

    browser.close().await.unwrap();
    logger.shutdown().await.unwrap();
    let _ = stop.send(());
    tokio::time::timeout(STEP, server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}
