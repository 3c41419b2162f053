"""KinesisSink against real Kinesis-API servers (moto and kinesalite), directly and through the fault proxy."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from cdcstream.config import TargetConfig
from cdcstream.errors import OversizeRecordError, SinkError
from cdcstream.records import Record
from cdcstream.sinks.kinesis import KinesisSink, effective_partition_key
from tests.support.faultproxy import FaultProxy
from tests.support.kinesis import REGION, KinesisEndpoint


class Acks:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def __call__(self, recs: Sequence[Record]) -> None:
        self.records.extend(recs)

    @property
    def seqs(self) -> set[int]:
        return {r.seq for r in self.records}


def _cfg(stream: str, url: str, **kw: Any) -> TargetConfig:
    base: dict[str, Any] = {
        "stream_name": stream,
        "region": REGION,
        "endpoint_url": url,
        "linger_ms": 5,
        "retry_base_delay": 0.01,
        "retry_max_delay": 0.2,
        "request_timeout": 5,
    }
    base.update(kw)
    return TargetConfig(**base)


def _records(n: int, nkeys: int, start: int = 0) -> list[Record]:
    out = []
    for seq in range(start, start + n):
        key = f"key-{seq % nkeys}"
        out.append(Record(partition_key=key, data=orjson.dumps({"k": key, "n": seq}), seq=seq, label="t"))
    return out


@contextlib.asynccontextmanager
async def running(cfg: TargetConfig, acks: Acks) -> AsyncIterator[KinesisSink]:
    sink = KinesisSink(cfg, acks)
    await sink.start()
    task = asyncio.create_task(sink.run())
    try:
        yield sink
    finally:
        await sink.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)


async def _deliver(cfg: TargetConfig, records: list[Record], timeout: float = 60) -> Acks:
    acks = Acks()
    async with running(cfg, acks) as sink:
        for r in records:
            await sink.put(r)
        assert await sink.drain(timeout), f"not drained: {sink.outstanding} outstanding"
    return acks


def check_stream(rows: list[dict[str, Any]], records: list[Record], acks: Acks) -> int:
    """Every record is in the stream under its key, every ack was written, and per key the last occurrences
    are in put order. Returns the number of duplicates."""
    by_seq = {r.seq: r for r in records}
    written = [row["data"]["n"] for row in rows]
    assert set(written) == set(by_seq), "records missing from the stream"
    assert acks.seqs == set(by_seq), "records not acknowledged"
    assert acks.seqs <= set(written), "acknowledged a record that is not in the stream"
    per_key: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        n = row["data"]["n"]
        assert row["partition_key"] == effective_partition_key(by_seq[n].partition_key)
        assert row["data"]["k"] == by_seq[n].partition_key
        per_key[row["data"]["k"]].append(n)
    for key, seqs in per_key.items():
        last = {n: i for i, n in enumerate(seqs)}
        ordered = sorted(last, key=last.__getitem__)
        assert ordered == sorted(ordered), f"key {key}: last occurrences out of put order"
    return len(written) - len(set(written))


async def test_records_arrive_with_keys_and_data(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(1)
    records = _records(1200, 7)
    acks = await _deliver(_cfg(stream, kinesis_endpoint.endpoint_url), records)
    rows = await kinesis_endpoint.read_all(stream)
    assert len(rows) == 1200
    assert check_stream(rows, records, acks) == 0
    # no failures: per key, the stream is exactly put order
    for k in range(7):
        assert [row["data"]["n"] for row in rows if row["data"]["k"] == f"key-{k}"] == list(range(k, 1200, 7))


async def test_two_shards_and_long_keys(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(2)
    records = _records(600, 40)
    long_key = "L" * 300
    records += [
        Record(partition_key=long_key, data=orjson.dumps({"k": long_key, "n": 600 + i}), seq=600 + i) for i in range(5)
    ]
    acks = await _deliver(_cfg(stream, kinesis_endpoint.endpoint_url), records)
    rows = await kinesis_endpoint.read_all(stream)
    assert {row["shard"] for row in rows} == {r["shard"] for r in rows} and len({r["shard"] for r in rows}) == 2
    check_stream(rows, records, acks)


async def test_limits_read_and_oversize_record_fails(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(1)
    acks = Acks()
    async with running(_cfg(stream, kinesis_endpoint.endpoint_url), acks) as sink:
        assert sink.max_record_bytes == 1024 * 1024
        assert sink.max_request_bytes == 5 * 1024 * 1024
        # exactly at the limit (data + key) is fine
        ok = Record(partition_key="k", data=b"x" * (1024 * 1024 - 1), seq=1)
        await sink.put(ok)
        big = Record(partition_key="k", data=b"x" * (1024 * 1024), seq=2, label="public.blobs")
        with pytest.raises(OversizeRecordError, match=r"public\.blobs.*'k'.*1048577.*1048576"):
            await sink.put(big)
        assert await sink.drain(30)
    assert acks.seqs == {1}


async def test_large_records_respect_request_bytes(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(1)
    # 12 records of ~900 KiB: needs several requests under the 5 MiB request limit
    records = [
        Record(partition_key=f"k{i % 3}", data=orjson.dumps({"k": f"k{i % 3}", "n": i, "pad": "p" * 900_000}), seq=i)
        for i in range(12)
    ]
    acks = await _deliver(_cfg(stream, kinesis_endpoint.endpoint_url), records)
    check_stream(await kinesis_endpoint.read_all(stream), records, acks)


async def test_missing_stream_fails_at_start(kinesis_endpoint: KinesisEndpoint) -> None:
    sink = KinesisSink(_cfg("does-not-exist", kinesis_endpoint.endpoint_url), Acks())
    with pytest.raises(SinkError, match=r"does-not-exist.*create-stream"):
        await sink.start()
    await sink.close()


async def test_stream_deleted_while_running_stops_run(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(1)
    acks = Acks()
    sink = KinesisSink(_cfg(stream, kinesis_endpoint.endpoint_url), acks)
    await sink.start()
    task = asyncio.create_task(sink.run())
    await kinesis_endpoint.delete_stream(stream)
    await asyncio.sleep(0.1)
    for r in _records(10, 2):
        with contextlib.suppress(SinkError):
            await sink.put(r)
    with pytest.raises(SinkError, match=f"{stream}.*ResourceNotFoundException"):
        await asyncio.wait_for(task, 10)
    assert not acks.records
    await sink.close()


@pytest.mark.parametrize(
    ("rate", "mode"), [(0.1, "rewrite"), (0.5, "rewrite"), (0.5, "strip")], ids=["10pct", "50pct", "50pct-strip"]
)
async def test_partial_failures_keep_order(kinesis_endpoint: KinesisEndpoint, rate: float, mode: str) -> None:
    stream = await kinesis_endpoint.create_stream(2)
    records = _records(1500, 25)
    with FaultProxy(kinesis_endpoint.endpoint_url, seed=7, entry_failure_rate=rate, entry_mode=mode) as proxy:
        acks = await _deliver(_cfg(stream, proxy.url, max_in_flight_requests=4), records, timeout=120)
        assert proxy.counters["entries_failed"] > 0
    rows = await kinesis_endpoint.read_all(stream)
    dups = check_stream(rows, records, acks)
    if mode == "rewrite":
        assert dups >= proxy.counters["entries_failed_written"] > 0
    else:
        assert dups > 0  # later accepted entries of a key with a failure are resent


async def test_request_errors_resets_and_outage(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(2)
    records = _records(1500, 10)
    with FaultProxy(
        kinesis_endpoint.endpoint_url, seed=3, entry_failure_rate=0.05, request_error_rate=0.2, reset_rate=0.1
    ) as proxy:
        acks = Acks()
        async with running(_cfg(stream, proxy.url, max_buffered_records=500), acks) as sink:
            for i, r in enumerate(records):
                if i == 700:
                    proxy.outage(0.5)
                if i == 1000:
                    proxy.outage(0.3, kind="reset")
                await sink.put(r)
            assert await sink.drain(120)
        assert proxy.counters["request_500"] > 0 and proxy.counters["reset"] > 0
        assert proxy.counters["outage"] > 0
    check_stream(await kinesis_endpoint.read_all(stream), records, acks)


async def test_backpressure_bounds_outstanding(kinesis_endpoint: KinesisEndpoint) -> None:
    stream = await kinesis_endpoint.create_stream(1)
    acks = Acks()
    with FaultProxy(kinesis_endpoint.endpoint_url, latency=0.05) as proxy:
        async with running(_cfg(stream, proxy.url, max_buffered_records=500), acks) as sink:
            peak = 0
            for r in _records(1500, 5):
                await sink.put(r)
                peak = max(peak, sink.outstanding)
            assert peak <= 500
            assert await sink.drain(60)
    assert len(acks.seqs) == 1500


async def test_tail_prints_json_lines(kinesis_endpoint: KinesisEndpoint) -> None:
    import io

    from cdcstream.tail import tail

    stream = await kinesis_endpoint.create_stream(2)
    records = _records(30, 4)
    await _deliver(_cfg(stream, kinesis_endpoint.endpoint_url), records)
    out = io.StringIO()
    n = await tail(stream, region=REGION, endpoint_url=kinesis_endpoint.endpoint_url, follow=False, out=out)
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert n == 30 and len(lines) == 30
    assert {line["data"]["n"] for line in lines} == set(range(30))
    assert set(lines[0]) == {"shard", "sequence", "partition_key", "data"}
    out = io.StringIO()
    assert await tail(stream, region=REGION, endpoint_url=kinesis_endpoint.endpoint_url, limit=5, out=out) == 5
