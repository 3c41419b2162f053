"""The sink's shard map routes keys exactly as the Kinesis-API server does (MD5 into hash-key ranges), so
per-shard budgets are spent on the right shard; and a rate-limited run still delivers everything."""

from __future__ import annotations

import asyncio

import boto3

from cdcstream.sinks.kinesis import KinesisSink
from tests.integration.test_kinesis_sink import Acks, _cfg, _deliver, _records, running
from tests.support.kinesis import REGION, KinesisEndpoint


async def test_shard_map_matches_server_routing(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(shards=4)
    cfg = _cfg(stream, kinesis_endpoint.endpoint_url, shard_records_per_second=50)
    records = _records(300, nkeys=60)
    acks = await _deliver(cfg, records)
    assert acks.seqs == {r.seq for r in records}
    async with running(cfg, Acks()) as sink:
        assert isinstance(sink, KinesisSink)
        limiter = sink._batcher.limiter
        assert limiter is not None and len(limiter.map) == 4
        shard_map = limiter.map
    rows = await kinesis_endpoint.read_all(stream)
    assert len(rows) >= 300
    for row in rows:
        assert shard_map.shard_ids[shard_map.shard_of(row["partition_key"])] == row["shard"], row


async def test_resharding_during_a_run_is_followed(moto_server: str) -> None:
    """UpdateShardCount while records flow (moto supports it): everything arrives, per-key order holds, and
    the sink's shard map picks up the new shards."""
    endpoint = KinesisEndpoint("moto", moto_server)
    stream = await endpoint.create_stream(shards=1)
    cfg = _cfg(stream, moto_server, shard_map_refresh=1)
    acks = Acks()
    records = _records(600, nkeys=20)
    async with running(cfg, acks) as sink:
        for r in records[:300]:
            await sink.put(r)
        assert await sink.drain(30)
        client = boto3.client("kinesis", endpoint_url=moto_server, region_name=REGION)
        client.update_shard_count(StreamName=stream, TargetShardCount=2, ScalingType="UNIFORM_SCALING")
        for r in records[300:]:
            await sink.put(r)
        assert await sink.drain(30)
        limiter = sink._batcher.limiter
        assert limiter is not None
        for _ in range(50):
            if len(limiter.map) == 2:
                break
            await asyncio.sleep(0.1)
        assert len(limiter.map) == 2
    assert acks.seqs == {r.seq for r in records}
    rows = await endpoint.read_all(stream)
    last: dict[str, dict[int, int]] = {}
    for i, row in enumerate(rows):
        last.setdefault(row["partition_key"], {})[row["data"]["n"]] = i
    for key, positions in last.items():
        order = [n for n, _ in sorted(positions.items(), key=lambda kv: kv[1])]
        assert order == sorted(order), key


async def test_latency_spikes_beyond_the_request_timeout_lose_nothing_and_keep_order(
    kinesis_endpoint: KinesisEndpoint,
) -> None:
    """Answers slower than request_timeout: the client gives up on requests that may have been written, resends
    them, and per-key order still holds at the last occurrences."""
    from tests.integration.test_kinesis_sink import check_stream
    from tests.support.faultproxy import FaultProxy

    stream = await kinesis_endpoint.create_stream(shards=2)
    records = _records(800, nkeys=9)
    with FaultProxy(kinesis_endpoint.endpoint_url, latency=0.6) as proxy:
        cfg = _cfg(stream, proxy.url, request_timeout=0.5, linger_ms=20)
        acks = Acks()
        async with running(cfg, acks) as sink:
            for i, r in enumerate(records):
                if i == 300:
                    proxy.latency = 0.0  # the spike ends
                await sink.put(r)
                if i < 300:
                    await asyncio.sleep(0.001)
            assert await sink.drain(60)
    rows = await kinesis_endpoint.read_all(stream)
    check_stream(rows, records, acks)
