"""The sink's shard map routes keys exactly as the Kinesis-API server does (MD5 into hash-key ranges), so
per-shard budgets are spent on the right shard; and a rate-limited run still delivers everything."""

from __future__ import annotations

import pytest

from cdcstream.sinks.kinesis import KinesisSink
from tests.integration.test_kinesis_sink import Acks, _cfg, _deliver, _records, running
from tests.support.kinesis import KinesisEndpoint

pytestmark = pytest.mark.integration


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
