//! Notifiers from settings: `APPROVAL_WEBHOOK_URL`/`_SECRET`,
//! `APPROVAL_SLACK_WEBHOOK_URL` and `CONSOLE_URL` give the facade's approval
//! manager a signed webhook and a Slack notifier, each linking to the
//! console, never carrying the token in a link; bad combinations are refused
//! by name, and no secret is printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde_json::json;
use warden_approval::{ApprovalRequest, IssueOutcome};
use warden_core::{Settings, Warden};
use warden_testkit::{Backend, HttpSink, TestDatabase};

#[tokio::test]
async fn held_calls_reach_the_webhook_and_slack_named_in_settings() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let mut webhook = HttpSink::start(0).await;
    let mut slack = HttpSink::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let spill = dir.path().join("spill");
    let (webhook_url, slack_url) = (
        format!("{}/hooks/w3bh00k-path", webhook.url()),
        format!("{}/services/T0/B0/s3cr3t-path", slack.url()),
    );
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "AUDIT_SPILL_PATH" => Some(spill.display().to_string()),
        "CONSOLE_URL" => Some("https://approvals.example/".into()),
        "APPROVAL_WEBHOOK_URL" => Some(webhook_url.clone()),
        "APPROVAL_WEBHOOK_SECRET" => Some("0123456789abcdef0123".into()),
        "APPROVAL_SLACK_WEBHOOK_URL" => Some(slack_url.clone()),
        _ => None,
    })
    .unwrap();
    let printed = format!("{settings:?}");
    assert!(!printed.contains("s3cr3t-path"), "{printed}");
    assert!(!printed.contains("w3bh00k-path"), "{printed}");
    assert!(!printed.contains("0123456789abcdef0123"), "{printed}");
    let warden = Warden::connect(&settings).await.unwrap();
    warden
        .migrations()
        .run(migration::Command::Up(None))
        .await
        .unwrap();
    let IssueOutcome::Issued { id, token, .. } = warden
        .approvals()
        .issue(&ApprovalRequest {
            request_id: "r-notify".into(),
            caller_id: "agent-1".into(),
            tool_name: "db.drop_table".into(),
            sanitized_tool_call: json!({"table": "users"}),
            raw_args_hash: "ab".repeat(32),
            risk_labels: vec!["destructive".into()],
            policy_version: "v1".into(),
            ttl: None,
        })
        .await
        .unwrap()
    else {
        panic!("issued");
    };
    let link = format!("https://approvals.example/approvals/{id}");

    let signed = webhook
        .next(Duration::from_secs(10))
        .await
        .expect("the webhook");
    let header = |name: &str| {
        signed
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let timestamp: i64 = header("x-warden-timestamp").parse().unwrap();
    assert_eq!(
        header("x-warden-signature"),
        warden_approval::webhook_signature(b"0123456789abcdef0123", timestamp, &signed.body)
            .unwrap()
    );
    let body = String::from_utf8_lossy(&signed.body);
    assert!(body.contains(&link), "{body}");

    let posted = slack.next(Duration::from_secs(10)).await.expect("Slack");
    assert!(
        posted.path.ends_with("/services/T0/B0/s3cr3t-path"),
        "{}",
        posted.path
    );
    let message = String::from_utf8_lossy(&posted.body);
    assert!(message.contains(&link), "{message}");
    assert!(!message.contains(token.expose()), "never the token");
}

#[test]
fn notifier_settings_are_refused_by_name() {
    let refused = |pairs: &[(&str, &str)]| -> String {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let error = Settings::from_lookup(|name| {
            if name == "DATABASE_URL" {
                return Some("sqlite::memory:".into());
            }
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .expect_err("refused");
        error.to_string()
    };
    let e = refused(&[("APPROVAL_WEBHOOK_URL", "https://hooks.example/x")]);
    assert!(e.contains("APPROVAL_WEBHOOK_SECRET"), "{e}");
    let e = refused(&[
        ("APPROVAL_WEBHOOK_URL", "https://hooks.example/x"),
        ("APPROVAL_WEBHOOK_SECRET", "short"),
    ]);
    assert!(
        e.contains("APPROVAL_WEBHOOK_SECRET") && !e.contains("short\""),
        "{e}"
    );
    let e = refused(&[("APPROVAL_WEBHOOK_SECRET", "0123456789abcdef0123")]);
    assert!(e.contains("APPROVAL_WEBHOOK_URL"), "{e}");
    let e = refused(&[(
        "APPROVAL_SLACK_WEBHOOK_URL",
        "https://hooks.slack.com/services/T/B/tok3n",
    )]);
    assert!(e.contains("CONSOLE_URL") && !e.contains("tok3n"), "{e}");
    let e = refused(&[(
        "APPROVAL_SLACK_WEBHOOK_URL",
        "hooks.slack.com/services/T/B/tok3n",
    )]);
    assert!(
        e.contains("APPROVAL_SLACK_WEBHOOK_URL") && !e.contains("tok3n"),
        "{e}"
    );
    // Plain http only to this machine: the body carries tokens.
    let e = refused(&[
        ("APPROVAL_WEBHOOK_URL", "http://hooks.example/t0ken-path"),
        ("APPROVAL_WEBHOOK_SECRET", "0123456789abcdef0123"),
    ]);
    assert!(
        e.contains("APPROVAL_WEBHOOK_URL") && !e.contains("t0ken-path"),
        "{e}"
    );
}
