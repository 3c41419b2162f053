"""KPL aggregation, checked with AWS's own de-aggregation library (aws-kinesis-agg), not with our code."""

from __future__ import annotations

import base64

from aws_kinesis_agg.deaggregator import deaggregate_records
from hypothesis import given
from hypothesis import strategies as st

from cdcstream.sinks.aggregation import aggregate, aggregate_size, pack


def deaggregate(key: str, blob: bytes) -> list[tuple[str, bytes]]:
    event = {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "sequenceNumber": "1",
            "approximateArrivalTimestamp": 0,
            "partitionKey": key,
            "data": base64.b64encode(blob),
        }
    }
    return [
        (r["kinesis"]["partitionKey"], base64.b64decode(r["kinesis"]["data"])) for r in deaggregate_records([event])
    ]


@given(st.text(min_size=1, max_size=256), st.lists(st.binary(max_size=3000), min_size=1, max_size=40))
def test_library_deaggregates_what_we_aggregate(key: str, datas: list[bytes]) -> None:
    blob = aggregate(key, datas)
    assert len(blob) == aggregate_size(len(key.encode()), [len(d) for d in datas])
    assert deaggregate(key, blob) == [(key, d) for d in datas]


@given(st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=200), st.integers(1, 64))
def test_pack_keeps_order_and_respects_the_record_limit(lens: list[int], key_len: int) -> None:
    limit = 8192
    counts = pack(key_len, lens, limit)
    assert sum(counts) == len(lens) and all(c > 0 for c in counts)
    i = 0
    for c in counts:
        group = lens[i : i + c]
        if c > 1:
            assert aggregate_size(key_len, group) + key_len <= limit
        i += c
