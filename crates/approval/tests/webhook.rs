//! The webhook notifier delivers a verifiable signature, retries server
//! errors, and never fails a decision when the endpoint is down.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{issued, request};
use warden_approval::{ApprovalStatus, Notifier, WebhookNotifier, webhook_signature};
use warden_testkit::{HttpSink, ReceivedRequest, free_port};

const SECRET: &[u8] = b"webhook-secret-for-tests-0123456789";

fn verify_signature(req: &ReceivedRequest) {
    let timestamp: i64 = req.header("x-warden-timestamp").unwrap().parse().unwrap();
    let expected = webhook_signature(SECRET, timestamp, &req.body).unwrap();
    assert_eq!(req.header("x-warden-signature"), Some(expected.as_str()));
    let wrong = webhook_signature(b"some-other-secret-0123456789", timestamp, &req.body).unwrap();
    assert_ne!(req.header("x-warden-signature"), Some(wrong.as_str()));
    assert!((chrono::Utc::now().timestamp() - timestamp).abs() < 60);
}

#[tokio::test]
async fn webhook_delivers_signed_notifications_and_retries_server_errors() {
    let mut sink = HttpSink::start(1).await;
    let notifier = WebhookNotifier::new(&sink.url(), SECRET, Duration::from_secs(2), 3)
        .unwrap()
        .with_console_url("https://approvals.example/")
        .unwrap();
    let f = common::sqlite_in_process().await;
    let manager = f.manager.clone().with_notifier(Arc::new(notifier));

    let token = issued(manager.issue(&request("r-hook")).await.unwrap());
    let first = sink
        .next(Duration::from_secs(10))
        .await
        .expect("first attempt");
    let retried = sink
        .next(Duration::from_secs(10))
        .await
        .expect("retry after the 500");
    assert_eq!(
        first.body, retried.body,
        "the retry resends the same notification"
    );
    assert_eq!(retried.method, "POST");
    verify_signature(&retried);
    let body: serde_json::Value = serde_json::from_slice(&retried.body).unwrap();
    assert_eq!(body["event"], "approval.pending");
    assert_eq!(body["approval"]["request_id"], "r-hook");
    // The deep link names the approval's console page, never the token.
    let link = body["link"].as_str().unwrap();
    assert_eq!(
        link,
        format!(
            "https://approvals.example/approvals/{}",
            body["approval"]["id"].as_str().unwrap()
        )
    );
    assert!(!link.contains(token.expose()));
    assert_eq!(
        body["token"],
        token.expose(),
        "the approval system gets the token to decide with"
    );

    manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    let decided = sink
        .next(Duration::from_secs(10))
        .await
        .expect("decision notification");
    verify_signature(&decided);
    let body: serde_json::Value = serde_json::from_slice(&decided.body).unwrap();
    assert_eq!(body["event"], "approval.decided");
    assert_eq!(body["approval"]["status"], "APPROVED");
    assert!(
        body.get("token").is_none(),
        "decisions do not repeat the token"
    );
}

#[tokio::test]
async fn a_dead_webhook_never_fails_the_approval() {
    let url = format!("http://127.0.0.1:{}/hook", free_port());
    let notifier = WebhookNotifier::new(&url, SECRET, Duration::from_millis(200), 2).unwrap();
    let f = common::sqlite_in_process().await;
    let manager = f.manager.clone().with_notifier(Arc::new(notifier.clone()));
    let token = issued(manager.issue(&request("r-dead")).await.unwrap());
    let decided = manager.deny(token.expose(), "bob", None).await.unwrap();
    assert_eq!(decided.status, ApprovalStatus::Denied);
    // Called directly, the failure is a typed error after the bounded attempts.
    let err = notifier.notify_decision(&decided).await.unwrap_err();
    assert!(err.reason.contains("2 attempts"), "{err}");
}

#[tokio::test]
async fn webhook_configuration_is_validated() {
    assert!(WebhookNotifier::new("ftp://x", SECRET, Duration::from_secs(1), 3).is_err());
    assert!(
        WebhookNotifier::new("https://hooks.example", b"short", Duration::from_secs(1), 3).is_err()
    );
    let n =
        WebhookNotifier::new("https://hooks.example", SECRET, Duration::from_secs(1), 3).unwrap();
    assert!(!format!("{n:?}").contains("webhook-secret"));
}

/// Hardening, item 4: the webhook over real TLS. A server whose CA the
/// notifier does not trust gets nothing (the token never leaves); trusted,
/// the signed notification arrives over HTTPS; a trusted CA's certificate
/// for another name is still refused.
#[tokio::test]
async fn webhook_over_tls_trusts_only_what_it_is_told_and_checks_the_name() {
    use warden_testkit::TlsIdentity;
    let identity = TlsIdentity::new(&["IP:127.0.0.1", "DNS:localhost"]);
    let mut sink = HttpSink::start_tls(0, &identity).await;
    assert!(sink.url().starts_with("https://"));

    // Not trusted: the handshake fails, nothing is delivered.
    let untrusting = WebhookNotifier::new(&sink.url(), SECRET, Duration::from_secs(2), 1).unwrap();
    let f = common::sqlite_in_process().await;
    let token = issued(f.manager.issue(&request("r-tls")).await.unwrap());
    let approval = f.manager.check(token.expose()).await.unwrap();
    let err = untrusting
        .notify_pending(&approval, &token)
        .await
        .unwrap_err();
    assert!(!err.reason.contains(token.expose()), "{err}");
    assert!(sink.next(Duration::from_millis(300)).await.is_none());
    assert!(sink.failed_handshakes() >= 1);

    // Trusted: delivered, signed, over HTTPS — by IP and by name.
    for url in [sink.url(), sink.url_with_host("localhost")] {
        let trusting = WebhookNotifier::new(&url, SECRET, Duration::from_secs(2), 1)
            .unwrap()
            .with_root_certificates_pem(&identity.ca_pem)
            .unwrap();
        trusting.notify_pending(&approval, &token).await.unwrap();
        let delivered = sink
            .next(Duration::from_secs(5))
            .await
            .expect("an HTTPS delivery");
        verify_signature(&delivered);
        let body: serde_json::Value = serde_json::from_slice(&delivered.body).unwrap();
        assert_eq!(body["event"], "approval.pending");
        assert_eq!(body["approval"]["request_id"], "r-tls");
    }

    // A CA the notifier trusts, a certificate for another name: refused at
    // the handshake (the name check), nothing delivered.
    let elsewhere = TlsIdentity::new(&["DNS:hooks.example"]);
    let mut wrong_name = HttpSink::start_tls(0, &elsewhere).await;
    let notifier = WebhookNotifier::new(&wrong_name.url(), SECRET, Duration::from_secs(2), 1)
        .unwrap()
        .with_root_certificates_pem(&elsewhere.ca_pem)
        .unwrap();
    assert!(notifier.notify_pending(&approval, &token).await.is_err());
    assert!(wrong_name.next(Duration::from_millis(300)).await.is_none());
    assert!(wrong_name.failed_handshakes() >= 1);

    // A CA file with no certificate in it is a configuration error.
    assert!(
        WebhookNotifier::new(&sink.url(), SECRET, Duration::from_secs(1), 1)
            .unwrap()
            .with_root_certificates_pem(b"not a certificate")
            .is_err()
    );
}

/// The Slack-compatible notifier: a Block Kit message with a Review button
/// linking to the console page, never the token; a line per decision.
#[tokio::test]
async fn slack_messages_link_to_the_console_and_never_carry_the_token() {
    let mut sink = HttpSink::start(1).await;
    let notifier = warden_approval::SlackNotifier::new(
        &sink.url(),
        "https://approvals.example",
        Duration::from_secs(2),
        3,
    )
    .unwrap();
    let f = common::sqlite_in_process().await;
    let manager = f.manager.clone().with_notifier(Arc::new(notifier));
    let mut held = request("r-slack");
    held.caller_id = "agent<@U123>&co".into();
    // Markdown, a link and a right-to-left override in the tool's name, and
    // longer than a Slack header may be.
    held.tool_name = format!(
        "*run*_now_ https://evil.example/\u{202E}fdp.{}",
        "x".repeat(200)
    );
    let token = issued(manager.issue(&held).await.unwrap());
    let _refused = sink
        .next(Duration::from_secs(10))
        .await
        .expect("first attempt");
    let message = sink.next(Duration::from_secs(10)).await.expect("retried");
    let text = String::from_utf8_lossy(&message.body).into_owned();
    assert!(!text.contains(token.expose()), "never the token");
    let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
    let id = manager.check(token.expose()).await.unwrap().id;
    let button = &body["blocks"][2]["elements"][0];
    assert_eq!(button["type"], "button");
    assert_eq!(
        button["url"],
        format!("https://approvals.example/approvals/{id}")
    );
    let fields = body["blocks"][1]["fields"].to_string();
    assert!(fields.contains("`agent&lt;@U123&gt;&amp;co`"), "{fields}");
    assert!(!fields.contains("<@U123>"), "no mention injected: {fields}");
    // Agent-chosen text sits in code spans (no bold, link or mention is
    // rendered), with the override shown, never acted on.
    assert!(
        fields.contains("`*run*_now_ https://evil.example/\\\\u{202E}fdp."),
        "{fields}"
    );
    assert!(!fields.contains('\u{202E}'), "{fields}");
    let header = body["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(header.chars().count() <= 150, "{header}");
    assert!(
        !text.contains(&held.raw_args_hash[..16]),
        "no arguments hash"
    );

    manager
        .approve(token.expose(), "alice", None)
        .await
        .unwrap();
    let decided = sink
        .next(Duration::from_secs(10))
        .await
        .expect("decision message");
    let body: serde_json::Value = serde_json::from_slice(&decided.body).unwrap();
    let line = body["text"].as_str().unwrap();
    assert!(line.contains("APPROVED by `alice`"), "{line}");
    assert!(
        line.contains(&format!("https://approvals.example/approvals/{id}")),
        "{line}"
    );
    assert!(!line.contains(token.expose()));
    assert!(
        warden_approval::SlackNotifier::new("ftp://x", "https://c", Duration::from_secs(1), 1)
            .is_err()
    );
}
