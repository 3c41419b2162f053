"""Commit -> Kinesis-acknowledged latency at a steady rate of changes, through an endpoint with a realistic round trip.

Method (bench/README.md): a private PostgreSQL 15 and the 10-column bench table; ``cdcstream run`` with its default
[target] settings (plus ``include_transaction_details``, so each record carries its ``commit-timestamp``) streams
into ``bench/fake_kinesis.py`` with 8 shards of 1,000 records/s each, answering every PutRecords request after a
random 10-30 ms. A writer commits transactions of ``--tx-rows`` INSERTs at a steady ``--rates`` changes/s (one
commit every tx_rows/rate seconds, on a fixed schedule). For each record the endpoint notes how long after its
source commit it answered the request carrying it (the record's acknowledgement); after a warm-up the figures of
``--seconds`` of steady writing are its p50/p90/p99/max. The daemon's own ``cdcstream_end_to_end_lag_seconds``
histogram (the oldest record of each request) is read from /metrics beside them.

    python bench/latency_bench.py [--rates 1000,5000] [--seconds 30] [--tx-rows 10] [--delay-ms 10,30]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PG_TABLE,
    bench_postgres,
    cpu_seconds,
    machine_line,
    postgres_source,
    running_daemon,
    work_dir,
    write_config,
)
from tests.support import free_port  # noqa: E402
from tests.support.fullload import fake_kinesis  # noqa: E402
from tests.support.postgres import CDC_PASSWORD, CDC_USER  # noqa: E402

TARGET = """include_transaction_details = true
message_format = "json-unformatted"
shard_rate_limit = false"""
ROW = "(%s, 'name ' || %s, %s, 1.5, now(), true, '{\"k\": 1}', md5(%s::text), 0.5, gen_random_uuid())"


def stats(url: str, reset: bool = False) -> dict[str, object]:
    """The fake endpoint's counters and latency percentiles (its non-Kinesis ``Stats`` call)."""
    body = json.dumps({"Reset": reset}).encode()
    req = urllib.request.Request(url, data=body, headers={"X-Amz-Target": "Kinesis_20131202.Stats"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def ready(url: str) -> bool:
    """Whether the daemon's /readyz answers 200 (started, the source connected)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def histogram_quantiles(metrics_url: str, name: str) -> dict[str, float]:
    """p50 and p99 (upper bucket bounds) and the mean of histogram ``name`` on the daemon's /metrics."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        lines = resp.read().decode().splitlines()
    buckets: list[tuple[float, float]] = []
    total = count = 0.0
    for line in lines:
        if line.startswith(f"{name}_bucket{{"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((float(le), float(line.rsplit(" ", 1)[1])))
        elif line.startswith(f"{name}_sum{{"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith(f"{name}_count{{"):
            count = float(line.rsplit(" ", 1)[1])
    buckets.sort()
    out = {"mean": total / count if count else float("nan")}
    for q in (0.5, 0.99):
        out[f"p{round(q * 100)}<="] = next((le for le, n in buckets if n >= q * count), float("inf"))
    return out


def write_steadily(dsn: str, rate: float, tx_rows: int, seconds: float, first_id: int) -> int:
    """Commit ``tx_rows`` inserts every ``tx_rows / rate`` seconds for ``seconds``; the next free id."""
    period = tx_rows / rate
    values = ", ".join([ROW] * tx_rows)
    with psycopg.connect(dsn) as conn:
        # PostgreSQL's default, which the private server's configuration turns off for the tests' speed: without it
        # a commit reaches the walsender only at the WAL writer's next flush (up to wal_writer_delay, 200 ms, later).
        conn.execute("SET synchronous_commit = on")
        start = next_at = time.monotonic()
        next_id = first_id
        while next_at - start < seconds:
            ids = range(next_id, next_id + tx_rows)
            conn.execute(f"INSERT INTO bench VALUES {values}", [x for i in ids for x in (i, i, i % 100, i)])
            conn.commit()
            next_id += tx_rows
            next_at += period
            time.sleep(max(0.0, next_at - time.monotonic()))
        late = time.monotonic() - next_at
        if late > 1:
            print(f"  (the writer fell {late:.1f} s behind its schedule: the rate was not reached)")
    return next_id


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="1000,5000", help="changes/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per rate")
    parser.add_argument("--tx-rows", type=int, default=10, help="rows per committed transaction")
    parser.add_argument("--delay-ms", default="10,30", help="the endpoint's round trip per request, LO,HI")
    args = parser.parse_args()
    tmp = work_dir("cdcstream-latency-")
    with contextlib.ExitStack() as stack:
        pg = bench_postgres(stack, tmp)
        db = pg.create_database("bench")
        pg.execute(db, PG_TABLE)
        pg.execute(db, "CREATE PUBLICATION bench_pub FOR TABLE bench")
        url = stack.enter_context(
            fake_kinesis("--shards", "8", "--shard-limit", "1000", "--delay-ms", args.delay_ms, "--latency")
        )
        port = free_port()
        config = write_config(
            tmp / "latency.toml",
            task_id="latency",
            source=postgres_source(pg, db, 'publication = "bench_pub"\nslot_name = "latency"'),
            endpoint_url=url,
            state_dir=tmp / "state",
            target=TARGET,
        )
        config.write_text(config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{port}"'))
        daemon = stack.enter_context(running_daemon(config))
        dsn = f"host=127.0.0.1 port={pg.port} dbname={db} user={CDC_USER} password={CDC_PASSWORD}"
        while not ready(f"http://127.0.0.1:{port}/readyz"):  # streaming
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            time.sleep(0.1)
        print(machine_line())
        print(f"endpoint round trip {args.delay_ms} ms, 8 shards x 1,000 records/s, {args.tx_rows} rows/transaction")
        next_id = 1
        for rate in (float(r) for r in args.rates.split(",")):
            next_id = write_steadily(dsn, rate, args.tx_rows, 5.0, next_id)  # warm-up, not counted
            time.sleep(1)
            stats(url, reset=True)
            cpu0 = cpu_seconds(daemon.pid)
            next_id = write_steadily(dsn, rate, args.tx_rows, args.seconds, next_id)
            time.sleep(2)  # the last commits' records reach the endpoint
            cpu = cpu_seconds(daemon.pid) - cpu0
            counters = stats(url)
            got = counters["latency"]
            assert isinstance(got, dict) and got.get("count"), f"no latency noted: {got}"
            ms = {k: f"{1000 * v:.0f}" for k, v in got.items() if k != "count"}
            print(
                f"  {rate:>6,.0f} changes/s: {got['count']:>7,} records  commit->ack p50 {ms['p50']} ms  "
                f"p90 {ms['p90']} ms  p99 {ms['p99']} ms  max {ms['max']} ms  "
                f"daemon CPU {100 * cpu / (args.seconds + 2):.0f} %  ({counters['requests']} requests, "
                f"{counters['throttled']} entries throttled in all)"
            )
        hist = histogram_quantiles(f"http://127.0.0.1:{port}/metrics", "cdcstream_end_to_end_lag_seconds")
        print(
            "  the daemon's end_to_end_lag_seconds (oldest record per request, all rates): "
            + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in hist.items())
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
