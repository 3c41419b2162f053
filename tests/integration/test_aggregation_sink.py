"""With ``aggregation = true`` the stream holds KPL aggregates that AWS's de-aggregation library turns back
into exactly our records, per key in order; far fewer Kinesis records are written."""

from __future__ import annotations

import boto3
import orjson

from tests.integration.test_kinesis_sink import _cfg, _deliver, _records
from tests.support.kinesis import REGION, KinesisEndpoint
from tests.unit.test_aggregation import deaggregate


async def test_aggregated_records_deaggregate_with_the_aws_library(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(shards=2)
    records = _records(1200, nkeys=5)
    acks = await _deliver(_cfg(stream, kinesis_endpoint.endpoint_url, aggregation=True), records)
    assert acks.seqs == {r.seq for r in records}
    client = boto3.client("kinesis", endpoint_url=kinesis_endpoint.endpoint_url, region_name=REGION)
    raw: list[tuple[str, bytes]] = []
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        it = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")
        resp = client.get_records(ShardIterator=it["ShardIterator"], Limit=10000)
        raw += [(r["PartitionKey"], r["Data"]) for r in resp["Records"]]
    assert len(raw) < len(records) / 10, "aggregation should pack many records per Kinesis record"
    by_key: dict[str, list[int]] = {}
    for key, blob in raw:
        for user_key, data in deaggregate(key, blob):
            doc = orjson.loads(data)
            assert doc["k"] == user_key == key
            by_key.setdefault(key, []).append(doc["n"])
    for key, ns in by_key.items():
        assert ns == sorted(ns), key
    assert sorted(n for ns in by_key.values() for n in ns) == [r.seq for r in records]
