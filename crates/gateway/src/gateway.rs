//! The gateway: an MCP server ([`rmcp::ServerHandler`]) in front of the
//! upstreams, putting every tool call through Warden.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorCode,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::Value;
use tracing::{info, warn};
use warden_approval::{
    ApprovalManager, ApprovalRequest, ApprovalStatus, CallBinding, IssueOutcome, WaitOutcome,
};
use warden_audit::{AuditEvent, AuditLogger, Decision, RawArgs, Redactor, ToolCall};
use warden_cache::{FailMode, RateLimit, RateLimiter};
use warden_core::Warden;
use warden_keys::{KeyError, KeyManager, Policy, RuleKind, ToolDecision, VerifiedKey};

use crate::upstream::{Forwarded, Upstream};
use crate::{GatewayConfig, GatewayError, TOOL_SEPARATOR};

/// The JSON-RPC error code of a rate-limited call; its `data` carries
/// `retry_after_ms`.
pub const RATE_LIMITED: ErrorCode = ErrorCode(-32029);

/// The authenticated caller of a request, as the HTTP layer verified it
/// (never the key itself).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's id.
    pub key_id: uuid::Uuid,
    /// Who is calling.
    pub caller_id: String,
    /// The key's role.
    pub role: String,
    /// The key's trust level.
    pub trust_level: i16,
}

impl From<VerifiedKey> for Caller {
    fn from(key: VerifiedKey) -> Self {
        Self {
            key_id: key.key_id,
            caller_id: key.caller_id,
            role: key.role,
            trust_level: key.trust_level,
        }
    }
}

/// Warden's MCP gateway. Cheap to clone (the MCP transport makes one per
/// session).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
    /// Served over stdio: the one key every request runs under (from
    /// `WARDEN_API_KEY`), verified again on every request.
    stdio_key: Option<Arc<StdioKey>>,
}

/// Why a key may not call tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Unknown, revoked or expired.
    Invalid,
    /// Valid, but not for tool calls (why).
    Forbidden(&'static str),
    /// Keys cannot be verified right now.
    Unavailable,
}

impl Refusal {
    /// What the client is told.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Self::Invalid => "the key is not valid (unknown, revoked or expired)",
            Self::Forbidden(why) => why,
            Self::Unavailable => "keys cannot be verified right now; retry",
        }
    }
}

/// The stdio transport's key; its `Debug` never shows it.
struct StdioKey(String);

impl std::fmt::Debug for StdioKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdioKey([redacted])")
    }
}

struct Inner {
    keys: KeyManager,
    approvals: ApprovalManager,
    logger: AuditLogger,
    redactor: Redactor,
    policy: Policy,
    upstreams: Vec<Upstream>,
    config: GatewayConfig,
    /// One limiter per tool rule with a `rate_limit`, by rule position.
    tool_limiters: Vec<Option<RateLimiter>>,
    /// Every caller's calls together.
    caller_limiter: RateLimiter,
    /// Which key opened each MCP session.
    sessions: Sessions,
}

/// The key that opened each MCP session, so that no other key can use it.
/// Bounded: past [`Sessions::MAX`] the oldest are forgotten (their clients
/// are refused and open a new session).
#[derive(Default)]
pub(crate) struct Sessions {
    owners: std::sync::Mutex<(
        std::collections::HashMap<String, uuid::Uuid>,
        std::collections::VecDeque<String>,
    )>,
}

impl Sessions {
    const MAX: usize = 100_000;

    pub(crate) fn open(&self, session: &str, key_id: uuid::Uuid) {
        let mut guard = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (owners, order) = &mut *guard;
        if owners.insert(session.to_owned(), key_id).is_none() {
            order.push_back(session.to_owned());
        }
        while order.len() > Self::MAX {
            if let Some(old) = order.pop_front() {
                owners.remove(&old);
            }
        }
    }

    pub(crate) fn close(&self, session: &str) {
        let mut guard = self
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (owners, order) = &mut *guard;
        if owners.remove(session).is_some() {
            order.retain(|s| s != session);
        }
    }

    pub(crate) fn belongs_to(&self, session: &str, key_id: uuid::Uuid) -> bool {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .get(session)
            .is_some_and(|owner| *owner == key_id)
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field(
                "upstreams",
                &self
                    .inner
                    .upstreams
                    .iter()
                    .map(|u| &u.name)
                    .collect::<Vec<_>>(),
            )
            .field("policy_version", &self.inner.policy.version)
            .finish()
    }
}

/// Calls one caller may make per minute, all tools together.
pub const CALLS_PER_CALLER_PER_MINUTE: u32 = 600;

impl Gateway {
    /// Loads the policy (`POLICY_PATH` or the built-in one), connects every
    /// upstream and starts the audit logger. Call [`Gateway::shutdown`]
    /// before exiting.
    pub async fn start(warden: &Warden, config: GatewayConfig) -> Result<Self, GatewayError> {
        let (text, _) = warden
            .settings()
            .policy_source()
            .map_err(|e| GatewayError::Policy {
                reason: e.to_string(),
            })?;
        let policy = Policy::from_yaml(&text).map_err(|e| GatewayError::Policy {
            reason: e.to_string(),
        })?;
        Self::start_with_policy(warden, config, policy).await
    }

    /// Like [`Gateway::start`], under `policy` instead of the settings' one
    /// (an embedding application that builds its policy itself).
    pub async fn start_with_policy(
        warden: &Warden,
        config: GatewayConfig,
        policy: Policy,
    ) -> Result<Self, GatewayError> {
        crate::install_tls_provider();
        let mut tool_limiters = Vec::with_capacity(policy.tools.len());
        for (i, rule) in policy.tools.iter().enumerate() {
            tool_limiters.push(match rule.rate_limit {
                Some(limit) => Some(RateLimiter::new(
                    warden.cache().clone(),
                    &format!("gateway-rule-{i}-{}", &policy.version[..12]),
                    RateLimit::new(
                        limit.requests,
                        Duration::from_secs(limit.per_seconds.into()),
                    )?,
                    FailMode::Closed,
                )),
                None => None,
            });
        }
        let caller_limiter = RateLimiter::new(
            warden.cache().clone(),
            "gateway-caller",
            RateLimit::new(CALLS_PER_CALLER_PER_MINUTE, Duration::from_secs(60))?,
            FailMode::Closed,
        );
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for upstream in &config.upstreams {
            upstreams.push(Upstream::connect(upstream).await?);
        }
        info!(upstreams = upstreams.len(), policy_version = %policy.version, "gateway started");
        Ok(Self {
            inner: Arc::new(Inner {
                keys: warden.keys()?,
                approvals: warden.approvals(),
                logger: warden.audit().logger(),
                redactor: warden.redactor().clone(),
                policy,
                upstreams,
                config,
                tool_limiters,
                caller_limiter,
                sessions: Sessions::default(),
            }),
            stdio_key: None,
        })
    }

    /// The caller of a request: the one the HTTP layer authenticated, or,
    /// over stdio, the process's key verified again now (a revoked key is
    /// refused on its next request).
    async fn caller(&self, cx: &RequestContext<RoleServer>) -> Result<Caller, ErrorData> {
        if let Some(caller) = cx
            .extensions
            .get::<http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
        {
            return Ok(caller.clone());
        }
        match &self.stdio_key {
            Some(key) => self.verify(&key.0).await.map_err(|refusal| {
                ErrorData::new(ErrorCode(crate::UNAUTHENTICATED), refusal.message(), None)
            }),
            None => Err(ErrorData::invalid_request("not authenticated", None)),
        }
    }

    /// Verifies a presented key for tool calls: valid, unrevoked, of a role
    /// the current policy knows and that may not approve. The one check both
    /// transports use (HTTP maps the refusal to its status). The refusal
    /// says why, never the key.
    pub(crate) async fn verify(&self, presented: &str) -> Result<Caller, Refusal> {
        match self.inner.keys.verify(presented).await {
            Ok(key) if !self.may_call_tools(&key.role) => Err(Refusal::Forbidden(
                "keys whose role may approve or manage keys cannot call tools",
            )),
            // A role the policy no longer has, or more trust than it allows now.
            Ok(key) if self.inner.policy.check(&key.role, key.trust_level).is_err() => {
                Err(Refusal::Forbidden(
                    "the key's role or trust level is not allowed by the current policy",
                ))
            }
            Ok(key) => Ok(Caller::from(key)),
            Err(KeyError::Invalid | KeyError::Revoked | KeyError::Expired) => Err(Refusal::Invalid),
            Err(e) => {
                warn!(error = %e, "a key could not be verified");
                Err(Refusal::Unavailable)
            }
        }
    }

    /// This gateway serving over stdio under `key` (a client that launches
    /// its servers as child processes): every request runs as that key's
    /// caller, verified again per request.
    pub fn for_stdio(&self, key: String) -> Self {
        Self {
            inner: self.inner.clone(),
            stdio_key: Some(Arc::new(StdioKey(key))),
        }
    }

    /// Which key opened each session.
    pub(crate) fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Whether keys of `role` may be used for tool calls: a role that may
    /// approve (or manage keys) may not, so that an approver's key cannot
    /// be an agent's and decide its own calls from another identity.
    pub(crate) fn may_call_tools(&self, role: &str) -> bool {
        !self
            .inner
            .policy
            .allows(role, warden_keys::Permission::Approve)
            && !self
                .inner
                .policy
                .allows(role, warden_keys::Permission::ManageKeys)
    }

    /// Writes the audit events still queued and closes the upstreams. Other
    /// clones stop working.
    pub async fn shutdown(self) {
        if let Err(e) = self.inner.logger.shutdown().await {
            warn!(error = %e, "the gateway's audit logger did not flush");
        }
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            for upstream in inner.upstreams {
                upstream.close().await;
            }
        }
    }

    /// Whether the caller's key is still active, unrevoked and unexpired
    /// (read from the database: a hold can outlast a revocation).
    async fn key_still_valid(&self, caller: &Caller) -> bool {
        match self.inner.keys.find_by_caller(&caller.caller_id).await {
            Ok(Some(key)) => key.id == caller.key_id && key.is_usable_at(chrono::Utc::now()),
            _ => false,
        }
    }

    /// Whether `name` on `server` is shown to `caller`: a rule of `kind`
    /// matches and does not deny it.
    fn listed(&self, kind: RuleKind, server: &str, name: &str, caller: &Caller) -> bool {
        self.inner
            .policy
            .rule_for(kind, server, name, &caller.role, caller.trust_level)
            .is_some_and(|(_, rule)| match kind {
                // A tool that needs approval is still listed: it can be asked for.
                RuleKind::Tool => rule.decision != ToolDecision::Deny,
                _ => rule.decision == ToolDecision::Allow,
            })
    }

    /// A prompt or resource read: rate-limited, allowed by a rule of `kind`
    /// (none: denied), and audited either way.
    #[allow(clippy::too_many_arguments)]
    async fn permit(
        &self,
        kind: RuleKind,
        method: &'static str,
        upstream: &Upstream,
        name: &str,
        full_name: &str,
        caller: &Caller,
        arguments: &Value,
    ) -> Result<(), ErrorData> {
        let rule = self.inner.policy.rule_for(
            kind,
            &upstream.name,
            name,
            &caller.role,
            caller.trust_level,
        );
        let allowed = rule.is_some_and(|(_, r)| r.decision == ToolDecision::Allow);
        let limited = match self.inner.caller_limiter.check(&caller.caller_id).await {
            Ok(decision) => !decision.allowed,
            Err(_) => true,
        };
        let (decision, reason) = match (limited, allowed) {
            (true, _) => (Decision::RateLimited, "rate limited"),
            (false, true) => (Decision::Allow, "a rule allows it"),
            (false, false) => (Decision::Deny, "no rule allows it"),
        };
        let reason = format!("policy {}: {reason}", short(&self.inner.policy.version));
        let event = AuditEvent::record(
            &ToolCall {
                request_id: &uuid::Uuid::now_v7().to_string(),
                caller_id: &caller.caller_id,
                api_key_id: Some(caller.key_id),
                method,
                tool_name: Some(full_name),
                raw_args: RawArgs::Parsed(arguments),
                decision,
                reason: Some(&reason),
                risk_labels: &[],
                status_code: None,
                latency_ms: None,
                timestamp: None,
            },
            &self.inner.redactor,
        )
        .map_err(|e| {
            ErrorData::invalid_params(format!("the request cannot be recorded: {e}"), None)
        })?;
        self.inner.logger.log(event);
        match decision {
            Decision::Allow => Ok(()),
            Decision::RateLimited => Err(ErrorData::new(RATE_LIMITED, "rate limited", None)),
            _ => Err(ErrorData::invalid_request(
                format!("denied by Warden's policy: no rule allows {method} of this"),
                None,
            )),
        }
    }

    fn upstream(&self, name: &str) -> Option<&Upstream> {
        self.inner.upstreams.iter().find(|u| u.name == name)
    }

    /// Builds and queues one audit event of this call; returns its
    /// arguments' hash and sanitized form. Refuses (with the error the
    /// agent gets) arguments the audit layer will not record.
    #[allow(clippy::too_many_arguments)]
    fn audit(
        &self,
        call: &Call<'_>,
        decision: Decision,
        reason: &str,
        status: Option<i32>,
        latency: Option<Duration>,
    ) -> Result<(String, Value), ErrorData> {
        let reason = format!("policy {}: {reason}", short(&self.inner.policy.version));
        let labels: Vec<&str> = call.risk_labels.iter().map(String::as_str).collect();
        let event = AuditEvent::record(
            &ToolCall {
                request_id: &call.request_id,
                caller_id: &call.caller.caller_id,
                api_key_id: Some(call.caller.key_id),
                method: "tools/call",
                tool_name: Some(call.full_name),
                raw_args: RawArgs::Parsed(&call.arguments),
                decision,
                reason: Some(&reason),
                risk_labels: &labels,
                status_code: status,
                latency_ms: latency.map(|l| i64::try_from(l.as_millis()).unwrap_or(i64::MAX)),
                timestamp: None,
            },
            &self.inner.redactor,
        )
        .map_err(|e| {
            ErrorData::invalid_params(format!("the call cannot be recorded: {e}"), None)
        })?;
        let out = (
            event.raw_args_hash().to_owned(),
            event.sanitized_args().clone(),
        );
        self.inner.logger.log(event);
        Ok(out)
    }

    async fn forward(
        &self,
        call: &Call<'_>,
        upstream: &Upstream,
        started: Instant,
    ) -> CallToolResult {
        let mut params = CallToolRequestParams::new(call.tool.to_owned());
        if let Value::Object(arguments) = &call.arguments {
            params = params.with_arguments(arguments.clone());
        }
        let (result, status, decision_reason) = match upstream.call(params).await {
            Forwarded::Answered(result) => {
                let status = if result.is_error == Some(true) {
                    422
                } else {
                    200
                };
                (result, status, "forwarded".to_owned())
            }
            Forwarded::Failed(reason) => {
                warn!(upstream = %upstream.name, "an upstream call failed");
                (
                    tool_error(format!(
                        "the upstream server {} failed: {reason}",
                        upstream.name
                    )),
                    502,
                    "upstream failed".to_owned(),
                )
            }
            Forwarded::TimedOut(after) => (
                tool_error(format!(
                    "the upstream server {} did not answer within {} ms",
                    upstream.name,
                    after.as_millis()
                )),
                504,
                "upstream timed out".to_owned(),
            ),
        };
        let _ = self.audit(
            call,
            call.forwarded_as,
            &decision_reason,
            Some(status),
            Some(started.elapsed()),
        );
        result
    }

    /// The whole pipeline for one call: rate limits, policy, audit, then
    /// forward, refuse or hold.
    async fn handle(
        &self,
        caller: Caller,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let full_name = request.name.to_string();
        let Some((server, tool)) = full_name.split_once(TOOL_SEPARATOR) else {
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool {full_name:?}: tools are named <server>{TOOL_SEPARATOR}<tool>"
                ),
                None,
            ));
        };
        let Some(upstream) = self.upstream(server) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {full_name:?}: no upstream server {server:?}"),
                None,
            ));
        };
        let rule = self
            .inner
            .policy
            .tool_rule(server, tool, &caller.role, caller.trust_level);
        let mut call = Call {
            request_id: uuid::Uuid::now_v7().to_string(),
            caller: &caller,
            full_name: &full_name,
            tool,
            arguments: Value::Object(request.arguments.clone().unwrap_or_default()),
            risk_labels: rule.map(|(_, r)| r.risk_labels.clone()).unwrap_or_default(),
            forwarded_as: Decision::Allow,
        };

        // Rate limits: the caller's overall, then the rule's.
        let mut limits = vec![(&self.inner.caller_limiter, caller.caller_id.clone())];
        if let Some((i, _)) = rule
            && let Some(Some(limiter)) = self.inner.tool_limiters.get(i)
        {
            limits.push((limiter, caller.caller_id.clone()));
        }
        for (limiter, subject) in limits {
            let decision = limiter.check(&subject).await.map_err(|e| {
                ErrorData::internal_error(format!("the rate limiter is unavailable: {e}"), None)
            })?;
            if !decision.allowed {
                let retry_ms = u64::try_from(decision.retry_after.as_millis()).unwrap_or(u64::MAX);
                let _ = self.audit(
                    &call,
                    Decision::RateLimited,
                    "rate limited",
                    Some(429),
                    None,
                );
                return Err(ErrorData::new(
                    RATE_LIMITED,
                    format!("rate limited: retry in {retry_ms} ms"),
                    Some(serde_json::json!({ "retry_after_ms": retry_ms })),
                ));
            }
        }

        match rule {
            None => {
                self.audit(
                    &call,
                    Decision::Deny,
                    "no rule allows this call",
                    Some(403),
                    None,
                )?;
                Ok(tool_error(format!(
                    "denied by Warden's policy: no rule allows {full_name} for role {}",
                    caller.role
                ))
                .into())
            }
            Some((i, rule)) => match rule.decision {
                ToolDecision::Deny => {
                    self.audit(
                        &call,
                        Decision::Deny,
                        &format!("rule {i} denies"),
                        Some(403),
                        None,
                    )?;
                    Ok(tool_error(format!("denied by Warden's policy (rule {i})")).into())
                }
                ToolDecision::Allow => {
                    // Refuses arguments that cannot be recorded before any
                    // call is made; the call's event follows its outcome.
                    AuditEvent::record(
                        &ToolCall {
                            request_id: &call.request_id,
                            caller_id: &caller.caller_id,
                            api_key_id: None,
                            method: "tools/call",
                            tool_name: Some(&full_name),
                            raw_args: RawArgs::Parsed(&call.arguments),
                            decision: Decision::Allow,
                            reason: None,
                            risk_labels: &[],
                            status_code: None,
                            latency_ms: None,
                            timestamp: None,
                        },
                        &self.inner.redactor,
                    )
                    .map_err(|e| {
                        ErrorData::invalid_params(format!("the call cannot be recorded: {e}"), None)
                    })?;
                    Ok(self.forward(&call, upstream, started).await.into())
                }
                ToolDecision::RequireApproval => {
                    call.forwarded_as = Decision::Approved;
                    call.request_id = held_request_id(&call, &self.inner.policy.version)?;
                    self.hold(&call, upstream, rule.approval_ttl_seconds, started, &cx)
                        .await
                        .map(Into::into)
                }
            },
        }
    }

    /// Holds a call for a person's decision, telling the client it is
    /// waiting, up to the hold budget.
    async fn hold(
        &self,
        call: &Call<'_>,
        upstream: &Upstream,
        ttl_seconds: Option<u64>,
        started: Instant,
        cx: &RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        // A retry of a call a person approved after its hold ran out: the
        // approval is found by the whole call and used once, everywhere.
        let args_hash = warden_audit::canonical_hash(&call.arguments).map_err(|e| {
            ErrorData::invalid_params(format!("the call cannot be recorded: {e}"), None)
        })?;
        let retry = CallBinding {
            caller_id: call.caller.caller_id.clone(),
            tool_name: call.full_name.to_owned(),
            raw_args_hash: args_hash,
            policy_version: self.inner.policy.version.clone(),
        };
        if !self.key_still_valid(call.caller).await {
            return Ok(tool_error(
                "the caller's key is no longer valid. Nothing ran.".to_owned(),
            ));
        }
        if let Err(reason) = upstream.ready().await {
            return Ok(tool_error(format!(
                "the upstream server {} is unavailable ({reason}); nothing ran and any approval is kept. Retry later.",
                upstream.name
            )));
        }
        match self.inner.approvals.consume_for_call(&retry).await {
            Ok(Some(approval)) => {
                info!(approval = %approval.id, tool = %call.full_name, "an approved call retried: it runs once");
                return Ok(self.forward(call, upstream, started).await);
            }
            Ok(None) => {}
            Err(e) => {
                return Err(ErrorData::internal_error(
                    format!("approvals cannot be read: {e}"),
                    None,
                ));
            }
        }
        let (args_hash, sanitized) = self.audit(
            call,
            Decision::RequireApproval,
            "held for approval",
            None,
            None,
        )?;
        let policy_version = self.inner.policy.version.clone();
        let issued = self
            .inner
            .approvals
            .issue(&ApprovalRequest {
                request_id: call.request_id.clone(),
                caller_id: call.caller.caller_id.clone(),
                tool_name: call.full_name.to_owned(),
                sanitized_tool_call: sanitized,
                raw_args_hash: args_hash.clone(),
                risk_labels: call.risk_labels.clone(),
                policy_version: policy_version.clone(),
                ttl: ttl_seconds.map(Duration::from_secs),
            })
            .await
            .map_err(|e| {
                ErrorData::internal_error(format!("the approval could not be issued: {e}"), None)
            })?;
        // The same call asked again while its approval is pending waits on
        // that one approval (one approval per distinct call): the request
        // id is derived from the whole call.
        let (id, token) = match issued {
            IssueOutcome::Issued { id, token, .. } => (id, Some(token)),
            IssueOutcome::Existing { id, .. } => (id, None),
        };
        info!(approval = %id, tool = %call.full_name, caller = %call.caller.caller_id, "call held for approval");
        let binding = CallBinding {
            caller_id: call.caller.caller_id.clone(),
            tool_name: call.full_name.to_owned(),
            raw_args_hash: args_hash,
            policy_version,
        };
        let budget = self.inner.config.hold_budget();
        let deadline = Instant::now() + budget;
        let progress = cx.meta.get_progress_token();
        let mut waited = 0u32;
        let decided = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            let step = left.min(self.inner.config.progress_interval());
            let approvals = &self.inner.approvals;
            let waiting = async {
                match &token {
                    Some(token) => approvals.wait_for_decision(token.expose(), step).await,
                    // Without its token (another request holds it): polled.
                    None => {
                        tokio::time::sleep(step).await;
                        approvals.get(id).await.map(|a| {
                            // By its effective status: an overdue approval
                            // ends the wait instead of running out the budget.
                            if a.effective_status(chrono::Utc::now()) == ApprovalStatus::Pending {
                                WaitOutcome::TimedOut(a)
                            } else {
                                WaitOutcome::Decided(a)
                            }
                        })
                    }
                }
            };
            let outcome = tokio::select! {
                outcome = waiting => outcome,
                () = cx.ct.cancelled() => {
                    return Err(ErrorData::new(ErrorCode(-32800), format!("cancelled while held for approval {id}"), None));
                }
            };
            match outcome {
                Ok(WaitOutcome::Decided(approval)) => break Some(approval),
                Ok(WaitOutcome::TimedOut(_)) => {
                    waited += 1;
                    if let Some(token) = &progress {
                        // Bounded: a client that stops reading its stream
                        // cannot stall the hold past its budget.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            cx.peer.notify_progress(
                                ProgressNotificationParam::new(token.clone(), f64::from(waited))
                                    .with_message(format!(
                                        "held for approval {id}: waiting for a person to decide"
                                    )),
                            ),
                        )
                        .await;
                    }
                }
                Err(e) => {
                    return Err(ErrorData::internal_error(
                        format!("approval {id} could not be read: {e}"),
                        None,
                    ));
                }
            }
        };
        let Some(approval) = decided else {
            return Ok(tool_error(format!(
                "held for approval {id}: no decision within {} s. Nothing ran. Retry the same call \
                 (same arguments) later; it runs once, after a person has approved it.",
                budget.as_secs()
            )));
        };
        let decided_by = approval
            .result
            .as_ref()
            .and_then(|r| r.approver_id.clone())
            .unwrap_or_else(|| "nobody".into());
        let note = approval
            .result
            .as_ref()
            .and_then(|r| r.note.clone())
            .map(|n| format!(": {n}"))
            .unwrap_or_default();
        // Effective status: an approval past its window is expired, whatever
        // its stored status says (using it is refused by the database anyway).
        match approval.effective_status(chrono::Utc::now()) {
            ApprovalStatus::Approved => {
                // The key may have been revoked while the call was held.
                if !self.key_still_valid(call.caller).await {
                    return Ok(tool_error(format!(
                        "approval {id} was granted, but the caller's key is no longer valid. Nothing ran."
                    )));
                }
                if let Err(reason) = upstream.ready().await {
                    return Ok(tool_error(format!(
                        "approval {id} was granted, but the upstream server {} is unavailable ({reason}). \
                         Nothing ran; the approval is kept: retry the same call later.",
                        upstream.name
                    )));
                }
                // Exactly once, everywhere: only the consumer runs it.
                match self.inner.approvals.consume_for_call(&binding).await {
                    Ok(Some(_)) => Ok(self.forward(call, upstream, started).await),
                    Ok(None) => Ok(tool_error(format!(
                        "approval {id} was already used for this call. Nothing ran."
                    ))),
                    Err(e) => Ok(tool_error(format!(
                        "approval {id} cannot be used for this call: {e}. Nothing ran."
                    ))),
                }
            }
            ApprovalStatus::Denied => {
                let _ = self.audit(
                    call,
                    Decision::Rejected,
                    &format!("denied by {decided_by}"),
                    Some(403),
                    Some(started.elapsed()),
                );
                Ok(tool_error(format!(
                    "denied by {decided_by}{note} (approval {id}). Nothing ran."
                )))
            }
            // Approved, then used by the same call asked elsewhere.
            ApprovalStatus::Executed => Ok(tool_error(format!(
                "approval {id} was already used for this call. Nothing ran."
            ))),
            _ => Ok(tool_error(format!(
                "approval {id} expired before anyone decided. Nothing ran."
            ))),
        }
    }
}

/// One call on its way through the pipeline.
struct Call<'a> {
    request_id: String,
    caller: &'a Caller,
    full_name: &'a str,
    tool: &'a str,
    arguments: Value,
    risk_labels: Vec<String>,
    /// The decision recorded when it is forwarded (Allow, or Approved for a
    /// held call).
    forwarded_as: Decision,
}

/// The request id of a held call: derived from the whole call (caller,
/// tool, arguments' hash, policy version), so that asking again while its
/// approval is pending finds that approval instead of issuing another.
fn held_request_id(call: &Call<'_>, policy_version: &str) -> Result<String, ErrorData> {
    let args_hash = warden_audit::canonical_hash(&call.arguments).map_err(|e| {
        ErrorData::invalid_params(format!("the call cannot be recorded: {e}"), None)
    })?;
    let binding = serde_json::json!([
        call.caller.caller_id,
        call.full_name,
        args_hash,
        policy_version
    ]);
    let digest = warden_audit::canonical_hash(&binding)
        .map_err(|e| ErrorData::internal_error(format!("the call cannot be named: {e}"), None))?;
    Ok(format!("held-{}", &digest[..32]))
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

fn tool_error(text: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(text)])
}

impl ServerHandler for Gateway {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
            .with_server_info(Implementation::new("warden-gateway", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Warden's MCP gateway: tools are <server>__<tool>; every call is authenticated, \
                 rate-limited, checked against the policy and audited; some are held until a person approves them.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let caller = self.caller(&cx).await?;
        let mut tools = Vec::new();
        for upstream in &self.inner.upstreams {
            match upstream.tools().await {
                Ok(list) => {
                    for mut tool in list {
                        // Only what this caller may call (or ask to).
                        if !self.listed(RuleKind::Tool, &upstream.name, &tool.name, &caller) {
                            continue;
                        }
                        tool.name =
                            format!("{}{TOOL_SEPARATOR}{}", upstream.name, tool.name).into();
                        tools.push(tool);
                    }
                }
                // One upstream down does not hide the others' tools.
                Err(reason) => {
                    warn!(upstream = %upstream.name, %reason, "tools could not be listed")
                }
            }
        }
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let caller = self.caller(&cx).await?;
        let mut prompts = Vec::new();
        for upstream in &self.inner.upstreams {
            match upstream.prompts().await {
                Ok(list) => {
                    for mut prompt in list {
                        if !self.listed(RuleKind::Prompt, &upstream.name, &prompt.name, &caller) {
                            continue;
                        }
                        prompt.name = format!("{}{TOOL_SEPARATOR}{}", upstream.name, prompt.name);
                        prompts.push(prompt);
                    }
                }
                Err(reason) => {
                    warn!(upstream = %upstream.name, %reason, "prompts could not be listed")
                }
            }
        }
        Ok(ListPromptsResult::with_all_items(prompts))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        let caller = self.caller(&cx).await?;
        let full = request.name.clone();
        let (upstream, name) = full
            .split_once(TOOL_SEPARATOR)
            .and_then(|(server, name)| self.upstream(server).map(|u| (u, name)))
            .ok_or_else(|| ErrorData::invalid_params("unknown prompt", None))?;
        let arguments = Value::Object(
            request
                .arguments
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        );
        self.permit(
            RuleKind::Prompt,
            "prompts/get",
            upstream,
            name,
            &full,
            &caller,
            &arguments,
        )
        .await?;
        let mut forwarded = GetPromptRequestParams::new(name.to_owned());
        if let Some(arguments) = request.arguments {
            forwarded = forwarded.with_arguments(arguments);
        }
        // The upstream's error text stays out of the answer (and of the
        // SDK's logs): it may quote what it was given.
        upstream.get_prompt(forwarded).await.map_err(|_| {
            ErrorData::internal_error(
                format!("upstream {} could not render the prompt", upstream.name),
                None,
            )
        })
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        cx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let caller = self.caller(&cx).await?;
        let mut resources = Vec::new();
        for upstream in &self.inner.upstreams {
            match upstream.resources().await {
                Ok(list) => {
                    resources.extend(list.into_iter().filter(|r| {
                        self.listed(RuleKind::Resource, &upstream.name, &r.uri, &caller)
                    }))
                }
                Err(reason) => {
                    warn!(upstream = %upstream.name, %reason, "resources could not be listed")
                }
            }
        }
        Ok(ListResourcesResult::with_all_items(resources))
    }

    /// Resources keep their upstream's URIs; a read goes to the one upstream
    /// that lists the URI, and only when a resource rule allows it.
    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let caller = self.caller(&cx).await?;
        let mut owner = None;
        for upstream in &self.inner.upstreams {
            if let Ok(list) = upstream.resources().await
                && list.iter().any(|r| r.uri == request.uri)
            {
                owner = Some(upstream);
                break;
            }
        }
        let upstream =
            owner.ok_or_else(|| ErrorData::resource_not_found("unknown resource", None))?;
        let full = format!("{}{TOOL_SEPARATOR}{}", upstream.name, request.uri);
        self.permit(
            RuleKind::Resource,
            "resources/read",
            upstream,
            &request.uri,
            &full,
            &caller,
            &Value::Null,
        )
        .await?;
        upstream
            .read_resource(ReadResourceRequestParams::new(request.uri.clone()))
            .await
            .map_err(|_| {
                ErrorData::internal_error(
                    format!("upstream {} could not read the resource", upstream.name),
                    None,
                )
            })
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        cx: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let caller = self.caller(&cx).await?;
        self.handle(caller, request, cx).await
    }
}
