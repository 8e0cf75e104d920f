//! [`ApprovalManager`]: issue, check, decide, wait, expire.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, SqlErr,
    Statement,
};
use tracing::{Instrument, debug, info_span, instrument, warn};
use uuid::Uuid;
use warden_cache::{Cache, Ttl};
use warden_entity::approval_requests::{self, Column};

use crate::db_clock::{db_now, now_sql, plus_sql};
use crate::decisions::{self, DecisionHub};
use crate::notify::Notifier;
use crate::{
    Approval, ApprovalError, ApprovalRequest, ApprovalStatus, ApprovalToken, CallBinding,
    IssueOutcome, WaitOutcome,
};

const MAX_ID_LEN: usize = 255;
const MAX_NOTE_LEN: usize = 4096;
const MAX_POLICY_VERSION_LEN: usize = 128;
/// The actor of what the system does on its own (expiry).
const SYSTEM_ACTOR: &str = "warden";

/// Issues and decides approvals: PostgreSQL (or SQLite) is the truth, the
/// cache only ever says "still pending".
///
/// The gateway's sequence: [`issue`](Self::issue) when a policy holds a call,
/// [`wait_for_decision`](Self::wait_for_decision) (or [`check`](Self::check)),
/// then — immediately before running the call —
/// [`consume`](Self::consume) with the call it is about to run. Only a
/// successful `consume` lets the call run; it succeeds once.
///
/// Guarantees:
/// - **Only the database says yes.** A cached entry is trusted only to say
///   PENDING (and only from a cache every process shares); every other answer
///   — approved, denied, expired — is read from the database. No cache write
///   can approve, deny or decide a call.
/// - **One clock: the database's.** Creation, expiry, decision and execution
///   times are the database's `now`, in the same statement that compares
///   them; a process with a skewed clock cannot approve an expired call or
///   expire a valid one.
/// - `approve`/`deny` are one conditional UPDATE (only a PENDING, unexpired
///   row changes): of any number of concurrent deciders in any number of
///   processes exactly one wins; the others get `AlreadyDecided`, `Expired`
///   or `NotFound`.
/// - An approval binds the whole call: caller, tool, raw-arguments hash,
///   policy version and expiry. `consume` is one conditional UPDATE
///   APPROVED → EXECUTED that re-checks all of them inside the execution
///   window (`with_execution_window`, default 5 minutes after the decision);
///   an APPROVED approval past its window is EXPIRED on every path.
/// - Every database step is bounded (`with_db_timeout`): a typed
///   [`ApprovalError::Timeout`] instead of a hang.
/// - A malformed token is `NotFound` without touching storage. Tokens are
///   never stored, logged or put in errors.
/// - Waiters share one cache subscription per manager (and its clones).
/// - Notifiers run in the background; their failures never fail a decision.
#[derive(Clone)]
pub struct ApprovalManager {
    db: DatabaseConnection,
    cache: Cache,
    ttl: Duration,
    poll_interval: Duration,
    db_timeout: Duration,
    execution_window: Duration,
    notifiers: Vec<Arc<dyn Notifier>>,
    decisions: Arc<DecisionHub>,
    redactor: warden_audit::Redactor,
    /// Cache entries of decided approvals whose removal failed (the cache
    /// was down): this process never trusts them, and retries the removal
    /// in the background until it succeeds or the entry would have expired.
    stale: Arc<std::sync::Mutex<std::collections::HashMap<String, DateTime<Utc>>>>,
}

/// At most this many failed cache removals are tracked and retried at once;
/// beyond it a failed removal is only logged (the entry still expires with
/// its TTL, and only ever says PENDING).
const MAX_STALE_ENTRIES: usize = 10_000;

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

fn identifier(field: &'static str, value: &str) -> Result<String, ApprovalError> {
    warden_common::identifier(value, MAX_ID_LEN)
        .map(str::to_owned)
        .map_err(|e| ApprovalError::InvalidField {
            field,
            reason: e.to_string(),
        })
}

/// The row for `token_hash` and the database's clock, in one statement, on
/// `db` (the pool or a transaction).
async fn read_row<C: ConnectionTrait>(db: &C, token_hash: &str) -> Result<RowAt, ApprovalError> {
    let backend = db.get_database_backend();
    let statement = approval_requests::Entity::find()
        .filter(Column::TokenHash.eq(token_hash))
        .expr_as(Expr::cust(now_sql(backend)), "db_now")
        .build(backend);
    let row = db
        .query_one_raw(statement)
        .await?
        .ok_or(ApprovalError::NotFound)?;
    Ok(RowAt {
        now: row.try_get::<DateTime<Utc>>("", "db_now")?,
        row: approval_requests::Model::from_query_result(&row, "")?,
    })
}

/// A committed new approval, and the token hash of the one it superseded
/// (a reissue).
struct Inserted {
    row: approval_requests::Model,
    superseded: Option<String>,
}

/// A row together with the database's clock at the moment it was read.
struct RowAt {
    row: approval_requests::Model,
    now: DateTime<Utc>,
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
            execution_window: Duration::from_secs(300),
            notifiers: Vec::new(),
            decisions: DecisionHub::new(),
            redactor: warden_audit::Redactor::default(),
            stale: Arc::default(),
        }
    }

    /// How long after an APPROVED decision the call may still be consumed
    /// (default 5 minutes, at least 1 second); past it the approval is
    /// EXPIRED.
    pub fn with_execution_window(mut self, window: Duration) -> Self {
        self.execution_window = window.max(Duration::from_secs(1));
        self
    }

    /// Redacts the notes and summaries of its admin events with `redactor`
    /// (default: the built-in rules only).
    pub fn with_redactor(mut self, redactor: warden_audit::Redactor) -> Self {
        self.redactor = redactor;
        self
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
        warden_common::within(self.db_timeout, work).await
    }

    /// How often `wait_for_decision` polls the database when no cache message
    /// arrives (default 250 ms).
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Issues an approval for `request`, or returns the request's existing
    /// PENDING one (without its token). After a [`ApprovalError::Timeout`]
    /// (the row may have been stored, its token lost) call
    /// [`reissue`](Self::reissue).
    #[instrument(name = "approval.issue", skip_all, fields(request_id = %request.request_id, tool = %request.tool_name, otel.kind = "client", db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "approval_requests", db.operation.name = "INSERT"))]
    pub async fn issue(&self, request: &ApprovalRequest) -> Result<IssueOutcome, ApprovalError> {
        self.issue_inner(request, false).await
    }

    async fn issue_inner(
        &self,
        request: &ApprovalRequest,
        supersede: bool,
    ) -> Result<IssueOutcome, ApprovalError> {
        let outcome = self.issue_once(request, supersede).await?;
        if let IssueOutcome::Issued { id, .. } = &outcome {
            crate::metrics::issued();
            self.announce(id.to_string());
        }
        Ok(outcome)
    }

    /// Tells live views (the console's inbox) that the pending set changed:
    /// published off the caller's path, and a lost announcement only delays
    /// a view until its next read.
    fn announce(&self, what: String) {
        let cache = self.cache.clone();
        tokio::spawn(async move {
            if let Err(e) = cache
                .publish(crate::decisions::INBOX_CHANNEL, what.as_bytes())
                .await
            {
                debug!(error = %e, "inbox change not announced");
            }
        });
    }

    /// Issues a fresh approval for `request`, superseding the request's
    /// PENDING one (which becomes EXPIRED, its token useless) when that one
    /// is bound to the same caller, tool, arguments and policy. This recovers
    /// an `issue` whose answer was lost (a timeout after its commit): the
    /// lost token can no longer be used, and the new one is notified.
    /// A PENDING approval bound to a different call is not replaced:
    /// [`ApprovalError::BindingMismatch`].
    #[instrument(name = "approval.reissue", skip_all, fields(request_id = %request.request_id, tool = %request.tool_name, otel.kind = "client", db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "approval_requests", db.operation.name = "INSERT"))]
    pub async fn reissue(&self, request: &ApprovalRequest) -> Result<IssueOutcome, ApprovalError> {
        self.issue_inner(request, true).await
    }

    async fn issue_once(
        &self,
        request: &ApprovalRequest,
        supersede: bool,
    ) -> Result<IssueOutcome, ApprovalError> {
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
        if request.policy_version.trim().is_empty()
            || request.policy_version.chars().count() > MAX_POLICY_VERSION_LEN
            || request.policy_version.chars().any(char::is_control)
        {
            return Err(ApprovalError::InvalidField {
                field: "policy_version",
                reason: "1 to 128 characters, no control characters (it binds the approval to \
                         the policy that held the call)"
                    .into(),
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
        let lifetime = chrono::Duration::from_std(ttl.as_duration()).map_err(|e| {
            ApprovalError::InvalidField {
                field: "ttl",
                reason: e.to_string(),
            }
        })?;
        let token = ApprovalToken::generate()?;
        let token_hash = token.hash();
        let model = approval_requests::Model {
            id: Uuid::now_v7(),
            token_hash: token_hash.clone(),
            request_id,
            caller_id,
            tool_name,
            tool_call: request.sanitized_tool_call.clone(),
            raw_args_hash: request.raw_args_hash.to_ascii_lowercase(),
            risk_labels: serde_json::Value::from(labels),
            status: ApprovalStatus::Pending.as_str().to_owned(),
            // Both set from the database's clock in the transaction.
            created_at: DateTime::<Utc>::MIN_UTC,
            expires_at: DateTime::<Utc>::MIN_UTC,
            decided_at: None,
            approver_id: None,
            note: None,
            policy_version: request.policy_version.clone(),
            execute_by: None,
            executed_at: None,
        };
        let ttl_ms = u64::try_from(ttl.as_duration().as_millis()).unwrap_or(u64::MAX);
        // PostgreSQL: the common case (no PENDING approval for the request
        // yet) is one statement. Anything else — an existing, overdue or
        // superseded approval, or SQLite — takes the transaction below.
        let at_once = if !supersede && self.db.get_database_backend() == DbBackend::Postgres {
            self.bounded(self.insert_pending_at_once(&model, ttl_ms))
                .await?
        } else {
            None
        };
        let stored = match at_once {
            Some(row) => Ok(Inserted {
                row,
                superseded: None,
            }),
            None => {
                self.bounded(self.insert_pending(model, lifetime, ttl_ms, supersede))
                    .await?
            }
        };
        let inserted = match stored {
            Ok(Inserted { row, superseded }) => {
                // The lost token now reads as EXPIRED at once; a cache entry
                // left behind would only ever say PENDING.
                if let Some(old) = superseded
                    && let Err(e) = self.cache.delete(&cache_key(&old)).await
                {
                    debug!(error = %e, "superseded approval's cache entry not removed; it expires with it");
                }
                row
            }
            Err(existing) => return Ok(existing),
        };
        let expires_at = inserted.expires_at;
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
    /// PENDING approval. With `supersede`, an existing PENDING approval bound
    /// to the same call is expired and replaced.
    /// PostgreSQL's one-statement issue: inserts the PENDING row (the
    /// database's clock sets created_at and expires_at) and its
    /// `approval.issue` event together, unless the request already has a
    /// PENDING approval (then nothing is written and `None` is returned).
    async fn insert_pending_at_once(
        &self,
        model: &approval_requests::Model,
        ttl_ms: u64,
    ) -> Result<Option<approval_requests::Model>, ApprovalError> {
        let event = self.admin_event(
            model,
            &model.caller_id,
            "approval.issue",
            None,
            issue_summary(model, ttl_ms),
        )?;
        let insert = Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "INSERT INTO approval_requests (id, token_hash, request_id, caller_id, \
                 tool_name, tool_call, raw_args_hash, risk_labels, status, created_at, \
                 expires_at, policy_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now(), {}, $10) \
                 ON CONFLICT (request_id) WHERE status = 'PENDING' DO NOTHING RETURNING *",
                plus_sql(DbBackend::Postgres, ttl_ms)
            ),
            [
                model.id.into(),
                model.token_hash.clone().into(),
                model.request_id.clone().into(),
                model.caller_id.clone().into(),
                model.tool_name.clone().into(),
                model.tool_call.clone().into(),
                model.raw_args_hash.clone().into(),
                model.risk_labels.clone().into(),
                model.status.clone().into(),
                model.policy_version.clone().into(),
            ],
        );
        let Some(rows) =
            refused_is_none(warden_audit::change_with_events(&self.db, insert, &[event]).await?)?
        else {
            return Ok(None);
        };
        rows.first()
            .map(|row| approval_requests::Model::from_query_result(row, ""))
            .transpose()
            .map_err(Into::into)
    }

    async fn insert_pending(
        &self,
        mut model: approval_requests::Model,
        lifetime: chrono::Duration,
        ttl_ms: u64,
        supersede: bool,
    ) -> Result<Result<Inserted, IssueOutcome>, ApprovalError> {
        let txn = warden_audit::begin_write(&self.db).await?;
        let mut superseded = None;
        let now_expr = now_sql(txn.get_database_backend());
        let created_at = db_now(&txn).await?.trunc_subsecs(6);
        model.created_at = created_at;
        model.expires_at = created_at + lifetime;
        // A PENDING row past its expiry no longer blocks a new approval.
        let overdue = approval_requests::Entity::find()
            .filter(Column::RequestId.eq(model.request_id.as_str()))
            .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .filter(Expr::col(Column::ExpiresAt).lte(Expr::cust(now_expr.clone())))
            .one(&txn)
            .await?;
        if let Some(overdue) = overdue {
            self.expire_in(
                &txn,
                &overdue,
                SYSTEM_ACTOR,
                "not decided before it expired",
            )
            .await?;
        }
        let binding = CallBinding {
            caller_id: model.caller_id.clone(),
            tool_name: model.tool_name.clone(),
            raw_args_hash: model.raw_args_hash.clone(),
            policy_version: model.policy_version.clone(),
        };
        if let Some(existing) = self.pending_row(&txn, &model.request_id).await? {
            let superseded_hash = existing.token_hash.clone();
            let existing = Approval::from_model(existing)?;
            // The request's PENDING approval is for another call: neither
            // report it as this call's nor replace it.
            if let Some(field) = existing.binding_mismatch(&binding) {
                return Err(ApprovalError::BindingMismatch { field });
            }
            if !supersede {
                txn.commit().await?;
                return Ok(Err(IssueOutcome::Existing {
                    id: existing.id,
                    status: ApprovalStatus::Pending,
                    expires_at: existing.expires_at,
                }));
            }
            // What the approver is shown must not change under a reissue.
            if existing.tool_call != model.tool_call {
                return Err(ApprovalError::BindingMismatch {
                    field: "sanitized_tool_call",
                });
            }
            let existing_row = approval_requests::Entity::find_by_id(existing.id)
                .one(&txn)
                .await?
                .ok_or(ApprovalError::NotFound)?;
            let changed = self
                .expire_in(
                    &txn,
                    &existing_row,
                    &model.caller_id,
                    "superseded by a reissue (its token was lost)",
                )
                .await?;
            if !changed {
                // Decided meanwhile: the decision stands; nothing is replaced.
                let now = approval_requests::Entity::find_by_id(existing.id)
                    .one(&txn)
                    .await?
                    .ok_or(ApprovalError::NotFound)?;
                return Err(ApprovalError::AlreadyDecided {
                    status: Approval::from_model(now)?.status,
                });
            }
            superseded = Some(superseded_hash);
        }
        let request_id = model.request_id.clone();
        match approval_requests::ActiveModel::from(model)
            .insert(&txn)
            .await
        {
            Ok(row) => {
                let event = self.admin_event(
                    &row,
                    &row.caller_id,
                    "approval.issue",
                    None,
                    issue_summary(&row, ttl_ms),
                )?;
                warden_audit::record_in(&txn, &[event]).await?;
                txn.commit().await?;
                Ok(Ok(Inserted { row, superseded }))
            }
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                // A concurrent issue for the same request won: it is this
                // call's approval only if it is bound to this call.
                drop(txn);
                let row = self.pending_row(&self.db, &request_id).await?.ok_or(
                    ApprovalError::Database {
                        reason: e.to_string(),
                    },
                )?;
                let outcome = existing_outcome(&row);
                if let Some(field) = Approval::from_model(row)?.binding_mismatch(&binding) {
                    return Err(ApprovalError::BindingMismatch { field });
                }
                Ok(Err(outcome))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn pending_row<C: ConnectionTrait>(
        &self,
        db: &C,
        request_id: &str,
    ) -> Result<Option<approval_requests::Model>, ApprovalError> {
        Ok(approval_requests::Entity::find()
            .filter(Column::RequestId.eq(request_id))
            .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .one(db)
            .await?)
    }

    /// The approval for `token`. A PENDING answer may come from a shared
    /// cache; every other answer comes from the database. Refuses an expired
    /// one (undecided in time, or approved and past its execution window)
    /// with [`ApprovalError::Expired`].
    #[instrument(name = "approval.check", skip_all, fields(otel.kind = "client", db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "approval_requests", db.operation.name = "SELECT"))]
    pub async fn check(&self, token: &str) -> Result<Approval, ApprovalError> {
        let token = ApprovalToken::parse(token).ok_or(ApprovalError::NotFound)?;
        let token_hash = token.hash();
        if let Some(pending) = self.cached_pending(&token_hash).await {
            return Ok(pending);
        }
        self.check_database(&token_hash).await
    }

    /// A PENDING approval from the cache, when the cache may say so: only a
    /// shared cache (an in-process one cannot see other processes decide),
    /// only PENDING (anything else is for the database to say), and only
    /// while this process's clock agrees it has not expired (otherwise the
    /// database's clock decides).
    async fn cached_pending(&self, token_hash: &str) -> Option<Approval> {
        if !self.cache.is_shared() || self.is_stale(token_hash) {
            return None;
        }
        match self
            .cache
            .get_json::<Approval>(&cache_key(token_hash))
            .await
        {
            Ok(Some(approval))
                if approval.status == ApprovalStatus::Pending
                    && approval.result.is_none()
                    && Utc::now() < approval.expires_at =>
            {
                debug!(path = "cache", "approval pending");
                Some(approval)
            }
            Ok(Some(_)) => {
                debug!("cached approval is not a plain PENDING; asking the database");
                None
            }
            Ok(None) => {
                debug!("approval not in cache; asking the database");
                None
            }
            Err(e) => {
                warn!(error = %e, "approval cache unavailable; asking the database");
                None
            }
        }
    }

    async fn check_database(&self, token_hash: &str) -> Result<Approval, ApprovalError> {
        let RowAt { row, now } = self.read_database(token_hash).await?;
        let approval = Approval::from_model(row)?;
        match approval.effective_status(now) {
            ApprovalStatus::Expired => Err(ApprovalError::Expired),
            _ => Ok(approval),
        }
    }

    /// The row for `token_hash` and the database's clock, in one statement.
    async fn read_database(&self, token_hash: &str) -> Result<RowAt, ApprovalError> {
        self.bounded(read_row(&self.db, token_hash)).await
    }

    /// One change to the approval with `token_hash`, atomically with its
    /// audit event: runs the conditional `update`; when it changed the row,
    /// records `action` by `actor` (the summary built from the changed row).
    /// Returns whether it changed, and the row as the transaction left it
    /// with the database's clock (no read after the commit). Bounded.
    async fn change_recorded(
        &self,
        token_hash: &str,
        update: sea_orm::UpdateMany<approval_requests::Entity>,
        actor: &str,
        action: &str,
        note: Option<&str>,
        summary: impl FnOnce(&approval_requests::Model) -> serde_json::Value,
    ) -> Result<(bool, RowAt), ApprovalError> {
        self.bounded(async {
            let txn = warden_audit::begin_write(&self.db).await?;
            let changed = update
                .filter(Column::TokenHash.eq(token_hash))
                .exec(&txn)
                .await?
                .rows_affected
                == 1;
            let at = read_row(&txn, token_hash).await?;
            if changed {
                let event = self.admin_event(&at.row, actor, action, note, summary(&at.row))?;
                warden_audit::record_in(&txn, &[event]).await?;
            }
            txn.commit().await?;
            Ok((changed, at))
        })
        .await
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

    /// Approves approval `id` for a person the caller has already
    /// authenticated and authorized (the approver console's signed-in
    /// approver): the same exactly-once decision, audit event and
    /// notifications as [`approve`](Self::approve), without the token.
    /// Never expose this to anyone the caller has not authorized to decide.
    /// An approver whose id is the held call's caller id is refused
    /// ([`ApprovalError::OwnCall`]): a key cannot approve its own call.
    pub async fn approve_by_id(
        &self,
        id: Uuid,
        approver_id: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        let token_hash = self.token_hash_for(id, approver_id).await?;
        self.decide_hash(token_hash, ApprovalStatus::Approved, approver_id, note)
            .await
    }

    /// Denies approval `id`; see [`approve_by_id`](Self::approve_by_id).
    pub async fn deny_by_id(
        &self,
        id: Uuid,
        approver_id: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        let token_hash = self.token_hash_for(id, approver_id).await?;
        self.decide_hash(token_hash, ApprovalStatus::Denied, approver_id, note)
            .await
    }

    /// The stored token hash of approval `id` (one bounded read), for
    /// `approver_id` to decide: [`ApprovalError::OwnCall`] when the approver
    /// is the caller whose call is held (the caller id is fixed at issue).
    async fn token_hash_for(&self, id: Uuid, approver_id: &str) -> Result<String, ApprovalError> {
        let row = self
            .bounded(async {
                Ok(approval_requests::Entity::find_by_id(id)
                    .one(&self.db)
                    .await?)
            })
            .await?
            .ok_or(ApprovalError::NotFound)?;
        if row.caller_id == approver_id {
            return Err(ApprovalError::OwnCall);
        }
        Ok(row.token_hash)
    }

    async fn decide(
        &self,
        token: &str,
        status: ApprovalStatus,
        approver_id: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        let token = ApprovalToken::parse(token).ok_or(ApprovalError::NotFound)?;
        self.decide_hash(token.hash(), status, approver_id, note)
            .await
    }

    /// Decides the approval whose token hashes to `token_hash`.
    async fn decide_hash(
        &self,
        token_hash: String,
        status: ApprovalStatus,
        approver_id: &str,
        note: Option<&str>,
    ) -> Result<Approval, ApprovalError> {
        let approver_id = identifier("approver_id", approver_id)?;
        // The note is a person's free text: stored redacted (whole, then
        // cut, so a cut never leaves a fragment no pattern recognises).
        let note = note.map(|n| {
            self.redactor
                .redact_text(n)
                .replace('\0', "\u{FFFD}")
                .chars()
                .take(MAX_NOTE_LEN)
                .collect::<String>()
        });
        let span = info_span!(
            "approval.decide",
            status = %status,
            approver = %approver_id,
            otel.kind = "client",
            db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()),
            db.collection.name = "approval_requests",
            db.operation.name = "UPDATE",
        );
        let approval = async {
            let backend = self.db.get_database_backend();
            let now_expr = now_sql(backend);
            let window_ms = u64::try_from(self.execution_window.as_millis()).unwrap_or(u64::MAX);
            let execute_by = match status {
                ApprovalStatus::Approved => Expr::cust(plus_sql(backend, window_ms)),
                _ => Expr::value(Option::<DateTime<Utc>>::None),
            };
            // The decision and its audit event commit together, or neither.
            let action = match status {
                ApprovalStatus::Approved => "approval.approve",
                _ => "approval.deny",
            };
            let summary = decision_summary(status, window_ms);
            // PostgreSQL: one statement decides and records, after one read
            // that names the row (from a shared cache, or the database).
            if backend == DbBackend::Postgres
                && let Some(subject) = self.decision_subject(&token_hash).await?
            {
                let event = self.admin_event_for(
                    &subject,
                    &approver_id,
                    action,
                    note.as_deref(),
                    summary.clone(),
                )?;
                if let Some(RowAt { row, .. }) = self
                    .bounded(self.decide_at_once(
                        &token_hash,
                        &subject,
                        status,
                        &approver_id,
                        note.as_deref(),
                        window_ms,
                        event,
                    ))
                    .await?
                {
                    let approval = Approval::from_model(row)?;
                    self.publish_decision(&token_hash, &approval).await;
                    self.notify_decision(&approval);
                    return Ok(approval);
                }
            }
            // Otherwise (SQLite, or the fast path changed nothing): one
            // transaction, which also says why nothing changed.
            let update = approval_requests::Entity::update_many()
                .col_expr(Column::Status, Expr::value(status.as_str()))
                .col_expr(Column::DecidedAt, Expr::cust(now_expr.clone()))
                .col_expr(Column::ExecuteBy, execute_by)
                .col_expr(Column::ApproverId, Expr::value(approver_id.clone()))
                .col_expr(Column::Note, Expr::value(note.clone()))
                .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
                .filter(Expr::col(Column::ExpiresAt).gt(Expr::cust(now_expr.clone())));
            let (changed, RowAt { row, now }) = self
                .change_recorded(
                    &token_hash,
                    update,
                    &approver_id,
                    action,
                    note.as_deref(),
                    |_| summary,
                )
                .await?;
            let approval = Approval::from_model(row)?;
            if !changed {
                return Err(match approval.effective_status(now) {
                    // A PENDING row that did not change was expired by the
                    // database's clock.
                    ApprovalStatus::Expired | ApprovalStatus::Pending => ApprovalError::Expired,
                    decided => ApprovalError::AlreadyDecided { status: decided },
                });
            }
            self.publish_decision(&token_hash, &approval).await;
            self.notify_decision(&approval);
            Ok(approval)
        }
        .instrument(span)
        .await?;
        // Every decision, by token or by id, is counted here.
        crate::metrics::decided(&approval);
        Ok(approval)
    }

    /// Which approval `token_hash` names, for the one-statement decision:
    /// from a shared cache's PENDING entry when there is one, else from the
    /// database. What it says is only used to build the decision's event,
    /// and every part of it is re-checked by the decision's `WHERE` clause:
    /// a stale or forged entry makes the statement change nothing.
    /// `None`: the approval is no longer PENDING (the slow path explains).
    async fn decision_subject(&self, token_hash: &str) -> Result<Option<Subject>, ApprovalError> {
        if self.cache.is_shared()
            && let Ok(Some(cached)) = self
                .cache
                .get_json::<Approval>(&cache_key(token_hash))
                .await
            && cached.status == ApprovalStatus::Pending
        {
            return Ok(Some(Subject {
                id: cached.id,
                request_id: cached.request_id,
                raw_args_hash: cached.raw_args_hash,
            }));
        }
        let RowAt { row, .. } = self.read_database(token_hash).await?;
        Ok(
            (row.status == ApprovalStatus::Pending.as_str()).then_some(Subject {
                id: row.id,
                request_id: row.request_id,
                raw_args_hash: row.raw_args_hash,
            }),
        )
    }

    /// PostgreSQL's one-statement decision: the conditional UPDATE (PENDING,
    /// unexpired by the database's clock, and exactly `subject`) and `event`
    /// (built from `subject`), both or neither. `None` when nothing changed.
    #[allow(clippy::too_many_arguments)]
    async fn decide_at_once(
        &self,
        token_hash: &str,
        subject: &Subject,
        status: ApprovalStatus,
        approver_id: &str,
        note: Option<&str>,
        window_ms: u64,
        event: warden_audit::AuditEvent,
    ) -> Result<Option<RowAt>, ApprovalError> {
        let execute_by = match status {
            ApprovalStatus::Approved => plus_sql(DbBackend::Postgres, window_ms),
            _ => "NULL".to_owned(),
        };
        let update = Statement::from_sql_and_values(
            DbBackend::Postgres,
            format!(
                "UPDATE approval_requests SET status = $1, decided_at = now(), \
                 execute_by = {execute_by}, approver_id = $2, note = $3 \
                 WHERE token_hash = $4 AND id = $5 AND request_id = $6 AND raw_args_hash = $7 \
                 AND status = 'PENDING' AND expires_at > now() \
                 RETURNING *, now() AS db_now"
            ),
            [
                status.as_str().into(),
                approver_id.into(),
                note.map(str::to_owned).into(),
                token_hash.into(),
                subject.id.into(),
                subject.request_id.clone().into(),
                subject.raw_args_hash.clone().into(),
            ],
        );
        let Some(rows) =
            refused_is_none(warden_audit::change_with_events(&self.db, update, &[event]).await?)?
        else {
            return Ok(None);
        };
        rows.first()
            .map(|row| {
                Ok(RowAt {
                    now: row.try_get::<DateTime<Utc>>("", "db_now")?,
                    row: approval_requests::Model::from_query_result(row, "")?,
                })
            })
            .transpose()
    }

    /// Consumes an APPROVED approval for the call about to run: one
    /// conditional UPDATE APPROVED → EXECUTED that succeeds only inside the
    /// execution window and only when `binding` is the call the approval was
    /// shown for. Call it immediately before running the call, and run the
    /// call only when it returns `Ok`: it succeeds once, in every process
    /// together.
    ///
    /// Errors: `BindingMismatch` (names the differing part), `AlreadyExecuted`,
    /// `NotApproved` (pending or denied), `Expired`, `NotFound`.
    #[instrument(name = "approval.consume", skip_all, fields(tool = %binding.tool_name, otel.kind = "client", db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.operation.name = "UPDATE", db.collection.name = "approval_requests"))]
    pub async fn consume(
        &self,
        token: &str,
        binding: &CallBinding,
    ) -> Result<Approval, ApprovalError> {
        let approval = self.consume_once(token, binding).await?;
        crate::metrics::consumed();
        Ok(approval)
    }

    /// Consumes an APPROVED approval issued for exactly this call (its
    /// caller, tool, arguments' hash and policy version), whichever process
    /// issued it and without its token: the retry of a call whose hold ran
    /// out before a person approved it. The oldest such approval is used;
    /// `Ok(None)` when there is none (never approved, denied, expired,
    /// already used, or bound to other arguments, another caller or another
    /// policy version). Like [`consume`](Self::consume), it succeeds once
    /// per approval, in every process together: run the call only on
    /// `Ok(Some(_))`.
    #[instrument(name = "approval.consume_for_call", skip_all, fields(tool = %binding.tool_name, otel.kind = "client", db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.operation.name = "UPDATE", db.collection.name = "approval_requests"))]
    pub async fn consume_for_call(
        &self,
        binding: &CallBinding,
    ) -> Result<Option<Approval>, ApprovalError> {
        let now_expr = now_sql(self.db.get_database_backend());
        let candidates = self
            .bounded(async {
                Ok(approval_requests::Entity::find()
                    .filter(Column::Status.eq(ApprovalStatus::Approved.as_str()))
                    .filter(Column::CallerId.eq(binding.caller_id.as_str()))
                    .filter(Column::ToolName.eq(binding.tool_name.as_str()))
                    .filter(Column::RawArgsHash.eq(binding.raw_args_hash.to_ascii_lowercase()))
                    .filter(Column::PolicyVersion.eq(binding.policy_version.as_str()))
                    .filter(Expr::col(Column::ExecuteBy).gt(Expr::cust(now_expr)))
                    .order_by_asc(Column::DecidedAt)
                    .limit(8)
                    .all(&self.db)
                    .await?)
            })
            .await?;
        for candidate in candidates {
            match self.consume_hash(&candidate.token_hash, binding).await {
                Ok(approval) => {
                    crate::metrics::consumed();
                    return Ok(Some(approval));
                }
                // Another process used it (or its window closed) first.
                Err(
                    ApprovalError::AlreadyExecuted
                    | ApprovalError::Expired
                    | ApprovalError::NotApproved { .. },
                ) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn consume_once(
        &self,
        token: &str,
        binding: &CallBinding,
    ) -> Result<Approval, ApprovalError> {
        let token = ApprovalToken::parse(token).ok_or(ApprovalError::NotFound)?;
        self.consume_hash(&token.hash(), binding).await
    }

    async fn consume_hash(
        &self,
        token_hash: &str,
        binding: &CallBinding,
    ) -> Result<Approval, ApprovalError> {
        let token_hash = token_hash.to_owned();
        let now_expr = now_sql(self.db.get_database_backend());
        let update = approval_requests::Entity::update_many()
            .col_expr(
                Column::Status,
                Expr::value(ApprovalStatus::Executed.as_str()),
            )
            .col_expr(Column::ExecutedAt, Expr::cust(now_expr.clone()))
            .filter(Column::Status.eq(ApprovalStatus::Approved.as_str()))
            .filter(Column::CallerId.eq(binding.caller_id.as_str()))
            .filter(Column::ToolName.eq(binding.tool_name.as_str()))
            .filter(Column::RawArgsHash.eq(binding.raw_args_hash.to_ascii_lowercase()))
            .filter(Column::PolicyVersion.eq(binding.policy_version.as_str()))
            .filter(Expr::col(Column::ExecuteBy).gt(Expr::cust(now_expr)));
        let (changed, RowAt { row, now }) = self
            .change_recorded(
                &token_hash,
                update,
                &binding.caller_id,
                "approval.consume",
                None,
                |row| {
                    serde_json::json!({
                        "before": {"status": ApprovalStatus::Approved.as_str()},
                        "after": {"status": row.status, "executed_at": row.executed_at},
                    })
                },
            )
            .await?;
        let approval = Approval::from_model(row)?;
        if changed {
            if let Err(e) = self.cache.delete(&cache_key(&token_hash)).await {
                debug!(error = %e, "consumed approval's cache entry not removed; it is never trusted");
            }
            return Ok(approval);
        }
        Err(match approval.effective_status(now) {
            ApprovalStatus::Executed => ApprovalError::AlreadyExecuted,
            ApprovalStatus::Expired => ApprovalError::Expired,
            ApprovalStatus::Approved => match approval.binding_mismatch(binding) {
                Some(field) => ApprovalError::BindingMismatch { field },
                // Approved, bound, in its window, yet unchanged: a concurrent
                // consume won between the two statements.
                None => ApprovalError::AlreadyExecuted,
            },
            status => ApprovalError::NotApproved { status },
        })
    }

    /// After a committed decision: drop the cache entry (only the database
    /// answers for decided approvals) and wake waiters. Failures only cost
    /// speed, never correctness.
    async fn publish_decision(&self, token_hash: &str, approval: &Approval) {
        // Independent: both in flight at once (one round trip's wait).
        let key = cache_key(token_hash);
        let (deleted, published) = tokio::join!(
            self.cache.delete(&key),
            self.cache
                .publish(decisions::CHANNEL, token_hash.as_bytes())
        );
        if let Err(e) = deleted {
            // The entry still says PENDING (a failover can even bring it
            // back from a replica): never trust it here, and keep removing
            // it until the cache answers or it would have expired anyway.
            warn!(approval_id = %approval.id, error = %e, "decided approval's cache entry not removed; retrying in the background");
            self.retry_removal(token_hash.to_owned(), key, approval.expires_at);
        }
        if let Err(e) = published {
            debug!(error = %e, "decision not published; waiters fall back to polling");
        }
        self.announce(approval.id.to_string());
    }

    fn is_stale(&self, token_hash: &str) -> bool {
        self.stale
            .lock()
            .map(|stale| stale.contains_key(token_hash))
            // A poisoned lock: trust no cached entry.
            .unwrap_or(true)
    }

    /// Removes `key` from the cache in the background, every 200 ms until
    /// it succeeds or `until` (the entry's own expiry) passes; meanwhile this
    /// process ignores the entry.
    fn retry_removal(&self, token_hash: String, key: String, until: DateTime<Utc>) {
        let tracked = match self.stale.lock() {
            Ok(mut stale) if stale.len() < MAX_STALE_ENTRIES => {
                stale.insert(token_hash.clone(), until).is_none()
            }
            _ => false,
        };
        // One retry task per entry, and never more than the bound.
        if !tracked {
            return;
        }
        let (cache, stale) = (self.cache.clone(), self.stale.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let done = Utc::now() >= until || cache.delete(&key).await.is_ok();
                if done {
                    if let Ok(mut stale) = stale.lock() {
                        stale.remove(&token_hash);
                    }
                    debug!("decided approval's cache entry removed after a cache outage");
                    return;
                }
            }
        });
    }

    /// Waits until the approval is decided or `timeout` passes. Wakes on a
    /// decision announced by whichever process decided (one shared
    /// subscription per manager), and polls the database meanwhile in case
    /// announcements are lost or the cache is down. Every decision it
    /// returns was read from the database.
    #[instrument(name = "approval.wait_for_decision", skip_all, fields(timeout_ms = timeout.as_millis()))]
    pub async fn wait_for_decision(
        &self,
        token: &str,
        timeout: Duration,
    ) -> Result<WaitOutcome, ApprovalError> {
        let parsed = ApprovalToken::parse(token).ok_or(ApprovalError::NotFound)?;
        let token_hash = parsed.hash();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut wake_ups = Some(self.decisions.listen(&self.cache));
        loop {
            let approval = self.check_database(&token_hash).await?;
            if approval.status != ApprovalStatus::Pending {
                return Ok(WaitOutcome::Decided(approval));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(WaitOutcome::TimedOut(approval));
            }
            let nap = tokio::time::sleep(self.poll_interval.min(deadline - now));
            tokio::pin!(nap);
            loop {
                let Some(rx) = wake_ups.as_mut() else {
                    nap.as_mut().await;
                    break;
                };
                tokio::select! {
                    message = rx.recv() => match message {
                        Ok(hash) if hash == token_hash.as_bytes() => break,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => wake_ups = None,
                    },
                    () = nap.as_mut() => break,
                }
            }
        }
    }

    /// How many approvals are PENDING (waiting for a person, or past their
    /// expiry and not yet swept), bounded by the database timeout.
    #[instrument(name = "approval.pending_count", skip(self), fields(db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "approval_requests", db.operation.name = "SELECT"))]
    pub async fn pending_count(&self) -> Result<u64, ApprovalError> {
        self.bounded(async {
            Ok(approval_requests::Entity::find()
                .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
                .count(&self.db)
                .await?)
        })
        .await
    }

    /// Marks PENDING approvals past their expiry (by the database's clock)
    /// as EXPIRED, `batch_size` per transaction, each with its
    /// `approval.expire` event; returns how many. Each step is bounded by
    /// the database timeout.
    #[instrument(name = "approval.expire_stale", skip(self), fields(db.system.name = warden_audit::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "approval_requests", db.operation.name = "UPDATE"))]
    pub async fn expire_stale(&self, batch_size: u64) -> Result<u64, ApprovalError> {
        let batch_size = batch_size.clamp(1, 10_000);
        let now_expr = now_sql(self.db.get_database_backend());
        let mut total = 0;
        loop {
            let (found, changed) = self
                .bounded(async {
                    let txn = warden_audit::begin_write(&self.db).await?;
                    // Rows another expirer or a decider holds are skipped
                    // (PostgreSQL); SQLite serializes writers already.
                    let mut select = approval_requests::Entity::find()
                        .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
                        .filter(Expr::col(Column::ExpiresAt).lte(Expr::cust(now_expr.clone())))
                        .order_by_asc(Column::Id)
                        .limit(batch_size);
                    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
                        select = select.lock_with_behavior(
                            sea_orm::sea_query::LockType::Update,
                            sea_orm::sea_query::LockBehavior::SkipLocked,
                        );
                    }
                    let rows = select.all(&txn).await?;
                    if rows.is_empty() {
                        txn.commit().await?;
                        return Ok((0, 0));
                    }
                    let changed = self
                        .expire_rows(&txn, &rows, SYSTEM_ACTOR, "not decided before it expired")
                        .await?;
                    // The rows are locked (or the database is): every one
                    // selected changed, so each got its event.
                    if changed != rows.len() as u64 {
                        return Err(ApprovalError::Database {
                            reason: format!(
                                "expired {changed} of {} locked approvals; rolled back",
                                rows.len()
                            ),
                        });
                    }
                    txn.commit().await?;
                    Ok((rows.len() as u64, changed))
                })
                .await?;
            total += changed;
            crate::metrics::expired(changed);
            if changed > 0 {
                self.announce("expired".to_owned());
            }
            if found < batch_size {
                break;
            }
        }
        Ok(total)
    }

    /// Inside `txn`: marks `row` EXPIRED if it is still PENDING, with its
    /// `approval.expire` event; returns whether it changed.
    async fn expire_in<C: ConnectionTrait>(
        &self,
        txn: &C,
        row: &approval_requests::Model,
        actor: &str,
        note: &str,
    ) -> Result<bool, ApprovalError> {
        Ok(self
            .expire_rows(txn, std::slice::from_ref(row), actor, note)
            .await?
            == 1)
    }

    /// Inside `txn`: marks those of `rows` still PENDING as EXPIRED in one
    /// statement and returns how many changed. Their `approval.expire`
    /// events are recorded when all of them changed; when some but not all
    /// did (which ones is unknown), nothing is recorded and this fails, so
    /// the caller's transaction rolls back.
    async fn expire_rows<C: ConnectionTrait>(
        &self,
        txn: &C,
        rows: &[approval_requests::Model],
        actor: &str,
        note: &str,
    ) -> Result<u64, ApprovalError> {
        let now_expr = now_sql(txn.get_database_backend());
        let changed = approval_requests::Entity::update_many()
            .col_expr(
                Column::Status,
                Expr::value(ApprovalStatus::Expired.as_str()),
            )
            .col_expr(Column::DecidedAt, Expr::cust(now_expr))
            .col_expr(Column::Note, Expr::value(note))
            .filter(Column::Id.is_in(rows.iter().map(|r| r.id)))
            .filter(Column::Status.eq(ApprovalStatus::Pending.as_str()))
            .exec(txn)
            .await?
            .rows_affected;
        if changed == 0 {
            return Ok(0);
        }
        if changed != rows.len() as u64 {
            return Err(ApprovalError::Database {
                reason: format!(
                    "expired {changed} of {} approvals; which ones is unknown, rolled back",
                    rows.len()
                ),
            });
        }
        let events = rows
            .iter()
            .map(|row| {
                self.admin_event(
                    row,
                    actor,
                    "approval.expire",
                    Some(note),
                    serde_json::json!({
                        "before": {"status": ApprovalStatus::Pending.as_str()},
                        "after": {"status": ApprovalStatus::Expired.as_str()},
                    }),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        warden_audit::record_in(txn, &events).await?;
        Ok(changed)
    }

    /// The admin event for `action` on approval `row` by `actor`: linked to
    /// the held call by its request id and raw-arguments hash.
    fn admin_event(
        &self,
        row: &approval_requests::Model,
        actor: &str,
        action: &str,
        note: Option<&str>,
        summary: serde_json::Value,
    ) -> Result<warden_audit::AuditEvent, ApprovalError> {
        let subject = Subject {
            id: row.id,
            request_id: row.request_id.clone(),
            raw_args_hash: row.raw_args_hash.clone(),
        };
        self.admin_event_for(&subject, actor, action, note, summary)
    }

    /// The admin event for `action` on the approval `subject` names.
    fn admin_event_for(
        &self,
        row: &Subject,
        actor: &str,
        action: &str,
        note: Option<&str>,
        summary: serde_json::Value,
    ) -> Result<warden_audit::AuditEvent, ApprovalError> {
        let id = row.id.to_string();
        Ok(warden_audit::AuditEvent::admin(
            &warden_audit::AdminAction {
                actor,
                action,
                resource_type: "approval",
                resource_id: &id,
                request_id: Some(&row.request_id),
                args_hash: Some(&row.raw_args_hash),
                note,
                summary: &summary,
            },
            &self.redactor,
        )?)
    }

    /// The approval with `id` (database), whatever its state.
    pub async fn get(&self, id: Uuid) -> Result<Approval, ApprovalError> {
        let row = self
            .bounded(async {
                Ok(approval_requests::Entity::find_by_id(id)
                    .one(&self.db)
                    .await?)
            })
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
        self.bounded(async { Ok(select.all(&self.db).await?) })
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

/// A one-statement change's result: `None` when the database answered with
/// a refusal (a constraint, a trigger — such as the trail refusing the
/// event): nothing was written, and the transaction path, which attributes
/// the failure to the change or to its event, runs instead. Connection and
/// pool failures are errors as they are.
fn refused_is_none(
    result: Result<Vec<sea_orm::QueryResult>, sea_orm::DbErr>,
) -> Result<Option<Vec<sea_orm::QueryResult>>, ApprovalError> {
    use sea_orm::{DbErr, RuntimeErr};
    match result {
        Ok(rows) => Ok(Some(rows)),
        Err(DbErr::Query(RuntimeErr::SqlxError(e)) | DbErr::Exec(RuntimeErr::SqlxError(e)))
            if matches!(e.as_ref(), sea_orm::sqlx::Error::Database(_)) =>
        {
            debug!("the one-statement change was refused; taking the transaction path");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The parts of an approval its admin events name.
struct Subject {
    id: Uuid,
    request_id: String,
    raw_args_hash: String,
}

/// What an `approval.approve` / `approval.deny` event says (the exact
/// execute-by instant is the row's, set by the database's clock).
fn decision_summary(status: ApprovalStatus, window_ms: u64) -> serde_json::Value {
    match status {
        ApprovalStatus::Approved => serde_json::json!({
            "before": {"status": ApprovalStatus::Pending.as_str()},
            "after": {"status": status.as_str(), "execution_window_ms": window_ms},
        }),
        _ => serde_json::json!({
            "before": {"status": ApprovalStatus::Pending.as_str()},
            "after": {"status": status.as_str()},
        }),
    }
}

/// What an `approval.issue` event says: the call held, and for how long
/// (the exact expiry is the row's, set by the database's clock).
fn issue_summary(row: &approval_requests::Model, ttl_ms: u64) -> serde_json::Value {
    serde_json::json!({
        "after": {
            "status": row.status,
            "tool": row.tool_name,
            "risk_labels": row.risk_labels,
            "policy_version": row.policy_version,
            "ttl_ms": ttl_ms,
        }
    })
}

fn existing_outcome(row: &approval_requests::Model) -> IssueOutcome {
    IssueOutcome::Existing {
        id: row.id,
        status: ApprovalStatus::Pending,
        expires_at: row.expires_at,
    }
}
