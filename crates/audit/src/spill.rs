//! The local spill file: JSON lines, fsync'd, written when the database is
//! unreachable or the logger's buffer is full, replayed when it is back.
//!
//! - **Shared safely.** Appends and the rename that starts a replay hold an
//!   exclusive lock on `<path>.lock` (across processes), so no line written
//!   by any process can land in a file after it was taken for replay; one
//!   replay runs at a time (`<path>.replay.lock`, tried, never waited on).
//! - **Authenticated.** With a [`SpillMacKey`], every line carries an
//!   HMAC-SHA256 of its content; a line that fails it (injected, altered,
//!   torn by a crash) is quarantined to `<path>.quarantine` and reported,
//!   never stored.
//! - **Bounded.** A replay streams the file in chunks of at most one batch;
//!   counting what is waiting reads only what was appended since the last
//!   count.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use tracing::{error, warn};
use uuid::Uuid;

use crate::redact::RedactionFlag;
use crate::{AuditError, AuditEvent};

type HmacSha256 = Hmac<Sha256>;

const LINE_DOMAIN: &[u8] = b"warden.audit.spill-line.v1\0";
/// A line longer than this is not an event this logger wrote.
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// The secret that authenticates spill-file lines (`AUDIT_SPILL_MAC_KEY`).
/// `Debug` never shows it.
#[derive(Clone)]
pub struct SpillMacKey(HmacSha256);

impl fmt::Debug for SpillMacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SpillMacKey([redacted])")
    }
}

impl SpillMacKey {
    /// A key from secret material of at least 32 bytes.
    pub fn from_bytes(material: &[u8]) -> Result<Self, AuditError> {
        if material.len() < 32 {
            return Err(AuditError::InvalidField {
                field: "audit_spill_mac_key",
                reason: format!(
                    "{} bytes is too short: use at least 32 random bytes",
                    material.len()
                ),
            });
        }
        <HmacSha256 as KeyInit>::new_from_slice(material)
            .map(Self)
            .map_err(|e| AuditError::InvalidField {
                field: "audit_spill_mac_key",
                reason: e.to_string(),
            })
    }

    fn tag(&self, json: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(LINE_DOMAIN);
        mac.update(json);
        mac.finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn verify(&self, json: &[u8], tag_hex: &str) -> bool {
        let Some(tag) = decode_hex(tag_hex) else {
            return false;
        };
        let mut mac = self.0.clone();
        mac.update(LINE_DOMAIN);
        mac.update(json);
        mac.verify_slice(&tag).is_ok()
    }
}

fn decode_hex(text: &str) -> Option<[u8; 32]> {
    warden_common::parse_hex::<32>(text)
}

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

/// Lines counted so far in one file (known by its inode), to count only
/// what was appended since.
#[derive(Debug, Default)]
struct Counted {
    inode: u64,
    len: u64,
    lines: u64,
}

fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

/// True when `file` is empty or its last byte is a newline.
fn ends_with_newline(file: &mut File) -> std::io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// The spill file, the file being replayed (`<path>.replaying`), their locks
/// and the quarantine.
#[derive(Debug)]
pub(crate) struct Spill {
    path: PathBuf,
    replaying: PathBuf,
    lock_path: PathBuf,
    replay_lock_path: PathBuf,
    quarantine: PathBuf,
    mac: Option<SpillMacKey>,
    local: Mutex<()>,
    counted: Mutex<[Counted; 2]>,
}

/// A replay in progress: holds the replay lock and a read position.
#[derive(Debug)]
pub(crate) struct Replay {
    _lock: File,
    reader: BufReader<File>,
    /// Offset just past the last chunk the caller committed.
    committed: u64,
    /// Offset just past what was read.
    read: u64,
    line_no: u64,
}

/// One chunk of a replay.
#[derive(Debug, Default)]
pub(crate) struct Chunk {
    pub(crate) events: Vec<AuditEvent>,
    pub(crate) quarantined: u64,
    pub(crate) lines: u64,
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

impl Spill {
    pub(crate) fn new(path: PathBuf, mac: Option<SpillMacKey>) -> Self {
        Self {
            replaying: sibling(&path, ".replaying"),
            lock_path: sibling(&path, ".lock"),
            replay_lock_path: sibling(&path, ".replay.lock"),
            quarantine: sibling(&path, ".quarantine"),
            path,
            mac,
            local: Mutex::new(()),
            counted: Mutex::new([Counted::default(), Counted::default()]),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, path: &Path, e: impl fmt::Display) -> AuditError {
        AuditError::Spill {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn open_lock(&self, path: &Path) -> Result<File, AuditError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| self.error(dir, e))?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| self.error(path, e))
    }

    /// Runs `f` holding this process's mutex and the cross-process lock.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T, AuditError>) -> Result<T, AuditError> {
        let _guard = self
            .local
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lock = self.open_lock(&self.lock_path)?;
        lock.lock().map_err(|e| self.error(&self.lock_path, e))?;
        // The lock is released when `lock` is closed, after `f`.
        f()
    }

    fn line(&self, event: &AuditEvent) -> Result<Vec<u8>, AuditError> {
        let mut json =
            serde_json::to_vec(&event.to_spill()).map_err(|e| self.error(&self.path, e))?;
        if let Some(mac) = &self.mac {
            // JSON never holds a raw tab: the tag follows the last one.
            let tag = mac.tag(&json);
            json.push(b'\t');
            json.extend_from_slice(tag.as_bytes());
        }
        json.push(b'\n');
        Ok(json)
    }

    /// Appends `events` and fsyncs: when this returns Ok they survive a crash.
    pub(crate) fn append(&self, events: &[AuditEvent]) -> Result<(), AuditError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(events.len() * 512 + 1);
        for event in events {
            buf.extend(self.line(event)?);
        }
        self.locked(|| {
            let created = !self.path.exists();
            let mut file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| self.error(&self.path, e))?;
            // A crash mid-append leaves a torn last line: end it, so this
            // append's first line is not glued to it (and quarantined).
            if !ends_with_newline(&mut file).map_err(|e| self.error(&self.path, e))? {
                buf.insert(0, b'\n');
            }
            file.write_all(&buf)
                .map_err(|e| self.error(&self.path, e))?;
            file.sync_data().map_err(|e| self.error(&self.path, e))?;
            if created {
                self.sync_dir();
            }
            Ok(())
        })
    }

    /// Makes a new or renamed file's directory entry durable (best effort).
    fn sync_dir(&self) {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            warn!(error = %e, dir = %dir.display(), "spill directory not synced");
        }
    }

    /// True when events are waiting in either file (two `stat` calls).
    pub(crate) fn has_pending(&self) -> bool {
        [&self.path, &self.replaying]
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
    }

    /// Number of lines waiting in both files. Files only grow until they are
    /// renamed or removed, so only bytes appended since the last count are
    /// read.
    pub(crate) fn pending(&self) -> u64 {
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut total = 0;
        for (path, seen) in [&self.path, &self.replaying]
            .into_iter()
            .zip(counted.iter_mut())
        {
            let Ok(mut file) = File::open(path) else {
                *seen = Counted::default();
                continue;
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let len = meta.len();
            if inode(&meta) != seen.inode || len < seen.len {
                // Another file now (renamed, replaced): count it from the start.
                *seen = Counted {
                    inode: inode(&meta),
                    ..Counted::default()
                };
            }
            if len > seen.len && file.seek(SeekFrom::Start(seen.len)).is_ok() {
                let mut buf = vec![0u8; 64 * 1024];
                let mut read = seen.len;
                while let Ok(n) = file.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                    read += n as u64;
                }
                seen.len = read;
            }
            total += seen.lines;
        }
        total
    }

    /// Starts a replay: takes the replay lock (or returns `None` when another
    /// process is replaying), moves the spill file aside under the append
    /// lock unless an earlier replay's file is still there, and opens it.
    pub(crate) fn start_replay(&self) -> Result<Option<Replay>, AuditError> {
        let lock = self.open_lock(&self.replay_lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(self.error(&self.replay_lock_path, e));
            }
        }
        self.locked(|| {
            if !self.replaying.exists() && self.path.exists() {
                std::fs::rename(&self.path, &self.replaying)
                    .map_err(|e| self.error(&self.path, e))?;
                self.sync_dir();
            }
            Ok(())
        })?;
        let file = match File::open(&self.replaying) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(&self.replaying, e)),
        };
        Ok(Some(Replay {
            _lock: lock,
            reader: BufReader::new(file),
            committed: 0,
            read: 0,
            line_no: 0,
        }))
    }

    /// Reads up to `max` events from the replay (a short chunk means the end).
    /// Lines that fail authentication or parsing are quarantined.
    pub(crate) fn next_chunk(&self, replay: &mut Replay, max: usize) -> Result<Chunk, AuditError> {
        let mut chunk = Chunk::default();
        let mut line = Vec::new();
        while chunk.events.len() < max {
            line.clear();
            let n = (&mut replay.reader)
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut line)
                .map_err(|e| self.error(&self.replaying, e))?;
            if n == 0 {
                break;
            }
            replay.read += n as u64;
            replay.line_no += 1;
            chunk.lines += 1;
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match self.open_line(text) {
                Ok(event) => chunk.events.push(event),
                Err(why) => {
                    // A refused line never stalls the replay: if even the
                    // quarantine cannot take it, it is reported and dropped
                    // (it was never a trusted event).
                    if let Err(e) = self.quarantine_line(text, replay.line_no, why) {
                        error!(line = replay.line_no, error = %e, "refused spill line could not be quarantined; dropped");
                    }
                    chunk.quarantined += 1;
                }
            }
        }
        Ok(chunk)
    }

    fn open_line(&self, text: &[u8]) -> Result<AuditEvent, &'static str> {
        let json = match &self.mac {
            Some(mac) => {
                let split = text
                    .iter()
                    .rposition(|b| *b == b'\t')
                    .ok_or("no authentication tag")?;
                let (json, tag) = (&text[..split], &text[split + 1..]);
                let tag = std::str::from_utf8(tag).map_err(|_| "malformed tag")?;
                if !mac.verify(json, tag) {
                    return Err("authentication tag does not match");
                }
                json
            }
            None => text,
        };
        let record: SpillRecord = serde_json::from_slice(json).map_err(|_| "not a spill record")?;
        AuditEvent::from_spill(record).map_err(|_| "not a valid event")
    }

    fn quarantine_line(&self, text: &[u8], line_no: u64, why: &str) -> Result<(), AuditError> {
        // The line's content is never logged: it is untrusted and may be large.
        error!(line = line_no, reason = why, path = %self.replaying.display(), quarantine = %self.quarantine.display(), "spill line refused; moved to quarantine");
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.quarantine)
            .map_err(|e| self.error(&self.quarantine, e))?;
        file.write_all(text)
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_data())
            .map_err(|e| self.error(&self.quarantine, e))
    }

    /// Marks everything read so far as stored.
    pub(crate) fn commit(replay: &mut Replay) {
        replay.committed = replay.read;
    }

    /// Goes back to just after the last committed chunk (its store failed).
    pub(crate) fn rewind(&self, replay: &mut Replay) -> Result<(), AuditError> {
        replay
            .reader
            .seek(SeekFrom::Start(replay.committed))
            .map_err(|e| self.error(&self.replaying, e))?;
        replay.read = replay.committed;
        Ok(())
    }

    /// Deletes the replayed file once every event in it is stored (the
    /// replay lock is released when `replay` is dropped).
    pub(crate) fn finish_replay(&self, replay: Replay) -> Result<(), AuditError> {
        let result = match std::fs::remove_file(&self.replaying) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                warn!(error = %e, "could not remove the replayed spill file");
                Err(self.error(&self.replaying, e))
            }
        };
        drop(replay);
        result
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::{Decision, Redactor, ToolCall};

    fn event(i: usize) -> AuditEvent {
        AuditEvent::record(
            &ToolCall {
                request_id: &format!("req-{i}"),
                caller_id: "agent",
                api_key_id: None,
                method: "tools/call",
                tool_name: Some("t"),
                raw_args: (&serde_json::json!({"i": i})).into(),
                decision: Decision::Allow,
                reason: None,
                risk_labels: &[],
                status_code: None,
                latency_ms: None,
                timestamp: None,
            },
            &Redactor::default(),
        )
        .unwrap()
    }

    fn drain(spill: &Spill, ids: &mut Vec<Uuid>) -> u64 {
        let mut quarantined = 0;
        if let Some(mut replay) = spill.start_replay().unwrap() {
            loop {
                let chunk = spill.next_chunk(&mut replay, 7).unwrap();
                quarantined += chunk.quarantined;
                ids.extend(chunk.events.iter().map(AuditEvent::id));
                if chunk.lines == 0 {
                    break;
                }
                Spill::commit(&mut replay);
            }
            spill.finish_replay(replay).unwrap();
        }
        quarantined
    }

    /// Two processes' spills on one path (two handles, separate locks): every
    /// line appended by one while the other replays is replayed exactly once.
    #[test]
    fn appends_racing_replays_on_one_path_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.spill");
        let writer = Arc::new(Spill::new(path.clone(), None));
        let reader = Spill::new(path, None);
        let total = 600;
        let appending = {
            let writer = writer.clone();
            std::thread::spawn(move || {
                let mut written = Vec::new();
                for i in 0..total {
                    let e = event(i);
                    written.push(e.id());
                    writer.append(std::slice::from_ref(&e)).unwrap();
                }
                written
            })
        };
        let mut replayed = Vec::new();
        while !appending.is_finished() {
            drain(&reader, &mut replayed);
        }
        let written = appending.join().unwrap();
        drain(&reader, &mut replayed);
        assert_eq!(replayed.len(), total, "lines lost or replayed twice");
        let unique: HashSet<_> = replayed.iter().collect();
        assert_eq!(unique, written.iter().collect());
        assert_eq!(reader.pending(), 0);
    }

    /// Lines injected into the file, altered, or torn are quarantined, never
    /// replayed, when lines are authenticated.
    #[test]
    fn unauthenticated_lines_are_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mac.spill");
        let key = SpillMacKey::from_bytes(b"spill-mac-key-for-tests-32-bytes!!").unwrap();
        let spill = Spill::new(path.clone(), Some(key));
        spill.append(&[event(1), event(2)]).unwrap();
        // An attacker appends a well-formed record without a valid tag, and
        // alters a genuine one.
        let unsealed = Spill::new(path.clone(), None);
        unsealed.append(&[event(3)]).unwrap();
        let genuine = std::fs::read_to_string(&path).unwrap();
        let altered = genuine.lines().next().unwrap().replace("req-1", "req-X");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "{altered}").unwrap();
        write!(file, "{{\"v\":1,\"torn").unwrap();
        drop(file);
        assert_eq!(spill.pending(), 4, "a torn last line is not counted");
        let mut ids = Vec::new();
        let quarantined = drain(&spill, &mut ids);
        assert_eq!(ids.len(), 2, "only the two sealed, unaltered lines");
        assert_eq!(quarantined, 3);
        let kept = std::fs::read_to_string(sibling(&path, ".quarantine")).unwrap();
        assert_eq!(kept.lines().count(), 3);
        assert!(!path.exists() && !sibling(&path, ".replaying").exists());
    }

    /// A crash mid-append leaves a torn line; the next append (from any
    /// process) must not be glued to it and lost with it.
    #[test]
    fn an_append_after_a_torn_line_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.spill");
        let key = SpillMacKey::from_bytes(b"spill-mac-key-for-tests-32-bytes!!").unwrap();
        let spill = Spill::new(path.clone(), Some(key));
        spill.append(&[event(1)]).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        write!(file, "{{\"v\":1,\"to").unwrap();
        drop(file);
        let after = event(2);
        spill.append(std::slice::from_ref(&after)).unwrap();
        let mut ids = Vec::new();
        let quarantined = drain(&spill, &mut ids);
        assert_eq!(quarantined, 1, "only the torn fragment");
        assert_eq!(ids.len(), 2);
        assert!(
            ids.contains(&after.id()),
            "the append after the tear survived"
        );
    }

    /// A quarantine that cannot be written never stalls the replay.
    #[test]
    fn an_unwritable_quarantine_does_not_stall_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.spill");
        std::fs::create_dir(sibling(&path, ".quarantine")).unwrap();
        let spill = Spill::new(path.clone(), None);
        spill.append(&[event(1)]).unwrap();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        writeln!(file, "not json").unwrap();
        drop(file);
        spill.append(&[event(2)]).unwrap();
        let mut ids = Vec::new();
        assert_eq!(drain(&spill, &mut ids), 1);
        assert_eq!(ids.len(), 2);
        assert!(!path.exists() && !sibling(&path, ".replaying").exists());
    }

    /// Counting what waits reads only what was appended since the last count.
    #[test]
    fn pending_counts_incrementally_and_follows_renames() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path().join("count.spill"), None);
        assert_eq!(spill.pending(), 0);
        spill.append(&[event(1), event(2)]).unwrap();
        assert_eq!(spill.pending(), 2);
        spill.append(&[event(3)]).unwrap();
        assert_eq!(spill.pending(), 3);
        let mut replay = spill.start_replay().unwrap().unwrap();
        spill.append(&[event(4)]).unwrap();
        assert_eq!(spill.pending(), 4, "3 being replayed + 1 new");
        let chunk = spill.next_chunk(&mut replay, 100).unwrap();
        assert_eq!(chunk.events.len(), 3);
        spill.finish_replay(replay).unwrap();
        assert_eq!(spill.pending(), 1);
    }
}
