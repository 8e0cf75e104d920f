//! `warden gateway`: the MCP gateway in front of upstream MCP servers.

use std::net::SocketAddr;
use std::path::PathBuf;

use warden_core::Settings;
use warden_gateway::{Gateway, GatewayConfig, MCP_PATH};

use crate::{Outcome, output};

/// Options of `warden gateway`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The gateway's configuration file (YAML): its upstream servers and
    /// the hold budget. Tool rules live in the policy (`POLICY_PATH`).
    #[arg(long)]
    config: PathBuf,
    /// Address to listen on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:8090")]
    bind: SocketAddr,
    /// Speak MCP over stdin/stdout instead (for clients that launch their
    /// servers as child processes), as the key in `WARDEN_API_KEY`.
    #[arg(long, conflicts_with = "bind")]
    stdio: bool,
}

pub(crate) async fn run(settings: &Settings, args: Args) -> anyhow::Result<Outcome> {
    let config = GatewayConfig::from_file(&args.config)?;
    let warden = super::connect_migrated(settings).await?;
    let gateway = Gateway::start(&warden, config).await?;
    if args.stdio {
        let key = std::env::var("WARDEN_API_KEY").map_err(|_| {
            anyhow::anyhow!("--stdio needs WARDEN_API_KEY: the key every request runs as")
        })?;
        let served = warden_gateway::serve_stdio(gateway.clone(), key).await;
        gateway.shutdown().await;
        warden.close().await?;
        served?;
        return Ok(Outcome::Success);
    }
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.bind))?;
    let local = listener.local_addr()?;
    output::notice(&format!(
        "MCP gateway at http://{local}{MCP_PATH} (policy {})",
        gateway.policy().version.get(..12).unwrap_or_default()
    ));
    warden_gateway::serve(listener, gateway.clone(), super::metrics::shutdown_signal()).await?;
    gateway.shutdown().await;
    warden.close().await?;
    Ok(Outcome::Success)
}
