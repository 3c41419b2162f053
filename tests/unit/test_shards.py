"""Shard routing (MD5 of the partition key into hash-key ranges) and per-shard token buckets in the batcher."""

from __future__ import annotations

import hashlib

from cdcstream.records import Record
from cdcstream.sinks.batching import Batcher
from cdcstream.sinks.shards import ShardLimiter, ShardMap

TOP = 2**128 - 1


def two_shards() -> ShardMap:
    return ShardMap.from_list_shards(
        [
            {"ShardId": "shardId-1", "HashKeyRange": {"StartingHashKey": str(2**127), "EndingHashKey": str(TOP)}},
            {"ShardId": "shardId-0", "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**127 - 1)}},
            {
                "ShardId": "shardId-old",
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(TOP)},
                "SequenceNumberRange": {"StartingSequenceNumber": "1", "EndingSequenceNumber": "9"},
            },
        ]
    )


def test_shard_of_follows_md5_like_kinesis() -> None:
    m = two_shards()
    assert m.shard_ids == ["shardId-0", "shardId-1"]  # closed shard left out, sorted by range
    for key in ("a", "public.items", "x" * 200, "ünï"):
        digest = int(hashlib.md5(key.encode()).hexdigest(), 16)
        assert m.shard_ids[m.shard_of(key)] == ("shardId-1" if digest >= 2**127 else "shardId-0")


def _fill(b: Batcher, key: str, n: int, size: int = 100) -> None:
    for i in range(n):
        b.add(key, Record(partition_key=key, data=b"x" * size, seq=i), 0.0, size + len(key))


def test_limiter_caps_records_per_shard_and_says_when_to_retry() -> None:
    b = Batcher()
    b.limiter = ShardLimiter(ShardMap([(0, TOP, "s0")]), records_per_second=100, bytes_per_second=10**9, now=0.0)
    _fill(b, "k", 1000)
    sent = 0
    now = 0.0
    batch = b.take_batch(now, 500, 1 << 30)
    assert batch is not None and len(batch) == 100  # one second of burst
    b.complete(batch, None, now)
    sent += len(batch)
    assert b.take_batch(now, 500, 1 << 30) is None
    wake = b.next_wakeup(now, 0.0)
    assert wake is not None and 0.0 < wake <= 0.011
    while now < 5.0:
        now += 0.25
        batch = b.take_batch(now, 500, 1 << 30)
        if batch is not None:
            sent += len(batch)
            b.complete(batch, None, now)
    assert sent <= 100 + 100 * now  # never above the burst plus the refill
    assert sent >= 100 * now - 25  # and the budget is used


def test_limiter_caps_bytes_and_other_shards_go_on() -> None:
    shards = ShardMap([(0, 2**127 - 1, "s0"), (2**127, TOP, "s1")])
    b = Batcher()
    b.limiter = ShardLimiter(shards, records_per_second=10**6, bytes_per_second=10_000, now=0.0)
    keys = {shards.shard_of(f"k{i}"): f"k{i}" for i in range(20)}
    hot, other = keys[0], keys[1]
    _fill(b, hot, 200, size=1000)
    _fill(b, other, 3, size=1000)
    batch = b.take_batch(0.0, 500, 1 << 30)
    assert batch is not None
    counts = dict(zip(batch.keys, batch.counts, strict=True))
    assert counts[hot] * (1000 + len(hot)) <= 10_000 and counts[other] == 3


def test_record_larger_than_a_seconds_budget_still_goes_alone() -> None:
    b = Batcher()
    b.limiter = ShardLimiter(ShardMap([(0, TOP, "s0")]), records_per_second=1000, bytes_per_second=4096, now=0.0)
    _fill(b, "k", 2, size=10_000)
    batch = b.take_batch(0.0, 500, 1 << 30)
    assert batch is not None and len(batch) == 1
    b.complete(batch, None, 0.0)
    assert b.take_batch(0.5, 500, 1 << 30) is None  # in debt
    batch = b.take_batch(10.0, 500, 1 << 30)
    assert batch is not None and len(batch) == 1
