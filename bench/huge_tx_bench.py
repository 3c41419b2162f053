"""One huge transaction (default 2,000,000 rows) through the daemon: peak memory stays bounded by the queue
sizes, and the checkpoint does not pass the transaction's commit until all its rows are acknowledged.

The daemon runs first; then a single INSERT ... SELECT commits N rows; the script samples the daemon's peak RSS
(VmHWM from /proc) and the checkpoint file while it drains into ``fake_kinesis.py``, and when the checkpoint
first reaches the commit it checks the endpoint had already accepted every row.

    python bench/huge_tx_bench.py [--rows 2000000]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    bench_postgres,
    lsn_int,
    postgres_source,
    read_checkpoint,
    running_daemon,
    work_dir,
    write_config,
)
from tests.support.fullload import endpoint_stats, fake_kinesis, peak_rss_kib  # noqa: E402


def accepted(url: str) -> int:
    stats = endpoint_stats(url)
    return int(stats["entries"]) - int(stats["failed"])


def checkpoint(path: Path) -> int | None:
    position = read_checkpoint(path)
    return None if position is None else lsn_int(position["lsn"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    args = parser.parse_args()
    tmp = work_dir("cdcstream-hugetx-")
    with contextlib.ExitStack() as stack:
        pg = bench_postgres(stack, tmp)
        db = pg.create_database("huge")
        pg.execute(db, "CREATE TABLE big (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2))")
        url = stack.enter_context(fake_kinesis())
        config = write_config(
            tmp / "c.toml",
            task_id="huge",
            stream="huge",
            source=postgres_source(pg, db, "heartbeat_interval = 1"),
            endpoint_url=url,
            state_dir=tmp / "state",
            # the default queue sizes and requests in flight: those bound the memory this measures
            target='message_format = "json-unformatted"\nshard_rate_limit = false',
            interval=0.1,
        )
        daemon = stack.enter_context(running_daemon(config))
        ckpt = tmp / "state" / "huge.checkpoint.json"
        while checkpoint(ckpt) is None:  # started and idle (heartbeats checkpoint)
            time.sleep(0.2)
        base = accepted(url)
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
                delivered = accepted(url) - base
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


if __name__ == "__main__":
    raise SystemExit(main())
