#!/usr/bin/env python3
"""An independent implementation of Warden's audit leaf encoding (v2) and of
RFC 6962 Merkle tree hashing, inclusion proofs and consistency proofs,
written from the RFC (sections 2.1, 2.1.1, 2.1.2), not from the Rust code.

Reads {"events": [...], "sizes": [...]} on stdin and prints, as JSON, the
leaf hash of every event, the root of every tree size, and every inclusion
proof (leaf i in tree n) and consistency proof (m to n) for those sizes."""
import hashlib
import json
import struct
import sys
import uuid
from datetime import datetime


def canonical(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def field(out, data):
    if data is None:
        out.append(b"\x00")
    else:
        out.append(b"\x01" + struct.pack(">Q", len(data)) + data)


def micros(text):
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    seconds = int(t.timestamp() // 1)
    return seconds * 1_000_000 + t.microsecond


def leaf_bytes(e):
    out = []
    opt = lambda v: None if v is None else v.encode()
    field(out, b"warden.audit.leaf.v2")
    field(out, uuid.UUID(e["id"]).bytes)
    field(out, e["request_id"].encode())
    field(out, e["kind"].encode())
    field(out, struct.pack(">q", micros(e["timestamp"])))
    field(out, e["caller_id"].encode())
    field(out, None if e["api_key_id"] is None else uuid.UUID(e["api_key_id"]).bytes)
    field(out, e["method"].encode())
    field(out, opt(e["tool_name"]))
    field(out, e["decision"].encode())
    field(out, opt(e["reason"]))
    field(out, e["raw_args_hash"].encode())
    field(out, canonical(e["sanitized_args"]))
    field(out, canonical(e["redaction_flags"]))
    field(out, canonical(e["risk_labels"]))
    field(out, None if e["status_code"] is None else struct.pack(">i", e["status_code"]))
    field(out, None if e["latency_ms"] is None else struct.pack(">q", e["latency_ms"]))
    return b"".join(out)


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n):
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    if len(leaves) == 0:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = split(len(leaves))
    return node(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    if len(leaves) == 1:
        return []
    k = split(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m, leaves, b):
    n = len(leaves)
    if m == n:
        return [] if b else [mth(leaves)]
    k = split(n)
    if m <= k:
        return subproof(m, leaves[:k], b) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def main():
    request = json.load(sys.stdin)
    leaves = [leaf_hash(leaf_bytes(e)) for e in request["events"]]
    sizes = request["sizes"]
    out = {
        "leaves": [h.hex() for h in leaves],
        "roots": {str(n): mth(leaves[:n]).hex() for n in sizes},
        "inclusion": {
            f"{i}/{n}": [h.hex() for h in path(i, leaves[:n])] for n in sizes for i in range(n)
        },
        "consistency": {
            f"{m}/{n}": [h.hex() for h in subproof(m, leaves[:n], True)]
            for m in sizes
            for n in sizes
            if 0 < m < n
        },
    }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
