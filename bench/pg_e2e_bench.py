"""End-to-end PostgreSQL -> cdcstream -> Kinesis throughput, beside the walsender's own ceiling.

Method (bench/README.md): a private PostgreSQL 15; a 10-column table; N row changes (half INSERTs, half UPDATEs,
in transactions of 10,000) generated *before* the readers start, so every reader drains the same backlog:

1. ceiling: ``pg_recvlogical`` (C client) drains a pgoutput slot created before the load, to the end LSN;
2. cdcstream: ``cdcstream run`` drains its own slot into ``bench/fake_kinesis.py`` (a minimal PutRecords
   endpoint, so Kinesis emulators are not the bottleneck) until its checkpoint reaches the end LSN.

Prints rows/s for both, the ratio, and the daemon's CPU µs per row (utime+stime from /proc). ``--primary-key``
partitions by primary key (an object-mapping rule) instead of the default ``schema-table``; ``CDCSTREAM_PURE=1``
in the environment runs the daemon on the pure row path.

    python bench/pg_e2e_bench.py [--rows 400000] [--primary-key]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PG_INSERT,
    PG_TABLE,
    bench_postgres,
    cpu_seconds,
    lsn_int,
    machine_line,
    postgres_source,
    running_daemon,
    stop_all,
    wait_checkpoint,
    work_dir,
    write_config,
)
from tests.support.fullload import endpoint_stats, fake_kinesis  # noqa: E402
from tests.support.postgres import PG_BIN  # noqa: E402

UPDATE = "UPDATE bench SET qty = qty + 1, c9 = c9 * 2 WHERE id BETWEEN {lo} AND {hi}"
TX = 10_000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000, help="row changes (half inserts, half updates)")
    parser.add_argument("--primary-key", action="store_true", help="partition-key-type primary-key")
    parser.add_argument("--profile", metavar="FILE", help="record a py-spy profile of the daemon (speedscope JSON)")
    parser.add_argument(
        "--profile-after",
        type=float,
        default=0.0,
        metavar="S",
        help="start the profile S seconds after the first request (past start-up: the steady state alone)",
    )
    parser.add_argument("--profile-seconds", type=int, default=6, metavar="S", help="length of the profile")
    args = parser.parse_args()
    half = args.rows // 2
    tmp = work_dir("cdcstream-bench-")
    with contextlib.ExitStack() as stack:
        pg = bench_postgres(stack, tmp)
        db = pg.create_database("bench")
        pg.execute(db, PG_TABLE)
        pg.execute(db, "CREATE PUBLICATION bench_pub FOR TABLE bench")
        pg.execute(db, "SELECT pg_create_logical_replication_slot('ceiling', 'pgoutput')")
        pg.execute(db, "SELECT pg_create_logical_replication_slot('cdcstream', 'pgoutput')")
        t0 = time.monotonic()
        for lo in range(1, half + 1, TX):
            pg.execute(db, PG_INSERT.format(lo=lo, hi=min(lo + TX - 1, half)))
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

        top = ""
        if args.primary_key:
            locator = {"object-locator": {"schema-name": "%", "table-name": "%"}}
            rules = [
                {"rule-type": "selection", "rule-id": "1", "rule-name": "1", "rule-action": "include", **locator},
                {
                    "rule-type": "object-mapping",
                    "rule-id": "2",
                    "rule-name": "2",
                    "rule-action": "map-record-to-record",
                    "mapping-parameters": {"partition-key-type": "primary-key"},
                    **locator,
                },
            ]
            (tmp / "mapping.json").write_text(json.dumps({"rules": rules}))
            top = f'table_mappings = "{tmp / "mapping.json"}"'
        config = write_config(
            tmp / "bench.toml",
            task_id="bench",
            top=top,
            source=postgres_source(pg, db, 'slot_name = "cdcstream"\npublication = "bench_pub"'),
            endpoint_url=(url := stack.enter_context(fake_kinesis())),
            state_dir=tmp / "state",
        )
        t0 = time.monotonic()
        daemon = stack.enter_context(running_daemon(config))
        target = lsn_int(end_lsn)
        checkpoint_file = tmp / "state" / "bench.checkpoint.json"
        # Start-up apart: until the endpoint's first request (the restart record, sent as streaming begins;
        # the rows it holds already are not counted in the steady figure, whose CPU may include a batch of them).
        while (first := endpoint_stats(url)["entries"]) == 0:
            if daemon.poll() is not None:
                raise SystemExit(f"daemon exited with {daemon.returncode}")
            time.sleep(0.01)
        start_s = time.monotonic() - t0
        start_cpu = cpu_seconds(daemon.pid)
        if args.profile:
            time.sleep(args.profile_after)
            profiler = subprocess.Popen(
                [
                    # The venv's own (pip install py-spy) when the venv is not on PATH.
                    shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
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
                    str(args.profile_seconds),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            stack.callback(stop_all, [profiler])
        wait_checkpoint(daemon, checkpoint_file, lambda pos: lsn_int(pos["lsn"]) >= target)
        daemon_s = time.monotonic() - t0
        cpu = cpu_seconds(daemon.pid)
        stats = endpoint_stats(url)
        rate = 2 * half / daemon_s
        print(machine_line())
        key = "primary-key" if args.primary_key else "schema-table"
        path = "pure (CDCSTREAM_PURE)" if os.environ.get("CDCSTREAM_PURE", "") not in ("", "0") else "as built"
        print(f"partition key: {key}; row path: {path}")
        print(f"walsender ceiling (pg_recvlogical, pgoutput): {ceiling:,.0f} rows/s ({ceiling_s:.1f}s)")
        print(f"cdcstream end to end (incl. start-up):       {rate:,.0f} rows/s ({daemon_s:.1f}s)")
        print(f"ratio: {rate / ceiling:.2f}x of the walsender ceiling")
        print(f"daemon CPU: {cpu:.1f}s = {cpu / (2 * half) * 1e6:.1f} µs/row")
        requests = stats["requests"]
        print(f"PutRecords requests: {requests:,}, {stats['entries'] / max(1, requests):.0f} records each on average")
        print(
            f"start-up (to the first request): {start_s:.2f}s, {start_cpu:.2f}s CPU; then "
            f"{(2 * half + 1 - first) / (daemon_s - start_s):,.0f} rows/s, "
            f"{(cpu - start_cpu) / (2 * half + 1 - first) * 1e6:.1f} µs/row"
        )
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
