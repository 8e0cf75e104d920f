//! One module per `warden` subcommand.

pub(crate) mod approvals;
pub(crate) mod audit;
pub(crate) mod demo;
pub(crate) mod demo_gateway;
pub(crate) mod gateway;
pub(crate) mod health;
pub(crate) mod keys;
pub(crate) mod metrics;
pub(crate) mod migrate;
pub(crate) mod seed;
pub(crate) mod serve;

use warden_core::{Settings, Warden};

/// One storage step of a command, bounded by `AUDIT_STEP_TIMEOUT_MS`: a
/// typed timeout instead of a hang on a paused or unreachable database.
pub(crate) async fn bounded<T, E: Into<anyhow::Error>>(
    settings: &Settings,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(settings.audit_step_timeout, work).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err(warden_audit::AuditError::Timeout {
            after: settings.audit_step_timeout,
        }
        .into()),
    }
}

/// Connects and checks the schema is migrated, with an actionable message.
/// The check is a bounded step (a paused server is an error, not a hang).
pub(crate) async fn connect_migrated(settings: &Settings) -> anyhow::Result<Warden> {
    let warden = Warden::connect(settings).await?;
    let pending: Vec<String> = bounded(settings, warden.migrations().status())
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
    Ok(warden)
}

/// Records a standalone admin event (one not tied to a library change) in a
/// transaction of its own, as one bounded step.
pub(crate) async fn record_admin(
    warden: &Warden,
    event: warden_audit::AuditEvent,
) -> anyhow::Result<()> {
    Ok(warden.audit().record(&[event]).await?)
}
