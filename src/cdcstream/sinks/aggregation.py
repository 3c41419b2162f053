"""KPL-compatible record aggregation (optional, ``[target] aggregation = true``).

Many small user records travel in one Kinesis record, which lifts the 1,000 records/s per-shard ceiling. The
format is the one the Kinesis Producer Library writes and KCL / the aws-kinesis-agg libraries de-aggregate:
magic ``F3 89 9A C2``, a protobuf ``AggregatedRecord`` (field 1: partition key table; field 3: records, each
``{1: partition_key_index, 3: data}``), then the MD5 of the protobuf bytes. Only records of one partition key
are aggregated together, so per-key order and the shard are those of the key. Written by hand (a few varints)
rather than with protobuf: it is tiny and on the hot path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

MAGIC = b"\xf3\x89\x9a\xc2"
_OVERHEAD = len(MAGIC) + 16  # magic + MD5


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


def record_cost(data_len: int) -> int:
    """Bytes one user record adds to an aggregate: field tag + length + ``{08 00 1a len data}``."""
    inner = 2 + 1 + _varint_len(data_len) + data_len
    return 1 + _varint_len(inner) + inner


def aggregate_size(key_bytes: int, data_lens: Sequence[int]) -> int:
    """Size of the aggregated record for these user records."""
    return _OVERHEAD + 1 + _varint_len(key_bytes) + key_bytes + sum(record_cost(n) for n in data_lens)


def aggregate(key: str, datas: Sequence[bytes]) -> bytes:
    """One aggregated Kinesis record holding ``datas`` (in order) for partition key ``key``."""
    kb = key.encode()
    parts = [b"\x0a", _varint(len(kb)), kb]
    for data in datas:
        inner_len = 2 + 1 + _varint_len(len(data)) + len(data)
        parts += (b"\x1a", _varint(inner_len), b"\x08\x00\x1a", _varint(len(data)), data)
    body = b"".join(parts)
    return MAGIC + body + hashlib.md5(body, usedforsecurity=False).digest()


def pack(key_bytes: int, data_lens: Sequence[int], max_record_bytes: int) -> list[int]:
    """Split records (by size) into consecutive aggregates that each fit ``max_record_bytes`` (data + key):
    the number of user records per aggregate, in order. A record too big to share goes alone."""
    counts: list[int] = []
    size = _OVERHEAD + 1 + _varint_len(key_bytes) + key_bytes
    base = size
    n = 0
    for data_len in data_lens:
        cost = record_cost(data_len)
        if n and size + cost + key_bytes > max_record_bytes:
            counts.append(n)
            size, n = base, 0
        size += cost
        n += 1
    if n:
        counts.append(n)
    return counts
