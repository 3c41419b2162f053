"""MySQLSource against a private MariaDB server, as the least-privilege ``cdc`` user. (Every value type, in load
and CDC records, is checked against the server in test_mysql_oracle.py.)"""

from __future__ import annotations

import asyncio
import time

import pytest

from cdcstream.changes import Marker, Op
from cdcstream.errors import SourceError
from cdcstream.sources.mysql import MySQLSource
from tests.support.checkpoints import mysql
from tests.support.mysql import MyDb
from tests.support.reader import Reader, n_events, open_reader

pytestmark = pytest.mark.timeout(120)


async def run(db: MyDb, *statements: str) -> None:
    def _run() -> None:
        for s in statements:
            db.execute(s)

    await asyncio.to_thread(_run)


async def test_every_operation_and_control_events_in_order(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE items (id bigint PRIMARY KEY, name varchar(20), qty int, price decimal(12,2))")
    reader = await open_reader(my_db.config())
    try:
        await run(
            my_db,
            "INSERT INTO items VALUES (1, 'one', 10, 12.50), (2, 'two', NULL, 0.10)",
            "UPDATE items SET qty = 11 WHERE id = 1",
            "DELETE FROM items WHERE id = 2",
            "TRUNCATE TABLE items",
            "INSERT INTO items (id) VALUES (3)",
            "DROP TABLE items",
        )
        await reader.wait_for(n_events(7), what="7 events")
        ev = reader.events
        assert [e.op for e in ev] == [
            Op.INSERT,
            Op.INSERT,
            Op.UPDATE,
            Op.DELETE,
            Op.TRUNCATE,
            Op.INSERT,
            Op.DROP_TABLE,
        ]
        assert ev[0].after == {"id": 1, "name": "one", "qty": 10, "price": "12.50"} and ev[0].before is None
        assert ev[1].after == {"id": 2, "name": "two", "qty": None, "price": "0.10"}
        assert ev[2].before == {"id": 1, "name": "one", "qty": 10, "price": "12.50"}
        assert ev[2].after == {"id": 1, "name": "one", "qty": 11, "price": "12.50"}
        assert ev[3].after is None and ev[3].before == {"id": 2, "name": "two", "qty": None, "price": "0.10"}
        for control in (ev[4], ev[6]):
            assert control.after is None and control.before is None
            assert (control.table.schema, control.table.table) == (my_db.name, "items")
        assert ev[0].table.key_columns == ("id",)
        assert ev[0].table is ev[2].table  # one TableInfo per table version
        # one transaction: same prefix, record ids 1, 2; MariaDB GTID as transaction id
        assert (ev[0].transaction_record_id, ev[1].transaction_record_id) == (1, 2)
        assert ev[0].transaction_id == ev[1].transaction_id and str(ev[0].transaction_id).count("-") == 2
        positions = [e.stream_position for e in ev]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        assert ev[0].commit_time.endswith(".000000Z") and abs(ev[0].commit_epoch - time.time()) < 60
        # a marker after every transaction and every standalone DDL, never between rows of one transaction
        kinds = ["M" if isinstance(i, Marker) else "E" for i in reader.items]
        assert "".join(kinds).startswith("EEMEMEMEMEMEM")
    finally:
        await reader.stop()


async def test_type_matrix(my_db: MyDb) -> None:
    await run(
        my_db,
        """CREATE TABLE m (id bigint unsigned primary key, ti tinyint, tiu tinyint unsigned, si smallint,
         siu smallint unsigned, mi mediumint, miu mediumint unsigned, i int, iu int unsigned, bi bigint,
         d decimal(30,10), d0 decimal(5,0), fl float, db double, dt date, dtm datetime(3), dt0 datetime,
         dt6 datetime(6), ts timestamp(6) null, ts0 timestamp null, tm time(2), tm0 time, yr year,
         ch char(5), vc varchar(300) character set latin1, tx text, u16 varchar(10) character set utf16,
         bn binary(3), vb varbinary(10), bl blob, bt bit(10), b64 bit(64), en enum('a','b'), st set('x','y','z'),
         js json, g geometry)""",
    )
    reader = await open_reader(my_db.config())
    try:
        await run(
            my_db,
            "SET time_zone = '+02:00'",
        )

        def insert() -> None:
            conn = my_db.connect()
            try:
                with conn.cursor() as cur:
                    cur.execute("SET time_zone = '+02:00'")
                    cur.execute(
                        """INSERT INTO m VALUES (18446744073709551615, -128, 255, -32768, 65535, -8388608, 16777215,
                         -2147483648, 4294967295, -9223372036854775808, '-12345678901234567890.0123456789', 7, 1.1,
                         2.25, '2026-11-27', '2026-11-27 12:00:00.123', '2026-11-27 12:00:01',
                         '0999-01-02 03:04:05.000006', '2026-11-27 14:00:00.5', '2026-11-27 14:00:00',
                         '-838:59:59.00', '12:34:56', 2026, 'ab', 'héllo', 'text…', 'ök€', x'000102', x'ff',
                         x'deadbeef', b'1000000001', b'1111111111111111111111111111111111111111111111111111111111111111'
                         ,
                         'b', 'z,x', '{"a": [1, 2]}', ST_GeomFromText('POINT(1 2)'))"""
                    )
                    cur.execute("SET sql_mode = ''")
                    cur.execute(
                        "INSERT INTO m (id, dt, dtm, ts, yr, st, en) VALUES "
                        "(2, '0000-00-00', '0000-00-00 00:00:00', '0000-00-00 00:00:00', 0, '', '')"
                    )
                    cur.execute("INSERT INTO m (id) VALUES (3)")
            finally:
                conn.close()

        await asyncio.to_thread(insert)
        await reader.wait_for(n_events(3))
        full, zero, nulls = (e.after for e in reader.events[:3])
        assert full == {
            "id": 18446744073709551615,
            "ti": -128,
            "tiu": 255,
            "si": -32768,
            "siu": 65535,
            "mi": -8388608,
            "miu": 16777215,
            "i": -2147483648,
            "iu": 4294967295,
            "bi": -9223372036854775808,
            "d": "-12345678901234567890.0123456789",
            "d0": "7",
            "fl": 1.1,
            "db": 2.25,
            "dt": "2026-11-27",
            "dtm": "2026-11-27T12:00:00.123",
            "dt0": "2026-11-27T12:00:01",
            "dt6": "0999-01-02T03:04:05.000006",
            "ts": "2026-11-27T12:00:00.500000Z",
            "ts0": "2026-11-27T12:00:00Z",
            "tm": "-838:59:59.00",
            "tm0": "12:34:56",
            "yr": 2026,
            "ch": "ab",
            "vc": "héllo",
            "tx": "text…",
            "u16": "ök€",
            "bn": "0x000102",
            "vb": "0xff",
            "bl": "0xdeadbeef",
            "bt": 513,
            "b64": 18446744073709551615,
            "en": "b",
            "st": "x,z",
            "js": '{"a": [1, 2]}',
            "g": "0x" + "00000000" + "0101000000000000000000f03f0000000000000040",
        }
        assert zero is not None and nulls is not None
        zeros = (zero["dt"], zero["dtm"], zero["ts"], zero["yr"], zero["st"], zero["en"])
        # zero dates are the server's own text (invalid_dates = "text", the default)
        assert zeros == ("0000-00-00", "0000-00-00 00:00:00.000", "0000-00-00 00:00:00.000000", 0, "", "")
        assert all(v is None for k, v in nulls.items() if k != "id")
        names = {c.name: c.type_name for c in reader.events[0].table.columns}
        assert names["id"] == "bigint unsigned" and names["vb"] == "varbinary" and names["dtm"] == "datetime(3)"
    finally:
        await reader.stop()


async def test_no_hex_prefix(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE b (id int primary key, v varbinary(4))")
    reader = await open_reader(my_db.config(), no_hex_prefix=True)
    try:
        await run(my_db, "INSERT INTO b VALUES (1, x'0aff')")
        await reader.wait_for(n_events(1))
        assert reader.events[0].after == {"id": 1, "v": "0aff"}
    finally:
        await reader.stop()


async def test_alter_add_column_mid_stream(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE t (id int primary key, a varchar(5))")
    reader = await open_reader(my_db.config())
    try:
        await run(
            my_db,
            "INSERT INTO t VALUES (1, 'x')",
            "ALTER TABLE t ADD COLUMN b int AFTER id",
            "INSERT INTO t VALUES (2, 20, 'y')",
            "UPDATE t SET a = 'z' WHERE id = 1",
        )
        await reader.wait_for(n_events(4))
        first, alter, second, third = reader.events[:4]
        assert alter.op is Op.ADD_COLUMN and alter.change is not None and alter.change.column == "b"
        assert [c.name for c in alter.change.old_table.columns] == ["id", "a"]
        assert first.after == {"id": 1, "a": "x"}
        assert second.after == {"id": 2, "b": 20, "a": "y"}
        assert third.before == {"id": 1, "b": None, "a": "x"} and third.after == {"id": 1, "b": None, "a": "z"}
        assert first.table is not second.table and second.table is third.table
    finally:
        await reader.stop()


async def test_unselected_tables_and_databases_are_skipped(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE keep (id int primary key)", "CREATE TABLE skip (id int primary key)")
    reader = await open_reader(my_db.config(), selector=lambda s, t: t == "keep")
    other = my_db.server.create_database("other")
    try:
        await run(
            my_db,
            "INSERT INTO skip VALUES (1)",
            f"CREATE TABLE `{other}`.keep (id int primary key)",
            f"INSERT INTO `{other}`.keep VALUES (5)",
            "TRUNCATE skip",
            "INSERT INTO keep VALUES (2)",
        )
        await reader.wait_for(n_events(1))
        await asyncio.sleep(0.3)
        assert [(e.table.table, e.after) for e in reader.events] == [("keep", {"id": 2})]
    finally:
        await reader.stop()
        my_db.server.execute(f"DROP DATABASE `{other}`")


async def test_resume_from_file_pos_and_from_gtid(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE r (id int primary key)")
    for mode in ("off", "on"):
        cfg = my_db.config(gtid_mode=mode)
        await run(my_db, "DELETE FROM r")
        reader = await open_reader(cfg)
        try:
            await run(my_db, "INSERT INTO r VALUES (1)", "INSERT INTO r VALUES (2)")
            await reader.wait_for(n_events(2))
            ack = reader.markers[0]  # the transaction end right after the first insert
            assert isinstance(ack, Marker) and set(ack.checkpoint) == {"file", "pos", "gtid", "server_id"}
            await reader.source.ack(ack.checkpoint)
        finally:
            await reader.stop()
        await run(my_db, "INSERT INTO r VALUES (3)", "TRUNCATE r", "INSERT INTO r VALUES (4)")
        reader = await open_reader(cfg, ack.checkpoint)
        try:
            await reader.wait_for(n_events(4), what=f"resume with gtid_mode={mode}")
            got = [(e.op, e.after) for e in reader.events]
            # no loss and no replay of the acknowledged transaction (id 1)
            assert got[:4] == [
                (Op.INSERT, {"id": 2}),
                (Op.INSERT, {"id": 3}),
                (Op.TRUNCATE, None),
                (Op.INSERT, {"id": 4}),
            ], mode
            assert reader.source.status()["resume_by"] == ("gtid" if mode == "on" else "file/pos")
        finally:
            await reader.stop()


async def test_a_checkpoint_without_server_identity_is_accepted_and_recorded(my_db: MyDb) -> None:
    """Checkpoints written before the server identity was stored resume as before; later ones carry it."""
    await run(my_db, "CREATE TABLE o (id int primary key)")
    file, pos = await asyncio.to_thread(my_db.server.master_status)
    await run(my_db, "INSERT INTO o VALUES (1)")
    reader = await open_reader(my_db.config(gtid_mode="off"), {"file": file, "pos": pos, "gtid": None})
    try:
        await reader.wait_for(n_events(1))
        assert mysql(reader.markers[-1].checkpoint)["server_id"] == 1
        assert reader.source.status()["server_identity"] == {"server_id": 1}
    finally:
        await reader.stop()


async def test_another_server_after_a_reconnect_stops_file_pos_streaming(my_db: MyDb) -> None:
    """A failover while streaming: the server comes back with another server_id. Resuming by file/position
    there would read an unrelated binlog, so the reconnect stops with the identity error instead."""
    await run(my_db, "CREATE TABLE fo (id int primary key)")
    server = my_db.server
    cnf = server.cnf.read_text()
    reader = await open_reader(my_db.config(gtid_mode="off"))
    try:
        await run(my_db, "INSERT INTO fo VALUES (1)")
        await reader.wait_for(n_events(1))
        server.cnf.write_text(cnf.replace("server_id=1\n", "server_id=2\n"))
        await asyncio.to_thread(server.restart)
        with pytest.raises(SourceError, match="is server_id 2, but the checkpoint was written for server_id 1") as info:
            await reader.wait_for(lambda _r: False, within=30, what="the identity error")
        assert not info.value.retriable
    finally:
        await reader.source.close()
        server.cnf.write_text(cnf)
        await asyncio.to_thread(server.restart)


async def test_another_server_after_a_reconnect_is_followed_by_gtid(my_db: MyDb) -> None:
    """The same by GTID (the default ``auto``): a first run streams from the server's file/position, but every
    position read carries the GTID state, and the reconnect resumes by it. So a server behind the same address
    that has every transaction read (here the same data directory under another server_id, as after a failover
    behind a moving address) is followed within the run, with nothing lost."""
    await run(my_db, "CREATE TABLE fg (id int primary key)")
    server = my_db.server
    cnf = server.cnf.read_text()
    reader = await open_reader(my_db.config())
    try:
        await run(my_db, "INSERT INTO fg VALUES (1)")
        await reader.wait_for(n_events(1))
        assert reader.source.status()["resume_by"] == "file/pos"
        server.cnf.write_text(cnf.replace("server_id=1\n", "server_id=2\n"))
        await asyncio.to_thread(server.restart)
        await run(my_db, "INSERT INTO fg VALUES (2)")
        await reader.wait_for(n_events(2), within=30, what="the row written after the switch")
        assert [e.after for e in reader.events] == [{"id": 1}, {"id": 2}]
        status = reader.source.status()
        assert status["resume_by"] == "gtid" and status["server_identity"] == {"server_id": 2}, status
        assert mysql(reader.markers[-1].checkpoint)["server_id"] == 2
    finally:
        await reader.source.close()
        server.cnf.write_text(cnf)
        await asyncio.to_thread(server.restart)


async def test_xa_transactions_on_captured_tables_are_refused(my_db: MyDb) -> None:
    """An XA transaction prepared and then rolled back is in the binlog with its rows: streaming them would
    publish a change that never happened. XA on tables that are not captured does not matter."""
    await run(my_db, "CREATE TABLE xa (id int primary key)", "CREATE TABLE other (id int primary key)")
    reader = await open_reader(my_db.config(), selector=lambda _s, t: t == "xa")

    def xa(table: str, outcome: str) -> None:
        conn = my_db.connect()
        try:
            with conn.cursor() as cur:
                for q in ("XA START 'x'", f"INSERT INTO {table} VALUES (1)", "XA END 'x'", "XA PREPARE 'x'", outcome):
                    cur.execute(q)
        finally:
            conn.close()

    try:
        await asyncio.to_thread(xa, "other", "XA COMMIT 'x'")
        await run(my_db, "INSERT INTO xa VALUES (0)")
        await reader.wait_for(n_events(1))
        await asyncio.to_thread(xa, "xa", "XA ROLLBACK 'x'")
        with pytest.raises(SourceError, match=r"\.xa was changed inside an XA .*XA START at mariadb-bin") as info:
            await reader.wait_for(lambda _r: False, what="the XA error")
        assert not info.value.retriable
        assert [e.after for e in reader.events] == [{"id": 0}]  # the rolled-back row was never yielded
    finally:
        await reader.source.close()


async def test_rotation_and_positions_sort(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE p (id int primary key)")
    reader = await open_reader(my_db.config())
    try:
        await run(my_db, "INSERT INTO p VALUES (1)")
        await asyncio.to_thread(my_db.server.execute, "FLUSH BINARY LOGS")
        await run(my_db, "INSERT INTO p VALUES (2)")
        await reader.wait_for(n_events(2))
        a, b = reader.events[:2]
        assert a.stream_position < b.stream_position
        assert a.stream_position.split(":")[0] != b.stream_position.split(":")[0]
        assert mysql(reader.markers[-1].checkpoint)["file"] == b.stream_position.split(":")[0]
    finally:
        await reader.stop()


async def test_server_restart_is_survived(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE s (id int primary key)")
    reader = await open_reader(my_db.config())
    try:
        await run(my_db, "INSERT INTO s VALUES (1)")
        await reader.wait_for(n_events(1))
        await asyncio.to_thread(my_db.server.restart)
        await run(my_db, "INSERT INTO s VALUES (2)")
        await reader.wait_for(lambda r: any(e.after == {"id": 2} for e in r.events), within=60)
        ids = [e.after["id"] for e in reader.events if e.after]
        assert ids[-1] == 2 and set(ids) == {1, 2}
    finally:
        await reader.stop()


async def test_purged_binlog_is_a_clear_error(my_db: MyDb) -> None:
    file, _ = my_db.server.master_status()
    await asyncio.to_thread(my_db.server.execute, "FLUSH BINARY LOGS")
    new_file, _ = my_db.server.master_status()
    await asyncio.to_thread(my_db.server.purge_binlogs_to, new_file)
    src = MySQLSource(my_db.config(gtid_mode="off"))
    with pytest.raises(SourceError, match=rf"{file}.*purged.*full load"):
        await src.start({"file": file, "pos": 4, "gtid": None})
    await src.close()


async def test_settings_are_verified(my_db: MyDb) -> None:
    await asyncio.to_thread(my_db.server.execute, "SET GLOBAL binlog_row_metadata = MINIMAL")
    try:
        src = MySQLSource(my_db.config())
        with pytest.raises(SourceError, match=r"binlog_row_metadata is MINIMAL.*SET GLOBAL binlog_row_metadata = FULL"):
            await src.start(None)
        await src.close()
    finally:
        await asyncio.to_thread(my_db.server.execute, "SET GLOBAL binlog_row_metadata = FULL")


async def test_bad_password_is_not_retried(my_db: MyDb) -> None:
    src = MySQLSource(my_db.config(password="wrong"))
    with pytest.raises(SourceError) as info:
        await src.start(None)
    assert not info.value.retriable and "Access denied" in str(info.value)
    await src.close()


async def test_checks_report(my_db: MyDb) -> None:
    from cdcstream.sources.mysql.checks import run_checks

    results = {r.name: r for r in await run_checks(my_db.config(), None, None)}
    assert all(r.ok for r in results.values()), results
    assert {"connect", "log_bin", "binlog_format", "binlog_row_image", "binlog_row_metadata", "privileges"} <= set(
        results
    )
    purged = await run_checks(my_db.config(), None, {"file": "mariadb-bin.000000", "pos": 4, "gtid": None})
    bad = next(r for r in purged if r.name == "binlog position")
    assert not bad.ok and "mariadb-bin.000000 was purged" in bad.detail and "full load" in bad.fix
    await asyncio.to_thread(my_db.server.execute, "CREATE USER 'weak'@'127.0.0.1' IDENTIFIED BY 'weak'")
    try:
        weak = {r.name: r for r in await run_checks(my_db.config(user="weak", password="weak"), None, None)}
        assert not weak["privileges"].ok and "GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT" in weak["privileges"].fix
    finally:
        await asyncio.to_thread(my_db.server.execute, "DROP USER 'weak'@'127.0.0.1'")


async def test_binlog_status_statements(my_db: MyDb) -> None:
    """MariaDB 10.11 answers SHOW BINLOG STATUS for the ``cdc`` user (BINLOG MONITOR); MySQL 8.4's SHOW BINARY
    LOG STATUS is a syntax error here, so asking as for MySQL takes the fallback (SHOW MASTER STATUS, what MySQL
    before 8.2 has): the same position either way."""
    from cdcstream.sources.mysql.positions import binlog_status

    conn = my_db.server.connect(root=False)
    try:
        with conn.cursor() as cur:
            as_mariadb = binlog_status(cur, mariadb=True)
            as_old_mysql = binlog_status(cur, mariadb=False)
    finally:
        conn.close()
    assert as_mariadb is not None and str(as_mariadb[0]).startswith("mariadb-bin.")
    assert as_mariadb == as_old_mysql


async def test_backpressure_stalls_the_reader(my_db: MyDb) -> None:
    from cdcstream.sources.mysql import source as source_module

    await run(my_db, "CREATE TABLE bp (id int primary key, pad varchar(100))")
    src = MySQLSource(my_db.config())
    await src.start(None)
    reader: Reader | None = None
    try:
        # nobody consumes changes(): the reader must stop at the queue bound instead of reading on
        await run(my_db, "INSERT INTO bp SELECT seq, repeat('x', 100) FROM seq_1_to_20000")
        await asyncio.sleep(1.5)
        assert src._queue.qsize() == source_module.QUEUE_BATCHES
        assert src._reader is not None and src._reader.thread.is_alive()
        reader = Reader(src)
        await reader.wait_for(n_events(20000), within=60)
        assert [e.after["id"] for e in reader.events if e.after] == list(range(1, 20001))
    finally:
        if reader is not None:
            await reader.stop()
        await src.close()


async def test_minimum_privileges_are_enough(my_db: MyDb) -> None:
    """REPLICATION SLAVE + BINLOG MONITOR is all the stream needs on MariaDB 10.11 (SELECT is for checks)."""
    await run(my_db, "CREATE TABLE mp (id int primary key)")
    await asyncio.to_thread(my_db.server.execute, "CREATE USER 'mini'@'127.0.0.1' IDENTIFIED BY 'mini'")
    await asyncio.to_thread(
        my_db.server.execute, "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'mini'@'127.0.0.1'"
    )
    try:
        reader = await open_reader(my_db.config(user="mini", password="mini"))
        try:
            await run(my_db, "INSERT INTO mp VALUES (1)", "TRUNCATE mp")
            await reader.wait_for(n_events(2))
            assert [e.op for e in reader.events] == [Op.INSERT, Op.TRUNCATE]
        finally:
            await reader.stop()
        await asyncio.to_thread(my_db.server.execute, "REVOKE BINLOG MONITOR ON *.* FROM 'mini'@'127.0.0.1'")
        src = MySQLSource(my_db.config(user="mini", password="mini"))
        with pytest.raises(SourceError, match="GRANT BINLOG MONITOR"):
            await src.start(None)
        await src.close()
        # Without REPLICATION SLAVE the settings can be read but the binlog cannot: fatal, with the grant.
        await asyncio.to_thread(my_db.server.execute, "GRANT BINLOG MONITOR ON *.* TO 'mini'@'127.0.0.1'")
        await asyncio.to_thread(my_db.server.execute, "REVOKE REPLICATION SLAVE ON *.* FROM 'mini'@'127.0.0.1'")
        reader = await open_reader(my_db.config(user="mini", password="mini"))
        try:
            with pytest.raises(SourceError, match="GRANT REPLICATION SLAVE") as info:
                await reader.wait_for(n_events(1))
            assert not info.value.retriable
        finally:
            await reader.source.close()  # the reader task already ended with the error
    finally:
        await asyncio.to_thread(my_db.server.execute, "DROP USER 'mini'@'127.0.0.1'")


async def test_mariadb_lock_wait_clause_in_truncate(my_db: MyDb) -> None:
    """MariaDB logs ``TRUNCATE ... WAIT n`` verbatim; sqlglot's MySQL grammar lacks the clause, so the parser
    drops those tokens and parses again instead of skipping the control record."""
    await run(my_db, "CREATE TABLE a (id int primary key)", "CREATE TABLE zz (id int primary key)")
    reader = await open_reader(my_db.config())
    try:
        await run(my_db, "TRUNCATE TABLE zz WAIT 5", "INSERT INTO a VALUES (1)")
        await reader.wait_for(n_events(2))
        assert [(e.op, e.table.table) for e in reader.events] == [(Op.TRUNCATE, "zz"), (Op.INSERT, "a")]
    finally:
        await reader.stop()


async def test_lag_probe_counts_binlog_bytes_after_the_acknowledged_position(my_db: MyDb) -> None:
    """cdcstream_source_lag_bytes for MySQL: binlog from the checkpoint to the end of the log."""
    from cdcstream.sources.mysql.server import binlog_bytes_after, fetch_binlog_sizes

    assert binlog_bytes_after([("b.000001", 1000), ("b.000002", 300)], "b.000001", 400) == 900
    assert binlog_bytes_after([("b.000002", 300)], "b.000001", 400) is None  # purged
    cfg = my_db.config()
    source = MySQLSource(cfg)
    assert await source.lag_probe() == {}  # nothing acknowledged yet
    sizes = fetch_binlog_sizes(cfg)
    file, size = sizes[-1]
    await source.ack({"file": file, "pos": size})
    assert await source.lag_probe() == {"lag_bytes": 0.0}
    my_db.execute("CREATE TABLE lagged (id int PRIMARY KEY, pad text)")
    my_db.execute("INSERT INTO lagged VALUES (1, REPEAT('x', 5000))")
    probe = await source.lag_probe()
    assert probe["lag_bytes"] is not None and probe["lag_bytes"] > 5000
