"""The PutRecords request body written by hand: the JSON PutRecords expects, entries in batch order."""

from __future__ import annotations

import base64

import orjson
import pytest

from cdcstream.errors import SinkRetriableError
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


def _answer(entries: list[dict[str, str]], failed: int | None = None) -> bytes:
    doc: dict[str, object] = {"Records": entries, "EncryptionType": "NONE"}
    if failed is not None:
        doc["FailedRecordCount"] = failed
    return orjson.dumps(doc)


OK = {"SequenceNumber": "4959", "ShardId": "shardId-000000000000"}
THROTTLED = {"ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "Rate exceeded {x}"}


def test_answers_are_read_per_entry_unless_every_entry_succeeded() -> None:
    client = _client()
    ok = client._parse_ok(_answer([OK] * 3, 0), 3)
    assert (ok.failed, ok.codes) == (0, None)
    part = client._parse_ok(_answer([OK, THROTTLED, OK], 1), 3)
    assert part.failed == 1 and part.codes == [None, "ProvisionedThroughputExceededException", None]
    # A server that forgets FailedRecordCount still has its errors seen.
    assert client._parse_ok(_answer([OK, THROTTLED]), 2).failed == 1
    # An entry with neither outcome is a failure to retry, never taken for a success.
    for odd_entry in ({"ShardId": "shardId-000000000000"}, {}):
        odd = client._parse_ok(_answer([OK, odd_entry, OK], 0), 3)
        assert odd.failed == 1 and odd.codes == [None, "InternalFailure", None]


@pytest.mark.parametrize(
    "raw",
    [_answer([OK] * 2, 0), _answer([OK] * 4, 0), b'{"Records": [', b"<html>busy</html>"],
)
def test_an_answer_not_matching_the_request_is_resent_whole(raw: bytes) -> None:
    with pytest.raises(SinkRetriableError):
        _client()._parse_ok(raw, 3)
