use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::KeyError;

/// A plaintext API key: `wdn_<environment>_<lookup id>_<secret>`.
///
/// The `wdn_<environment>_<lookup id>` part is public (stored as
/// `key_prefix`, used to find the row); the secret is 32 random bytes in
/// URL-safe base64, stored only as a bcrypt hash. `Debug` and `Display` show
/// only the public part. It exists in plaintext once: in the value
/// [`crate::KeyManager::create`] returns.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainApiKey {
    full: String,
    prefix_len: usize,
}

const LOOKUP_HEX: usize = 12;
const SECRET_CHARS: usize = 43;

impl PlainApiKey {
    pub(crate) fn generate(environment: &str) -> Result<Self, KeyError> {
        let mut lookup = [0u8; LOOKUP_HEX / 2];
        let mut secret = [0u8; 32];
        let fill = |buf: &mut [u8]| {
            getrandom::fill(buf).map_err(|e| KeyError::Hashing {
                reason: format!("the operating system's random source failed: {e}"),
            })
        };
        fill(&mut lookup)?;
        fill(&mut secret)?;
        let lookup: String = lookup.iter().map(|b| format!("{b:02x}")).collect();
        let prefix = format!("wdn_{environment}_{lookup}");
        Ok(Self {
            prefix_len: prefix.len(),
            full: format!("{prefix}_{}", URL_SAFE_NO_PAD.encode(secret)),
        })
    }

    /// A presented key, if it has the exact shape of one; anything else is
    /// invalid without touching storage.
    pub fn parse(presented: &str) -> Option<Self> {
        let mut parts = presented.splitn(4, '_');
        let (wdn, env, lookup, secret) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let env_ok =
            !env.is_empty() && env.len() <= 16 && env.bytes().all(|b| b.is_ascii_lowercase());
        let lookup_ok = lookup.len() == LOOKUP_HEX
            && lookup
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let secret_ok = secret.len() == SECRET_CHARS
            && URL_SAFE_NO_PAD.decode(secret).is_ok_and(|s| s.len() == 32);
        (wdn == "wdn" && env_ok && lookup_ok && secret_ok).then(|| Self {
            full: presented.to_owned(),
            prefix_len: 4 + env.len() + 1 + LOOKUP_HEX,
        })
    }

    /// The public part, `wdn_<environment>_<lookup id>` (safe to show and log).
    pub fn prefix(&self) -> &str {
        &self.full[..self.prefix_len]
    }

    pub(crate) fn secret(&self) -> &str {
        &self.full[self.prefix_len + 1..]
    }

    /// The whole key. Show it to its owner once; never log or store it.
    pub fn expose(&self) -> &str {
        &self.full
    }
}

impl fmt::Debug for PlainApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlainApiKey({}_[redacted])", self.prefix())
    }
}

impl fmt::Display for PlainApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_[redacted]", self.prefix())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_and_redact() {
        let k = PlainApiKey::generate("production").unwrap();
        assert!(k.expose().starts_with("wdn_production_"));
        assert_eq!(PlainApiKey::parse(k.expose()), Some(k.clone()));
        assert!(!format!("{k:?} {k}").contains(k.secret()));
        assert!(format!("{k}").starts_with(k.prefix()));
        assert!(k.secret().len() == 43);
    }

    #[test]
    fn malformed_keys_do_not_parse() {
        let k = PlainApiKey::generate("dev").unwrap();
        let good = k.expose().to_owned();
        for bad in [
            String::new(),
            "wdn".into(),
            good.replacen("wdn_", "xyz_", 1),
            good[..good.len() - 1].to_owned(),
            format!("{good}A"),
            good.replacen("_dev_", "_DEV_", 1),
            good.replacen("_dev_", "__", 1),
            "wdn_dev_zzzzzzzzzzzz_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(),
            "' OR 1=1 --".into(),
            "wdn_dev_0123456789ab_\0\0\0".into(),
        ] {
            assert!(PlainApiKey::parse(&bad).is_none(), "{bad:?}");
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

        /// Keys of every length and content: parsing never panics, and whatever
        /// parses has the exact key shape.
        #[test]
        fn arbitrary_strings_never_parse_unless_well_formed(s in ".{0,150}", prefix_env in "[a-z]{1,16}") {
            for candidate in [s.clone(), format!("wdn_{prefix_env}_{s}"), format!("wdn_{prefix_env}_0123456789ab_{s}")] {
                if let Some(k) = PlainApiKey::parse(&candidate) {
                    prop_assert!(k.expose().starts_with("wdn_"));
                    prop_assert_eq!(k.secret().len(), 43);
                }
            }
        }
    }
}
