//! Warden's composition root: [`Settings`] from the environment, [`Storage`]
//! (the connected database and cache), and the [`health`] check.
//!
//! This crate only composes: it builds pools from settings and hands them to the
//! domain crates. Rules about keys, audit or approvals live in their own crates.
//!
//! ```no_run
//! # async fn example() -> Result<(), warden_core::CoreError> {
//! let settings = warden_core::Settings::from_env()?;
//! let storage = warden_core::Storage::connect(&settings).await?;
//! let report = warden_core::health::check(&storage).await;
//! assert!(report.is_healthy());
//! # Ok(()) }
//! ```

mod error;
pub mod health;
pub mod settings;
mod storage;
pub mod telemetry;

pub use error::CoreError;
pub use settings::{DatabaseBackend, Environment, GUARANTEE_SECRETS, Settings, SettingsError};
pub use storage::Storage;
pub use telemetry::StorageGauges;
