//! Warden's composition root: [`Settings`] from the environment and
//! [`Warden`], the one handle front ends use — keys, approvals, the audit
//! trail, migrations and the [`health`] check, each built from the same
//! settings over one database pool and one cache.
//!
//! This crate only composes: it builds pools from settings and hands them to the
//! domain crates. Rules about keys, audit or approvals live in their own crates.
//!
//! ```no_run
//! # async fn example() -> Result<(), warden_core::CoreError> {
//! let settings = warden_core::Settings::from_env()?;
//! let warden = warden_core::Warden::connect(&settings).await?;
//! let report = warden.health().await;
//! assert!(report.is_healthy());
//! let pending = warden.approvals().list(None, 10).await;
//! # Ok(()) }
//! ```

mod audit_trail;
mod error;
pub mod health;
mod migrations;
pub mod settings;
pub mod telemetry;
mod warden;

pub use audit_trail::AuditTrail;
pub use error::CoreError;
pub use migrations::Migrations;
pub use settings::{
    DatabaseBackend, Environment, GUARANTEE_SECRETS, NotifierSettings, SecretText, Settings,
    SettingsError,
};
pub use telemetry::StorageGauges;
pub use warden::Warden;
