"""A minimal, fast Kinesis-API endpoint for benchmarking the sink (the real emulators are 5-10x slower than the
client). It stores nothing: PutRecords answers every entry with a fake shard id and
sequence number (optionally failing a fraction of entries with ProvisionedThroughputExceededException);
DescribeStreamSummary, ListShards and CreateStream answer with a canned ACTIVE stream of ``--shards`` shards
(uniform hash-key ranges). With ``--shard-limit R`` each shard accepts at most R records per second (a token
bucket with one second of burst, like Kinesis' documented per-shard limit); entries over it are throttled.

``--delay-ms 10,30`` answers each PutRecords request after a uniformly random delay in that range (a real
endpoint's round trip). ``--latency`` reads each record's ``commit-timestamp`` (``include_transaction_details``)
and notes, when the answer goes out, how long after its source commit the record was acknowledged: the ``Stats``
call then returns those latencies' percentiles (``bench/latency_bench.py``).

    python bench/fake_kinesis.py --port 4599 [--fail-rate 0.1] [--seed 1] [--shards 4] [--shard-limit 1000]
                                 [--delay-ms 10,30] [--latency]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import time
from datetime import datetime

import orjson
from aiohttp import web

CT = "application/x-amz-json-1.1"
OK_ENTRY = (
    b'{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000000"}'
)
FAIL_ENTRY = b'{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"}'


def make_app(
    fail_rate: float,
    seed: int,
    shards: int = 1,
    shard_limit: float = 0.0,
    delay: tuple[float, float] = (0.0, 0.0),
    latency: bool = False,
) -> web.Application:
    rng = random.Random(seed)
    stats = {"requests": 0, "entries": 0, "failed": 0, "throttled": 0, "request_bytes": 0}
    latencies: list[float] = []  # seconds from source commit to acknowledgement, one per record (--latency)
    width = 2**128 // shards
    tokens = [shard_limit] * shards
    stamps = [time.monotonic()] * shards

    def admit(key: str) -> bool:
        shard = min(shards - 1, int.from_bytes(hashlib.md5(key.encode()).digest(), "big") // width)
        now = time.monotonic()
        tokens[shard] = min(shard_limit, tokens[shard] + (now - stamps[shard]) * shard_limit)
        stamps[shard] = now
        if tokens[shard] >= 1:
            tokens[shard] -= 1
            return True
        return False

    def summary(name: str) -> bytes:
        return orjson.dumps(
            {
                "StreamDescriptionSummary": {
                    "StreamName": name,
                    "StreamARN": f"arn:aws:kinesis:us-east-1:123456789012:stream/{name}",
                    "StreamStatus": "ACTIVE",
                    "RetentionPeriodHours": 24,
                    "StreamCreationTimestamp": time.time(),
                    "EnhancedMonitoring": [],
                    "OpenShardCount": shards,
                }
            }
        )

    async def handle(request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        body = await request.read()
        op = target.rpartition(".")[2]
        if op == "PutRecords":
            records = orjson.loads(body)["Records"]
            n = len(records)
            stats["requests"] += 1
            stats["entries"] += n
            stats["request_bytes"] += len(body)
            commits = [_commit_epoch(r["Data"]) for r in records] if latency else []
            if delay[1]:
                await asyncio.sleep(rng.uniform(*delay))
            if fail_rate or shard_limit:
                flags = [
                    (fail_rate and rng.random() < fail_rate) or (shard_limit and not admit(r["PartitionKey"]))
                    for r in records
                ]
                failed = sum(1 for f in flags if f)
                if shard_limit:
                    stats["throttled"] += failed
                stats["failed"] += failed
                entries = b",".join(FAIL_ENTRY if f else OK_ENTRY for f in flags)
            else:
                failed = 0
                entries = b",".join([OK_ENTRY] * n)
            out = b'{"FailedRecordCount":%d,"Records":[%s]}' % (failed, entries)
            now = time.time()
            latencies.extend(now - c for c in commits if c is not None)  # failed entries come again: close enough
            return web.Response(body=out, content_type=CT)
        doc = orjson.loads(body or b"{}")
        name = doc.get("StreamName", "bench")
        if op == "DescribeStreamSummary":
            return web.Response(body=summary(name), content_type=CT)
        if op == "ListShards":
            listed = [
                {
                    "ShardId": f"shardId-{i:012d}",
                    "HashKeyRange": {
                        "StartingHashKey": str(i * width),
                        "EndingHashKey": str(2**128 - 1 if i == shards - 1 else (i + 1) * width - 1),
                    },
                    "SequenceNumberRange": {"StartingSequenceNumber": "0"},
                }
                for i in range(shards)
            ]
            return web.Response(body=orjson.dumps({"Shards": listed}), content_type=CT)
        if op == "CreateStream":
            return web.Response(body=b"{}", content_type=CT)
        if op == "Stats":  # not a Kinesis call: the bench reads the server's counters
            if doc.get("Reset"):
                latencies.clear()
            return web.Response(body=orjson.dumps({**stats, "latency": _percentiles(latencies)}), content_type=CT)
        err = {"__type": "UnknownOperationException", "message": op}
        return web.Response(status=400, body=orjson.dumps(err), content_type=CT)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/", handle)
    return app


def _commit_epoch(data: str) -> float | None:
    """The source commit time of a record (its ``metadata.commit-timestamp``), None without one."""
    stamp = orjson.loads(base64.b64decode(data)).get("metadata", {}).get("commit-timestamp")
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def _percentiles(values: list[float]) -> dict[str, float | int]:
    """p50/p90/p99/max (seconds) and the count of ``values``."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    quantiles = {f"p{round(q * 100)}": ordered[min(len(ordered) - 1, int(q * len(ordered)))] for q in (0.5, 0.9, 0.99)}
    return {"count": len(ordered), **quantiles, "max": ordered[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=4599)
    ap.add_argument("--fail-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--shard-limit", type=float, default=0.0, help="records/s per shard (0: unlimited)")
    ap.add_argument("--delay-ms", default="0,0", help="LO,HI: each PutRecords answered after a random delay")
    ap.add_argument("--latency", action="store_true", help="note each record's commit -> acknowledgement latency")
    args = ap.parse_args()
    lo, hi = (float(x) / 1000 for x in args.delay_ms.split(","))
    web.run_app(
        make_app(args.fail_rate, args.seed, args.shards, args.shard_limit, (lo, hi), args.latency),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
