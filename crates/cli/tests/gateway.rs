//! `warden gateway` as an operator runs it, end to end with real processes:
//! the `warden` binary serves the gateway (PostgreSQL + Redis) in front of
//! the reference `mcp-server-time`; the official Python MCP SDK calls a
//! held tool; the held call's webhook (HMAC-signed, from settings) carries
//! the token to the approver, who approves with `warden approvals approve`
//! while the client waits; the call runs once. `scripts/test.sh` sets
//! `WARDEN_TEST_MCP_PYTHON` (never skipped).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use warden_testkit::{Backend, HttpSink, TestDatabase, TestRedis, free_port};

const POLICY: &str = r#"
trust_levels:
  - { level: 0, name: untrusted }
  - { level: 1, name: restricted }
roles:
  - { name: developer, max_trust_level: 1 }
tools:
  - { server: time, tool: convert_time, roles: [developer], decision: require_approval, risk_labels: [timezones] }
  - { server: time, tool: get_current_time, roles: [developer], decision: allow }
"#;

fn python() -> String {
    std::env::var("WARDEN_TEST_MCP_PYTHON")
        .expect("WARDEN_TEST_MCP_PYTHON is not set: run scripts/test.sh")
}

#[tokio::test]
async fn a_held_call_is_approved_with_the_cli_from_its_webhook() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let redis = TestRedis::new().await;
    let mut webhook = HttpSink::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        format!(
            "upstreams:\n  - {{ name: time, command: [{:?}, -m, mcp_server_time, --local-timezone, UTC] }}\nhold_budget_ms: 60000\nprogress_interval_ms: 500\n",
            python()
        ),
    )
    .unwrap();
    let webhook_url = webhook.url();
    let env = |cmd: &mut Command| {
        cmd.current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &db.url)
            .env("REDIS_URL", &redis.url)
            .env("CACHE_KEY_PREFIX", &redis.prefix)
            .env("BCRYPT_COST", "4")
            .env("POLICY_PATH", dir.path().join("policy.yaml"))
            .env("AUDIT_SPILL_PATH", dir.path().join("audit.spill"))
            .env("APPROVAL_WEBHOOK_URL", &webhook_url)
            .env("APPROVAL_WEBHOOK_SECRET", "cli-gateway-webhook-secret-0123");
    };
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        env(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "warden {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    run(&["migrate", "up"], None);
    let created: serde_json::Value = serde_json::from_str(&run(
        &[
            "keys",
            "create",
            "--caller",
            "agent-cli",
            "--role",
            "developer",
            "--trust-level",
            "1",
            "--json",
        ],
        None,
    ))
    .unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();

    // The gateway, as an operator starts it.
    let port = free_port();
    let mut gateway = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.args([
            "gateway",
            "--config",
            "gateway.yaml",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        env(&mut cmd);
        cmd.spawn().unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never listened"
        );
        assert!(gateway.try_wait().unwrap().is_none(), "the gateway exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The agent's call is held; it waits.
    let url = format!("http://127.0.0.1:{port}/mcp");
    let client = {
        let (url, key) = (url.clone(), key.clone());
        tokio::task::spawn_blocking(move || {
            Command::new(python())
                .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/mcp/client.py"))
                .args([
                    url.as_str(),
                    "call",
                    "time__convert_time",
                    r#"{"source_timezone": "UTC", "time": "09:30", "target_timezone": "Asia/Tokyo"}"#,
                ])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("WARDEN_API_KEY", key)
                .output()
                .unwrap()
        })
    };
    // The approver's webhook: signed, with the token and the call.
    let Some(delivered) = webhook.next(Duration::from_secs(60)).await else {
        let out = client.await.unwrap();
        panic!(
            "no webhook for the held call; the client said: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let body: serde_json::Value = serde_json::from_slice(&delivered.body).unwrap();
    assert_eq!(body["event"], "approval.pending");
    assert_eq!(body["approval"]["tool_name"], "time__convert_time");
    assert_eq!(body["approval"]["caller_id"], "agent-cli");
    let token = body["token"].as_str().unwrap().to_owned();
    // The approver takes a moment: the client hears it is held meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let approved = run(
        &[
            "approvals",
            "approve",
            "--approver",
            "alice",
            "--note",
            "via the CLI",
        ],
        Some(&format!("{token}\n")),
    );
    assert!(approved.contains("APPROVED"), "{approved}");

    let out = tokio::time::timeout(Duration::from_secs(60), client)
        .await
        .expect("the client finished")
        .unwrap();
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(result["is_error"], serde_json::json!(false), "{result}");
    assert!(
        result["text"].as_str().unwrap().contains("Asia/Tokyo"),
        "{result}"
    );
    assert!(
        !result["progress"].as_array().unwrap().is_empty(),
        "{result}"
    );

    // A clean stop (SIGTERM) flushes the trail; the approval was used once.
    let pid = gateway.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || gateway.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let listed = run(&["approvals", "list", "--json"], None);
    let approvals: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let statuses: Vec<&str> = approvals
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["status"].as_str())
        .collect();
    assert_eq!(statuses, vec!["EXECUTED"], "{listed}");
    let trail = run(
        &[
            "audit",
            "tail",
            "--actor",
            "agent-cli",
            "--kind",
            "tool_call",
        ],
        None,
    );
    assert!(trail.contains("time__convert_time"), "{trail}");
}

/// `warden gateway --stdio`, launched by the client itself (the official
/// Python SDK's stdio transport) with the key in `WARDEN_API_KEY`: calls run
/// as that key; a revoked key is refused.
#[tokio::test]
async fn the_gateway_over_stdio_runs_as_its_key() {
    let db = TestDatabase::new(Backend::Sqlite).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        format!(
            "upstreams:\n  - {{ name: time, command: [{:?}, -m, mcp_server_time, --local-timezone, UTC] }}\n",
            python()
        ),
    )
    .unwrap();
    let vars: Vec<(&str, String)> = vec![
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("DATABASE_URL", db.url.clone()),
        ("BCRYPT_COST", "4".into()),
        (
            "POLICY_PATH",
            dir.path().join("policy.yaml").display().to_string(),
        ),
        (
            "AUDIT_SPILL_PATH",
            dir.path().join("audit.spill").display().to_string(),
        ),
    ];
    let warden = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_warden"))
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    warden(&["migrate", "up"]);
    let created: serde_json::Value = serde_json::from_str(&warden(&[
        "keys",
        "create",
        "--caller",
        "agent-stdio",
        "--role",
        "developer",
        "--trust-level",
        "1",
        "--json",
    ]))
    .unwrap();
    let key = created["api_key"].as_str().unwrap().to_owned();
    let command = serde_json::json!([
        env!("CARGO_BIN_EXE_warden"),
        "gateway",
        "--stdio",
        "--config",
        dir.path().join("gateway.yaml").display().to_string(),
    ])
    .to_string();
    let client = |args: &[&str]| {
        let out = Command::new(python())
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../scripts/mcp/client.py"
            ))
            .arg("stdio")
            .args(args)
            .current_dir(dir.path())
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .env("WARDEN_API_KEY", &key)
            .env("MCP_STDIO_COMMAND", &command)
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|_| panic!("{out:?}"))
    };
    let listed = client(&["list"]);
    assert!(
        listed.to_string().contains("time__get_current_time"),
        "{listed}"
    );
    let now = client(&["call", "time__get_current_time", r#"{"timezone": "UTC"}"#]);
    assert_eq!(now["is_error"], serde_json::json!(false), "{now}");
    assert!(now["text"].as_str().unwrap().contains("UTC"), "{now}");
    warden(&["keys", "revoke", "agent-stdio"]);
    let refused = client(&["list"]);
    assert!(
        refused.get("exception").is_some(),
        "a revoked key is served: {refused}"
    );
    let trail = warden(&[
        "audit",
        "tail",
        "--actor",
        "agent-stdio",
        "--kind",
        "tool_call",
    ]);
    assert!(trail.contains("time__get_current_time"), "{trail}");
}

/// Two `warden gateway` processes on one PostgreSQL + Redis: 16 agents make
/// the same held call at once through either of them. It gets one approval
/// (one per distinct call), and once approved it runs exactly once; the
/// others are told it was used. Each of 6 distinct calls gets its own.
#[tokio::test]
async fn concurrent_identical_calls_across_two_gateways_run_once() {
    use rmcp::ServiceExt as _;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    warden_gateway::install_tls_provider();
    let db = TestDatabase::new(Backend::Postgres).await;
    let redis = TestRedis::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    std::fs::write(
        dir.path().join("gateway.yaml"),
        format!(
            "upstreams:\n  - {{ name: time, command: [{:?}, -m, mcp_server_time, --local-timezone, UTC] }}\nhold_budget_ms: 60000\nprogress_interval_ms: 300\n",
            python()
        ),
    )
    .unwrap();
    let settings = warden_core::Settings::from_lookup(|name| match name {
        "DATABASE_URL" => Some(db.url.clone()),
        "REDIS_URL" => Some(redis.url.clone()),
        "CACHE_KEY_PREFIX" => Some(redis.prefix.clone()),
        "BCRYPT_COST" => Some("4".into()),
        "POLICY_PATH" => Some(dir.path().join("policy.yaml").display().to_string()),
        "AUDIT_SPILL_PATH" => Some(dir.path().join("test.spill").display().to_string()),
        _ => None,
    })
    .unwrap();
    let warden = warden_core::Warden::connect(&settings).await.unwrap();
    warden.migrations().run(migration_up()).await.unwrap();
    let key = warden
        .keys()
        .unwrap()
        .create(&warden_keys_new("agent-many"))
        .await
        .unwrap()
        .plaintext
        .expose()
        .to_owned();

    let mut gateways = Vec::new();
    let mut ports = Vec::new();
    for i in 0..2 {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_warden"));
        cmd.args([
            "gateway",
            "--config",
            "gateway.yaml",
            "--bind",
            &format!("127.0.0.1:{port}"),
        ])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db.url)
        .env("REDIS_URL", &redis.url)
        .env("CACHE_KEY_PREFIX", &redis.prefix)
        .env("BCRYPT_COST", "4")
        .env("POLICY_PATH", dir.path().join("policy.yaml"))
        .env("AUDIT_SPILL_PATH", dir.path().join(format!("gw{i}.spill")))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        gateways.push(cmd.spawn().unwrap());
        ports.push(port);
    }
    for port in &ports {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(("127.0.0.1", *port))
            .await
            .is_err()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "a gateway never listened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let call = |port: u16, time: &'static str| {
        let key = key.clone();
        tokio::spawn(async move {
            let transport = StreamableHttpClientTransport::from_config(
                StreamableHttpClientTransportConfig::with_uri(format!(
                    "http://127.0.0.1:{port}/mcp"
                ))
                .auth_header(key),
            );
            let client = ().serve(transport).await.unwrap();
            let arguments = serde_json::json!({
                "source_timezone": "UTC", "time": time, "target_timezone": "Europe/Rome"
            });
            let result = client
                .call_tool(
                    CallToolRequestParams::new("time__convert_time")
                        .with_arguments(arguments.as_object().unwrap().clone()),
                )
                .await
                .unwrap();
            let text: String = result
                .content
                .iter()
                .filter_map(|c| c.as_text().map(|t| t.text.clone()))
                .collect();
            let _ = client.cancel().await;
            (result.is_error == Some(true), text)
        })
    };
    // 16 identical calls, half through each gateway; 6 distinct ones.
    let same: Vec<_> = (0..16).map(|i| call(ports[i % 2], "10:00")).collect();
    const DISTINCT: [&str; 6] = ["11:00", "11:05", "11:10", "11:15", "11:20", "11:25"];
    let distinct: Vec<_> = DISTINCT
        .iter()
        .enumerate()
        .map(|(i, t)| call(ports[i % 2], t))
        .collect();
    // One approval per distinct call: 1 + 6.
    let approvals = warden.approvals();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let pending = loop {
        let pending = approvals
            .list(Some(warden_approval_pending()), 100)
            .await
            .unwrap();
        if pending.len() >= 7 {
            break pending;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} held",
            pending.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        approvals
            .list(Some(warden_approval_pending()), 100)
            .await
            .unwrap()
            .len(),
        7,
        "one approval per distinct call"
    );
    for approval in &pending {
        approvals
            .approve_by_id(approval.id, "alice", None)
            .await
            .unwrap();
    }
    let mut ran = 0;
    let mut told = 0;
    for handle in same {
        let (is_error, text) = tokio::time::timeout(Duration::from_secs(60), handle)
            .await
            .expect("every identical call is answered")
            .unwrap();
        if is_error {
            assert!(text.contains("already used"), "{text}");
            told += 1;
        } else {
            assert!(text.contains("Europe/Rome"), "{text}");
            ran += 1;
        }
    }
    assert_eq!((ran, told), (1, 15), "the approved call ran exactly once");
    for handle in distinct {
        let (is_error, text) = handle.await.unwrap();
        assert!(!is_error, "{text}");
    }
    for mut gateway in gateways {
        let pid = gateway.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::task::spawn_blocking(move || gateway.wait().unwrap())
            .await
            .unwrap();
        assert!(status.success(), "{status:?}");
    }
    // The trail agrees: 7 runs in all, each approval executed once.
    let executed = approvals.list(None, 100).await.unwrap();
    assert_eq!(executed.len(), 7);
    assert!(executed.iter().all(|a| a.status.to_string() == "EXECUTED"));
}

fn migration_up() -> migration::Command {
    migration::Command::Up(None)
}

fn warden_keys_new(caller: &str) -> warden_keys::NewKey<'_> {
    warden_keys::NewKey {
        actor: "test",
        caller_id: caller,
        role: "developer",
        trust_level: 1,
        environment: "development",
        expires_at: None,
    }
}

fn warden_approval_pending() -> warden_approval::ApprovalStatus {
    warden_approval::ApprovalStatus::Pending
}
