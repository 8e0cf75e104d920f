//! Connections to the upstream MCP servers the gateway fronts.

use std::process::Stdio;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResult, GetPromptRequestParams, GetPromptResponse, Prompt,
    ReadResourceRequestParams, ReadResourceResponse, Resource, Tool,
};
use rmcp::service::RunningService;
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{RoleClient, ServiceExt as _};

use crate::{GatewayError, UpstreamConfig};

/// One connected upstream: its MCP session stays open while the gateway
/// runs (a child process is killed when the gateway drops it).
pub(crate) struct Upstream {
    pub(crate) name: String,
    call_timeout: Duration,
    service: RunningService<RoleClient, ()>,
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

impl Upstream {
    /// Starts (a child process) or reaches (a URL) the upstream and
    /// completes the MCP handshake.
    pub(crate) async fn connect(config: &UpstreamConfig) -> Result<Self, GatewayError> {
        let fail = |reason: String| GatewayError::Upstream {
            name: config.name.clone(),
            reason,
        };
        let service = match (&config.url, config.command.split_first()) {
            (Some(url), _) => ().serve(StreamableHttpClientTransport::from_uri(url.as_str())).await,
            (None, Some((program, args))) => {
                let mut command = tokio::process::Command::new(program);
                command.args(args);
                // The upstream's own log is not ours to keep (it may echo
                // the arguments it was called with).
                let (transport, _) = TokioChildProcess::builder(command)
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| fail(format!("cannot start {program:?}: {e}")))?;
                ().serve(transport).await
            }
            (None, None) => return Err(fail("neither command nor url".into())),
        }
        .map_err(|e| fail(format!("the MCP handshake failed: {e}")))?;
        Ok(Self {
            name: config.name.clone(),
            call_timeout: Duration::from_millis(config.call_timeout_ms),
            service,
        })
    }

    /// The upstream's tools, as it names them.
    pub(crate) async fn tools(&self) -> Result<Vec<Tool>, String> {
        tokio::time::timeout(self.call_timeout, self.service.peer().list_all_tools())
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// Runs `work` against the upstream within its call timeout.
    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, rmcp::ServiceError>>,
    ) -> Result<T, String> {
        tokio::time::timeout(self.call_timeout, work)
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// The upstream's prompts, as it names them.
    pub(crate) async fn prompts(&self) -> Result<Vec<Prompt>, String> {
        self.bounded(self.service.peer().list_all_prompts()).await
    }

    /// The upstream's resources.
    pub(crate) async fn resources(&self) -> Result<Vec<Resource>, String> {
        self.bounded(self.service.peer().list_all_resources()).await
    }

    /// One prompt, as the upstream renders it.
    pub(crate) async fn get_prompt(
        &self,
        params: GetPromptRequestParams,
    ) -> Result<GetPromptResponse, String> {
        self.bounded(self.service.peer().get_prompt_once(params))
            .await
    }

    /// One resource, as the upstream reads it.
    pub(crate) async fn read_resource(
        &self,
        params: ReadResourceRequestParams,
    ) -> Result<ReadResourceResponse, String> {
        self.bounded(self.service.peer().read_resource_once(params))
            .await
    }

    /// Forwards one call, bounded by the upstream's call timeout.
    pub(crate) async fn call(&self, params: CallToolRequestParams) -> Forwarded {
        match tokio::time::timeout(self.call_timeout, self.service.peer().call_tool(params)).await {
            Ok(Ok(result)) => Forwarded::Answered(result),
            Ok(Err(e)) => Forwarded::Failed(e.to_string()),
            Err(_) => Forwarded::TimedOut(self.call_timeout),
        }
    }

    /// Ends the session (and the child process).
    pub(crate) async fn close(self) {
        let _ = self.service.cancel().await;
    }
}
