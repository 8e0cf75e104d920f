//! [`Telemetry`]: the installed providers, the tracing layer and shutdown.

use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{
    InstrumentKind, ManualReader, PeriodicReader, Pipeline, SdkMeterProvider, Temporality,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;

use crate::{TelemetryConfig, TelemetryError};

/// The installed telemetry of one process.
///
/// Guarantees:
/// - With export off and no scrape wanted, nothing is installed: every
///   instrument in Warden's crates stays the OpenTelemetry no-op, and no
///   thread, queue or connection exists.
/// - Exporting never blocks the caller: spans and metric points go to bounded
///   in-memory queues drained by background threads; when the queue is full
///   (a slow or unreachable collector) new data is dropped, not buffered
///   without bound, and never waited for.
/// - [`Telemetry::shutdown`] sends what is queued and returns within the
///   configured flush timeout, whether or not the collector answers.
/// - Drivers' spans (which may carry statement text) are never exported,
///   and Warden's spans carry no key, token, password or raw argument.
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
    scrape: Option<Arc<ManualReader>>,
    resource: Resource,
    flush_timeout: Duration,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.tracer_provider.is_some())
            .field("metrics", &self.meter_provider.is_some())
            .field("scrape", &self.scrape.is_some())
            .field("flush_timeout", &self.flush_timeout)
            .finish()
    }
}

/// How one signal's last export went at shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlushOutcome {
    /// The signal was not set up.
    Off,
    /// Everything queued was handed to the collector.
    Flushed,
    /// The exporter reported a failure (the message says which).
    Failed(String),
    /// The flush timeout passed first; what was still queued is lost.
    TimedOut,
}

/// What [`Telemetry::shutdown`] managed to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Spans.
    pub traces: FlushOutcome,
    /// Metric points.
    pub metrics: FlushOutcome,
}

impl ShutdownReport {
    /// True when no signal failed or timed out.
    pub fn is_complete(&self) -> bool {
        [&self.traces, &self.metrics]
            .iter()
            .all(|o| matches!(o, FlushOutcome::Off | FlushOutcome::Flushed))
    }
}

impl Telemetry {
    /// Builds the providers `config` asks for and installs them as the
    /// process-wide OpenTelemetry providers.
    ///
    /// Call it before building Warden's storage: instruments are created when
    /// the components are, from the providers installed at that time.
    /// Safe to call from inside or outside an async runtime.
    pub fn install(config: &TelemetryConfig) -> Result<Self, TelemetryError> {
        let resource = resource(config);
        let tracer_provider = if config.exports_traces() {
            let mut builder = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary);
            if let Some(base) = &config.endpoint {
                builder = builder.with_endpoint(signal_url(base, "traces"));
            }
            let exporter = builder.build().map_err(|e| TelemetryError::Exporter {
                signal: "traces",
                reason: e.to_string(),
            })?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource.clone())
                .build();
            opentelemetry::global::set_tracer_provider(provider.clone());
            Some(provider)
        } else {
            None
        };
        let (meter_provider, scrape) = if config.records_metrics() {
            let mut builder = SdkMeterProvider::builder().with_resource(resource.clone());
            if config.export && config.metrics {
                let mut exporter = opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_temporality(Temporality::Cumulative);
                if let Some(base) = &config.endpoint {
                    exporter = exporter.with_endpoint(signal_url(base, "metrics"));
                }
                let exporter = exporter.build().map_err(|e| TelemetryError::Exporter {
                    signal: "metrics",
                    reason: e.to_string(),
                })?;
                builder = builder.with_reader(PeriodicReader::builder(exporter).build());
            }
            let scrape = config
                .scrape
                .then(|| Arc::new(ManualReader::builder().build()));
            if let Some(reader) = &scrape {
                builder = builder.with_reader(SharedReader(reader.clone()));
            }
            let provider = builder.build();
            opentelemetry::global::set_meter_provider(provider.clone());
            (Some(provider), scrape)
        } else {
            (None, None)
        };
        Ok(Self {
            tracer_provider,
            meter_provider,
            scrape,
            resource,
            flush_timeout: config.flush_timeout,
        })
    }

    /// Telemetry that installs nothing (every instrument stays a no-op).
    pub fn disabled() -> Self {
        Self {
            tracer_provider: None,
            meter_provider: None,
            scrape: None,
            resource: Resource::builder_empty().build(),
            flush_timeout: crate::DEFAULT_FLUSH_TIMEOUT,
        }
    }

    /// True when spans are exported (then [`Telemetry::tracing_layer`] is
    /// `Some`).
    pub fn exports_traces(&self) -> bool {
        self.tracer_provider.is_some()
    }

    /// The `tracing` layer that turns Warden's spans into OpenTelemetry spans,
    /// for a subscriber the caller composes; `None` when traces are not
    /// exported.
    ///
    /// The layer carries its own filter ([`warden_targets`]: Warden's crates
    /// at DEBUG and up, nothing else), so it sees spans a console filter
    /// hides; add it beside a `fmt` layer that has its own per-layer filter,
    /// not under a global one.
    pub fn tracing_layer<S>(&self) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        self.tracing_layer_with(warden_targets())
    }

    /// [`Telemetry::tracing_layer`] exporting the spans and events `targets`
    /// lets through (start from [`warden_targets`]).
    pub fn tracing_layer_with<S>(
        &self,
        targets: Targets,
    ) -> Option<impl Layer<S> + Send + Sync + 'static>
    where
        S: Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let provider = self.tracer_provider.as_ref()?;
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("warden")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(targets),
        )
    }

    /// The current value of every metric in the Prometheus text exposition
    /// format (version 0.0.4), or `None` when no scrape was asked for.
    pub fn prometheus_text(&self) -> Option<String> {
        let reader = self.scrape.as_ref()?;
        let mut metrics = ResourceMetrics::default();
        match reader.collect(&mut metrics) {
            Ok(()) => Some(crate::prometheus::render(&metrics)),
            Err(e) => {
                tracing::warn!(error = %e, "metrics could not be collected for a scrape");
                Some(crate::prometheus::render_resource_only(&self.resource))
            }
        }
    }

    /// Sends what is queued and stops the exporters, waiting at most the
    /// configured flush timeout in all (both signals flush at once).
    pub fn shutdown(self) -> ShutdownReport {
        let timeout = self.flush_timeout;
        let deadline = std::time::Instant::now() + timeout;
        // A flush first: unlike shutdown, it reports whether the last export
        // reached the collector.
        let traces = self.tracer_provider.map(|provider| {
            on_thread(move || {
                let flushed = provider.force_flush();
                flushed.and(provider.shutdown_with_timeout(timeout))
            })
        });
        let metrics = self.meter_provider.map(|provider| {
            on_thread(move || {
                let flushed = provider.force_flush();
                flushed.and(provider.shutdown_with_timeout(timeout))
            })
        });
        // Both signals flush at once, against one deadline: the whole wait
        // is at most one flush timeout.
        let wait = |handle: Option<std::sync::mpsc::Receiver<OTelSdkResult>>| match handle {
            None => FlushOutcome::Off,
            Some(rx) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(Ok(())) => FlushOutcome::Flushed,
                    Ok(Err(e)) => FlushOutcome::Failed(e.to_string()),
                    Err(_) => FlushOutcome::TimedOut,
                }
            }
        };
        ShutdownReport {
            traces: wait(traces),
            metrics: wait(metrics),
        }
    }
}

/// Runs `work` on its own thread; the receiver yields its result. A thread
/// still blocked on a silent collector when the process exits is abandoned.
fn on_thread(
    work: impl FnOnce() -> OTelSdkResult + Send + 'static,
) -> std::sync::mpsc::Receiver<OTelSdkResult> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("warden-telemetry-flush".into())
        .spawn(move || {
            let _ = tx.send(work());
        });
    if let Err(e) = spawned {
        let (tx, rx2) = std::sync::mpsc::channel();
        let _ = tx.send(Err(
            opentelemetry_sdk::error::OTelSdkError::InternalFailure(format!(
                "no thread for the flush: {e}"
            )),
        ));
        return rx2;
    }
    rx
}

/// The default filter of [`Telemetry::tracing_layer`]: Warden's crates
/// (`warden*`, `migration`) at DEBUG and up, nothing else. Extend it with the
/// application's own targets (`warden_targets().with_target("my_gateway",
/// Level::INFO)`) for [`Telemetry::tracing_layer_with`]; database and
/// network drivers (sqlx, sea-orm, redis, hyper, reqwest) should stay out:
/// their spans may carry statement text or headers.
pub fn warden_targets() -> Targets {
    Targets::new()
        .with_target("warden", tracing::Level::DEBUG)
        .with_target("migration", tracing::Level::DEBUG)
}

fn resource(config: &TelemetryConfig) -> Resource {
    let mut builder = Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME")
        .map(|v| !v.trim().is_empty())
        .unwrap_or(false);
    if !named {
        builder = builder.with_service_name(config.service_name.clone());
    }
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

fn signal_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

/// One [`ManualReader`] shared between the meter provider and the scrape
/// handler (the provider takes ownership of its readers).
#[derive(Debug)]
struct SharedReader(Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}
