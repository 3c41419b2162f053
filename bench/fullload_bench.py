"""Full-load throughput: ``cdcstream run`` with ``migration_type = "full-load"`` beside a plain ``COPY TO STDOUT``.

Method (bench/README.md): a private PostgreSQL 15; the 10-column table of ``pg_e2e_bench.py`` with N rows
(default 1M) generated server-side; then

1. baseline: ``psql -c "COPY bench TO STDOUT"`` (C client, text format) into /dev/null: the source's read rate;
2. cdcstream: a full load into ``bench/fake_kinesis.py`` (a minimal PutRecords endpoint, so Kinesis emulators
   are not the bottleneck), from process start to its exit (every record acknowledged and checkpointed).

Prints rows/s and MB/s for both (COPY: bytes of text read; cdcstream: PutRecords request bytes, i.e. the JSON
records as sent), the ratio, the daemon's CPU seconds and its peak RSS (VmHWM).

    python bench/fullload_bench.py [--rows 1000000] [--threads 4] [--sessions 8] [--schema-table-key]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import cpu_seconds, stop_all  # noqa: E402
from bench.pg_e2e_bench import TABLE  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.postgres import PG_BIN, start_private_postgres  # noqa: E402

INSERT = (
    "INSERT INTO bench SELECT g, 'name ' || g, g % 100, (g % 1000) / 7.0, now(), g % 2 = 0, "
    "jsonb_build_object('k', g), md5(g::text), g / 3.0, gen_random_uuid() FROM generate_series({lo}, {hi}) g"
)
BATCH = 100_000


def _peak_rss_kib(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    _, found, rest = status.partition("VmHWM:")  # absent once the process is a zombie
    return int(rest.split()[0]) if found else 0


def _stats(url: str) -> dict[str, int]:
    req = urllib.request.Request(url, data=b"{}", headers={"X-Amz-Target": "Kinesis_20131202.Stats"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return dict(orjson.loads(resp.read()))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=4, help="parallel_load_threads (segments of the table)")
    parser.add_argument("--sessions", type=int, default=8, help="max_full_load_subtasks")
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under cProfile, stats into FILE")
    parser.add_argument(
        "--schema-table-key",
        action="store_true",
        help="one partition key for the table (object-mapping rule) instead of the default primary-key load keys",
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cdcstream-flbench-"))
    tmp.chmod(0o755)  # the server runs as the postgres user and must reach its directory
    pg = start_private_postgres(tmp / "pg", extra_conf="max_wal_size = 4GB\nshared_buffers = 512MB\n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db = pg.create_database("bench")
        pg.execute(db, TABLE)
        for lo in range(1, args.rows + 1, BATCH):
            pg.execute(db, INSERT.format(lo=lo, hi=min(lo + BATCH - 1, args.rows)))
        pg.execute(db, "VACUUM ANALYZE bench")
        size = pg.execute(db, "SELECT pg_size_pretty(pg_table_size('bench'))")[0][0]
        print(f"generated {args.rows:,} rows ({size})", flush=True)

        # Twice, keeping the second: the first run warms the page cache like the load's own reads would.
        copy_bytes, copy_s = 0, 0.0
        for _ in range(2):
            t0 = time.monotonic()
            out = subprocess.run(
                [str(PG_BIN / "psql"), "-X", "-q", "-d", pg.dsn(db), "-c", "COPY bench TO STDOUT"],
                check=True,
                stdout=subprocess.PIPE,
            ).stdout
            copy_s = time.monotonic() - t0
            copy_bytes = len(out)
            del out

        kport = free_port()
        url = f"http://127.0.0.1:{kport}"
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_kinesis.py"), "--port", str(kport)]))
        time.sleep(1.0)
        mapping = ""
        if args.schema_table_key:
            rules = [
                {"rule-type": "selection", "rule-id": "1", "rule-action": "include",
                 "object-locator": {"schema-name": "public", "table-name": "bench"}},
                {"rule-type": "object-mapping", "rule-id": "2", "rule-action": "map-record-to-record",
                 "object-locator": {"schema-name": "public", "table-name": "bench"},
                 "mapping-parameters": {"partition-key-type": "schema-table"}},
            ]  # fmt: skip
            (tmp / "mapping.json").write_bytes(orjson.dumps({"rules": rules}))
            mapping = f'table_mappings = "{tmp / "mapping.json"}"'
        config = tmp / "bench.toml"
        config.write_text(
            f"""task_id = "flbench"
migration_type = "full-load"
{mapping}
[source]
host = "127.0.0.1"
port = {pg.port}
user = "cdc"
password = "cdc"
database = "{db}"
sslmode = "disable"
[target]
stream_name = "bench"
endpoint_url = "{url}"
message_format = "json-unformatted"
max_in_flight_requests = 8
max_buffered_records = 50000
shard_rate_limit = false
[full_load]
max_full_load_subtasks = {args.sessions}
parallel_load_threads = {args.threads}
parallel_load_buffer_size = 1000
chunk_rows = 50000
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
        t0 = time.monotonic()
        prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
        daemon = subprocess.Popen([sys.executable, *prof, "-m", "cdcstream", "run", "--config", str(config)], env=env)
        procs.append(daemon)
        peak = cpu = 0.0
        while daemon.poll() is None:
            peak = max(peak, _peak_rss_kib(daemon.pid))
            with contextlib.suppress(OSError):  # the process may exit between poll() and the read
                cpu = cpu_seconds(daemon.pid)
            time.sleep(0.1)
        load_s = time.monotonic() - t0
        if daemon.returncode != 0:
            raise SystemExit(f"daemon exited with {daemon.returncode}")
        stats = _stats(url)
        rate = args.rows / load_s
        copy_rate = args.rows / copy_s
        print(f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}")
        print(
            f"COPY bench TO STDOUT (psql):       {copy_rate:,.0f} rows/s, {copy_bytes / copy_s / 1e6:.1f} MB/s "
            f"({copy_s:.1f}s, {copy_bytes / 1e6:.0f} MB)"
        )
        print(
            f"cdcstream full load (incl. start): {rate:,.0f} rows/s, {stats['request_bytes'] / load_s / 1e6:.1f} MB/s "
            f"of PutRecords requests ({load_s:.1f}s, {stats['entries']:,} records)"
        )
        print(f"ratio: {rate / copy_rate:.2f}x of COPY")
        print(f"daemon CPU: {cpu:.1f}s = {cpu / args.rows * 1e6:.1f} µs/row; peak RSS {peak / 1024:.0f} MiB")
        return 0
    finally:
        stop_all(procs)
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
