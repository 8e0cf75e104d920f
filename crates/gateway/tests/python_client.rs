//! `warden gateway` driven by a client this project did not write: the
//! official Python MCP SDK (PyPI `mcp`, `scripts/mcp/client.py`), in front
//! of a reference server it did not write either (PyPI `mcp-server-time`,
//! over stdio), on PostgreSQL + Redis. `scripts/mcp-env.sh` installs both
//! into `.cache/mcp-venv`; `scripts/test.sh` sets `WARDEN_TEST_MCP_PYTHON`.
//! A missing interpreter fails the test: it is never skipped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use warden_approval::ApprovalStatus;
use warden_audit::Decision;
use warden_core::{Settings, Warden};
use warden_gateway::{Gateway, GatewayConfig};
use warden_keys::NewKey;
use warden_testkit::{Backend, LogCapture, TestDatabase, TestRedis};

const POLICY: &str = r#"
trust_levels:
  - { level: 0, name: untrusted }
  - { level: 1, name: restricted }
  - { level: 2, name: standard }
roles:
  - { name: developer, max_trust_level: 2 }
  - { name: viewer, max_trust_level: 1 }
  - { name: approver, max_trust_level: 0, permissions: [approve] }
tools:
  - { server: time, tool: get_current_time, roles: [developer], min_trust_level: 1, decision: allow, rate_limit: { requests: 3, per_seconds: 600 } }
  - { server: time, tool: convert_*, roles: [developer], decision: require_approval, approval_ttl_seconds: 600, risk_labels: [needs-review] }
"#;

/// The secret an agent puts in its arguments: never in the trail or a log.
const SECRET: &str = "sk_live_51HqLyjWDarjtT1zdp7dcXYZ0123456789abcdef";

fn python() -> String {
    std::env::var("WARDEN_TEST_MCP_PYTHON").unwrap_or_else(|_| {
        panic!("WARDEN_TEST_MCP_PYTHON is not set: run scripts/test.sh (scripts/mcp-env.sh installs the client)")
    })
}

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mcp/client.py")
}

/// Runs the Python client once; returns what it printed.
async fn client(url: &str, key: Option<&str>, args: &[&str]) -> Value {
    let mut command = tokio::process::Command::new(python());
    command.arg(client_script()).arg(url).args(args);
    command.env_remove("WARDEN_API_KEY");
    if let Some(key) = key {
        command.env("WARDEN_API_KEY", key);
    }
    command.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the client finished")
        .expect("the client started");
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the client printed no JSON: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

async fn key(warden: &Warden, caller: &str, role: &str, trust_level: i16) -> String {
    warden
        .keys()
        .unwrap()
        .create(&NewKey {
            actor: "test",
            caller_id: caller,
            role,
            trust_level,
            environment: "development",
            expires_at: None,
        })
        .await
        .unwrap()
        .plaintext
        .expose()
        .to_owned()
}

/// Waits for the caller's next PENDING approval (one the test has not seen).
async fn next_pending(warden: &Warden, seen: &mut Vec<uuid::Uuid>) -> warden_approval::Approval {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pending = warden
            .approvals()
            .list(Some(ApprovalStatus::Pending), 50)
            .await
            .unwrap();
        if let Some(a) = pending.into_iter().find(|a| !seen.contains(&a.id)) {
            seen.push(a.id);
            return a;
        }
        assert!(tokio::time::Instant::now() < deadline, "no call was held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_independent_client_goes_through_the_whole_pipeline() {
    // At TRACE, with the filter every production subscriber applies.
    let logs = LogCapture::install_with(warden_gateway::allows_log);
    let db = TestDatabase::new(Backend::Postgres).await;
    let redis = TestRedis::new().await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let spill = dir.path().join("spill");
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "REDIS_URL" => Some(redis.url.clone()),
        "CACHE_KEY_PREFIX" => Some(redis.prefix.clone()),
        "BCRYPT_COST" => Some("4".into()),
        "POLICY_PATH" => Some(policy.display().to_string()),
        "AUDIT_SPILL_PATH" => Some(spill.display().to_string()),
        _ => None,
    })
    .unwrap();
    let warden = Warden::connect(&settings).await.unwrap();
    warden
        .migrations()
        .run(migration::Command::Up(None))
        .await
        .unwrap();
    let agent = key(&warden, "agent-dev", "developer", 1).await;
    let viewer = key(&warden, "agent-viewer", "viewer", 1).await;
    let approver = key(&warden, "alice", "approver", 0).await;

    let config = GatewayConfig::from_yaml(&format!(
        "upstreams:\n  - {{ name: time, command: [{:?}, -m, mcp_server_time, --local-timezone, UTC] }}\nhold_budget_ms: 4000\nprogress_interval_ms: 300\n",
        python()
    ))
    .unwrap();
    let gateway = Gateway::start(&warden, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warden_gateway::serve(
        listener,
        gateway.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    // The upstream's tools, under its name.
    let listed = client(&url, Some(&agent), &["list"]).await;
    let tools: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{listed}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(tools.contains(&"time__get_current_time"), "{listed}");
    assert!(tools.contains(&"time__convert_time"), "{listed}");

    // No key, a wrong key, an approver's key: refused before any MCP.
    let anonymous = client(&url, None, &["list"]).await;
    assert!(
        anonymous.to_string().contains(r#""http_status":401"#),
        "{anonymous}"
    );
    let wrong = client(&url, Some("wdn_development_nope_nope"), &["list"]).await;
    assert!(
        wrong.to_string().contains(r#""http_status":401"#),
        "{wrong}"
    );
    let approvers = client(&url, Some(&approver), &["list"]).await;
    assert!(
        approvers.to_string().contains(r#""http_status":403"#),
        "{approvers}"
    );
    // A key sees only the tools its rules let it call (or ask for).
    let viewers = client(&url, Some(&viewer), &["list"]).await;
    assert_eq!(viewers["tools"], json!([]), "{viewers}");

    // Allowed: forwarded, answered.
    let now = client(
        &url,
        Some(&agent),
        &["call", "time__get_current_time", r#"{"timezone": "UTC"}"#],
    )
    .await;
    assert_eq!(now["is_error"], json!(false), "{now}");
    assert!(now["text"].as_str().unwrap().contains("UTC"), "{now}");

    // Denied: no rule for the viewer's role.
    let denied = client(
        &url,
        Some(&viewer),
        &["call", "time__get_current_time", r#"{"timezone": "UTC"}"#],
    )
    .await;
    assert_eq!(denied["is_error"], json!(true), "{denied}");
    assert!(
        denied["text"].as_str().unwrap().contains("denied"),
        "{denied}"
    );

    // A secret in the arguments: the upstream refuses the extra argument or
    // not, the trail and the logs never hold it.
    let secret_args = json!({"timezone": "UTC", "api_key": SECRET}).to_string();
    let with_secret = client(
        &url,
        Some(&agent),
        &["call", "time__get_current_time", &secret_args],
    )
    .await;
    assert!(with_secret.get("is_error").is_some(), "{with_secret}");

    // Held, approved while the client waits: it runs once, and the client
    // heard it was waiting.
    let mut seen = Vec::new();
    let convert =
        r#"{"source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"}"#;
    let held = {
        let url = url.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            client(&url, Some(&agent), &["call", "time__convert_time", convert]).await
        })
    };
    let pending = next_pending(&warden, &mut seen).await;
    assert_eq!(pending.tool_name, "time__convert_time");
    assert_eq!(pending.caller_id, "agent-dev");
    assert_eq!(pending.risk_labels, vec!["needs-review".to_owned()]);
    assert_eq!(pending.policy_version, gateway.policy().version);
    tokio::time::sleep(Duration::from_millis(800)).await;
    warden
        .approvals()
        .approve_by_id(pending.id, "alice", Some("fine"))
        .await
        .unwrap();
    let ran = held.await.unwrap();
    assert_eq!(ran["is_error"], json!(false), "{ran}");
    assert!(
        ran["text"].as_str().unwrap().contains("Europe/Paris"),
        "{ran}"
    );
    assert!(
        !ran["progress"].as_array().unwrap().is_empty(),
        "no progress while held: {ran}"
    );
    assert_eq!(
        warden.approvals().get(pending.id).await.unwrap().status,
        ApprovalStatus::Executed,
        "consumed exactly once"
    );

    // Held, denied: nothing runs, the agent is told who and why.
    let held = {
        let url = url.clone();
        let agent = agent.clone();
        tokio::spawn(async move {
            client(&url, Some(&agent), &["call", "time__convert_time", convert]).await
        })
    };
    let pending = next_pending(&warden, &mut seen).await;
    warden
        .approvals()
        .deny_by_id(pending.id, "alice", Some("not today"))
        .await
        .unwrap();
    let refused = held.await.unwrap();
    assert_eq!(refused["is_error"], json!(true), "{refused}");
    let text = refused["text"].as_str().unwrap();
    assert!(
        text.contains("denied by alice") && text.contains("not today"),
        "{refused}"
    );

    // Held past the budget: nothing runs; the agent is told to retry later.
    let late = client(&url, Some(&agent), &["call", "time__convert_time", convert]).await;
    assert_eq!(late["is_error"], json!(true), "{late}");
    assert!(
        late["text"]
            .as_str()
            .unwrap()
            .contains("Retry the same call"),
        "{late}"
    );
    let pending = next_pending(&warden, &mut seen).await;
    assert_eq!(pending.status, ApprovalStatus::Pending);
    // Approved later. The retry with other arguments never runs (it is held
    // anew); the retry with the same ones runs at once, exactly once; a
    // second retry is held again.
    warden
        .approvals()
        .approve_by_id(pending.id, "alice", None)
        .await
        .unwrap();
    let other = r#"{"source_timezone": "UTC", "time": "13:00", "target_timezone": "Europe/Paris"}"#;
    let changed = client(&url, Some(&agent), &["call", "time__convert_time", other]).await;
    assert!(
        changed["text"]
            .as_str()
            .unwrap()
            .contains("Retry the same call"),
        "{changed}"
    );
    next_pending(&warden, &mut seen).await;
    assert_eq!(
        warden.approvals().get(pending.id).await.unwrap().status,
        ApprovalStatus::Approved,
        "other arguments did not use it"
    );
    let retried = client(&url, Some(&agent), &["call", "time__convert_time", convert]).await;
    assert_eq!(retried["is_error"], json!(false), "{retried}");
    assert!(
        retried["text"].as_str().unwrap().contains("Europe/Paris"),
        "{retried}"
    );
    assert_eq!(
        warden.approvals().get(pending.id).await.unwrap().status,
        ApprovalStatus::Executed
    );
    let again = client(&url, Some(&agent), &["call", "time__convert_time", convert]).await;
    assert!(
        again["text"]
            .as_str()
            .unwrap()
            .contains("Retry the same call"),
        "{again}"
    );

    // The rule's rate limit (3 per 10 minutes): the third call of the tool
    // passes, the fourth is refused with when to retry.
    let third = client(
        &url,
        Some(&agent),
        &["call", "time__get_current_time", r#"{"timezone": "UTC"}"#],
    )
    .await;
    assert_eq!(third["is_error"], json!(false), "{third}");
    let limited = client(
        &url,
        Some(&agent),
        &["call", "time__get_current_time", r#"{"timezone": "UTC"}"#],
    )
    .await;
    assert!(limited.to_string().contains("rate limited"), "{limited}");
    assert!(limited.to_string().contains("retry_after_ms"), "{limited}");

    // A revoked key is refused on its next request.
    warden
        .keys()
        .unwrap()
        .revoke("agent-dev", "test")
        .await
        .unwrap();
    let revoked = client(&url, Some(&agent), &["list"]).await;
    assert!(
        revoked.to_string().contains(r#""http_status":401"#),
        "{revoked}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    gateway.shutdown().await;

    // The trail: every decision, with the policy version, never the secret.
    let events = warden
        .audit()
        .query()
        .list_by_caller("agent-dev", 100, 0)
        .await
        .unwrap();
    let decisions: Vec<Decision> = events.iter().map(|e| e.decision()).collect();
    for expected in [
        Decision::Allow,
        Decision::RequireApproval,
        Decision::Approved,
        Decision::Rejected,
        Decision::RateLimited,
    ] {
        assert!(
            decisions.contains(&expected),
            "{expected:?} missing: {decisions:?}"
        );
    }
    let short = &gateway_version(&policy);
    for event in &events {
        let stored = serde_json::to_string(event).unwrap();
        assert!(
            !stored.contains(&SECRET[8..]),
            "the secret is in the trail: {stored}"
        );
        if event.kind() == warden_audit::EventKind::ToolCall {
            assert!(
                event.reason().unwrap_or_default().contains(short.as_str()),
                "{stored}"
            );
        }
    }
    // Exactly once: the held call ran twice in all (approved while waiting,
    // and the retry after the budget), each time once.
    let runs = events
        .iter()
        .filter(|e| {
            e.tool_name() == Some("time__convert_time")
                && e.decision() == Decision::Approved
                && e.status_code() == Some(200)
        })
        .count();
    assert_eq!(runs, 2, "{decisions:?}");
    let viewer_events = warden
        .audit()
        .query()
        .list_by_caller("agent-viewer", 10, 0)
        .await
        .unwrap();
    assert!(viewer_events.iter().any(|e| e.decision() == Decision::Deny));
    let logged = logs.contents();
    let leaks: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains(&SECRET[8..]))
        .collect();
    assert!(leaks.is_empty(), "the secret reached log lines: {leaks:#?}");
    assert!(!logged.contains(&agent), "a key reached a log line");
}

/// Prompts and resources pass through; an upstream that crashes mid-call
/// is answered as a tool error, audited, and the other upstream keeps
/// serving.
#[tokio::test]
async fn prompts_and_resources_pass_through_and_a_crashed_upstream_is_contained() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "{POLICY}  - {{ server: lab, tool: '*', roles: [developer], decision: allow }}\n  - {{ kind: prompt, server: lab, tool: review, roles: [developer], decision: allow }}\n  - {{ kind: resource, server: lab, tool: 'notes://*', roles: [developer], decision: allow }}\n"
        ),
    )
    .unwrap();
    let spill = dir.path().join("spill");
    let settings = Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "BCRYPT_COST" => Some("4".into()),
        "POLICY_PATH" => Some(policy.display().to_string()),
        "AUDIT_SPILL_PATH" => Some(spill.display().to_string()),
        _ => None,
    })
    .unwrap();
    let warden = Warden::connect(&settings).await.unwrap();
    warden
        .migrations()
        .run(migration::Command::Up(None))
        .await
        .unwrap();
    let agent = key(&warden, "agent-lab", "developer", 1).await;
    let viewer = key(&warden, "viewer-lab", "viewer", 1).await;
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mcp/upstream.py");
    let config = GatewayConfig::from_yaml(&format!(
        "upstreams:\n  - {{ name: lab, command: [{py:?}, {lab:?}], env: {{ LAB_MODE: test }} }}\n  - {{ name: time, command: [{py:?}, -m, mcp_server_time, --local-timezone, UTC] }}\n",
        py = python(),
        lab = lab.display().to_string(),
    ))
    .unwrap();
    let gateway = Gateway::start(&warden, config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(warden_gateway::serve(
        listener,
        gateway.clone(),
        async move {
            let _ = stopped.await;
        },
    ));

    let prompts = client(&url, Some(&agent), &["prompts"]).await;
    assert_eq!(prompts["prompts"], json!(["lab__review"]), "{prompts}");
    let prompt = client(
        &url,
        Some(&agent),
        &["prompt", "lab__review", r#"{"subject": "the plan"}"#],
    )
    .await;
    assert!(
        prompt["text"]
            .as_str()
            .unwrap_or_default()
            .contains("review the plan"),
        "{prompt}"
    );
    let resources = client(&url, Some(&agent), &["resources"]).await;
    assert_eq!(
        resources["resources"],
        json!(["notes://today"]),
        "{resources}"
    );
    let read = client(&url, Some(&agent), &["read", "notes://today"]).await;
    assert_eq!(read["text"], json!("Nothing planned."), "{read}");
    // No rule for the viewer: nothing listed, nothing rendered or read.
    let hidden = client(&url, Some(&viewer), &["prompts"]).await;
    assert_eq!(hidden["prompts"], json!([]), "{hidden}");
    let hidden = client(&url, Some(&viewer), &["resources"]).await;
    assert_eq!(hidden["resources"], json!([]), "{hidden}");
    let refused = client(
        &url,
        Some(&viewer),
        &["prompt", "lab__review", r#"{"subject": "x"}"#],
    )
    .await;
    assert!(refused.to_string().contains("denied"), "{refused}");
    let refused = client(&url, Some(&viewer), &["read", "notes://today"]).await;
    assert!(refused.to_string().contains("denied"), "{refused}");
    // A session belongs to the key that opened it.
    let port = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches("/mcp")
        .parse::<u16>()
        .unwrap();
    let (status, headers) = post(port, &agent, None, INITIALIZE).await;
    assert_eq!(status, 200, "{headers}");
    let session = headers
        .lines()
        .find_map(|l| l.strip_prefix("mcp-session-id: "))
        .expect("a session")
        .trim()
        .to_owned();
    let (status, _) = post(port, &viewer, Some(&session), INITIALIZED).await;
    assert_eq!(status, 404, "another key cannot use the session");
    let (status, _) = post(port, &agent, Some(&session), INITIALIZED).await;
    assert_eq!(status, 202, "its own key can");
    // Ended by its client, the session is forgotten.
    let (status, _) = raw(port, "DELETE", &agent, Some(&session), "").await;
    assert!((200..300).contains(&status), "{status}");
    let (status, _) = post(port, &agent, Some(&session), INITIALIZED).await;
    assert_eq!(status, 404, "an ended session is not served");
    // A child upstream gets only what its config names (and PATH, HOME…):
    // never the gateway's own environment.
    let names = client(&url, Some(&agent), &["call", "lab__environment", "{}"]).await;
    let names = names["text"].as_str().unwrap_or_default().to_owned();
    assert!(names.split(' ').any(|n| n == "LAB_MODE"), "{names}");
    assert!(
        !names.contains("WARDEN") && !names.contains("DATABASE") && !names.contains("REDIS"),
        "the gateway's environment leaked: {names}"
    );
    let echoed = client(
        &url,
        Some(&agent),
        &["call", "lab__echo", r#"{"text": "hi"}"#],
    )
    .await;
    assert_eq!(echoed["text"], json!("echo: hi"), "{echoed}");

    // The lab upstream dies mid-call: a tool error, not a hung client.
    let crashed = client(
        &url,
        Some(&agent),
        &["call", "lab__crash", r#"{"text": "x"}"#],
    )
    .await;
    assert_eq!(crashed["is_error"], json!(true), "{crashed}");
    assert!(
        crashed["text"].as_str().unwrap().contains("lab"),
        "{crashed}"
    );
    // The other upstream is still served, and listing still works.
    let now = client(
        &url,
        Some(&agent),
        &["call", "time__get_current_time", r#"{"timezone": "UTC"}"#],
    )
    .await;
    assert_eq!(now["is_error"], json!(false), "{now}");
    let listed = client(&url, Some(&agent), &["list"]).await;
    assert!(
        listed.to_string().contains("time__get_current_time"),
        "{listed}"
    );
    // The crashed upstream is started again on its next request.
    let back = client(
        &url,
        Some(&agent),
        &["call", "lab__echo", r#"{"text": "again"}"#],
    )
    .await;
    assert_eq!(back["text"], json!("echo: again"), "{back}");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    gateway.shutdown().await;
    // The crash is on the record: the call, its caller, a 502.
    let events = warden
        .audit()
        .query()
        .list_by_caller("agent-lab", 50, 0)
        .await
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.tool_name() == Some("lab__crash") && e.status_code() == Some(502)),
        "{events:?}"
    );
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"1"}}}"#;
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

/// One raw MCP POST; returns the status and the (lowercased) headers.
async fn post(port: u16, key: &str, session: Option<&str>, body: &str) -> (u16, String) {
    raw(port, "POST", key, session, body).await
}

/// One raw MCP request of `method`.
async fn raw(
    port: u16,
    method: &str,
    key: &str,
    session: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let session = session
        .map(|s| format!("mcp-session-id: {s}\r\nmcp-protocol-version: 2025-06-18\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} /mcp HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n{session}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    // The head is enough: SSE bodies stay open.
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head)
}

/// The first 12 hex digits of the policy's version, as events carry it.
fn gateway_version(policy: &std::path::Path) -> String {
    let text = std::fs::read_to_string(policy).unwrap();
    warden_keys::Policy::from_yaml(&text).unwrap().version[..12].to_owned()
}
