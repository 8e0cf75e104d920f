#!/usr/bin/env bash
# Makes sure PostgreSQL and Redis are installed and answering on 127.0.0.1, as
# the test suite expects. Installs them with apt-get when missing, starts them
# when stopped, and gives the `postgres` role the password the tests use when
# the server asks for one. Safe to run any number of times.
#
#   PostgreSQL: 127.0.0.1:5432, role postgres / password postgres (or trust auth)
#   Redis:      127.0.0.1:6379, no persistence
#   PgBouncer:  1.21+ for the transaction-pooling tests (built into .cache/pgbouncer
#               from Debian's source when the installed one is older)
#   Chromium:   chromium + chromium-driver (Debian) for the console's browser test
#   promtool:   Prometheus's own checker of the /metrics text (unpacked from
#               Debian's prometheus package into .cache/promtool, nothing started)
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

pg_bin_dir() {
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

# PgBouncer for the transaction-pooling tests must be 1.21 or later (its
# protocol-level prepared statements carry sqlx's named statements across
# transactions). Prints the path of one, if any.
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
pgbouncer_dir="$repo_root/.cache/pgbouncer"
recent_pgbouncer() {
    local candidate version
    for candidate in "${WARDEN_TEST_PGBOUNCER:-}" "$pgbouncer_dir/bin/pgbouncer" \
        /usr/sbin/pgbouncer /usr/bin/pgbouncer; do
        [ -n "$candidate" ] && [ -x "$candidate" ] || continue
        version=$("$candidate" --version 2>/dev/null | awk 'NR==1 {print $2}')
        if [ -n "$version" ] && [ "$(printf '%s\n1.21\n' "$version" | sort -V | head -n 1)" = 1.21 ]; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# Debian bookworm ships PgBouncer 1.18; build Debian trixie's 1.24.1 source
# (from Debian's archive, checksum-pinned) into .cache/pgbouncer instead.
machine_cache="${XDG_CACHE_HOME:-$HOME/.cache}/warden-tools"
build_pgbouncer() {
    local version=1.24.1
    if recent_pgbouncer >/dev/null; then
        # Keep the machine's copy for fresh checkouts.
        if [ -x "$pgbouncer_dir/bin/pgbouncer" ] && [ ! -e "$machine_cache/pgbouncer-$version" ]; then
            mkdir -p "$machine_cache" && cp -a "$pgbouncer_dir" "$machine_cache/pgbouncer-$version" || true
        fi
        return
    fi
    # Built once per machine: a fresh checkout copies the machine's build.
    if [ -x "$machine_cache/pgbouncer-$version/bin/pgbouncer" ]; then
        mkdir -p "$(dirname "$pgbouncer_dir")"
        rm -rf "$pgbouncer_dir"
        cp -a "$machine_cache/pgbouncer-$version" "$pgbouncer_dir"
        if recent_pgbouncer >/dev/null; then return; fi
    fi
    local sha256=da72a3aba13072876d055a3e58dd4aba4a5de4ed6148e73033185245598fd3e0
    local url="http://deb.debian.org/debian/pool/main/p/pgbouncer/pgbouncer_${version}.orig.tar.gz"
    local work
    work=$(mktemp -d)
    log "building PgBouncer $version (Debian's source) into $pgbouncer_dir"
    curl -fsSL --retry 3 -o "$work/src.tar.gz" "$url"
    echo "$sha256  $work/src.tar.gz" | sha256sum -c --quiet
    tar -xzf "$work/src.tar.gz" -C "$work"
    (cd "$work/pgbouncer-$version" &&
        ./configure --prefix="$pgbouncer_dir" --without-cares --with-openssl >/dev/null &&
        make -j"$(nproc)" >/dev/null && make install >/dev/null)
    rm -rf "$work"
    recent_pgbouncer >/dev/null || { log "the PgBouncer build did not produce a usable binary"; exit 1; }
    mkdir -p "$machine_cache"
    rm -rf "$machine_cache/pgbouncer-$version"
    cp -a "$pgbouncer_dir" "$machine_cache/pgbouncer-$version" || true
}

# promtool (Prometheus's exposition-format checker) for the /metrics tests:
# the one on PATH, else the binary unpacked from Debian's prometheus package
# (the package itself is not installed: no service, no user, no web assets).
promtool_dir="$repo_root/.cache/promtool"
unpack_promtool() {
    if command -v promtool >/dev/null 2>&1 || [ -x "$promtool_dir/usr/bin/promtool" ]; then
        return
    fi
    local work
    work=$(mktemp -d)
    log "unpacking promtool from Debian's prometheus package into $promtool_dir"
    (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1) || {
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        (cd "$work" && apt-get download -q prometheus >/dev/null)
    }
    mkdir -p "$promtool_dir"
    dpkg-deb -x "$work"/prometheus_*.deb "$work/unpacked"
    mkdir -p "$promtool_dir/usr/bin"
    cp "$work/unpacked/usr/bin/promtool" "$promtool_dir/usr/bin/promtool"
    rm -rf "$work"
    "$promtool_dir/usr/bin/promtool" --version >/dev/null 2>&1 ||
        { log "the unpacked promtool does not run"; exit 1; }
}

install_missing() {
    local packages=()
    [ -n "$(pg_bin_dir)" ] || packages+=(postgresql postgresql-client)
    command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
    # The clock-skew tests run a process under libfaketime.
    command -v faketime >/dev/null 2>&1 || packages+=(faketime)
    # The HTTPS webhook test makes its throwaway CA with openssl.
    command -v openssl >/dev/null 2>&1 || packages+=(openssl)
    # libFuzzer (scripts/fuzz.sh) and the PgBouncer build need a C/C++ toolchain.
    command -v c++ >/dev/null 2>&1 || packages+=(g++)
    command -v make >/dev/null 2>&1 || packages+=(make)
    # The approver console's real-browser test: headless Chromium over WebDriver.
    command -v chromium >/dev/null 2>&1 || packages+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)
    if ! recent_pgbouncer >/dev/null; then
        dpkg -s libevent-dev >/dev/null 2>&1 || packages+=(libevent-dev)
        dpkg -s libssl-dev >/dev/null 2>&1 || packages+=(libssl-dev)
        command -v pkg-config >/dev/null 2>&1 || packages+=(pkg-config)
        command -v curl >/dev/null 2>&1 || packages+=(curl ca-certificates)
    fi
    if [ ${#packages[@]} -gt 0 ]; then
        log "installing ${packages[*]} with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q --no-install-recommends "${packages[@]}"
    fi
}

pg_ready() {
    local bin
    bin=$(pg_bin_dir)
    "$bin/pg_isready" -q -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1
}

start_postgres() {
    if pg_ready; then return; fi
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$version" ]; then
        log "no PostgreSQL cluster found; creating one"
        version=$(basename "$(dirname "$(pg_bin_dir)")")
        as_root pg_createcluster "$version" main
    fi
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 60); do
        pg_ready && return
        sleep 0.5
    done
    log "PostgreSQL did not become ready on 127.0.0.1:5432"
    exit 1
}

configure_postgres_password() {
    if PGPASSWORD=postgres PGCONNECT_TIMEOUT=5 psql -h 127.0.0.1 -U postgres -d postgres \
        -Atqc 'SELECT 1' >/dev/null 2>&1; then
        return
    fi
    log "setting the postgres role's password for TCP connections"
    as_root runuser -u postgres -- psql -qc "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
    if ! PGPASSWORD=postgres psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null; then
        log "cannot log in to PostgreSQL as postgres/postgres over 127.0.0.1: check pg_hba.conf"
        exit 1
    fi
}

redis_ready() {
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]
}

start_redis() {
    if redis_ready; then return; fi
    log "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
        --save "" --appendonly no --dir /tmp --logfile /tmp/warden-redis.log
    for _ in $(seq 1 40); do
        redis_ready && return
        sleep 0.25
    done
    log "Redis did not answer PING on 127.0.0.1:6379"
    exit 1
}

install_missing
build_pgbouncer
unpack_promtool
start_postgres
configure_postgres_password
start_redis
log "PostgreSQL and Redis are up"
