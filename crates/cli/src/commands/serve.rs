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
    /// an `https://` URL makes the session cookie Secure.
    #[arg(long)]
    public_url: Option<String>,
}

pub(crate) async fn run(
    settings: &Settings,
    args: Args,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<Outcome> {
    if let Some(url) = &args.public_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        anyhow::bail!("--public-url must be an http:// or https:// URL");
    }
    let secure = args
        .public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"));
    let warden = super::connect_migrated(settings).await?;
    let _gauges = StorageGauges::start(&warden, Duration::from_secs(15));
    let console = warden_console::Console::new(warden.clone(), secure)?;
    let app = console.router().merge(super::metrics::router(telemetry));
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
    let local = listener.local_addr()?;
    output::notice(&format!(
        "approver console at {} (metrics at /metrics)",
        args.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"))
    ));
    warden_console::serve(
        listener,
        app,
        warden_console::ServeLimits::default(),
        super::metrics::shutdown_signal(),
    )
    .await?;
    warden.close().await?;
    Ok(Outcome::Success)
}
