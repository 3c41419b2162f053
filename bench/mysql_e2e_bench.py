"""End-to-end MariaDB -> cdcstream -> Kinesis throughput, beside the C decoder and the stock library, one run.

Method (bench/README.md; the reference baseline's workload): a private MariaDB; a 10-column table
(BIGINT PK, VARCHAR, INT, DECIMAL(12,2), DATETIME(6), TINYINT(1), JSON, CHAR(32), DOUBLE, CHAR(36)); after
``FLUSH BINARY LOGS`` and ``PURGE BINARY LOGS`` to the new file, N rows inserted as ``INSERT ... SELECT FROM
seq_1_to_10000`` transactions, *before* the readers start, so every reader drains the same binlog:

1. ``mariadb-binlog --base64-output=DECODE-ROWS -v <file>``: the C decoder, reading the file locally;
2. python-mysql-replication 1.0.17 alone from the server (``only_events=[WriteRowsEvent]``, iterating
   ``ev.rows``): the stock library's decode rate;
3. ``cdcstream run`` from the start of that binlog into ``bench/fake_kinesis.py`` until its checkpoint reaches
   the binlog end.

Prints rows/s for each, and the daemon's CPU µs per row (utime+stime from /proc).

    python bench/mysql_e2e_bench.py [--rows 200000]
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

from bench.common import cpu_seconds, stop_all  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support.mysql import CDC_PASSWORD, CDC_USER, start_private_mariadb  # noqa: E402

TABLE = (
    "CREATE TABLE bench (id BIGINT PRIMARY KEY, name VARCHAR(64), qty INT, price DECIMAL(12,2), created DATETIME(6), "
    "flag TINYINT(1), payload JSON, c8 CHAR(32), c9 DOUBLE, c10 CHAR(36))"
)
INSERT = (
    "INSERT INTO bench SELECT seq, CONCAT('name ', seq), seq % 100, (seq % 1000) / 7, NOW(6), seq % 2, "
    "JSON_OBJECT('k', seq), MD5(seq), seq / 3, UUID() FROM seq_{lo}_to_{hi}"
)
TX = 10_000


def cpu_seconds_task(pid: int, tid: str) -> float:
    fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def library_rate(port: int, file: str, rows: int) -> float:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import WriteRowsEvent

    t0 = time.monotonic()
    stream = BinLogStreamReader(
        connection_settings={"host": "127.0.0.1", "port": port, "user": CDC_USER, "password": CDC_PASSWORD},
        server_id=9001,
        log_file=file,
        log_pos=4,
        resume_stream=True,
        blocking=False,
        only_events=[WriteRowsEvent],
        only_schemas=["bench"],
        only_tables=["bench"],
        enable_logging=False,
    )
    n = 0
    for ev in stream:
        n += len(ev.rows)
        if n >= rows:
            break
    stream.close()
    return n / (time.monotonic() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000, help="rows inserted (multiple of 10,000)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cdcstream-mybench-"))
    tmp.chmod(0o755)
    my = start_private_mariadb(tmp / "my", extra_cnf="innodb_buffer_pool_size=512M\n")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        my.execute("CREATE DATABASE bench")
        my.execute(TABLE, "bench")
        my.execute("FLUSH BINARY LOGS")
        file, start_pos = my.master_status()
        my.execute(f"PURGE BINARY LOGS TO '{file}'")
        t0 = time.monotonic()
        for lo in range(1, args.rows + 1, TX):
            my.execute(INSERT.format(lo=lo, hi=min(lo + TX - 1, args.rows)), "bench")
        end_file, end_pos = my.master_status()
        assert end_file == file, "the load spans binlog files; raise max_binlog_size"
        print(f"generated {args.rows} rows in {time.monotonic() - t0:.1f}s; binlog {file} up to {end_pos}", flush=True)

        t0 = time.monotonic()
        with open(os.devnull, "wb") as null:
            subprocess.run(
                ["mariadb-binlog", "--base64-output=DECODE-ROWS", "-v", str(my.root / "binlog" / file)],
                stdout=null,
                check=True,
            )
        c_rate = args.rows / (time.monotonic() - t0)
        lib_rate = library_rate(my.port, file, args.rows)

        kport = free_port()
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_kinesis.py"), "--port", str(kport)]))
        time.sleep(1.0)
        state = tmp / "state"
        state.mkdir()
        # Start from the binlog's first transaction: a checkpoint at the position before the load.
        from cdcstream.checkpoints.store import FileCheckpointStore

        FileCheckpointStore(state, "bench").save({"file": file, "pos": start_pos, "gtid": None})
        config = tmp / "bench.toml"
        config.write_text(
            f"""task_id = "bench"
[source]
engine = "mysql"
host = "127.0.0.1"
port = {my.port}
user = "{CDC_USER}"
password = "{CDC_PASSWORD}"
server_id = 9002
databases = ["bench"]
gtid_mode = "off"
[target]
stream_name = "bench"
endpoint_url = "http://127.0.0.1:{kport}"
message_format = "json-unformatted"
max_in_flight_requests = 8
max_buffered_records = 50000
# fake_kinesis.py is not a real shard: measure the pipeline, not the 1,000 records/s per-shard budget
shard_rate_limit = false
[checkpoint]
state_dir = "{state}"
interval = 0.2
[http]
listen = ""
[log]
level = "warning"
format = "json"
"""
        )
        env = {**os.environ, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}
        ckpt = state / "bench.checkpoint.json"
        t0 = time.monotonic()
        daemon = subprocess.Popen([sys.executable, "-m", "cdcstream", "run", "--config", str(config)], env=env)
        procs.append(daemon)
        while True:
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            try:
                pos = orjson.loads(ckpt.read_bytes())["body"]["checkpoint"]
                if pos["file"] == end_file and int(pos["pos"]) >= end_pos:
                    break
            except (OSError, KeyError, ValueError):
                pass
            time.sleep(0.05)
        daemon_s = time.monotonic() - t0
        cpu = cpu_seconds(daemon.pid)
        # Per thread: the event loop is the process's main thread; the binlog reader is the busiest other one.
        threads = sorted(
            ((cpu_seconds_task(daemon.pid, t.name), t.name) for t in Path(f"/proc/{daemon.pid}/task").iterdir()),
            reverse=True,
        )
        loop_cpu = next(c for c, tid in threads if tid == str(daemon.pid))
        reader_cpu = next((c for c, tid in threads if tid != str(daemon.pid)), 0.0)
        rate = args.rows / daemon_s
        print(f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"mariadb-binlog -v (C, local file):        {c_rate:,.0f} rows/s")
        print(f"python-mysql-replication alone (decode):  {lib_rate:,.0f} rows/s")
        print(f"cdcstream end to end (incl. start-up):    {rate:,.0f} rows/s ({daemon_s:.1f}s)")
        print(f"ratio: {rate / lib_rate:.2f}x the stock library")
        print(f"daemon CPU: {cpu:.1f}s = {cpu / args.rows * 1e6:.1f} µs/row")
        print(
            f"  event loop thread {loop_cpu / args.rows * 1e6:.1f} µs/row, "
            f"binlog reader thread {reader_cpu / args.rows * 1e6:.1f} µs/row"
        )
        return 0
    finally:
        stop_all(procs)
        my.stop()


if __name__ == "__main__":
    raise SystemExit(main())
