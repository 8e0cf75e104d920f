# Common tasks. Install just with `pip install rust-just` (or `cargo install just`).

# Start local PostgreSQL, Redis and the OpenTelemetry collector (Docker).
up:
    docker compose up -d

# Stop them (data volumes are kept).
down:
    docker compose down

# Apply pending migrations to DATABASE_URL (from the environment or .env).
migrate *ARGS="up":
    cargo run -p migration -- {{ARGS}}

# README's test command: brings up PostgreSQL and Redis, runs every test.
test *ARGS:
    scripts/test.sh {{ARGS}}

# Formatting and lints, as CI checks them.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings

# Check storage health (PASS/FAIL per database, cache, migrations); exit 1 on FAIL.
health *ARGS:
    cargo run -p warden-cli -- health {{ARGS}}

# Load the policy file and create the dev-agent key (printed once).
seed:
    cargo run -p warden-cli -- seed

# The whole flow on the embedded default (or DATABASE_URL/REDIS_URL when set).
demo:
    cargo run -p warden-cli -- demo

# Benchmarks against raw-driver baselines (needs PostgreSQL + Redis; see BENCHMARKS.md).
bench *ARGS:
    cargo run --release -p warden-bench -- {{ARGS}}

# Fuzz the canonical hasher + redactor for N seconds (default 120).
fuzz SECONDS="120":
    scripts/fuzz.sh {{SECONDS}}
