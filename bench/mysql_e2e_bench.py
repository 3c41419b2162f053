"""End-to-end MariaDB -> cdcstream -> Kinesis throughput, beside the C decoder and cdcstream's reader alone, one run.

Method (bench/README.md; the reference baseline's workload): a private MariaDB; a 10-column table
(BIGINT PK, VARCHAR, INT, DECIMAL(12,2), DATETIME(6), TINYINT(1), JSON, CHAR(32), DOUBLE, CHAR(36)); after
``FLUSH BINARY LOGS`` and ``PURGE BINARY LOGS`` to the new file, N rows inserted as ``INSERT ... SELECT FROM
seq_1_to_10000`` transactions, *before* the readers start, so every reader drains the same binlog:

1. ``mariadb-binlog --base64-output=DECODE-ROWS -v <file>``: the C decoder, reading the file locally;
2. cdcstream's binlog reader alone, in this process: the dump connection and the converter (every row
   decoded into a ChangeEvent), no mapping, no sink — the source's ceiling;
3. ``cdcstream run`` from the start of that binlog into ``bench/fake_kinesis.py`` until its checkpoint reaches
   the binlog end.

Prints rows/s for each, and the daemon's CPU µs per row (utime+stime from /proc).

    python bench/mysql_e2e_bench.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    MARIADB_INSERT,
    MARIADB_TABLE,
    bench_mariadb,
    cpu_seconds,
    machine_line,
    mariadb_source,
    running_daemon,
    stop_all,
    wait_checkpoint,
    work_dir,
    write_config,
)
from tests.support.fullload import fake_kinesis  # noqa: E402
from tests.support.mysql import CDC_PASSWORD, CDC_USER  # noqa: E402

TX = 10_000
IDLE_S = 3.0


def reader_rate(port: int, file: str, rows: int) -> float:
    from cdcstream.changes import ChangeEvent
    from cdcstream.sources.mysql.binlog.charsets import Charsets
    from cdcstream.sources.mysql.binlog.client import BinlogClient, DumpStart
    from cdcstream.sources.mysql.converter import EventConverter

    t0 = time.monotonic()
    settings = {"host": "127.0.0.1", "port": port, "user": CDC_USER, "password": CDC_PASSWORD, "read_timeout": 30}
    client = BinlogClient(settings, server_id=9001, heartbeat=5.0, mariadb=True)
    client.connect(DumpStart(file, 4, None, False))
    conv = EventConverter(
        selector=lambda s, t: (s, t) == ("bench", "bench"),
        no_hex_prefix=False,
        mariadb=True,
        file=file,
        pos=4,
        gtid=None,
    )
    conv.connected(client.checksum, Charsets(client.collations), None)
    n = 0
    out: list[object] = []
    while n < rows:
        conv.handle(client.read(), out)
        n += sum(1 for item in out if isinstance(item, ChangeEvent))
        out.clear()
    client.close()
    return n / (time.monotonic() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000, help="rows inserted (multiple of 10,000)")
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        help="sample the daemon with py-spy (per thread, raw folded stacks to OUT) while it drains the binlog",
    )
    args = parser.parse_args()
    tmp = work_dir("cdcstream-mybench-")
    with contextlib.ExitStack() as stack:
        my = bench_mariadb(stack, tmp)
        my.execute("CREATE DATABASE bench")
        my.execute(MARIADB_TABLE, "bench")
        my.execute("FLUSH BINARY LOGS")
        file, start_pos = my.master_status()
        my.execute(f"PURGE BINARY LOGS TO '{file}'")
        t0 = time.monotonic()
        for lo in range(1, args.rows + 1, TX):
            my.execute(MARIADB_INSERT.format(lo=lo, hi=min(lo + TX - 1, args.rows)), "bench")
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
        reader = reader_rate(my.port, file, args.rows)

        state = tmp / "state"
        state.mkdir()
        # Start from the binlog's first transaction: a checkpoint at the position before the load.
        from cdcstream.checkpoints.store import FileCheckpointStore

        FileCheckpointStore(state, "bench").save({"file": file, "pos": start_pos, "gtid": None})
        config = write_config(
            tmp / "bench.toml",
            task_id="bench",
            source=mariadb_source(my, 9002, 'gtid_mode = "off"'),
            endpoint_url=stack.enter_context(fake_kinesis()),
            state_dir=state,
        )
        t0 = time.monotonic()
        daemon = stack.enter_context(running_daemon(config))
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(daemon.pid),
                    "--threads",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    args.py_spy,
                ]
            )
        wait_checkpoint(
            daemon, state / "bench.checkpoint.json", lambda pos: pos["file"] == end_file and int(pos["pos"]) >= end_pos
        )
        daemon_s = time.monotonic() - t0
        if spy is not None:  # SIGINT: py-spy writes what it sampled and exits (the daemon still runs)
            spy.send_signal(signal.SIGINT)
            spy.wait()
        cpu, loop_cpu, reader_cpu = thread_cpu(daemon.pid)
        stop_all([daemon])
        # The same daemon started again at the binlog's end: what start-up alone costs (imports, config, the
        # connections), to tell it from the per-row cost above. Idle for IDLE_S seconds after starting.
        idle = stack.enter_context(running_daemon(config))
        time.sleep(IDLE_S)
        base, base_loop, base_reader = thread_cpu(idle.pid)
        rate = args.rows / daemon_s
        print(machine_line())
        print(f"mariadb-binlog -v (C, local file):        {c_rate:,.0f} rows/s")
        print(f"cdcstream binlog reader alone (decode):   {reader:,.0f} rows/s")
        print(f"cdcstream end to end (incl. start-up):    {rate:,.0f} rows/s ({daemon_s:.1f}s)")
        print(f"daemon CPU: {cpu:.1f}s = {cpu / args.rows * 1e6:.1f} µs/row")
        print(
            f"  event loop thread {loop_cpu / args.rows * 1e6:.1f} µs/row, "
            f"binlog reader thread {reader_cpu / args.rows * 1e6:.1f} µs/row"
        )
        print(f"start-up alone (a start with nothing to read, {IDLE_S:.0f} s): {base:.2f}s CPU")
        per_row = [
            (c - b) / args.rows * 1e6 for c, b in ((cpu, base), (loop_cpu, base_loop), (reader_cpu, base_reader))
        ]
        print(
            f"without start-up: {per_row[0]:.1f} µs/row (event loop {per_row[1]:.1f}, binlog reader {per_row[2]:.1f})"
        )
        return 0


def thread_cpu(pid: int) -> tuple[float, float, float]:
    """CPU seconds of the daemon, its event loop (the process's main thread) and its binlog reader (the busiest
    other thread)."""
    threads = sorted(
        ((cpu_seconds(pid, int(t.name)), t.name) for t in Path(f"/proc/{pid}/task").iterdir()), reverse=True
    )
    loop = next(c for c, tid in threads if tid == str(pid))
    reader = next((c for c, tid in threads if tid != str(pid)), 0.0)
    return cpu_seconds(pid), loop, reader


if __name__ == "__main__":
    raise SystemExit(main())
