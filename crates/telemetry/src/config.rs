//! [`TelemetryConfig`]: what to export, read from the standard OpenTelemetry
//! variables plus `OTEL_ENABLED`.

use std::time::Duration;

use crate::TelemetryError;

/// Where export goes when no endpoint variable is set (the OTLP/HTTP default).
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4318";

/// The longest [`crate::Telemetry::shutdown`] waits for the last export by
/// default (`TELEMETRY_FLUSH_TIMEOUT_MS`).
pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(3);

/// What telemetry to set up.
///
/// Export is off unless `OTEL_ENABLED` says otherwise; with export off no
/// exporter, thread or connection exists. The exporter itself also reads the
/// standard variables this type does not hold: `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (and the per-signal `…_TRACES_ENDPOINT`, `…_METRICS_ENDPOINT`),
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`,
/// `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, the `OTEL_BSP_*`
/// batch limits, `OTEL_METRIC_EXPORT_INTERVAL`, `OTEL_SERVICE_NAME` and
/// `OTEL_RESOURCE_ATTRIBUTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Export traces and metrics over OTLP/HTTP (protobuf).
    pub export: bool,
    /// Export traces (`OTEL_TRACES_EXPORTER=none` turns them off).
    pub traces: bool,
    /// Export metrics (`OTEL_METRICS_EXPORTER=none` turns them off).
    pub metrics: bool,
    /// Keep the metrics in memory for a Prometheus scrape, whether or not
    /// they are exported (`warden metrics`, `warden serve`).
    pub scrape: bool,
    /// The OTLP/HTTP base URL (`/v1/traces` and `/v1/metrics` are appended);
    /// `None` leaves it to the standard variables, then
    /// [`DEFAULT_OTLP_ENDPOINT`].
    pub endpoint: Option<String>,
    /// `service.name` when `OTEL_SERVICE_NAME` is not set.
    pub service_name: String,
    /// The longest shutdown waits for the last export.
    pub flush_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            export: false,
            traces: true,
            metrics: true,
            scrape: false,
            endpoint: None,
            service_name: "warden".into(),
            flush_timeout: DEFAULT_FLUSH_TIMEOUT,
        }
    }
}

impl TelemetryConfig {
    /// Reads the settings from the process environment.
    ///
    /// `OTEL_SDK_DISABLED=true` turns export off whatever `OTEL_ENABLED`
    /// says. Only the `http/protobuf` protocol is built in: another
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` is refused rather than silently ignored.
    pub fn from_env() -> Result<Self, TelemetryError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`TelemetryConfig::from_env`] with the variables from `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, TelemetryError> {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let enabled = match var("OTEL_ENABLED") {
            Some(v) => parse_bool("OTEL_ENABLED", &v)?,
            None => false,
        };
        let disabled = match var("OTEL_SDK_DISABLED") {
            Some(v) => parse_bool("OTEL_SDK_DISABLED", &v)?,
            None => false,
        };
        let mut config = Self {
            export: enabled && !disabled,
            ..Self::default()
        };
        if config.export {
            for variable in [
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
            ] {
                if let Some(protocol) = var(variable)
                    && protocol != "http/protobuf"
                {
                    return Err(TelemetryError::InvalidSetting {
                        variable,
                        reason: format!(
                            "{protocol:?} is not built in; use http/protobuf (a collector accepts it on port 4318)"
                        ),
                    });
                }
            }
            config.traces = exporter_choice("OTEL_TRACES_EXPORTER", var("OTEL_TRACES_EXPORTER"))?;
            config.metrics =
                exporter_choice("OTEL_METRICS_EXPORTER", var("OTEL_METRICS_EXPORTER"))?;
            for variable in [
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            ] {
                if let Some(endpoint) = var(variable)
                    && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
                {
                    return Err(TelemetryError::InvalidSetting {
                        variable,
                        reason: "expected an http:// or https:// URL".into(),
                    });
                }
            }
        }
        if let Some(ms) = var("TELEMETRY_FLUSH_TIMEOUT_MS") {
            let ms: u64 = ms.parse().map_err(|_| TelemetryError::InvalidSetting {
                variable: "TELEMETRY_FLUSH_TIMEOUT_MS",
                reason: format!("{ms:?} is not a whole number of milliseconds"),
            })?;
            if ms == 0 || ms > 60_000 {
                return Err(TelemetryError::InvalidSetting {
                    variable: "TELEMETRY_FLUSH_TIMEOUT_MS",
                    reason: "must be between 1 and 60000".into(),
                });
            }
            config.flush_timeout = Duration::from_millis(ms);
        }
        Ok(config)
    }

    /// True when anything records metrics (export or a scrape endpoint):
    /// otherwise every instrument stays a no-op.
    pub fn records_metrics(&self) -> bool {
        (self.export && self.metrics) || self.scrape
    }

    /// True when spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.export && self.traces
    }
}

fn parse_bool(variable: &'static str, value: &str) -> Result<bool, TelemetryError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(TelemetryError::InvalidSetting {
            variable,
            reason: format!("{value:?} is not true or false"),
        }),
    }
}

fn exporter_choice(variable: &'static str, value: Option<String>) -> Result<bool, TelemetryError> {
    match value.as_deref() {
        None | Some("otlp") => Ok(true),
        Some("none") => Ok(false),
        Some(other) => Err(TelemetryError::InvalidSetting {
            variable,
            reason: format!("{other:?} is not built in; use otlp or none"),
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<TelemetryConfig, TelemetryError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        TelemetryConfig::from_lookup(|name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn export_is_off_by_default_and_when_the_sdk_is_disabled() {
        assert!(!config(&[]).unwrap().export);
        assert!(config(&[("OTEL_ENABLED", "TRUE")]).unwrap().export);
        let off = config(&[("OTEL_ENABLED", "true"), ("OTEL_SDK_DISABLED", "true")]).unwrap();
        assert!(!off.export && !off.records_metrics() && !off.exports_traces());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, variable) in [
            (vec![("OTEL_ENABLED", "maybe")], "OTEL_ENABLED"),
            (
                vec![
                    ("OTEL_ENABLED", "1"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_ENABLED", "1"), ("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
            ),
            (
                vec![
                    ("OTEL_ENABLED", "1"),
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318"),
                ],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                vec![("TELEMETRY_FLUSH_TIMEOUT_MS", "0")],
                "TELEMETRY_FLUSH_TIMEOUT_MS",
            ),
        ] {
            let err = config(&vars).unwrap_err();
            assert!(err.to_string().starts_with(variable), "{err}");
        }
    }

    #[test]
    fn a_signal_can_be_turned_off() {
        let c = config(&[("OTEL_ENABLED", "1"), ("OTEL_TRACES_EXPORTER", "none")]).unwrap();
        assert!(!c.exports_traces() && c.records_metrics());
    }
}
