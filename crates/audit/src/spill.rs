//! The local spill file: JSON lines, fsync'd, written when the database is
//! unreachable or the logger's buffer is full, replayed when it is back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{error, warn};
use uuid::Uuid;

use crate::redact::RedactionFlag;
use crate::{AuditError, AuditEvent};

/// One spilled event: the already-redacted event, never raw arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SpillRecord {
    pub(crate) v: u8,
    pub(crate) id: Uuid,
    pub(crate) request_id: String,
    pub(crate) timestamp: DateTime<Utc>,
    pub(crate) caller_id: String,
    pub(crate) api_key_id: Option<Uuid>,
    pub(crate) method: String,
    pub(crate) tool_name: Option<String>,
    pub(crate) decision: String,
    pub(crate) reason: Option<String>,
    pub(crate) raw_args_hash: String,
    pub(crate) sanitized_args: Value,
    pub(crate) redaction_flags: Vec<RedactionFlag>,
    pub(crate) risk_labels: Vec<String>,
    pub(crate) status_code: Option<i32>,
    pub(crate) latency_ms: Option<i64>,
    /// `tool_call` or `prune`; absent in files written before the transparency log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
}

/// The spill file and the file being replayed (`<path>.replaying`). Appends
/// always go to the spill file; a replay first renames it, so events spilled
/// during a replay are never lost or replayed twice.
#[derive(Debug)]
pub(crate) struct Spill {
    path: PathBuf,
    replaying: PathBuf,
    lock: Mutex<()>,
}

impl Spill {
    pub(crate) fn new(path: PathBuf) -> Self {
        let mut replaying = path.clone().into_os_string();
        replaying.push(".replaying");
        Self {
            path,
            replaying: PathBuf::from(replaying),
            lock: Mutex::new(()),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, path: &Path, e: impl std::fmt::Display) -> AuditError {
        AuditError::Spill {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    /// Appends `events` and fsyncs: when this returns Ok they survive a crash.
    pub(crate) fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.len() * 512);
        for event in events {
            serde_json::to_writer(&mut buf, &event.to_spill())
                .map_err(|e| self.error(&self.path, e))?;
            buf.push(b'\n');
        }
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| self.error(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(&self.path, e))?;
        file.write_all(&buf)
            .map_err(|e| self.error(&self.path, e))?;
        file.sync_data().map_err(|e| self.error(&self.path, e))?;
        Ok(())
    }

    /// True when events are waiting in either file.
    pub(crate) fn has_pending(&self) -> bool {
        [&self.path, &self.replaying]
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    }

    /// Number of events waiting (lines in both files).
    pub(crate) fn pending(&self) -> u64 {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        [&self.path, &self.replaying]
            .iter()
            .filter_map(|p| File::open(p).ok())
            .map(|f| BufReader::new(f).lines().count() as u64)
            .sum()
    }

    /// Moves the spill file aside for replay (unless an earlier replay's file
    /// is still there) and reads every event in it. Malformed lines (a torn
    /// final line after a crash) are logged and skipped.
    pub(crate) fn start_replay(&self) -> Result<Vec<AuditEvent>, AuditError> {
        {
            let _guard = self
                .lock
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !self.replaying.exists() && self.path.exists() {
                std::fs::rename(&self.path, &self.replaying)
                    .map_err(|e| self.error(&self.path, e))?;
            }
        }
        let file = match File::open(&self.replaying) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(&self.replaying, e)),
        };
        let mut events = Vec::new();
        for (n, line) in BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|e| self.error(&self.replaying, e))?;
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<SpillRecord>(&line)
                .map_err(|e| e.to_string())
                .and_then(|r| AuditEvent::from_spill(r).map_err(|e| e.to_string()))
            {
                Ok(event) => events.push(event),
                Err(e) => {
                    error!(line = n + 1, error = %e, path = %self.replaying.display(), "skipping malformed spill line")
                }
            }
        }
        Ok(events)
    }

    /// Deletes the replayed file once every event in it is stored.
    pub(crate) fn finish_replay(&self) -> Result<(), AuditError> {
        match std::fs::remove_file(&self.replaying) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                warn!(error = %e, "could not remove the replayed spill file");
                Err(self.error(&self.replaying, e))
            }
        }
    }
}
