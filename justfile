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

# Check storage health (PASS/FAIL per database, cache, migrations).
health *ARGS:
    cargo run -p warden-cli -- health {{ARGS}}
