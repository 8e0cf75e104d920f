#!/usr/bin/env bash
# The test command: brings up PostgreSQL and Redis (installing them if needed),
# then runs every crate's tests against them. Extra arguments go to the runner.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh

export WARDEN_TEST_POSTGRES_URL="${WARDEN_TEST_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
export WARDEN_TEST_REDIS_URL="${WARDEN_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
# The shared test Redis Cluster (3 primaries + 3 replicas on 7101-7106).
WARDEN_TEST_REDIS_CLUSTER_URL="${WARDEN_TEST_REDIS_CLUSTER_URL:-$(scripts/redis-cluster.sh)}"
export WARDEN_TEST_REDIS_CLUSTER_URL
# Prometheus's checker for the /metrics tests (services.sh unpacks it if needed).
if [ -z "${WARDEN_TEST_PROMTOOL:-}" ]; then
    WARDEN_TEST_PROMTOOL="$(command -v promtool || echo "$PWD/.cache/promtool/usr/bin/promtool")"
fi
export WARDEN_TEST_PROMTOOL
# The console's real-browser test drives headless Chromium through chromedriver.
export WARDEN_TEST_CHROMEDRIVER="${WARDEN_TEST_CHROMEDRIVER:-$(command -v chromedriver || echo /usr/bin/chromedriver)}"
# The gateway tests' independent MCP client and reference server (PyPI).
WARDEN_TEST_MCP_PYTHON="${WARDEN_TEST_MCP_PYTHON:-$(scripts/mcp-env.sh)}"
export WARDEN_TEST_MCP_PYTHON
# Tests read no .env: each builds its own settings.
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# Every pass runs even when an earlier one failed; the command fails if any did.
status=0
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doc tests (compile-fail examples live there): run them first,
    # so the run ends on nextest's summary of every other test.
    cargo test --workspace --doc --quiet || status=1
    cargo nextest run --workspace --no-fail-fast "$@" || status=1
    # The audit, approval and key suites once more, every PostgreSQL database
    # reached through PgBouncer in transaction pooling mode (3 server
    # connections): what breaks under transaction pooling fails here.
    # (--workspace with a package filter, not -p: the same feature set as the
    # first pass, so nothing is rebuilt.)
    WARDEN_TEST_VIA_PGBOUNCER=1 cargo nextest run --workspace --no-fail-fast \
        -E '(package(warden-audit) | package(warden-approval) | package(warden-keys)) and not test(/sqlite|in_process/)' || status=1
    # The cache, approval and key suites once more on the Redis Cluster.
    WARDEN_TEST_VIA_REDIS_CLUSTER=1 cargo nextest run --workspace --no-fail-fast \
        -E '(package(warden-cache) | package(warden-approval) | package(warden-keys)) and not test(/sqlite|in_process/)' || status=1
else
    cargo test --workspace --no-fail-fast "$@" -- --test-threads 4 || status=1
    WARDEN_TEST_VIA_PGBOUNCER=1 cargo test --no-fail-fast \
        -p warden-audit -p warden-approval -p warden-keys -- --test-threads 4 || status=1
    WARDEN_TEST_VIA_REDIS_CLUSTER=1 cargo test --no-fail-fast \
        -p warden-cache -p warden-approval -p warden-keys -- --test-threads 4 || status=1
fi
exit "$status"
