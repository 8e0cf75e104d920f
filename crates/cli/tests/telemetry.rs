//! `warden` with telemetry on: the demo's trace and metrics reach a real
//! OTLP/HTTP receiver before the process exits; a silent collector neither
//! fails nor stalls a command; `warden metrics` serves valid Prometheus text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::Command;
use warden_testkit::{
    Backend, Blackhole, OtlpReceiver, TestDatabase, free_port, promtool_check_metrics,
};

fn warden(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_exports_its_trace_and_metrics_before_it_exits() {
    let mut receiver = OtlpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let out = warden(dir.path())
        .arg("demo")
        .env("OTEL_ENABLED", "true")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())
        .env("OTEL_SERVICE_NAME", "warden-demo-test")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let export = receiver.collect(Duration::from_secs(1)).await;
    assert!(export.rejected.is_empty(), "{:?}", export.rejected);

    // One trace: the command's root span with the flow's operations under it.
    let root = export.spans_named("warden demo");
    assert_eq!(root.len(), 1, "one root span");
    let root = root[0];
    assert!(root.parent_span_id.is_empty());
    assert_eq!(root.attributes["warden.command"], "warden demo");
    for name in [
        "storage.connect",
        "keys.create",
        "keys.verify",
        "approval.issue",
        "approval.check",
        "approval.decide",
        "approval.consume",
        "audit.query.get_by_request_id",
    ] {
        let spans = export.spans_named(name);
        assert!(!spans.is_empty(), "no {name} span");
        // The demo's own steps are children of the command; its gateway
        // leg's server-side spans belong to the requests it serves (their
        // own traces, as in any server).
        assert!(
            spans.iter().any(|s| s.parent_span_id == root.span_id),
            "{name} is a child of the command"
        );
    }
    let decide = export.spans_named("approval.decide")[0];
    assert_eq!(decide.attributes["db.system.name"], "sqlite");
    assert_eq!(decide.attributes["db.operation.name"], "UPDATE");
    assert_eq!(decide.attributes["status"], "APPROVED");
    // The in-process cache's operations are children of what used them.
    let verify_ids: Vec<&str> = export
        .spans_named("keys.verify")
        .iter()
        .map(|s| s.span_id.as_str())
        .collect();
    assert!(
        export
            .spans
            .iter()
            .any(|s| s.name == "cache.get_many" && verify_ids.contains(&s.parent_span_id.as_str()))
    );

    // The metric points of the flow.
    let value = |m: &str, with: &[(&str, &str)]| {
        export
            .max_value(m, with)
            .unwrap_or_else(|| panic!("no {m} {with:?} point"))
    };
    assert_eq!(
        value(
            "warden.audit.events.written",
            &[("warden.audit.path", "batch")]
        ),
        // The demo's 6 calls, and its gateway leg's 3 call events.
        9.0
    );
    assert_eq!(
        value(
            "warden.approval.decisions",
            &[("warden.approval.decision", "approved")]
        ),
        // The demo's approval and its gateway leg's.
        2.0
    );
    assert!(value("warden.cache.lookups", &[("warden.cache.result", "hit")]) >= 1.0);
    // At least the demo's second verify; the gateway leg verifies its
    // client's key on every HTTP request too.
    assert!(
        value(
            "warden.keys.verifications",
            &[
                ("warden.keys.path", "cache"),
                ("warden.keys.outcome", "valid")
            ]
        ) >= 1.0
    );
    assert_eq!(value("warden.approval.consumed", &[]), 2.0);

    // The demo prints its API key once; neither it nor the raw arguments'
    // secrets are in any exported byte.
    let key = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("caller demo-agent-"))
        .and_then(|l| l.rsplit(": ").next())
        .map(str::trim)
        .expect("the demo prints its key");
    assert!(key.starts_with("wdn_") && key.len() > 40, "{key}");
    for secret in [key, "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e", "hunter2-prod"] {
        assert!(
            !export.contains_bytes(secret.as_bytes()),
            "{secret} was exported"
        );
    }
    assert!(
        export.contains_bytes(b"warden-demo-test"),
        "the service name is"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_absent_collector_neither_fails_nor_stalls_the_demo() {
    let blackhole = Blackhole::start().await;
    // Nothing listens on a fresh free port: connections are refused.
    let absent = format!("http://127.0.0.1:{}", free_port());
    for endpoint in [format!("http://{}", blackhole.addr()), absent] {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            warden(dir.path())
                .arg("demo")
                .env("OTEL_ENABLED", "true")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
                // The exporter would wait two minutes for an answer; the
                // command's flush gives up after one second.
                .env("OTEL_EXPORTER_OTLP_TIMEOUT", "120000")
                .env("TELEMETRY_FLUSH_TIMEOUT_MS", "1000")
                .env("RUST_LOG", "warn")
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("the demo hung exporting to {endpoint}"))
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{endpoint}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("log       verified, proof checked offline"),
            "{stdout}"
        );
        assert!(
            stderr.contains("telemetry was not fully exported"),
            "{endpoint}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_metrics_serves_valid_prometheus_text_with_the_storage_gauges() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let migrated = warden(dir.path())
        .args(["migrate", "up"])
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let port = free_port();
    let mut server = warden(dir.path())
        .args([
            "metrics",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--sample-every",
            "1",
        ])
        .env("DATABASE_URL", &db.url)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        assert!(
            Instant::now() < deadline,
            "no scrape with the storage gauges in 30 s"
        );
        if let Some(body) = scrape(port).await
            && body.contains("warden_audit_integration_lag")
        {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    if let Err(report) = promtool_check_metrics(&body) {
        panic!("promtool refused /metrics:\n{report}\n---\n{body}");
    }
    for series in [
        "# TYPE warden_approval_pending gauge",
        r#"warden_approval_pending{otel_scope_name="warden-core"} 0"#,
        r#"warden_audit_integration_lag{otel_scope_name="warden-core"} 0"#,
        r#"db_client_connections_usage{db_client_connection_pool_name="database",db_client_connection_state="idle""#,
        r#"db_client_connections_max{db_client_connection_pool_name="database""#,
        "target_info{",
    ] {
        assert!(body.contains(series), "missing {series:?} in\n{body}");
    }
    // Not a secret anywhere: the database URL's password is not a label.
    assert!(!body.contains("postgres:postgres@"));
    server.kill().await.unwrap();
}

/// `GET /metrics` over a plain TCP connection: the body when the answer is
/// `200` with the exposition format's content type.
async fn scrape(port: u16) -> Option<String> {
    let (head, body) = http_get(port, "/metrics").await?;
    (head.starts_with("http/1.1 200") && head.contains("content-type: text/plain; version=0.0.4"))
        .then_some(body)
}

/// `GET path` over a plain TCP connection: the head (lowercased) and body.
async fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    socket
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
    let mut reply = Vec::new();
    socket.read_to_end(&mut reply).await.ok()?;
    let reply = String::from_utf8(reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    Some((head.to_ascii_lowercase(), body.to_owned()))
}

/// `warden serve` on the embedded default: the console's sign-in page with
/// its security headers, and /metrics beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warden_serve_runs_the_console_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("serve.db").display()
    );
    let migrated = warden(dir.path())
        .args(["migrate", "up"])
        .env("DATABASE_URL", &db)
        .output()
        .await
        .unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let port = free_port();
    let mut server = warden(dir.path())
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &db)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (head, page) = loop {
        assert!(
            Instant::now() < deadline,
            "the console did not answer in 30 s"
        );
        if let Some(answer) = http_get(port, "/sign-in").await {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(
        page.contains(r#"name="key""#)
            && page.matches("<script").count()
                == page
                    .matches(r#"<script src="/static/console.js"></script>"#)
                    .count(),
        "{page}"
    );
    let (head, _) = http_get(port, "/inbox").await.unwrap();
    assert!(
        head.starts_with("http/1.1 303") && head.contains("location: /sign-in"),
        "{head}"
    );
    // Unknown paths of the merged app keep the console's headers.
    let (head, _) = http_get(port, "/no-such-page").await.unwrap();
    assert!(
        head.starts_with("http/1.1 404") && head.contains("content-security-policy"),
        "{head}"
    );
    let metrics = scrape(port).await.expect("/metrics beside the console");
    assert!(metrics.contains("target_info"), "{metrics}");
    server.kill().await.unwrap();
}
