//! The approval domain types.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use warden_entity::approval_requests;

use crate::{ApprovalError, ApprovalToken};

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ApprovalStatus {
    /// Waiting for a person.
    Pending,
    /// A person allowed the call.
    Approved,
    /// A person refused the call.
    Denied,
    /// Nobody decided in time, or an approved call was not run within its
    /// execution window: the call is refused.
    Expired,
    /// The gateway consumed the approval and ran the call: it cannot be used
    /// again.
    Executed,
}

impl ApprovalStatus {
    /// The stored form (`PENDING`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Denied => "DENIED",
            Self::Expired => "EXPIRED",
            Self::Executed => "EXECUTED",
        }
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApprovalStatus {
    type Err = ApprovalError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PENDING" => Ok(Self::Pending),
            "APPROVED" => Ok(Self::Approved),
            "DENIED" => Ok(Self::Denied),
            "EXPIRED" => Ok(Self::Expired),
            "EXECUTED" => Ok(Self::Executed),
            other => Err(ApprovalError::InvalidField {
                field: "status",
                reason: format!("unknown status {other:?}"),
            }),
        }
    }
}

/// What the gateway asks a person to approve: one exact tool call.
#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    /// The gateway's id for the held call (one PENDING approval per id).
    pub request_id: String,
    /// Who made the call.
    pub caller_id: String,
    /// The tool it wants to run.
    pub tool_name: String,
    /// The call's arguments **already redacted** (e.g. the audit event's
    /// sanitized args): shown to the approver and stored.
    pub sanitized_tool_call: Value,
    /// SHA-256 (hex) of the canonical raw arguments: binds the approval to
    /// this exact call; the gateway must refuse to run different arguments.
    pub raw_args_hash: String,
    /// Why the call needs approval.
    pub risk_labels: Vec<String>,
    /// The version of the policy that held the call (e.g. its file's hash):
    /// a call re-evaluated under another policy needs a new approval.
    pub policy_version: String,
    /// How long a person has to decide (default: the manager's TTL).
    pub ttl: Option<Duration>,
}

impl ApprovalRequest {
    /// The binding a [`crate::ApprovalManager::consume`] re-checks: this
    /// request's caller, tool, raw-arguments hash and policy version.
    pub fn binding(&self) -> CallBinding {
        CallBinding {
            caller_id: self.caller_id.clone(),
            tool_name: self.tool_name.clone(),
            raw_args_hash: self.raw_args_hash.to_ascii_lowercase(),
            policy_version: self.policy_version.clone(),
        }
    }
}

/// The call the gateway is about to run, as [`crate::ApprovalManager::consume`]
/// compares it with the call the approval was shown for: any difference
/// refuses the approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallBinding {
    /// Who is making the call.
    pub caller_id: String,
    /// The tool it runs.
    pub tool_name: String,
    /// SHA-256 (hex) of the canonical raw arguments it runs with.
    pub raw_args_hash: String,
    /// The policy version it is evaluated under.
    pub policy_version: String,
}

/// A decision, once made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalResult {
    /// Approved, denied or expired.
    pub status: ApprovalStatus,
    /// Who decided (None when it expired).
    pub approver_id: Option<String>,
    /// The decider's note.
    pub note: Option<String>,
    /// When.
    pub decided_at: DateTime<Utc>,
}

/// An approval as stored (both in PostgreSQL and, as JSON, in Redis).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approval {
    /// The approval's id.
    pub id: Uuid,
    /// The held call's request id.
    pub request_id: String,
    /// Who made the call.
    pub caller_id: String,
    /// The tool.
    pub tool_name: String,
    /// The sanitized call.
    pub tool_call: Value,
    /// The raw-arguments hash the approval is bound to.
    pub raw_args_hash: String,
    /// Why it needed approval.
    pub risk_labels: Vec<String>,
    /// Where it stands (as stored; see [`Approval::effective_status`]).
    pub status: ApprovalStatus,
    /// When it was issued.
    pub created_at: DateTime<Utc>,
    /// When it can no longer be approved.
    pub expires_at: DateTime<Utc>,
    /// The policy version the call was held under.
    pub policy_version: String,
    /// For an approved call: the instant before which it must be consumed.
    pub execute_by: Option<DateTime<Utc>>,
    /// When the gateway consumed it (status EXECUTED).
    pub executed_at: Option<DateTime<Utc>>,
    /// The decision, once made.
    pub result: Option<ApprovalResult>,
}

impl Approval {
    /// The status at `now` (the database's clock): a PENDING approval past
    /// its expiry, and an APPROVED one past its execution window, are
    /// EXPIRED, whatever storage says.
    pub fn effective_status(&self, now: DateTime<Utc>) -> ApprovalStatus {
        match self.status {
            ApprovalStatus::Pending if now >= self.expires_at => ApprovalStatus::Expired,
            ApprovalStatus::Approved if self.execute_by.is_none_or(|by| now >= by) => {
                ApprovalStatus::Expired
            }
            status => status,
        }
    }

    /// True for an approval a person approved that has not been consumed.
    /// Only [`crate::ApprovalManager::consume`] lets the call run.
    pub fn is_approved(&self) -> bool {
        self.status == ApprovalStatus::Approved
    }

    /// The first part of `binding` that differs from the call this approval
    /// was shown for, if any.
    pub fn binding_mismatch(&self, binding: &CallBinding) -> Option<&'static str> {
        if self.caller_id != binding.caller_id {
            Some("caller_id")
        } else if self.tool_name != binding.tool_name {
            Some("tool_name")
        } else if !self
            .raw_args_hash
            .eq_ignore_ascii_case(&binding.raw_args_hash)
        {
            Some("raw_args_hash")
        } else if self.policy_version != binding.policy_version {
            Some("policy_version")
        } else {
            None
        }
    }

    pub(crate) fn from_model(m: approval_requests::Model) -> Result<Self, ApprovalError> {
        let status: ApprovalStatus = m.status.parse()?;
        let risk_labels =
            serde_json::from_value(m.risk_labels).map_err(|e| ApprovalError::CorruptRow {
                reason: format!("risk_labels: {e}"),
            })?;
        // A consumed approval's decision was an approval.
        let decision = match status {
            ApprovalStatus::Executed => ApprovalStatus::Approved,
            other => other,
        };
        let result = m.decided_at.map(|decided_at| ApprovalResult {
            status: decision,
            approver_id: m.approver_id.clone(),
            note: m.note.clone(),
            decided_at,
        });
        Ok(Self {
            id: m.id,
            request_id: m.request_id,
            caller_id: m.caller_id,
            tool_name: m.tool_name,
            tool_call: m.tool_call,
            raw_args_hash: m.raw_args_hash,
            risk_labels,
            status,
            created_at: m.created_at,
            expires_at: m.expires_at,
            policy_version: m.policy_version,
            execute_by: m.execute_by,
            executed_at: m.executed_at,
            result: if status == ApprovalStatus::Pending {
                None
            } else {
                result
            },
        })
    }
}

/// What [`crate::ApprovalManager::issue`] did.
#[derive(Debug, Clone)]
pub enum IssueOutcome {
    /// A new approval; hand the token to the person who decides.
    Issued {
        /// The approval's id.
        id: Uuid,
        /// The one-time token (shown only here).
        token: ApprovalToken,
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
    /// The request already has a PENDING approval: no second one was made,
    /// and its token is not shown again.
    Existing {
        /// The existing approval's id.
        id: Uuid,
        /// Its status.
        status: ApprovalStatus,
        /// When it expires.
        expires_at: DateTime<Utc>,
    },
}

/// How [`crate::ApprovalManager::wait_for_decision`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum WaitOutcome {
    /// A person approved or denied it.
    Decided(Approval),
    /// The wait timed out while it was still pending.
    TimedOut(Approval),
}
