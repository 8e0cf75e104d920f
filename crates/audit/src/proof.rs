//! Proofs anyone can check without the database: an inclusion proof bundle
//! for one event, and a consistency proof between two checkpoints.
//!
//! Producing a proof reads the (untrusted) database; checking it needs only
//! the bundle and the log's public key. A bundle whose event, path or
//! checkpoint was altered fails, and the failure says which part.

use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder};
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
    /// The event's RFC 6962 leaf hash, lowercase hex (what the path starts from).
    pub leaf_hash: String,
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
        return Err(ProofFailure::Malformed(format!(
            "{} proof hashes is too many",
            hex.len()
        )));
    }
    hex.iter()
        .map(|h| {
            parse_hash_hex(h).ok_or_else(|| ProofFailure::Malformed(format!("{h:?} is not a hash")))
        })
        .collect()
}

impl InclusionBundle {
    /// Checks the bundle: the checkpoint is signed by `verifier`, the event
    /// hashes to a leaf, and the path leads from that leaf to the signed root.
    pub fn verify(&self, verifier: &CheckpointVerifier) -> Result<SignedCheckpoint, ProofFailure> {
        if self.format != INCLUSION_FORMAT {
            return Err(ProofFailure::Malformed(format!(
                "unknown format {:?}",
                self.format
            )));
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
        if parse_hash_hex(&self.leaf_hash) != Some(leaf) {
            return Err(ProofFailure::LeafContent(format!(
                "the event (request_id {}) does not hash to the bundle's leaf hash: it was altered",
                self.event.request_id
            )));
        }
        let root =
            parse_hash_hex(&cp.root).ok_or_else(|| ProofFailure::Malformed("root".into()))?;
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
    pub fn verify_json(
        text: &str,
        verifier: &CheckpointVerifier,
    ) -> Result<(Self, SignedCheckpoint), ProofFailure> {
        let bundle: Self = serde_json::from_str(text)
            .map_err(|e| ProofFailure::Malformed(format!("bundle: {e}")))?;
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
            return Err(ProofFailure::Fork(format!(
                "two different roots for {} leaves",
                old_cp.size
            )));
        }
        return Ok((old_cp, new_cp));
    }
    let parse = |h: &str| parse_hash_hex(h).ok_or_else(|| ProofFailure::Malformed("root".into()));
    let proof = hashes(proof)?;
    tlog_tiles::check_tree(
        &proof,
        new_cp.size,
        parse(&new_cp.root)?,
        old_cp.size,
        parse(&old_cp.root)?,
    )
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
    pub fn verify(
        &self,
        verifier: &CheckpointVerifier,
    ) -> Result<(SignedCheckpoint, SignedCheckpoint), ProofFailure> {
        if self.format != CONSISTENCY_FORMAT {
            return Err(ProofFailure::Malformed(format!(
                "unknown format {:?}",
                self.format
            )));
        }
        verify_consistency(&self.old, &self.new, &self.proof, verifier)
    }
}

/// The latest stored checkpoint note, if any.
pub async fn latest_checkpoint_note(db: &DatabaseConnection) -> Result<Option<String>, AuditError> {
    Ok(latest_checkpoint(db).await?.map(|c| c.note))
}

/// The inclusion proof bundle for the newest tool-call event with
/// `request_id` (or, when it has none, its newest event), against the latest
/// checkpoint.
pub async fn prove_inclusion(
    db: &DatabaseConnection,
    request_id: &str,
) -> Result<InclusionBundle, AuditError> {
    // The newest tool-call event of the request (its approval's admin
    // events share the request id), else its newest event of any kind.
    let newest = |kind: Option<&'static str>| {
        let mut select = audit_events::Entity::find()
            .filter(audit_events::Column::RequestId.eq(request_id))
            .order_by_desc(audit_events::Column::Id);
        if let Some(kind) = kind {
            select = select.filter(audit_events::Column::Kind.eq(kind));
        }
        select.one(db)
    };
    let row = match newest(Some("tool_call")).await? {
        Some(row) => Some(row),
        None => newest(None).await?,
    }
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
    let event = StoredEvent::from_model(&row);
    Ok(InclusionBundle {
        format: INCLUSION_FORMAT.to_owned(),
        leaf_hash: hash_hex(&event.leaf_hash()?),
        event,
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
        None => latest_checkpoint(db)
            .await?
            .ok_or_else(|| AuditError::NotCheckpointed {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod properties {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::checkpoint::CheckpointSigner;
    use crate::tree::{Frontier, MapReader};

    fn event(i: usize, salt: u8) -> StoredEvent {
        StoredEvent {
            id: uuid::Uuid::from_u128(i as u128),
            request_id: format!("req-{i}-{salt}"),
            kind: "tool_call".into(),
            timestamp: chrono::DateTime::from_timestamp_micros(1_790_000_000_000_000 + i as i64)
                .unwrap(),
            caller_id: "agent".into(),
            api_key_id: None,
            method: "tools/call".into(),
            tool_name: None,
            decision: "ALLOW".into(),
            reason: None,
            raw_args_hash: format!("{i:064x}"),
            sanitized_args: json!({"i": i, "salt": salt}),
            redaction_flags: json!([]),
            risk_labels: json!([]),
            status_code: None,
            latency_ms: None,
        }
    }

    fn flip(hex: &str, bit: usize) -> String {
        let mut h = parse_hash_hex(hex).unwrap();
        h.0[(bit / 8) % 32] ^= 1 << (bit % 8);
        hash_hex(&h)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random appends with checkpoints at random points: every inclusion
        /// proof verifies against every later checkpoint, every consistency
        /// proof between two checkpoints verifies, and a flipped bit in a
        /// proof hash, a root or the event fails.
        #[test]
        fn proofs_verify_and_flipped_bits_fail(
            batches in prop::collection::vec(1usize..12, 1..5),
            salt in any::<u8>(),
            bit in 0usize..256,
        ) {
            let signer = CheckpointSigner::generate("prop.warden/audit").unwrap().1;
            let verifier = signer.verifier().unwrap();
            let mut frontier = Frontier::empty();
            let mut stored = HashMap::new();
            let mut events = Vec::new();
            let mut notes = Vec::new();
            for batch in batches {
                for _ in 0..batch {
                    let e = event(events.len(), salt);
                    stored.extend(frontier.push(e.leaf_hash().unwrap()));
                    events.push(e);
                }
                notes.push((frontier.size(), signer.sign(frontier.size(), &frontier.root()).unwrap()));
            }
            let mem = MapReader(stored);
            for (size, note) in &notes {
                for i in 0..*size {
                    let event = events[i as usize].clone();
                    let bundle = InclusionBundle {
                        format: INCLUSION_FORMAT.into(),
                        leaf_hash: hash_hex(&event.leaf_hash().unwrap()),
                        event,
                        leaf_index: i,
                        tree_size: *size,
                        proof: tlog_tiles::prove_record(*size, i, &mem).unwrap().iter().map(hash_hex).collect(),
                        checkpoint: note.clone(),
                    };
                    prop_assert!(bundle.verify(&verifier).is_ok());
                    if !bundle.proof.is_empty() {
                        let mut bad = bundle.clone();
                        let k = bit % bad.proof.len();
                        bad.proof[k] = flip(&bad.proof[k], bit);
                        prop_assert!(bad.verify(&verifier).is_err());
                    }
                    let mut bad = bundle.clone();
                    bad.event.sanitized_args = json!({"i": i, "salt": salt.wrapping_add(1)});
                    prop_assert!(bad.verify(&verifier).is_err());
                }
            }
            for (m, old) in &notes {
                for (n, new) in notes.iter().filter(|(n, _)| n > m) {
                    let proof: Vec<String> = tlog_tiles::prove_tree(*n, *m, &mem).unwrap().iter().map(hash_hex).collect();
                    prop_assert!(verify_consistency(old, new, &proof, &verifier).is_ok());
                    prop_assert!(matches!(verify_consistency(new, old, &proof, &verifier), Err(ProofFailure::Rollback(_))));
                    if !proof.is_empty() {
                        let mut bad = proof.clone();
                        let k = bit % bad.len();
                        bad[k] = flip(&bad[k], bit);
                        prop_assert!(verify_consistency(old, new, &bad, &verifier).is_err());
                    }
                    // A checkpoint whose root has a flipped bit is refused (signature).
                    let cp = SignedCheckpoint::open(new, &verifier).unwrap();
                    let forged = new.replacen(&base64_root(&cp.root), &base64_root(&flip(&cp.root, bit)), 1);
                    prop_assert!(verify_consistency(old, &forged, &proof, &verifier).is_err());
                }
            }
        }

        /// Arbitrary text never panics the bundle, note or key parsers.
        #[test]
        fn hostile_text_never_panics(text in ".{0,400}") {
            let signer = CheckpointSigner::generate("prop.warden/audit").unwrap().1;
            let verifier = signer.verifier().unwrap();
            let _ = InclusionBundle::verify_json(&text, &verifier);
            let _ = SignedCheckpoint::open(&text, &verifier);
            let _ = SignedCheckpoint::open_unverified(&text);
            let _ = CheckpointVerifier::parse(&text);
            let _ = CheckpointSigner::from_key_text(&text);
            let _ = verify_consistency(&text, &text, std::slice::from_ref(&text), &verifier);
        }
    }

    fn base64_root(hex: &str) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(parse_hash_hex(hex).unwrap().0)
    }
}
