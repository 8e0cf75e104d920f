//! Checkpoints: the tree head in the C2SP tlog-checkpoint format, signed as a
//! C2SP signed note with Ed25519, and published without blocking writers.
//!
//! Guarantees: a [`CheckpointSigner`]'s secret never appears in `Debug`,
//! logs or errors; [`SignedCheckpoint::open`] accepts a note only when the
//! given verifier key signed it and its origin is the key's name, so a
//! checkpoint re-signed with another key, or edited after signing, is
//! refused.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tracing::{debug, warn};

use crate::AuditError;
use crate::leaf::{TreeHash, hash_hex};

/// The origin line used when none is configured.
pub const DEFAULT_ORIGIN: &str = "warden.local/audit";

/// Why a checkpoint or a proof was refused. Each names what failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofFailure {
    /// The input is not a well-formed note, checkpoint or bundle.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The signature does not verify under the given public key (forged, or
    /// signed by another key).
    #[error("signature: {0}")]
    Signature(String),
    /// The event content does not hash to the leaf the proof is for.
    #[error("leaf content: {0}")]
    LeafContent(String),
    /// The proof hashes do not lead to the checkpoint's root.
    #[error("path: {0}")]
    Path(String),
    /// The newer checkpoint is smaller than the older one.
    #[error("rollback: {0}")]
    Rollback(String),
    /// Two checkpoints that cannot both be views of one append-only log.
    #[error("fork: {0}")]
    Fork(String),
}

/// A public key that checks checkpoint signatures, in signed-note verifier
/// key form (`<name>+<key id>+<base64 key>`).
pub struct CheckpointVerifier {
    text: String,
    name: String,
}

impl fmt::Debug for CheckpointVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CheckpointVerifier")
            .field(&self.text)
            .finish()
    }
}

impl CheckpointVerifier {
    /// Parses a verifier key (as printed by `warden audit keygen`).
    pub fn parse(text: &str) -> Result<Self, ProofFailure> {
        let text = text.trim();
        StandardVerifier::new(text)
            .map_err(|e| ProofFailure::Malformed(format!("public key: {e}")))?;
        let name = text.split('+').next().unwrap_or_default().to_owned();
        Ok(Self {
            text: text.to_owned(),
            name,
        })
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key's name: the origin of the log it signs for.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An Ed25519 checkpoint signing key. `Debug` never shows the secret.
#[derive(Clone)]
pub struct CheckpointSigner {
    signer: Arc<StandardSigner>,
    origin: String,
    verifier: String,
}

impl PartialEq for CheckpointSigner {
    fn eq(&self, other: &Self) -> bool {
        self.verifier == other.verifier
    }
}

impl Eq for CheckpointSigner {}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("origin", &self.origin)
            .field("verifier_key", &self.verifier)
            .field("secret", &"[redacted]")
            .finish()
    }
}

fn key_error(reason: impl Into<String>) -> AuditError {
    AuditError::SigningKey {
        reason: reason.into(),
    }
}

fn valid_origin(origin: &str) -> bool {
    !origin.is_empty() && !origin.chars().any(|c| c.is_whitespace() || c == '+')
}

impl CheckpointSigner {
    /// A new random key for `origin`: (secret key text, signer). The text is
    /// what a key file holds; show it to nobody.
    pub fn generate(origin: &str) -> Result<(String, Self), AuditError> {
        if !valid_origin(origin) {
            return Err(key_error(format!(
                "origin {origin:?} must be non-empty, without spaces or '+'"
            )));
        }
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| key_error(format!("no randomness: {e}")))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        seed.fill(0);
        let mut pubkey = vec![1u8];
        pubkey.extend_from_slice(signing.verifying_key().as_bytes());
        let mut private = vec![1u8];
        private.extend_from_slice(signing.as_bytes());
        let text = format!(
            "PRIVATE+KEY+{origin}+{:08x}+{}",
            signed_note::key_id(origin, &pubkey),
            base64::engine::general_purpose::STANDARD.encode(&private)
        );
        private.fill(0);
        let signer = Self::from_key_text(&text)?;
        Ok((text, signer))
    }

    /// A signer from the secret key text of a key file.
    pub fn from_key_text(text: &str) -> Result<Self, AuditError> {
        let text = text.trim();
        let signer = StandardSigner::new(text)
            .map_err(|e| key_error(format!("not a signed-note Ed25519 key: {e}")))?;
        let origin = text.split('+').nth(2).unwrap_or_default().to_owned();
        // PRIVATE+KEY+<name>+<id>+<base64>: base64 itself may contain '+'.
        let b64 = text.splitn(5, '+').nth(4).unwrap_or_default();
        let mut private = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| key_error("key is not base64"))?;
        let seed: [u8; 32] = private
            .get(1..33)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| key_error("key has the wrong length"))?;
        private.fill(0);
        let verifying = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let verifier = signed_note::new_ed25519_verifier_key(&origin, &verifying);
        Ok(Self {
            signer: Arc::new(signer),
            origin,
            verifier,
        })
    }

    /// Loads the key file at `path`.
    pub fn load(path: &Path) -> Result<Self, AuditError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| key_error(format!("cannot read {}: {e}", path.display())))?;
        Self::from_key_text(&text)
    }

    /// The log's origin (the key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The public verifier key to hand to auditors.
    pub fn verifier_key(&self) -> &str {
        &self.verifier
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Result<CheckpointVerifier, AuditError> {
        CheckpointVerifier::parse(&self.verifier).map_err(|e| key_error(e.to_string()))
    }

    /// Signs the checkpoint of a tree of `size` leaves with `root`.
    pub(crate) fn sign(&self, size: u64, root: &TreeHash) -> Result<String, AuditError> {
        let text = checkpoint_text(&self.origin, size, root)?;
        let mut note = Note::new(text.as_bytes(), &[]).map_err(|e| key_error(e.to_string()))?;
        note.add_sigs(&[self.signer.as_ref()])
            .map_err(|e| key_error(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| key_error(e.to_string()))
    }
}

/// The checkpoint body: origin, size, base64 root, each on its own line.
pub(crate) fn checkpoint_text(
    origin: &str,
    size: u64,
    root: &TreeHash,
) -> Result<String, AuditError> {
    let cp = tlog_tiles::Checkpoint::new(origin, size, *root, "")
        .map_err(|e| key_error(format!("checkpoint: {e}")))?;
    String::from_utf8(cp.to_bytes()).map_err(|e| key_error(e.to_string()))
}

/// A checkpoint whose fields were read from a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The log's origin line.
    pub origin: String,
    /// Leaves the checkpoint commits to.
    pub size: u64,
    /// The root hash, lowercase hex.
    pub root: String,
    /// The note as published.
    pub note: String,
}

impl SignedCheckpoint {
    /// Opens `note`: it must be signed by `verifier`, its origin must be the
    /// verifier's name, and its body a well-formed checkpoint.
    pub fn open(note: &str, verifier: &CheckpointVerifier) -> Result<Self, ProofFailure> {
        let parsed = Note::from_bytes(note.as_bytes())
            .map_err(|e| ProofFailure::Malformed(format!("signed note: {e}")))?;
        let v = StandardVerifier::new(verifier.as_str())
            .map_err(|e| ProofFailure::Malformed(format!("public key: {e}")))?;
        parsed
            .verify(&VerifierList::new(vec![Box::new(v)]))
            .map_err(|e| {
                ProofFailure::Signature(format!("not signed by {}: {e}", verifier.name()))
            })?;
        let cp = Self::body(parsed.text(), note)?;
        if cp.origin != verifier.name() {
            return Err(ProofFailure::Signature(format!(
                "checkpoint origin {:?} is not the key's name {:?}",
                cp.origin,
                verifier.name()
            )));
        }
        Ok(cp)
    }

    /// [`SignedCheckpoint::open`] when a verifier is given, else
    /// [`SignedCheckpoint::open_unverified`] (a log run without a key).
    pub fn open_with(
        note: &str,
        verifier: Option<&CheckpointVerifier>,
    ) -> Result<Self, ProofFailure> {
        match verifier {
            Some(v) => Self::open(note, v),
            None => Self::open_unverified(note),
        }
    }

    /// Reads the body of a stored note without checking any signature (for
    /// logs run without a signing key). Never use this on untrusted input.
    pub fn open_unverified(note: &str) -> Result<Self, ProofFailure> {
        let text = match Note::from_bytes(note.as_bytes()) {
            Ok(parsed) => parsed.text().to_vec(),
            Err(_) => note.as_bytes().to_vec(),
        };
        Self::body(&text, note)
    }

    fn body(text: &[u8], note: &str) -> Result<Self, ProofFailure> {
        let cp = tlog_tiles::Checkpoint::from_bytes(text)
            .map_err(|e| ProofFailure::Malformed(format!("checkpoint: {e}")))?;
        Ok(Self {
            origin: cp.origin().to_owned(),
            size: cp.size(),
            root: hash_hex(cp.hash()),
            note: note.to_owned(),
        })
    }
}

/// Where checkpoints go besides the database: a file that always holds the
/// latest note, and/or a URL that gets each note POSTed. Publishing never
/// blocks integration; a failure is logged and retried with the next note.
#[derive(Clone, Default)]
pub struct CheckpointPublisher {
    file: Option<PathBuf>,
    url: Option<(String, reqwest::Client)>,
}

impl PartialEq for CheckpointPublisher {
    fn eq(&self, other: &Self) -> bool {
        self.file == other.file
            && self.url.as_ref().map(|(u, _)| u) == other.url.as_ref().map(|(u, _)| u)
    }
}

impl Eq for CheckpointPublisher {}

impl fmt::Debug for CheckpointPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the origin of the URL: a path or query may carry a token.
        let origin = self.url.as_ref().map(|(u, _)| url_origin(u));
        f.debug_struct("CheckpointPublisher")
            .field("file", &self.file)
            .field("url", &origin)
            .finish()
    }
}

impl CheckpointPublisher {
    /// From `AUDIT_CHECKPOINT_PUBLISH`-style targets: each is an `http(s)://`
    /// URL or a file path.
    pub fn new(targets: &[String]) -> Result<Self, AuditError> {
        let mut out = Self::default();
        for target in targets.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            if target.starts_with("http://") || target.starts_with("https://") {
                let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| key_error(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore {
                    roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
                })
                .with_no_client_auth();
                let client = reqwest::Client::builder()
                    .tls_backend_preconfigured(tls)
                    .timeout(Duration::from_secs(5))
                    .connect_timeout(Duration::from_secs(5))
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(|e| key_error(e.to_string()))?;
                out.url = Some((target.to_owned(), client));
            } else {
                out.file = Some(PathBuf::from(target));
            }
        }
        Ok(out)
    }

    /// The publish file, if one is configured.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// True when there is somewhere to publish.
    pub fn is_enabled(&self) -> bool {
        self.file.is_some() || self.url.is_some()
    }

    /// Publishes `note` in the background; the handle lets a caller that is
    /// about to exit wait for it.
    pub(crate) fn publish(&self, note: String) -> Option<tokio::task::JoinHandle<()>> {
        if !self.is_enabled() {
            return None;
        }
        let this = self.clone();
        Some(tokio::spawn(async move {
            if let Some(path) = this.file.clone() {
                let text = note.clone();
                let written =
                    tokio::task::spawn_blocking(move || write_atomically(&path, &text)).await;
                match written {
                    Ok(Ok(())) => debug!("checkpoint written to the publish file"),
                    Ok(Err(e)) => warn!(error = %e, "checkpoint publish file not written"),
                    Err(e) => warn!(error = %e, "checkpoint publish task failed"),
                }
            }
            if let Some((url, client)) = &this.url {
                match client
                    .post(url)
                    .header("content-type", "text/plain; charset=utf-8")
                    .body(note)
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => debug!("checkpoint POSTed"),
                    Ok(r) => warn!(
                        status = r.status().as_u16(),
                        target = %url_origin(url),
                        "checkpoint POST refused"
                    ),
                    // Without the URL: its path or query may carry a token.
                    Err(e) => {
                        warn!(error = %e.without_url(), target = %url_origin(url), "checkpoint POST failed")
                    }
                }
            }
        }))
    }
}

/// `scheme://host[:port]` of a URL, for logs.
fn url_origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = host.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}")
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_open() {
        let (secret, signer) = CheckpointSigner::generate("example.com/log").unwrap();
        assert!(!format!("{signer:?}").contains(&secret[20..]));
        let root = tlog_tiles::record_hash(b"x");
        let note = signer.sign(7, &root).unwrap();
        let verifier = signer.verifier().unwrap();
        let cp = SignedCheckpoint::open(&note, &verifier).unwrap();
        assert_eq!((cp.size, cp.root.as_str()), (7, hash_hex(&root).as_str()));
        // Reloaded from its text, the key signs the same way.
        let again = CheckpointSigner::from_key_text(&secret).unwrap();
        assert_eq!(again.verifier_key(), signer.verifier_key());
        // Another key's signature is refused.
        let (_, other) = CheckpointSigner::generate("example.com/log").unwrap();
        let forged = other.sign(7, &root).unwrap();
        assert!(matches!(
            SignedCheckpoint::open(&forged, &verifier),
            Err(ProofFailure::Signature(_))
        ));
        // An edited body is refused.
        let edited = note.replacen("\n7\n", "\n8\n", 1);
        assert!(SignedCheckpoint::open(&edited, &verifier).is_err());
    }

    #[test]
    fn publish_url_secrets_never_show() {
        let p =
            CheckpointPublisher::new(&["https://user:pw@witness.example/add?token=s3cret".into()])
                .unwrap();
        let shown = format!("{p:?}");
        assert!(
            shown.contains("witness.example") && !shown.contains("s3cret") && !shown.contains("pw"),
            "{shown}"
        );
    }
}
