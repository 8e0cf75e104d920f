#!/usr/bin/env bash
# Fuzzes the canonical JSON hasher and the redactor, then proof, note and key
# parsing (fuzz/fuzz_targets).
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On a stable toolchain
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its flags; `-s none` skips the
# sanitizer, which needs nightly. Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
mkdir -p corpus/canonical_redact
printf '{"a":{"password":"x","b":[1,2.5,null]}}' > corpus/canonical_redact/seed-json
printf 'Bearer abcdefghijklmnop' > corpus/canonical_redact/seed-text
RUSTC_BOOTSTRAP=1 cargo fuzz run -s none canonical_redact -- \
    -max_total_time="${1:-120}" -print_final_stats=1
mkdir -p corpus/proof_parse
printf 'warden.local/audit\n6\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 warden.local/audit abcd\n' > corpus/proof_parse/seed-note
printf '{"format":"warden-audit-inclusion-proof/v1","leaf_index":0,"tree_size":1,"proof":[]}' > corpus/proof_parse/seed-bundle
RUSTC_BOOTSTRAP=1 cargo fuzz run -s none proof_parse -- \
    -max_total_time="${1:-120}" -print_final_stats=1
