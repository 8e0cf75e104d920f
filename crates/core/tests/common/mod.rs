//! Fixtures shared by the core integration tests.

use serde_json::json;
use warden_approval::ApprovalRequest;

/// A held `db.drop_table` call by `agent` under request id `id`.
pub fn request(id: &str) -> ApprovalRequest {
    ApprovalRequest {
        request_id: id.to_owned(),
        caller_id: "agent".into(),
        tool_name: "db.drop_table".into(),
        sanitized_tool_call: json!({"table": "t"}),
        raw_args_hash: "ab".repeat(32),
        risk_labels: vec![],
        policy_version: "default".into(),
        ttl: None,
    }
}
