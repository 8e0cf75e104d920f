//! Notifiers: telling people an approval waits, and that it was decided.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tracing::{info, warn};

use crate::{Approval, ApprovalToken, NotifyError};

/// Something told about approvals. Implementations must never log the token.
/// Calls run in the background; an error is logged and never fails the
/// approval or the decision.
#[async_trait::async_trait]
pub trait Notifier: Send + Sync {
    /// A new approval waits for a person; `token` is what they decide with.
    async fn notify_pending(
        &self,
        approval: &Approval,
        token: &ApprovalToken,
    ) -> Result<(), NotifyError>;
    /// An approval was approved or denied.
    async fn notify_decision(&self, approval: &Approval) -> Result<(), NotifyError>;
}

/// Logs approvals at INFO (id, request, tool, expiry, decision) — never the token.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingNotifier;

#[async_trait::async_trait]
impl Notifier for LoggingNotifier {
    async fn notify_pending(
        &self,
        approval: &Approval,
        _token: &ApprovalToken,
    ) -> Result<(), NotifyError> {
        info!(
            approval_id = %approval.id,
            request_id = %approval.request_id,
            caller_id = %approval.caller_id,
            tool = %approval.tool_name,
            expires_at = %approval.expires_at,
            "approval pending"
        );
        Ok(())
    }

    async fn notify_decision(&self, approval: &Approval) -> Result<(), NotifyError> {
        let result = approval.result.as_ref();
        info!(
            approval_id = %approval.id,
            request_id = %approval.request_id,
            status = %approval.status,
            approver_id = result.and_then(|r| r.approver_id.as_deref()).unwrap_or("-"),
            "approval decided"
        );
        Ok(())
    }
}

/// POSTs JSON to a URL, signed with HMAC-SHA256 over `"{timestamp}.{body}"`:
/// headers `X-Warden-Timestamp` (Unix seconds) and
/// `X-Warden-Signature: v1=<hex>`. Retries server errors and network failures
/// with backoff (`max_attempts` in all), each attempt bounded by `timeout`.
/// The pending payload carries the token, for the approval system to act with;
/// use an https URL.
#[derive(Clone)]
pub struct WebhookNotifier {
    url: String,
    secret: Arc<Vec<u8>>,
    client: reqwest::Client,
    timeout: Duration,
    max_attempts: u32,
    backoff: Duration,
    console_url: Option<String>,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            // Only the origin: a webhook's path or query often is its token.
            .field(
                "url",
                &reqwest::Url::parse(&self.url)
                    .map(|u| format!("{}/[redacted]", u.origin().ascii_serialization()))
                    .unwrap_or_else(|_| "[unparseable URL]".into()),
            )
            .field("secret", &"[redacted]")
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

/// The signature header value for `body` sent at `timestamp` with `secret`.
pub fn webhook_signature(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
) -> Result<String, NotifyError> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|e| NotifyError {
        reason: e.to_string(),
    })?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(format!("v1={hex}"))
}

impl WebhookNotifier {
    /// Posts to `url`, signing with `secret` (at least 16 bytes); each attempt
    /// times out after `timeout`; at most `max_attempts` (1..=10) attempts.
    pub fn new(
        url: &str,
        secret: &[u8],
        timeout: Duration,
        max_attempts: u32,
    ) -> Result<Self, NotifyError> {
        if secret.len() < 16 {
            return Err(NotifyError {
                reason: "webhook secret must be at least 16 bytes".into(),
            });
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(NotifyError {
                reason: "webhook URL must be http(s)".into(),
            });
        }
        let client = http_client(timeout, &[])?;
        Ok(Self {
            url: url.to_owned(),
            secret: Arc::new(secret.to_vec()),
            client,
            timeout,
            max_attempts: max_attempts.clamp(1, 10),
            backoff: Duration::from_millis(200),
            console_url: None,
        })
    }

    /// Adds a `link` to each notification: the approval's page in the
    /// approver console at `base` (what `warden serve --public-url` says),
    /// `{base}/approvals/{id}`. The page is authorized by the person's
    /// session; the link never carries the token.
    pub fn with_console_url(mut self, base: &str) -> Result<Self, NotifyError> {
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(NotifyError {
                reason: "console URL must be http(s)".into(),
            });
        }
        self.console_url = Some(base.trim_end_matches('/').to_owned());
        Ok(self)
    }

    fn link(&self, approval: &Approval) -> Option<String> {
        self.console_url
            .as_ref()
            .map(|base| format!("{base}/approvals/{}", approval.id))
    }

    /// Also trusts the CA certificates in `pem` (one or more PEM
    /// certificates), beside the public web roots: for an endpoint behind a
    /// private CA. The server's name is still verified against its
    /// certificate. Errors when `pem` holds no usable certificate.
    pub fn with_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, NotifyError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let roots = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NotifyError {
                reason: format!("webhook CA certificates: {e}"),
            })?;
        if roots.is_empty() {
            return Err(NotifyError {
                reason: "webhook CA certificates: no PEM certificate found".into(),
            });
        }
        self.client = http_client(self.timeout, &roots)?;
        Ok(self)
    }

    async fn post(&self, payload: serde_json::Value) -> Result<(), NotifyError> {
        deliver(
            &self.client,
            &self.url,
            &payload,
            Some(&self.secret),
            self.max_attempts,
            self.backoff,
            "webhook",
        )
        .await
    }
}

/// Posts `payload` as JSON to `url`, retrying server errors and network
/// failures with exponential backoff up to `max_attempts`; a client error
/// is final. With `secret`, each attempt is signed (`x-warden-timestamp`,
/// `x-warden-signature`). `what` names the endpoint in errors and logs,
/// which never carry the URL or the body.
async fn deliver(
    client: &reqwest::Client,
    url: &str,
    payload: &serde_json::Value,
    secret: Option<&[u8]>,
    max_attempts: u32,
    backoff: Duration,
    what: &str,
) -> Result<(), NotifyError> {
    let body = serde_json::to_vec(payload).map_err(|e| NotifyError {
        reason: e.to_string(),
    })?;
    let mut delay = backoff;
    let mut last = String::new();
    for attempt in 1..=max_attempts {
        let mut request = client.post(url).header("content-type", "application/json");
        if let Some(secret) = secret {
            let timestamp = chrono::Utc::now().timestamp();
            request = request
                .header("x-warden-timestamp", timestamp.to_string())
                .header(
                    "x-warden-signature",
                    webhook_signature(secret, timestamp, &body)?,
                );
        }
        match request.body(body.clone()).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            // 429 is "later", not "never": it is retried like a server error.
            Ok(response)
                if response.status().is_client_error()
                    && response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                return Err(NotifyError {
                    reason: format!(
                        "{what} refused the notification: HTTP {}",
                        response.status()
                    ),
                });
            }
            Ok(response) => last = format!("HTTP {}", response.status()),
            // reqwest's errors name the URL, never the body.
            Err(e) => last = e.without_url().to_string(),
        }
        warn!(attempt, error = %last, "{what} delivery failed");
        if attempt < max_attempts {
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }
    Err(NotifyError {
        reason: format!("{what} failed after {max_attempts} attempts: {last}"),
    })
}

/// The HTTPS client: rustls (ring) trusting the public web roots plus
/// `extra_roots`; no redirects (a redirect could carry the token elsewhere).
fn http_client(
    timeout: Duration,
    extra_roots: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<reqwest::Client, NotifyError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for root in extra_roots {
        roots.add(root.clone()).map_err(|e| NotifyError {
            reason: format!("webhook CA certificate refused: {e}"),
        })?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| NotifyError {
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| NotifyError {
            reason: e.to_string(),
        })
}

#[async_trait::async_trait]
impl Notifier for WebhookNotifier {
    async fn notify_pending(
        &self,
        approval: &Approval,
        token: &ApprovalToken,
    ) -> Result<(), NotifyError> {
        self.post(
            json!({"event": "approval.pending", "approval": approval, "token": token.expose(), "link": self.link(approval)}),
        )
        .await
    }

    async fn notify_decision(&self, approval: &Approval) -> Result<(), NotifyError> {
        self.post(
            json!({"event": "approval.decided", "approval": approval, "link": self.link(approval)}),
        )
        .await
    }
}

/// Posts to a Slack-compatible incoming webhook (Slack, Mattermost, …): a
/// Block Kit message per pending approval — tool, caller, risk labels,
/// expiry, the start of the arguments' hash — with a Review button that
/// opens the approval's page in the approver console, and a line per
/// decision. Never the token: people decide in the console, signed in.
/// The webhook URL is the secret (these endpoints take no signature); it is
/// never logged. Retries server errors like [`WebhookNotifier`].
pub struct SlackNotifier {
    url: String,
    console_url: String,
    client: reqwest::Client,
    max_attempts: u32,
    backoff: Duration,
}

impl std::fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("console_url", &self.console_url)
            .finish_non_exhaustive()
    }
}

/// Slack's mrkdwn escaping: `&`, `<` and `>` (what would start a link or
/// a mention).
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `text` cut to `max` characters (with `…`), invisible characters revealed.
fn slack_cut(text: &str, max: usize) -> String {
    let (text, _) = warden_common::reveal_invisible(text);
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Text an agent chose, for a mrkdwn field: inside an inline code span, so
/// that no `*bold*`, `_italic_`, link or mention in it is rendered; its own
/// backticks become `ˋ`, `&<>` are escaped, invisible characters revealed.
fn slack_code(text: &str) -> String {
    format!(
        "`{}`",
        slack_escape(&slack_cut(text, 200).replace('`', "ˋ"))
    )
}

impl SlackNotifier {
    /// Posts to `webhook_url`, linking to the console at `console_url`;
    /// each attempt times out after `timeout`; at most `max_attempts`
    /// (1..=10).
    pub fn new(
        webhook_url: &str,
        console_url: &str,
        timeout: Duration,
        max_attempts: u32,
    ) -> Result<Self, NotifyError> {
        for (what, url) in [("webhook URL", webhook_url), ("console URL", console_url)] {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(NotifyError {
                    reason: format!("Slack {what} must be http(s)"),
                });
            }
        }
        Ok(Self {
            url: webhook_url.to_owned(),
            console_url: console_url.trim_end_matches('/').to_owned(),
            client: http_client(timeout, &[])?,
            max_attempts: max_attempts.clamp(1, 10),
            backoff: Duration::from_millis(200),
        })
    }

    fn link(&self, approval: &Approval) -> String {
        format!("{}/approvals/{}", self.console_url, approval.id)
    }

    async fn post(&self, payload: serde_json::Value) -> Result<(), NotifyError> {
        deliver(
            &self.client,
            &self.url,
            &payload,
            None,
            self.max_attempts,
            self.backoff,
            "Slack",
        )
        .await
    }
}

#[async_trait::async_trait]
impl Notifier for SlackNotifier {
    async fn notify_pending(
        &self,
        approval: &Approval,
        _token: &ApprovalToken,
    ) -> Result<(), NotifyError> {
        let tool = slack_code(&approval.tool_name);
        let caller = slack_code(&approval.caller_id);
        let risk = if approval.risk_labels.is_empty() {
            "none".to_owned()
        } else {
            slack_code(&approval.risk_labels.join(", "))
        };
        let expires = approval.expires_at.format("%Y-%m-%d %H:%M:%S UTC");
        // No arguments, not even their hash (a plain SHA-256 of the raw
        // arguments would let a reader confirm a guessed secret): the
        // console shows them to signed-in approvers.
        self.post(json!({
            "text": format!("Approval needed: {tool} for {caller}"),
            "blocks": [
                // Slack refuses a header longer than 150 characters (which
                // it may count in UTF-16 units): 60 characters always fit.
                {"type": "header", "text": {"type": "plain_text", "text": format!("Approval needed: {}", slack_cut(&approval.tool_name, 60))}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": format!("*Tool*\n{tool}")},
                    {"type": "mrkdwn", "text": format!("*Caller*\n{caller}")},
                    {"type": "mrkdwn", "text": format!("*Risk*\n{risk}")},
                    {"type": "mrkdwn", "text": format!("*Expires*\n{expires}")},
                ]},
                {"type": "actions", "elements": [
                    {"type": "button", "style": "primary", "text": {"type": "plain_text", "text": "Review"}, "url": self.link(approval)},
                ]},
            ],
        }))
        .await
    }

    async fn notify_decision(&self, approval: &Approval) -> Result<(), NotifyError> {
        let by = approval
            .result
            .as_ref()
            .and_then(|r| r.approver_id.as_deref())
            .map(slack_code)
            .unwrap_or_else(|| "the system".into());
        let text = format!(
            "{} for {}: {} by {by} (<{}|details>)",
            slack_code(&approval.tool_name),
            slack_code(&approval.caller_id),
            approval.status,
            self.link(approval)
        );
        self.post(json!({"text": text})).await
    }
}
