"""Read a Kinesis stream and print its records (``cdcstream tail``), and read a whole stream back (tests).

Every shard is read in order (ListShards with pagination, re-listed periodically to pick up new shards after a
reshard; GetShardIterator TRIM_HORIZON or LATEST; GetRecords). Each record is printed as one compact JSON line:
``{"shard": ..., "sequence": ..., "partition_key": ..., "data": <parsed JSON, or the raw string>}``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import IO, Any

import orjson

#: Sleep between polls of an idle shard (GetRecords is limited to 5 calls/s per shard).
IDLE_SLEEP = 0.5
#: How often the shard list is refreshed while following.
RELIST_INTERVAL = 10.0


def _decode(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")


def _row(shard_id: str, rec: dict[str, Any]) -> dict[str, Any]:
    return {
        "shard": shard_id,
        "sequence": rec["SequenceNumber"],
        "partition_key": rec["PartitionKey"],
        "data": _decode(rec["Data"]),
    }


async def _list_shards(client: Any, stream_name: str) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    resp = await client.list_shards(StreamName=stream_name)
    shards.extend(resp.get("Shards", []))
    while resp.get("NextToken"):
        resp = await client.list_shards(NextToken=resp["NextToken"])
        shards.extend(resp.get("Shards", []))
    return shards


def _client(region: str, endpoint_url: str | None) -> Any:
    from aiobotocore.session import get_session

    return get_session().create_client("kinesis", region_name=region, endpoint_url=endpoint_url)


async def read_all(
    stream_name: str, *, region: str = "us-east-1", endpoint_url: str | None = None
) -> list[dict[str, Any]]:
    """Every record currently in the stream: shard by shard (in ListShards order), each shard in sequence
    order, as dicts with ``shard``, ``sequence``, ``partition_key`` and ``data`` (parsed JSON or string)."""
    out: list[dict[str, Any]] = []
    async with _client(region, endpoint_url) as client:
        for shard in await _list_shards(client, stream_name):
            sid = shard["ShardId"]
            it = (
                await client.get_shard_iterator(StreamName=stream_name, ShardId=sid, ShardIteratorType="TRIM_HORIZON")
            )["ShardIterator"]
            while it:
                resp = await client.get_records(ShardIterator=it, Limit=10000)
                recs = resp.get("Records", [])
                out.extend(_row(sid, r) for r in recs)
                # An open shard never returns a null iterator: stop when caught up.
                if not recs and resp.get("MillisBehindLatest", 0) == 0:
                    break
                it = resp.get("NextShardIterator")
    return out


async def tail(
    stream_name: str,
    *,
    region: str = "us-east-1",
    endpoint_url: str | None = None,
    from_start: bool = True,
    follow: bool = True,
    out: IO[str] = sys.stdout,
    limit: int | None = None,
) -> int:
    """Print records of every shard as JSON lines; returns how many were printed. Without ``follow`` it
    stops when every shard is caught up; ``limit`` stops after that many records."""
    printed = 0
    iterators: dict[str, str | None] = {}
    kind = "TRIM_HORIZON" if from_start else "LATEST"
    async with _client(region, endpoint_url) as client:
        loop = asyncio.get_running_loop()
        listed_at = -RELIST_INTERVAL
        while True:
            if loop.time() - listed_at >= RELIST_INTERVAL:
                listed_at = loop.time()
                for shard in await _list_shards(client, stream_name):
                    sid = shard["ShardId"]
                    if sid not in iterators:
                        resp = await client.get_shard_iterator(
                            StreamName=stream_name, ShardId=sid, ShardIteratorType=kind
                        )
                        iterators[sid] = resp["ShardIterator"]
            idle = True
            for sid, it in list(iterators.items()):
                if it is None:
                    continue  # closed shard, fully read
                resp = await client.get_records(ShardIterator=it, Limit=1000)
                recs = resp.get("Records", [])
                for r in recs:
                    out.write(orjson.dumps(_row(sid, r)).decode() + "\n")
                    printed += 1
                    if limit is not None and printed >= limit:
                        out.flush()
                        return printed
                if recs:
                    out.flush()
                    idle = False
                elif resp.get("MillisBehindLatest", 0) > 0:
                    idle = False
                iterators[sid] = resp.get("NextShardIterator")
            if idle:
                if not follow:
                    return printed
                await asyncio.sleep(IDLE_SLEEP)
