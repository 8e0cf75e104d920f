//! The policy file (`policies/default.yaml`): roles and trust levels.

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
}

impl Policy {
    /// Parses and validates YAML; errors name what is wrong (and where, for
    /// syntax errors).
    pub fn from_yaml(text: &str) -> Result<Self, KeyError> {
        let policy: Policy = yaml_serde::from_str(text).map_err(|e| KeyError::Policy {
            reason: e.to_string(),
        })?;
        policy.validate()?;
        Ok(policy)
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
}
