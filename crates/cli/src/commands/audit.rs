use clap::Subcommand;
use warden_audit::{AuditEvent, ChainHead, Verification, VerifyOptions, verify};
use warden_core::Settings;

use crate::{Outcome, output};

#[derive(Subcommand)]
pub(crate) enum Audit {
    /// The newest events.
    Tail {
        /// How many.
        #[arg(long, short = 'n', default_value_t = 20)]
        limit: u64,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// One event, by the gateway's request id.
    Show {
        /// The request id.
        request_id: String,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recompute the hash chain; exit 1 and name the first break if broken.
    Verify {
        /// First seq to check.
        #[arg(long)]
        from: Option<i64>,
        /// Last seq to check.
        #[arg(long)]
        to: Option<i64>,
        /// A head exported earlier, as SEQ:HASH (from `warden audit checkpoint`).
        #[arg(long)]
        checkpoint: Option<String>,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the chain head as SEQ:HASH, to keep outside the database.
    Checkpoint,
}

fn rows(events: &[AuditEvent]) -> Vec<Vec<String>> {
    events
        .iter()
        .map(|e| {
            vec![
                e.chain().map_or_else(|| "-".into(), |c| c.seq.to_string()),
                output::time(e.timestamp()),
                e.request_id().to_owned(),
                e.caller_id().to_owned(),
                e.tool_name().unwrap_or("-").to_owned(),
                e.decision().to_string(),
                e.redaction_flags().len().to_string(),
            ]
        })
        .collect()
}

fn parse_checkpoint(text: &str) -> anyhow::Result<ChainHead> {
    let (seq, hash) = text
        .split_once(':')
        .ok_or_else(|| anyhow::anyhow!("--checkpoint must be SEQ:HASH"))?;
    let seq = seq
        .parse()
        .map_err(|_| anyhow::anyhow!("--checkpoint: {seq:?} is not a seq number"))?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        anyhow::bail!("--checkpoint: the hash must be 64 hex characters");
    }
    Ok(ChainHead {
        seq,
        hash: hash.to_ascii_lowercase(),
    })
}

pub(crate) async fn run(settings: &Settings, cmd: Audit) -> anyhow::Result<Outcome> {
    let storage = super::connect_migrated(settings).await?;
    let query = storage.audit_query();
    let outcome = match cmd {
        Audit::Tail { limit, json } => {
            let events = query.list_recent(limit).await?;
            if json {
                output::json(&events);
            } else {
                output::table(
                    &[
                        "SEQ", "TIME", "REQUEST", "CALLER", "TOOL", "DECISION", "REDACTED",
                    ],
                    &rows(&events),
                );
            }
            Outcome::Success
        }
        Audit::Show { request_id, json } => match query.get_by_request_id(&request_id).await? {
            Some(event) => {
                if json {
                    output::json(&event);
                } else {
                    output::table(
                        &[
                            "SEQ", "TIME", "REQUEST", "CALLER", "TOOL", "DECISION", "REDACTED",
                        ],
                        &rows(std::slice::from_ref(&event)),
                    );
                    output::line(&format!(
                        "reason:          {}",
                        event.reason().unwrap_or("-")
                    ));
                    output::line(&format!("raw args sha256: {}", event.raw_args_hash()));
                    output::line(&format!("sanitized args:  {}", event.sanitized_args()));
                    for flag in event.redaction_flags() {
                        output::line(&format!("redacted:        {} ({})", flag.path, flag.reason));
                    }
                }
                Outcome::Success
            }
            None => {
                output::error(&format!("no audit event with request id {request_id:?}"));
                Outcome::Failed
            }
        },
        Audit::Verify {
            from,
            to,
            checkpoint,
            json,
        } => {
            let options = VerifyOptions {
                from_seq: from,
                to_seq: to,
                checkpoint: checkpoint.as_deref().map(parse_checkpoint).transpose()?,
            };
            let verdict = verify(&storage.db, settings.audit_chain_key.as_ref(), &options).await?;
            if json {
                output::json(&verdict);
            }
            match verdict {
                Verification::Valid { checked, head } => {
                    if !json {
                        output::line(&format!(
                            "PASS  {checked} rows verified; head {}:{}",
                            head.seq, head.hash
                        ));
                    }
                    Outcome::Success
                }
                Verification::Broken(b) => {
                    if !json {
                        output::line(&format!("FAIL  {b}"));
                    }
                    Outcome::Failed
                }
            }
        }
        Audit::Checkpoint => {
            let head = warden_audit::checkpoint(&storage.db).await?;
            output::line(&format!("{}:{}", head.seq, head.hash));
            Outcome::Success
        }
    };
    storage.close().await?;
    Ok(outcome)
}
