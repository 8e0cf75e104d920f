//! One module per `warden` subcommand.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod demo;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod migrate;
pub(crate) mod seed;

use warden_core::{Settings, Storage};

/// Connects and checks the schema is migrated, with an actionable message.
pub(crate) async fn connect_migrated(settings: &Settings) -> anyhow::Result<Storage> {
    let storage = Storage::connect(settings).await?;
    let pending: Vec<String> = migration::status(&storage.db)
        .await?
        .into_iter()
        .filter(|m| !m.applied)
        .map(|m| m.name)
        .collect();
    if !pending.is_empty() {
        anyhow::bail!(
            "the database is not migrated ({} pending): run `warden migrate up`",
            pending.len()
        );
    }
    Ok(storage)
}

/// Records a standalone admin event (one not tied to a library change) in a
/// transaction of its own.
pub(crate) async fn record_admin(
    storage: &Storage,
    event: warden_audit::AuditEvent,
) -> anyhow::Result<()> {
    let txn = warden_audit::begin_write(&storage.db).await?;
    warden_audit::record_in(&txn, &[event]).await?;
    txn.commit().await?;
    Ok(())
}
