#!/usr/bin/env bash
# Fuzzes the canonical JSON hasher and the redactor (canonical_redact), then
# proof, note and key parsing (proof_parse): fuzz/fuzz_targets.
#
# Builds the targets the way cargo-fuzz does (libFuzzer via libfuzzer-sys,
# SanitizerCoverage instrumentation, debug assertions; no sanitizer, which
# would need a nightly toolchain) with plain cargo on the stable toolchain,
# so nothing has to be installed. CI runs it for a short, bounded time.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 120)
# A crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-120}"

# The instrumented release build of every dependency is the slow part (about
# 5 minutes on 2 cores): it is kept in the machine's cache, outside the
# checkout, so later runs (a fresh clone in CI included) rebuild only what
# changed. FUZZ_TARGET_DIR overrides.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/warden-tools/fuzz-target}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
-Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers"
# An explicit --target keeps the instrumentation flags off build scripts and
# proc macros (they run on the host and are not linked against libFuzzer).
triple="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --release --locked --bins --target "$triple"

mkdir -p corpus/canonical_redact corpus/proof_parse artifacts/canonical_redact artifacts/proof_parse
printf '{"a":{"password":"x","b":[1,2.5,null]}}' > corpus/canonical_redact/seed-json
printf 'Bearer abcdefghijklmnop' > corpus/canonical_redact/seed-text
printf 'warden.local/audit\n6\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u2014 warden.local/audit abcd\n' > corpus/proof_parse/seed-note
printf '{"format":"warden-audit-inclusion-proof/v1","leaf_index":0,"tree_size":1,"proof":[]}' > corpus/proof_parse/seed-bundle

for target in canonical_redact proof_parse; do
    echo "fuzz: $target for ${seconds}s" >&2
    "$CARGO_TARGET_DIR/$triple/release/$target" \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="artifacts/$target/" "corpus/$target"
done
