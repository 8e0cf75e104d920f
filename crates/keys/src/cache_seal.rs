//! Sealed verification-cache entries: an HMAC-SHA256 under a server secret,
//! bound to the cache key, so that nobody who can only write the cache can
//! make an entry this process accepts.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::KeyError;

type HmacSha256 = Hmac<Sha256>;

const MAC_LEN: usize = 32;
const DOMAIN_ENTRY: &[u8] = b"warden.keys.cache-entry.v1\0";
const DOMAIN_FINGERPRINT: &[u8] = b"warden.keys.fingerprint.v1\0";

/// The server secret that seals cached key verifications (`CACHE_MAC_KEY`).
/// Every process sharing a cache must hold the same one; without one, each
/// process makes its own at random and only trusts its own entries.
/// `Debug` never shows it.
#[derive(Clone)]
pub struct CacheMacKey(HmacSha256);

impl fmt::Debug for CacheMacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CacheMacKey([redacted])")
    }
}

impl CacheMacKey {
    /// A key from secret material of at least 32 bytes (longer material is
    /// condensed with SHA-256 under a domain tag).
    pub fn from_bytes(material: &[u8]) -> Result<Self, KeyError> {
        if material.len() < 32 {
            return Err(KeyError::InvalidField {
                field: "cache_mac_key",
                reason: format!(
                    "{} bytes is too short: use at least 32 random bytes",
                    material.len()
                ),
            });
        }
        let mut mac = <HmacSha256 as KeyInit>::new_from_slice(b"warden.keys.cache-mac-key.v1")
            .map_err(|e| KeyError::Hashing {
                reason: e.to_string(),
            })?;
        mac.update(material);
        Self::keyed(&mac.finalize().into_bytes())
    }

    fn keyed(secret: &[u8]) -> Result<Self, KeyError> {
        <HmacSha256 as KeyInit>::new_from_slice(secret)
            .map(Self)
            .map_err(|e| KeyError::Hashing {
                reason: e.to_string(),
            })
    }

    /// A random key for this process alone.
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Hashing {
            reason: format!("no randomness for the cache MAC key: {e}"),
        })?;
        Self::keyed(&bytes)
    }

    fn mac(&self) -> HmacSha256 {
        self.0.clone()
    }

    /// How the cache refers to a presented key: keyed, so the cache's
    /// contents reveal nothing that can be checked offline.
    pub(crate) fn fingerprint(&self, full_key: &str) -> String {
        let mut mac = self.mac();
        mac.update(DOMAIN_FINGERPRINT);
        mac.update(full_key.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// `payload` sealed for `cache_key`: MAC bytes, then the payload.
    pub(crate) fn seal(&self, cache_key: &str, payload: &[u8]) -> Vec<u8> {
        let tag = self.tag(cache_key, payload);
        let mut out = Vec::with_capacity(MAC_LEN + payload.len());
        out.extend_from_slice(&tag);
        out.extend_from_slice(payload);
        out
    }

    /// The payload of a value sealed for `cache_key`, or `None` when the value
    /// was not sealed with this key for this cache key (forged, moved,
    /// altered or truncated).
    pub(crate) fn open<'a>(&self, cache_key: &str, sealed: &'a [u8]) -> Option<&'a [u8]> {
        if sealed.len() < MAC_LEN {
            return None;
        }
        let (tag, payload) = sealed.split_at(MAC_LEN);
        let mut mac = self.mac();
        feed(&mut mac, cache_key, payload);
        mac.verify_slice(tag).ok().map(|()| payload)
    }

    fn tag(&self, cache_key: &str, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac();
        feed(&mut mac, cache_key, payload);
        mac.finalize().into_bytes().into()
    }
}

fn feed(mac: &mut HmacSha256, cache_key: &str, payload: &[u8]) {
    mac.update(DOMAIN_ENTRY);
    mac.update(&(cache_key.len() as u64).to_be_bytes());
    mac.update(cache_key.as_bytes());
    mac.update(payload);
}

use warden_common::hex;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_entries_open_only_under_their_key_and_cache_key() {
        let key = CacheMacKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = key.seal("apikey:{a}:verified", b"{\"role\":\"reader\"}");
        assert_eq!(
            key.open("apikey:{a}:verified", &sealed),
            Some(&b"{\"role\":\"reader\"}"[..])
        );
        assert_eq!(key.open("apikey:{b}:verified", &sealed), None, "moved");
        let mut altered = sealed.clone();
        let last = altered.len() - 2;
        altered[last] ^= 1;
        assert_eq!(key.open("apikey:{a}:verified", &altered), None, "altered");
        assert_eq!(key.open("apikey:{a}:verified", &sealed[..31]), None);
        let other = CacheMacKey::generate().unwrap();
        assert_eq!(
            other.open("apikey:{a}:verified", &sealed),
            None,
            "other key"
        );
        assert!(CacheMacKey::from_bytes(&[1u8; 31]).is_err());
        assert_eq!(format!("{key:?}"), "CacheMacKey([redacted])");
    }
}
