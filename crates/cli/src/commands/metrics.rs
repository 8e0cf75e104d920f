//! `warden metrics`: a Prometheus scrape endpoint for a fleet's storage.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use warden_core::{Settings, StorageGauges};
use warden_telemetry::Telemetry;

use crate::{Outcome, output};

/// Options of `warden metrics`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9464")]
    bind: SocketAddr,
    /// Seconds between samples of the database gauges.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample_every: u64,
}

pub(crate) async fn run(
    settings: &Settings,
    args: Args,
    telemetry: Arc<Telemetry>,
) -> anyhow::Result<Outcome> {
    let warden = super::connect_migrated(settings).await?;
    let _gauges = StorageGauges::start(&warden, Duration::from_secs(args.sample_every));
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
    let local = listener.local_addr()?;
    output::notice(&format!(
        "serving Prometheus metrics at http://{local}/metrics"
    ));
    let app = router(telemetry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    warden.close().await?;
    Ok(Outcome::Success)
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub(crate) fn router(telemetry: Arc<Telemetry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let telemetry = telemetry.clone();
            async move {
                let body = telemetry.prometheus_text().unwrap_or_default();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        warden_telemetry::prometheus::CONTENT_TYPE,
                    )],
                    body,
                )
            }
        }),
    )
}

pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
