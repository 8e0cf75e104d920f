//! Warden's telemetry: OpenTelemetry traces and metrics exported over
//! OTLP/HTTP, the `tracing` layer that feeds them, and the same metrics as
//! Prometheus text for a scrape endpoint.
//!
//! Warden's crates create their instruments through the OpenTelemetry API
//! alone; until [`Telemetry::install`] sets a provider they are no-ops, so a
//! process that wants no telemetry pays (almost) nothing. The `warden` binary
//! sets everything up itself; a gateway composing its own subscriber does:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//! # fn main() -> Result<(), warden_telemetry::TelemetryError> {
//! let telemetry = warden_telemetry::Telemetry::install(&warden_telemetry::TelemetryConfig::from_env()?)?;
//! tracing_subscriber::registry()
//!     .with(telemetry.tracing_layer())
//!     .init();
//! // … build warden_core::Warden and serve …
//! let report = telemetry.shutdown();
//! # let _ = report;
//! # Ok(()) }
//! ```
//!
//! The metric names, units and attributes are listed in the README
//! ("Observability").

mod config;
mod error;
mod install;
pub mod prometheus;

pub use config::{DEFAULT_FLUSH_TIMEOUT, DEFAULT_OTLP_ENDPOINT, TelemetryConfig};
pub use error::TelemetryError;
pub use install::{FlushOutcome, ShutdownReport, Telemetry, warden_targets};
