"""Full-load throughput: ``cdcstream run`` with ``migration_type = "full-load"`` beside the server's own client.

Method (bench/README.md): a private PostgreSQL 15 (``--engine postgres``, default) or MariaDB 10.11
(``--engine mariadb``); the 10-column table of ``pg_e2e_bench.py`` / ``mysql_e2e_bench.py`` (``bench/common.py``)
with N rows (default 1M) generated server-side; then

1. baseline: ``psql -c "COPY bench TO STDOUT"`` (C client, text format) or ``mariadb --quick -e "SELECT * FROM
   bench"`` (C client, streaming, tab-separated) into a pipe: the source's read rate;
2. cdcstream: a full load into ``bench/fake_kinesis.py`` (a minimal PutRecords endpoint, so Kinesis emulators
   are not the bottleneck), from process start to its exit (every record acknowledged and checkpointed).

Prints rows/s and MB/s for both (baseline: bytes of text read; cdcstream: PutRecords request bytes, i.e. the JSON
records as sent), the ratio, the daemon's CPU seconds and its peak RSS (VmHWM).

    python bench/fullload_bench.py [--engine postgres|mariadb] [--rows 1000000] [--threads 4] [--sessions 8]
                                   [--schema-table-key] [--profile FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    MARIADB_INSERT,
    MARIADB_TABLE,
    PG_INSERT,
    PG_TABLE,
    bench_mariadb,
    bench_postgres,
    child_pids,
    cpu_seconds,
    machine_line,
    mariadb_source,
    postgres_source,
    running_daemon,
    work_dir,
    write_config,
)
from tests.support.fullload import (  # noqa: E402
    endpoint_stats,
    fake_kinesis_process,
    peak_rss_kib,
    schema_table_key_mapping,
)
from tests.support.mysql import CDC_PASSWORD, CDC_USER  # noqa: E402
from tests.support.postgres import PG_BIN  # noqa: E402

BATCH = 100_000


def _baseline(argv: list[str]) -> tuple[int, float]:
    """Bytes and seconds of the C client reading the whole table; twice, keeping the second (the first warms the
    page cache like the load's own reads would)."""
    nbytes, seconds = 0, 0.0
    for _ in range(2):
        t0 = time.monotonic()
        out = subprocess.run(argv, check=True, stdout=subprocess.PIPE).stdout
        seconds = time.monotonic() - t0
        nbytes = len(out)
        del out
    return nbytes, seconds


def _postgres(tmp: Path, rows: int, stack: contextlib.ExitStack) -> tuple[str, list[str]]:
    """A private PostgreSQL with the table: the ``[source]`` body and the baseline command."""
    pg = bench_postgres(stack, tmp)
    db = pg.create_database("bench")
    pg.execute(db, PG_TABLE)
    for lo in range(1, rows + 1, BATCH):
        pg.execute(db, PG_INSERT.format(lo=lo, hi=min(lo + BATCH - 1, rows)))
    pg.execute(db, "VACUUM ANALYZE bench")
    size = pg.execute(db, "SELECT pg_size_pretty(pg_table_size('bench'))")[0][0]
    print(f"generated {rows:,} rows ({size})", flush=True)
    return postgres_source(pg, db), [str(PG_BIN / "psql"), "-X", "-q", "-d", pg.dsn(db), "-c", "COPY bench TO STDOUT"]


def _mariadb(tmp: Path, rows: int, stack: contextlib.ExitStack) -> tuple[str, list[str]]:
    """A private MariaDB with the table (the fixture's least-privileged user, RELOAD included)."""
    my = bench_mariadb(stack, tmp)
    my.execute("CREATE DATABASE bench")
    my.execute(MARIADB_TABLE, "bench")
    for lo in range(1, rows + 1, BATCH):
        my.execute(MARIADB_INSERT.format(lo=lo, hi=min(lo + BATCH - 1, rows)), "bench")
    my.execute("ANALYZE TABLE bench", "bench")
    size = my.execute("SELECT data_length FROM information_schema.TABLES WHERE table_name = 'bench'")[0][0]
    print(f"generated {rows:,} rows ({int(size) / 1e6:.0f} MB InnoDB data)", flush=True)
    client = [
        "mariadb",
        "--no-defaults",
        "--quick",
        "-h127.0.0.1",
        f"-P{my.port}",
        f"-u{CDC_USER}",
        f"-p{CDC_PASSWORD}",
        "-e",
        "SELECT * FROM bench.bench",
    ]
    return mariadb_source(my, 4711), client


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=("postgres", "mariadb"), default="postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=4, help="parallel_load_threads (segments of the table)")
    parser.add_argument(
        "--buffer-size",
        type=int,
        default=1000,
        help="parallel_load_buffer_size: rows per hand-off (the daemon's default is 50)",
    )
    parser.add_argument("--sessions", type=int, default=8, help="max_full_load_subtasks")
    parser.add_argument("--profile", metavar="FILE", help="run the daemon under cProfile, stats into FILE")
    parser.add_argument("--processes", default="auto", help='full_load.processes (mapping workers; "auto" or N)')
    parser.add_argument(
        "--schema-table-key",
        action="store_true",
        help="one partition key for the table (object-mapping rule) instead of the default primary-key load keys",
    )
    args = parser.parse_args()
    tmp = work_dir("cdcstream-flbench-")
    with contextlib.ExitStack() as stack:
        setup = _mariadb if args.engine == "mariadb" else _postgres
        source, client = setup(tmp, args.rows, stack)
        copy_bytes, copy_s = _baseline(client)
        return _run(args, tmp, source, stack, copy_bytes, copy_s, " ".join(client[:1] + client[-1:]))
    return 1


def _run(
    args: argparse.Namespace,
    tmp: Path,
    source: str,
    stack: contextlib.ExitStack,
    copy_bytes: int,
    copy_s: float,
    baseline: str,
) -> int:
    """The daemon's full load into the fake endpoint; prints both rates."""
    url, fake = stack.enter_context(fake_kinesis_process())
    mapping = ""
    if args.schema_table_key:  # "%" schema: public on PostgreSQL, the bench database on MariaDB
        mapping = f'table_mappings = "{schema_table_key_mapping(tmp / "mapping.json", "%", "bench")}"'
    config = write_config(
        tmp / "bench.toml",
        task_id="flbench",
        top=f'migration_type = "full-load"\n{mapping}',
        source=source,
        endpoint_url=url,
        state_dir=tmp / "state",
        sections=f"""[full_load]
max_full_load_subtasks = {args.sessions}
parallel_load_threads = {args.threads}
parallel_load_buffer_size = {args.buffer_size}
chunk_rows = 50000
processes = {'"auto"' if args.processes == "auto" else int(args.processes)}""",
    )
    t0 = time.monotonic()
    prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    daemon = stack.enter_context(running_daemon(config, *prof))
    peak = cpu = main_cpu = 0.0
    workers: dict[int, float] = {}  # mapping worker pid -> its CPU seconds, last seen
    while daemon.poll() is None:
        peak = max(peak, peak_rss_kib(daemon.pid))
        with contextlib.suppress(OSError):  # the process may exit between poll() and the read
            cpu = cpu_seconds(daemon.pid)
            main_cpu = cpu_seconds(daemon.pid, daemon.pid)
            for pid in child_pids(daemon.pid):
                with contextlib.suppress(OSError):
                    workers[pid] = cpu_seconds(pid)
        time.sleep(0.1)
    worker_cpu = sum(workers.values())
    load_s = time.monotonic() - t0
    if daemon.returncode != 0:
        raise SystemExit(f"daemon exited with {daemon.returncode}")
    stats = endpoint_stats(url)
    fake_cpu = cpu_seconds(fake.pid)
    rate = args.rows / load_s
    copy_rate = args.rows / copy_s
    print(machine_line())
    print(
        f"{baseline}: {copy_rate:,.0f} rows/s, {copy_bytes / copy_s / 1e6:.1f} MB/s "
        f"({copy_s:.1f}s, {copy_bytes / 1e6:.0f} MB)"
    )
    print(
        f"cdcstream full load (incl. start): {rate:,.0f} rows/s, {stats['request_bytes'] / load_s / 1e6:.1f} MB/s "
        f"of PutRecords requests ({load_s:.1f}s, {stats['entries']:,} records)"
    )
    print(f"ratio: {rate / copy_rate:.2f}x of the client")
    print(f"fake endpoint CPU: {fake_cpu / args.rows * 1e6:.1f} µs/row (shares the machine's cores)")
    total = cpu + worker_cpu
    print(
        f"daemon CPU: {total:.1f}s = {total / args.rows * 1e6:.1f} µs/row (mapping workers: {len(workers)}, "
        f"{worker_cpu / args.rows * 1e6:.1f} µs/row); daemon process peak RSS {peak / 1024:.0f} MiB"
    )
    print(
        f"  event-loop thread {main_cpu / args.rows * 1e6:.1f} µs/row, other threads (checkpoint writes; on "
        f"MariaDB the load readers) {(cpu - main_cpu) / args.rows * 1e6:.1f} µs/row"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
