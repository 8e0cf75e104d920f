//! PostgreSQL `COPY … FROM STDIN` text format for audit rows.

use std::fmt::Write as _;

use warden_entity::audit_events;

use crate::AuditError;

fn text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            other => out.push(other),
        }
    }
}

fn opt_text(out: &mut String, value: Option<&str>) {
    match value {
        Some(v) => text(out, v),
        None => out.push_str("\\N"),
    }
}

fn json(out: &mut String, value: &serde_json::Value) -> Result<(), AuditError> {
    let encoded = serde_json::to_string(value).map_err(|e| AuditError::Database {
        reason: e.to_string(),
    })?;
    text(out, &encoded);
    Ok(())
}

/// The rows as COPY text: tab-separated columns in the order the COPY
/// statement names, `\N` for NULL, backslash escapes for the rest.
pub(crate) fn encode(rows: &[audit_events::Model]) -> Result<Vec<u8>, AuditError> {
    let mut out = String::with_capacity(rows.len() * 600);
    for r in rows {
        let _ = write!(out, "{}\t", r.id);
        text(&mut out, &r.request_id);
        out.push('\t');
        out.push_str(&r.timestamp.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string());
        out.push('\t');
        text(&mut out, &r.caller_id);
        out.push('\t');
        opt_text(&mut out, r.api_key_id.map(|id| id.to_string()).as_deref());
        out.push('\t');
        text(&mut out, &r.method);
        out.push('\t');
        opt_text(&mut out, r.tool_name.as_deref());
        out.push('\t');
        text(&mut out, &r.decision);
        out.push('\t');
        opt_text(&mut out, r.reason.as_deref());
        out.push('\t');
        text(&mut out, &r.raw_args_hash);
        out.push('\t');
        json(&mut out, &r.sanitized_args)?;
        out.push('\t');
        json(&mut out, &r.redaction_flags)?;
        out.push('\t');
        json(&mut out, &r.risk_labels)?;
        out.push('\t');
        opt_text(&mut out, r.status_code.map(|v| v.to_string()).as_deref());
        out.push('\t');
        opt_text(&mut out, r.latency_ms.map(|v| v.to_string()).as_deref());
        out.push('\t');
        text(&mut out, &r.kind);
        out.push('\t');
        opt_text(&mut out, r.leaf_hash.as_deref());
        out.push('\n');
    }
    Ok(out.into_bytes())
}
