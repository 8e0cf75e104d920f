use migration::{CliCommand, Command};
use serde_json::json;
use warden_audit::{AdminAction, AuditEvent};
use warden_core::{Environment, Settings, Warden};

use crate::{Outcome, output};

pub(crate) async fn run(
    settings: &Settings,
    action: Option<CliCommand>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let warden = Warden::connect(settings).await?;
    let confirmation = action
        .as_ref()
        .and_then(|a| a.confirmation().map(str::to_owned));
    let command = Command::from(action);
    let inventory = if command.is_destructive() {
        let inventory = warden.migrations().inventory().await?;
        output::notice(inventory.to_string().trim_end());
        if let Err(refusal) = migration::confirm_destructive(
            command,
            settings.environment == Environment::Production,
            &inventory,
            confirmation.as_deref(),
        ) {
            output::error(&refusal);
            warden.close().await?;
            return Ok(Outcome::Failed);
        }
        Some(inventory)
    } else {
        None
    };
    if let Some(inventory) = &inventory {
        // Recorded before it runs: a command that drops the trail still
        // leaves its record wherever the trail survives (a backup, a copy).
        let before = warden.migrations().status().await?;
        record_in_trail(&warden, command, inventory, &before).await;
    }
    let states = warden.migrations().run(command).await?;
    warden.close().await?;
    if json {
        output::json(&states);
    } else {
        output::line(&migration::status_table(&states));
    }
    Ok(Outcome::Success)
}

/// Records a destructive migration in the audit trail, before it runs, when
/// the trail exists. Failing to record is reported, never fatal.
async fn record_in_trail(
    warden: &Warden,
    command: Command,
    inventory: &migration::Inventory,
    states: &[migration::MigrationState],
) {
    let trail_exists = states
        .iter()
        .any(|s| s.applied && s.name.contains("audit_transparency_log"));
    if !trail_exists {
        output::notice("no audit trail in this database to record this in");
        return;
    }
    let actor = output::actor(None);
    let args = json!({
        "command": command.name(),
        "steps": match command { Command::Down(n) => json!(n), _ => json!(null) },
        "database": inventory.database,
        "tables_before": inventory.tables,
        "applied_before": states.iter().filter(|s| s.applied).count(),
    });
    let request_id = format!("admin-migrate-{}", uuid::Uuid::now_v7());
    let recorded = async {
        let event = AuditEvent::admin(
            &AdminAction {
                actor: &actor,
                action: "schema.migrate",
                resource_type: "schema",
                resource_id: &inventory.database,
                request_id: Some(&request_id),
                args_hash: None,
                note: Some("confirmed with --yes-i-am-sure"),
                summary: &args,
            },
            warden.redactor(),
        )?;
        super::record_admin(warden, event).await.map_err(|e| {
            warden_audit::AuditError::Database {
                reason: e.to_string(),
            }
        })?;
        warden.audit().integrator().integrate_all().await?;
        Ok::<_, warden_audit::AuditError>(())
    }
    .await;
    match recorded {
        Ok(()) => output::notice(&format!("recorded in the audit trail as {request_id}")),
        Err(e) => output::error(&format!("not recorded in the audit trail: {e}")),
    }
}
