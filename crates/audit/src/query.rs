//! [`AuditQuery`]: reading the trail back as domain events, newest first.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Select,
};
use tracing::instrument;
use uuid::Uuid;
use warden_entity::{audit_events, audit_leaves};

use crate::event::Inclusion;
use crate::integrator::latest_checkpoint;
use crate::{AuditError, AuditEvent, Decision};

/// The most rows one query returns.
pub const MAX_LIMIT: u64 = 1_000;

/// Filters for [`AuditQuery::page`]; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this caller's events.
    pub caller_id: Option<String>,
    /// Only events with this decision.
    pub decision: Option<Decision>,
    /// Only events at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Only events before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Only events of this kind (tool calls, admin actions, prunes).
    pub kind: Option<crate::EventKind>,
    /// Only events with this method / admin action (e.g. `key.revoke`).
    pub action: Option<String>,
    /// Only events on this tool / resource type (e.g. `approval`).
    pub resource_type: Option<String>,
}

/// An opaque position in a newest-first listing; pass it back to get the
/// next (older) page. Stable under concurrent appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(Uuid);

impl Cursor {
    /// The cursor as a string for an API response.
    pub fn encode(self) -> String {
        format!("e{}", self.0.simple())
    }

    /// Parses a string made by [`Cursor::encode`].
    pub fn decode(s: &str) -> Result<Self, AuditError> {
        s.strip_prefix('e')
            .filter(|n| n.len() == 32)
            .and_then(|n| Uuid::try_parse(n).ok())
            .map(Cursor)
            .ok_or(AuditError::InvalidCursor)
    }
}

/// One page of events, newest first, and the cursor for the next page (None
/// at the end).
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The events.
    pub events: Vec<AuditEvent>,
    /// Where the next page starts.
    pub next: Option<Cursor>,
}

/// Read access to the audit trail. Every listing is newest first (by event
/// id, a UUID v7: time of recording) and uses an index: (caller_id, id),
/// (decision, id), timestamp, or id. Every returned event carries its
/// [`Inclusion`]: its leaf index and the newest checkpoint covering it.
#[derive(Debug, Clone)]
pub struct AuditQuery {
    db: DatabaseConnection,
    timeout: std::time::Duration,
}

fn clamp(limit: u64) -> u64 {
    limit.clamp(1, MAX_LIMIT)
}

impl AuditQuery {
    /// Queries over `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            timeout: std::time::Duration::from_secs(5),
        }
    }

    /// The longest one query may take (default 5 s); past it the call fails
    /// with [`AuditError::Timeout`] instead of hanging on a stalled database.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = timeout.max(std::time::Duration::from_millis(10));
        self
    }

    async fn bounded<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, sea_orm::DbErr>>,
    ) -> Result<T, AuditError> {
        warden_common::within(self.timeout, async { Ok(work.await?) }).await
    }

    async fn run(
        &self,
        select: Select<audit_events::Entity>,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        let rows = self.bounded(select.all(&self.db)).await?;
        self.with_inclusion(rows).await
    }

    async fn with_inclusion(
        &self,
        rows: Vec<audit_events::Model>,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
        let leaves: HashMap<Uuid, u64> = self
            .bounded(
                audit_leaves::Entity::find()
                    .select_only()
                    .column(audit_leaves::Column::EventId)
                    .column(audit_leaves::Column::LeafIndex)
                    .filter(audit_leaves::Column::EventId.is_in(ids))
                    .into_tuple::<(Uuid, i64)>()
                    .all(&self.db),
            )
            .await?
            .into_iter()
            .map(|(id, index)| (id, index as u64))
            .collect();
        let covered = warden_common::within(self.timeout, latest_checkpoint(&self.db))
            .await?
            .map_or(0, |c| c.tree_size as u64);
        rows.into_iter()
            .map(|row| {
                let leaf_index = leaves.get(&row.id).copied();
                let mut event = AuditEvent::from_model(row)?;
                event.set_inclusion(Inclusion {
                    leaf_index,
                    checkpoint_size: leaf_index.filter(|i| *i < covered).map(|_| covered),
                });
                Ok(event)
            })
            .collect()
    }

    /// The newest event of one tool call (a call may have several: held
    /// for approval, then executed); see [`AuditQuery::list_by_request_id`].
    #[instrument(name = "audit.query.get_by_request_id", skip(self), fields(db.system.name = crate::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "SELECT"))]
    pub async fn get_by_request_id(
        &self,
        request_id: &str,
    ) -> Result<Option<AuditEvent>, AuditError> {
        let row = self
            .bounded(
                audit_events::Entity::find()
                    .filter(audit_events::Column::RequestId.eq(request_id))
                    .order_by_desc(audit_events::Column::Id)
                    .one(&self.db),
            )
            .await?;
        Ok(self.with_inclusion(row.into_iter().collect()).await?.pop())
    }

    /// Every event of one tool call, in the order they were recorded
    /// (at most 1000).
    #[instrument(name = "audit.query.list_by_request_id", skip(self), fields(db.system.name = crate::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "SELECT"))]
    pub async fn list_by_request_id(
        &self,
        request_id: &str,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        self.run(
            audit_events::Entity::find()
                .filter(audit_events::Column::RequestId.eq(request_id))
                .order_by_asc(audit_events::Column::Id)
                .limit(1_000),
        )
        .await
    }

    /// A caller's events, newest first (`limit` is capped at 1000). Prefer
    /// [`AuditQuery::page`] for deep pagination: offsets get slower with depth.
    #[instrument(name = "audit.query.list_by_caller", skip(self), fields(db.system.name = crate::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "SELECT"))]
    pub async fn list_by_caller(
        &self,
        caller_id: &str,
        limit: u64,
        offset: u64,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        self.run(
            audit_events::Entity::find()
                .filter(audit_events::Column::CallerId.eq(caller_id))
                .order_by_desc(audit_events::Column::Id)
                .limit(clamp(limit))
                .offset(offset),
        )
        .await
    }

    /// Events with `decision`, newest first.
    #[instrument(name = "audit.query.list_by_decision", skip(self), fields(db.system.name = crate::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "SELECT"))]
    pub async fn list_by_decision(
        &self,
        decision: Decision,
        limit: u64,
    ) -> Result<Vec<AuditEvent>, AuditError> {
        self.run(
            audit_events::Entity::find()
                .filter(audit_events::Column::Decision.eq(decision.as_str()))
                .order_by_desc(audit_events::Column::Id)
                .limit(clamp(limit)),
        )
        .await
    }

    /// The newest events.
    #[instrument(name = "audit.query.list_recent", skip(self), fields(db.system.name = crate::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "SELECT"))]
    pub async fn list_recent(&self, limit: u64) -> Result<Vec<AuditEvent>, AuditError> {
        self.run(
            audit_events::Entity::find()
                .order_by_desc(audit_events::Column::Id)
                .limit(clamp(limit)),
        )
        .await
    }

    /// Keyset pagination: events matching `filter`, newest first, older than
    /// `after` (the previous page's cursor), at most `limit`.
    #[instrument(name = "audit.query.page", skip(self), fields(db.system.name = crate::metrics::db_system_name(self.db.get_database_backend()), db.collection.name = "audit_events", db.operation.name = "SELECT"))]
    pub async fn page(
        &self,
        filter: &AuditFilter,
        after: Option<Cursor>,
        limit: u64,
    ) -> Result<AuditPage, AuditError> {
        let limit = clamp(limit);
        let mut select = audit_events::Entity::find();
        if let Some(caller) = &filter.caller_id {
            select = select.filter(audit_events::Column::CallerId.eq(caller.as_str()));
        }
        if let Some(decision) = filter.decision {
            select = select.filter(audit_events::Column::Decision.eq(decision.as_str()));
        }
        if let Some(kind) = filter.kind {
            select = select.filter(audit_events::Column::Kind.eq(kind.as_str()));
        }
        if let Some(action) = &filter.action {
            select = select.filter(audit_events::Column::Method.eq(action.as_str()));
        }
        if let Some(resource) = &filter.resource_type {
            select = select.filter(audit_events::Column::ToolName.eq(resource.as_str()));
        }
        if let Some(since) = filter.since {
            select = select.filter(audit_events::Column::Timestamp.gte(since));
        }
        if let Some(until) = filter.until {
            select = select.filter(audit_events::Column::Timestamp.lt(until));
        }
        if let Some(Cursor(id)) = after {
            select = select.filter(audit_events::Column::Id.lt(id));
        }
        let events = self
            .run(
                select
                    .order_by_desc(audit_events::Column::Id)
                    .limit(limit + 1),
            )
            .await?;
        let mut events = events;
        let next = if events.len() as u64 > limit {
            events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            events.last().map(|e| Cursor(e.id()))
        } else {
            None
        };
        Ok(AuditPage { events, next })
    }
}
