"""One huge transaction (default 2,000,000 rows) through the daemon: peak memory stays bounded by the queue
sizes, and the checkpoint does not pass the transaction's commit until all its rows are acknowledged.

The daemon runs first; then a single INSERT ... SELECT commits N rows; the script samples the daemon's peak RSS
(VmHWM from /proc) and the checkpoint file while it drains into ``fake_kinesis.py``, and when the checkpoint
first reaches the commit it checks the endpoint had already accepted every row.

    python bench/huge_tx_bench.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import lsn_int, stop_all  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.postgres import start_private_postgres  # noqa: E402


def peak_rss_kib(pid: int) -> int:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0])


def accepted(port: int) -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/", data=b"{}", headers={"X-Amz-Target": "Kinesis_20131202.Stats"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        stats = orjson.loads(resp.read())
    return int(stats["entries"]) - int(stats["failed"])


def checkpoint(path: Path) -> int | None:
    try:
        return lsn_int(orjson.loads(path.read_bytes())["body"]["checkpoint"]["lsn"])
    except (OSError, KeyError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cdcstream-hugetx-"))
    tmp.chmod(0o755)
    pg = start_private_postgres(tmp / "pg", extra_conf="max_wal_size = 4GB\nshared_buffers = 512MB\n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db = pg.create_database("huge")
        pg.execute(db, "CREATE TABLE big (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2))")
        kport = free_port()
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_kinesis.py"), "--port", str(kport)]))
        config = tmp / "c.toml"
        config.write_text(
            f"""task_id = "huge"
[source]
port = {pg.port}
password = "cdc"
database = "{db}"
sslmode = "disable"
heartbeat_interval = 1
[target]
stream_name = "huge"
endpoint_url = "http://127.0.0.1:{kport}"
message_format = "json-unformatted"
shard_rate_limit = false
[checkpoint]
state_dir = "{tmp / "state"}"
interval = 0.1
[http]
listen = ""
[log]
level = "warning"
"""
        )
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
        daemon = subprocess.Popen([sys.executable, "-m", "cdcstream", "run", "--config", str(config)], env=env)
        procs.append(daemon)
        ckpt = tmp / "state" / "huge.checkpoint.json"
        while checkpoint(ckpt) is None:  # started and idle (heartbeats checkpoint)
            time.sleep(0.2)
        base = accepted(kport)
        t0 = time.monotonic()
        pg.execute(
            db,
            f"INSERT INTO big SELECT g, 'name ' || g, g % 100, (g % 1000) / 7.0 FROM generate_series(1, {args.rows}) g",
        )
        # the insert position, not pg_current_wal_lsn(): the test server commits asynchronously, so the write
        # position can still be inside the transaction when the INSERT returns
        commit_lsn = lsn_int(pg.execute(db, "SELECT pg_current_wal_insert_lsn()::text")[0][0])
        print(f"committed {args.rows} rows in one transaction in {time.monotonic() - t0:.1f}s", flush=True)
        t0 = time.monotonic()
        peak = 0
        while True:
            peak = max(peak, peak_rss_kib(daemon.pid))
            cp = checkpoint(ckpt)
            if cp is not None and cp >= commit_lsn:
                delivered = accepted(kport) - base
                break
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        print(f"rows: {args.rows}; drained in {elapsed:.1f}s ({args.rows / elapsed:,.0f} rows/s)")
        print(f"daemon peak RSS (VmHWM): {peak / 1024:.0f} MiB")
        print(f"rows accepted when the checkpoint reached the commit: {delivered} (must be >= {args.rows})")
        assert delivered >= args.rows, "checkpoint passed the transaction before all its rows were accepted"
        return 0
    finally:
        stop_all(procs)
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
