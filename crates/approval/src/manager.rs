//! [`ApprovalManager`]: issue, check, decide, wait, expire.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set, SqlErr, TransactionTrait,
};
use tracing::{Instrument, debug, info_span, instrument, warn};
use uuid::Uuid;
use warden_cache::{Cache, Ttl};
use warden_entity::approval_requests::{self, Column};

use crate::notify::Notifier;
use crate::{
    Approval, ApprovalError, ApprovalRequest, ApprovalStatus, ApprovalToken, IssueOutcome,
    WaitOutcome,
};

const MAX_ID_LEN: usize = 255;
const MAX_NOTE_LEN: usize = 4096;

/// Issues and decides approvals: PostgreSQL (or SQLite) is the truth, the
/// cache is a write-through fast path.
///
/// Guarantees:
/// - `issue` commits the row before writing the cache; if the cache write
///   fails the token still works through the database.
/// - `check` reads the cache first and falls back to the database on a miss
///   or a cache error; a PENDING approval past `expires_at` is refused as
///   [`ApprovalError::Expired`] on both paths, so a fallback never revives an
///   expired token.
/// - `approve`/`deny` are one conditional UPDATE (only a PENDING, unexpired
///   row changes): of any number of concurrent deciders in any number of
///   processes exactly one wins; the others get `AlreadyDecided`, `Expired`
///   or `NotFound`. The cache is then updated keeping its remaining TTL (never
///   recreated with a fresh one); if that fails the key is deleted so the
///   database answers.
/// - A malformed token is `NotFound` without touching storage. Tokens are
///   never stored, logged or put in errors.
/// - Notifiers run in the background; their failures never fail a decision.
#[derive(Clone)]
pub struct ApprovalManager {
    db: DatabaseConnection,
    cache: Cache,
    ttl: Duration,
    poll_interval: Duration,
    db_timeout: Duration,
    notifiers: Vec<Arc<dyn Notifier>>,
}

impl std::fmt::Debug for ApprovalManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalManager")
            .field("cache", &self.cache)
            .field("ttl", &self.ttl)
            .field("notifiers", &self.notifiers.len())
            .finish()
    }
}

fn cache_key(token_hash: &str) -> String {
    format!("approval:{token_hash}")
}

fn channel(token_hash: &str) -> String {
    format!("approval:decided:{token_hash}")
}

fn identifier(field: &'static str, value: &str) -> Result<String, ApprovalError> {
    let invalid = |reason: &str| ApprovalError::InvalidField {
        field,
        reason: reason.to_owned(),
    };
    if value.trim().is_empty() {
        return Err(invalid("must not be empty"));
    }
    if value.chars().count() > MAX_ID_LEN {
        return Err(invalid("longer than 255 characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid("contains control characters"));
    }
    Ok(value.to_owned())
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

impl ApprovalManager {
    /// A manager over `db` (the truth) and `cache` (the fast path); approvals
    /// last `ttl` unless a request says otherwise.
    pub fn new(db: DatabaseConnection, cache: Cache, ttl: Duration) -> Self {
        Self {
            db,
            cache,
            ttl,
            poll_interval: Duration::from_millis(250),
            db_timeout: Duration::from_secs(5),
            notifiers: Vec::new(),
        }
    }

    /// Adds a notifier, told about every new approval and every decision.
    pub fn with_notifier(mut self, notifier: Arc<dyn Notifier>) -> Self {
        self.notifiers.push(notifier);
        self
    }

    /// The longest any one database step may take (default 5 s); past it the
    /// call fails with [`ApprovalError::Timeout`] instead of hanging on a
    /// paused or blackholed server.
    pub fn with_db_timeout(mut self, timeout: Duration) -> Self {
        self.db_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, ApprovalError>>,
    ) -> Result<T, ApprovalError> {
        tokio::time::timeout(self.db_timeout, work)
            .await
            .unwrap_or(Err(ApprovalError::Timeout {
                after: self.db_timeout,
            }))
    }

    /// How often `wait_for_decision` polls the database when no cache message
    /// arrives (default 250 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Issues an approval for `request`, or returns the request's existing
    /// PENDING one (without its token).
    #[instrument(skip_all, fields(request_id = %request.request_id, tool = %request.tool_name))]
    pub async fn issue(&self, request: &ApprovalRequest) -> Result<IssueOutcome, ApprovalError> {
        let request_id = identifier("request_id", &request.request_id)?;
        let caller_id = identifier("caller_id", &request.caller_id)?;
        let tool_name = identifier("tool_name", &request.tool_name)?;
        if request.raw_args_hash.len() != 64
            || !request.raw_args_hash.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(ApprovalError::InvalidField {
                field: "raw_args_hash",
                reason: "must be 64 hex characters (SHA-256)".into(),
            });
        }
        let labels = request
            .risk_labels
            .iter()
            .map(|l| identifier("risk_labels", l))
            .collect::<Result<Vec<_>, _>>()?;
        let ttl =
            Ttl::new(request.ttl.unwrap_or(self.ttl)).map_err(|e| ApprovalError::InvalidField {
                field: "ttl",
                reason: e.to_string(),
            })?;
        let token = ApprovalToken::generate()?;
        let token_hash = token.hash();
        let created_at = now();
        let expires_at = created_at
            + chrono::Duration::from_std(ttl.as_duration()).map_err(|e| {
                ApprovalError::InvalidField {
                    field: "ttl",
                    reason: e.to_string(),
                }
            })?;

        let stored = self
            .bounded(self.insert_pending(
                &request_id,
                &token_hash,
                caller_id,
                tool_name,
                request,
                labels,
                created_at,
                expires_at,
            ))
            .await?;
        let inserted = match stored {
            Ok(row) => row,
            Err(existing) => return Ok(existing),
        };
        let approval = Approval::from_model(inserted)?;
        if let Err(e) = self
            .cache
            .set_json(&cache_key(&token_hash), &approval, ttl)
            .await
        {
            warn!(approval_id = %approval.id, error = %e, "approval cache write failed; the token works through the database");
        }
        self.notify_pending(&approval, &token);
        Ok(IssueOutcome::Issued {
            id: approval.id,
            token,
            expires_at,
        })
    }

    /// The database half of `issue`: the new row, or the request's existing
    /// PENDING approval.
    #[allow(clippy::too_many_arguments)]
    async fn insert_pending(
        &self,
        request_id: &str,
        token_hash: &str,
        caller_id: String,
        tool_name: String,
        request: &ApprovalRequest,
        labels: Vec<String>,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<Result<approval_requests::Model, IssueOutcome>, ApprovalError> {
        let txn = self.db.begin().await?;
        // A PENDING row past its expiry no longer blocks a new approval.
        approval_requests::Entity::update_many()
            .col_expr(
                Column::Status,
                Expr::value(ApprovalStatus::Expired.as_str()),
            )
            .col_expr(Column::DecidedAt, Expr::value(created_at))
            .filter(Column::RequestId.eq(request_id))
            .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .filter(Column::ExpiresAt.lte(created_at))
            .exec(&txn)
            .await?;
        if let Some(existing) = self.pending_for(&txn, request_id).await? {
            txn.commit().await?;
            return Ok(Err(existing));
        }
        let model = approval_requests::ActiveModel {
            id: Set(Uuid::now_v7()),
            token_hash: Set(token_hash.to_owned()),
            request_id: Set(request_id.to_owned()),
            caller_id: Set(caller_id),
            tool_name: Set(tool_name),
            tool_call: Set(request.sanitized_tool_call.clone()),
            raw_args_hash: Set(request.raw_args_hash.to_ascii_lowercase()),
            risk_labels: Set(serde_json::Value::from(labels)),
            status: Set(ApprovalStatus::Pending.as_str().to_owned()),
            created_at: Set(created_at),
            expires_at: Set(expires_at),
            decided_at: Set(None),
            approver_id: Set(None),
            note: Set(None),
        };
        match model.insert(&txn).await {
            Ok(row) => {
                txn.commit().await?;
                Ok(Ok(row))
            }
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                // A concurrent issue for the same request won.
                drop(txn);
                self.pending_for(&self.db, request_id)
                    .await?
                    .map(Err)
                    .ok_or(ApprovalError::Database {
                        reason: e.to_string(),
                    })
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn pending_for<C: sea_orm::ConnectionTrait>(
        &self,
        db: &C,
        request_id: &str,
    ) -> Result<Option<IssueOutcome>, ApprovalError> {
        let row = approval_requests::Entity::find()
            .filter(Column::RequestId.eq(request_id))
            .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .one(db)
            .await?;
        Ok(row.map(|r| IssueOutcome::Existing {
            id: r.id,
            status: ApprovalStatus::Pending,
            expires_at: r.expires_at,
        }))
    }

    /// The approval for `token`: the cache first, the database on a miss or
    /// cache error. Refuses an expired one with [`ApprovalError::Expired`].
    #[instrument(skip_all)]
    pub async fn check(&self, token: &str) -> Result<Approval, ApprovalError> {
        let token = ApprovalToken::parse(token).ok_or(ApprovalError::NotFound)?;
        let approval = self.lookup(&token.hash()).await?;
        match approval.effective_status(now()) {
            ApprovalStatus::Expired => Err(ApprovalError::Expired),
            _ => Ok(approval),
        }
    }

    async fn lookup(&self, token_hash: &str) -> Result<Approval, ApprovalError> {
        match self
            .cache
            .get_json::<Approval>(&cache_key(token_hash))
            .await
        {
            // Decisions are final, so a cached decision is always right. A
            // cached PENDING is trusted only from a cache every process
            // shares: an in-process cache cannot see another process decide.
            Ok(Some(approval))
                if approval.status != ApprovalStatus::Pending || self.cache.is_shared() =>
            {
                debug!(path = "cache", "approval found");
                return Ok(approval);
            }
            Ok(Some(_)) => debug!("pending in the local cache; confirming with the database"),
            Ok(None) => debug!("approval not in cache; asking the database"),
            Err(e) => warn!(error = %e, "approval cache unavailable; asking the database"),
        }
        self.read_database(token_hash).await
    }

    async fn read_database(&self, token_hash: &str) -> Result<Approval, ApprovalError> {
        let row = self
            .bounded(async {
                Ok(approval_requests::Entity::find()
                    .filter(Column::TokenHash.eq(token_hash))
                    .one(&self.db)
                    .await?)
            })
            .await?
            .ok_or(ApprovalError::NotFound)?;
        Approval::from_model(row)
    }

    /// Approves the call `token` stands for.
    pub async fn approve(
        &self,
        token: &str,
        approver_id: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        self.decide(token, ApprovalStatus::Approved, approver_id, note)
            .await
    }

    /// Denies the call `token` stands for.
    pub async fn deny(
        &self,
        token: &str,
        approver_id: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        self.decide(token, ApprovalStatus::Denied, approver_id, note)
            .await
    }

    async fn decide(
        &self,
        token: &str,
        status: ApprovalStatus,
        approver_id: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        let token = ApprovalToken::parse(token).ok_or(ApprovalError::NotFound)?;
        let approver_id = identifier("approver_id", approver_id)?;
        let note = note.map(|n| {
            n.replace('\0', "\u{FFFD}")
                .chars()
                .take(MAX_NOTE_LEN)
                .collect::<String>()
        });
        let token_hash = token.hash();
        let span = info_span!("approval.decide", status = %status, approver = %approver_id);
        async {
            let decided_at = now();
            let changed = self
                .bounded(async {
                    Ok(approval_requests::Entity::update_many()
                        .col_expr(Column::Status, Expr::value(status.as_str()))
                        .col_expr(Column::DecidedAt, Expr::value(decided_at))
                        .col_expr(Column::ApproverId, Expr::value(approver_id.clone()))
                        .col_expr(Column::Note, Expr::value(note.clone()))
                        .filter(Column::TokenHash.eq(token_hash.as_str()))
                        .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
                        .filter(Column::ExpiresAt.gt(decided_at))
                        .exec(&self.db)
                        .await?
                        .rows_affected)
                })
                .await?;
            let approval = self.read_database(&token_hash).await?;
            if changed == 0 {
                return Err(match approval.effective_status(decided_at) {
                    ApprovalStatus::Expired => ApprovalError::Expired,
                    // Unreachable in practice: a PENDING unexpired row would have changed.
                    ApprovalStatus::Pending => ApprovalError::Expired,
                    decided => ApprovalError::AlreadyDecided { status: decided },
                });
            }
            // Read back after the commit, the row already carries the decision.
            self.publish_decision(&token_hash, &approval).await;
            self.notify_decision(&approval);
            Ok(approval)
        }
        .instrument(span)
        .await
    }

    /// After a committed decision: update the cache in place (keeping its
    /// TTL) and wake waiters. Failures only cost speed, never correctness.
    async fn publish_decision(&self, token_hash: &str, approval: &Approval) {
        let key = cache_key(token_hash);
        if let Err(e) = self.cache.replace_json_keep_ttl(&key, approval).await {
            warn!(approval_id = %approval.id, error = %e, "approval cache update failed; removing the stale entry");
            if let Err(e) = self.cache.delete(&key).await {
                warn!(approval_id = %approval.id, error = %e, "stale approval cache entry could not be removed; it expires with the approval");
            }
        }
        if let Err(e) = self
            .cache
            .publish(&channel(token_hash), approval.status.as_str().as_bytes())
            .await
        {
            debug!(error = %e, "decision not published; waiters fall back to polling");
        }
    }

    /// Waits until the approval is decided or `timeout` passes. Wakes on a
    /// cache message from whichever process decided, and polls the database
    /// meanwhile in case messages are lost or the cache is down.
    #[instrument(skip_all, fields(timeout_ms = timeout.as_millis()))]
    pub async fn wait_for_decision(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<WaitOutcome, ApprovalError> {
        let parsed = ApprovalToken::parse(token).ok_or(ApprovalError::NotFound)?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut subscription = match self.cache.subscribe(&channel(&parsed.hash())).await {
            Ok(s) => Some(s),
            Err(e) => {
                debug!(error = %e, "no decision channel; polling only");
                None
            }
        };
        // The first look and every wake-up by message use the fast path; timed
        // polls ask the database, which every process writes (an in-process
        // cache cannot see decisions made elsewhere).
        let mut from_database = false;
        loop {
            let approval = if from_database {
                let approval = self.read_database(&parsed.hash()).await?;
                if approval.effective_status(now()) == ApprovalStatus::Expired {
                    return Err(ApprovalError::Expired);
                }
                approval
            } else {
                self.check(token).await?
            };
            if approval.status != ApprovalStatus::Pending {
                return Ok(WaitOutcome::Decided(approval));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(WaitOutcome::TimedOut(approval));
            }
            let expires_in = (approval.expires_at - Utc::now())
                .to_std()
                .unwrap_or_default();
            let nap = self
                .poll_interval
                .min(deadline - now)
                .min(expires_in + Duration::from_millis(5));
            from_database = true;
            match subscription.as_mut() {
                Some(sub) => {
                    tokio::select! {
                        message = sub.next() => match message {
                            Some(_) => from_database = false,
                            None => subscription = None,
                        },
                        () = tokio::time::sleep(nap) => {}
                    }
                }
                None => tokio::time::sleep(nap).await,
            }
        }
    }

    /// Marks PENDING approvals past their expiry as EXPIRED, `batch_size` rows
    /// per statement; returns how many.
    #[instrument(skip(self))]
    pub async fn expire_stale(&self, batch_size: u64) -> Result<u64, ApprovalError> {
        let batch_size = batch_size.clamp(1, 10_000);
        let mut total = 0;
        loop {
            let at = now();
            let ids: Vec<Uuid> = approval_requests::Entity::find()
                .select_only()
                .column(Column::Id)
                .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
                .filter(Column::ExpiresAt.lte(at))
                .limit(batch_size)
                .into_tuple()
                .all(&self.db)
                .await?;
            if ids.is_empty() {
                break;
            }
            let changed = approval_requests::Entity::update_many()
                .col_expr(
                    Column::Status,
                    Expr::value(ApprovalStatus::Expired.as_str()),
                )
                .col_expr(Column::DecidedAt, Expr::value(at))
                .filter(Column::Id.is_in(ids.clone()))
                .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
                .exec(&self.db)
                .await?
                .rows_affected;
            total += changed;
            if (ids.len() as u64) < batch_size {
                break;
            }
        }
        Ok(total)
    }

    /// The approval with `id` (database), whatever its state.
    pub async fn get(&self, id: Uuid) -> Result<Approval, ApprovalError> {
        let row = approval_requests::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(ApprovalError::NotFound)?;
        Approval::from_model(row)
    }

    /// The newest approvals, optionally only those with `status` (capped at 1000).
    pub async fn list(
        &self,
        status: Option<ApprovalStatus>,
        limit: u64,
    ) -> Result<Vec<Approval>, ApprovalError> {
        let mut select = approval_requests::Entity::find()
            .order_by_desc(Column::CreatedAt)
            .limit(limit.clamp(1, 1_000));
        if let Some(status) = status {
            select = select.filter(Column::Status.eq(status.as_str()));
        }
        select
            .all(&self.db)
            .await?
            .into_iter()
            .map(Approval::from_model)
            .collect()
    }

    fn notify_pending(&self, approval: &Approval, token: &ApprovalToken) {
        for notifier in &self.notifiers {
            let (notifier, approval, token) = (notifier.clone(), approval.clone(), token.clone());
            tokio::spawn(async move {
                if let Err(e) = notifier.notify_pending(&approval, &token).await {
                    warn!(approval_id = %approval.id, error = %e, "pending notification failed");
                }
            });
        }
    }

    fn notify_decision(&self, approval: &Approval) {
        for notifier in &self.notifiers {
            let (notifier, approval) = (notifier.clone(), approval.clone());
            tokio::spawn(async move {
                if let Err(e) = notifier.notify_decision(&approval).await {
                    warn!(approval_id = %approval.id, error = %e, "decision notification failed");
                }
            });
        }
    }
}
