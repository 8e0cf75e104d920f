use std::fmt;

use crate::CacheError;

/// The namespace every cache key Warden writes starts with, e.g. `warden:`.
///
/// Guarantees: non-empty, at most 64 bytes, printable ASCII without spaces or
/// glob characters (`*?[]`), so a prefix can never match another tenant's keys
/// in a `SCAN MATCH prefix*`, and it always ends with `:`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Validates `prefix`, appending `:` when it does not end with one.
    pub fn new(prefix: &str) -> Result<Self, CacheError> {
        let invalid = |reason: &str| CacheError::InvalidConfig {
            what: "key prefix",
            reason: reason.to_owned(),
        };
        if prefix.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if prefix.len() > 64 {
            return Err(invalid("must be at most 64 bytes"));
        }
        if let Some(bad) = prefix.chars().find(|c| {
            !c.is_ascii_graphic() || matches!(c, '*' | '?' | '[' | ']' | '\\' | '{' | '}')
        }) {
            // Braces would become the Redis Cluster hash tag of every key:
            // keys that must share a slot could be split, or all keys piled
            // into one slot.
            return Err(invalid(&format!(
                "must be printable ASCII without spaces, glob characters or braces, found {bad:?}"
            )));
        }
        let mut owned = prefix.to_owned();
        if !owned.ends_with(':') {
            owned.push(':');
        }
        Ok(Self(owned))
    }

    /// The prefix, ending with `:`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `prefix` + `key`: the full Redis key for a caller's key.
    pub fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.0.len() + key.len());
        full.push_str(&self.0);
        full.push_str(key);
        full
    }
}

impl fmt::Debug for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPrefix({:?})", self.0)
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_gets_a_trailing_colon() {
        assert_eq!(
            KeyPrefix::new("warden").map(|p| p.key("x")).ok(),
            Some("warden:x".into())
        );
        assert_eq!(
            KeyPrefix::new("warden:").map(|p| p.key("x")).ok(),
            Some("warden:x".into())
        );
    }

    #[test]
    fn hostile_prefixes_are_refused() {
        for bad in [
            "",
            "a b",
            "a*",
            "pre?",
            "x{}",
            "{tenant}:",
            "x[1]",
            "tab\t",
            "ünï",
            &"x".repeat(65),
        ] {
            assert!(KeyPrefix::new(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
