"""The sink's buffer bounds: ``max_buffered_bytes`` holds the source back (``put_many``, which the pipeline's read
loop awaits, waits) until Kinesis acknowledges records, however much room ``max_buffered_records`` leaves.

Kinesis is played by a stand-in for the sink's own PutRecords client that accepts every request once released
(the sink against real Kinesis-API servers is tested in tests/integration/test_kinesis_sink.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from cdcstream.config import TargetConfig
from cdcstream.records import Record
from cdcstream.sinks.batching import Batch
from cdcstream.sinks.kinesis import RECORD_OVERHEAD, KinesisSink
from cdcstream.sinks.putrecords import PutRecordsResult

MIB = 1024 * 1024


class _Kinesis:
    """Accepts every request, but only after ``release`` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def put_records(self, batch: Batch) -> PutRecordsResult:
        await self.release.wait()
        return PutRecordsResult(0, None, None)

    async def close(self) -> None:
        pass


async def test_byte_bound_holds_the_source_back_until_records_are_acknowledged() -> None:
    acked: list[Record] = []

    def on_ack(records: Sequence[Record]) -> None:
        acked.extend(records)

    cfg = TargetConfig(stream_name="s", max_buffered_records=1_000_000, max_buffered_bytes=MIB, linger_ms=0)
    sink = KinesisSink(cfg, on_ack)
    kinesis = _Kinesis()
    sink._client = kinesis  # type: ignore[assignment]
    records = [Record(partition_key=f"k{i % 7}", data=b"x" * 1000, seq=i) for i in range(4000)]
    per_record = 1000 + 2 + RECORD_OVERHEAD
    run = asyncio.create_task(sink.run())
    put = asyncio.create_task(sink.put_many(records, 0, len(records)))
    await asyncio.sleep(0.2)
    assert not put.done(), "the source is held back"
    # Everything up to the bound was taken (the record that crosses it included), nothing after it.
    assert sink.outstanding == -(-MIB // per_record)
    assert MIB <= sink.outstanding_bytes < MIB + per_record
    assert sink.room == 0
    assert not acked
    kinesis.release.set()
    assert await put == len(records)
    assert await sink.drain(timeout=30)
    assert [r.seq for r in sorted(acked, key=lambda r: r.seq)] == list(range(4000))
    assert sink.outstanding == 0 and sink.outstanding_bytes == 0
    await sink.close()
    run.cancel()
    await asyncio.gather(run, return_exceptions=True)
