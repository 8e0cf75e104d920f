/// What went wrong setting up telemetry. Each variant names the setting to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// A variable holds a value Warden cannot use.
    #[error("{variable} is invalid: {reason}")]
    InvalidSetting {
        /// The environment variable.
        variable: &'static str,
        /// Why, and what is accepted.
        reason: String,
    },
    /// The OTLP exporter could not be built (a malformed endpoint, …).
    #[error(
        "the OTLP {signal} exporter could not be built: {reason}; check OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The exporter's own message (never carries header values).
        reason: String,
    },
}
