//! [`OtlpReceiver`]: a real OTLP/HTTP (protobuf) endpoint a test starts,
//! decoding what an exporter sends into spans and metric points.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message as _;

use crate::HttpSink;

/// One exported span.
#[derive(Debug, Clone)]
pub struct ExportedSpan {
    /// The span's name.
    pub name: String,
    /// The trace it belongs to (hex).
    pub trace_id: String,
    /// Its own id (hex).
    pub span_id: String,
    /// Its parent's id (hex), empty for a root span.
    pub parent_span_id: String,
    /// `SPAN_KIND_*` as the protocol numbers it (1 internal, 3 client, …).
    pub kind: i32,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
}

/// One exported metric data point (sums and gauges: the value; histograms:
/// the count, with `sum` set).
#[derive(Debug, Clone)]
pub struct ExportedPoint {
    /// The metric's name.
    pub metric: String,
    /// Its unit.
    pub unit: String,
    /// The point's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// The value (a histogram's count).
    pub value: f64,
    /// A histogram's sum.
    pub sum: Option<f64>,
}

/// Everything an [`OtlpReceiver`] decoded, and the raw bodies.
#[derive(Debug, Default, Clone)]
pub struct OtlpExport {
    /// Every request body exactly as received.
    pub raw: Vec<Vec<u8>>,
    /// Every span.
    pub spans: Vec<ExportedSpan>,
    /// Every metric point of every export (cumulative: later exports repeat
    /// earlier points with larger values).
    pub points: Vec<ExportedPoint>,
    /// Requests to paths other than `/v1/traces` and `/v1/metrics`, or that
    /// did not decode.
    pub rejected: Vec<String>,
}

impl OtlpExport {
    /// Spans called `name`.
    pub fn spans_named(&self, name: &str) -> Vec<&ExportedSpan> {
        self.spans.iter().filter(|s| s.name == name).collect()
    }

    /// The largest value reported for `metric` among points whose attributes
    /// include every pair in `with` (cumulative counters only grow, so the
    /// largest is the latest).
    pub fn max_value(&self, metric: &str, with: &[(&str, &str)]) -> Option<f64> {
        self.points
            .iter()
            .filter(|p| p.metric == metric)
            .filter(|p| {
                with.iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|p| p.value)
            .reduce(f64::max)
    }

    /// True when `needle` occurs anywhere in any received body.
    pub fn contains_bytes(&self, needle: &[u8]) -> bool {
        !needle.is_empty()
            && self
                .raw
                .iter()
                .any(|body| body.windows(needle.len()).any(|w| w == needle))
    }
}

/// An OTLP/HTTP receiver on a free loopback port: answers `200` to every
/// export and decodes it with the protocol's own message definitions.
#[derive(Debug)]
pub struct OtlpReceiver {
    sink: HttpSink,
    export: OtlpExport,
}

impl OtlpReceiver {
    /// Starts listening.
    pub async fn start() -> Self {
        Self {
            sink: HttpSink::start(0).await,
            export: OtlpExport::default(),
        }
    }

    /// The base URL to give an exporter (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        self.sink.origin()
    }

    /// Receives until nothing arrives for `quiet`, then returns everything
    /// received so far.
    pub async fn collect(&mut self, quiet: Duration) -> &OtlpExport {
        while let Some(request) = self.sink.next(quiet).await {
            self.decode(&request.path, request.body);
        }
        &self.export
    }

    fn decode(&mut self, path: &str, body: Vec<u8>) {
        match path {
            "/v1/traces" => match ExportTraceServiceRequest::decode(body.as_slice()) {
                Ok(request) => self.add_traces(request),
                Err(e) => self.export.rejected.push(format!("{path}: {e}")),
            },
            "/v1/metrics" => match ExportMetricsServiceRequest::decode(body.as_slice()) {
                Ok(request) => self.add_metrics(request),
                Err(e) => self.export.rejected.push(format!("{path}: {e}")),
            },
            other => self.export.rejected.push(other.to_owned()),
        }
        self.export.raw.push(body);
    }

    fn add_traces(&mut self, request: ExportTraceServiceRequest) {
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                let scope_name = scope.scope.map(|s| s.name).unwrap_or_default();
                for span in scope.spans {
                    self.export.spans.push(ExportedSpan {
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        kind: span.kind,
                        attributes: attributes(&span.attributes),
                        scope: scope_name.clone(),
                    });
                }
            }
        }
    }

    fn add_metrics(&mut self, request: ExportMetricsServiceRequest) {
        for resource in request.resource_metrics {
            for scope in resource.scope_metrics {
                for m in scope.metrics {
                    let point =
                        |attributes: &[KeyValue], value: f64, sum: Option<f64>| ExportedPoint {
                            metric: m.name.clone(),
                            unit: m.unit.clone(),
                            attributes: self::attributes(attributes),
                            value,
                            sum,
                        };
                    let number = |v: Option<number_data_point::Value>| match v {
                        Some(number_data_point::Value::AsDouble(d)) => d,
                        Some(number_data_point::Value::AsInt(i)) => i as f64,
                        None => f64::NAN,
                    };
                    match &m.data {
                        Some(metric::Data::Sum(sum)) => {
                            for p in &sum.data_points {
                                self.export.points.push(point(
                                    &p.attributes,
                                    number(p.value),
                                    None,
                                ));
                            }
                        }
                        Some(metric::Data::Gauge(gauge)) => {
                            for p in &gauge.data_points {
                                self.export.points.push(point(
                                    &p.attributes,
                                    number(p.value),
                                    None,
                                ));
                            }
                        }
                        Some(metric::Data::Histogram(histogram)) => {
                            for p in &histogram.data_points {
                                self.export.points.push(point(
                                    &p.attributes,
                                    p.count as f64,
                                    p.sum,
                                ));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

use warden_common::hex;

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(text).unwrap_or_default(),
            )
        })
        .collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
