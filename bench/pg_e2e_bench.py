"""End-to-end PostgreSQL -> cdcstream -> Kinesis throughput, beside the walsender's own ceiling.

Method (bench/README.md): a private PostgreSQL 15; a 10-column table; N row changes (half INSERTs, half UPDATEs,
in transactions of 10,000) generated *before* the readers start, so every reader drains the same backlog:

1. ceiling: ``pg_recvlogical`` (C client) drains a pgoutput slot created before the load, to the end LSN;
2. cdcstream: ``cdcstream run`` drains its own slot into ``bench/fake_kinesis.py`` (a minimal PutRecords
   endpoint, so Kinesis emulators are not the bottleneck) until its checkpoint reaches the end LSN.

Prints rows/s for both, the ratio, and the daemon's CPU µs per row (utime+stime from /proc).

    python bench/pg_e2e_bench.py [--rows 400000]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, lsn_int, stop_all  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.postgres import PG_BIN, start_private_postgres  # noqa: E402

TABLE = (
    "CREATE TABLE bench (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2), "
    "created timestamptz DEFAULT now(), flag boolean, payload jsonb, c8 text, c9 double precision, c10 uuid)"
)
INSERT = (
    "INSERT INTO bench SELECT g, 'name ' || g, g % 100, (g % 1000) / 7.0, now(), g % 2 = 0, "
    "jsonb_build_object('k', g), md5(g::text), g / 3.0, gen_random_uuid() FROM generate_series({lo}, {hi}) g"
)
UPDATE = "UPDATE bench SET qty = qty + 1, c9 = c9 * 2 WHERE id BETWEEN {lo} AND {hi}"
TX = 10_000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000, help="row changes (half inserts, half updates)")
    parser.add_argument("--profile", metavar="FILE", help="record a py-spy profile of the daemon (speedscope JSON)")
    args = parser.parse_args()
    half = args.rows // 2
    tmp = Path(tempfile.mkdtemp(prefix="cdcstream-bench-"))
    tmp.chmod(0o755)  # the server runs as the postgres user and must reach its directory
    pg = start_private_postgres(tmp / "pg", extra_conf="max_wal_size = 4GB\nshared_buffers = 512MB\n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db = pg.create_database("bench")
        pg.execute(db, TABLE)
        pg.execute(db, "CREATE PUBLICATION bench_pub FOR TABLE bench")
        pg.execute(db, "SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')")
        pg.execute(db, "SELECT pg_create_logical_replication_slot('cdcstream', 'pgoutput')")
        t0 = time.monotonic()
        for lo in range(1, half + 1, TX):
            pg.execute(db, INSERT.format(lo=lo, hi=min(lo + TX - 1, half)))
        for lo in range(1, half + 1, TX):
            pg.execute(db, UPDATE.format(lo=lo, hi=min(lo + TX - 1, half)))
        end_lsn = pg.execute(db, "SELECT pg_current_wal_insert_lsn()::text")[0][0]  # async commit: not the write pos
        print(f"generated {2 * half} row changes in {time.monotonic() - t0:.1f}s; end LSN {end_lsn}", flush=True)

        t0 = time.monotonic()
        subprocess.run(
            [
                str(PG_BIN / "pg_recvlogical"),
                "-d",
                pg.dsn(db),
                "--slot",
                "ceiling",
                "--start",
                "--endpos",
                end_lsn,
                "--no-loop",
                "-o",
                "proto_version=1",
                "-o",
                "publication_names=bench_pub",
                "-f",
                "/dev/null",
            ],
            check=True,
        )
        ceiling_s = time.monotonic() - t0
        ceiling = 2 * half / ceiling_s

        kport = free_port()
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_kinesis.py"), "--port", str(kport)]))
        time.sleep(1.0)
        config = tmp / "bench.toml"
        config.write_text(
            f"""task_id = "bench"
[source]
host = "127.0.0.1"
port = {pg.port}
user = "cdc"
password = "cdc"
database = "{db}"
slot_name = "cdcstream"
publication = "bench_pub"
sslmode = "disable"
[target]
stream_name = "bench"
endpoint_url = "http://127.0.0.1:{kport}"
message_format = "json-unformatted"
max_in_flight_requests = 8
max_buffered_records = 50000
shard_rate_limit = false
[checkpoint]
state_dir = "{tmp / "state"}"
interval = 0.2
[http]
listen = ""
[log]
level = "warning"
format = "json"
"""
        )
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
        ckpt = tmp / "state" / "bench.checkpoint.json"
        t0 = time.monotonic()
        daemon = subprocess.Popen([sys.executable, "-m", "cdcstream", "run", "--config", str(config)], env=env)
        procs.append(daemon)
        if args.profile:
            procs.append(
                subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(daemon.pid),
                        "--format",
                        "speedscope",
                        "-o",
                        args.profile,
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--duration",
                        "6",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        target = lsn_int(end_lsn)
        while True:
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            try:
                lsn = orjson.loads(ckpt.read_bytes())["body"]["checkpoint"]["lsn"]
                if lsn_int(lsn) >= target:
                    break
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.05)
        daemon_s = time.monotonic() - t0
        cpu = cpu_seconds(daemon.pid)
        rate = 2 * half / daemon_s
        print(f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"walsender ceiling (pg_recvlogical, pgoutput): {ceiling:,.0f} rows/s ({ceiling_s:.1f}s)")
        print(f"cdcstream end to end (incl. start-up):       {rate:,.0f} rows/s ({daemon_s:.1f}s)")
        print(f"ratio: {rate / ceiling:.2f}x of the walsender ceiling")
        print(f"daemon CPU: {cpu:.1f}s = {cpu / (2 * half) * 1e6:.1f} µs/row")
        return 0
    finally:
        stop_all(procs)
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
