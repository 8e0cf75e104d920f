//! Serving the gateway over streamable HTTP, behind Warden's key check.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::Gateway;
use crate::gateway::Refusal;

/// The header carrying an MCP session's id.
const SESSION_HEADER: &str = "mcp-session-id";

/// The path the MCP endpoint is served at.
pub const MCP_PATH: &str = "/mcp";

/// Serves `gateway` at [`MCP_PATH`] on `listener` until `shutdown`
/// completes. Every request must carry `Authorization: Bearer <Warden API
/// key>`: without a valid key it is answered 401 before any MCP handling,
/// and a revoked key is refused on its next request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let loopback = listener.local_addr()?.ip().is_loopback();
    let mut config = StreamableHttpServerConfig::default();
    if !loopback {
        // Off loopback the Host is whatever name people use; the key check
        // guards every request.
        config = config.disable_allowed_hosts();
    }
    let cancel = config.cancellation_token.clone();
    let factory = gateway.clone();
    let mcp = StreamableHttpService::new(
        move || Ok(factory.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let app = Router::new()
        .nest_service(MCP_PATH, mcp)
        .layer(axum::middleware::from_fn_with_state(gateway, authenticate));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            cancel.cancel();
        })
        .await
}

/// Serves `gateway` over this process's stdin/stdout under `key` (from
/// `WARDEN_API_KEY`) until the client closes the stream. The key is checked
/// first (an invalid key is refused before serving) and again on every
/// request. Nothing else may write to stdout.
pub async fn serve_stdio(gateway: Gateway, key: String) -> Result<(), crate::GatewayError> {
    if let Err(refusal) = gateway.verify(&key).await {
        return Err(crate::GatewayError::Config {
            reason: format!("WARDEN_API_KEY: {}", refusal.message()),
        });
    }
    let running = rmcp::ServiceExt::serve(gateway.for_stdio(key), rmcp::transport::stdio())
        .await
        .map_err(|e| crate::GatewayError::Config {
            reason: format!("the MCP handshake over stdio failed: {e}"),
        })?;
    let _ = running.waiting().await;
    Ok(())
}

/// JSON-RPC error codes of requests refused before any MCP handling; the
/// HTTP status is in the error's `data.http_status`.
pub const UNAUTHENTICATED: i32 = -32001;
/// The key is valid but may not call tools.
pub const FORBIDDEN: i32 = -32003;
/// Keys cannot be verified right now.
pub const UNAVAILABLE: i32 = -32004;

/// A refusal as MCP clients understand it: the HTTP status, and a JSON-RPC
/// error in the body (clients surface its message to the agent).
fn refuse(status: StatusCode, code: i32, message: &'static str) -> Response {
    let body = serde_json::json!({
        "jsonrpc": "2.0",
        "id": null,
        "error": {"code": code, "message": message, "data": {"http_status": status.as_u16()}},
    });
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer realm=\"warden\""),
        );
    }
    response
}

fn unauthorized(message: &'static str) -> Response {
    refuse(StatusCode::UNAUTHORIZED, UNAUTHENTICATED, message)
}

/// Verifies the request's key and attaches the [`Caller`] for the handler.
async fn authenticate(
    State(gateway): State<Gateway>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .map(str::to_owned);
    let Some(presented) = presented else {
        return unauthorized("a Warden API key is required: Authorization: Bearer <key>");
    };
    match gateway.verify(&presented).await {
        Err(refusal @ Refusal::Invalid) => unauthorized(refusal.message()),
        Err(refusal @ Refusal::Forbidden(_)) => {
            refuse(StatusCode::FORBIDDEN, FORBIDDEN, refusal.message())
        }
        Err(refusal @ Refusal::Unavailable) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            UNAVAILABLE,
            refusal.message(),
        ),
        Ok(caller) => {
            // A session belongs to the key that opened it: no other key
            // may resume, cancel in or end it.
            let session = request
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(session) = &session
                && !gateway.sessions().belongs_to(session, caller.key_id)
            {
                return refuse(
                    StatusCode::NOT_FOUND,
                    UNAUTHENTICATED,
                    "no such session for this key",
                );
            }
            let key_id = caller.key_id;
            let ending = request.method() == axum::http::Method::DELETE;
            request.extensions_mut().insert(caller);
            let response = next.run(request).await;
            // A session its client ended is forgotten.
            if ending
                && response.status().is_success()
                && let Some(session) = &session
            {
                gateway.sessions().close(session);
            }
            if session.is_none()
                && let Some(opened) = response
                    .headers()
                    .get(SESSION_HEADER)
                    .and_then(|v| v.to_str().ok())
            {
                gateway.sessions().open(opened, key_id);
            }
            response
        }
    }
}
