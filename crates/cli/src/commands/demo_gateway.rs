//! The demo's gateway leg: a small MCP server (the upstream), Warden's
//! gateway in front of it, and an MCP client calling through: one call
//! allowed, one held until the demo's approver approves it.

use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt as _};
use warden_approval::ApprovalStatus;
use warden_core::Warden;
use warden_gateway::{Gateway, GatewayConfig};

use crate::output;

/// The demo's upstream: `status` (allowed) and `deploy` (held).
#[derive(Clone)]
struct DemoUpstream;

fn schema(value: serde_json::Value) -> Arc<serde_json::Map<String, serde_json::Value>> {
    Arc::new(value.as_object().cloned().unwrap_or_default())
}

impl ServerHandler for DemoUpstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "status",
                "The service's status.",
                schema(serde_json::json!({"type": "object", "properties": {}})),
            ),
            Tool::new(
                "deploy",
                "Deploys a version to production.",
                schema(serde_json::json!({
                    "type": "object",
                    "properties": {"version": {"type": "string"}},
                    "required": ["version"]
                })),
            ),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let text = match request.name.as_ref() {
            "status" => "all green".to_owned(),
            "deploy" => format!(
                "deployed {}",
                request
                    .arguments
                    .as_ref()
                    .and_then(|a| a.get("version"))
                    .and_then(|v| v.as_str())
                    .unwrap_or("?")
            ),
            _ => return Err(ErrorData::invalid_params("unknown tool", None)),
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

/// The demo's tool rules, added to the policy when it has none.
const DEMO_RULES: &str = "
tools:
  - { server: demo, tool: status, roles: [developer], decision: allow }
  - { server: demo, tool: deploy, roles: [developer], decision: require_approval, risk_labels: [production] }
";

/// Runs the leg; returns a summary line.
pub(crate) async fn run(warden: &Warden, key: &str) -> anyhow::Result<String> {
    warden_gateway::install_tls_provider();
    // The upstream, on loopback.
    let upstream_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_url = format!("http://{}/mcp", upstream_listener.local_addr()?);
    let upstream = StreamableHttpService::new(
        || Ok(DemoUpstream),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let upstream_task = tokio::spawn(async move {
        axum::serve(
            upstream_listener,
            axum::Router::new().nest_service("/mcp", upstream),
        )
        .await
    });

    // The gateway in front of it.
    let (text, _) = warden.settings().policy_source()?;
    let mut policy = warden_keys::Policy::from_yaml(&text)?;
    if policy.tools.is_empty() {
        policy = warden_keys::Policy::from_yaml(&format!("{text}\n{DEMO_RULES}"))?;
    }
    let config = GatewayConfig::from_yaml(&format!(
        "upstreams:\n  - {{ name: demo, url: {upstream_url:?} }}\nhold_budget_ms: 30000\nprogress_interval_ms: 500\n"
    ))?;
    let gateway = Gateway::start_with_policy(warden, config, policy).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway_url = format!("http://{}/mcp", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(warden_gateway::serve(
        listener,
        gateway.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    output::line(&format!(
        "    gateway at {gateway_url}, in front of {upstream_url}"
    ));

    // An MCP client, as an agent would be.
    let client = ()
        .serve(StreamableHttpClientTransport::from_config(
            StreamableHttpClientTransportConfig::with_uri(gateway_url.as_str()).auth_header(key),
        ))
        .await?;
    let tools: Vec<String> = client
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    output::line(&format!("    tools: {}", tools.join(", ")));
    let text_of = |result: &CallToolResult| -> String {
        result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.clone()))
            .collect()
    };
    let status = client
        .call_tool(CallToolRequestParams::new("demo__status"))
        .await?;
    output::line(&format!("    demo__status (allowed): {}", text_of(&status)));
    let peer = client.peer().clone();
    let held = tokio::spawn(async move {
        let arguments = serde_json::json!({"version": "v2.1.0"});
        peer.call_tool(
            CallToolRequestParams::new("demo__deploy")
                .with_arguments(arguments.as_object().cloned().unwrap_or_default()),
        )
        .await
    });
    // The approver sees it waiting and approves it.
    let approvals = warden.approvals();
    let mut pending = None;
    for _ in 0..200 {
        pending = approvals
            .list(Some(ApprovalStatus::Pending), 20)
            .await?
            .into_iter()
            .find(|a| a.tool_name == "demo__deploy");
        if pending.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = pending.ok_or_else(|| anyhow::anyhow!("the deploy call was not held"))?;
    output::line(&format!(
        "    demo__deploy is held for approval {} (risk: {})",
        pending.id,
        pending.risk_labels.join(", ")
    ));
    approvals
        .approve_by_id(pending.id, "demo-approver", Some("release checked"))
        .await?;
    let deployed = tokio::time::timeout(Duration::from_secs(30), held).await???;
    let outcome = text_of(&deployed);
    output::line(&format!(
        "    approved by demo-approver; the call ran once: {outcome}"
    ));
    let _ = client.cancel().await;
    let _ = stop.send(());
    let _ = serving.await;
    gateway.shutdown().await;
    upstream_task.abort();
    Ok(format!(
        "status allowed, deploy held then approved: {outcome}"
    ))
}
