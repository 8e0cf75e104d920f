//! Fuzzes what an auditor feeds Warden from outside: inclusion bundles,
//! consistency inputs, checkpoint notes and public keys. Parsing and
//! checking must never panic, and nothing arbitrary may verify.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use warden_audit::{
    CheckpointSigner, CheckpointVerifier, InclusionBundle, SignedCheckpoint, verify_consistency,
};

fn verifier() -> &'static CheckpointVerifier {
    static V: OnceLock<CheckpointVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let (_, signer) = CheckpointSigner::generate("fuzz.warden/audit").expect("key");
        signer.verifier().expect("verifier")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let v = verifier();
    assert!(InclusionBundle::verify_json(&text, v).is_err(), "an arbitrary bundle verified");
    assert!(SignedCheckpoint::open(&text, v).is_err(), "an arbitrary note verified");
    let _ = SignedCheckpoint::open_unverified(&text);
    let _ = CheckpointVerifier::parse(&text);
    let _ = CheckpointSigner::from_key_text(&text);
    let mid = (0..=text.len() / 2).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    let (a, b) = text.split_at(mid);
    let proof: Vec<String> = b.split(',').map(str::to_owned).collect();
    assert!(verify_consistency(a, b, &proof, v).is_err());
});
