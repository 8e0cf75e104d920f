//! Proofs anyone can check without the database: an inclusion proof bundle
//! for one event, and a consistency proof between two checkpoints.
//!
//! Producing a proof reads the (untrusted) database; checking it needs only
//! the bundle and the log's public key. A bundle whose event, path or
//! checkpoint was altered fails, and the failure says which part.

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use serde::{Deserialize, Serialize};
use warden_entity::{audit_checkpoints, audit_events, audit_leaves};

use crate::AuditError;
use crate::checkpoint::{CheckpointVerifier, ProofFailure, SignedCheckpoint};
use crate::integrator::latest_checkpoint;
use crate::leaf::{StoredEvent, TreeHash, hash_hex, parse_hash_hex};
use crate::tree;

/// The format tag of an inclusion bundle.
pub const INCLUSION_FORMAT: &str = "warden-audit-inclusion-proof/v1";
/// The format tag of a consistency bundle.
pub const CONSISTENCY_FORMAT: &str = "warden-audit-consistency-proof/v1";
/// No proof of a tree within [`tree::MAX_TREE_SIZE`] has more hashes.
const MAX_PROOF_HASHES: usize = 64;

/// Everything needed to check that one event is in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionBundle {
    /// [`INCLUSION_FORMAT`].
    pub format: String,
    /// The event exactly as stored.
    pub event: StoredEvent,
    /// Its leaf index.
    pub leaf_index: u64,
    /// The size of the tree the proof is for (the checkpoint's).
    pub tree_size: u64,
    /// The proof hashes, lowercase hex, as RFC 6962 orders them.
    pub proof: Vec<String>,
    /// The signed checkpoint note the proof leads to.
    pub checkpoint: String,
}

/// Everything needed to check that a newer checkpoint extends an older one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyBundle {
    /// [`CONSISTENCY_FORMAT`].
    pub format: String,
    /// The older checkpoint note.
    pub old: String,
    /// The newer checkpoint note.
    pub new: String,
    /// The proof hashes, lowercase hex.
    pub proof: Vec<String>,
}

fn hashes(hex: &[String]) -> Result<Vec<TreeHash>, ProofFailure> {
    if hex.len() > MAX_PROOF_HASHES {
        return Err(ProofFailure::Malformed(format!("{} proof hashes is too many", hex.len())));
    }
    hex.iter()
        .map(|h| parse_hash_hex(h).ok_or_else(|| ProofFailure::Malformed(format!("{h:?} is not a hash"))))
        .collect()
}

impl InclusionBundle {
    /// Checks the bundle: the checkpoint is signed by `verifier`, the event
    /// hashes to a leaf, and the path leads from that leaf to the signed root.
    pub fn verify(&self, verifier: &CheckpointVerifier) -> Result<SignedCheckpoint, ProofFailure> {
        if self.format != INCLUSION_FORMAT {
            return Err(ProofFailure::Malformed(format!("unknown format {:?}", self.format)));
        }
        let cp = SignedCheckpoint::open(&self.checkpoint, verifier)?;
        if cp.size != self.tree_size {
            return Err(ProofFailure::Path(format!(
                "the proof is for {} leaves, the checkpoint has {}",
                self.tree_size, cp.size
            )));
        }
        if self.leaf_index >= cp.size {
            return Err(ProofFailure::Path(format!(
                "leaf {} is not in a tree of {} leaves",
                self.leaf_index, cp.size
            )));
        }
        let leaf = self
            .event
            .leaf_hash()
            .map_err(|e| ProofFailure::LeafContent(e.to_string()))?;
        let root = parse_hash_hex(&cp.root).ok_or_else(|| ProofFailure::Malformed("root".into()))?;
        let proof = hashes(&self.proof)?;
        tlog_tiles::check_record(&proof, cp.size, root, self.leaf_index, leaf).map_err(|_| {
            ProofFailure::Path(format!(
                "the event (request_id {}) hashed with the proof does not give the signed root: \
                 the event, its leaf index or the proof was altered",
                self.event.request_id
            ))
        })?;
        Ok(cp)
    }

    /// Parses and checks a bundle from its JSON text.
    pub fn verify_json(text: &str, verifier: &CheckpointVerifier) -> Result<(Self, SignedCheckpoint), ProofFailure> {
        let bundle: Self = serde_json::from_str(text).map_err(|e| ProofFailure::Malformed(format!("bundle: {e}")))?;
        let cp = bundle.verify(verifier)?;
        Ok((bundle, cp))
    }
}

/// Checks that checkpoint `new` extends checkpoint `old` (both signed by
/// `verifier`) with `proof`: an append-only history, no fork, no rollback.
pub fn verify_consistency(
    old: &str,
    new: &str,
    proof: &[String],
    verifier: &CheckpointVerifier,
) -> Result<(SignedCheckpoint, SignedCheckpoint), ProofFailure> {
    let old_cp = SignedCheckpoint::open(old, verifier)?;
    let new_cp = SignedCheckpoint::open(new, verifier)?;
    if new_cp.size < old_cp.size {
        return Err(ProofFailure::Rollback(format!(
            "the newer checkpoint has {} leaves, the older {}",
            new_cp.size, old_cp.size
        )));
    }
    if new_cp.size == old_cp.size || old_cp.size == 0 {
        if new_cp.size == old_cp.size && new_cp.root != old_cp.root {
            return Err(ProofFailure::Fork(format!("two different roots for {} leaves", old_cp.size)));
        }
        return Ok((old_cp, new_cp));
    }
    let parse = |h: &str| parse_hash_hex(h).ok_or_else(|| ProofFailure::Malformed("root".into()));
    let proof = hashes(proof)?;
    tlog_tiles::check_tree(&proof, new_cp.size, parse(&new_cp.root)?, old_cp.size, parse(&old_cp.root)?)
        .map_err(|_| {
            ProofFailure::Fork(format!(
                "the tree of {} leaves does not extend the tree of {}: the log forked or was rewritten",
                new_cp.size, old_cp.size
            ))
        })?;
    Ok((old_cp, new_cp))
}

impl ConsistencyBundle {
    /// Checks the bundle; see [`verify_consistency`].
    pub fn verify(&self, verifier: &CheckpointVerifier) -> Result<(SignedCheckpoint, SignedCheckpoint), ProofFailure> {
        if self.format != CONSISTENCY_FORMAT {
            return Err(ProofFailure::Malformed(format!("unknown format {:?}", self.format)));
        }
        verify_consistency(&self.old, &self.new, &self.proof, verifier)
    }
}

/// The latest stored checkpoint note, if any.
pub async fn latest_checkpoint_note(db: &DatabaseConnection) -> Result<Option<String>, AuditError> {
    Ok(latest_checkpoint(db).await?.map(|c| c.note))
}

/// The inclusion proof bundle for the event with `request_id`, against the
/// latest checkpoint.
pub async fn prove_inclusion(db: &DatabaseConnection, request_id: &str) -> Result<InclusionBundle, AuditError> {
    let row = audit_events::Entity::find()
        .filter(audit_events::Column::RequestId.eq(request_id))
        .one(db)
        .await?
        .ok_or_else(|| AuditError::NotFound {
            request_id: request_id.to_owned(),
        })?;
    let leaf = audit_leaves::Entity::find()
        .filter(audit_leaves::Column::EventId.eq(row.id))
        .one(db)
        .await?
        .ok_or_else(|| AuditError::NotCheckpointed {
            what: format!("event {request_id} is not integrated yet"),
        })?;
    let checkpoint = latest_checkpoint(db).await?;
    let Some(cp) = checkpoint.filter(|c| c.tree_size > leaf.leaf_index) else {
        return Err(AuditError::NotCheckpointed {
            what: format!("leaf {} is in no checkpoint yet", leaf.leaf_index),
        });
    };
    let size = cp.tree_size as u64;
    let proof = tree::inclusion_proof(db, size, leaf.leaf_index as u64).await?;
    Ok(InclusionBundle {
        format: INCLUSION_FORMAT.to_owned(),
        event: StoredEvent::from_model(&row),
        leaf_index: leaf.leaf_index as u64,
        tree_size: size,
        proof: proof.iter().map(hash_hex).collect(),
        checkpoint: cp.note,
    })
}

/// The consistency bundle from the checkpoint of `old_size` leaves to the
/// checkpoint of `new_size` (default: the latest), both as stored.
pub async fn prove_consistency(
    db: &DatabaseConnection,
    old_size: u64,
    new_size: Option<u64>,
) -> Result<ConsistencyBundle, AuditError> {
    let find = async |size: u64| -> Result<audit_checkpoints::Model, AuditError> {
        audit_checkpoints::Entity::find_by_id(size as i64)
            .one(db)
            .await?
            .ok_or_else(|| AuditError::NotCheckpointed {
                what: format!("no stored checkpoint of size {size}"),
            })
    };
    let old = find(old_size).await?;
    let new = match new_size {
        Some(n) => find(n).await?,
        None => latest_checkpoint(db).await?.ok_or_else(|| AuditError::NotCheckpointed {
            what: "no checkpoint yet".into(),
        })?,
    };
    let proof = if old.tree_size > 0 && new.tree_size > old.tree_size {
        tree::consistency_proof(db, old.tree_size as u64, new.tree_size as u64).await?
    } else {
        Vec::new()
    };
    Ok(ConsistencyBundle {
        format: CONSISTENCY_FORMAT.to_owned(),
        old: old.note,
        new: new.note,
        proof: proof.iter().map(hash_hex).collect(),
    })
}

/// The consistency proof hashes (lowercase hex) from the stored tree of
/// `old` leaves to the stored tree of `new` leaves.
pub async fn consistency_proof_hashes(
    db: &DatabaseConnection,
    old: u64,
    new: u64,
) -> Result<Vec<String>, AuditError> {
    Ok(tree::consistency_proof(db, old, new)
        .await?
        .iter()
        .map(hash_hex)
        .collect())
}
