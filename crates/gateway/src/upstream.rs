//! Connections to the upstream MCP servers the gateway fronts.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, GetPromptRequestParams, GetPromptResponse, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, Resource, Tool,
};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{Peer, RoleClient, ServiceExt as _};
use tracing::{info, warn};

use crate::{GatewayError, UpstreamConfig};

/// The longest the MCP handshake with an upstream may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest time between two restarts of a failed upstream.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

/// One upstream: its MCP session stays open while the gateway runs (a child
/// process is killed when the gateway drops it). When the session dies (the
/// child crashed, the server went away), the next request starts a new one,
/// at most once per [`RESTART_BACKOFF`].
pub(crate) struct Upstream {
    pub(crate) name: String,
    config: UpstreamConfig,
    call_timeout: Duration,
    session: tokio::sync::RwLock<Session>,
}

struct Session {
    service: RunningService<RoleClient, ()>,
    started: Instant,
}

/// How a forwarded call ended.
pub(crate) enum Forwarded {
    /// The upstream answered (its result may itself be a tool error).
    Answered(CallToolResult),
    /// The upstream failed (crashed, closed, refused the request).
    Failed(String),
    /// No answer within the upstream's call timeout.
    TimedOut(Duration),
}

/// Starts (a child process) or reaches (a URL) the upstream and completes
/// the MCP handshake, within [`HANDSHAKE_TIMEOUT`].
async fn open(config: &UpstreamConfig) -> Result<RunningService<RoleClient, ()>, String> {
    let handshake = async {
        match (&config.url, config.command.split_first()) {
            (Some(url), _) => ().serve(StreamableHttpClientTransport::from_uri(url.as_str())).await,
            (None, Some((program, args))) => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).env_clear();
                // Only what a program needs to run, and what the config
                // names: never the gateway's own secrets.
                for name in ["PATH", "HOME", "LANG", "TZ"] {
                    if let Some(value) = std::env::var_os(name) {
                        command.env(name, value);
                    }
                }
                command.envs(&config.env);
                // The upstream's own log is not ours to keep (it may echo
                // the arguments it was called with).
                let (transport, _) = TokioChildProcess::builder(command)
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| format!("cannot start {program:?}: {e}"))?;
                ().serve(transport).await
            }
            (None, None) => return Err("neither command nor url".to_owned()),
        }
        .map_err(|e| format!("the MCP handshake failed: {e}"))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("no MCP handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()))?
}

impl Upstream {
    /// Connects the upstream; fails when it cannot be started or reached.
    pub(crate) async fn connect(config: &UpstreamConfig) -> Result<Self, GatewayError> {
        let service = open(config)
            .await
            .map_err(|reason| GatewayError::Upstream {
                name: config.name.clone(),
                reason,
            })?;
        Ok(Self {
            name: config.name.clone(),
            config: config.clone(),
            call_timeout: Duration::from_millis(config.call_timeout_ms),
            session: tokio::sync::RwLock::new(Session {
                service,
                started: Instant::now(),
            }),
        })
    }

    /// The live session's peer, starting a new session when the old one
    /// has died.
    async fn peer(&self) -> Result<Peer<RoleClient>, String> {
        {
            let session = self.session.read().await;
            if !session.service.peer().is_transport_closed() {
                return Ok(session.service.peer().clone());
            }
        }
        let mut session = self.session.write().await;
        // Another request may have restarted it meanwhile.
        if !session.service.peer().is_transport_closed() {
            return Ok(session.service.peer().clone());
        }
        if session.started.elapsed() < RESTART_BACKOFF {
            return Err("the upstream is down; it is being restarted".to_owned());
        }
        let opened = open(&self.config).await;
        // The backoff counts from the attempt's end: requests that queued
        // behind a slow failed handshake do not each try again.
        session.started = Instant::now();
        match opened {
            Ok(service) => {
                info!(upstream = %self.name, "upstream restarted");
                session.service = service;
                Ok(session.service.peer().clone())
            }
            Err(reason) => {
                warn!(upstream = %self.name, %reason, "upstream could not be restarted");
                Err(reason)
            }
        }
    }

    /// Whether the upstream is reachable now (restarting it if it died):
    /// checked before an approval is used, so that an approval is not spent
    /// on a call that cannot be made.
    pub(crate) async fn ready(&self) -> Result<(), String> {
        self.peer().await.map(|_| ())
    }

    /// Runs `work` against the live session within the call timeout.
    async fn bounded<T, F>(&self, work: impl FnOnce(Peer<RoleClient>) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, rmcp::ServiceError>>,
    {
        let peer = self.peer().await?;
        tokio::time::timeout(self.call_timeout, work(peer))
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// The upstream's tools, as it names them.
    pub(crate) async fn tools(&self) -> Result<Vec<Tool>, String> {
        self.bounded(|peer| async move { peer.list_all_tools().await })
            .await
    }

    /// The upstream's prompts, as it names them.
    pub(crate) async fn prompts(&self) -> Result<Vec<Prompt>, String> {
        self.bounded(|peer| async move { peer.list_all_prompts().await })
            .await
    }

    /// The upstream's resources.
    pub(crate) async fn resources(&self) -> Result<Vec<Resource>, String> {
        self.bounded(|peer| async move { peer.list_all_resources().await })
            .await
    }

    /// One prompt, as the upstream renders it.
    pub(crate) async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
    ) -> Result<GetPromptResponse, String> {
        self.bounded(|peer| async move { peer.get_prompt_once(params).await })
            .await
    }

    /// One resource, as the upstream reads it.
    pub(crate) async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
    ) -> Result<ReadResourceResponse, String> {
        self.bounded(|peer| async move { peer.read_resource_once(params).await })
            .await
    }

    /// Forwards one call, bounded by the upstream's call timeout.
    pub(crate) async fn call(&self, params: CallToolRequestParams) -> Forwarded {
        let peer = match self.peer().await {
            Ok(peer) => peer,
            Err(reason) => return Forwarded::Failed(reason),
        };
        match tokio::time::timeout(self.call_timeout, peer.call_tool(params)).await {
            Ok(Ok(result)) => Forwarded::Answered(result),
            Ok(Err(e)) => Forwarded::Failed(e.to_string()),
            Err(_) => Forwarded::TimedOut(self.call_timeout),
        }
    }

    /// Ends the session (and the child process).
    pub(crate) async fn close(self) {
        let _ = self.session.into_inner().service.cancel().await;
    }
}
