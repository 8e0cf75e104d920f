//! Chain verification: recompute every hash in seq order, in pages (bounded
//! memory), and name the first place the chain breaks and how.

use std::fmt;

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Serialize;
use tracing::{instrument, warn};
use warden_entity::audit_events;

use crate::chain::{ChainHead, ChainKey, row_hash};
use crate::{AuditError, store};

/// Rows read per query while verifying.
const PAGE: u64 = 1_000;
/// How far a renumbered row's original seq is searched for.
const RENUMBER_SEARCH: i64 = 64;

/// What part of the chain to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// First seq to check (default: the start of the chain). The row before it
    /// is trusted as the anchor.
    pub from_seq: Option<i64>,
    /// Last seq to check (default: the head).
    pub to_seq: Option<i64>,
    /// A head recorded earlier outside the database: the chain must still
    /// contain it unchanged, and not end before it.
    pub checkpoint: Option<ChainHead>,
}

/// The kind of damage found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakKind {
    /// A row's contents no longer match its hash, or its hash was rewritten.
    Modified,
    /// One or more rows are missing at this seq.
    Deleted,
    /// A row that was never appended sits at this seq.
    Inserted,
    /// Rows are out of their appended order at this seq.
    Reordered,
    /// The chain ends before the checkpoint's seq.
    Truncated,
}

/// The first break found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    /// The seq where the chain stops verifying.
    pub seq: i64,
    /// What kind of damage it looks like.
    pub kind: BreakKind,
    /// A sentence for the operator.
    pub detail: String,
}

impl fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at seq {}: {}", self.kind, self.seq, self.detail)
    }
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verification {
    /// Every checked row verified.
    Valid {
        /// Rows checked.
        checked: u64,
        /// The last row checked (or the anchor when none were).
        head: ChainHead,
    },
    /// The first break.
    Broken(ChainBreak),
}

impl Verification {
    /// True for [`Verification::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Self::Valid { .. })
    }
}

struct Seen {
    seq: i64,
    hash: String,
}

fn broken(seq: i64, kind: BreakKind, detail: impl Into<String>) -> Verification {
    let b = ChainBreak {
        seq,
        kind,
        detail: detail.into(),
    };
    warn!(seq, kind = ?kind, detail = %b.detail, "audit chain broken");
    Verification::Broken(b)
}

/// Verifies the chain (or the part `options` selects) against `key` (the
/// chain key it was written with, if any).
#[instrument(skip_all, fields(from = ?options.from_seq, to = ?options.to_seq))]
pub async fn verify(
    db: &DatabaseConnection,
    key: Option<&ChainKey>,
    options: &VerifyOptions,
) -> Result<Verification, AuditError> {
    // The anchor: the row before `from_seq`, else the prune anchor, else genesis.
    let start = match options.from_seq {
        Some(from) if from > 1 => {
            let row: Option<(i64, String)> = audit_events::Entity::find()
                .select_only()
                .column(audit_events::Column::Seq)
                .column(audit_events::Column::Hash)
                .filter(audit_events::Column::Seq.eq(from - 1))
                .into_tuple()
                .one(db)
                .await?;
            match row {
                Some((seq, hash)) => ChainHead { seq, hash },
                None => store::anchor(db).await?.unwrap_or_else(ChainHead::genesis),
            }
        }
        _ => store::anchor(db).await?.unwrap_or_else(ChainHead::genesis),
    };
    let mut prev = Seen {
        seq: start.seq,
        hash: start.hash.clone(),
    };
    let mut prev_prev_hash: Option<String> = None;
    let mut checked = 0u64;
    let mut checkpoint_seen = false;

    loop {
        let mut query = audit_events::Entity::find()
            .filter(audit_events::Column::Seq.gt(prev.seq))
            .order_by_asc(audit_events::Column::Seq)
            .limit(PAGE);
        if let Some(to) = options.to_seq {
            query = query.filter(audit_events::Column::Seq.lte(to));
        }
        let page = query.all(db).await?;
        if page.is_empty() {
            break;
        }
        for (i, row) in page.iter().enumerate() {
            let expected = prev.seq + 1;
            if row.seq != expected {
                return Ok(broken(
                    expected,
                    BreakKind::Deleted,
                    format!("seq {expected}..{} missing", row.seq - 1),
                ));
            }
            let self_ok = row_hash(key, row)? == row.hash;
            if row.prev_hash != prev.hash {
                if prev_prev_hash.as_deref() == Some(row.prev_hash.as_str()) {
                    return Ok(broken(
                        prev.seq,
                        BreakKind::Inserted,
                        format!("seq {} links past the row at seq {}", row.seq, prev.seq),
                    ));
                }
                if page[i + 1..]
                    .iter()
                    .any(|later| later.hash == row.prev_hash)
                {
                    return Ok(broken(
                        row.seq,
                        BreakKind::Reordered,
                        "this row links to a row stored after it",
                    ));
                }
                if !self_ok {
                    if let Some(shift) = original_seq_shift(key, row)? {
                        return Ok(broken(
                            row.seq,
                            BreakKind::Deleted,
                            format!(
                                "{shift} row(s) missing before this one; later rows were renumbered"
                            ),
                        ));
                    }
                    return Ok(broken(
                        row.seq,
                        BreakKind::Modified,
                        "contents do not match the hash",
                    ));
                }
                return Ok(broken(
                    prev.seq,
                    BreakKind::Modified,
                    "hash was rewritten: the next row still links to the original",
                ));
            }
            if !self_ok {
                return Ok(broken(
                    row.seq,
                    BreakKind::Modified,
                    "contents do not match the hash",
                ));
            }
            if let Some(cp) = &options.checkpoint
                && cp.seq == row.seq
            {
                checkpoint_seen = true;
                if cp.hash != row.hash {
                    return Ok(broken(
                        row.seq,
                        BreakKind::Modified,
                        "differs from the exported checkpoint: history was rewritten",
                    ));
                }
            }
            prev_prev_hash = Some(std::mem::replace(&mut prev.hash, row.hash.clone()));
            prev.seq = row.seq;
            checked += 1;
        }
    }

    if let Some(cp) = &options.checkpoint {
        let in_range = options.to_seq.is_none_or(|to| cp.seq <= to);
        if in_range && !checkpoint_seen && cp.seq > start.seq {
            return Ok(broken(
                prev.seq + 1,
                BreakKind::Truncated,
                format!(
                    "chain ends at seq {} but the checkpoint recorded seq {}",
                    prev.seq, cp.seq
                ),
            ));
        }
        if cp.seq == start.seq && cp.hash != start.hash {
            return Ok(broken(
                cp.seq,
                BreakKind::Modified,
                "differs from the exported checkpoint",
            ));
        }
    }
    Ok(Verification::Valid {
        checked,
        head: ChainHead {
            seq: prev.seq,
            hash: prev.hash,
        },
    })
}

/// If `row`'s stored hash matches its contents under a higher seq, the row
/// was renumbered down by that many: rows before it were deleted.
fn original_seq_shift(
    key: Option<&ChainKey>,
    row: &audit_events::Model,
) -> Result<Option<i64>, AuditError> {
    let mut probe = row.clone();
    for shift in 1..=RENUMBER_SEARCH {
        probe.seq = row.seq + shift;
        if row_hash(key, &probe)? == row.hash {
            return Ok(Some(shift));
        }
    }
    Ok(None)
}
