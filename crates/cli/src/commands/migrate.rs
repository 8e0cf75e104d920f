use migration::{CliCommand, Command};
use serde_json::json;
use warden_audit::{AdminAction, AuditEvent, Integrator};
use warden_core::{Environment, Settings, Storage};

use crate::{Outcome, output};

pub(crate) async fn run(
    settings: &Settings,
    action: Option<CliCommand>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let storage = Storage::connect(settings).await?;
    let confirmation = action
        .as_ref()
        .and_then(|a| a.confirmation().map(str::to_owned));
    let command = Command::from(action);
    let inventory = if command.is_destructive() {
        let inventory = migration::inventory(&storage.db).await?;
        output::notice(inventory.to_string().trim_end());
        if let Err(refusal) = migration::confirm_destructive(
            command,
            settings.environment == Environment::Production,
            &inventory,
            confirmation.as_deref(),
        ) {
            output::error(&refusal);
            storage.close().await?;
            return Ok(Outcome::Failed);
        }
        Some(inventory)
    } else {
        None
    };
    if let Some(inventory) = &inventory {
        // Recorded before it runs: a command that drops the trail still
        // leaves its record wherever the trail survives (a backup, a copy).
        let before = migration::status(&storage.db).await?;
        record_in_trail(&storage, command, inventory, &before).await;
    }
    let states = migration::run(&storage.db, command).await?;
    storage.close().await?;
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
    storage: &Storage,
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
            &storage.redactor,
        )?;
        super::record_admin(storage, event).await.map_err(|e| {
            warden_audit::AuditError::Database {
                reason: e.to_string(),
            }
        })?;
        Integrator::new(storage.db.clone(), storage.settings.integrator_config())
            .integrate_all()
            .await?;
        Ok::<_, warden_audit::AuditError>(())
    }
    .await;
    match recorded {
        Ok(()) => output::notice(&format!("recorded in the audit trail as {request_id}")),
        Err(e) => output::error(&format!("not recorded in the audit trail: {e}")),
    }
}
