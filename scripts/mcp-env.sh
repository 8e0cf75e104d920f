#!/usr/bin/env bash
# The gateway tests' independent MCP client and reference server: the
# official Python SDK (`mcp`) and `mcp-server-time` from PyPI, pinned in
# scripts/mcp/requirements.txt, installed into .cache/mcp-venv when missing
# or when the pins change. Prints the virtualenv's python. Safe to re-run.
set -euo pipefail
repo_root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$repo_root/.cache/mcp-venv"
requirements="$repo_root/scripts/mcp/requirements.txt"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

log() { printf 'mcp-env: %s\n' "$*" >&2; }
as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        log "installing python3-venv with apt-get"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >&2
    fi
    log "installing the MCP client and reference server into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    cache="${XDG_CACHE_HOME:-$HOME/.cache}/warden-tools/pip"
    "$venv/bin/pip" install -q --disable-pip-version-check --cache-dir "$cache" \
        --no-deps -r "$requirements" >&2
    echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
