//! The approver console (`warden serve`): people sign in with an API key
//! whose policy role has the `approve` permission, see the held tool calls
//! waiting for them, and approve or deny each one.
//!
//! Guarantees:
//! - Every page but sign-in needs a session; a session is a random id in an
//!   `HttpOnly`, `SameSite=Strict` cookie (`Secure` when served over
//!   HTTPS, then named `__Host-warden_session`), stored only as its SHA-256
//!   in the cache with a TTL. Signing out or signing in again deletes it; a
//!   revoked or expired key, or a role without the permission in the policy
//!   loaded at start, ends its sessions at their next request. Keys of
//!   another environment than the server's are refused.
//! - Every state-changing request carries the session's CSRF token (checked
//!   in constant time) besides the `SameSite=Strict` cookie; a POST from
//!   another site (`Origin` not this host, or `Sec-Fetch-Site: cross-site`)
//!   is refused before any handler, sign-in included.
//! - Nobody decides their own held call (a key's caller id is never the
//!   approver of that caller's call).
//! - Decisions go through [`warden_approval::ApprovalManager::approve_by_id`]
//!   / `deny_by_id`: exactly once, recorded as an admin event with the
//!   approver's caller id; a second approver sees who decided first.
//! - Every value is HTML-escaped by compile-time checked templates; the
//!   Content-Security-Policy allows no inline script and nothing from
//!   elsewhere (the one script — live inbox and countdowns — is served from the binary); request bodies are capped and every request is time-bounded;
//!   sign-in is rate-limited.
//! - Requests must name this console's host: its public URL's, a loopback
//!   name or an IP literal (no DNS-rebinding page gets an answer).
//! - A signed-in approver holds at most [`MAX_STREAMS_PER_APPROVER`] live
//!   streams; a stream ends within [`SESSION_RECHECK`] of its session.
//! - Text an agent chose is shown with invisible and direction-changing
//!   characters revealed as escapes.
//! - No key, session id or CSRF token is logged.

mod pages;
mod server;
mod session;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use warden_core::Warden;

pub use server::{ServeLimits, serve};
pub use session::{SECURE_SESSION_COOKIE, SESSION_COOKIE};

/// The longest one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest request body accepted (forms are small).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How often an open live-inbox stream re-checks its session.
pub const SESSION_RECHECK: Duration = Duration::from_secs(15);

/// How long a session lasts without signing in again.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// What went wrong building the console.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The policy could not be read or parsed.
    #[error("the policy could not be loaded: {0}")]
    Policy(String),
    /// The key manager could not be built from the settings.
    #[error("the key manager could not be built: {0}")]
    Keys(#[from] warden_core::CoreError),
    /// `--public-url` is not an absolute `http://` or `https://` URL.
    #[error("the public URL must be an absolute http:// or https:// URL with a host: {0}")]
    PublicUrl(String),
}

/// How people reach the console, and who stands in front of it.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// The URL people reach the console at, when it is not the bind address
    /// (a TLS proxy: `https://approvals.example.com`). With it, POSTs must
    /// come from its origin and requests must name its host (or a loopback
    /// address); an `https` URL makes cookies `Secure` (`__Host-` prefixed)
    /// and adds `Strict-Transport-Security`. Without it, only loopback names
    /// and IP literals are accepted as `Host` (a DNS-rebinding page names
    /// its own host).
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed: the sign-in rate
    /// limit then counts the last address in it that is not itself one of
    /// these, instead of the proxy's.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// The public URL's origin (`https://host:port`) and host (`host:port`),
/// lowercased.
#[derive(Debug)]
struct PublicUrl {
    origin: String,
    host: String,
}

fn public_url(text: &str) -> Result<PublicUrl, ConsoleError> {
    let invalid = || ConsoleError::PublicUrl(text.to_owned());
    let url = url::Url::parse(text).map_err(|_| invalid())?;
    if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
        return Err(invalid());
    }
    let host = url.host_str().ok_or_else(invalid)?.to_ascii_lowercase();
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    Ok(PublicUrl {
        origin: format!("{}://{host}", url.scheme()),
        host,
    })
}

/// Live-inbox streams one approver may hold open at once (tabs, devices).
pub const MAX_STREAMS_PER_APPROVER: usize = 8;

/// The console's shared state: the Warden handle, the policy, and how the
/// console is reached.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    warden: Warden,
    keys: warden_keys::KeyManager,
    approvals: warden_approval::ApprovalManager,
    policy: warden_keys::Policy,
    secure_cookies: bool,
    public: Option<PublicUrl>,
    trusted_proxies: Vec<std::net::IpAddr>,
    sign_in_limiter: warden_cache::RateLimiter,
    /// Open live-inbox streams per approver (caller id).
    streams: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("secure_cookies", &self.inner.secure_cookies)
            .finish()
    }
}

impl Console {
    /// The console over `warden`, reached as `options` say.
    pub fn new(warden: Warden, options: ConsoleOptions) -> Result<Self, ConsoleError> {
        let public = options.public_url.as_deref().map(public_url).transpose()?;
        let secure_cookies = public
            .as_ref()
            .is_some_and(|p| p.origin.starts_with("https://"));
        let (text, _) = warden
            .settings()
            .policy_source()
            .map_err(|e| ConsoleError::Policy(e.to_string()))?;
        let policy = warden_keys::Policy::from_yaml(&text)
            .map_err(|e| ConsoleError::Policy(e.to_string()))?;
        let keys = warden.keys()?;
        let approvals = warden.approvals();
        let sign_in_limiter = warden_cache::RateLimiter::new(
            warden.cache().clone(),
            "console-sign-in",
            warden_cache::RateLimit::new(10, Duration::from_secs(60))
                .map_err(|e| ConsoleError::Policy(e.to_string()))?,
            warden_cache::FailMode::Closed,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                warden,
                keys,
                approvals,
                policy,
                secure_cookies,
                public,
                trusted_proxies: options
                    .trusted_proxies
                    .iter()
                    .map(|ip| ip.to_canonical())
                    .collect(),
                sign_in_limiter,
                streams: std::sync::Mutex::default(),
            }),
        })
    }

    /// The console's routes, with its security headers, body limit and
    /// request timeout.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/", get(pages::home))
            .route("/sign-in", get(pages::sign_in_page).post(pages::sign_in))
            .route("/sign-out", post(pages::sign_out))
            .route("/inbox", get(pages::inbox))
            .route("/approvals/{id}", get(pages::approval))
            .route("/approvals/{id}/decide", post(pages::decide))
            .route("/history", get(pages::history))
            .route("/events", get(pages::events))
            .route("/audit", get(pages::audit))
            .route("/audit/proof", get(pages::audit_proof))
            .route("/static/console.js", get(pages::script))
            .route("/keys", get(pages::keys))
            .route("/keys/revoke", post(pages::revoke))
            .route("/static/console.css", get(pages::stylesheet))
            // An explicit fallback: it keeps the guard (headers, span) when
            // this router is merged with others.
            .fallback(pages::not_found)
            .layer(axum::middleware::from_fn_with_state(
                self.clone(),
                pages::guard,
            ))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .with_state(self.clone())
    }

    /// `router` (e.g. `/metrics`) behind the same guard as the console's
    /// routes: the `Host` check, security headers and request timeout.
    pub fn guarded(&self, router: Router) -> Router {
        router.layer(axum::middleware::from_fn_with_state(
            self.clone(),
            pages::guard,
        ))
    }
}

/// The longest the console waits on one audit-trail read (a page's
/// redactions, the audit view), well inside [`REQUEST_TIMEOUT`].
pub(crate) const AUDIT_READ_TIMEOUT: Duration = Duration::from_secs(5);
