//! `warden serve`: the approver console, with `/metrics` beside it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warden_core::{Settings, StorageGauges};
use warden_telemetry::Telemetry;

use crate::{Outcome, output};

/// Options of `warden serve`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Address to listen on (loopback by default: put a TLS proxy in front
    /// to serve others).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// The address people reach the console at, when it differs from the
    /// bind address (e.g. `https://approvals.example.com` behind a proxy);
    /// an `https://` URL makes the session cookie Secure. Default:
    /// `CONSOLE_URL`.
    #[arg(long)]
    public_url: Option<String>,
    /// A reverse proxy in front of the console (repeatable): its
    /// `X-Forwarded-For` names the client for the sign-in rate limit, and
    /// the per-address connection cap does not apply to its address.
    #[arg(long = "trusted-proxy", value_name = "IP")]
    trusted_proxies: Vec<std::net::IpAddr>,
}

/// How often `warden serve` marks overdue approvals EXPIRED (each with its
/// event, announced to open inboxes).
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

pub(crate) async fn run(
    settings: &Settings,
    args: Args,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<Outcome> {
    let public_url = args
        .public_url
        .clone()
        .or_else(|| settings.notifiers.console_url.clone());
    let secure = public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    if !args.bind.ip().is_loopback() && !secure {
        output::notice(&format!(
            "warning: serving on {} without an https --public-url: keys and session cookies \
             cross the network in the clear; put a TLS proxy in front",
            args.bind
        ));
    }
    let warden = super::connect_migrated(settings).await?;
    let _gauges = StorageGauges::start(&warden, Duration::from_secs(15));
    let console = warden_console::Console::new(
        warden.clone(),
        warden_console::ConsoleOptions {
            public_url: public_url.clone(),
            trusted_proxies: args.trusted_proxies.clone(),
        },
    )?;
    let expiry = tokio::spawn(expire_overdue(warden.approvals()));
    // Metrics answer loopback peers only, never through a proxy, behind the
    // console's own Host check (no DNS-rebinding page reads them).
    let metrics = console
        .guarded(super::metrics::router(telemetry).layer(axum::middleware::from_fn(loopback_only)));
    let app = console.router().merge(metrics);
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
    let local = listener.local_addr()?;
    output::notice(&format!(
        "approver console at {} (metrics at /metrics)",
        public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"))
    ));
    let limits = warden_console::ServeLimits {
        unlimited_peers: args
            .trusted_proxies
            .iter()
            .map(|ip| ip.to_canonical())
            .collect(),
        ..warden_console::ServeLimits::default()
    };
    warden_console::serve(listener, app, limits, super::metrics::shutdown_signal()).await?;
    expiry.abort();
    warden.close().await?;
    Ok(Outcome::Success)
}

/// Marks overdue approvals EXPIRED every [`EXPIRE_EVERY`], so the inbox
/// holds only live ones and open inboxes hear of expiries.
async fn expire_overdue(approvals: warden_approval::ApprovalManager) {
    let mut tick = tokio::time::interval(EXPIRE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = approvals.expire_stale(500).await {
            tracing::warn!(error = %e, "overdue approvals could not be expired");
        }
    }
}

/// Refuses (404) requests from anyone but a loopback peer, and anything a
/// proxy forwarded (a proxy on the same host is a loopback peer too).
async fn loopback_only(
    connect: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let forwarded = [
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "x-forwarded-host",
    ]
    .iter()
    .any(|h| request.headers().contains_key(*h));
    match connect {
        Some(c) if !forwarded && c.0.0.ip().to_canonical().is_loopback() => next.run(request).await,
        _ => (axum::http::StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
