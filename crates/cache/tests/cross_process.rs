//! Rate-limit exactness across processes: several OS processes, each with its
//! own pool, hammer one subject; exactly `limit` requests are allowed in all.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use warden_testkit::TestRedis;

#[tokio::test]
async fn processes_sharing_a_limit_allow_exactly_the_limit() {
    let redis = TestRedis::new().await;
    let children: Vec<_> = (0..3)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_warden-rate-limit-probe"))
                .args([
                    "--redis-url",
                    &redis.url,
                    "--prefix",
                    &redis.prefix,
                    "--subject",
                    "agent-42",
                ])
                .args([
                    "--limit",
                    "250",
                    "--period-secs",
                    "3600",
                    "--attempts",
                    "400",
                    "--concurrency",
                    "8",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // All three run at once; then each is waited for.
    let mut allowed = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["degraded"], 0);
        allowed += report["allowed"].as_u64().unwrap();
    }
    assert_eq!(
        allowed, 250,
        "1200 attempts from 3 processes against a limit of 250"
    );
}
