"""The real ``cdcstream`` process with a MariaDB source: records, control records, restarts, ``check`` and
compressed binlog events. (SIGKILL at random moments: tests/e2e/test_crash_safety.py, over both engines.)"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.support.daemon import Daemon, create_stream, db_config, run_cli, start_daemon, table_records, wait_for
from tests.support.mysql import MyDb


def test_mysql_records_control_records_and_restart(my_db: MyDb, kinesis_url: str, tmp_path: Path) -> None:
    my_db.execute("CREATE TABLE items (id bigint PRIMARY KEY, name varchar(20), price decimal(12,2), raw varbinary(4))")
    stream = create_stream(kinesis_url, f"my-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(my_db, kinesis_url, stream, tmp_path)
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
    res = run_cli("check", "--config", str(db_config(my_db, tmp_path / "c.toml", moto_url, stream)))
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("binlog_format", "binlog_row_image", "binlog_row_metadata", "privileges", "binlog position"):
        assert f"OK   {name}" in res.stdout, res.stdout


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
    daemon = Daemon(db_config(my_db, tmp_path / "c.toml", moto_url, stream), tmp_path / "daemon.log")
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
