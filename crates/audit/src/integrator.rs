//! The integrator (sequencer): takes queued events in arrival order, gives
//! them leaf indexes, extends the Merkle tree append-only, and signs a
//! checkpoint — all in one transaction, so a killed integrator leaves
//! nothing half-done: no leaf lost, duplicated or reordered.
//!
//! At most one integrator works at a time across all processes: on
//! PostgreSQL each integration transaction first takes a transaction-scoped
//! advisory lock with `pg_try_advisory_xact_lock` (a process that does not
//! get it skips the round); on SQLite `BEGIN IMMEDIATE` serializes. Because
//! the lock lives only as long as one transaction, any process takes over
//! at its next tick when the previous leader dies.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use sea_orm::sea_query::Query;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, Statement, TransactionTrait,
};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;
use warden_entity::{
    audit_checkpoints, audit_events, audit_leaves, audit_pending, audit_tree_hashes,
};

use crate::checkpoint::{
    CheckpointPublisher, CheckpointSigner, DEFAULT_ORIGIN, SignedCheckpoint, checkpoint_text,
};
use crate::detached::detached;
use crate::leaf::{EventKind, TreeHash, hash_hex, leaf_hash_of, parse_hash_hex};
use crate::tree::{Frontier, load_frontier};
use crate::{AuditError, AuditEvent};

/// The advisory lock integrators take for one transaction ("WARDTL").
pub(crate) const INTEGRATOR_LOCK: i64 = 0x5741_5244_544c;

/// How the integrator batches, signs and publishes.
#[derive(Debug, Clone)]
pub struct IntegratorConfig {
    /// The log's origin line (the signing key's name wins when a key is set).
    pub origin: String,
    /// Signs checkpoints; `None` stores unsigned checkpoints (health warns).
    pub signer: Option<CheckpointSigner>,
    /// Where checkpoints are published besides the database.
    pub publisher: CheckpointPublisher,
    /// The most leaves one transaction integrates (default 20 000).
    pub batch_size: usize,
    /// How often the integrator runs, and the least time between two
    /// checkpoints (default 1 s).
    pub checkpoint_interval: Duration,
    /// Longest one integration transaction may take (default 30 s).
    pub timeout: Duration,
}

impl Default for IntegratorConfig {
    fn default() -> Self {
        Self {
            origin: DEFAULT_ORIGIN.to_owned(),
            signer: None,
            publisher: CheckpointPublisher::default(),
            batch_size: 20_000,
            checkpoint_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
        }
    }
}

impl IntegratorConfig {
    /// The origin checkpoints carry: the key's name when signing.
    pub fn effective_origin(&self) -> &str {
        self.signer.as_ref().map_or(&self.origin, |s| s.origin())
    }
}

/// What one integration round did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IntegrationReport {
    /// False when another process held the integrator lock (nothing done).
    pub leader: bool,
    /// Leaves added in this round.
    pub integrated: u64,
    /// Tree size after the round.
    pub tree_size: u64,
    /// The checkpoint written in this round, as a note.
    pub checkpoint: Option<String>,
}

/// Integrates queued events into the tree. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Integrator {
    db: DatabaseConnection,
    config: IntegratorConfig,
    /// The largest tree this integrator has seen signed (size, root hex):
    /// it never signs a tree that does not extend it, so a log rolled back
    /// and re-filled behind its back is refused, not signed as a fork.
    high_water: std::sync::Arc<std::sync::Mutex<Option<(u64, String)>>>,
    /// The newest publication still in flight.
    publishing: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

fn raw(backend: DbBackend, sql: impl Into<String>) -> Statement {
    Statement::from_string(backend, sql.into())
}

/// Number of leaves in the stored tree.
pub(crate) async fn tree_size<C: ConnectionTrait>(db: &C) -> Result<u64, AuditError> {
    let last: Option<i64> = audit_leaves::Entity::find()
        .select_only()
        .column(audit_leaves::Column::LeafIndex)
        .order_by_desc(audit_leaves::Column::LeafIndex)
        .limit(1)
        .into_tuple()
        .one(db)
        .await?;
    Ok(last.map_or(0, |l| l as u64 + 1))
}

/// The newest stored checkpoint.
pub(crate) async fn latest_checkpoint<C: ConnectionTrait>(
    db: &C,
) -> Result<Option<audit_checkpoints::Model>, AuditError> {
    Ok(audit_checkpoints::Entity::find()
        .order_by_desc(audit_checkpoints::Column::TreeSize)
        .one(db)
        .await?)
}

impl Integrator {
    /// An integrator over `db`.
    pub fn new(db: DatabaseConnection, config: IntegratorConfig) -> Self {
        // The publish file (if any) holds the latest checkpoint published
        // outside the database: it seeds the high-water mark across restarts.
        let seeded = config.publisher.file().and_then(|path| {
            let note = std::fs::read_to_string(path).ok()?;
            let verifier = config
                .signer
                .as_ref()
                .map(CheckpointSigner::verifier)
                .transpose()
                .ok()?;
            let cp = SignedCheckpoint::open_with(&note, verifier.as_ref()).ok()?;
            Some((cp.size, cp.root))
        });
        Self {
            db,
            config,
            high_water: std::sync::Arc::new(std::sync::Mutex::new(seeded)),
            publishing: std::sync::Arc::default(),
        }
    }

    fn publish(&self, note: String) {
        if let Some(handle) = self.config.publisher.publish(note) {
            *self
                .publishing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(handle);
        }
    }

    /// Waits (up to 10 s) for the newest checkpoint's publication, so that a
    /// process about to exit does not drop it.
    pub async fn published(&self) {
        let handle = self
            .publishing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }

    fn high_water(&self) -> Option<(u64, String)> {
        self.high_water
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn raise_high_water(&self, size: u64, root: String) {
        let mut hw = self
            .high_water
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if hw.as_ref().is_none_or(|(s, _)| *s < size) {
            *hw = Some((size, root));
        }
    }

    /// The configuration.
    pub fn config(&self) -> &IntegratorConfig {
        &self.config
    }

    /// One round: if this process gets the lock, integrates up to
    /// `batch_size` queued events and writes a checkpoint when one is due
    /// (or when `force_checkpoint` and the tree grew past the last one).
    /// Runs in its own task, bounded by the configured timeout.
    #[instrument(name = "audit.integrate", skip(self), fields(db.system.name = crate::metrics::db_system_name(self.db.get_database_backend())))]
    pub async fn integrate_once(
        &self,
        force_checkpoint: bool,
    ) -> Result<IntegrationReport, AuditError> {
        let this = self.clone();
        let report = detached("integration", self.config.timeout, async move {
            this.round(force_checkpoint).await
        })
        .await?;
        if let Some(note) = &report.checkpoint {
            self.publish(note.clone());
        }
        Ok(report)
    }

    /// Rounds until the queue is empty (as far as this process can see),
    /// then a checkpoint if the tree grew. Returns the leaves added and the
    /// final report.
    pub async fn integrate_all(&self) -> Result<IntegrationReport, AuditError> {
        let mut total = 0;
        loop {
            let mut report = self.integrate_once(true).await?;
            total += report.integrated;
            if !report.leader || report.integrated == 0 {
                report.integrated = total;
                self.published().await;
                return Ok(report);
            }
        }
    }

    /// Runs rounds every checkpoint interval until `stop` turns true. Errors
    /// are logged and the next round tries again: the integrator never stops
    /// on its own.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let period = self
            .config
            .checkpoint_interval
            .max(Duration::from_millis(10));
        loop {
            if *stop.borrow() {
                return;
            }
            let round_started = tokio::time::Instant::now();
            // A full batch means a backlog: keep going without waiting.
            let mut force = false;
            loop {
                match self.integrate_once(force).await {
                    Ok(r) if r.integrated as usize >= self.config.batch_size => force = true,
                    Ok(r) => {
                        if r.integrated > 0 {
                            debug!(
                                integrated = r.integrated,
                                tree_size = r.tree_size,
                                "audit leaves integrated"
                            );
                        }
                        break;
                    }
                    Err(e) => {
                        warn!(error = %e, "audit integration failed; retrying");
                        break;
                    }
                }
                if *stop.borrow() {
                    return;
                }
            }
            // Rounds start one interval apart, however long a round took.
            tokio::select! {
                _ = tokio::time::sleep_until(round_started + period) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn begin(&self) -> Result<Option<DatabaseTransaction>, AuditError> {
        let backend = self.db.get_database_backend();
        if backend == DbBackend::Postgres {
            let txn = self.db.begin().await?;
            txn.execute_unprepared("SET LOCAL statement_timeout = '60s'")
                .await?;
            let row = txn
                .query_one_raw(raw(
                    backend,
                    format!("SELECT pg_try_advisory_xact_lock({INTEGRATOR_LOCK}) AS locked"),
                ))
                .await?;
            let locked = row.map(|r| r.try_get::<bool>("", "locked")).transpose()?;
            if locked != Some(true) {
                txn.rollback().await?;
                return Ok(None);
            }
            Ok(Some(txn))
        } else {
            Ok(Some(crate::store::begin_write(&self.db).await?))
        }
    }

    /// Where the log stands, authenticated: the stored tree must be exactly
    /// the tree of the latest checkpoint — same size, same root — and that
    /// checkpoint must carry this integrator's signature. Anything else means
    /// someone changed the log outside the integrator, and nothing is signed
    /// on top of it.
    async fn authenticate(
        &self,
        txn: &DatabaseTransaction,
    ) -> Result<(Frontier, Option<audit_checkpoints::Model>), AuditError> {
        let size = tree_size(txn).await?;
        let latest = latest_checkpoint(txn).await?;
        let tampered = |reason: String| AuditError::Tampered { reason };
        let Some(cp) = latest else {
            if size != 0 {
                return Err(tampered(format!(
                    "the tree has {size} leaves but there is no checkpoint"
                )));
            }
            return Ok((Frontier::empty(), None));
        };
        let verifier = self
            .config
            .signer
            .as_ref()
            .map(CheckpointSigner::verifier)
            .transpose()?;
        let opened = SignedCheckpoint::open_with(&cp.note, verifier.as_ref()).map_err(|e| {
            tampered(format!(
                "the latest checkpoint (size {}): {e}",
                cp.tree_size
            ))
        })?;
        if opened.size != cp.tree_size as u64 || opened.root != cp.root_hash {
            return Err(tampered(format!(
                "the latest checkpoint row (size {}) does not match its note",
                cp.tree_size
            )));
        }
        if size != opened.size {
            return Err(tampered(format!(
                "the tree has {size} leaves but the latest checkpoint has {}: leaves were added or \
                 removed outside the integrator",
                opened.size
            )));
        }
        let frontier = load_frontier(txn, size).await?;
        if hash_hex(&frontier.root()) != opened.root {
            return Err(tampered(format!(
                "the stored tree of {size} leaves does not have the signed root"
            )));
        }
        if let Some((hw_size, hw_root)) = self.high_water() {
            let extends = hw_size <= size
                && (hw_size == size && hw_root == opened.root
                    || hw_size < size
                        && crate::tree::root_at(txn, hw_size)
                            .await
                            .map(|r| hash_hex(&r))
                            .ok()
                            == Some(hw_root.clone()));
            if !extends {
                return Err(tampered(format!(
                    "the stored tree ({size} leaves) does not extend the {hw_size}-leaf tree this \
                     integrator signed before: the log was rolled back"
                )));
            }
        }
        self.raise_high_water(size, opened.root.clone());
        if let Some(idx) = crate::tree::hash_beyond(txn, size).await? {
            return Err(tampered(format!(
                "stored tree hash {idx} lies beyond the signed tree of {size} leaves"
            )));
        }
        Ok((frontier, Some(cp)))
    }

    async fn round(&self, force_checkpoint: bool) -> Result<IntegrationReport, AuditError> {
        let Some(txn) = self.begin().await? else {
            return Ok(IntegrationReport::default());
        };
        let (mut frontier, latest) = self.authenticate(&txn).await?;
        // At most one checkpoint per interval across every process.
        if !force_checkpoint && let Some(cp) = &latest {
            let age = Utc::now().signed_duration_since(cp.created_at);
            let interval = chrono::Duration::from_std(self.config.checkpoint_interval)
                .unwrap_or(chrono::Duration::seconds(1));
            // A little slack, so that a process whose own round took part
            // of the interval is not turned away by its own checkpoint.
            if age < interval * 9 / 10 {
                txn.rollback().await?;
                return Ok(IntegrationReport {
                    leader: true,
                    integrated: 0,
                    tree_size: frontier.size(),
                    checkpoint: None,
                });
            }
        }
        let integrated = self.extend(&txn, &mut frontier).await?;
        let checkpoint = self.checkpoint(&txn, &frontier, latest.as_ref()).await?;
        txn.commit().await?;
        if checkpoint.is_some() {
            self.raise_high_water(frontier.size(), hash_hex(&frontier.root()));
        }
        if integrated > 0 {
            info!(
                integrated,
                tree_size = frontier.size(),
                "audit tree extended"
            );
        }
        Ok(IntegrationReport {
            leader: true,
            integrated,
            tree_size: frontier.size(),
            checkpoint,
        })
    }

    /// Takes up to `batch_size` queued events, oldest first, and appends them.
    ///
    /// Every leaf hash is recomputed here from the row as stored, so the tree
    /// commits to exactly what the row holds. A queued row is left out of the
    /// tree (and dropped from the queue, with a warning) when it is not a
    /// tool call (only [`crate::prune`] writes prune leaves, under the lock),
    /// when its stored leaf hash does not match its content, when it cannot
    /// be hashed, or when it is already a leaf: [`crate::verify`] then names
    /// such a row.
    async fn extend(
        &self,
        txn: &DatabaseTransaction,
        frontier: &mut Frontier,
    ) -> Result<u64, AuditError> {
        // Two joins, not id lists: the queue head with its integrated flag,
        // then the queued rows themselves.
        let backend = txn.get_database_backend();
        let limit = self.config.batch_size.max(1) as i64;
        let ph = if backend == DbBackend::Postgres {
            "$1"
        } else {
            "?"
        };
        let queued: Vec<(i64, Uuid, bool)> = txn
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT p.pos, p.event_id, (l.event_id IS NOT NULL) AS integrated FROM audit_pending p \
                     LEFT JOIN audit_leaves l ON l.event_id = p.event_id ORDER BY p.pos LIMIT {ph}"
                ),
                [limit.into()],
            ))
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64>("", "pos")?,
                    r.try_get::<Uuid>("", "event_id")?,
                    r.try_get::<bool>("", "integrated")?,
                ))
            })
            .collect::<Result<_, sea_orm::DbErr>>()?;
        if queued.is_empty() {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        // The rows of exactly the queue entries read above (by their pos
        // range: entries committed since then with a lower pos are ignored
        // here and picked up next round).
        let (lo, hi) = (queued[0].0, queued[queued.len() - 1].0);
        let rows = audit_events::Entity::find()
            .filter(
                audit_events::Column::Id.in_subquery(
                    Query::select()
                        .column(audit_pending::Column::EventId)
                        .from(audit_pending::Entity)
                        .and_where(audit_pending::Column::Pos.between(lo, hi))
                        .to_owned(),
                ),
            )
            .all(txn)
            .await?;
        let integrated: std::collections::HashSet<Uuid> = queued
            .iter()
            .filter(|(_, _, i)| *i)
            .map(|(_, id, _)| *id)
            .collect();
        let mut hashes: HashMap<Uuid, TreeHash> = HashMap::with_capacity(queued.len());
        for row in rows {
            let refuse = |why: &str| {
                warn!(event_id = %row.id, request_id = %row.request_id, why, "queued audit row left out of the tree");
            };
            if integrated.contains(&row.id) {
                refuse("already a leaf");
                continue;
            }
            // Only `prune` itself writes prune leaves; writers queue tool
            // calls and admin actions.
            if !matches!(
                EventKind::parse(&row.kind),
                Some(EventKind::ToolCall | EventKind::Admin)
            ) {
                refuse("reserved kind");
                continue;
            }
            let hash = match leaf_hash_of(&row) {
                Ok(h) => h,
                Err(_) => {
                    refuse("unhashable content");
                    continue;
                }
            };
            if row
                .leaf_hash
                .as_deref()
                .is_some_and(|h| parse_hash_hex(h) != Some(hash))
            {
                refuse("content does not match the leaf hash its writer stored");
                continue;
            }
            hashes.insert(row.id, hash);
        }
        let new_leaves: Vec<(Uuid, TreeHash)> = queued
            .iter()
            .filter_map(|(_, id, _)| hashes.get(id).map(|h| (*id, *h)))
            .collect();
        let hashed_ms = started.elapsed().as_millis() as u64;
        let added = write_leaves(txn, frontier, &new_leaves).await?;
        let written_ms = started.elapsed().as_millis() as u64;
        let done: Vec<i64> = queued.iter().map(|(pos, _, _)| *pos).collect();
        for chunk in done.chunks(10_000) {
            audit_pending::Entity::delete_many()
                .filter(audit_pending::Column::Pos.is_in(chunk.iter().copied()))
                .exec(txn)
                .await?;
        }
        debug!(
            queued = queued.len(),
            added,
            hashed_ms,
            written_ms,
            total_ms = started.elapsed().as_millis() as u64,
            "audit leaves appended"
        );
        Ok(added)
    }

    /// Signs and stores the checkpoint of the tree when it grew past `latest`.
    async fn checkpoint(
        &self,
        txn: &DatabaseTransaction,
        frontier: &Frontier,
        latest: Option<&audit_checkpoints::Model>,
    ) -> Result<Option<String>, AuditError> {
        let size = frontier.size();
        if size == 0 || latest.is_some_and(|cp| cp.tree_size as u64 >= size) {
            return Ok(None);
        }
        let root = frontier.root();
        let note = match &self.config.signer {
            Some(signer) => signer.sign(size, &root)?,
            None => checkpoint_text(&self.config.origin, size, &root)?,
        };
        audit_checkpoints::Entity::insert(audit_checkpoints::ActiveModel {
            tree_size: Set(size as i64),
            root_hash: Set(hash_hex(&root)),
            note: Set(note.clone()),
            created_at: Set(Utc::now()),
        })
        .exec_without_returning(txn)
        .await?;
        Ok(Some(note))
    }

    /// Runs `work` under the integrator lock, then appends the record it
    /// returns as a leaf and writes a checkpoint, all in one transaction (used
    /// by prune, so the act and its record commit together). `None` when
    /// another process holds the lock.
    pub(crate) async fn with_lock<T>(
        &self,
        work: impl AsyncFnOnce(
            &DatabaseTransaction,
            u64,
            TreeHash,
        ) -> Result<(T, Option<AuditEvent>), AuditError>,
    ) -> Result<Option<(T, Option<String>)>, AuditError> {
        let Some(txn) = self.begin().await? else {
            return Ok(None);
        };
        let (mut frontier, latest) = self.authenticate(&txn).await?;
        self.extend(&txn, &mut frontier).await?;
        let (out, record) = work(&txn, frontier.size(), frontier.root()).await?;
        if let Some(event) = record {
            // The record goes straight into the tree, never through the queue.
            let row = event.to_model()?;
            let hash = leaf_hash_of(&row)?;
            audit_events::Entity::insert(audit_events::ActiveModel::from(row))
                .exec_without_returning(&txn)
                .await?;
            write_leaves(&txn, &mut frontier, &[(event.id(), hash)]).await?;
        }
        let checkpoint = self.checkpoint(&txn, &frontier, latest.as_ref()).await?;
        txn.commit().await?;
        if let Some(note) = &checkpoint {
            self.raise_high_water(frontier.size(), hash_hex(&frontier.root()));
            self.publish(note.clone());
        }
        Ok(Some((out, checkpoint)))
    }
}

/// Appends leaves (event id, leaf hash) at the end of the tree: the leaf
/// rows and every interior hash they complete.
async fn write_leaves(
    txn: &DatabaseTransaction,
    frontier: &mut Frontier,
    new_leaves: &[(Uuid, TreeHash)],
) -> Result<u64, AuditError> {
    let now = Utc::now();
    let mut leaves = Vec::with_capacity(new_leaves.len());
    let mut nodes = Vec::with_capacity(new_leaves.len());
    for (id, hash) in new_leaves {
        let index = frontier.size();
        for (idx, h) in frontier.push(*hash) {
            if idx == tlog_tiles::stored_hash_index(0, index) {
                continue; // level 0 is the leaf row itself
            }
            nodes.push(audit_tree_hashes::ActiveModel {
                idx: Set(idx as i64),
                hash: Set(hash_hex(&h)),
            });
        }
        leaves.push(audit_leaves::ActiveModel {
            leaf_index: Set(index as i64),
            event_id: Set(*id),
            leaf_hash: Set(hash_hex(hash)),
            integrated_at: Set(now),
        });
    }
    let added = leaves.len() as u64;
    while !leaves.is_empty() {
        let rest = leaves.split_off(leaves.len().min(5_000));
        audit_leaves::Entity::insert_many(std::mem::replace(&mut leaves, rest))
            .exec_without_returning(txn)
            .await?;
    }
    while !nodes.is_empty() {
        let rest = nodes.split_off(nodes.len().min(10_000));
        audit_tree_hashes::Entity::insert_many(std::mem::replace(&mut nodes, rest))
            .exec_without_returning(txn)
            .await?;
    }
    Ok(added)
}

/// Events stored but not yet integrated into the tree (the integrator's
/// queue).
pub async fn backlog(db: &DatabaseConnection) -> Result<u64, AuditError> {
    Ok(audit_pending::Entity::find().count(db).await?)
}

/// When the newest checkpoint was signed, or `None` before the first.
pub async fn latest_checkpoint_at(
    db: &DatabaseConnection,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, AuditError> {
    Ok(latest_checkpoint(db).await?.map(|c| c.created_at))
}
