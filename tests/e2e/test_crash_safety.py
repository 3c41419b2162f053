"""End to end with the real ``cdcstream`` process: SIGKILL at random moments loses nothing and keeps order, on
PostgreSQL and on MariaDB (the ``engine`` fixture).

A writer commits a numbered sequence of changes while the test kills the daemon (at least 10 times, at random
moments, including during start-up) and restarts it. Afterwards every committed change is in the stream, and
after keeping each stream position's last occurrence the changes are in commit order.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.support.daemon import (
    check_numbered_changes,
    create_stream,
    ids,
    kill_at_random_moments,
    read_stream,
    table_records,
    wait_for,
)
from tests.support.engines import Engine

KILLS = 10


def _writer(engine: Engine, changes: int, committed: list[tuple[str, int, int]], done: threading.Event) -> None:
    upsert = engine.pick(
        postgres="INSERT INTO counters (id, n) VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET n = EXCLUDED.n",
        mariadb="INSERT INTO counters (id, n) VALUES (%s, %s) ON DUPLICATE KEY UPDATE n = VALUES(n)",
    )
    try:
        with engine.transactions() as commit:
            for n in range(1, changes + 1):
                key = n % 25
                if n % 9 == 0:
                    # n is the number of this change: stamp the row with it before deleting, in one transaction
                    _, deleted = commit(
                        ("UPDATE counters SET n = %s WHERE id = %s", (n, key)),
                        ("DELETE FROM counters WHERE id = %s", (key,)),
                    )
                    if deleted:
                        committed.append(("delete", key, n))
                else:
                    commit((upsert, (key, n)))
                    committed.append(("upsert", key, n))
                time.sleep(0.004)
    finally:
        done.set()


@pytest.mark.pg_core
def test_sigkill_at_random_moments_loses_nothing(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    engine.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
    if engine.name == "postgres":
        # FULL so a delete carries the number that identifies the change (a binlog row image is always full)
        engine.execute("ALTER TABLE counters REPLICA IDENTITY FULL")
    stream = create_stream(moto_url, f"kill-{uuid.uuid4().hex[:8]}")
    daemon = engine.start_daemon(moto_url, stream, tmp_path)
    daemon.wait_ready()

    committed: list[tuple[str, int, int]] = []
    done = threading.Event()
    changes = engine.pick(postgres=2500, mariadb=2000)
    writer = threading.Thread(target=_writer, args=(engine, changes, committed, done), daemon=True)
    writer.start()
    try:
        kill_at_random_moments(daemon, done, KILLS)
        writer.join()
        check_numbered_changes(moto_url, stream, "counters", committed, f"{engine.schema}.counters")
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()

    restarts = [r for r in read_stream(moto_url, stream) if r["data"]["metadata"]["operation"] == "RestartTask"]
    assert len(restarts) >= 2
    assert daemon.starts >= KILLS + 1


@pytest.mark.pg_core
def test_a_kill_before_the_first_checkpoint_loses_nothing(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    """A fresh CDC task (no checkpoint yet) starts at the server's position of that moment. Killed before its first
    checkpoint, the next start must resume from there, not from the server's new position: the rows committed
    after the first start reported ready are in the stream. (PostgreSQL's slot holds the position; a binlog
    position is held only by what the daemon writes: the first start writes it before it reports ready.)"""
    engine.execute("CREATE TABLE early (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"early-{uuid.uuid4().hex[:8]}")
    daemon = engine.start_daemon(moto_url, stream, tmp_path)
    try:
        daemon.wait_ready()
        # one transaction, and the kill at once: its records cannot have been sent, acknowledged and checkpointed
        # in the millisecond between (the sink lingers 5 ms before a request)
        with engine.transactions() as commit:
            commit(*(("INSERT INTO early VALUES (%s)", (i,)) for i in range(1, 21)))
        daemon.kill()
        with engine.transactions() as commit:
            commit(("INSERT INTO early VALUES (%s)", (21,)))
        daemon.start()
        daemon.wait_ready()
        got = wait_for(moto_url, stream, lambda rs: set(range(1, 22)) <= ids(table_records(rs, "early")))
        assert set(range(1, 22)) <= ids(table_records(got, "early"))
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()


def test_an_idle_source_counts_as_alive(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    """An idle server sends no changes, only heartbeats: the reader's loop still turns, so the liveness check
    that gates the systemd watchdog ping finds the pipeline alive (a MySQL/MariaDB source kept no stamp of its
    loop: idle for longer than the window, it was reported hung and, under systemd's WatchdogSec, restarted)."""
    engine.execute("CREATE TABLE quiet (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"quiet-{uuid.uuid4().hex[:8]}")
    # the watchdog window without systemd is ready_window; heartbeats come every second in these tests
    daemon = engine.start_daemon(moto_url, stream, tmp_path, extra_http="ready_window = 4")
    try:
        daemon.wait_ready()
        time.sleep(12)
        assert "not making progress" not in daemon.log_path.read_text(), daemon.log_tail()
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
