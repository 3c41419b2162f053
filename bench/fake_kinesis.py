"""A minimal, fast Kinesis-API endpoint for benchmarking the sink (the real emulators are 5-10x slower than the
client, reference/env.md §6c). It stores nothing: PutRecords answers every entry with a fake shard id and
sequence number (optionally failing a fraction of entries with ProvisionedThroughputExceededException);
DescribeStreamSummary, ListShards and CreateStream answer with a canned ACTIVE 1-shard stream.

    python bench/fake_kinesis.py --port 4599 [--fail-rate 0.1] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time

import orjson
from aiohttp import web

CT = "application/x-amz-json-1.1"
OK_ENTRY = (
    b'{"SequenceNumber":"49590338271490256608559692538361571095921575989136588898","ShardId":"shardId-000000000000"}'
)
FAIL_ENTRY = b'{"ErrorCode":"ProvisionedThroughputExceededException","ErrorMessage":"Rate exceeded for shard"}'


def make_app(fail_rate: float, seed: int) -> web.Application:
    rng = random.Random(seed)
    stats = {"requests": 0, "entries": 0, "failed": 0}

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
                    "OpenShardCount": 1,
                }
            }
        )

    async def handle(request: web.Request) -> web.Response:
        target = request.headers.get("X-Amz-Target", "")
        body = await request.read()
        op = target.rpartition(".")[2]
        if op == "PutRecords":
            n = len(orjson.loads(body)["Records"])
            stats["requests"] += 1
            stats["entries"] += n
            if fail_rate:
                flags = [rng.random() < fail_rate for _ in range(n)]
                failed = sum(flags)
                stats["failed"] += failed
                entries = b",".join(FAIL_ENTRY if f else OK_ENTRY for f in flags)
            else:
                failed = 0
                entries = b",".join([OK_ENTRY] * n)
            out = b'{"FailedRecordCount":%d,"Records":[%s]}' % (failed, entries)
            return web.Response(body=out, content_type=CT)
        doc = orjson.loads(body or b"{}")
        name = doc.get("StreamName", "bench")
        if op == "DescribeStreamSummary":
            return web.Response(body=summary(name), content_type=CT)
        if op == "ListShards":
            shard = {
                "ShardId": "shardId-000000000000",
                "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": str(2**128 - 1)},
                "SequenceNumberRange": {"StartingSequenceNumber": "0"},
            }
            return web.Response(body=orjson.dumps({"Shards": [shard]}), content_type=CT)
        if op == "CreateStream":
            return web.Response(body=b"{}", content_type=CT)
        if op == "Stats":  # not a Kinesis call: the bench reads the server's counters
            return web.Response(body=orjson.dumps(stats), content_type=CT)
        err = {"__type": "UnknownOperationException", "message": op}
        return web.Response(status=400, body=orjson.dumps(err), content_type=CT)

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/", handle)
    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--port", type=int, default=4599)
    ap.add_argument("--fail-rate", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    web.run_app(make_app(args.fail_rate, args.seed), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
