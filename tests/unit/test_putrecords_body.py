"""The PutRecords request body written by hand: the JSON PutRecords expects, entries in batch order."""

from __future__ import annotations

import base64

import orjson

from cdcstream.records import Record
from cdcstream.sinks.batching import Batch, key_size
from cdcstream.sinks.putrecords import PutRecordsClient


def _client() -> PutRecordsClient:
    return PutRecordsClient(
        stream_name='s"1', region="us-east-1", endpoint_url="http://127.0.0.1:1", credentials=None, request_timeout=1
    )


def _batch(groups: list[tuple[str, list[bytes]]]) -> Batch:
    batch = Batch()
    for key, datas in groups:
        batch.keys.append(key)
        batch.counts.append(len(datas))
        batch.key_sizes.append(key_size(key))
        batch.records.extend(Record(key, d) for d in datas)
    return batch


def test_body_has_every_entry_in_order_for_single_and_repeated_keys() -> None:
    client = _client()
    groups = [("hot", [b"a", b"b"]), ("pk1", [b"{}\n"]), ('k"\\é', [b"\x00\xff"]), ("hot", [b"c"]), ("pk2", [b""])]
    for _ in range(2):  # the second time "hot" comes from the tail cache
        doc = orjson.loads(client.build_body(_batch(groups)))
        assert doc["StreamName"] == 's"1'
        entries = [(e["PartitionKey"], base64.b64decode(e["Data"])) for e in doc["Records"]]
        assert entries == [(k, d) for k, datas in groups for d in datas]
