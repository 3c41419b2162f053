"""Per-shard budgets against an endpoint that enforces Kinesis' per-shard limit (1,000 records/s).

For 1, 4 and 16 shards, one key vs a key per record, the sink runs with its shard token buckets on and off
into ``fake_kinesis.py --shard-limit 1000``: records/s, throttled entries and duplicates per record. The point
of the budgets is to not provoke throttling in the first place (each throttle costs resends, and with per-key
order, duplicates).

    python bench/shard_bench.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.sink_bench import _records, _run_once, quiet_sink  # noqa: E402
from tests.support.fullload import endpoint_stats, fake_kinesis  # noqa: E402

LIMIT = 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="records sent = seconds x limit x usable shards")
    args = ap.parse_args()
    quiet_sink()
    print(f"{'shards':>6} {'keys':>16} {'budgets':>8} {'rec/s':>8} {'throttled/rec':>13} {'duplicates/rec':>14}")
    for shards in (1, 4, 16):
        with fake_kinesis("--shards", str(shards), "--shard-limit", str(LIMIT)) as url:
            for per_key in (False, True):
                n = int(args.seconds * LIMIT * (shards if per_key else 1))
                records = _records(n, per_key)
                for budgets in (True, False):
                    time.sleep(1.1)  # let the server's buckets refill between runs
                    before = endpoint_stats(url)
                    wall, _cpu, acked = asyncio.run(_run_once(url, records, "per-key", shard_rate_limit=budgets))
                    after = endpoint_stats(url)
                    sent = after["entries"] - before["entries"]
                    throttled = after["throttled"] - before["throttled"]
                    keys = "a key per record" if per_key else "one key"
                    print(
                        f"{shards:6d} {keys:>16} {'on' if budgets else 'off':>8} {acked / wall:8.0f} "
                        f"{throttled / n:13.3f} {(sent - throttled - n) / n:14.3f}",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
