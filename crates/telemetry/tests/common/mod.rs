//! The flow the telemetry tests export: what a gateway does on one request.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;
use warden_approval::{ApprovalRequest, CallBinding, IssueOutcome};
use warden_audit::{AuditEvent, Decision, ToolCall};
use warden_cache::{FailMode, RateLimit, RateLimiter};
use warden_core::{Settings, Warden};
use warden_keys::NewKey;

/// Settings for `database_url` (and Redis when given), fast bcrypt.
pub fn settings(
    database_url: &str,
    redis: Option<(&str, &str)>,
    spill: &std::path::Path,
) -> Settings {
    let mut vars: HashMap<&str, String> = HashMap::from([
        ("DATABASE_URL", database_url.to_owned()),
        ("BCRYPT_COST", "4".to_owned()),
        ("AUDIT_SPILL_PATH", spill.display().to_string()),
    ]);
    if let Some((url, prefix)) = redis {
        vars.insert("REDIS_URL", url.to_owned());
        vars.insert("CACHE_KEY_PREFIX", prefix.to_owned());
    }
    Settings::from_lookup(|name| vars.get(name).cloned()).unwrap()
}

/// Everything secret the flow handled: none may reach an exported byte.
pub struct Secrets {
    pub api_key: String,
    pub api_key_secret: String,
    pub approval_token: String,
    pub raw_args: Vec<&'static str>,
}

impl Secrets {
    pub fn all(&self) -> Vec<String> {
        let mut all = vec![
            self.api_key.clone(),
            self.api_key_secret.clone(),
            self.approval_token.clone(),
        ];
        all.extend(self.raw_args.iter().map(|s| (*s).to_owned()));
        all
    }
}

/// Migrates, then: a key created and verified twice (bcrypt, then the
/// cache), a cache miss and a hit, a held call issued, checked, approved and consumed, three
/// rate-limit decisions, and two audit events (one with secrets in its
/// arguments) written by a logger.
pub async fn gateway_flow(storage: &Warden) -> Secrets {
    migration::run(storage.database(), migration::Command::Up(None))
        .await
        .unwrap();
    let keys = storage.keys().unwrap();
    let created = keys
        .create(&NewKey {
            actor: "test",
            caller_id: "agent-7",
            role: "developer",
            trust_level: 2,
            environment: "development",
            expires_at: None,
        })
        .await
        .unwrap();
    let verified = keys.verify(created.plaintext.expose()).await.unwrap();
    keys.verify(created.plaintext.expose()).await.unwrap();
    assert!(
        keys.verify("wdn_development_000000000000_nope")
            .await
            .is_err()
    );

    // A gateway's own cached value: a miss, then a hit.
    let cached: Option<u32> = storage.cache().get_json("policy-version").await.unwrap();
    assert_eq!(cached, None);
    let ttl = warden_cache::Ttl::from_secs(60).unwrap();
    storage
        .cache()
        .set_json("policy-version", &7u32, ttl)
        .await
        .unwrap();
    let cached: Option<u32> = storage.cache().get_json("policy-version").await.unwrap();
    assert_eq!(cached, Some(7));

    let limiter = RateLimiter::new(
        storage.cache().clone(),
        "per-caller",
        RateLimit::new(2, Duration::from_secs(60)).unwrap(),
        FailMode::Closed,
    );
    let decisions = [
        limiter.check("agent-7").await.unwrap().allowed,
        limiter.check("agent-7").await.unwrap().allowed,
        limiter.check("agent-7").await.unwrap().allowed,
    ];
    assert_eq!(decisions, [true, true, false]);

    let raw_args = vec!["sk-live-4f9a8b7c6d5e4f3a2b1c0d9e", "hunter2-prod-password"];
    let logger = storage.audit().logger();
    let mut held = None;
    for (i, (tool, args, decision)) in [
        (
            "fs.read",
            json!({"path": "/srv/README.md"}),
            Decision::Allow,
        ),
        (
            "db.drop_table",
            json!({"table": "orders", "auth": {"token": raw_args[0], "password": raw_args[1]}}),
            Decision::RequireApproval,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let request_id = format!("otel-{i}");
        let event = AuditEvent::record(
            &ToolCall {
                request_id: &request_id,
                caller_id: &verified.caller_id,
                api_key_id: Some(verified.key_id),
                method: "tools/call",
                tool_name: Some(tool),
                raw_args: (&args).into(),
                decision,
                reason: Some("test policy"),
                risk_labels: &[],
                status_code: None,
                latency_ms: Some(2),
                timestamp: None,
            },
            storage.redactor(),
        )
        .unwrap();
        if decision == Decision::RequireApproval {
            held = Some((request_id, event.clone()));
        }
        logger.log(event);
    }
    logger.flush().await.unwrap();

    let (request_id, event) = held.unwrap();
    let approvals = storage.approvals();
    let IssueOutcome::Issued { token, .. } = approvals
        .issue(&ApprovalRequest {
            request_id,
            caller_id: verified.caller_id.clone(),
            tool_name: "db.drop_table".into(),
            sanitized_tool_call: event.sanitized_args().clone(),
            raw_args_hash: event.raw_args_hash().to_owned(),
            risk_labels: vec!["destructive".into()],
            policy_version: "v1".into(),
            ttl: None,
        })
        .await
        .unwrap()
    else {
        panic!("a fresh request is issued");
    };
    approvals.check(token.expose()).await.unwrap();
    approvals
        .approve(token.expose(), "operator-1", Some("fine"))
        .await
        .unwrap();
    approvals
        .consume(
            token.expose(),
            &CallBinding {
                caller_id: verified.caller_id.clone(),
                tool_name: "db.drop_table".into(),
                raw_args_hash: event.raw_args_hash().to_owned(),
                policy_version: "v1".into(),
            },
        )
        .await
        .unwrap();
    logger.shutdown().await.unwrap();
    let api_key = created.plaintext.expose().to_owned();
    // `wdn_<env>_<lookup>_<secret>`: the secret may itself contain '_'.
    let api_key_secret = api_key.splitn(4, '_').nth(3).unwrap().to_owned();
    assert!(api_key_secret.len() >= 32, "the whole secret part");
    Secrets {
        api_key,
        api_key_secret,
        approval_token: token.expose().to_owned(),
        raw_args,
    }
}
