//! [`AuditLogger`]: batched, outage-proof writes off the request path.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sea_orm::DatabaseConnection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::integrator::{Integrator, IntegratorConfig};
use crate::spill::{Replay, Spill, SpillMacKey};
use crate::store::append;
use crate::{AuditError, AuditEvent};

/// How an [`AuditLogger`] batches, retries and spills.
#[derive(Debug, Clone)]
pub struct AuditLoggerConfig {
    /// The local spill file (JSON lines). One per logger instance: two loggers
    /// must never share a path.
    pub spill_path: PathBuf,
    /// Most events per write transaction (default 1000).
    pub batch_size: usize,
    /// Events buffered in memory before `log` spills to the file (default 65536).
    pub buffer_capacity: usize,
    /// Attempts after the first failed write before a batch is spilled (default 3).
    pub max_retries: u32,
    /// First retry delay, doubled per attempt (default 50 ms).
    pub retry_backoff: Duration,
    /// Longest delay between retries and recovery probes (default 5 s).
    pub max_backoff: Duration,
    /// Longest one batch write may take before it counts as failed (default 10 s).
    pub write_timeout: Duration,
    /// The integrator this logger runs beside its writer (default: on, with
    /// defaults). Every logger may run one: at most one integrates at a time
    /// across processes, and another takes over within one interval when it
    /// dies. `None` leaves integration to another process (`warden audit
    /// integrate --follow`).
    pub integrator: Option<IntegratorConfig>,
    /// Authenticates every spill line (`AUDIT_SPILL_MAC_KEY`). With a key,
    /// replay stores only lines carrying a valid tag and quarantines the
    /// rest; without one (development), lines are trusted as read.
    pub spill_mac_key: Option<SpillMacKey>,
}

impl AuditLoggerConfig {
    /// Defaults, spilling to `spill_path`.
    pub fn new(spill_path: impl Into<PathBuf>) -> Self {
        Self {
            spill_path: spill_path.into(),
            batch_size: 1_000,
            buffer_capacity: 65_536,
            max_retries: 3,
            retry_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            write_timeout: Duration::from_secs(10),
            integrator: Some(IntegratorConfig::default()),
            spill_mac_key: None,
        }
    }
}

/// Counters since the logger started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AuditLoggerStats {
    /// Events passed to `log`.
    pub logged: u64,
    /// Events inserted into the database (directly or by replay).
    pub stored: u64,
    /// Events skipped as already stored (replays of committed writes).
    pub duplicates: u64,
    /// Events written to the spill file.
    pub spilled: u64,
    /// Spilled events later inserted into the database.
    pub replayed: u64,
    /// Events lost because the spill file could not be written either.
    pub lost: u64,
    /// Spill lines refused at replay (failed authentication or unreadable)
    /// and moved to the quarantine file (`<spill path>.quarantine`).
    pub quarantined: u64,
}

/// The state after a flush or shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Events durable in the local spill file but not yet in the database
    /// (non-zero only while the database is unreachable).
    pub spilled_pending: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) logged: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) spilled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) quarantined: AtomicU64,
    /// `log` spilled while the writer was healthy: replay soon.
    overflowed: AtomicBool,
}

#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is an event; boxing would allocate on the request path"
)]
enum Msg {
    Event(AuditEvent),
    Flush(oneshot::Sender<FlushReport>),
    Shutdown(oneshot::Sender<FlushReport>),
}

/// Writes audit events to the chain in batches, off the request path.
///
/// Guarantees:
/// - [`AuditLogger::log`] never returns an error and never waits for the
///   database: it queues the event in a bounded buffer. Only when that buffer
///   is full does it append the event to the local spill file itself (a
///   bounded, fsync'd write).
/// - A background task writes queued events in batches (no lock shared with
///   other writers), and an integrator task adds them to the Merkle tree and
///   signs checkpoints (see [`IntegratorConfig`]). A failed write is retried with exponential backoff; if it
///   keeps failing, the batch goes to the spill file and later events follow
///   it there until the database answers again, when the file is replayed.
/// - No event is lost to a database outage: every event is in the database or
///   fsync'd in the spill file. Replays skip events already stored (by the
///   event's own id), so each event is stored exactly once, and several
///   events of one call are all kept.
/// - An outage costs O(1) per recovery probe: the database is asked one
///   cheap question before the spill file is touched; a replay streams the
///   file in chunks of one batch, resuming after the last stored chunk.
/// - Spill lines are authenticated with `spill_mac_key` when one is set:
///   lines that fail are quarantined and counted, never stored.
/// - [`AuditLogger::flush`] returns once everything logged before it is
///   durable (in the database, or — during an outage — in the spill file, as
///   [`FlushReport::spilled_pending`] says). [`AuditLogger::shutdown`] does
///   the same and stops the task. A spill file left by a previous run is
///   replayed at start.
pub struct AuditLogger {
    tx: mpsc::Sender<Msg>,
    spill: Arc<Spill>,
    counters: Arc<Counters>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLogger")
            .field("spill_path", &self.spill.path())
            .field("stats", &self.stats())
            .finish()
    }
}

impl AuditLogger {
    /// Starts the background writer on the current tokio runtime.
    pub fn start(db: DatabaseConnection, mut config: AuditLoggerConfig) -> Self {
        config.batch_size = config.batch_size.clamp(1, 10_000);
        let (tx, rx) = mpsc::channel(config.buffer_capacity.max(1));
        let spill = Arc::new(Spill::new(
            config.spill_path.clone(),
            config.spill_mac_key.clone(),
        ));
        let counters = Arc::new(Counters::default());
        let integrator = config
            .integrator
            .clone()
            .map(|c| Integrator::new(db.clone(), c));
        let (stop_integrator, stop_rx) = tokio::sync::watch::channel(false);
        let integrator_task = integrator.clone().map(|i| tokio::spawn(i.run(stop_rx)));
        let worker = Worker {
            integrator,
            stop_integrator,
            integrator_task,
            db,
            rx,
            spill: spill.clone(),
            counters: counters.clone(),
            degraded: spill.has_pending(),
            replay: None,
            backoff: config.retry_backoff,
            next_probe: Instant::now(),
            config,
        };
        let task = tokio::spawn(worker.run());
        let queue = tx.downgrade();
        crate::metrics::register_logger(crate::metrics::LoggerProbe {
            counters: Arc::downgrade(&counters),
            queued: Box::new(move || {
                queue
                    .upgrade()
                    .map(|tx| tx.max_capacity().saturating_sub(tx.capacity()))
            }),
        });
        Self {
            tx,
            spill,
            counters,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Records `event`. Never fails and never waits for the database.
    pub fn log(&self, event: AuditEvent) {
        self.counters.logged.fetch_add(1, Ordering::Relaxed);
        let event = match self.tx.try_send(Msg::Event(event)) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(Msg::Event(e)))
            | Err(mpsc::error::TrySendError::Closed(Msg::Event(e))) => e,
            Err(_) => return,
        };
        match self.spill.append(std::slice::from_ref(&event)) {
            Ok(()) => {
                self.counters.spilled.fetch_add(1, Ordering::Relaxed);
                crate::metrics::outage(crate::metrics::Outage::Spilled, 1);
                self.counters.overflowed.store(true, Ordering::Release);
            }
            Err(e) => {
                self.counters.lost.fetch_add(1, Ordering::Relaxed);
                crate::metrics::outage(crate::metrics::Outage::Lost, 1);
                error!(request_id = event.request_id(), error = %e, "audit event lost: buffer full and spill file unwritable");
            }
        }
    }

    /// Waits until every event logged before this call is durable.
    pub async fn flush(&self) -> Result<FlushReport, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Flush(reply))
            .await
            .map_err(|_| AuditError::LoggerStopped)?;
        rx.await.map_err(|_| AuditError::LoggerStopped)
    }

    /// Drains everything, stops the background task and reports what is left
    /// in the spill file. Later `log` calls go straight to the spill file.
    pub async fn shutdown(&self) -> Result<FlushReport, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Shutdown(reply))
            .await
            .map_err(|_| AuditError::LoggerStopped)?;
        let report = rx.await.map_err(|_| AuditError::LoggerStopped)?;
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        Ok(report)
    }

    /// Counters since start.
    pub fn stats(&self) -> AuditLoggerStats {
        let c = &self.counters;
        AuditLoggerStats {
            logged: c.logged.load(Ordering::Relaxed),
            stored: c.stored.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            spilled: c.spilled.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            quarantined: c.quarantined.load(Ordering::Relaxed),
        }
    }
}

struct Worker {
    integrator: Option<Integrator>,
    stop_integrator: tokio::sync::watch::Sender<bool>,
    integrator_task: Option<JoinHandle<()>>,
    db: DatabaseConnection,
    rx: mpsc::Receiver<Msg>,
    spill: Arc<Spill>,
    counters: Arc<Counters>,
    config: AuditLoggerConfig,
    degraded: bool,
    /// A replay that stopped part-way (the database failed again): resumed
    /// after its last stored chunk.
    replay: Option<Replay>,
    backoff: Duration,
    next_probe: Instant,
}

impl Worker {
    async fn run(mut self) {
        loop {
            let msg = if self.degraded {
                match tokio::time::timeout_at(self.next_probe, self.rx.recv()).await {
                    Ok(msg) => msg,
                    Err(_) => {
                        self.replay().await;
                        continue;
                    }
                }
            } else {
                self.rx.recv().await
            };
            let Some(msg) = msg else { break };
            let control = match msg {
                Msg::Event(first) => {
                    let mut batch = vec![first];
                    let mut control = None;
                    while batch.len() < self.config.batch_size {
                        match self.rx.try_recv() {
                            Ok(Msg::Event(e)) => batch.push(e),
                            Ok(other) => {
                                control = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.store(batch).await;
                    if !self.degraded && self.counters.overflowed.swap(false, Ordering::AcqRel) {
                        self.replay().await;
                    }
                    control
                }
                other => Some(other),
            };
            match control {
                Some(Msg::Flush(reply)) => {
                    self.catch_up().await;
                    let _ = reply.send(self.report().await);
                }
                Some(Msg::Shutdown(reply)) => {
                    self.drain().await;
                    self.stop_integrating().await;
                    let _ = reply.send(self.report().await);
                    return;
                }
                Some(Msg::Event(_)) | None => {}
            }
        }
        self.drain().await;
        self.stop_integrating().await;
    }

    /// Stops the background integrator, then integrates (and checkpoints)
    /// what this logger stored, so a clean shutdown leaves nothing queued.
    async fn stop_integrating(&mut self) {
        let _ = self.stop_integrator.send(true);
        if let Some(task) = self.integrator_task.take() {
            let _ = task.await;
        }
        if let Some(integrator) = &self.integrator
            && !self.degraded
            && let Err(e) = integrator.integrate_all().await
        {
            warn!(error = %e, "final audit integration failed; another integrator will finish it");
        }
    }

    /// Before answering a flush: replay what overflowed or was spilled.
    async fn catch_up(&mut self) {
        if self.degraded
            || self.counters.overflowed.swap(false, Ordering::AcqRel)
            || self.spill.has_pending()
        {
            self.replay().await;
        }
    }

    /// On shutdown: store or spill everything still queued, answer any
    /// further flush requests.
    async fn drain(&mut self) {
        self.rx.close();
        let mut rest = Vec::new();
        let mut replies = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Msg::Event(e) => rest.push(e),
                Msg::Flush(r) | Msg::Shutdown(r) => replies.push(r),
            }
        }
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(self.config.batch_size));
            let batch = std::mem::replace(&mut rest, tail);
            self.store(batch).await;
        }
        self.catch_up().await;
        let report = self.report().await;
        for r in replies {
            let _ = r.send(report);
        }
    }

    async fn report(&self) -> FlushReport {
        let spill = self.spill.clone();
        let spilled_pending = tokio::task::spawn_blocking(move || spill.pending())
            .await
            .unwrap_or(0);
        FlushReport { spilled_pending }
    }

    async fn store(&mut self, batch: Vec<AuditEvent>) {
        if self.degraded {
            self.spill_batch(batch).await;
            return;
        }
        let mut delay = self.config.retry_backoff;
        for attempt in 0..=self.config.max_retries {
            match self.append_counted(batch.clone()).await {
                Ok(_) => return,
                Err(e) => {
                    warn!(attempt, events = batch.len(), error = %e, "audit write failed");
                    if attempt < self.config.max_retries {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(self.config.max_backoff);
                    }
                }
            }
        }
        warn!(events = batch.len(), spill = %self.spill.path().display(), "audit database unreachable; spilling to the local file until it is back");
        self.spill_batch(batch).await;
        self.degraded = true;
        self.backoff = self.config.retry_backoff;
        self.next_probe = Instant::now() + self.backoff;
    }

    /// Appends `batch` to the chain and counts what was stored; returns the
    /// number of rows inserted.
    async fn append_counted(&self, batch: Vec<AuditEvent>) -> Result<u64, AuditError> {
        let outcome = append(&self.db, batch, self.config.write_timeout).await?;
        self.counters
            .stored
            .fetch_add(outcome.inserted, Ordering::Relaxed);
        self.counters
            .duplicates
            .fetch_add(outcome.duplicates, Ordering::Relaxed);
        Ok(outcome.inserted)
    }

    async fn spill_batch(&self, batch: Vec<AuditEvent>) {
        let n = batch.len() as u64;
        let spill = self.spill.clone();
        let result = tokio::task::spawn_blocking(move || spill.append(&batch)).await;
        match result {
            Ok(Ok(())) => {
                self.counters.spilled.fetch_add(n, Ordering::Relaxed);
                crate::metrics::outage(crate::metrics::Outage::Spilled, n);
            }
            Ok(Err(e)) => {
                self.counters.lost.fetch_add(n, Ordering::Relaxed);
                crate::metrics::outage(crate::metrics::Outage::Lost, n);
                error!(events = n, error = %e, "audit events lost: database and spill file both failed");
            }
            Err(e) => {
                self.counters.lost.fetch_add(n, Ordering::Relaxed);
                crate::metrics::outage(crate::metrics::Outage::Lost, n);
                error!(events = n, error = %e, "audit events lost: spill task failed");
            }
        }
    }

    /// One cheap, bounded question to the database: is it answering?
    async fn database_answers(&self) -> bool {
        use sea_orm::ConnectionTrait;
        let probe_timeout = self.config.write_timeout.min(Duration::from_secs(2));
        matches!(
            tokio::time::timeout(probe_timeout, self.db.execute_unprepared("SELECT 1")).await,
            Ok(Ok(_))
        )
    }

    /// Tries to move the spill file into the database, one batch at a time.
    async fn replay(&mut self) {
        if self.degraded && !self.database_answers().await {
            tracing::debug!("audit database still unreachable");
            self.schedule_probe();
            return;
        }
        let mut replayed = 0u64;
        let mut finished = false;
        loop {
            let Some(mut replay) = self.take_replay().await else {
                break;
            };
            let spill = self.spill.clone();
            let max = self.config.batch_size.max(1);
            let read = tokio::task::spawn_blocking(move || {
                let chunk = spill.next_chunk(&mut replay, max);
                (replay, chunk)
            })
            .await;
            let (mut replay, chunk) = match read {
                Ok((replay, Ok(chunk))) => (replay, chunk),
                Ok((mut replay, Err(e))) => {
                    error!(error = %e, "cannot read the audit spill file; retrying later");
                    if self.spill.rewind(&mut replay).is_ok() {
                        self.replay = Some(replay);
                    }
                    self.degraded = true;
                    self.schedule_probe();
                    return;
                }
                Err(_) => {
                    self.degraded = true;
                    self.schedule_probe();
                    return;
                }
            };
            self.counters
                .quarantined
                .fetch_add(chunk.quarantined, Ordering::Relaxed);
            crate::metrics::outage(crate::metrics::Outage::Quarantined, chunk.quarantined);
            if chunk.lines == 0 {
                if let Err(e) = self.spill.finish_replay(replay) {
                    error!(error = %e, "replayed spill file could not be removed; it will be replayed again (duplicates are skipped)");
                }
                finished = true;
                break;
            }
            if !chunk.events.is_empty() {
                let n = chunk.events.len();
                match self.append_counted(chunk.events).await {
                    Ok(inserted) => {
                        replayed += inserted;
                        self.counters
                            .replayed
                            .fetch_add(inserted, Ordering::Relaxed);
                        crate::metrics::outage(crate::metrics::Outage::Replayed, inserted);
                        tracing::debug!(events = n, "spill chunk replayed");
                    }
                    Err(e) => {
                        if let Err(e) = self.spill.rewind(&mut replay) {
                            error!(error = %e, "spill replay cannot rewind; it restarts from the top (duplicates are skipped)");
                        } else {
                            self.replay = Some(replay);
                        }
                        self.degraded = true;
                        tracing::debug!(error = %e, "audit database still unreachable");
                        self.schedule_probe();
                        return;
                    }
                }
            }
            Spill::commit(&mut replay);
            self.replay = Some(replay);
        }
        // Only after a replay of its own: when another process holds the
        // replay, it also takes the lines this one spilled.
        if finished && self.spill.has_pending() {
            // More arrived while replaying: go again soon, still spilling meanwhile.
            self.degraded = true;
            self.next_probe = Instant::now();
        } else {
            if self.degraded {
                info!(
                    replayed,
                    "audit database reachable again; spill file replayed"
                );
            }
            self.degraded = false;
            self.backoff = self.config.retry_backoff;
        }
    }

    /// The replay to continue: the one left part-way, or a new one (`None`
    /// when there is nothing to replay, or another process is replaying).
    async fn take_replay(&mut self) -> Option<Replay> {
        if let Some(replay) = self.replay.take() {
            return Some(replay);
        }
        let spill = self.spill.clone();
        match tokio::task::spawn_blocking(move || spill.start_replay()).await {
            Ok(Ok(replay)) => replay,
            Ok(Err(e)) => {
                error!(error = %e, "cannot open the audit spill file for replay");
                None
            }
            Err(_) => None,
        }
    }

    fn schedule_probe(&mut self) {
        self.backoff = (self.backoff * 2).min(self.config.max_backoff);
        self.next_probe = Instant::now() + self.backoff;
    }
}
