"""The PutRecords request body written by hand: the JSON PutRecords expects, entries in batch order."""

from __future__ import annotations

import base64

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcstream.errors import SinkRetriableError
from cdcstream.records import Record, put_records_entry
from cdcstream.sinks import putrecords
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


# --- the compiled body builder (put_records_body, sinks/_putrecords.c) against build_plain_body, byte for byte ---

COMPILED_BODY = putrecords._COMPILED_BODY
needs_compiled = pytest.mark.skipif(COMPILED_BODY is None, reason="the compiled extension is not built (or pure)")

# Keys: any text (Python's own strings, so no lone surrogates: Kinesis keys are Unicode), with the characters
# JSON escapes over-represented; data: any bytes, every length modulo 3 (base64 padding).
_KEYS = st.one_of(
    st.text(min_size=1, max_size=40),
    st.text(alphabet=st.sampled_from('"\\/\x00\x01\x1f\x7f\b\t\n\f\ré€😀\u2028k.'), min_size=1, max_size=12),
)
_DATAS = st.lists(st.binary(max_size=70), min_size=1, max_size=5)


@st.composite
def _batches(draw: st.DrawFn) -> Batch:
    batch = _batch(draw(st.lists(st.tuples(_KEYS, _DATAS), max_size=8)))
    for record in batch.records:
        # Some records carry a worker-built entry: under the key sent, or under another (a hashed long key).
        how = draw(st.sampled_from(["none", "same", "other"]))
        if how != "none":
            key = record.partition_key if how == "same" else record.partition_key + "-long"
            record.entry = put_records_entry(record.data, key)
            record.partition_key = key
    return batch


@needs_compiled
@settings(max_examples=400, deadline=None)
@given(_batches())
def test_compiled_body_is_the_reference_body_byte_for_byte(batch: Batch) -> None:
    assert COMPILED_BODY is not None
    client = _client()
    reference = client.build_plain_body(batch)
    assert COMPILED_BODY(client._head, batch.records, batch.keys, batch.counts) == reference
    assert client.build_body(batch) == reference
    # And the reference is what PutRecords reads: each record under the key sent.
    doc = orjson.loads(reference)
    sent = [(e["PartitionKey"], base64.b64decode(e["Data"])) for e in doc["Records"]]
    expected = [(k, r.data) for k, n, start in _spans(batch) for r in batch.records[start : start + n]]
    assert sent == expected


def _spans(batch: Batch) -> list[tuple[str, int, int]]:
    out = []
    start = 0
    for key, n in zip(batch.keys, batch.counts, strict=True):
        out.append((key, n, start))
        start += n
    return out


@needs_compiled
def test_compiled_body_refuses_a_batch_whose_counts_do_not_match_its_records() -> None:
    assert COMPILED_BODY is not None
    client = _client()
    short = _batch([("k", [b"a", b"b"])])
    for counts in ([3], [1], [-1]):
        with pytest.raises(ValueError, match="add up"):
            COMPILED_BODY(client._head, short.records, short.keys, counts)
