"""The real ``cdcstream`` process with a MariaDB source: records, control records, restarts and SIGKILL.

The SIGKILL test is the skeleton's crash-safety test (tests/e2e/test_crash_safety.py) run against the binlog
source: a writer commits numbered changes while the daemon is killed at random moments (at least 10 times,
sometimes during start-up) and restarted; afterwards every committed change is in the stream, and after
keeping each stream position's last occurrence the changes are in commit order.
"""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path

import pymysql

from tests.support.daemon import (
    CDCSTREAM,
    Daemon,
    check_numbered_changes,
    create_stream,
    kill_at_random_moments,
    mysql_source,
    table_records,
    wait_for,
    write_config,
)
from tests.support.mysql import MyDb

CHANGES = 2000
KILLS = 10


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
        records = wait_for(kinesis_url, stream, lambda rs: len(table_records(rs, "items")) >= 6)
        time.sleep(0.5)
        assert daemon.stop() == 0, daemon.log_tail()
        # restart: RestartTask again, then new changes, nothing acknowledged replayed
        my_db.execute("INSERT INTO items (id) VALUES (4)")
        my_db.execute("DROP TABLE items")
        daemon.start()
        daemon.wait_ready()
        records = wait_for(kinesis_url, stream, lambda rs: len(table_records(rs, "items")) >= 8)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()

    items = table_records(records, "items")
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
    try:
        kill_at_random_moments(daemon, done, KILLS)
        writer.join()
        check_numbered_changes(moto_url, stream, "counters", committed, f"{my_db.name}.counters")
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    assert daemon.starts >= KILLS + 1


def test_mysql_compressed_binlog_switched_on_and_off_while_streaming(
    my_db: MyDb, moto_url: str, tmp_path: Path
) -> None:
    """With ``log_bin_compress = ON`` MariaDB writes row and query events longer than
    ``log_bin_compress_min_len`` compressed (QUERY_COMPRESSED_EVENT, *_ROWS_COMPRESSED_EVENT_V1), which used to
    be filtered out while the checkpoint moved on. Switched on and off while the daemon streams: every change
    and every control record is in the stream."""
    my_db.execute("CREATE TABLE z (id int PRIMARY KEY, pad varchar(2000), n int)")
    my_db.execute("CREATE TABLE side (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"myz-{uuid.uuid4().hex[:8]}")
    daemon = Daemon(_config(my_db, moto_url, tmp_path, stream), tmp_path / "daemon.log")
    server = my_db.server
    first_file = server.master_status()[0]
    daemon.start()
    daemon.wait_ready()
    expected: dict[int, int] = {}
    try:
        for rnd in range(4):
            server.execute(f"SET GLOBAL log_bin_compress = {'ON' if rnd % 2 == 0 else 'OFF'}")
            base = rnd * 100
            # one row per event, several rows per event (a multi-row INSERT), an UPDATE and a DELETE
            for i in range(base, base + 20):
                my_db.execute(f"INSERT INTO z VALUES ({i}, REPEAT('p{i}', 120), 0)")
            values = ", ".join(f"({i}, REPEAT('q', 300), 1)" for i in range(base + 20, base + 60))
            my_db.execute(f"INSERT INTO z VALUES {values}")
            my_db.execute(f"UPDATE z SET n = {rnd + 10} WHERE id BETWEEN {base} AND {base + 9}")
            my_db.execute(f"DELETE FROM z WHERE id BETWEEN {base + 50} AND {base + 59}")
            # a query event longer than the threshold: compressed as a whole
            my_db.execute(f"TRUNCATE TABLE side /* {'c' * 400} round {rnd} */")
            for i in range(base, base + 50):
                expected[i] = rnd + 10 if i < base + 10 else (0 if i < base + 20 else 1)
        records = wait_for(
            moto_url,
            stream,
            lambda rs: (
                len([r for r in table_records(rs, "side") if r["data"]["metadata"]["record-type"] == "control"]) >= 4
            ),
            timeout=120,
        )
    finally:
        server.execute("SET GLOBAL log_bin_compress = OFF")
        assert daemon.stop() == 0, daemon.log_tail()
    kinds = {str(r[2]) for r in server.execute(f"SHOW BINLOG EVENTS IN '{first_file}'")}
    assert {"Write_rows_compressed_v1", "Update_rows_compressed_v1", "Query_compressed"} <= kinds, kinds
    final: dict[int, int | None] = {}
    for r in table_records(records, "z"):
        meta, data = r["data"]["metadata"], r["data"]["data"]
        final[data["id"]] = None if meta["operation"] == "delete" else data["n"]
        if meta["operation"] != "delete":
            assert data["pad"] == (f"p{data['id']}" * 120 if data["id"] % 100 < 20 else "q" * 300)
    assert {k: v for k, v in final.items() if v is not None} == expected
    assert len([r for r in table_records(records, "z") if r["data"]["metadata"]["operation"] == "delete"]) == 40
