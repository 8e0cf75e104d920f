//! [`AuditEvent`]: one tool call as the audit trail keeps it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use warden_entity::audit_events;

use crate::leaf::{EventKind, hash_hex, leaf_hash_of};
use crate::redact::{RedactionFlag, Redactor};
use crate::{AuditError, canonical};

/// What the gateway decided about a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Decision {
    /// The call was forwarded.
    Allow,
    /// The call was refused by policy.
    Deny,
    /// The call is held until a person approves it.
    RequireApproval,
    /// A person approved the held call.
    Approved,
    /// A person denied the held call, or its approval expired.
    Rejected,
    /// The caller exceeded a rate limit.
    RateLimited,
    /// The gateway failed while handling the call.
    Error,
}

impl Decision {
    /// Every decision, for parsers and tests.
    pub const ALL: [Decision; 7] = [
        Decision::Allow,
        Decision::Deny,
        Decision::RequireApproval,
        Decision::Approved,
        Decision::Rejected,
        Decision::RateLimited,
        Decision::Error,
    ];

    /// The stored form, e.g. `REQUIRE_APPROVAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "ALLOW",
            Self::Deny => "DENY",
            Self::RequireApproval => "REQUIRE_APPROVAL",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
            Self::RateLimited => "RATE_LIMITED",
            Self::Error => "ERROR",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Decision {
    type Err = AuditError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| AuditError::InvalidField {
                field: "decision",
                reason: format!("unknown decision {s:?}"),
            })
    }
}

/// A tool call's raw arguments, as [`AuditEvent::record`] takes them. They
/// are hashed and redacted, never kept, and have no `Debug`.
#[derive(Clone, Copy)]
pub enum RawArgs<'a> {
    /// The exact JSON text the agent sent (preferred): hashed by
    /// [`crate::canonical_hash_text`], which refuses duplicate keys and keeps
    /// every number exactly, so two different payloads never share a hash.
    Text(&'a str),
    /// Already-parsed arguments, hashed by [`crate::canonical_hash`]. A
    /// `Value` has lost duplicate keys and integers beyond 64 bits: prefer
    /// `Text` when the bytes are at hand.
    Parsed(&'a Value),
}

impl<'a> From<&'a Value> for RawArgs<'a> {
    fn from(value: &'a Value) -> Self {
        Self::Parsed(value)
    }
}

impl<'a> From<&'a str> for RawArgs<'a> {
    fn from(text: &'a str) -> Self {
        Self::Text(text)
    }
}

/// A tool call as the gateway saw it: the input to [`AuditEvent::record`].
/// The raw arguments are borrowed, hashed and redacted; they are never kept.
#[derive(Clone, Copy)]
pub struct ToolCall<'a> {
    /// The gateway's unique id for this call.
    pub request_id: &'a str,
    /// Who made it.
    pub caller_id: &'a str,
    /// The API key used, if any.
    pub api_key_id: Option<Uuid>,
    /// Protocol method, e.g. `tools/call`.
    pub method: &'a str,
    /// Tool called, if any.
    pub tool_name: Option<&'a str>,
    /// The raw arguments: hashed and redacted, never stored.
    pub raw_args: RawArgs<'a>,
    /// What was decided.
    pub decision: Decision,
    /// Why.
    pub reason: Option<&'a str>,
    /// Labels from the gateway's risk policy.
    pub risk_labels: &'a [&'a str],
    /// Status returned to the agent, if known.
    pub status_code: Option<i32>,
    /// Latency of the call, if known.
    pub latency_ms: Option<i64>,
    /// When the call happened; `None` means now.
    pub timestamp: Option<DateTime<Utc>>,
}

impl fmt::Debug for ToolCall<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolCall")
            .field("request_id", &self.request_id)
            .field("caller_id", &self.caller_id)
            .field("method", &self.method)
            .field("tool_name", &self.tool_name)
            .field("raw_args", &"[not shown]")
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

/// Where a stored event sits in the transparency log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Inclusion {
    /// Its leaf index, once the integrator has added it to the tree.
    pub leaf_index: Option<u64>,
    /// The size of the newest checkpoint that covers it, if one does.
    pub checkpoint_size: Option<u64>,
}

/// One audited tool call.
///
/// Guarantees: there is no field, constructor or `Debug` output that holds the
/// raw tool arguments — only their SHA-256 over the canonical JSON form
/// ([`AuditEvent::raw_args_hash`]) and a redacted copy
/// ([`AuditEvent::sanitized_args`], with [`AuditEvent::redaction_flags`] saying
/// what was replaced). The timestamp is kept to the microsecond, the precision
/// every backend stores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    id: Uuid,
    request_id: String,
    timestamp: DateTime<Utc>,
    caller_id: String,
    api_key_id: Option<Uuid>,
    method: String,
    tool_name: Option<String>,
    decision: Decision,
    reason: Option<String>,
    raw_args_hash: String,
    sanitized_args: Value,
    redaction_flags: Vec<RedactionFlag>,
    risk_labels: Vec<String>,
    status_code: Option<i32>,
    latency_ms: Option<i64>,
    kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    inclusion: Option<Inclusion>,
}

const MAX_ID_LEN: usize = 255;
const MAX_REASON_LEN: usize = 4096;

fn identifier(field: &'static str, value: &str) -> Result<String, AuditError> {
    warden_common::identifier(value, MAX_ID_LEN)
        .map(str::to_owned)
        .map_err(|e| AuditError::InvalidField {
            field,
            reason: e.to_string(),
        })
}

/// Free text: NUL (which PostgreSQL refuses) becomes U+FFFD; overlong text is cut.
fn free_text(value: &str) -> String {
    let cleaned = value.replace('\0', "\u{FFFD}");
    match cleaned.char_indices().nth(MAX_REASON_LEN) {
        Some((cut, _)) => cleaned[..cut].to_owned(),
        None => cleaned,
    }
}

/// An administrative action, as [`AuditEvent::admin`] records it: who did
/// what to which resource, and a summary of what changed. The summary is
/// redacted like tool arguments; never put a key, token, password or a hash
/// of a secret in it.
#[derive(Clone, Copy)]
pub struct AdminAction<'a> {
    /// Who acted: an operator, an approver id, or the caller on whose
    /// behalf the gateway acted (`warden` for the system itself).
    pub actor: &'a str,
    /// A stable dotted name: `key.create`, `key.revoke`, `approval.issue`,
    /// `approval.approve`, `approval.deny`, `approval.expire`,
    /// `approval.consume`, `policy.load`, `schema.migrate`, …
    pub action: &'a str,
    /// The kind of resource acted on: `api_key`, `approval`, `policy`, …
    pub resource_type: &'a str,
    /// The resource's id (a key's caller id, an approval's id, …).
    pub resource_id: &'a str,
    /// The tool call this action belongs to, when there is one (an
    /// approval's request id): `warden audit show <request_id>` then prints
    /// the whole story in order. Defaults to `<resource_type>:<resource_id>`.
    pub request_id: Option<&'a str>,
    /// The raw-arguments hash of that tool call, linking the action to it.
    pub args_hash: Option<&'a str>,
    /// The decider's note or the reason.
    pub note: Option<&'a str>,
    /// What changed, e.g. `{"before": {...}, "after": {...}}` (redacted).
    pub summary: &'a Value,
}

impl AuditEvent {
    /// The event recording a successful administrative action (refused
    /// actions record none). Stored as kind `admin`: `caller_id` is the
    /// actor, `method` the action, `tool_name` the resource type; the
    /// resource id and the summary are in `sanitized_args`.
    pub fn admin(action: &AdminAction<'_>, redactor: &Redactor) -> Result<Self, AuditError> {
        let details = serde_json::json!({
            "resource": {"type": action.resource_type, "id": action.resource_id},
            "outcome": "success",
            "change": action.summary,
        });
        let raw_args_hash = match action.args_hash {
            Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                h.to_ascii_lowercase()
            }
            Some(_) => {
                return Err(AuditError::InvalidField {
                    field: "args_hash",
                    reason: "must be 64 hex characters".into(),
                });
            }
            None => canonical::canonical_hash(&details)?,
        };
        let redacted = redactor.redact(&details)?;
        // A note is free text from a person: redacted like arguments, since
        // the leaf it lands in can never be changed.
        let note = match action.note {
            // Redacted whole, then cut (see the reason in `record`).
            Some(note) => match redactor.redact(&Value::String(note.to_owned()))?.value {
                Value::String(clean) => Some(free_text(&clean)),
                other => Some(free_text(&other.to_string())),
            },
            None => None,
        };
        let default_request = format!("{}:{}", action.resource_type, action.resource_id);
        Ok(Self {
            id: Uuid::now_v7(),
            request_id: identifier("request_id", action.request_id.unwrap_or(&default_request))?,
            timestamp: Utc::now().trunc_subsecs(6),
            caller_id: identifier("actor", action.actor)?,
            api_key_id: None,
            method: identifier("action", action.action)?,
            tool_name: Some(identifier("resource_type", action.resource_type)?),
            decision: Decision::Allow,
            reason: note,
            raw_args_hash,
            sanitized_args: redacted.value,
            redaction_flags: redacted.flags,
            risk_labels: Vec::new(),
            status_code: None,
            latency_ms: None,
            kind: EventKind::Admin,
            inclusion: None,
        })
    }

    /// Builds the event for `call`: hashes the raw arguments, redacts them
    /// with `redactor`, validates every field.
    ///
    /// Errors: [`AuditError::TooDeep`] for arguments nested deeper than 64
    /// levels (refuse such a call, and record the refusal with `Value::Null`
    /// arguments), [`AuditError::InvalidField`] for empty, overlong or
    /// control-character identifiers, and for raw text that is not JSON or
    /// holds a duplicate key (refuse such a call: it is ambiguous).
    pub fn record(call: &ToolCall<'_>, redactor: &Redactor) -> Result<Self, AuditError> {
        let parsed;
        let (raw_args_hash, value) = match call.raw_args {
            RawArgs::Text(text) => {
                let hash = canonical::canonical_hash_text(text)?;
                parsed =
                    serde_json::from_str::<Value>(text).map_err(|e| AuditError::InvalidField {
                        field: "raw_args",
                        reason: format!("not valid JSON: {e}"),
                    })?;
                (hash, &parsed)
            }
            RawArgs::Parsed(value) => (canonical::canonical_hash(value)?, value),
        };
        let redacted = redactor.redact(value)?;
        let risk_labels = call
            .risk_labels
            .iter()
            .map(|l| identifier("risk_labels", l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            id: Uuid::now_v7(),
            request_id: identifier("request_id", call.request_id)?,
            timestamp: call.timestamp.unwrap_or_else(Utc::now).trunc_subsecs(6),
            caller_id: identifier("caller_id", call.caller_id)?,
            api_key_id: call.api_key_id,
            method: identifier("method", call.method)?,
            tool_name: call
                .tool_name
                .map(|t| identifier("tool_name", t))
                .transpose()?,
            decision: call.decision,
            // Redacted whole, then cut: a cut first could leave a fragment
            // no pattern recognises.
            reason: call.reason.map(|r| free_text(&redactor.redact_text(r))),
            raw_args_hash,
            sanitized_args: redacted.value,
            redaction_flags: redacted.flags,
            risk_labels,
            status_code: call.status_code,
            latency_ms: call.latency_ms,
            kind: EventKind::ToolCall,
            inclusion: None,
        })
    }

    /// Unique id of the event (UUID v7, time-ordered).
    pub fn id(&self) -> Uuid {
        self.id
    }
    /// The gateway's id for the call (shared by every event of that call).
    pub fn request_id(&self) -> &str {
        &self.request_id
    }
    /// When the call happened (microsecond precision).
    pub fn timestamp(&self) -> DateTime<Utc> {
        self.timestamp
    }
    /// Who made the call.
    pub fn caller_id(&self) -> &str {
        &self.caller_id
    }
    /// The API key used, if any.
    pub fn api_key_id(&self) -> Option<Uuid> {
        self.api_key_id
    }
    /// Protocol method.
    pub fn method(&self) -> &str {
        &self.method
    }
    /// Tool called, if any.
    pub fn tool_name(&self) -> Option<&str> {
        self.tool_name.as_deref()
    }
    /// What was decided.
    pub fn decision(&self) -> Decision {
        self.decision
    }
    /// Why.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }
    /// SHA-256 (hex) of the canonical JSON of the raw arguments.
    pub fn raw_args_hash(&self) -> &str {
        &self.raw_args_hash
    }
    /// The arguments with secrets redacted.
    pub fn sanitized_args(&self) -> &Value {
        &self.sanitized_args
    }
    /// What redaction replaced, and why.
    pub fn redaction_flags(&self) -> &[RedactionFlag] {
        &self.redaction_flags
    }
    /// Risk labels.
    pub fn risk_labels(&self) -> &[String] {
        &self.risk_labels
    }
    /// Status returned to the agent.
    pub fn status_code(&self) -> Option<i32> {
        self.status_code
    }
    /// Latency in milliseconds.
    pub fn latency_ms(&self) -> Option<i64> {
        self.latency_ms
    }
    /// What the event records (a tool call, or a prune).
    pub fn kind(&self) -> EventKind {
        self.kind
    }
    /// Where the event sits in the transparency log, when it was read back
    /// by [`crate::AuditQuery`].
    pub fn inclusion(&self) -> Option<Inclusion> {
        self.inclusion
    }
    pub(crate) fn set_inclusion(&mut self, inclusion: Inclusion) {
        self.inclusion = Some(inclusion);
    }

    /// A prune record: the act of deleting the event rows of leaves
    /// `first..=last` whose events happened before `before`, by `actor`.
    pub(crate) fn prune_record(
        actor: &str,
        first: u64,
        last: u64,
        before: DateTime<Utc>,
    ) -> Result<Self, AuditError> {
        let details = serde_json::json!({
            "first_leaf": first,
            "last_leaf": last,
            "before": before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        Ok(Self {
            id: Uuid::now_v7(),
            request_id: format!("prune-{}", Uuid::now_v7()),
            timestamp: Utc::now().trunc_subsecs(6),
            caller_id: identifier("actor", actor)?,
            api_key_id: None,
            method: "audit.prune".into(),
            tool_name: None,
            decision: Decision::Allow,
            reason: Some(format!(
                "pruned the event rows of leaves {first}..={last} (events before {before})"
            )),
            raw_args_hash: canonical::canonical_hash(&details)?,
            sanitized_args: details,
            redaction_flags: Vec::new(),
            risk_labels: Vec::new(),
            status_code: None,
            latency_ms: None,
            kind: EventKind::Prune,
            inclusion: None,
        })
    }

    /// The row to insert, with its leaf hash.
    pub(crate) fn to_model(&self) -> Result<audit_events::Model, AuditError> {
        let mut row = audit_events::Model {
            id: self.id,
            request_id: self.request_id.clone(),
            timestamp: self.timestamp,
            caller_id: self.caller_id.clone(),
            api_key_id: self.api_key_id,
            method: self.method.clone(),
            tool_name: self.tool_name.clone(),
            decision: self.decision.as_str().to_owned(),
            reason: self.reason.clone(),
            raw_args_hash: self.raw_args_hash.clone(),
            sanitized_args: self.sanitized_args.clone(),
            redaction_flags: serde_json::to_value(&self.redaction_flags)
                .unwrap_or(Value::Array(Vec::new())),
            risk_labels: Value::from(self.risk_labels.clone()),
            status_code: self.status_code,
            latency_ms: self.latency_ms,
            kind: self.kind.as_str().to_owned(),
            leaf_hash: None,
        };
        row.leaf_hash = Some(hash_hex(&leaf_hash_of(&row)?));
        Ok(row)
    }

    /// The event a stored row holds (its chain link included).
    pub(crate) fn from_model(m: audit_events::Model) -> Result<Self, AuditError> {
        let corrupt = |reason: String| AuditError::CorruptRow {
            request_id: m.request_id.clone(),
            reason,
        };
        let kind = EventKind::parse(&m.kind)
            .ok_or_else(|| corrupt(format!("unknown kind {:?}", m.kind)))?;
        let decision = m
            .decision
            .parse()
            .map_err(|_| corrupt(format!("unknown decision {:?}", m.decision)))?;
        let redaction_flags = serde_json::from_value(m.redaction_flags.clone())
            .map_err(|e| corrupt(format!("redaction_flags: {e}")))?;
        let risk_labels = serde_json::from_value(m.risk_labels.clone())
            .map_err(|e| corrupt(format!("risk_labels: {e}")))?;
        Ok(Self {
            id: m.id,
            request_id: m.request_id,
            timestamp: m.timestamp,
            caller_id: m.caller_id,
            api_key_id: m.api_key_id,
            method: m.method,
            tool_name: m.tool_name,
            decision,
            reason: m.reason,
            raw_args_hash: m.raw_args_hash,
            sanitized_args: m.sanitized_args,
            redaction_flags,
            risk_labels,
            status_code: m.status_code,
            latency_ms: m.latency_ms,
            kind,
            inclusion: None,
        })
    }

    /// The spill-file form of this event.
    pub(crate) fn to_spill(&self) -> crate::spill::SpillRecord {
        crate::spill::SpillRecord {
            v: 1,
            id: self.id,
            request_id: self.request_id.clone(),
            timestamp: self.timestamp,
            caller_id: self.caller_id.clone(),
            api_key_id: self.api_key_id,
            method: self.method.clone(),
            tool_name: self.tool_name.clone(),
            decision: self.decision.as_str().to_owned(),
            reason: self.reason.clone(),
            raw_args_hash: self.raw_args_hash.clone(),
            sanitized_args: self.sanitized_args.clone(),
            redaction_flags: self.redaction_flags.clone(),
            risk_labels: self.risk_labels.clone(),
            status_code: self.status_code,
            latency_ms: self.latency_ms,
            kind: Some(self.kind.as_str().to_owned()),
        }
    }

    /// An event read back from the spill file (already redacted when written).
    pub(crate) fn from_spill(r: crate::spill::SpillRecord) -> Result<Self, AuditError> {
        Ok(Self {
            id: r.id,
            request_id: r.request_id,
            timestamp: r.timestamp,
            caller_id: r.caller_id,
            api_key_id: r.api_key_id,
            method: r.method,
            tool_name: r.tool_name,
            decision: r.decision.parse()?,
            reason: r.reason,
            raw_args_hash: r.raw_args_hash,
            sanitized_args: r.sanitized_args,
            redaction_flags: r.redaction_flags,
            risk_labels: r.risk_labels,
            status_code: r.status_code,
            latency_ms: r.latency_ms,
            // Only tool calls are ever spilled: anything else in the file
            // (an "admin" line) was not written by a logger.
            kind: match r.kind.as_deref() {
                None | Some("tool_call") => EventKind::ToolCall,
                Some(k) => {
                    return Err(AuditError::InvalidField {
                        field: "kind",
                        reason: format!("a spilled event must be a tool call, not {k:?}"),
                    });
                }
            },
            inclusion: None,
        })
    }
}
