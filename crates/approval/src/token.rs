use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::ApprovalError;

/// A one-time approval token: 32 bytes from the operating system's CSPRNG,
/// URL-safe base64 without padding (43 characters).
///
/// `Debug` and `Display` never show it; only its SHA-256 is ever stored (in
/// PostgreSQL and as the Redis key). Read it with [`ApprovalToken::expose`]
/// only to hand it to the person who decides.
#[derive(Clone, PartialEq, Eq)]
pub struct ApprovalToken(String);

const TOKEN_BYTES: usize = 32;
const TOKEN_CHARS: usize = 43;

impl ApprovalToken {
    /// A fresh random token.
    pub fn generate() -> Result<Self, ApprovalError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| ApprovalError::Database {
            reason: format!("the operating system's random source failed: {e}"),
        })?;
        Ok(Self(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A token as presented by a caller, if it has the exact shape of one.
    /// Anything else is not a token (and is never looked up).
    pub fn parse(presented: &str) -> Option<Self> {
        if presented.len() != TOKEN_CHARS {
            return None;
        }
        let decoded = URL_SAFE_NO_PAD.decode(presented).ok()?;
        (decoded.len() == TOKEN_BYTES).then(|| Self(presented.to_owned()))
    }

    /// The token itself. Give it only to the person who decides.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the token: the only form that is stored.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ApprovalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApprovalToken([redacted])")
    }
}

impl fmt::Display for ApprovalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted approval token]")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_well_formed_and_redacted() {
        let a = ApprovalToken::generate().unwrap();
        let b = ApprovalToken::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 43);
        assert_eq!(ApprovalToken::parse(a.expose()), Some(a.clone()));
        assert!(!format!("{a:?} {a}").contains(a.expose()));
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn malformed_tokens_do_not_parse() {
        let good = ApprovalToken::generate().unwrap();
        let mut cases: Vec<String> = vec![
            String::new(),
            "x".into(),
            "a".repeat(42),
            "a".repeat(44),
            format!("{}=", &good.expose()[..42]),
            "+".repeat(43),
            "é".repeat(22),
            "' OR 1=1 --".into(),
        ];
        cases.push("\0".repeat(43));
        for bad in cases {
            assert!(ApprovalToken::parse(&bad).is_none(), "{bad:?}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod hostile {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 5000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Strings of every length and content: parsing never panics, and only
        /// the exact token shape is accepted.
        #[test]
        fn arbitrary_strings_never_parse_unless_well_formed(s in ".{0,120}", raw in prop::collection::vec(any::<u8>(), 0..120)) {
            for candidate in [s, String::from_utf8_lossy(&raw).into_owned()] {
                if let Some(t) = ApprovalToken::parse(&candidate) {
                    prop_assert_eq!(candidate.len(), 43);
                    prop_assert_eq!(t.expose(), candidate.as_str());
                }
            }
        }
    }
}
