//! Sessions: a random id in a cookie, its SHA-256 as the cache key, the
//! signed-in key's identity and a CSRF token as the value.

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{Console, SESSION_TTL};

/// The session cookie's name on plain HTTP (loopback).
pub const SESSION_COOKIE: &str = "warden_session";

/// The session cookie's name over HTTPS: the `__Host-` prefix makes
/// browsers refuse it from a sibling subdomain or with a `Domain`/`Path`.
pub const SECURE_SESSION_COOKIE: &str = "__Host-warden_session";

fn cookie_name(secure: bool) -> &'static str {
    if secure {
        SECURE_SESSION_COOKIE
    } else {
        SESSION_COOKIE
    }
}

/// A signed-in person.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Session {
    /// Who decides (recorded with each decision).
    pub(crate) caller_id: String,
    /// The key they signed in with.
    pub(crate) key_id: Uuid,
    /// The token every state-changing form carries.
    pub(crate) csrf: String,
    /// The key's role now (read at every request, never stored).
    #[serde(skip)]
    pub(crate) role: String,
}

use warden_common::hex;

/// 32 bytes from the operating system's CSPRNG, as hex.
pub(crate) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex(&bytes))
}

fn cache_key(id: &str) -> String {
    format!("console:session:{}", hex(&Sha256::digest(id.as_bytes())))
}

/// Starts a session for `caller_id`'s key `key_id`; returns the cookie value.
pub(crate) async fn create(console: &Console, caller_id: &str, key_id: Uuid) -> Option<String> {
    let id = random_token()?;
    let session = Session {
        caller_id: caller_id.to_owned(),
        key_id,
        csrf: random_token()?,
        role: String::new(),
    };
    let ttl = warden_cache::Ttl::new(SESSION_TTL).ok()?;
    console
        .inner
        .warden
        .cache()
        .set_json(&cache_key(&id), &session, ttl)
        .await
        .ok()?;
    Some(id)
}

/// The session the request's cookie names, if it exists and its key is
/// still active, unexpired and allowed to approve (a revoked key, or a role
/// that lost the permission, ends the session here).
pub(crate) async fn current(console: &Console, headers: &HeaderMap) -> Option<(String, Session)> {
    let id = cookie_value(headers, console.inner.secure_cookies)?;
    let cache = console.inner.warden.cache();
    let mut session: Session = cache.get_json(&cache_key(&id)).await.ok()??;
    let key = console
        .inner
        .keys
        .find_by_caller(&session.caller_id)
        .await
        .ok()??;
    let usable = key.id == session.key_id
        && key.is_usable_at(chrono::Utc::now())
        && console
            .inner
            .policy
            .allows(&key.role, warden_keys::Permission::Approve);
    if !usable {
        let _ = cache.delete(&cache_key(&id)).await;
        return None;
    }
    session.role = key.role;
    Some((id, session))
}

/// Ends the session `id`.
pub(crate) async fn end(console: &Console, id: &str) {
    let _ = console.inner.warden.cache().delete(&cache_key(id)).await;
}

/// The session cookie's value: exactly one cookie of the name, 64 hex
/// digits. Two of them (one planted by another site on a parent domain or
/// a narrower path) is no session at all, never a choice between them.
pub(crate) fn cookie_value(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = cookie_name(secure);
    let mut values = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value.to_owned());
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    (value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())).then_some(value)
}

/// The `Set-Cookie` value for session `id` (`None`: clear it).
pub(crate) fn set_cookie(id: Option<&str>, secure: bool) -> String {
    let name = cookie_name(secure);
    let secure = if secure { "; Secure" } else { "" };
    match id {
        Some(id) => format!(
            "{name}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
            SESSION_TTL.as_secs()
        ),
        None => format!("{name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"),
    }
}

/// Whether `presented` is the session's CSRF token (constant time).
pub(crate) fn csrf_ok(session: &Session, presented: &str) -> bool {
    let (a, b) = (session.csrf.as_bytes(), presented.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
