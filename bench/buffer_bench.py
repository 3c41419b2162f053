"""Memory per record buffered in the sink: what ``max_buffered_records`` / ``max_buffered_bytes`` cost in RAM.

Maps N synthetic change events of the 10-column table of mapping_bench.py (default mapping, ``json-unformatted``,
schema-table partition key) in 1,000-event batches, as the pipeline does, and puts the records into a Kinesis sink
that never sends them, so every one stays buffered as while Kinesis is slow or down. Prints the process's resident
memory growth per record (the allocator's own overhead included), the Python objects traced per record, the
average record size, and what ``max_buffered_bytes`` counts per record (data + partition key + RECORD_OVERHEAD).

    python bench/buffer_bench.py [--records 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import platform
import sys
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.mapping_bench import events  # noqa: E402
from cdcstream.checkpoints.watermark import Watermark  # noqa: E402
from cdcstream.config import TargetConfig  # noqa: E402
from cdcstream.mapping.envelope import Mapper  # noqa: E402
from cdcstream.mapping.rules import MappingRules  # noqa: E402
from cdcstream.sinks.kinesis import KinesisSink  # noqa: E402


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


async def buffer(n: int, *, trace: bool) -> tuple[float, float, float]:
    """(RSS growth per record, average data bytes, bytes traced per record) for ``n`` buffered records."""
    cfg = TargetConfig(stream_name="s", message_format="json-unformatted", max_buffered_records=1_000_000)
    mapper = Mapper(MappingRules(), cfg, "bench")
    sink = KinesisSink(cfg, lambda records: None)
    watermark = Watermark()
    data = 0
    gc.collect()
    before = rss_bytes()
    if trace:
        tracemalloc.start()
    for _ in range(0, n, 1000):
        records = mapper.map(events(1000))
        for record in records:
            record.seq = watermark.issue()
            data += len(record.data)
        await sink.put_many(records, 0, len(records))
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] / n if trace else 0.0
    tracemalloc.stop()
    grown = (rss_bytes() - before) / n
    counted = sink.outstanding_bytes / n
    await sink.close()
    return grown, data / n, traced if trace else counted


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    grown, data, counted = asyncio.run(buffer(args.records, trace=False))
    print(f"{args.records} buffered records, {data:.0f} bytes of data each on average")
    print(f"  resident memory per record       {grown:8.0f} bytes")
    print(f"  counted by max_buffered_bytes    {counted:8.0f} bytes")
    _, _, traced = asyncio.run(buffer(args.records, trace=True))
    print(f"  Python objects traced per record {traced:8.0f} bytes (tracemalloc; RSS above includes the allocator)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
