//! Storage work that outlives its caller: run in its own task and bounded by
//! a timeout, so a caller that is cancelled or gives up never leaves a
//! transaction (or a lock) half-done — the task commits or rolls back on its
//! own.

use std::future::Future;
use std::time::Duration;

use crate::AuditError;

/// Runs `work` in its own task and waits at most `timeout` for it. `what`
/// names the work in the error when the task itself fails.
pub(crate) async fn detached<T, F>(what: &str, timeout: Duration, work: F) -> Result<T, AuditError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, AuditError>> + Send + 'static,
{
    match tokio::time::timeout(timeout, tokio::spawn(work)).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(AuditError::Database {
            reason: format!("{what} task failed: {join}"),
        }),
        Err(_) => Err(AuditError::Timeout { after: timeout }),
    }
}

/// The default bound on one storage step (one page or one query) of a
/// long-running read such as verify or export: generous for a page of a
/// large log, short of "hangs forever" on a paused or blackholed server.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits at most `limit` for one storage step; past it,
/// [`AuditError::Timeout`].
pub(crate) async fn step<T, E>(
    limit: Duration,
    work: impl Future<Output = Result<T, E>>,
) -> Result<T, AuditError>
where
    AuditError: From<E>,
{
    warden_common::within(limit, async { work.await.map_err(AuditError::from) }).await
}
