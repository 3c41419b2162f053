"""Per-shard write budgets, so the sink avoids throttling instead of only retrying it.

Kinesis routes a record to the open shard whose hash-key range contains the MD5 of its partition key (as a
128-bit integer). :class:`ShardMap` does the same from ``ListShards``; :class:`ShardLimiter` keeps a token bucket
per shard (documented limits: 1,000 records/s and 1 MiB/s per shard; settings, because on-demand streams and
local test servers differ) with one second of burst. The batcher asks it how much of a key may go into the next
request; the map is refreshed periodically so resharding is picked up.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

#: Partition keys -> shard index cache bound (per-row keys would otherwise grow it without limit).
_KEY_CACHE_MAX = 200_000


class ShardMap:
    """Open shards by hash-key range; ``shard_of(key)`` is the shard Kinesis writes ``key`` to."""

    def __init__(self, ranges: Iterable[tuple[int, int, str]]) -> None:
        ordered = sorted(ranges)
        if not ordered:
            raise ValueError("a stream has at least one open shard")
        self.starts = [start for start, _end, _sid in ordered]
        self.shard_ids = [sid for _start, _end, sid in ordered]
        self._cache: dict[str, int] = {}

    @classmethod
    def from_list_shards(cls, shards: Iterable[dict[str, object]]) -> ShardMap:
        """From ListShards ``Shards`` entries; closed shards (with an EndingSequenceNumber) are left out."""
        ranges = []
        for shard in shards:
            seq_range = shard.get("SequenceNumberRange")
            if isinstance(seq_range, dict) and seq_range.get("EndingSequenceNumber"):
                continue
            hash_range = shard["HashKeyRange"]
            assert isinstance(hash_range, dict)
            ranges.append((int(hash_range["StartingHashKey"]), int(hash_range["EndingHashKey"]), str(shard["ShardId"])))
        return cls(ranges)

    def __len__(self) -> int:
        return len(self.starts)

    def shard_of(self, key: str) -> int:
        index = self._cache.get(key)
        if index is None:
            digest = int.from_bytes(hashlib.md5(key.encode(), usedforsecurity=False).digest(), "big")
            index = bisect.bisect_right(self.starts, digest) - 1
            if len(self._cache) >= _KEY_CACHE_MAX:
                self._cache.clear()
            self._cache[key] = index
        return index


class ShardLimiter:
    """A token bucket per shard for records and bytes, refilled continuously, one second of burst."""

    def __init__(self, shard_map: ShardMap, records_per_second: float, bytes_per_second: float, now: float) -> None:
        self.records_per_second = records_per_second
        self.bytes_per_second = bytes_per_second
        self.map = shard_map
        n = len(shard_map)
        self._records = [records_per_second] * n
        self._bytes = [bytes_per_second] * n
        self._at = [now] * n

    def replace_map(self, shard_map: ShardMap, now: float) -> None:
        """New shards after resharding start with full buckets (their limits are their own)."""
        self.__init__(shard_map, self.records_per_second, self.bytes_per_second, now)  # type: ignore[misc]

    def available(self, shard: int, now: float) -> tuple[float, float]:
        """Records and bytes shard ``shard`` may take now."""
        elapsed = now - self._at[shard]
        if elapsed > 0:
            self._records[shard] = min(
                self.records_per_second, self._records[shard] + elapsed * self.records_per_second
            )
            self._bytes[shard] = min(self.bytes_per_second, self._bytes[shard] + elapsed * self.bytes_per_second)
            self._at[shard] = now
        return self._records[shard], self._bytes[shard]

    def spend(self, shard: int, records: int, nbytes: int) -> None:
        self._records[shard] -= records
        self._bytes[shard] -= nbytes

    def wait(self, records_left: float, bytes_left: float, record_bytes: int) -> float:
        """Seconds until a shard with these budgets left has room for one more record of ``record_bytes``
        (a record larger than a whole second's byte budget waits for a full bucket, then goes alone)."""
        wait_records = (1 - records_left) / self.records_per_second
        wait_bytes = (min(record_bytes, self.bytes_per_second) - bytes_left) / self.bytes_per_second
        return max(wait_records, wait_bytes, 0.0)
