//! `warden demo`: the whole flow, end to end, on whatever storage the
//! settings name — by default a local SQLite file and the in-process cache,
//! so it runs on a machine with no services at all.

use std::time::Instant;

use serde_json::json;
use warden_approval::{ApprovalRequest, IssueOutcome};
use warden_audit::{
    AuditEvent, CheckpointSigner, Decision, InclusionBundle, ToolCall, Verification, VerifyOptions,
};
use warden_core::{Settings, SettingsError, Warden};
use warden_keys::NewKey;

use crate::{Outcome, output};

/// Options of `warden demo`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// SQLite file used when DATABASE_URL is not set.
    #[arg(long, default_value = "warden-demo.db")]
    sqlite_file: String,
}

/// The environment's settings, with the embedded default filled in: a local
/// SQLite file when DATABASE_URL is unset, a fast bcrypt cost for the demo
/// key unless BCRYPT_COST is set, and a spill file in the temp directory.
pub(crate) fn settings(args: &Args) -> Result<Settings, SettingsError> {
    Settings::load_dotenv()?;
    let database = format!("sqlite://{}?mode=rwc", args.sqlite_file);
    let spill = std::env::temp_dir().join(format!("warden-demo-{}.spill", std::process::id()));
    Settings::from_lookup(|name| {
        // The demo's spill file is its own: never a path from the
        // environment, where a running gateway may keep unreplayed events.
        if name == "AUDIT_SPILL_PATH" {
            return Some(spill.display().to_string());
        }
        let from_env = std::env::var_os(name)
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|v| !v.is_empty());
        from_env.or_else(|| match name {
            "DATABASE_URL" => Some(database.clone()),
            "BCRYPT_COST" => Some("10".into()),
            _ => None,
        })
    })
}

fn step(n: u32, text: &str) {
    output::line(&format!("\n[{n}] {text}"));
}

/// The demo's own checkpoint key when none is configured: kept beside the
/// demo database, so that later runs on the same file verify earlier
/// checkpoints too.
fn demo_signer(settings: &Settings, args: &Args) -> anyhow::Result<CheckpointSigner> {
    if let Some(key) = &settings.audit_signing_key {
        return Ok(key.clone());
    }
    let path = std::path::PathBuf::from(format!("{}.audit-key", args.sqlite_file));
    if path.exists() {
        return Ok(CheckpointSigner::load(&path)?);
    }
    let (secret, signer) = CheckpointSigner::generate(&settings.audit_log_origin)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    std::io::Write::write_all(&mut file, secret.as_bytes())?;
    Ok(signer)
}

pub(crate) async fn run(settings: &Settings, args: Args) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    output::line("Warden demo");
    output::line(&format!(
        "database: {}   cache: {}",
        settings.database_url,
        if settings.redis_url.is_some() {
            "redis"
        } else {
            "in-process (embedded default)"
        }
    ));

    step(1, "migrate the schema");
    let warden = Warden::connect(settings).await?;
    let states = warden
        .migrations()
        .run(migration::Command::Up(None))
        .await?;
    output::line(&format!(
        "    {} migrations applied",
        states.iter().filter(|s| s.applied).count()
    ));

    step(
        2,
        "create an API key (its plaintext is shown once) and verify it",
    );
    let keys = warden.keys()?;
    let caller = format!(
        "demo-agent-{}",
        &uuid::Uuid::now_v7().simple().to_string()[20..]
    );
    let created = keys
        .create(&NewKey {
            actor: "demo",
            caller_id: &caller,
            role: "developer",
            trust_level: 2,
            environment: settings.environment.as_str(),
            expires_at: None,
        })
        .await?;
    output::line(&format!(
        "    caller {caller}: {}",
        created.plaintext.expose()
    ));
    let t = Instant::now();
    let verified = keys.verify(created.plaintext.expose()).await?;
    let bcrypt_time = t.elapsed();
    let t = Instant::now();
    keys.verify(created.plaintext.expose()).await?;
    let cached_time = t.elapsed();
    output::line(&format!(
        "    verified as {} (role {}, trust {}): bcrypt {:.1} ms, then cached {:.3} ms",
        verified.caller_id,
        verified.role,
        verified.trust_level,
        bcrypt_time.as_secs_f64() * 1e3,
        cached_time.as_secs_f64() * 1e3
    ));

    step(3, "log audited tool calls (one carries secrets)");
    // Checkpoints are signed with the configured key, or with the demo's own
    // key, so that the proof below can be checked.
    let signer = demo_signer(settings, &args)?;
    let mut logger_config = warden.audit().logger_config();
    if let Some(integrator) = logger_config.integrator.as_mut() {
        integrator.signer = Some(signer.clone());
    }
    let logger = warden.audit().logger_with(logger_config);
    let redactor = warden.redactor().clone();
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    let calls = [
        (
            "fs.read",
            json!({"path": "/srv/app/README.md"}),
            Decision::Allow,
        ),
        (
            "http.get",
            json!({"url": "https://api.example.com/items", "headers": {"Authorization": "Bearer sk-live-4f9a8b7c6d5e4f3a2b1c0d9e"}}),
            Decision::Allow,
        ),
        (
            "db.query",
            json!({"sql": "SELECT * FROM users", "connection": {"password": "hunter2-prod", "host": "db"}}),
            Decision::Allow,
        ),
        ("shell.exec", json!({"cmd": "rm -rf /"}), Decision::Deny),
        (
            "db.drop_table",
            json!({"table": "orders"}),
            Decision::RequireApproval,
        ),
    ];
    let mut secret_request = String::new();
    let mut held = None;
    for (i, (tool, args, decision)) in calls.iter().enumerate() {
        let request_id = format!("demo-{run_id}-{i}");
        let event = AuditEvent::record(
            &ToolCall {
                request_id: &request_id,
                caller_id: &verified.caller_id,
                api_key_id: Some(verified.key_id),
                method: "tools/call",
                tool_name: Some(tool),
                raw_args: args.into(),
                decision: *decision,
                reason: Some("demo policy"),
                risk_labels: if *decision == Decision::RequireApproval {
                    &["destructive"]
                } else {
                    &[]
                },
                status_code: (*decision == Decision::Allow).then_some(200),
                latency_ms: Some(3 + i as i64),
                timestamp: None,
            },
            &redactor,
        )?;
        if i == 2 {
            secret_request = request_id.clone();
        }
        if *decision == Decision::RequireApproval {
            held = Some((request_id.clone(), event.clone()));
        }
        logger.log(event);
    }
    let flushed = logger.flush().await?;
    output::line(&format!(
        "    {} events logged (spilled and waiting: {})",
        calls.len(),
        flushed.spilled_pending
    ));
    if let Some(stored) = warden
        .audit()
        .query()
        .get_by_request_id(&secret_request)
        .await?
    {
        output::line(&format!(
            "    stored args of db.query: {}",
            stored.sanitized_args()
        ));
        for flag in stored.redaction_flags() {
            output::line(&format!("      redacted {} ({})", flag.path, flag.reason));
        }
    }

    step(
        4,
        "hold the risky call for a human approval, then approve it",
    );
    let approvals = warden.approvals();
    let (held_request, held_event) = held.ok_or_else(|| anyhow::anyhow!("no held call"))?;
    let outcome = approvals
        .issue(&ApprovalRequest {
            request_id: held_request.clone(),
            caller_id: verified.caller_id.clone(),
            tool_name: held_event.tool_name().unwrap_or("unknown").to_owned(),
            sanitized_tool_call: held_event.sanitized_args().clone(),
            raw_args_hash: held_event.raw_args_hash().to_owned(),
            risk_labels: held_event.risk_labels().to_vec(),
            policy_version: "default".into(),
            ttl: None,
        })
        .await?;
    let IssueOutcome::Issued {
        id,
        token,
        expires_at,
    } = outcome
    else {
        anyhow::bail!("the held call already had an approval");
    };
    output::line(&format!(
        "    approval {id} pending until {} (token goes to the approver only)",
        output::time(expires_at)
    ));
    let pending = approvals.check(token.expose()).await?;
    output::line(&format!(
        "    check: {} — bound to args sha256 {}…",
        pending.status,
        &pending.raw_args_hash[..16]
    ));
    let decided = approvals
        .approve(
            token.expose(),
            "demo-operator",
            Some("approved in the demo"),
        )
        .await?;
    output::line(&format!("    {} by demo-operator", decided.status));
    // Right before running the call: consume the approval for this exact call.
    let binding = warden_approval::CallBinding {
        caller_id: verified.caller_id.clone(),
        tool_name: held_event.tool_name().unwrap_or("unknown").to_owned(),
        raw_args_hash: held_event.raw_args_hash().to_owned(),
        policy_version: "default".into(),
    };
    let consumed = approvals.consume(token.expose(), &binding).await?;
    let again = approvals.consume(token.expose(), &binding).await;
    output::line(&format!(
        "    consumed once: {} (a second use is refused: {})",
        consumed.status,
        again
            .err()
            .map_or_else(|| "NOT REFUSED".into(), |e| e.to_string())
    ));
    // The same call's second event: one request id, two events in the trail.
    let approved_event = AuditEvent::record(
        &ToolCall {
            request_id: &held_request,
            caller_id: &verified.caller_id,
            api_key_id: Some(verified.key_id),
            method: "tools/call",
            tool_name: held_event.tool_name(),
            raw_args: (&json!({"table": "orders"})).into(),
            decision: Decision::Approved,
            reason: Some("approved by demo-operator"),
            risk_labels: &["destructive"],
            status_code: Some(200),
            latency_ms: Some(12),
            timestamp: None,
        },
        &redactor,
    )?;
    logger.log(approved_event);
    let report = logger.shutdown().await?;

    step(
        5,
        "verify the transparency log, then prove one event to someone without the database",
    );
    let verifier = signer.verifier()?;
    let verdict = warden
        .audit()
        .verify(&VerifyOptions {
            verifier: Some(signer.verifier()?),
            ..VerifyOptions::default()
        })
        .await?;
    let mut ok = match &verdict {
        Verification::Valid {
            tree_size,
            rows_checked,
            checkpoints,
            ..
        } => {
            output::line(&format!(
                "    PASS: {tree_size} leaves, {rows_checked} rows recomputed, {checkpoints} signed checkpoints"
            ));
            true
        }
        Verification::Broken(b) => {
            output::line(&format!("    FAIL: {b}"));
            false
        }
    };
    let bundle = warden.audit().prove_inclusion(&secret_request).await?;
    let bundle_json = serde_json::to_string(&bundle)?;
    match InclusionBundle::verify_json(&bundle_json, &verifier) {
        Ok((b, cp)) => output::line(&format!(
            "    proof: request {} is leaf {} of the {}-leaf tree signed by {} ({} hashes, {} bytes)",
            b.event.request_id,
            b.leaf_index,
            cp.size,
            verifier.as_str(),
            b.proof.len(),
            bundle_json.len()
        )),
        Err(e) => {
            output::line(&format!("    proof FAILED: {e}"));
            ok = false;
        }
    }
    step(
        6,
        "put Warden's MCP gateway in front of an MCP server: one call allowed, one held and approved",
    );
    // The gateway's own audit logger signs checkpoints with the demo's key,
    // like the rest of the demo's log.
    let mut signed = settings.clone();
    signed.audit_signing_key = Some(signer.clone());
    let leg = async {
        let warden = Warden::connect(&signed).await?;
        let summary = super::demo_gateway::run(&warden, created.plaintext.expose()).await;
        warden.close().await?;
        summary
    };
    let gateway_leg = match leg.await {
        Ok(summary) => summary,
        Err(e) => {
            output::line(&format!("    gateway FAILED: {e}"));
            ok = false;
            "FAILED".into()
        }
    };

    if report.spilled_pending == 0 {
        // Only the demo's own, empty spill file; one holding events stays.
        let _ = std::fs::remove_file(&settings.audit_spill_path);
    }

    output::line("\nSummary");
    output::table(
        &["STEP", "RESULT"],
        &[
            vec!["schema".into(), format!("{} migrations", states.len())],
            vec![
                "api key".into(),
                format!(
                    "{} verified (cache hit {:.3} ms)",
                    created.plaintext.prefix(),
                    cached_time.as_secs_f64() * 1e3
                ),
            ],
            vec![
                "audit".into(),
                format!(
                    "{} events stored, {} waiting in spill",
                    calls.len() + 1,
                    report.spilled_pending
                ),
            ],
            vec![
                "approval".into(),
                format!("{} {}", decided.status, decided.id),
            ],
            vec!["gateway".into(), gateway_leg],
            vec![
                "log".into(),
                if ok {
                    "verified, proof checked offline".into()
                } else {
                    "BROKEN".into()
                },
            ],
            vec![
                "time".into(),
                format!("{:.2} s", started.elapsed().as_secs_f64()),
            ],
        ],
    );
    warden.close().await?;
    Ok(if ok && report.spilled_pending == 0 {
        Outcome::Success
    } else {
        Outcome::Failed
    })
}
