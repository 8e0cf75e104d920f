//! The policy file (`policies/default.yaml`): roles and trust levels, the
//! site's redaction rules, and the tool rules a gateway applies.

use std::collections::HashSet;

use serde::Deserialize;

use crate::KeyError;

/// One trust level.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustLevel {
    /// Its number (0 = least trusted).
    pub level: i16,
    /// Its name.
    pub name: String,
    /// What it allows.
    #[serde(default)]
    pub description: String,
}

/// What a person holding a key of a role may do beyond calling tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Permission {
    /// Decide held tool calls (approve or deny) in the approver console.
    Approve,
    /// List and revoke API keys in the approver console.
    ManageKeys,
}

/// One role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Its name (what keys carry).
    pub name: String,
    /// The highest trust level a key with this role may have.
    pub max_trust_level: i16,
    /// What it is for.
    #[serde(default)]
    pub description: String,
    /// What its keys' holders may do beyond calling tools (none by default).
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

/// Roles and trust levels, validated: unique names and levels, levels
/// 0..=100, every role's maximum an existing level; and the site's extra
/// redaction rules, validated as the audit layer will compile them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The trust levels.
    pub trust_levels: Vec<TrustLevel>,
    /// The roles.
    pub roles: Vec<Role>,
    /// Extra secret key names and value patterns (optional section
    /// `redaction:`), added to the built-in redaction rules.
    #[serde(default)]
    pub redaction: warden_audit::RedactionRules,
    /// What a gateway does with each tool call (optional section `tools:`),
    /// first matching rule wins; a call no rule matches is denied.
    #[serde(default)]
    pub tools: Vec<ToolRule>,
    /// The policy's version: SHA-256 (hex) of its canonical form (the parsed
    /// document as canonical JSON: comments, layout and key order do not
    /// count). Recorded on every gateway event and bound to every approval.
    #[serde(skip)]
    pub version: String,
}

/// What a gateway does with a tool call a rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolDecision {
    /// Forward it.
    Allow,
    /// Refuse it.
    Deny,
    /// Hold it until a person approves it.
    RequireApproval,
}

/// A per-tool rate limit: at most `requests` per `per_seconds`, per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRateLimit {
    /// Requests allowed in the period (at least 1).
    pub requests: u32,
    /// The period, in seconds (at least 1).
    pub per_seconds: u32,
}

/// What a rule governs: tool calls, prompts (`prompts/get`) or resources
/// (`resources/read`, its `tool` glob matched against the URI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// `tools/call` (the default).
    #[default]
    Tool,
    /// `prompts/get`.
    Prompt,
    /// `resources/read`.
    Resource,
}

/// One tool rule: which calls it matches and what happens to them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// What it governs (default: tool calls).
    #[serde(default)]
    pub kind: RuleKind,
    /// The upstream server's name, as a glob (`*` any run, `?` one character).
    pub server: String,
    /// The tool's name on that server, as a glob.
    pub tool: String,
    /// Roles it applies to (any role when empty).
    #[serde(default)]
    pub roles: Vec<String>,
    /// The lowest trust level it applies to.
    #[serde(default)]
    pub min_trust_level: i16,
    /// What happens to a matching call.
    pub decision: ToolDecision,
    /// For `require_approval`: how long a person has to decide, in seconds
    /// (1..=86400; default `APPROVAL_TOKEN_TTL_SECONDS`).
    #[serde(default)]
    pub approval_ttl_seconds: Option<u64>,
    /// Labels shown to the approver and recorded on the call's events.
    #[serde(default)]
    pub risk_labels: Vec<String>,
    /// An optional rate limit for this rule's calls, per caller.
    #[serde(default)]
    pub rate_limit: Option<ToolRateLimit>,
}

impl ToolRule {
    /// Whether this rule applies to `server`/`tool` called with a key of
    /// `role` at `trust_level`.
    pub fn matches(&self, server: &str, tool: &str, role: &str, trust_level: i16) -> bool {
        glob_matches(&self.server, server)
            && glob_matches(&self.tool, tool)
            && (self.roles.is_empty() || self.roles.iter().any(|r| r == role))
            && trust_level >= self.min_trust_level
    }
}

/// `*` matches any run of characters (none included), `?` exactly one;
/// everything else matches itself. Linear in practice: no backtracking
/// beyond the last `*`.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Policy {
    /// Parses and validates YAML; errors name what is wrong (and where, for
    /// syntax errors).
    pub fn from_yaml(text: &str) -> Result<Self, KeyError> {
        let policy: Policy = yaml_serde::from_str(text).map_err(|e| KeyError::Policy {
            reason: e.to_string(),
        })?;
        policy.validate()?;
        // The version: the document's canonical JSON, hashed. Parsed again
        // as plain data so that layout, comments and key order do not count.
        let document: serde_json::Value =
            yaml_serde::from_str(text).map_err(|e| KeyError::Policy {
                reason: e.to_string(),
            })?;
        let mut policy = policy;
        policy.version = warden_audit::canonical_hash(&document).map_err(|e| KeyError::Policy {
            reason: format!("the policy cannot be hashed: {e}"),
        })?;
        Ok(policy)
    }

    /// The first tool rule matching `server`/`tool` for a key of `role` at
    /// `trust_level`, with its position; `None` means the call is denied.
    pub fn tool_rule(
        &self,
        server: &str,
        tool: &str,
        role: &str,
        trust_level: i16,
    ) -> Option<(usize, &ToolRule)> {
        self.rule_for(RuleKind::Tool, server, tool, role, trust_level)
    }

    /// The first rule of `kind` matching `server`/`name` (a tool, a prompt,
    /// a resource's URI) for a key of `role` at `trust_level`; `None`
    /// means it is denied.
    pub fn rule_for(
        &self,
        kind: RuleKind,
        server: &str,
        name: &str,
        role: &str,
        trust_level: i16,
    ) -> Option<(usize, &ToolRule)> {
        self.tools
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.kind == kind && rule.matches(server, name, role, trust_level))
    }

    fn validate(&self) -> Result<(), KeyError> {
        let fail = |reason: String| Err(KeyError::Policy { reason });
        if self.trust_levels.is_empty() || self.roles.is_empty() {
            return fail("at least one trust level and one role are required".into());
        }
        let mut levels = HashSet::new();
        for t in &self.trust_levels {
            if !(0..=100).contains(&t.level) {
                return fail(format!(
                    "trust level {:?} has level {} (expected 0..=100)",
                    t.name, t.level
                ));
            }
            if !levels.insert(t.level) {
                return fail(format!("trust level {} is defined twice", t.level));
            }
        }
        let mut names = HashSet::new();
        for r in &self.roles {
            if r.name.is_empty()
                || r.name.len() > 64
                || !r
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return fail(format!(
                    "role name {:?} must be 1-64 letters, digits, '-' or '_'",
                    r.name
                ));
            }
            if !names.insert(r.name.as_str()) {
                return fail(format!("role {:?} is defined twice", r.name));
            }
            if !levels.contains(&r.max_trust_level) {
                return fail(format!(
                    "role {:?} allows trust level {}, which is not defined",
                    r.name, r.max_trust_level
                ));
            }
        }
        if let Err(e) = warden_audit::Redactor::default().with_rules(&self.redaction) {
            return fail(format!("redaction: {e}"));
        }
        for (i, rule) in self.tools.iter().enumerate() {
            let at = format!("tools[{i}] ({}/{})", rule.server, rule.tool);
            for (what, glob) in [("server", &rule.server), ("tool", &rule.tool)] {
                // A resource rule's `tool` is a URI glob: any printable text.
                let uri = what == "tool" && rule.kind == RuleKind::Resource;
                if glob.is_empty()
                    || glob.len() > 512
                    || !glob.chars().all(|c| {
                        c.is_ascii_alphanumeric()
                            || "_-.*?/".contains(c)
                            || (uri && !c.is_control() && !c.is_whitespace())
                    })
                {
                    return fail(format!(
                        "{at}: {what} must be 1-128 letters, digits, '_', '-', '.', '/' or the globs '*' '?'"
                    ));
                }
            }
            for role in &rule.roles {
                if !names.contains(role.as_str()) {
                    return fail(format!("{at}: unknown role {role:?}"));
                }
            }
            if !levels.contains(&rule.min_trust_level) {
                return fail(format!(
                    "{at}: min_trust_level {} is not a defined trust level",
                    rule.min_trust_level
                ));
            }
            if rule.kind != RuleKind::Tool && rule.decision == ToolDecision::RequireApproval {
                return fail(format!(
                    "{at}: require_approval applies to tool calls only (prompts and resources are allow or deny)"
                ));
            }
            match (rule.decision, rule.approval_ttl_seconds) {
                (ToolDecision::RequireApproval, Some(ttl)) if !(1..=86_400).contains(&ttl) => {
                    return fail(format!("{at}: approval_ttl_seconds must be 1..=86400"));
                }
                (ToolDecision::Allow | ToolDecision::Deny, Some(_)) => {
                    return fail(format!(
                        "{at}: approval_ttl_seconds only applies to require_approval"
                    ));
                }
                _ => {}
            }
            if let Some(limit) = rule.rate_limit
                && (limit.requests == 0 || limit.per_seconds == 0)
            {
                return fail(format!(
                    "{at}: rate_limit needs requests and per_seconds ≥ 1"
                ));
            }
            if rule
                .risk_labels
                .iter()
                .any(|l| warden_common::identifier(l, 64).is_err())
            {
                return fail(format!(
                    "{at}: risk labels must be 1-64 characters without control characters"
                ));
            }
        }
        Ok(())
    }

    /// A redactor with the built-in rules plus this policy's `redaction:`
    /// rules (already validated when the policy was parsed).
    pub fn redactor(&self) -> Result<warden_audit::Redactor, KeyError> {
        warden_audit::Redactor::default()
            .with_rules(&self.redaction)
            .map_err(|e| KeyError::Policy {
                reason: format!("redaction: {e}"),
            })
    }

    /// True when keys of `role` carry `permission` (an unknown role carries
    /// none).
    pub fn allows(&self, role: &str, permission: Permission) -> bool {
        self.roles
            .iter()
            .any(|r| r.name == role && r.permissions.contains(&permission))
    }

    /// Checks that a key with `role` may have `trust_level`.
    pub fn check(&self, role: &str, trust_level: i16) -> Result<(), KeyError> {
        let r = self
            .roles
            .iter()
            .find(|r| r.name == role)
            .ok_or_else(|| KeyError::Policy {
                reason: format!("unknown role {role:?}"),
            })?;
        if !self.trust_levels.iter().any(|t| t.level == trust_level) {
            return Err(KeyError::Policy {
                reason: format!("unknown trust level {trust_level}"),
            });
        }
        if trust_level > r.max_trust_level {
            return Err(KeyError::Policy {
                reason: format!(
                    "role {role:?} allows trust level {} at most, not {trust_level}",
                    r.max_trust_level
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GOOD: &str = "trust_levels:\n  - { level: 0, name: none }\n  - { level: 2, name: std }\nroles:\n  - { name: developer, max_trust_level: 2 }\n";

    #[test]
    fn valid_policy_checks_keys() {
        let p = Policy::from_yaml(GOOD).unwrap();
        assert!(p.check("developer", 2).is_ok());
        assert!(p.check("developer", 1).is_err(), "undefined level");
        assert!(p.check("admin", 0).is_err());
    }

    #[test]
    fn the_shipped_policy_is_valid() {
        let p = Policy::from_yaml(include_str!("../../../policies/default.yaml")).unwrap();
        assert!(p.check("developer", 2).is_ok());
        assert!(p.allows("approver", Permission::Approve));
        assert!(!p.allows("approver", Permission::ManageKeys));
        assert!(
            p.allows("admin", Permission::Approve) && p.allows("admin", Permission::ManageKeys)
        );
        for role in ["viewer", "developer", "service", "no-such-role"] {
            assert!(!p.allows(role, Permission::Approve), "{role}");
        }
    }

    #[test]
    fn unknown_permissions_are_refused() {
        let bad = "trust_levels:\n  - { level: 0, name: none }\nroles:\n  - { name: r, max_trust_level: 0, permissions: [approve, launch_missiles] }\n";
        let err = Policy::from_yaml(bad).unwrap_err().to_string();
        assert!(err.contains("launch_missiles"), "{err}");
    }

    #[test]
    fn broken_policies_are_refused_with_reasons() {
        for (bad, expect) in [
            ("trust_levels: [", "while parsing"),
            ("trust_levels: []\nroles: []\n", "at least one"),
            (
                "trust_levels:\n  - { level: 1, name: a }\n  - { level: 1, name: b }\nroles:\n  - { name: r, max_trust_level: 1 }\n",
                "defined twice",
            ),
            (
                "trust_levels:\n  - { level: 1, name: a }\nroles:\n  - { name: r, max_trust_level: 3 }\n",
                "not defined",
            ),
            (
                "trust_levels:\n  - { level: 1, name: a }\nroles:\n  - { name: 'bad role', max_trust_level: 1 }\n",
                "role name",
            ),
            (
                "trust_levels:\n  - { level: 1, name: a, extra: 1 }\nroles: []\n",
                "unknown field",
            ),
        ] {
            let err = Policy::from_yaml(bad).unwrap_err().to_string();
            assert!(err.contains(expect), "{bad:?}: {err}");
        }
    }

    #[test]
    fn globs_match_whole_names() {
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("*", "", true),
            ("get_*", "get_current_time", true),
            ("get_*", "set_time", false),
            ("*_time", "convert_time", true),
            ("conv?rt_time", "convert_time", true),
            ("convert", "convert_time", false),
            ("a*b*c", "a-b-b-c", true),
            ("a*b*c", "a-b-b-d", false),
            ("*.read", "fs.read", true),
        ] {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} {text}");
        }
    }

    #[test]
    fn tool_rules_first_match_wins_and_are_validated() {
        let text = format!(
            "{GOOD}tools:\n  - {{ server: fs, tool: 'read*', roles: [developer], min_trust_level: 2, decision: allow }}\n  - {{ server: '*', tool: '*', decision: require_approval, approval_ttl_seconds: 60, risk_labels: [unlisted] }}\n"
        );
        let p = Policy::from_yaml(&text).unwrap();
        assert_eq!(p.tool_rule("fs", "read_file", "developer", 2).unwrap().0, 0);
        // Too little trust, or another tool: the catch-all.
        assert_eq!(p.tool_rule("fs", "read_file", "developer", 0).unwrap().0, 1);
        assert_eq!(
            p.tool_rule("git", "push", "developer", 2)
                .unwrap()
                .1
                .decision,
            ToolDecision::RequireApproval
        );
        // No rule at all: None (the gateway denies).
        assert!(
            Policy::from_yaml(GOOD)
                .unwrap()
                .tool_rule("fs", "read", "developer", 2)
                .is_none()
        );
        for (rule, says) in [
            (
                "{ server: fs, tool: x, roles: [ghost], decision: allow }",
                "unknown role",
            ),
            (
                "{ server: fs, tool: x, min_trust_level: 1, decision: allow }",
                "min_trust_level",
            ),
            (
                "{ server: fs, tool: x, decision: allow, approval_ttl_seconds: 5 }",
                "only applies",
            ),
            (
                "{ server: fs, tool: x, decision: require_approval, approval_ttl_seconds: 0 }",
                "1..=86400",
            ),
            (
                "{ server: 'f s', tool: x, decision: allow }",
                "server must be",
            ),
            (
                "{ server: fs, tool: x, decision: allow, rate_limit: { requests: 0, per_seconds: 1 } }",
                "rate_limit",
            ),
            (
                "{ server: fs, tool: x, decision: maybe }",
                "unknown variant",
            ),
            (
                "{ server: fs, tool: x, decision: allow, extra: 1 }",
                "unknown field",
            ),
        ] {
            let err = Policy::from_yaml(&format!("{GOOD}tools:\n  - {rule}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{rule}: {err}");
        }
    }

    #[test]
    fn the_version_is_the_canonical_forms_hash() {
        let a = Policy::from_yaml(GOOD).unwrap();
        // Other layout, comments and key order: the same version.
        let b = Policy::from_yaml(
            "# comment\nroles:\n  - { max_trust_level: 2, name: developer }\ntrust_levels:\n  - { name: none, level: 0 }\n  - { level: 2, name: std }\n",
        )
        .unwrap();
        assert_eq!(a.version, b.version);
        assert_eq!(a.version.len(), 64);
        // Any change of substance: another version.
        let c =
            Policy::from_yaml(&GOOD.replace("max_trust_level: 2", "max_trust_level: 0")).unwrap();
        assert_ne!(a.version, c.version);
    }
}
