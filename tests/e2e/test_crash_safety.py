"""End to end with the real ``cdcstream`` process: SIGKILL at random moments loses nothing and keeps order.

A writer commits a numbered sequence of changes while the test kills the daemon (at least 10 times, at random
moments, including during start-up) and restarts it. Afterwards every committed change is in the stream, and
after keeping each stream position's last occurrence the changes are in commit order.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import psycopg

from tests.support.daemon import (
    Daemon,
    check_numbered_changes,
    create_stream,
    kill_at_random_moments,
    read_stream,
    write_config,
)
from tests.support.postgres import PgDb

CHANGES = 2500
KILLS = 10


def _writer(dsn: str, committed: list[tuple[str, int, int]], done: threading.Event) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for n in range(1, CHANGES + 1):
                key = n % 25
                if n % 9 == 0:
                    # n is the number of this change: stamp the row with it before deleting, in one transaction
                    with conn.transaction():
                        conn.execute("UPDATE counters SET n = %s WHERE id = %s", (n, key))
                        deleted = conn.execute("DELETE FROM counters WHERE id = %s", (key,)).rowcount
                    if deleted:
                        committed.append(("delete", key, n))
                else:
                    conn.execute(
                        "INSERT INTO counters (id, n) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n",
                        (key, n),
                    )
                    committed.append(("upsert", key, n))
                time.sleep(0.004)
    finally:
        done.set()


def test_sigkill_at_random_moments_loses_nothing(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
    # FULL so a delete carries the number that identifies the change
    pg_db.execute("ALTER TABLE counters REPLICA IDENTITY FULL")
    stream = create_stream(moto_url, f"kill-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "cdcstream.toml",
        pg_port=pg_db.server.port,
        database=pg_db.name,
        endpoint_url=moto_url,
        stream=stream,
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    daemon.wait_ready()

    committed: list[tuple[str, int, int]] = []
    done = threading.Event()
    writer = threading.Thread(target=_writer, args=(pg_db.dsn, committed, done), daemon=True)
    writer.start()
    try:
        kill_at_random_moments(daemon, done, KILLS)
        writer.join()
        check_numbered_changes(moto_url, stream, "counters", committed, "public.counters")
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()

    restarts = [r for r in read_stream(moto_url, stream) if r["data"]["metadata"]["operation"] == "RestartTask"]
    assert len(restarts) >= 2
    assert daemon.starts >= KILLS + 1
