//! The Merkle tree as stored: RFC 6962 hashing over the `stored_hash_index`
//! layout of Go's sumdb/tlog (via `tlog_tiles`), read from
//! `audit_tree_hashes`, and the proofs computed from it.
//!
//! Every stored hash of a complete subtree is written once, when its last
//! leaf arrives, and never changes: the table only grows.

use std::cell::RefCell;
use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};
use tlog_tiles::{HashReader, node_hash, split_stored_hash_index, stored_hash_index};
use warden_entity::{audit_leaves, audit_tree_hashes};

use crate::AuditError;
use crate::leaf::{TreeHash, parse_hash_hex};

/// The largest tree this crate handles (far beyond any real log; keeps index
/// arithmetic clear of overflow on hostile input).
pub const MAX_TREE_SIZE: u64 = 1 << 48;

/// The right edge of a tree: the roots of its complete subtrees, largest
/// first. Enough to append leaves and to compute the root, in O(log n).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Frontier {
    size: u64,
    /// (level, hash), levels strictly decreasing.
    stack: Vec<(u8, TreeHash)>,
}

impl Frontier {
    /// The frontier of the empty tree.
    pub(crate) fn empty() -> Self {
        Self::default()
    }

    /// Number of leaves.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The stored-hash indexes of the complete subtrees of a tree of `size`
    /// leaves, largest subtree first.
    pub(crate) fn indexes(size: u64) -> Vec<(u8, u64)> {
        let mut out = Vec::new();
        let mut start = 0u64;
        for level in (0..64u8).rev() {
            if size & (1u64 << level) != 0 {
                out.push((level, stored_hash_index(level, start >> level)));
                start += 1u64 << level;
            }
        }
        out
    }

    /// Rebuilds a frontier from the stored hashes of `size`'s complete subtrees.
    pub(crate) fn from_stored(size: u64, stored: &HashMap<u64, TreeHash>) -> Option<Self> {
        let mut stack = Vec::new();
        for (level, idx) in Self::indexes(size) {
            stack.push((level, *stored.get(&idx)?));
        }
        Some(Self { size, stack })
    }

    /// Appends one leaf; returns the stored hashes it completes, as
    /// (stored-hash index, hash), in increasing index order: the leaf itself,
    /// then every subtree that the leaf closes.
    pub(crate) fn push(&mut self, leaf: TreeHash) -> Vec<(u64, TreeHash)> {
        let n = self.size;
        let mut out = vec![(stored_hash_index(0, n), leaf)];
        self.stack.push((0, leaf));
        while self.stack.len() >= 2 {
            let (rl, right) = self.stack[self.stack.len() - 1];
            let (ll, left) = self.stack[self.stack.len() - 2];
            if rl != ll {
                break;
            }
            self.stack.truncate(self.stack.len() - 2);
            let level = rl + 1;
            let hash = node_hash(left, right);
            out.push((stored_hash_index(level, n >> level), hash));
            self.stack.push((level, hash));
        }
        self.size += 1;
        out
    }

    /// The RFC 6962 root hash of the tree.
    pub(crate) fn root(&self) -> TreeHash {
        let mut iter = self.stack.iter().rev();
        let Some((_, mut hash)) = iter.next().copied() else {
            return tlog_tiles::EMPTY_HASH;
        };
        for (_, left) in iter {
            hash = node_hash(*left, hash);
        }
        hash
    }
}

fn parse_stored(idx: i64, text: &str) -> Result<TreeHash, AuditError> {
    parse_hash_hex(text).ok_or_else(|| AuditError::CorruptTree {
        reason: format!("stored hash {idx} is not 64 hex digits"),
    })
}

/// Reads stored hashes by stored-hash index: level 0 from `audit_leaves`,
/// higher levels from `audit_tree_hashes`. Missing indexes are simply absent
/// from the map.
pub(crate) async fn read_hashes<C: ConnectionTrait>(
    db: &C,
    indexes: &[u64],
) -> Result<HashMap<u64, TreeHash>, AuditError> {
    let mut out = HashMap::with_capacity(indexes.len());
    let mut leaves: Vec<(i64, u64)> = Vec::new();
    let mut interior: Vec<i64> = Vec::new();
    for &idx in indexes {
        let (level, n) = split_stored_hash_index(idx);
        if level == 0 {
            if let Ok(n) = i64::try_from(n) {
                leaves.push((n, idx));
            }
        } else if let Ok(i) = i64::try_from(idx) {
            interior.push(i);
        }
    }
    for chunk in leaves.chunks(500) {
        let by_leaf: HashMap<i64, u64> = chunk.iter().copied().collect();
        let rows = audit_leaves::Entity::find()
            .filter(audit_leaves::Column::LeafIndex.is_in(chunk.iter().map(|(n, _)| *n)))
            .all(db)
            .await?;
        for row in rows {
            if let Some(idx) = by_leaf.get(&row.leaf_index) {
                out.insert(*idx, parse_stored(row.leaf_index, &row.leaf_hash)?);
            }
        }
    }
    for chunk in interior.chunks(500) {
        let rows = audit_tree_hashes::Entity::find()
            .filter(audit_tree_hashes::Column::Idx.is_in(chunk.iter().copied()))
            .all(db)
            .await?;
        for row in rows {
            out.insert(row.idx as u64, parse_stored(row.idx, &row.hash)?);
        }
    }
    Ok(out)
}

/// A stored interior hash that no tree of `size` leaves has (one belonging
/// to a later leaf), if any: in a log of `size` leaves, a sign of tampering.
pub(crate) async fn hash_beyond<C: ConnectionTrait>(
    db: &C,
    size: u64,
) -> Result<Option<i64>, AuditError> {
    Ok(audit_tree_hashes::Entity::find()
        .select_only()
        .column(audit_tree_hashes::Column::Idx)
        .filter(audit_tree_hashes::Column::Idx.gte(stored_hash_index(0, size) as i64))
        .limit(1)
        .into_tuple()
        .one(db)
        .await?)
}

/// The frontier of the stored tree of `size` leaves.
pub(crate) async fn load_frontier<C: ConnectionTrait>(
    db: &C,
    size: u64,
) -> Result<Frontier, AuditError> {
    let idx: Vec<u64> = Frontier::indexes(size)
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    let stored = read_hashes(db, &idx).await?;
    Frontier::from_stored(size, &stored).ok_or_else(|| AuditError::CorruptTree {
        reason: format!("stored hashes of the tree of size {size} are missing"),
    })
}

/// First pass of a proof: records which stored hashes `tlog_tiles` asks for.
/// The indexes depend only on the tree shape, never on hash values.
#[derive(Default)]
struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![tlog_tiles::EMPTY_HASH; indexes.len()])
    }
}

/// Second pass: answers from hashes read from the database (and, in tests,
/// from hashes kept in memory).
pub(crate) struct MapReader(pub(crate) HashMap<u64, TreeHash>);

impl HashReader for MapReader {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

fn tree_error(e: tlog_tiles::Error) -> AuditError {
    AuditError::CorruptTree {
        reason: e.to_string(),
    }
}

async fn two_pass<C, T>(
    db: &C,
    compute: impl Fn(
        &dyn Fn(&[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error>,
    ) -> Result<T, tlog_tiles::Error>,
) -> Result<T, AuditError>
where
    C: ConnectionTrait,
{
    let recorder = Recorder::default();
    compute(&|idx| recorder.read_hashes(idx)).map_err(tree_error)?;
    let wanted = recorder.0.into_inner();
    let reader = MapReader(read_hashes(db, &wanted).await?);
    compute(&|idx| reader.read_hashes(idx)).map_err(tree_error)
}

/// A hash-reading function, as the two passes of a proof supply it.
type ReadFn<'a> = &'a dyn Fn(&[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error>;

/// Adapts a closure to `tlog_tiles`' reader trait.
struct FnReader<'a>(ReadFn<'a>);

impl HashReader for FnReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<TreeHash>, tlog_tiles::Error> {
        (self.0)(indexes)
    }
}

fn check_size(size: u64) -> Result<(), AuditError> {
    if size > MAX_TREE_SIZE {
        return Err(AuditError::InvalidField {
            field: "tree_size",
            reason: format!("{size} is beyond the supported {MAX_TREE_SIZE}"),
        });
    }
    Ok(())
}

/// The root hash of the stored tree's first `size` leaves.
pub(crate) async fn root_at<C: ConnectionTrait>(db: &C, size: u64) -> Result<TreeHash, AuditError> {
    check_size(size)?;
    two_pass(db, |r| tlog_tiles::tree_hash(size, &FnReader(r))).await
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves.
pub(crate) async fn inclusion_proof<C: ConnectionTrait>(
    db: &C,
    size: u64,
    index: u64,
) -> Result<Vec<TreeHash>, AuditError> {
    check_size(size)?;
    if index >= size {
        return Err(AuditError::InvalidField {
            field: "leaf_index",
            reason: format!("leaf {index} is not in a tree of {size} leaves"),
        });
    }
    two_pass(db, |r| tlog_tiles::prove_record(size, index, &FnReader(r))).await
}

/// The consistency proof from the tree of `old` leaves to the tree of `new`.
pub(crate) async fn consistency_proof<C: ConnectionTrait>(
    db: &C,
    old: u64,
    new: u64,
) -> Result<Vec<TreeHash>, AuditError> {
    check_size(new)?;
    if old == 0 || old > new {
        return Err(AuditError::InvalidField {
            field: "tree_size",
            reason: format!("no consistency proof from {old} leaves to {new}"),
        });
    }
    two_pass(db, |r| tlog_tiles::prove_tree(new, old, &FnReader(r))).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The frontier writes exactly the stored hashes `tlog_tiles` would, and
    /// its root is `tlog_tiles`' tree hash, for every size up to 300.
    #[test]
    fn frontier_matches_tlog_tiles() {
        let mut f = Frontier::empty();
        let mut mem = MapReader(HashMap::new());
        for n in 0..300u64 {
            let leaf = tlog_tiles::record_hash(&n.to_be_bytes());
            let expected = tlog_tiles::stored_hashes_for_record_hash(n, leaf, &mem).unwrap();
            let got = f.push(leaf);
            assert_eq!(got.len(), expected.len());
            for (i, (idx, h)) in got.iter().enumerate() {
                assert_eq!(*idx, mem.0.len() as u64 + i as u64);
                assert_eq!(*h, expected[i]);
            }
            let first = mem.0.len() as u64;
            mem.0.extend((first..).zip(expected));
            assert_eq!(f.root(), tlog_tiles::tree_hash(n + 1, &mem).unwrap());
            assert_eq!(Frontier::from_stored(n + 1, &mem.0).unwrap(), f);
        }
    }

    fn decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// RFC 6962 test vectors (certificate-transparency's `merkle_tree_test`):
    /// the roots of the first 1..=8 of its eight inputs.
    #[test]
    fn rfc6962_roots() {
        let inputs = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut f = Frontier::empty();
        for (input, root) in inputs.iter().zip(roots) {
            f.push(tlog_tiles::record_hash(&decode(input)));
            assert_eq!(crate::leaf::hash_hex(&f.root()), root);
        }
    }
}

/// Cross-checks against `tests/data/rfc6962.py`, an independent
/// implementation written from RFC 6962 (needs `python3`).
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod independent {
    use std::collections::HashMap;
    use std::io::Write;

    use serde_json::{Value, json};

    use super::*;
    use crate::leaf::{StoredEvent, hash_hex};

    fn events(n: usize) -> Vec<StoredEvent> {
        (0..n)
            .map(|i| StoredEvent {
                id: uuid::Uuid::from_u128(0x0191_f6c2_0000_7000_8000_0000_0000_0000 + i as u128),
                request_id: format!("req-{i}"),
                kind: if i % 7 == 3 { "prune" } else { "tool_call" }.into(),
                timestamp: chrono::DateTime::from_timestamp_micros(
                    1_790_000_000_000_000 + i as i64 * 1_234_567,
                )
                .unwrap(),
                caller_id: format!("agent-{}", i % 3),
                api_key_id: (i % 2 == 0).then(|| uuid::Uuid::from_u128(i as u128 + 7)),
                method: "tools/call".into(),
                tool_name: (i % 4 != 0).then(|| "db.query".into()),
                decision: "ALLOW".into(),
                reason: (i % 3 == 0).then(|| format!("reason é {i}")),
                raw_args_hash: format!("{i:064x}"),
                sanitized_args: json!({"b": [1, 2.5, null], "a": {"z": "x", "y": i}, "ünï": true}),
                redaction_flags: json!([{"path": "$.a", "reason": "key:password"}]),
                risk_labels: json!(["read"]),
                status_code: (i % 5 != 0).then_some(200),
                latency_ms: Some(i as i64 - 3),
            })
            .collect()
    }

    #[test]
    fn leaves_roots_and_proofs_match_an_independent_implementation() {
        let events = events(37);
        let sizes: Vec<u64> = vec![1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 37];
        let input = json!({"events": events, "sizes": sizes}).to_string();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc6962.py");
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the independent implementation");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();

        let mut frontier = Frontier::empty();
        let mut stored = HashMap::new();
        let mut roots = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            let leaf = e.leaf_hash().unwrap();
            assert_eq!(theirs["leaves"][i], hash_hex(&leaf), "leaf {i}");
            stored.extend(frontier.push(leaf));
            roots.insert(frontier.size(), frontier.root());
        }
        let mem = MapReader(stored);
        for &n in &sizes {
            assert_eq!(
                theirs["roots"][n.to_string()],
                hash_hex(&roots[&n]),
                "root {n}"
            );
            for i in 0..n {
                let proof = tlog_tiles::prove_record(n, i, &mem).unwrap();
                let hex: Vec<String> = proof.iter().map(hash_hex).collect();
                assert_eq!(
                    theirs["inclusion"][format!("{i}/{n}")],
                    json!(hex),
                    "inclusion {i}/{n}"
                );
            }
            for &m in sizes.iter().filter(|m| **m < n) {
                let proof = tlog_tiles::prove_tree(n, m, &mem).unwrap();
                let hex: Vec<String> = proof.iter().map(hash_hex).collect();
                assert_eq!(
                    theirs["consistency"][format!("{m}/{n}")],
                    json!(hex),
                    "consistency {m}/{n}"
                );
            }
        }
    }
}
