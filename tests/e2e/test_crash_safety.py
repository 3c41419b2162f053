"""End to end with the real ``cdcstream`` process: SIGKILL at random moments loses nothing and keeps order.

A writer commits a numbered sequence of changes while the test kills the daemon (at least 10 times, at random
moments, including during start-up) and restarts it. Afterwards every committed change is in the stream, and
after keeping each stream position's last occurrence the changes are in commit order.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from tests.support.daemon import Daemon, create_stream, last_occurrence_order, read_stream, write_config
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


def _changes(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["data"]["metadata"].get("table-name") == "counters"]


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
    rnd = random.Random(20261127)
    kills = 0
    try:
        while not done.is_set() or kills < KILLS:
            # Mostly while streaming, sometimes in the middle of start-up (slot, publication, first request).
            if rnd.random() < 0.7:
                daemon.wait_ready()
            time.sleep(rnd.uniform(0.05, 1.5))
            daemon.kill()
            kills += 1
            daemon.start()
        writer.join()
        daemon.wait_ready()

        expected = {n for _, _, n in committed}
        deadline = time.monotonic() + 180
        while True:
            records = _changes(read_stream(moto_url, stream))
            seen = {r["data"]["data"].get("n") for r in records}
            missing = expected - seen
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} committed changes missing, e.g. {sorted(missing)[:10]}"
            time.sleep(1)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()

    # Each committed change arrived with the right operation and row.
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_n.setdefault(r["data"]["data"]["n"], []).append(r["data"])
    for kind, key, n in committed:
        assert all(doc["data"]["id"] == key for doc in by_n[n])
        ops = {doc["metadata"]["operation"] for doc in by_n[n]}
        assert ops == ({"update", "delete"} if kind == "delete" else ops & {"insert", "update"}), (kind, n, ops)

    # One partition key per table: after keeping each stream position's last occurrence, commit order.
    positions = last_occurrence_order(records)
    assert positions == sorted(positions)
    first_n_at: dict[str, int] = {}
    for r in records:
        first_n_at.setdefault(r["data"]["metadata"]["stream-position"], r["data"]["data"]["n"])
    numbers = [first_n_at[p] for p in positions]
    assert numbers == sorted(numbers), "changes out of commit order after de-duplication"
    assert {r["partition_key"] for r in records} == {"public.counters"}

    restarts = [r for r in read_stream(moto_url, stream) if r["data"]["metadata"]["operation"] == "RestartTask"]
    assert len(restarts) >= 2
    assert daemon.starts >= KILLS + 1
