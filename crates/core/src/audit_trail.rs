//! The audit trail as front ends use it: one handle over the database,
//! configured from [`Settings`] (spill file, batch size, chain and signing
//! keys, log origin, step timeouts).

use std::time::Duration;

use sea_orm::DatabaseConnection;
use warden_audit::{
    AuditError, AuditEvent, AuditLogger, AuditLoggerConfig, AuditQuery, InclusionBundle,
    Integrator, IntegratorConfig, Verification, VerifyOptions,
};

use crate::Settings;

/// Warden's audit trail: write events (through a logger or, for admin
/// actions that must not be lost, synchronously), read them, and work with
/// the transparency log over them (integrate, prove, verify, export).
/// Every read and write is bounded by `AUDIT_STEP_TIMEOUT_MS`.
#[derive(Debug, Clone)]
pub struct AuditTrail {
    db: DatabaseConnection,
    logger_config: AuditLoggerConfig,
    integrator_config: IntegratorConfig,
    step_timeout: Duration,
}

impl AuditTrail {
    pub(crate) fn new(db: DatabaseConnection, settings: &Settings) -> Self {
        Self {
            db,
            logger_config: settings.audit_logger_config(),
            integrator_config: settings.integrator_config(),
            step_timeout: settings.audit_step_timeout,
        }
    }

    /// Starts a logger configured from settings. Call `shutdown` on it
    /// before exiting: that is when spilled and queued events are written.
    pub fn logger(&self) -> AuditLogger {
        self.logger_with(self.logger_config.clone())
    }

    /// Starts a logger with `config` (the settings' one is
    /// [`logger_config`](Self::logger_config)).
    pub fn logger_with(&self, config: AuditLoggerConfig) -> AuditLogger {
        AuditLogger::start(self.db.clone(), config)
    }

    /// The logger configuration the settings give, to adjust before
    /// [`logger_with`](Self::logger_with).
    pub fn logger_config(&self) -> AuditLoggerConfig {
        self.logger_config.clone()
    }

    /// Reads of the trail (by caller, request, decision; keyset pages),
    /// each with its place in the transparency log.
    pub fn query(&self) -> AuditQuery {
        AuditQuery::new(self.db.clone()).with_timeout(self.step_timeout)
    }

    /// Writes `events` now, in one transaction, or returns why not: for
    /// records that must exist before the action they describe (a
    /// destructive migration, a revocation by an operator).
    pub async fn record(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        self.bounded(async {
            let txn = warden_audit::begin_write(&self.db).await?;
            warden_audit::record_in(&txn, events).await?;
            txn.commit().await?;
            Ok(())
        })
        .await
    }

    /// The transparency log's integrator (origin, signer, publisher from
    /// settings).
    pub fn integrator(&self) -> Integrator {
        self.integrator_with(self.integrator_config.clone())
    }

    /// An integrator with `config` (the settings' one is
    /// [`integrator_config`](Self::integrator_config)).
    pub fn integrator_with(&self, config: IntegratorConfig) -> Integrator {
        Integrator::new(self.db.clone(), config)
    }

    /// The integrator configuration the settings give.
    pub fn integrator_config(&self) -> IntegratorConfig {
        self.integrator_config.clone()
    }

    /// Checks the whole trail: chains, tree, checkpoints (see
    /// [`warden_audit::verify`]).
    pub async fn verify(&self, options: &VerifyOptions) -> Result<Verification, AuditError> {
        warden_audit::verify(&self.db, options).await
    }

    /// The latest signed checkpoint, as its note text, if any.
    pub async fn latest_checkpoint_note(&self) -> Result<Option<String>, AuditError> {
        self.bounded(warden_audit::latest_checkpoint_note(&self.db))
            .await
    }

    /// The inclusion proof bundle of a call's event (see
    /// [`warden_audit::prove_inclusion`]); it verifies offline.
    pub async fn prove_inclusion(&self, request_id: &str) -> Result<InclusionBundle, AuditError> {
        self.bounded(warden_audit::prove_inclusion(&self.db, request_id))
            .await
    }

    /// The consistency proof between two tree sizes, as hex hashes.
    pub async fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<String>, AuditError> {
        self.bounded(warden_audit::consistency_proof_hashes(&self.db, old, new))
            .await
    }

    /// Writes the trail's events as JSON lines to `out`, in log order;
    /// returns how many (see [`warden_audit::export`]).
    pub async fn export(
        &self,
        from_leaf: Option<u64>,
        to_leaf: Option<u64>,
        out: &mut (dyn std::io::Write + Send),
    ) -> Result<u64, AuditError> {
        warden_audit::export(&self.db, from_leaf, to_leaf, self.step_timeout, out).await
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, AuditError>>,
    ) -> Result<T, AuditError> {
        warden_common::within(self.step_timeout, work).await
    }
}
