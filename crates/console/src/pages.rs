//! The pages and form handlers.

use askama::Template;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use tracing::{Instrument as _, info, warn};
use uuid::Uuid;
use warden_approval::{Approval, ApprovalError, ApprovalStatus};

use crate::session::{self, Session};
use crate::{Console, REQUEST_TIMEOUT};

/// Scripts and event streams only from this origin (the binary's own
/// `console.js` and `/events`): no inline script, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// True when a state-changing request comes from another site: the browser
/// says `Sec-Fetch-Site: cross-site`, or its `Origin` is not the console's
/// (the public URL's origin when there is one, else the request's `Host`;
/// `Origin: null` never matches).
fn cross_site(console: &Console, request: &Request) -> bool {
    let headers = request.headers();
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    if let Some(public) = &console.inner.public {
        return !origin.eq_ignore_ascii_case(&public.origin);
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    match (origin_host, host) {
        (Some(o), Some(h)) => !o.eq_ignore_ascii_case(h),
        _ => true,
    }
}

/// True when the request names a host this console answers for: the public
/// URL's host, a loopback name, or an IP literal. Anything else is a DNS
/// name that may point here by rebinding.
fn host_allowed(console: &Console, request: &Request) -> bool {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        // HTTP/1.1 requires Host; hyper refuses requests without one.
        return false;
    };
    let host = host.to_ascii_lowercase();
    if console
        .inner
        .public
        .as_ref()
        .is_some_and(|public| public.host == host)
    {
        return true;
    }
    // The name without its port (IPv6 literals are bracketed).
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default().to_owned(),
        None => host
            .rsplit_once(':')
            .map_or(host.as_str(), |(n, _)| n)
            .to_owned(),
    };
    name == "localhost" || name.ends_with(".localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Security headers, a span and a time bound around every request; POSTs
/// from another site are refused here.
pub(crate) async fn guard(
    State(console): State<Console>,
    request: Request,
    next: Next,
) -> Response {
    let span = tracing::info_span!(
        "console.request",
        method = %request.method(),
        route = route_of(request.uri().path()),
        status = tracing::field::Empty,
    );
    let mut response = if !host_allowed(&console, &request) {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "this console does not answer for that host name; reach it at its address, \
             or start it with --public-url naming the address people use",
        )
            .into_response()
    } else if request.method() == axum::http::Method::POST && cross_site(&console, &request) {
        forbidden("cross-site requests are refused")
    } else {
        match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request))
            .instrument(span.clone())
            .await
        {
            Ok(response) => response,
            Err(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "the request took too long").into_response()
            }
        }
    };
    span.record("status", response.status().as_u16());
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Not `no-referrer`: under it browsers send `Origin: null` with a
        // form POST, which the cross-site guard (rightly) refuses. Within
        // the console the referrer is a page path; elsewhere it is never sent.
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if console.inner.secure_cookies {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    response
}

/// The route template (never an id) for spans.
fn route_of(path: &str) -> &'static str {
    match path {
        "/" => "/",
        "/sign-in" => "/sign-in",
        "/sign-out" => "/sign-out",
        "/inbox" => "/inbox",
        "/history" => "/history",
        "/keys" => "/keys",
        "/keys/revoke" => "/keys/revoke",
        "/events" => "/events",
        "/audit" => "/audit",
        "/audit/proof" => "/audit/proof",
        "/static/console.js" => "/static/console.js",
        "/static/console.css" => "/static/console.css",
        p if p.starts_with("/approvals/") && p.ends_with("/decide") => "/approvals/{id}/decide",
        p if p.starts_with("/approvals/") => "/approvals/{id}",
        _ => "other",
    }
}

fn page<T: Template>(status: StatusCode, template: &T) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            warn!(error = %e, "a console page could not be rendered");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

fn to_sign_in() -> Response {
    Redirect::to("/sign-in").into_response()
}

fn forbidden(reason: &'static str) -> Response {
    (StatusCode::FORBIDDEN, reason).into_response()
}

pub(crate) async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../static/console.css"),
    )
        .into_response()
}

pub(crate) async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../static/console.js"),
    )
        .into_response()
}

/// One open live-inbox stream of an approver; dropping it frees the slot.
struct StreamSlot {
    console: Console,
    caller: String,
}

impl StreamSlot {
    /// A slot for `caller`, unless they already hold
    /// [`crate::MAX_STREAMS_PER_APPROVER`].
    fn take(console: &Console, caller: &str) -> Option<Self> {
        let mut streams = console
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let open = streams.entry(caller.to_owned()).or_insert(0);
        if *open >= crate::MAX_STREAMS_PER_APPROVER {
            return None;
        }
        *open += 1;
        Some(Self {
            console: console.clone(),
            caller: caller.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self
            .console
            .inner
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(open) = streams.get_mut(&self.caller) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.caller);
            }
        }
    }
}

/// Server-sent events: `changed` each time an approval is issued, decided or
/// expired (its id, or `expired`), and a keep-alive comment every 15 s. For
/// signed-in approvers only, at most [`crate::MAX_STREAMS_PER_APPROVER`]
/// each; the stream ends within [`crate::SESSION_RECHECK`] of its session
/// (signed out, key revoked, role changed).
pub(crate) async fn events(State(console): State<Console>, headers: HeaderMap) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let Some((_, session)) = session::current(&console, &headers).await else {
        return forbidden("not signed in");
    };
    let Some(slot) = StreamSlot::take(&console, &session.caller_id) else {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            "too many live inbox tabs open; close one",
        )
            .into_response();
    };
    let subscription = match console
        .inner
        .warden
        .cache()
        .subscribe(warden_approval::INBOX_CHANNEL)
        .await
    {
        Ok(subscription) => subscription,
        Err(e) => {
            warn!(error = %e, "live inbox unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "live updates are unavailable",
            )
                .into_response();
        }
    };
    let stream = futures_util::stream::unfold(
        (subscription, console, headers, slot),
        |(mut subscription, console, headers, slot)| async move {
            let message = loop {
                tokio::select! {
                    message = subscription.next() => break message?,
                    () = tokio::time::sleep(crate::SESSION_RECHECK) => {
                        // A session that ended ends its stream, change or not.
                        session::current(&console, &headers).await?;
                    }
                }
            };
            session::current(&console, &headers).await?;
            let what: String = String::from_utf8_lossy(&message)
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .take(64)
                .collect();
            let event = Event::default().event("changed").data(what);
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (subscription, console, headers, slot),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}

/// Text an agent chose (tool, arguments, caller, labels), as a person should
/// see it: invisible and direction-changing characters shown as escapes.
fn shown(text: &str) -> String {
    warden_common::reveal_invisible(text).0
}

pub(crate) async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

pub(crate) async fn home() -> Response {
    Redirect::to("/inbox").into_response()
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    error: Option<&'static str>,
}

pub(crate) async fn sign_in_page() -> Response {
    page(StatusCode::OK, &SignIn { error: None })
}

#[derive(Deserialize)]
pub(crate) struct SignInForm {
    key: String,
}

/// The client's address, as the sign-in limiter's key: the peer's, or —
/// when the peer is a trusted proxy — the last entry in `X-Forwarded-For`
/// that is not itself a trusted proxy (entries further left are the
/// client's own claims). Entries may carry a port or a zone id; an entry
/// that is not an address at all is the key as written (never the proxy's,
/// which would put every client in one bucket).
fn client_key(console: &Console, peer: std::net::IpAddr, headers: &HeaderMap) -> String {
    let trusted = &console.inner.trusted_proxies;
    let peer = peer.to_canonical();
    if !trusted.contains(&peer) {
        return rate_limit_key(peer);
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    for entry in forwarded.iter().rev() {
        match forwarded_address(entry) {
            Some(ip) if trusted.contains(&ip) => continue,
            Some(ip) => return rate_limit_key(ip),
            None => return format!("raw:{}", entry.chars().take(64).collect::<String>()),
        }
    }
    // Only proxies in the chain: the request came from the last of them.
    rate_limit_key(peer)
}

/// An `X-Forwarded-For` entry as an address: `1.2.3.4`, `1.2.3.4:5678`,
/// `2001:db8::1`, `[2001:db8::1]:443`, `fe80::1%eth0`.
fn forwarded_address(entry: &str) -> Option<std::net::IpAddr> {
    let bare = entry
        .strip_prefix('[')
        .map_or(entry, |rest| rest.split(']').next().unwrap_or(rest));
    let bare = bare.split('%').next().unwrap_or(bare);
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Some(ip.to_canonical());
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| s.ip().to_canonical())
}

/// The sign-in limiter's key for an address: IPv4 as is, IPv6 by its /64
/// (one host controls a whole /64).
fn rate_limit_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

pub(crate) async fn sign_in(
    State(console): State<Console>,
    headers: HeaderMap,
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    Form(form): Form<SignInForm>,
) -> Response {
    let inner = &console.inner;
    let client = connect.map_or_else(
        || "unknown".to_owned(),
        |c| client_key(&console, c.0.0.ip(), &headers),
    );
    match inner.sign_in_limiter.check(&client).await {
        Ok(decision) if decision.allowed => {}
        _ => {
            return page(
                StatusCode::TOO_MANY_REQUESTS,
                &SignIn {
                    error: Some("Too many sign-in attempts; wait a minute."),
                },
            );
        }
    }
    let verified = match inner.keys.verify(&form.key).await {
        Ok(verified) => verified,
        Err(_) => {
            return page(
                StatusCode::UNAUTHORIZED,
                &SignIn {
                    error: Some("That key is not valid."),
                },
            );
        }
    };
    if verified.environment != inner.warden.settings().environment.as_str() {
        return page(
            StatusCode::FORBIDDEN,
            &SignIn {
                error: Some("This key belongs to another environment."),
            },
        );
    }
    if !inner
        .policy
        .allows(&verified.role, warden_keys::Permission::Approve)
    {
        info!(caller = %verified.caller_id, role = %verified.role, "console sign-in refused: the role may not approve");
        return page(
            StatusCode::FORBIDDEN,
            &SignIn {
                error: Some("This key's role may not approve calls."),
            },
        );
    }
    // A session this browser already had ends: one person, one session.
    if let Some(old) = session::cookie_value(&headers, inner.secure_cookies) {
        session::end(&console, &old).await;
    }
    let Some(id) = session::create(&console, &verified.caller_id, verified.key_id).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "sessions are unavailable").into_response();
    };
    info!(caller = %verified.caller_id, "console sign-in");
    let mut response = Redirect::to("/inbox").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(Some(&id), inner.secure_cookies))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn sign_out(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some((id, session)) = session::current(&console, &headers).await else {
        return forbidden("not signed in");
    };
    if !session::csrf_ok(&session, &form.csrf) {
        return forbidden("the form's CSRF token is missing or wrong");
    }
    session::end(&console, &id).await;
    let mut response = Redirect::to("/sign-in").into_response();
    if let Ok(cookie) =
        HeaderValue::from_str(&session::set_cookie(None, console.inner.secure_cookies))
    {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

struct Row {
    id: Uuid,
    tool: String,
    caller: String,
    risk_labels: Vec<String>,
    time_left: String,
    expires_ms: i64,
}

#[derive(Template)]
#[template(path = "inbox.html")]
struct Inbox {
    who: String,
    csrf: String,
    admin: bool,
    rows: Vec<Row>,
    now_ms: i64,
    /// More approvals are waiting than the inbox shows.
    truncated: bool,
}

/// The most pending approvals the inbox lists (newest first).
const INBOX_ROWS: u64 = 200;

fn time_left(expires_at: chrono::DateTime<chrono::Utc>) -> String {
    let left = (expires_at - chrono::Utc::now()).num_seconds();
    if left <= 0 {
        "expired".into()
    } else if left < 3600 {
        format!("{}m {:02}s", left / 60, left % 60)
    } else {
        format!("{}h {:02}m", left / 3600, (left % 3600) / 60)
    }
}

pub(crate) async fn inbox(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session::current(&console, &headers).await else {
        return to_sign_in();
    };
    let pending = match console
        .inner
        .approvals
        .list(Some(ApprovalStatus::Pending), INBOX_ROWS)
        .await
    {
        Ok(pending) => pending,
        Err(e) => {
            warn!(error = %e, "the inbox could not be read");
            return (StatusCode::SERVICE_UNAVAILABLE, "approvals are unavailable").into_response();
        }
    };
    let now = chrono::Utc::now();
    let truncated = pending.len() as u64 >= INBOX_ROWS;
    let rows = pending
        .into_iter()
        .filter(|a| a.effective_status(now) == ApprovalStatus::Pending)
        .map(|a| Row {
            id: a.id,
            time_left: time_left(a.expires_at),
            expires_ms: a.expires_at.timestamp_millis(),
            tool: shown(&a.tool_name),
            caller: shown(&a.caller_id),
            risk_labels: a.risk_labels.iter().map(|l| shown(l)).collect(),
        })
        .collect();
    page(
        StatusCode::OK,
        &Inbox {
            admin: may_manage_keys(&console, &session),
            who: session.caller_id,
            csrf: session.csrf,
            rows,
            now_ms: now.timestamp_millis(),
            truncated,
        },
    )
}

#[derive(Template)]
#[template(path = "approval.html")]
struct ApprovalPage {
    who: String,
    csrf: String,
    admin: bool,
    id: Uuid,
    tool: String,
    caller: String,
    status: String,
    request_id: String,
    risk_labels: Vec<String>,
    args_hash: String,
    policy_version: String,
    expires_at: String,
    time_left: String,
    expires_ms: i64,
    now_ms: i64,
    args: String,
    /// `None`: the trail could not be read (shown as unavailable, never as
    /// "none").
    redaction_flags: Option<Vec<warden_audit::RedactionFlag>>,
    /// Something the agent chose holds invisible or direction-changing
    /// characters (shown escaped, with a warning).
    hidden_characters: bool,
    decided: Option<String>,
    pending: bool,
    notice: Option<String>,
}

/// The redactions recorded for a held call: those of its tool-call events in
/// the audit trail (the approval stores the sanitized call, not its flags).
/// `None` when the trail could not be read.
async fn redaction_flags(
    console: &Console,
    request_id: &str,
) -> Option<Vec<warden_audit::RedactionFlag>> {
    match console
        .inner
        .warden
        .audit()
        .query()
        .with_timeout(crate::AUDIT_READ_TIMEOUT)
        .list_by_request_id(request_id)
        .await
    {
        Ok(events) => {
            let mut flags: Vec<warden_audit::RedactionFlag> = Vec::new();
            for event in events
                .iter()
                .filter(|e| e.kind() == warden_audit::EventKind::ToolCall)
            {
                for flag in event.redaction_flags() {
                    let flag = warden_audit::RedactionFlag {
                        path: shown(&flag.path),
                        reason: shown(&flag.reason),
                    };
                    if !flags.contains(&flag) {
                        flags.push(flag);
                    }
                }
            }
            Some(flags)
        }
        Err(e) => {
            warn!(error = %e, "the held call's redactions could not be read");
            None
        }
    }
}

async fn approval_page(
    console: &Console,
    session: Session,
    approval: Approval,
    notice: Option<String>,
) -> ApprovalPage {
    let redaction_flags = redaction_flags(console, &approval.request_id).await;
    let now = chrono::Utc::now();
    let status = approval.effective_status(now);
    let decided = approval.result.as_ref().map(|r| {
        format!(
            "{} by {} at {}{}",
            r.status,
            r.approver_id.as_deref().unwrap_or("the system"),
            r.decided_at.format("%Y-%m-%d %H:%M:%S UTC"),
            r.note
                .as_deref()
                .map(|n| format!(" — “{n}”"))
                .unwrap_or_default()
        )
    });
    // Everything the agent chose, with invisible characters revealed; the
    // page warns when there were any.
    let mut hidden_characters = false;
    let mut reveal = |text: &str| {
        let (text, hidden) = warden_common::reveal_invisible(text);
        hidden_characters |= hidden;
        text
    };
    let tool = reveal(&approval.tool_name);
    let caller = reveal(&approval.caller_id);
    let request_id = reveal(&approval.request_id);
    let risk_labels = approval.risk_labels.iter().map(|l| reveal(l)).collect();
    let policy_version = reveal(&approval.policy_version);
    let args = reveal(&serde_json::to_string_pretty(&approval.tool_call).unwrap_or_default());
    let decided = decided.map(|d| reveal(&d));
    ApprovalPage {
        admin: may_manage_keys(console, &session),
        who: session.caller_id,
        csrf: session.csrf,
        id: approval.id,
        tool,
        caller,
        status: status.to_string(),
        request_id,
        risk_labels,
        args_hash: approval.raw_args_hash,
        policy_version,
        expires_at: approval
            .expires_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string(),
        time_left: time_left(approval.expires_at),
        expires_ms: approval.expires_at.timestamp_millis(),
        now_ms: now.timestamp_millis(),
        redaction_flags,
        hidden_characters,
        args,
        decided,
        pending: status == ApprovalStatus::Pending,
        notice,
    }
}

pub(crate) async fn approval(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let Some((_, session)) = session::current(&console, &headers).await else {
        return to_sign_in();
    };
    match console.inner.approvals.get(id).await {
        Ok(approval) => page(
            StatusCode::OK,
            &approval_page(&console, session, approval, None).await,
        ),
        Err(ApprovalError::NotFound) => (StatusCode::NOT_FOUND, "no such approval").into_response(),
        Err(e) => {
            warn!(error = %e, "an approval could not be read");
            (StatusCode::SERVICE_UNAVAILABLE, "approvals are unavailable").into_response()
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct DecideForm {
    #[serde(default)]
    csrf: String,
    decision: String,
    #[serde(default)]
    note: String,
}

pub(crate) async fn decide(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Form(form): Form<DecideForm>,
) -> Response {
    let Some((_, session)) = session::current(&console, &headers).await else {
        return forbidden("not signed in");
    };
    if !session::csrf_ok(&session, &form.csrf) {
        return forbidden("the form's CSRF token is missing or wrong");
    }
    let note = Some(form.note.trim()).filter(|n| !n.is_empty());
    let approvals = &console.inner.approvals;
    let decided = match form.decision.as_str() {
        "approve" => approvals.approve_by_id(id, &session.caller_id, note).await,
        "deny" => approvals.deny_by_id(id, &session.caller_id, note).await,
        _ => return (StatusCode::BAD_REQUEST, "decision must be approve or deny").into_response(),
    };
    let notice = match decided {
        Ok(approval) => {
            info!(approval = %approval.id, decision = %approval.status, approver = %session.caller_id, "decided in the console");
            return Redirect::to(&format!("/approvals/{id}")).into_response();
        }
        Err(ApprovalError::AlreadyDecided { .. }) => "Someone decided this call first.".to_owned(),
        Err(ApprovalError::Expired) => "This approval expired before the decision.".to_owned(),
        Err(ApprovalError::OwnCall) => {
            return forbidden("you cannot decide a call held for your own key");
        }
        Err(ApprovalError::NotFound) => {
            return (StatusCode::NOT_FOUND, "no such approval").into_response();
        }
        Err(e) => {
            warn!(error = %e, "a console decision failed");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the decision could not be made",
            )
                .into_response();
        }
    };
    match approvals.get(id).await {
        Ok(approval) => page(
            StatusCode::CONFLICT,
            &approval_page(&console, session, approval, Some(notice)).await,
        ),
        Err(_) => (StatusCode::CONFLICT, notice).into_response(),
    }
}

fn may_manage_keys(console: &Console, session: &Session) -> bool {
    console
        .inner
        .policy
        .allows(&session.role, warden_keys::Permission::ManageKeys)
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

struct HistoryRow {
    id: Uuid,
    tool: String,
    caller: String,
    status: String,
    by: String,
    when: String,
    note: String,
}

#[derive(Template)]
#[template(path = "history.html")]
struct History {
    who: String,
    csrf: String,
    admin: bool,
    rows: Vec<HistoryRow>,
}

/// Decided, executed and expired approvals, newest first (the latest 200).
pub(crate) async fn history(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session::current(&console, &headers).await else {
        return to_sign_in();
    };
    let all = match console.inner.approvals.list(None, 200).await {
        Ok(all) => all,
        Err(e) => {
            warn!(error = %e, "the history could not be read");
            return (StatusCode::SERVICE_UNAVAILABLE, "approvals are unavailable").into_response();
        }
    };
    let now = chrono::Utc::now();
    let rows = all
        .into_iter()
        .filter(|a| a.effective_status(now) != ApprovalStatus::Pending)
        .map(|a| {
            let status = a.effective_status(now).to_string();
            let (by, at, note) = match &a.result {
                Some(r) => (
                    r.approver_id.clone().unwrap_or_else(|| "the system".into()),
                    when(r.decided_at),
                    shown(r.note.as_deref().unwrap_or_default()),
                ),
                None => ("nobody".into(), when(a.expires_at), String::new()),
            };
            HistoryRow {
                id: a.id,
                tool: shown(&a.tool_name),
                caller: shown(&a.caller_id),
                status,
                by,
                when: at,
                note,
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &History {
            admin: may_manage_keys(&console, &session),
            who: session.caller_id,
            csrf: session.csrf,
            rows,
        },
    )
}

struct KeyRow {
    caller: String,
    prefix: String,
    role: String,
    trust_level: i16,
    last_used: String,
    state: &'static str,
    active: bool,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct Keys {
    who: String,
    csrf: String,
    admin: bool,
    rows: Vec<KeyRow>,
    notice: Option<String>,
}

async fn keys_page(
    console: &Console,
    session: Session,
    status: StatusCode,
    notice: Option<String>,
) -> Response {
    let keys = match console.inner.keys.list().await {
        Ok(keys) => keys,
        Err(e) => {
            warn!(error = %e, "the keys could not be read");
            return (StatusCode::SERVICE_UNAVAILABLE, "keys are unavailable").into_response();
        }
    };
    let now = chrono::Utc::now();
    let rows = keys
        .into_iter()
        .map(|k| {
            let (state, active) = if k.revoked_at.is_some() || !k.is_active {
                ("revoked", false)
            } else if k.expires_at.is_some_and(|t| t <= now) {
                ("expired", false)
            } else {
                ("active", true)
            };
            KeyRow {
                caller: k.caller_id,
                prefix: k.key_prefix,
                role: k.role,
                trust_level: k.trust_level,
                last_used: k.last_used_at.map(when).unwrap_or_else(|| "never".into()),
                state,
                active,
            }
        })
        .collect();
    page(
        status,
        &Keys {
            admin: true,
            who: session.caller_id,
            csrf: session.csrf,
            rows,
            notice,
        },
    )
}

/// The keys (never their hashes), for roles with `manage_keys`.
pub(crate) async fn keys(State(console): State<Console>, headers: HeaderMap) -> Response {
    let Some((_, session)) = session::current(&console, &headers).await else {
        return to_sign_in();
    };
    if !may_manage_keys(&console, &session) {
        return forbidden("this key's role may not manage keys");
    }
    keys_page(&console, session, StatusCode::OK, None).await
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    #[serde(default)]
    csrf: String,
    caller: String,
    #[serde(default)]
    confirm: String,
}

/// Revokes a key, confirmed by typing its caller id; recorded as the
/// signed-in person's `key.revoke` admin event.
pub(crate) async fn revoke(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Response {
    let Some((_, session)) = session::current(&console, &headers).await else {
        return forbidden("not signed in");
    };
    if !session::csrf_ok(&session, &form.csrf) {
        return forbidden("the form's CSRF token is missing or wrong");
    }
    if !may_manage_keys(&console, &session) {
        return forbidden("this key's role may not manage keys");
    }
    if form.confirm.trim() != form.caller {
        return keys_page(
            &console,
            session,
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("Not revoked: type the caller id exactly to confirm.".into()),
        )
        .await;
    }
    match console
        .inner
        .keys
        .revoke(&form.caller, &session.caller_id)
        .await
    {
        Ok(_) => {
            info!(caller = %form.caller, actor = %session.caller_id, "key revoked in the console");
            Redirect::to("/keys").into_response()
        }
        Err(warden_keys::KeyError::NotFound { .. }) => {
            (StatusCode::NOT_FOUND, "no such key").into_response()
        }
        Err(e) => {
            warn!(error = %e, "a console revocation failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the key could not be revoked",
            )
                .into_response()
        }
    }
}

struct AuditRow {
    when: String,
    kind: &'static str,
    caller: String,
    what: String,
    decision: String,
    inclusion: String,
    /// The request id, percent-encoded for a query string.
    request_id_query: String,
    provable: bool,
}

fn query_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditView {
    who: String,
    csrf: String,
    admin: bool,
    caller: String,
    tool: String,
    decisions: Vec<Opt>,
    kinds: Vec<Opt>,
    rows: Vec<AuditRow>,
}

/// One `<option>` of a filter.
struct Opt {
    value: &'static str,
    selected: bool,
}

#[derive(Deserialize)]
pub(crate) struct AuditQueryForm {
    #[serde(default)]
    caller: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    kind: String,
}

const KINDS: [&str; 3] = ["tool_call", "admin", "prune"];

/// The newest audit events (100), filtered by caller, decision and kind,
/// each with its place in the transparency log and a link to its proof.
pub(crate) async fn audit(
    State(console): State<Console>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<AuditQueryForm>,
) -> Response {
    let Some((_, session)) = session::current(&console, &headers).await else {
        return to_sign_in();
    };
    let decision = warden_audit::Decision::ALL
        .into_iter()
        .find(|d| d.as_str() == query.decision);
    let kind = match query.kind.as_str() {
        "tool_call" => Some(warden_audit::EventKind::ToolCall),
        "admin" => Some(warden_audit::EventKind::Admin),
        "prune" => Some(warden_audit::EventKind::Prune),
        _ => None,
    };
    let filter = warden_audit::AuditFilter {
        caller_id: Some(query.caller.trim().to_owned()).filter(|c| !c.is_empty()),
        // A tool call's tool; an admin event's resource type (`approval`).
        resource_type: Some(query.tool.trim().to_owned()).filter(|t| !t.is_empty()),
        decision,
        kind,
        ..warden_audit::AuditFilter::default()
    };
    let page_of = match console
        .inner
        .warden
        .audit()
        .query()
        .with_timeout(crate::AUDIT_READ_TIMEOUT)
        .page(&filter, None, 100)
        .await
    {
        Ok(page_of) => page_of,
        Err(e) => {
            warn!(error = %e, "the audit view could not be read");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the audit trail is unavailable",
            )
                .into_response();
        }
    };
    let rows = page_of
        .events
        .iter()
        .map(|e| {
            let (inclusion, provable) = match e.inclusion() {
                Some(warden_audit::Inclusion {
                    leaf_index: Some(leaf),
                    checkpoint_size: Some(size),
                }) => (format!("leaf {leaf}, signed in checkpoint {size}"), true),
                Some(warden_audit::Inclusion {
                    leaf_index: Some(leaf),
                    ..
                }) => (format!("leaf {leaf}, awaiting a checkpoint"), false),
                _ => ("not yet in the tree".to_owned(), false),
            };
            AuditRow {
                when: when(e.timestamp()),
                kind: match e.kind() {
                    warden_audit::EventKind::ToolCall => "tool_call",
                    warden_audit::EventKind::Admin => "admin",
                    warden_audit::EventKind::Prune => "prune",
                },
                caller: shown(e.caller_id()),
                // An admin event's action (`approval.issue`), a call's tool.
                what: shown(match e.kind() {
                    warden_audit::EventKind::ToolCall => e.tool_name().unwrap_or(e.method()),
                    _ => e.method(),
                }),
                decision: match e.kind() {
                    warden_audit::EventKind::ToolCall => e.decision().to_string(),
                    _ => "—".to_owned(),
                },
                inclusion,
                request_id_query: query_encode(e.request_id()),
                provable,
            }
        })
        .collect();
    page(
        StatusCode::OK,
        &AuditView {
            admin: may_manage_keys(&console, &session),
            who: session.caller_id,
            csrf: session.csrf,
            decisions: warden_audit::Decision::ALL
                .iter()
                .map(|d| Opt {
                    value: d.as_str(),
                    selected: Some(*d) == decision,
                })
                .collect(),
            kinds: KINDS
                .iter()
                .map(|k| Opt {
                    value: k,
                    selected: *k == query.kind,
                })
                .collect(),
            caller: query.caller,
            tool: query.tool,
            rows,
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct ProofQuery {
    request_id: String,
}

/// The inclusion proof bundle of a request's event, as a JSON download: it
/// checks with the log's public key alone (`warden audit verify-proof`).
pub(crate) async fn audit_proof(
    State(console): State<Console>,
    headers: HeaderMap,
    axum::extract::Query(query): axum::extract::Query<ProofQuery>,
) -> Response {
    if session::current(&console, &headers).await.is_none() {
        return to_sign_in();
    }
    match console
        .inner
        .warden
        .audit()
        .prove_inclusion(&query.request_id)
        .await
    {
        Ok(bundle) => match serde_json::to_string_pretty(&bundle) {
            Ok(json) => (
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"inclusion-proof.json\"".to_owned(),
                    ),
                ],
                json,
            )
                .into_response(),
            Err(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the proof could not be encoded",
            )
                .into_response(),
        },
        Err(e) => {
            info!(error = %e, "no inclusion proof for a console request");
            (
                StatusCode::NOT_FOUND,
                "no proof yet: the event is not in a signed checkpoint",
            )
                .into_response()
        }
    }
}
