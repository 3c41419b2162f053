"""CPU cost per row of the hot path without I/O: pgoutput decoding, mapping + JSON serialisation, batching
(one key; a key per record as in a full load, with and without per-shard budgets), and decode + map + serialise
in one go by the reference (pure) path and by the compiled fused path (sources/postgres/fused.py) over the same
frames (``CDCSTREAM_PURE=1`` makes the second line pure too), with the default ``schema-table`` partition key and
with a ``primary-key`` one (an object mapping; the fused path renders the key too).

Frames are captured once from a private PostgreSQL 15 (a 10-column table: bigint key, text, int, numeric,
timestamptz, bool, jsonb, text, float8, uuid; 1000 INSERTs and 1000 UPDATEs), then each stage runs over them
repeatedly in this process.

    python bench/hotpath_bench.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import best_of  # noqa: E402
from cdcstream.changes import ChangeEvent  # noqa: E402
from cdcstream.config import TargetConfig  # noqa: E402
from cdcstream.mapping.envelope import Mapper  # noqa: E402
from cdcstream.mapping.ruleparse import parse_rules  # noqa: E402
from cdcstream.mapping.rules import MappingRules  # noqa: E402
from cdcstream.records import Record  # noqa: E402
from cdcstream.sinks.batching import Batcher  # noqa: E402
from cdcstream.sinks.shards import ShardLimiter, ShardMap  # noqa: E402
from cdcstream.sources.postgres import fused  # noqa: E402
from cdcstream.sources.postgres.decoder import Decoder  # noqa: E402
from tests.support.postgres import start_private_postgres  # noqa: E402
from tests.unit.fixtures.pgoutput.capture import BENCH, capture  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    server = start_private_postgres()
    try:
        frames = [bytes.fromhex(f) for f in capture(server, "bench", BENCH, "bench", [], out=Path(tempfile.mkdtemp()))]
    finally:
        server.stop()
    events = [i for i in Decoder().feed(frames) if isinstance(i, ChangeEvent)]
    rows = len(events)

    def decode() -> None:
        Decoder().feed(frames)

    results = {"decode (pgoutput -> ChangeEvent)": best_of(args.repeat, decode, rows)}
    for fmt in ("json-unformatted", "json"):
        mapper = Mapper(MappingRules(), TargetConfig(stream_name="s", message_format=fmt), "bench")
        results[f"map + serialise ({fmt})"] = best_of(args.repeat, lambda m=mapper: m.map(events), rows)
    records = Mapper(MappingRules(), TargetConfig(stream_name="s", message_format="json-unformatted"), "b").map(events)

    # A full load keys each row by its primary key: every record a new partition key (the sink's fast lane).
    keyed = [dataclasses.replace(r, partition_key=f"public.bench.{i}") for i, r in enumerate(records)]
    top = 2**128

    def batching(recs: list[Record] = records, shards: int = 0) -> None:
        b = Batcher()
        if shards:  # budgets high enough never to bind: the cost of checking them
            ranges = [(top // shards * i, top // shards * (i + 1) - 1, f"s{i}") for i in range(shards)]
            b.limiter = ShardLimiter(ShardMap(ranges), 1e12, 1e15, 0.0)
        for r in recs:
            b.add(r.partition_key, r, 0.0, len(r.data) + len(r.partition_key))
        while (batch := b.take_batch(1.0, 500, 5 * 1024 * 1024)) is not None:
            b.complete(batch, None, 1.0)  # None: every entry accepted

    # Decode and map together: the fused path moves work from one stage to the other, so only the sum compares.
    compact = TargetConfig(stream_name="s", message_format="json-unformatted")
    whole = Mapper(MappingRules(), compact, "bench")
    sel = {"rule-type": "selection", "rule-id": "1", "rule-name": "all", "rule-action": "include"}
    om = {"rule-type": "object-mapping", "rule-id": "2", "rule-name": "pk", "rule-action": "map-record-to-record"}
    locator = {"object-locator": {"schema-name": "%", "table-name": "%"}}
    pk_rules = parse_rules(
        {"rules": [sel | locator, om | locator | {"mapping-parameters": {"partition-key-type": "primary-key"}}]}, "pk"
    )
    by_key = Mapper(pk_rules, compact, "bench")

    def decode_map(fuse: bool, mapper: Mapper = whole) -> None:
        decoder = Decoder(fuse=mapper.fused_columns if fuse else None)
        mapper.map([i for i in decoder.feed(frames) if isinstance(i, ChangeEvent)])

    results["decode + map (pure)"] = best_of(args.repeat, lambda: decode_map(False), rows)
    results["decode + map (fused)"] = best_of(args.repeat, lambda: decode_map(True), rows)
    results["decode + map (pure, primary-key)"] = best_of(args.repeat, lambda: decode_map(False, by_key), rows)
    results["decode + map (fused, primary-key)"] = best_of(args.repeat, lambda: decode_map(True, by_key), rows)
    results["batch (one key, 500/request)"] = best_of(args.repeat, batching, rows)
    results["batch (a key per record)"] = best_of(args.repeat, lambda: batching(keyed), rows)
    results["batch (a key per record, 64 shard budgets)"] = best_of(args.repeat, lambda: batching(keyed, 64), rows)
    print(f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{rows} row changes, best of {args.repeat}; row path: {fused.path_name()}")
    for name, us in results.items():
        print(f"  {name:44s} {us:6.2f} µs/row   {1e6 / us:>12,.0f} rows/s")
    total = sum(results[k] for k in ("decode (pgoutput -> ChangeEvent)", "map + serialise (json-unformatted)"))
    total += results["batch (one key, 500/request)"]
    print(f"  {'total (json-unformatted)':44s} {total:6.2f} µs/row   {1e6 / total:>12,.0f} rows/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
