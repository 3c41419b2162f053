"""The real ``cdcstream`` process with a MariaDB source: records, control records, restarts and SIGKILL.

The SIGKILL test is the skeleton's crash-safety test (tests/e2e/test_crash_safety.py) run against the binlog
source: a writer commits numbered changes while the daemon is killed at random moments (at least 10 times,
sometimes during start-up) and restarted; afterwards every committed change is in the stream, and after
keeping each stream position's last occurrence the changes are in commit order.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pymysql

from tests.support.daemon import (
    CDCSTREAM,
    Daemon,
    create_stream,
    last_occurrence_order,
    mysql_source,
    read_stream,
    write_config,
)
from tests.support.mysql import MyDb

CHANGES = 2000
KILLS = 10


def _wait_for(endpoint: str, stream: str, pred: Any, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = read_stream(endpoint, stream)
        if pred(records):
            return records
        assert time.monotonic() < deadline, f"stream never satisfied the condition; have {len(records)} records"
        time.sleep(0.3)


def _table(records: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return [r for r in records if r["data"]["metadata"].get("table-name") == table]


def _config(my_db: MyDb, url: str, tmp_path: Path, stream: str) -> Path:
    return write_config(
        tmp_path / "cdcstream.toml",
        endpoint_url=url,
        stream=stream,
        source=mysql_source(my_db.server.port, my_db.name),
    )


def test_mysql_records_control_records_and_restart(my_db: MyDb, kinesis_url: str, tmp_path: Path) -> None:
    my_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, name varchar(20), price decimal(12,2), raw varbinary(4))")
    stream = create_stream(kinesis_url, f"my-{uuid.uuid4().hex[:8]}")
    daemon = Daemon(_config(my_db, kinesis_url, tmp_path, stream), tmp_path / "daemon.log")
    daemon.start()
    daemon.wait_ready()
    try:
        my_db.execute("INSERT INTO items VALUES (1, 'a', 12.50, x'0aff'), (2, 'b', NULL, NULL)")
        my_db.execute("UPDATE items SET name = 'c' WHERE id = 1")
        my_db.execute("DELETE FROM items WHERE id = 2")
        my_db.execute("TRUNCATE TABLE items")
        my_db.execute("INSERT INTO items (id, name) VALUES (3, 'after truncate')")
        records = _wait_for(kinesis_url, stream, lambda rs: len(_table(rs, "items")) >= 6)
        time.sleep(0.5)
        assert daemon.stop() == 0, daemon.log_tail()
        # restart: RestartTask again, then new changes, nothing acknowledged replayed
        my_db.execute("INSERT INTO items (id) VALUES (4)")
        my_db.execute("DROP TABLE items")
        daemon.start()
        daemon.wait_ready()
        records = _wait_for(kinesis_url, stream, lambda rs: len(_table(rs, "items")) >= 8)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()

    items = _table(records, "items")
    ops = [(r["data"]["metadata"]["record-type"], r["data"]["metadata"]["operation"]) for r in items]
    assert ops == [
        ("data", "insert"),
        ("data", "insert"),
        ("data", "update"),
        ("data", "delete"),
        ("control", "TruncateTable"),
        ("data", "insert"),
        ("data", "insert"),
        ("control", "DropTable"),
    ]
    first = items[0]
    assert first["partition_key"] == f"{my_db.name}.items"
    assert first["data"]["data"] == {"id": 1, "name": "a", "price": "12.50", "raw": "0x0aff"}
    meta = first["data"]["metadata"]
    assert meta["schema-name"] == my_db.name and meta["table-name"] == "items"
    assert meta["stream-position"].startswith("mariadb-bin.")
    assert items[4]["partition_key"] == f"task1.{my_db.name}.items"
    positions = [r["data"]["metadata"]["stream-position"] for r in items]
    assert positions == sorted(positions)
    restarts = [r for r in records if r["data"]["metadata"]["operation"] == "RestartTask"]
    assert len(restarts) == 2


def test_mysql_check_command(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    stream = create_stream(moto_url, f"chk-{uuid.uuid4().hex[:8]}")
    config = _config(my_db, moto_url, tmp_path, stream)
    res = subprocess.run(
        [*CDCSTREAM, "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=Daemon(config, tmp_path / "x.log").env,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("binlog_format", "binlog_row_image", "binlog_row_metadata", "privileges", "binlog position"):
        assert f"OK   {name}" in res.stdout, res.stdout


def _writer(db: MyDb, committed: list[tuple[str, int, int]], done: threading.Event) -> None:
    conn = db.connect(autocommit=True)
    try:
        with conn.cursor() as cur:
            for n in range(1, CHANGES + 1):
                key = n % 25
                if n % 9 == 0:
                    conn.begin()
                    cur.execute("UPDATE counters SET n = %s WHERE id = %s", (n, key))
                    deleted = cur.execute("DELETE FROM counters WHERE id = %s", (key,))
                    conn.commit()
                    if deleted:
                        committed.append(("delete", key, n))
                else:
                    cur.execute(
                        "INSERT INTO counters (id, n) VALUES (%s, %s) ON DUPLICATE KEY UPDATE n = VALUES(n)", (key, n)
                    )
                    committed.append(("upsert", key, n))
                time.sleep(0.004)
    except pymysql.Error:
        raise
    finally:
        conn.close()
        done.set()


def test_mysql_sigkill_at_random_moments_loses_nothing(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    my_db.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
    stream = create_stream(moto_url, f"mykill-{uuid.uuid4().hex[:8]}")
    daemon = Daemon(_config(my_db, moto_url, tmp_path, stream), tmp_path / "daemon.log")
    daemon.start()
    daemon.wait_ready()

    committed: list[tuple[str, int, int]] = []
    done = threading.Event()
    writer = threading.Thread(target=_writer, args=(my_db, committed, done), daemon=True)
    writer.start()
    rnd = random.Random(20261127)
    kills = 0
    try:
        while not done.is_set() or kills < KILLS:
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
            records = _table(read_stream(moto_url, stream), "counters")
            seen = {r["data"]["data"].get("n") for r in records}
            missing = expected - seen
            if not missing:
                break
            assert time.monotonic() < deadline, f"{len(missing)} committed changes missing, e.g. {sorted(missing)[:10]}"
            time.sleep(1)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()

    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_n.setdefault(r["data"]["data"]["n"], []).append(r["data"])
    for kind, key, n in committed:
        assert all(doc["data"]["id"] == key for doc in by_n[n])
        ops = {doc["metadata"]["operation"] for doc in by_n[n]}
        assert ops == ({"update", "delete"} if kind == "delete" else ops & {"insert", "update"}), (kind, n, ops)

    positions = last_occurrence_order(records)
    assert positions == sorted(positions)
    first_n_at: dict[str, int] = {}
    for r in records:
        first_n_at.setdefault(r["data"]["metadata"]["stream-position"], r["data"]["data"]["n"])
    numbers = [first_n_at[p] for p in positions]
    assert numbers == sorted(numbers), "changes out of commit order after de-duplication"
    assert {r["partition_key"] for r in records} == {f"{my_db.name}.counters"}
    assert daemon.starts >= KILLS + 1
