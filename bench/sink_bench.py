"""Throughput and CPU cost of KinesisSink against bench/fake_kinesis.py (started here as a separate process).

For each scenario (one partition key / one key per record; 0 % / 10 % injected per-entry throttling) it pushes
N ~300-byte records through the sink and prints records/s, payload MB/s, the sink's CPU µs per record (process
CPU time of this process, which runs only the sink), resends (entries sent / records - 1) and duplicates
(entries accepted more than once / records: what a consumer sees twice).

``--put-many N`` hands the records to the sink in runs of N with ``put_many`` (as the pipeline does: one await per
run, bounded by the sink's room) instead of one ``put`` per record; ``--failures 0`` runs only the scenarios without
injected throttling.

    python bench/sink_bench.py [--records 200000] [--runs 3] [--put-many 2000] [--failures 0,0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cdcstream.config import TargetConfig  # noqa: E402
from cdcstream.records import Record  # noqa: E402
from cdcstream.sinks.kinesis import KinesisSink  # noqa: E402
from tests.support.fullload import endpoint_stats, fake_kinesis  # noqa: E402


def quiet_sink() -> None:
    """Dummy credentials for the local endpoint, and only the sink's errors logged."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))


def _records(n: int, per_record_keys: bool) -> list[Record]:
    out = []
    now = time.time()
    for i in range(n):
        key = f"public.orders.{i}" if per_record_keys else "public.orders"
        doc = {
            "data": {"id": i, "customer": "c" * 40, "amount": "1234.50", "status": "shipped"},
            "metadata": {
                "timestamp": "2026-11-27T12:00:00.123456Z",
                "record-type": "data",
                "operation": "update",
                "partition-key-type": "primary-key",
                "schema-name": "public",
                "table-name": "orders",
                "stream-position": f"0/{i:012X}",
            },
        }
        out.append(Record(partition_key=key, data=orjson.dumps(doc), seq=i, commit_epoch=now))
    return out


async def _run_once(
    url: str, records: list[Record], ordering: str, put_many: int = 0, **overrides: Any
) -> tuple[float, float, int]:
    acked = 0

    def on_ack(recs: object) -> None:
        nonlocal acked
        acked += len(recs)  # type: ignore[arg-type]

    cfg = TargetConfig(
        stream_name="bench",
        endpoint_url=url,
        linger_ms=5,
        max_in_flight_requests=4,
        retry_base_delay=0.005,
        retry_max_delay=0.05,
        ordering=ordering,
        **{"shard_rate_limit": False, **overrides},  # by default measure the sink, not the per-shard budget
    )
    sink = KinesisSink(cfg, on_ack)
    await sink.start()
    task = asyncio.create_task(sink.run())
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    if put_many:
        done = 0
        while done < len(records):  # as the pipeline's _emit_many: runs bounded by the sink's room
            end = min(len(records), done + put_many, done + max(1, sink.room))
            done += await sink.put_many(records, done, end)
    else:
        for r in records:
            await sink.put(r)
    ok = await sink.drain(600)
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    await sink.close()
    await asyncio.gather(task, return_exceptions=True)
    assert ok and acked == len(records), (ok, acked)
    return wall, cpu, acked


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--put-many", type=int, default=0, metavar="N", help="put_many runs of N records (0: put each)")
    ap.add_argument("--failures", default="0,0.1", help="injected per-entry failure rates, comma-separated")
    args = ap.parse_args()
    quiet_sink()
    print(f"{'scenario':44} {'rec/s':>9} {'MB/s':>7} {'cpu µs/rec':>10} {'resends':>8} {'duplicates':>10}")
    for fail in (float(f) for f in args.failures.split(",")):
        with fake_kinesis("--fail-rate", str(fail)) as url:
            for per_key, ordering in itertools.product((False, True), ("per-key", "none")):
                records = _records(args.records, per_key)
                payload = sum(len(r.data) + len(r.partition_key) for r in records)
                rates, cpus, mbs, resends, dups = [], [], [], [], []
                for _ in range(args.runs):
                    before = endpoint_stats(url)
                    wall, cpu, n = asyncio.run(_run_once(url, records, ordering, args.put_many))
                    after = endpoint_stats(url)
                    sent = after["entries"] - before["entries"]
                    failed = after["failed"] - before["failed"]
                    rates.append(n / wall)
                    mbs.append(payload / wall / 1e6)
                    cpus.append(cpu / n * 1e6)
                    resends.append(sent / n - 1)
                    dups.append((sent - failed - n) / n)
                name = f"{'per-record keys' if per_key else '1 key'}, {fail:.0%} failures, {ordering}"
                print(
                    f"{name:44} {statistics.median(rates):9.0f} {statistics.median(mbs):7.2f} "
                    f"{statistics.median(cpus):10.1f} {statistics.median(resends):8.3f} "
                    f"{statistics.median(dups):10.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
