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
/// The check is bounded by `AUDIT_STEP_TIMEOUT_MS` (a paused server is an
/// error, not a hang).
pub(crate) async fn connect_migrated(settings: &Settings) -> anyhow::Result<Storage> {
    let storage = Storage::connect(settings).await?;
    let limit = settings.audit_step_timeout;
    let pending: Vec<String> = tokio::time::timeout(limit, migration::status(&storage.db))
        .await
        .map_err(|_| anyhow::anyhow!("the database did not answer within {limit:?}"))??
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
/// transaction of its own, bounded by `AUDIT_STEP_TIMEOUT_MS`.
pub(crate) async fn record_admin(
    storage: &Storage,
    event: warden_audit::AuditEvent,
) -> anyhow::Result<()> {
    let limit = storage.settings.audit_step_timeout;
    tokio::time::timeout(limit, async {
        let txn = warden_audit::begin_write(&storage.db).await?;
        warden_audit::record_in(&txn, &[event]).await?;
        txn.commit().await?;
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("the audit trail did not answer within {limit:?}"))?
}
