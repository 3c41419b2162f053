"""A long Kinesis outage while writes go on: the daemon's memory stays bounded and nothing is lost once it ends.

Method (bench/README.md): a private PostgreSQL 15 and the 10-column bench table; ``cdcstream run`` with its default
queue sizes streams into ``bench/fake_kinesis.py`` (8 shards; records keyed by primary key, as in
``latency_bench.py``: with DMS's default ``schema-table`` key a table's records share one shard's 1,000 records/s,
and a backlog drains only as fast as that limit leaves room beside the writer). A writer commits
``--tx-rows``-row transactions at a steady ``--rate`` changes/s throughout. After ``--before`` seconds the fault
proxy between daemon and endpoint (tests/support/faultproxy.py) resets every connection, as when the network or the
service is down, for ``--outage`` seconds (default 600: ten minutes). The writer stops ``--after`` seconds after
the outage; the script then waits until the daemon's checkpoint reaches the last commit. It samples the daemon's
RSS once a second and prints its peak before, during and after the outage, the drain time, and the entries the
endpoint accepted (at least every row written: at-least-once may add repeats, never drop one).

    python bench/outage_bench.py [--rate 1000] [--outage 600] [--before 30] [--after 30] [--tx-rows 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PG_TABLE,
    bench_postgres,
    lsn_int,
    machine_line,
    postgres_source,
    read_checkpoint,
    running_daemon,
    work_dir,
    write_config,
)
from bench.latency_bench import MAPPING, write_steadily  # noqa: E402
from tests.support.faultproxy import FaultProxy  # noqa: E402
from tests.support.fullload import endpoint_stats, fake_kinesis, peak_rss_kib  # noqa: E402
from tests.support.postgres import CDC_PASSWORD, CDC_USER  # noqa: E402


def rss_kib(pid: int) -> int:
    """The process's resident memory now (VmRSS), in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def accepted(url: str) -> int:
    stats = endpoint_stats(url)
    return int(stats["entries"]) - int(stats["failed"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=1000.0, help="changes/s written throughout")
    parser.add_argument("--outage", type=float, default=600.0, help="seconds the endpoint is down")
    parser.add_argument("--before", type=float, default=30.0, help="seconds of normal streaming before the outage")
    parser.add_argument("--after", type=float, default=30.0, help="seconds of writing after the endpoint returns")
    parser.add_argument("--tx-rows", type=int, default=10)
    args = parser.parse_args()
    tmp = work_dir("cdcstream-outage-")
    with contextlib.ExitStack() as stack:
        pg = bench_postgres(stack, tmp)
        db = pg.create_database("bench")
        pg.execute(db, PG_TABLE)
        pg.execute(db, "CREATE PUBLICATION bench_pub FOR TABLE bench")
        url = stack.enter_context(fake_kinesis("--shards", "8"))
        proxy = stack.enter_context(FaultProxy(url))
        mapping = tmp / "mapping.json"
        mapping.write_text(json.dumps(MAPPING))
        config = write_config(
            tmp / "outage.toml",
            task_id="outage",
            source=postgres_source(pg, db, 'publication = "bench_pub"\nslot_name = "outage"\nheartbeat_interval = 1'),
            endpoint_url=proxy.url,
            state_dir=tmp / "state",
            # the default queue sizes, retries and requests in flight: those bound the memory this measures
            target='message_format = "json-unformatted"',
            interval=0.5,
            top=f'table_mappings = "{mapping}"',
        )
        daemon = stack.enter_context(running_daemon(config))
        ckpt = tmp / "state" / "outage.checkpoint.json"
        while read_checkpoint(ckpt) is None:  # started and streaming (heartbeats checkpoint)
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            time.sleep(0.2)
        print(machine_line())
        seconds = args.before + args.outage + args.after
        print(
            f"writing {args.rate:,.0f} changes/s for {seconds:.0f} s; the endpoint is down from {args.before:.0f} s "
            f"for {args.outage:.0f} s",
            flush=True,
        )
        dsn = f"host=127.0.0.1 port={pg.port} dbname={db} user={CDC_USER} password={CDC_PASSWORD}"
        written: list[int] = []
        writer = threading.Thread(
            target=lambda: written.append(write_steadily(dsn, args.rate, args.tx_rows, seconds, 1) - 1), daemon=True
        )
        base = accepted(url)
        t0 = time.monotonic()
        writer.start()
        peaks = {"before": 0, "outage": 0, "after": 0}
        phase = "before"
        while writer.is_alive():
            now = time.monotonic() - t0
            if phase == "before" and now >= args.before:
                proxy.outage(args.outage, kind="reset", every_call=True)
                phase = "outage"
                print(f"  {now:6.0f} s outage begins ({accepted(url) - base:,} entries accepted so far)", flush=True)
            elif phase == "outage" and now >= args.before + args.outage:
                phase = "after"
                print(f"  {now:6.0f} s outage ends", flush=True)
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            peaks[phase] = max(peaks[phase], rss_kib(daemon.pid))
            if phase == "outage" and int(now) % 60 == 0:
                print(f"  {now:6.0f} s RSS {rss_kib(daemon.pid) / 1024:.0f} MiB", flush=True)
            if phase == "after" and int(now) % 5 == 0:
                print(f"  {now:6.0f} s {accepted(url) - base:,} entries accepted", flush=True)
            time.sleep(1)
        writer.join()
        end_lsn = lsn_int(pg.execute(db, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
        t_drain = time.monotonic()
        while True:
            position = read_checkpoint(ckpt)
            if position is not None and lsn_int(position["lsn"]) >= end_lsn:
                break
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            peaks["after"] = max(peaks["after"], rss_kib(daemon.pid))
            time.sleep(0.5)
        drain = time.monotonic() - t_drain
        total = accepted(url) - base
        rows = written[0]
        print(f"rows written: {rows:,}; entries accepted: {total:,}; drained {drain:.1f} s after the writer stopped")
        print(
            "daemon RSS peak (MiB): "
            + ", ".join(f"{k} {v / 1024:.0f}" for k, v in peaks.items())
            + f"; VmHWM {peak_rss_kib(daemon.pid) / 1024:.0f}"
        )
        assert total >= rows, "fewer entries accepted than rows written"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
