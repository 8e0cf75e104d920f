use clap::Subcommand;
use warden_approval::{Approval, ApprovalError, ApprovalStatus};
use warden_core::Settings;

use crate::{Outcome, output};

#[derive(Subcommand)]
pub(crate) enum Approvals {
    /// The newest approvals.
    List {
        /// Only this status (pending, approved, denied, expired).
        #[arg(long)]
        status: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// One approval, by id.
    Show {
        /// The approval's id.
        id: uuid::Uuid,
        /// Print machine-readable JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve the approval whose token is read from standard input.
    Approve(Decide),
    /// Deny the approval whose token is read from standard input.
    Deny(Decide),
    /// Mark pending approvals past their expiry as EXPIRED.
    Expire,
}

/// Options of approve / deny.
#[derive(clap::Args)]
pub(crate) struct Decide {
    /// Who decides (recorded).
    #[arg(long)]
    approver: String,
    /// A note recorded with the decision.
    #[arg(long)]
    note: Option<String>,
}

fn rows(approvals: &[Approval]) -> Vec<Vec<String>> {
    approvals
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.request_id.clone(),
                a.caller_id.clone(),
                a.tool_name.clone(),
                a.effective_status(chrono::Utc::now()).to_string(),
                output::time(a.expires_at),
                a.result
                    .as_ref()
                    .and_then(|r| r.approver_id.clone())
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect()
}

const HEADERS: [&str; 7] = [
    "ID", "REQUEST", "CALLER", "TOOL", "STATUS", "EXPIRES", "APPROVER",
];

pub(crate) async fn run(settings: &Settings, cmd: Approvals) -> anyhow::Result<Outcome> {
    let warden = super::connect_migrated(settings).await?;
    let approvals = warden.approvals();
    let outcome = match cmd {
        Approvals::List {
            status,
            limit,
            json,
        } => {
            let status: Option<ApprovalStatus> = status.as_deref().map(str::parse).transpose()?;
            let list = approvals.list(status, limit).await?;
            if json {
                output::json(&list);
            } else {
                output::table(&HEADERS, &rows(&list));
            }
            Outcome::Success
        }
        Approvals::Show { id, json } => {
            let a = approvals.get(id).await?;
            // The approval's events in the audit trail (issue, decision, use).
            let id_text = id.to_string();
            let events: Vec<_> = warden
                .audit()
                .query()
                .list_by_request_id(&a.request_id)
                .await?
                .into_iter()
                .filter(|e| {
                    e.kind() == warden_audit::EventKind::Admin
                        && e.sanitized_args()["resource"]["id"] == id_text.as_str()
                })
                .collect();
            if json {
                output::json(&serde_json::json!({"approval": a, "events": events}));
            } else {
                output::table(&HEADERS, &rows(std::slice::from_ref(&a)));
                output::line(&format!("tool call:     {}", a.tool_call));
                output::line(&format!("raw args hash: {}", a.raw_args_hash));
                output::line(&format!("risk labels:   {}", a.risk_labels.join(", ")));
                output::line("audit trail:");
                for e in &events {
                    let signed = e.inclusion().and_then(|i| i.checkpoint_size).map_or_else(
                        || "not yet in a checkpoint".to_owned(),
                        |s| format!("in the signed checkpoint of {s} leaves"),
                    );
                    output::line(&format!(
                        "  {}  {:<18} by {:<16} {signed}",
                        output::time(e.timestamp()),
                        e.method(),
                        e.caller_id()
                    ));
                }
            }
            Outcome::Success
        }
        Approvals::Approve(d) => decide(&approvals, d, true).await?,
        Approvals::Deny(d) => decide(&approvals, d, false).await?,
        Approvals::Expire => {
            let n = approvals.expire_stale(1_000).await?;
            output::line(&format!("{n} approval(s) expired"));
            Outcome::Success
        }
    };
    warden.close().await?;
    Ok(outcome)
}

async fn decide(
    approvals: &warden_approval::ApprovalManager,
    d: Decide,
    approve: bool,
) -> anyhow::Result<Outcome> {
    let token = output::read_secret("approval token")?;
    let result = if approve {
        approvals
            .approve(&token, &d.approver, d.note.as_deref())
            .await
    } else {
        approvals.deny(&token, &d.approver, d.note.as_deref()).await
    };
    match result {
        Ok(a) => {
            output::line(&format!("{} {} (request {})", a.status, a.id, a.request_id));
            Ok(Outcome::Success)
        }
        Err(
            e @ (ApprovalError::NotFound
            | ApprovalError::AlreadyDecided { .. }
            | ApprovalError::Expired),
        ) => {
            output::error(&e);
            Ok(Outcome::Failed)
        }
        Err(e) => Err(e.into()),
    }
}
