#!/usr/bin/env bash
# Starts (or reuses) the shared test Redis Cluster: 3 primaries + 3 replicas
# on 127.0.0.1:7101-7106, no persistence, formed with `redis-cli --cluster
# create`. Idempotent: a cluster already answering `cluster_state:ok` is
# reused. Prints the comma-separated node URLs (the form REDIS_URL takes
# for a cluster). `scripts/redis-cluster.sh stop` stops it.
set -euo pipefail

base="${WARDEN_TEST_REDIS_CLUSTER_BASE_PORT:-7101}"
dir="${TMPDIR:-/tmp}/warden-redis-cluster-$base"
ports=()
for i in 0 1 2 3 4 5; do ports+=($((base + i))); done
log() { printf 'redis-cluster: %s\n' "$*" >&2; }

urls() {
    local out=() p
    for p in "${ports[@]}"; do out+=("redis://127.0.0.1:$p"); done
    (IFS=,; echo "${out[*]}")
}

healthy() {
    local p
    for p in "${ports[@]}"; do
        redis-cli -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || return 1
    done
    # Three primaries each with a replica, every replica in sync (a replica
    # that never synced cannot take over).
    [ "$(redis-cli -p "${ports[0]}" cluster nodes 2>/dev/null | grep -c master)" = 3 ] || return 1
    for p in "${ports[@]}"; do
        if redis-cli -p "$p" info replication 2>/dev/null | grep -q '^role:slave'; then
            redis-cli -p "$p" info replication | grep -q '^master_link_status:up' || return 1
        fi
    done
}

if [ "${1:-}" = stop ]; then
    for p in "${ports[@]}"; do
        [ "$(redis-cli -p "$p" config get dir 2>/dev/null | tail -n 1)" = "$dir/$p" ] &&
            redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
    done
    rm -rf "$dir"
    exit 0
fi

if healthy; then urls; exit 0; fi

ours() { # whether the Redis on port $1 is one of this script's nodes
    [ "$(redis-cli -p "$1" config get dir 2>/dev/null | tail -n 1)" = "$dir/$1" ]
}

log "starting 6 nodes on ports ${ports[0]}-${ports[5]}"
for p in "${ports[@]}"; do
    if [ "$(redis-cli -p "$p" ping 2>/dev/null)" = PONG ]; then
        if ours "$p"; then
            redis-cli -p "$p" shutdown nosave >/dev/null 2>&1 || true
        else
            log "port $p is used by another Redis; set WARDEN_TEST_REDIS_CLUSTER_BASE_PORT"
            exit 1
        fi
    fi
done
rm -rf "$dir"
mkdir -p "$dir"
for p in "${ports[@]}"; do
    mkdir -p "$dir/$p"
    redis-server --port "$p" --bind 127.0.0.1 --daemonize yes \
        --cluster-enabled yes --cluster-config-file "$dir/$p/nodes.conf" \
        --cluster-node-timeout 2000 --save "" --appendonly no --repl-diskless-sync-delay 0 \
        --dir "$dir/$p" --logfile "$dir/$p/redis.log"
done
for p in "${ports[@]}"; do
    for _ in $(seq 1 40); do
        [ "$(redis-cli -p "$p" ping 2>/dev/null)" = PONG ] && break
        sleep 0.1
    done
    ours "$p" || { log "node $p did not start (port taken? see $dir/$p/redis.log)"; exit 1; }
done
nodes=()
for p in "${ports[@]}"; do nodes+=("127.0.0.1:$p"); done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$dir/create.log" 2>&1 || {
    log "redis-cli --cluster create failed:"; cat "$dir/create.log" >&2; exit 1; }
for _ in $(seq 1 100); do
    if healthy; then urls; exit 0; fi
    sleep 0.2
done
log "the cluster did not reach cluster_state:ok"
exit 1
