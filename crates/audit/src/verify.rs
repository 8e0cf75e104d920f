//! Full verification: recompute every leaf from the stored rows and the tree
//! from the leaves, check every stored checkpoint (signature, and root
//! against the recomputed tree), and name the first problem with its leaf
//! index and request_id. Streams leaves, rows, tree hashes and checkpoints
//! in pages: memory is bounded by one page plus the merged prune ranges.
//!
//! Nothing stored in the database tells the verifier to skip or trust
//! anything unless a signed checkpoint covers it: a missing row is accepted
//! only inside the range of a prune leaf that is itself in the tree under a
//! checkpoint.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};
use serde::Serialize;
use tracing::{instrument, warn};
use uuid::Uuid;
use warden_entity::{audit_checkpoints, audit_events, audit_leaves, audit_tree_hashes};

use crate::AuditError;
use crate::checkpoint::{CheckpointVerifier, SignedCheckpoint};
use crate::detached::{DEFAULT_STEP_TIMEOUT, step};
use crate::leaf::{EventKind, hash_hex, leaf_hash_of, parse_hash_hex};
use crate::retention::{PrunedRanges, declared_range};
use crate::tree::Frontier;

/// Leaves read per query while verifying.
const PAGE: u64 = 5_000;

/// What to verify against.
#[derive(Debug, Default)]
pub struct VerifyOptions {
    /// The public key checkpoints must be signed with. Without it,
    /// signatures are not checked (roots still are).
    pub verifier: Option<CheckpointVerifier>,
    /// A checkpoint note kept outside the database: the log must still
    /// contain that tree (needs `verifier`).
    pub external_checkpoint: Option<String>,
    /// How long an event may wait to be integrated, and a leaf to be
    /// covered by a checkpoint, before that is a problem (default 5 min).
    pub integration_window: Option<Duration>,
    /// The bound on each storage step (one page or one query; default
    /// [`DEFAULT_STEP_TIMEOUT`](crate::DEFAULT_STEP_TIMEOUT)): past it the
    /// verification fails with [`AuditError::Timeout`] instead of hanging.
    pub step_timeout: Option<Duration>,
}

/// The kind of problem found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// A row's contents no longer match its leaf.
    Modified,
    /// A row is missing and no signed prune leaf covers it.
    Deleted,
    /// A row exists that is neither in the tree nor queued for it.
    Inserted,
    /// A row sits at another row's leaf.
    Reordered,
    /// A stored tree hash or leaf entry is missing, extra or wrong.
    TreeTampered,
    /// A checkpoint's signature does not verify under the public key.
    CheckpointForged,
    /// A validly shaped checkpoint does not match the tree it claims.
    CheckpointInconsistent,
    /// The log is smaller than a checkpoint says it was.
    Rollback,
    /// Events waited longer than the integration window.
    Unintegrated,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// What kind of damage it is.
    pub kind: BreakKind,
    /// The leaf index concerned, if one is.
    pub leaf_index: Option<u64>,
    /// The request_id concerned, if known.
    pub request_id: Option<String>,
    /// A sentence for the operator.
    pub detail: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind)?;
        if let Some(i) = self.leaf_index {
            write!(f, " at leaf {i}")?;
        }
        if let Some(r) = &self.request_id {
            write!(f, " (request_id {r})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verification {
    /// Everything verified.
    Valid {
        /// Leaves in the tree.
        tree_size: u64,
        /// Rows whose leaf was recomputed.
        rows_checked: u64,
        /// Leaves whose rows were pruned (each covered by a prune leaf).
        pruned: u64,
        /// Stored checkpoints checked.
        checkpoints: u64,
        /// Whether signatures were checked (a public key was given).
        signatures_checked: bool,
    },
    /// The first problem.
    Broken(ChainBreak),
}

impl Verification {
    /// True for [`Verification::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }
}

fn broken(
    kind: BreakKind,
    leaf: Option<u64>,
    request_id: Option<String>,
    detail: impl Into<String>,
) -> Verification {
    let b = ChainBreak {
        kind,
        leaf_index: leaf,
        request_id,
        detail: detail.into(),
    };
    warn!(kind = ?kind, leaf = ?leaf, detail = %b.detail, "audit log verification failed");
    Verification::Broken(b)
}

/// A checkpoint to compare against the recomputed tree.
struct Expect {
    size: u64,
    root: String,
}

/// Opens one stored checkpoint row: its note must verify and match the row.
fn open_row(
    row: &audit_checkpoints::Model,
    verifier: Option<&CheckpointVerifier>,
) -> Result<Expect, Verification> {
    let forged = |detail: String| broken(BreakKind::CheckpointForged, None, None, detail);
    let cp = SignedCheckpoint::open_with(&row.note, verifier)
        .map_err(|e| forged(format!("stored checkpoint of size {}: {e}", row.tree_size)))?;
    if cp.size != row.tree_size as u64 || cp.root != row.root_hash {
        return Err(forged(format!(
            "stored checkpoint of size {}: the row does not match its note",
            row.tree_size
        )));
    }
    Ok(Expect {
        size: cp.size,
        root: cp.root,
    })
}

/// The stored checkpoints in size order, read a page at a time.
struct Checkpoints {
    limit: Duration,
    after: i64,
    buf: VecDeque<Expect>,
    done: bool,
    count: u64,
}

impl Checkpoints {
    /// The next checkpoint (without consuming it); `Err` carries a verdict.
    async fn front(
        &mut self,
        db: &DatabaseConnection,
        verifier: Option<&CheckpointVerifier>,
    ) -> Result<Result<Option<&Expect>, Verification>, AuditError> {
        if self.buf.is_empty() && !self.done {
            let page = step(
                self.limit,
                audit_checkpoints::Entity::find()
                    .filter(audit_checkpoints::Column::TreeSize.gt(self.after))
                    .order_by_asc(audit_checkpoints::Column::TreeSize)
                    .limit(PAGE)
                    .all(db),
            )
            .await?;
            self.done = page.len() < PAGE as usize;
            for row in &page {
                self.after = row.tree_size;
                self.count += 1;
                match open_row(row, verifier) {
                    Ok(e) => self.buf.push_back(e),
                    Err(v) => return Ok(Err(v)),
                }
            }
        }
        Ok(Ok(self.buf.front()))
    }
}

/// Prune declarations, merged: the leaf ranges whose missing rows are
/// excused. Only prune rows that are leaves before `signed` (the newest
/// signed checkpoint) and that come after their whole range count; the walk
/// then recomputes each of those rows against its leaf like any other.
async fn prune_cover(
    db: &DatabaseConnection,
    signed: u64,
    limit: Duration,
) -> Result<PrunedRanges, AuditError> {
    let mut ranges = Vec::new();
    let mut after: Option<Uuid> = None;
    loop {
        let mut select = audit_events::Entity::find()
            .filter(audit_events::Column::Kind.eq(EventKind::Prune.as_str()))
            .order_by_asc(audit_events::Column::Id)
            .limit(PAGE);
        if let Some(id) = after {
            select = select.filter(audit_events::Column::Id.gt(id));
        }
        let rows = step(limit, select.all(db)).await?;
        let Some(last) = rows.last() else { break };
        after = Some(last.id);
        let leaves: HashMap<Uuid, (i64, String)> = step(
            limit,
            audit_leaves::Entity::find()
                .select_only()
                .column(audit_leaves::Column::EventId)
                .column(audit_leaves::Column::LeafIndex)
                .column(audit_leaves::Column::LeafHash)
                .filter(audit_leaves::Column::EventId.is_in(rows.iter().map(|r| r.id)))
                .into_tuple::<(Uuid, i64, String)>()
                .all(db),
        )
        .await?
        .into_iter()
        .map(|(id, index, hash)| (id, (index, hash)))
        .collect();
        for row in &rows {
            let Some((p, leaf_hash)) = leaves.get(&row.id) else {
                continue;
            };
            let p = *p;
            // The range counts only if this content is what the leaf (which
            // the walk authenticates) commits to.
            if leaf_hash_of(row).ok().map(|h| hash_hex(&h)).as_deref() != Some(leaf_hash.as_str()) {
                continue;
            }
            if (p as u64) < signed {
                ranges.extend(declared_range(row, p as u64));
            }
        }
    }
    Ok(PrunedRanges::merge(ranges))
}

/// One page of the walk: leaves, their rows, and the tree hashes they complete.
struct Page {
    leaves: Vec<audit_leaves::Model>,
    rows: HashMap<Uuid, audit_events::Model>,
    stored: HashMap<u64, String>,
}

async fn fetch_page(
    db: DatabaseConnection,
    from: i64,
    limit: Duration,
) -> Result<Option<Page>, AuditError> {
    let leaves = step(
        limit,
        audit_leaves::Entity::find()
            .filter(audit_leaves::Column::LeafIndex.gte(from))
            .order_by_asc(audit_leaves::Column::LeafIndex)
            .limit(PAGE)
            .all(&db),
    )
    .await?;
    let (Some(first), Some(last)) = (leaves.first(), leaves.last()) else {
        return Ok(None);
    };
    let (first, last) = (first.leaf_index, last.leaf_index);
    // One semi-join per page (an id list would cost the database far more).
    let rows: HashMap<Uuid, audit_events::Model> = step(
        limit,
        audit_events::Entity::find()
            .filter(
                audit_events::Column::Id.in_subquery(
                    Query::select()
                        .column(audit_leaves::Column::EventId)
                        .from(audit_leaves::Entity)
                        .and_where(audit_leaves::Column::LeafIndex.between(first, last))
                        .to_owned(),
                ),
            )
            .all(&db),
    )
    .await?
    .into_iter()
    .map(|r| (r.id, r))
    .collect();
    let lo = tlog_tiles::stored_hash_index(0, first.max(0) as u64) as i64;
    let hi = tlog_tiles::stored_hash_index(0, last.max(0) as u64 + 1) as i64;
    let stored: HashMap<u64, String> = step(
        limit,
        audit_tree_hashes::Entity::find()
            .filter(audit_tree_hashes::Column::Idx.gte(lo))
            .filter(audit_tree_hashes::Column::Idx.lt(hi))
            .all(&db),
    )
    .await?
    .into_iter()
    .map(|h| (h.idx as u64, h.hash))
    .collect();
    Ok(Some(Page {
        leaves,
        rows,
        stored,
    }))
}

/// Verifies the whole log. See the module docs for what is checked.
#[instrument(skip_all)]
pub async fn verify(
    db: &DatabaseConnection,
    options: &VerifyOptions,
) -> Result<Verification, AuditError> {
    let verifier = options.verifier.as_ref();
    let window = options
        .integration_window
        .unwrap_or(Duration::from_secs(300));
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::minutes(5));
    let limit = options.step_timeout.unwrap_or(DEFAULT_STEP_TIMEOUT);

    // The newest stored checkpoint, checked first: it bounds what counts as signed.
    let newest = step(
        limit,
        audit_checkpoints::Entity::find()
            .order_by_desc(audit_checkpoints::Column::TreeSize)
            .one(db),
    )
    .await?;
    let newest_signed = match newest.as_ref().map(|row| open_row(row, verifier)) {
        None => 0,
        Some(Ok(e)) => e.size,
        Some(Err(v)) => return Ok(v),
    };
    let mut external: Option<Expect> = None;
    if let Some(note) = &options.external_checkpoint {
        let Some(v) = verifier else {
            return Err(AuditError::InvalidField {
                field: "checkpoint",
                reason: "an external checkpoint needs the public key to check it".into(),
            });
        };
        match SignedCheckpoint::open(note, v) {
            Ok(cp) => {
                external = Some(Expect {
                    size: cp.size,
                    root: cp.root,
                });
            }
            Err(e) => {
                return Ok(broken(
                    BreakKind::CheckpointForged,
                    None,
                    None,
                    format!("the external checkpoint: {e}"),
                ));
            }
        }
    }
    let cover = prune_cover(db, newest_signed, limit).await?;
    let mut checkpoints = Checkpoints {
        limit,
        after: -1,
        buf: VecDeque::new(),
        done: false,
        count: 0,
    };

    let mut frontier = Frontier::empty();
    let mut rows_checked = 0u64;
    let mut pruned = 0u64;
    let mut uncovered_since: Option<(u64, chrono::DateTime<Utc>)> = None;
    let mut next_index: i64 = 0;
    // The next page is read while this one is checked: the database and the
    // hashing overlap.
    let mut prefetch = Some(tokio::spawn(fetch_page(db.clone(), 0, limit)));
    while let Some(task) = prefetch.take() {
        let page = task.await.map_err(|e| AuditError::Database {
            reason: format!("verify page task failed: {e}"),
        })??;
        let Some(page) = page else { break };
        let Page {
            leaves,
            rows,
            mut stored,
        } = page;
        if let Some(last) = leaves.last() {
            prefetch = Some(tokio::spawn(fetch_page(
                db.clone(),
                last.leaf_index + 1,
                limit,
            )));
        }
        for (i, leaf) in leaves.iter().enumerate() {
            let index = leaf.leaf_index as u64;
            if leaf.leaf_index != next_index {
                return Ok(broken(
                    BreakKind::TreeTampered,
                    Some(next_index as u64),
                    None,
                    format!(
                        "leaf {next_index} is missing from the tree (next stored is {})",
                        leaf.leaf_index
                    ),
                ));
            }
            next_index += 1;
            let Some(stored_leaf) = parse_hash_hex(&leaf.leaf_hash) else {
                return Ok(broken(
                    BreakKind::TreeTampered,
                    Some(index),
                    None,
                    "the leaf hash is malformed",
                ));
            };
            match rows.get(&leaf.event_id) {
                Some(row) => {
                    rows_checked += 1;
                    let rid = Some(row.request_id.clone());
                    let Ok(recomputed) = leaf_hash_of(row) else {
                        return Ok(broken(
                            BreakKind::Modified,
                            Some(index),
                            rid,
                            "the row's contents cannot be hashed (altered JSON)",
                        ));
                    };
                    if recomputed != stored_leaf {
                        let neighbour =
                            |j: usize| leaves.get(j).and_then(|l| parse_hash_hex(&l.leaf_hash));
                        let moved = (i > 0 && neighbour(i - 1) == Some(recomputed))
                            || neighbour(i + 1) == Some(recomputed);
                        return Ok(if moved {
                            broken(
                                BreakKind::Reordered,
                                Some(index),
                                rid,
                                "this row belongs at a neighbouring leaf: rows were swapped",
                            )
                        } else {
                            broken(
                                BreakKind::Modified,
                                Some(index),
                                rid,
                                "the row's contents do not match its leaf hash",
                            )
                        });
                    }
                    if row
                        .leaf_hash
                        .as_deref()
                        .is_some_and(|h| h != leaf.leaf_hash)
                    {
                        return Ok(broken(
                            BreakKind::Modified,
                            Some(index),
                            rid,
                            "the row's stored leaf_hash differs from the tree",
                        ));
                    }
                }
                None if cover.covers(index) => pruned += 1,
                None => {
                    return Ok(broken(
                        BreakKind::Deleted,
                        Some(index),
                        None,
                        "the row of this leaf is missing and no checkpointed prune leaf covers it",
                    ));
                }
            }
            for (idx, hash) in frontier.push(stored_leaf) {
                if idx == tlog_tiles::stored_hash_index(0, index) {
                    continue;
                }
                match stored.remove(&idx) {
                    Some(h) if h == hash_hex(&hash) => {}
                    Some(_) => {
                        return Ok(broken(
                            BreakKind::TreeTampered,
                            Some(index),
                            None,
                            format!("stored tree hash {idx} is wrong"),
                        ));
                    }
                    None => {
                        return Ok(broken(
                            BreakKind::TreeTampered,
                            Some(index),
                            None,
                            format!("stored tree hash {idx} is missing"),
                        ));
                    }
                }
            }
            let root = || hash_hex(&frontier.root());
            loop {
                let e = match checkpoints.front(db, verifier).await? {
                    Err(v) => return Ok(v),
                    Ok(None) => break,
                    Ok(Some(e)) => e,
                };
                if e.size > frontier.size() {
                    break;
                }
                if e.size == frontier.size() && e.root != root() {
                    return Ok(broken(
                        BreakKind::CheckpointInconsistent,
                        Some(index),
                        None,
                        format!(
                            "a stored checkpoint of size {} has another root: the tree it signed was rewritten",
                            e.size
                        ),
                    ));
                }
                checkpoints.buf.pop_front();
            }
            if let Some(e) = &external
                && e.size == frontier.size()
                && e.root != root()
            {
                return Ok(broken(
                    BreakKind::CheckpointInconsistent,
                    Some(index),
                    None,
                    format!(
                        "the external checkpoint of size {} has another root: the tree it signed was rewritten",
                        e.size
                    ),
                ));
            }
            if frontier.size() > newest_signed && uncovered_since.is_none() {
                uncovered_since = Some((index, leaf.integrated_at));
            }
        }
        if let Some((&idx, _)) = stored.iter().next() {
            return Ok(broken(
                BreakKind::TreeTampered,
                None,
                None,
                format!("stored tree hash {idx} is not part of the tree"),
            ));
        }
    }
    let tree_size = frontier.size();

    // Checkpoints beyond the tree: rolled back (or tree rows deleted).
    let beyond = match checkpoints.front(db, verifier).await? {
        Err(v) => return Ok(v),
        Ok(front) => front.map(|e| (e.size, "a stored checkpoint")),
    };
    let beyond = beyond.or(external
        .as_ref()
        .filter(|e| e.size > tree_size)
        .map(|e| (e.size, "the external checkpoint")));
    if let Some((size, whose)) = beyond {
        return Ok(broken(
            BreakKind::Rollback,
            Some(tree_size),
            None,
            format!("{whose} records {size} leaves but the tree has only {tree_size}"),
        ));
    }
    if let Some(idx) = step(limit, crate::tree::hash_beyond(db, tree_size)).await? {
        return Ok(broken(
            BreakKind::TreeTampered,
            None,
            None,
            format!("stored tree hash {idx} lies beyond the tree"),
        ));
    }

    // Rows that are neither in the tree nor queued.
    let outside = step(
        limit,
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT e.request_id FROM audit_events e WHERE NOT EXISTS \
             (SELECT 1 FROM audit_leaves l WHERE l.event_id = e.id) AND NOT EXISTS \
             (SELECT 1 FROM audit_pending p WHERE p.event_id = e.id) LIMIT 1",
        )),
    )
    .await?;
    if let Some(row) = outside {
        let rid: String = row.try_get("", "request_id")?;
        return Ok(broken(
            BreakKind::Inserted,
            None,
            Some(rid),
            "this row is neither in the tree nor queued for it",
        ));
    }

    // Events waiting too long to be integrated or checkpointed.
    let now = Utc::now();
    let stale = step(
        limit,
        db.query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT e.request_id, e.timestamp FROM audit_pending p JOIN audit_events e ON e.id = p.event_id \
             ORDER BY p.pos LIMIT 1",
        )),
    )
    .await?;
    if let Some(row) = stale {
        let rid: String = row.try_get("", "request_id")?;
        let at: chrono::DateTime<Utc> = row.try_get("", "timestamp")?;
        if now.signed_duration_since(at) > window {
            return Ok(broken(
                BreakKind::Unintegrated,
                None,
                Some(rid),
                "this event has waited longer than the integration window",
            ));
        }
    }
    if let Some((index, at)) = uncovered_since
        && now.signed_duration_since(at) > window
    {
        return Ok(broken(
            BreakKind::Unintegrated,
            Some(index),
            None,
            "leaves from here on are in no checkpoint, and were integrated longer ago than the window",
        ));
    }
    Ok(Verification::Valid {
        tree_size,
        rows_checked,
        pruned,
        checkpoints: checkpoints.count,
        signatures_checked: verifier.is_some(),
    })
}
