//! The Prometheus text exposition format (0.0.4) of collected metrics,
//! following OpenTelemetry's Prometheus compatibility rules: dots become
//! underscores, the unit is a suffix (`_seconds`, `_bytes`), monotonic sums
//! are counters ending in `_total`, other sums and gauges are gauges,
//! histograms have cumulative `_bucket{le=…}` series with `_sum` and `_count`,
//! every series has an `otel_scope_name` label, and the resource is one
//! `target_info` series.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::data::{
    AggregatedMetrics, Gauge, Histogram, Metric, MetricData, ResourceMetrics, Sum,
};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Default)]
struct Family {
    kind: &'static str,
    help: String,
    lines: Vec<String>,
}

/// Renders `metrics` as Prometheus text. Metrics of one name from several
/// instrumentation scopes form one family, told apart by `otel_scope_name`;
/// a later metric whose kind clashes with the family's is left out.
pub fn render(metrics: &ResourceMetrics) -> String {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for scope in metrics.scope_metrics() {
        let scope_label = KeyValue::new("otel_scope_name", scope.scope().name().to_owned());
        for metric in scope.metrics() {
            add_metric(&mut families, metric, &scope_label);
        }
    }
    let mut out = render_resource_only(metrics.resource());
    for (name, family) in families {
        if family.lines.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
        let _ = writeln!(out, "# TYPE {name} {}", family.kind);
        for line in family.lines {
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// Only the `target_info` series (the resource's attributes).
pub fn render_resource_only(resource: &Resource) -> String {
    let attributes: Vec<KeyValue> = resource
        .iter()
        .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
        .collect();
    let labels = merge_labels(attributes.iter());
    let mut out = String::new();
    out.push_str("# HELP target_info Target metadata\n# TYPE target_info gauge\n");
    let _ = writeln!(out, "target_info{} 1", label_set(&labels, None));
    out
}

fn add_metric(families: &mut BTreeMap<String, Family>, metric: &Metric, scope: &KeyValue) {
    let base = metric_name(metric.name(), metric.unit());
    match metric.data() {
        AggregatedMetrics::F64(data) => add_data(families, &base, metric, data, scope),
        AggregatedMetrics::U64(data) => add_data(families, &base, metric, data, scope),
        AggregatedMetrics::I64(data) => add_data(families, &base, metric, data, scope),
    }
}

trait Number: Copy {
    fn text(self) -> String;
}

impl Number for f64 {
    fn text(self) -> String {
        float_text(self)
    }
}

impl Number for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Number for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn add_data<T: Number>(
    families: &mut BTreeMap<String, Family>,
    base: &str,
    metric: &Metric,
    data: &MetricData<T>,
    scope: &KeyValue,
) {
    match data {
        MetricData::Gauge(gauge) => add_gauge(families, base, metric, gauge, scope),
        MetricData::Sum(sum) => add_sum(families, base, metric, sum, scope),
        MetricData::Histogram(histogram) => add_histogram(families, base, metric, histogram, scope),
        // Not produced by any Warden instrument (no view asks for it).
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn family<'a>(
    families: &'a mut BTreeMap<String, Family>,
    name: &str,
    kind: &'static str,
    help: &str,
) -> Option<&'a mut Family> {
    let family = families.entry(name.to_owned()).or_insert_with(|| Family {
        kind,
        help: help.to_owned(),
        lines: Vec::new(),
    });
    (family.kind == kind).then_some(family)
}

fn add_gauge<T: Number>(
    families: &mut BTreeMap<String, Family>,
    base: &str,
    metric: &Metric,
    gauge: &Gauge<T>,
    scope: &KeyValue,
) {
    let Some(family) = family(families, base, "gauge", metric.description()) else {
        return;
    };
    for point in gauge.data_points() {
        let labels = labels(point.attributes(), scope);
        family.lines.push(format!(
            "{base}{} {}",
            label_set(&labels, None),
            point.value().text()
        ));
    }
}

fn add_sum<T: Number>(
    families: &mut BTreeMap<String, Family>,
    base: &str,
    metric: &Metric,
    sum: &Sum<T>,
    scope: &KeyValue,
) {
    let (name, kind) = if sum.is_monotonic() {
        (format!("{base}_total"), "counter")
    } else {
        (base.to_owned(), "gauge")
    };
    let Some(family) = family(families, &name, kind, metric.description()) else {
        return;
    };
    for point in sum.data_points() {
        let labels = labels(point.attributes(), scope);
        family.lines.push(format!(
            "{name}{} {}",
            label_set(&labels, None),
            point.value().text()
        ));
    }
}

fn add_histogram<T: Number>(
    families: &mut BTreeMap<String, Family>,
    base: &str,
    metric: &Metric,
    histogram: &Histogram<T>,
    scope: &KeyValue,
) {
    let Some(family) = family(families, base, "histogram", metric.description()) else {
        return;
    };
    for point in histogram.data_points() {
        let labels = labels(point.attributes(), scope);
        let mut cumulative = 0u64;
        let counts: Vec<u64> = point.bucket_counts().collect();
        for (i, bound) in point.bounds().enumerate() {
            cumulative = cumulative.saturating_add(counts.get(i).copied().unwrap_or(0));
            family.lines.push(format!(
                "{base}_bucket{} {cumulative}",
                label_set(&labels, Some(&float_text(bound)))
            ));
        }
        family.lines.push(format!(
            "{base}_bucket{} {}",
            label_set(&labels, Some("+Inf")),
            point.count()
        ));
        family.lines.push(format!(
            "{base}_sum{} {}",
            label_set(&labels, None),
            point.sum().text()
        ));
        family.lines.push(format!(
            "{base}_count{} {}",
            label_set(&labels, None),
            point.count()
        ));
    }
}

fn labels<'a>(
    attributes: impl Iterator<Item = &'a KeyValue>,
    scope: &'a KeyValue,
) -> Vec<(String, String)> {
    merge_labels(attributes.chain(std::iter::once(scope)))
}

/// Sanitized label pairs, one per name, in name order.
fn merge_labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>) -> Vec<(String, String)> {
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for kv in attributes {
        let key = sanitize_label(kv.key.as_str());
        let value = value_text(&kv.value);
        // Two attributes that sanitize to one label name are joined with ';'
        // (the compatibility rule), in key order.
        labels
            .entry(key)
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    labels.into_iter().collect()
}

fn label_set(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label_value(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn value_text(value: &Value) -> String {
    value.as_str().into_owned()
}

/// `warden.audit.write.duration` with unit `s` → `warden_audit_write_duration_seconds`.
fn metric_name(name: &str, unit: &str) -> String {
    let mut out = sanitize(name, true);
    if let Some(suffix) = unit_suffix(unit)
        && !out.ends_with(&format!("_{suffix}"))
    {
        out.push('_');
        out.push_str(&suffix);
    }
    out
}

fn unit_suffix(unit: &str) -> Option<String> {
    // `{event}`-style annotations carry no unit.
    let unit: String = {
        let mut depth = 0usize;
        unit.chars()
            .filter(|c| match c {
                '{' => {
                    depth += 1;
                    false
                }
                '}' => {
                    depth = depth.saturating_sub(1);
                    false
                }
                _ => depth == 0,
            })
            .collect()
    };
    let mapped = match unit.as_str() {
        "" | "1" => return None,
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "%" => "percent",
        other => return Some(sanitize(other, false)),
    };
    Some(mapped.to_owned())
}

/// Keeps `[a-zA-Z0-9_:]` (`:` only in metric names), replaces the rest with
/// `_`, collapses runs of `_`, and (metric names) prefixes `_` to a leading
/// digit.
fn sanitize(name: &str, colons: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let keep = c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':');
        let c = if keep { c } else { '_' };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if colons && out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn sanitize_label(name: &str) -> String {
    let out = sanitize(name, false);
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{out}")
    } else if out.is_empty() {
        "key_".to_owned()
    } else {
        out
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn float_text(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value == f64::INFINITY {
        "+Inf".into()
    } else if value == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_rules() {
        assert_eq!(
            metric_name("warden.audit.write.duration", "s"),
            "warden_audit_write_duration_seconds"
        );
        assert_eq!(
            metric_name("warden.audit.events.written", "{event}"),
            "warden_audit_events_written"
        );
        assert_eq!(
            metric_name("db.client.connections.usage", "{connection}"),
            "db_client_connections_usage"
        );
        assert_eq!(metric_name("a..b-c", "By"), "a_b_c_bytes");
        assert_eq!(metric_name("x_seconds", "s"), "x_seconds");
        assert_eq!(sanitize_label("db.system.name"), "db_system_name");
        assert_eq!(sanitize_label("9lives"), "key_9lives");
    }

    #[test]
    fn attributes_that_sanitize_alike_become_one_label() {
        let attributes = [
            KeyValue::new("host.name", "a"),
            KeyValue::new("host_name", "b"),
        ];
        assert_eq!(
            merge_labels(attributes.iter()),
            vec![("host_name".to_owned(), "a;b".to_owned())]
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let labels = vec![("k".to_owned(), "a\"b\\c\nd".to_owned())];
        assert_eq!(label_set(&labels, None), r#"{k="a\"b\\c\nd"}"#);
    }
}
