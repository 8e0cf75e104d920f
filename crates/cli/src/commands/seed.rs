use warden_core::Settings;
use warden_keys::{KeyError, NewKey, Policy};

use crate::{Outcome, output};

/// Options of `warden seed`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Who seeds, for the audit trail (default: the OS user name).
    #[arg(long)]
    actor: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    json: bool,
}

const DEV_CALLER: &str = "dev-agent";
const DEV_ROLE: &str = "developer";
const DEV_TRUST: i16 = 2;

pub(crate) fn load_policy(settings: &Settings) -> anyhow::Result<Policy> {
    let (text, name) = settings.policy_source()?;
    Policy::from_yaml(&text).map_err(|e| anyhow::anyhow!("{name}: {e}"))
}

fn policy_name(settings: &Settings) -> String {
    settings.policy_path.as_ref().map_or_else(
        || "built-in default".to_owned(),
        |p| p.display().to_string(),
    )
}

pub(crate) async fn run(settings: &Settings, args: Args) -> anyhow::Result<Outcome> {
    let policy = load_policy(settings)?;
    policy.check(DEV_ROLE, DEV_TRUST)?;
    let warden = super::connect_migrated(settings).await?;
    let keys = warden.keys()?;
    let actor = output::actor(args.actor.clone());
    let created = match keys
        .create(&NewKey {
            actor: &actor,
            caller_id: DEV_CALLER,
            role: DEV_ROLE,
            trust_level: DEV_TRUST,
            environment: settings.environment.as_str(),
            expires_at: None,
        })
        .await
    {
        Ok(created) => Some(created),
        Err(KeyError::AlreadyExists { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // The policy load is an administrative act too.
    let summary = serde_json::json!({
        "source": policy_name(settings),
        "roles": policy.roles.len(),
        "trust_levels": policy.trust_levels.len(),
        "dev_key_created": created.is_some(),
    });
    let event = warden_audit::AuditEvent::admin(
        &warden_audit::AdminAction {
            actor: &actor,
            action: "policy.load",
            resource_type: "policy",
            resource_id: &policy_name(settings),
            request_id: None,
            args_hash: None,
            note: None,
            summary: &summary,
        },
        &policy.redactor()?,
    )?;
    // Recorded after the key's own (atomic) event; a failure here is
    // reported, never allowed to swallow the plaintext printed below.
    let recorded = super::record_admin(&warden, event).await;
    if args.json {
        output::json(&serde_json::json!({
            "policy": {"roles": policy.roles.len(), "trust_levels": policy.trust_levels.len()},
            "dev_key_created": created.is_some(),
            "api_key": created.as_ref().map(|c| c.plaintext.expose()),
        }));
    } else {
        output::line(&format!(
            "policy {}: {} roles, {} trust levels",
            policy_name(settings),
            policy.roles.len(),
            policy.trust_levels.len()
        ));
        match &created {
            Some(c) => {
                output::line(&format!(
                    "created the {DEV_CALLER} key (role {DEV_ROLE}, trust level {DEV_TRUST})."
                ));
                output::line("Its plaintext is shown once, now:");
                output::line(c.plaintext.expose());
            }
            None => output::line(&format!(
                "the {DEV_CALLER} key already exists (its plaintext cannot be shown again)"
            )),
        }
    }
    if let Err(e) = recorded {
        output::error(&format!("policy load not recorded in the audit trail: {e}"));
    }
    warden.close().await?;
    Ok(Outcome::Success)
}
