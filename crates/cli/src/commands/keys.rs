use clap::Subcommand;
use warden_core::Settings;
use warden_keys::{KeyError, KeyInfo, NewKey};

use crate::{Outcome, output};

#[derive(Subcommand)]
pub(crate) enum Keys {
    /// Create a key for a caller; its plaintext is printed once.
    Create {
        /// The caller the key identifies (one key per caller).
        #[arg(long)]
        caller: String,
        /// Role from the policy file.
        #[arg(long)]
        role: String,
        /// Trust level, at most the role's maximum.
        #[arg(long)]
        trust_level: i16,
        /// Environment in the key's prefix (default: ENVIRONMENT).
        #[arg(long)]
        environment: Option<String>,
        /// Days until the key expires, 1 to 3650 (default: never).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: Option<u32>,
        /// Who creates it, for the audit trail (default: the OS user name).
        #[arg(long)]
        actor: Option<String>,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their hashes).
    List {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a caller's key, at once (cache included).
    Revoke {
        /// The caller whose key to revoke.
        caller: String,
        /// Who revokes it, for the audit trail (default: the OS user name).
        #[arg(long)]
        actor: Option<String>,
    },
    /// A caller's key and its history from the audit trail.
    Show {
        /// The caller.
        caller: String,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Verify a key read from standard input; exit 1 if it is refused.
    Verify {
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
}

fn rows(keys: &[KeyInfo]) -> Vec<Vec<String>> {
    keys.iter()
        .map(|k| {
            vec![
                k.caller_id.clone(),
                k.key_prefix.clone(),
                k.role.clone(),
                k.trust_level.to_string(),
                if k.is_active {
                    "active".into()
                } else {
                    "revoked".into()
                },
                output::time(k.created_at),
                output::opt_time(k.last_used_at),
                output::opt_time(k.expires_at),
            ]
        })
        .collect()
}

const HEADERS: [&str; 8] = [
    "CALLER",
    "PREFIX",
    "ROLE",
    "TRUST",
    "STATE",
    "CREATED",
    "LAST USED",
    "EXPIRES",
];

pub(crate) async fn run(settings: &Settings, cmd: Keys) -> anyhow::Result<Outcome> {
    let warden = super::connect_migrated(settings).await?;
    let keys = warden.keys()?;
    let outcome = match cmd {
        Keys::Create {
            caller,
            role,
            trust_level,
            environment,
            expires_in_days,
            actor,
            json,
        } => {
            super::seed::load_policy(settings)?.check(&role, trust_level)?;
            let environment =
                environment.unwrap_or_else(|| settings.environment.as_str().to_owned());
            let expires_at =
                expires_in_days.map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)));
            let actor = output::actor(actor);
            let created = keys
                .create(&NewKey {
                    actor: &actor,
                    caller_id: &caller,
                    role: &role,
                    trust_level,
                    environment: &environment,
                    expires_at,
                })
                .await?;
            if json {
                output::json(
                    &serde_json::json!({"key": created.info, "api_key": created.plaintext.expose()}),
                );
            } else {
                output::table(&HEADERS, &rows(std::slice::from_ref(&created.info)));
                output::line("");
                output::line("API key (shown once — store it now):");
                output::line(created.plaintext.expose());
            }
            Outcome::Success
        }
        Keys::List { json } => {
            let all = keys.list().await?;
            if json {
                output::json(&all);
            } else {
                output::table(&HEADERS, &rows(&all));
            }
            Outcome::Success
        }
        Keys::Show { caller, json } => {
            let Some(info) = keys.find_by_caller(&caller).await? else {
                output::error(&format!("no API key for caller {caller:?}"));
                return Ok(Outcome::Failed);
            };
            let history: Vec<_> = warden
                .audit()
                .query()
                .list_by_request_id(&format!("api_key:{caller}"))
                .await?
                .into_iter()
                .filter(|e| {
                    e.kind() == warden_audit::EventKind::Admin && e.tool_name() == Some("api_key")
                })
                .collect();
            if json {
                output::json(&serde_json::json!({"key": info, "history": history}));
            } else {
                output::table(&HEADERS, &rows(std::slice::from_ref(&info)));
                output::line("");
                output::line("history (audit trail):");
                for event in &history {
                    output::line(&format!(
                        "  {}  {:<12} by {:<16} leaf {}",
                        output::time(event.timestamp()),
                        event.method(),
                        event.caller_id(),
                        event
                            .inclusion()
                            .and_then(|i| i.leaf_index)
                            .map_or_else(|| "pending".to_owned(), |l| l.to_string())
                    ));
                }
            }
            Outcome::Success
        }
        Keys::Revoke { caller, actor } => {
            let info = keys.revoke(&caller, &output::actor(actor)).await?;
            output::line(&format!(
                "revoked the key of {} ({})",
                info.caller_id, info.key_prefix
            ));
            Outcome::Success
        }
        Keys::Verify { json } => {
            let presented = output::read_secret("API key")?;
            match keys.verify(&presented).await {
                Ok(v) => {
                    if json {
                        output::json(&v);
                    } else {
                        output::line(&format!(
                            "valid: caller {} role {} trust level {} ({})",
                            v.caller_id, v.role, v.trust_level, v.environment
                        ));
                    }
                    Outcome::Success
                }
                Err(e @ (KeyError::Invalid | KeyError::Revoked | KeyError::Expired)) => {
                    if json {
                        output::json(&serde_json::json!({"valid": false, "reason": e.to_string()}));
                    }
                    output::error(&e);
                    Outcome::Failed
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    warden.close().await?;
    Ok(outcome)
}
