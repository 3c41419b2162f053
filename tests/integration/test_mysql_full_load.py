"""MySQLSource full load against the private MariaDB: rendering equal to CDC, snapshot paths, the start position.

The ``cdc`` fixture user has RELOAD (the FLUSH TABLES WITH READ LOCK path); the fallback tests use a second user
without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from cdcstream.changes import ChangeEvent, Marker, Op
from cdcstream.checkpoints.model import MySQLCheckpoint, load_completed
from cdcstream.config import FullLoadConfig
from cdcstream.sources.loadengine import Segment
from cdcstream.sources.mysql import MySQLSource, snapshot
from cdcstream.sources.mysql.server import connection_settings
from cdcstream.sources.mysql.snapshot import MyLoadEngine
from tests.integration.test_mysql_source import run
from tests.support.checkpoints import mysql
from tests.support.mysql import CDC_GRANTS, MyDb
from tests.support.reader import Reader

pytestmark = pytest.mark.timeout(120)

# A broad type sample; rows 1-3 are loaded, then copied with id + 100 by an INSERT ... SELECT the binlog reports.
TYPES_TABLE = """CREATE TABLE m (id bigint unsigned primary key, ti tinyint, tiu tinyint unsigned, si smallint,
 siu smallint unsigned, mi mediumint, miu mediumint unsigned, i int, iu int unsigned, bi bigint,
 d decimal(30,10), d0 decimal(5,0), fl float, db double, dt date, dtm datetime(3), dt0 datetime,
 dt6 datetime(6), ts timestamp(6) null, ts0 timestamp null, tm time(2), tm0 time, yr year,
 ch char(5), vc varchar(300) character set latin1, tx text, u16 varchar(10) character set utf16, emoji varchar(10),
 bn binary(3), vb varbinary(10), bl blob, bt bit(10), b64 bit(64), en enum('a','b'), st set('x','y','z'),
 js json, g geometry)"""
TYPES_ROWS = (
    """INSERT INTO m VALUES (1, -128, 255, -32768, 65535, -8388608, 16777215,
     -2147483648, 4294967295, -9223372036854775808, '-12345678901234567890.0123456789', 7, 1.1,
     2.25, '2026-11-27', '2026-11-27 12:00:00.123', '2026-11-27 12:00:01',
     '0999-01-02 03:04:05.000006', '2026-11-27 14:00:00.5', '2026-11-27 14:00:00',
     '-838:59:59.00', '12:34:56', 2026, 'ab', 'héllo', 'text…', 'ök€', '😀👍', x'000102', x'ff',
     x'deadbeef', b'1000000001', b'1111111111111111111111111111111111111111111111111111111111111111',
     'b', 'z,x', '{"a": [1, 2.5, "é"]}', ST_GeomFromText('POINT(1 2)'))""",
    "SET sql_mode = ''",
    "INSERT INTO m (id, dt, dtm, ts, yr, st, en) VALUES (2, '0000-00-00', '0000-00-00 00:00:00', "
    "'0000-00-00 00:00:00', 0, '', '')",
    "INSERT INTO m (id) VALUES (3)",
)


@contextlib.contextmanager
def user_without_reload(db: MyDb) -> Iterator[dict[str, str]]:
    """A second least-privileged user: the fixture's grants minus RELOAD (a managed server's situation)."""
    grants = ", ".join(g for g in CDC_GRANTS.split(", ") if g != "RELOAD")
    db.server.execute("CREATE USER 'noreload'@'127.0.0.1' IDENTIFIED BY 'noreload'")
    db.server.execute(f"GRANT {grants} ON *.* TO 'noreload'@'127.0.0.1'")
    try:
        yield {"user": "noreload", "password": "noreload"}
    finally:
        db.server.execute("DROP USER 'noreload'@'127.0.0.1'")


def _source(db: MyDb, migration_type: str = "full-load-and-cdc", **cfg: Any) -> MySQLSource:
    fl = FullLoadConfig(max_full_load_subtasks=2, parallel_load_buffer_size=7, chunk_rows=100)
    return MySQLSource(db.config(**cfg), migration_type=migration_type, full_load=fl)


def _create_types_table(cur: Any) -> None:
    """The type sample table ``m`` with its rows 1-3."""
    cur.execute(TYPES_TABLE)
    for statement in TYPES_ROWS:
        cur.execute(statement)


def _session(db: MyDb) -> pymysql.Connection[Any]:
    conn = db.connect()
    with conn.cursor() as cur:
        cur.execute("SET time_zone = '+02:00'")  # the load must not depend on the writer's time zone
    return conn


async def test_load_rows_render_like_inserted_rows(my_db: MyDb) -> None:
    """The same values as a load row and as a CDC insert: identical ``after`` and table description. (Both are
    checked against the server in test_mysql_oracle.py; this compares our two paths with each other, with
    ``invalid_dates = "null"`` for the zero dates of row 2.)"""

    def prepare() -> None:
        conn = _session(my_db)
        with conn.cursor() as cur:
            _create_types_table(cur)
        conn.close()

    await asyncio.to_thread(prepare)
    src = _source(my_db, invalid_dates="null")
    await src.start(None)
    reader = Reader(src)
    try:
        await reader.wait_for(lambda r: len(r.events) >= 3, what="load rows")

        def copy() -> None:
            conn = _session(my_db)
            with conn.cursor() as cur:
                cur.execute("SET sql_mode = ''")
                cur.execute(
                    "SELECT GROUP_CONCAT(CONCAT('`', column_name, '`')) FROM information_schema.columns "
                    "WHERE table_schema = DATABASE() AND table_name = 'm' AND column_name <> 'id' "
                    "ORDER BY ordinal_position"
                )
                cols = cur.fetchone()[0]
                cur.execute(f"INSERT INTO m (id, {cols}) SELECT id + 100, {cols} FROM m")
            conn.close()

        await asyncio.to_thread(copy)
        await reader.wait_for(lambda r: len(r.events) >= 6, what="inserted rows")
    finally:
        await reader.stop()
    loads = [e for e in reader.events if e.op is Op.LOAD]
    inserts = [e for e in reader.events if e.op is Op.INSERT]
    assert len(loads) == 3 and len(inserts) == 3
    by_id = {int(e.after["id"]) % 100: e for e in inserts if e.after}
    for load in loads:
        assert load.after is not None
        ins = by_id[int(load.after["id"])]
        assert ins.after is not None
        assert load.after | {"id": 0} == ins.after | {"id": 0}, load.after["id"]
        assert load.table == ins.table
    full = next(e.after for e in loads if e.after and e.after["id"] == 1)
    assert full is not None and full["u16"] == "ök€" and full["emoji"] == "😀👍" and full["bt"] == 513
    assert full["ts"] == "2026-11-27T12:00:00.500000Z"


def _positions(events: list[Any]) -> list[MySQLCheckpoint]:
    return [mysql(m.checkpoint) for m in events if isinstance(m, Marker)]


async def _load_with_concurrent_writes(my_db: MyDb, **cfg: Any) -> tuple[list[Any], MySQLSource]:
    """Load ``w`` (a counter table) while a writer changes it; then more changes after the load."""
    await run(
        my_db,
        "CREATE TABLE w (id int primary key, v int not null)",
        "INSERT INTO w SELECT seq, 0 FROM seq_1_to_500",
    )
    src = _source(my_db, **cfg)
    await src.start(None)
    await run(my_db, "UPDATE w SET v = 1 WHERE id <= 10", "INSERT INTO w VALUES (1000, 1)")
    reader = Reader(src)
    try:
        await reader.wait_for(lambda r: sum(1 for e in r.events if e.op is not Op.LOAD) >= 11, what="changes")
    finally:
        await reader.stop()
    return reader.items, src


def _replay(items: list[Any]) -> dict[int, int]:
    state: dict[int, int] = {}
    for e in items:
        if isinstance(e, ChangeEvent) and e.after is not None and e.table.table == "w":
            state[int(e.after["id"])] = int(e.after["v"])
    return state


async def test_lock_path_starts_cdc_at_the_snapshot(my_db: MyDb) -> None:
    items, src = await _load_with_concurrent_writes(my_db)
    assert src._load is not None and getattr(src._load.engine, "path", None) == "lock"
    assert _replay(items) == {int(k): int(v) for k, v in my_db.execute("SELECT id, v FROM w")}
    ops = [e.op for e in items if isinstance(e, ChangeEvent)]
    assert ops.count(Op.LOAD) == 500  # the writes came after the snapshot: CDC carries them, the load does not
    loaded_marker = _positions(items)[-1]
    assert load_completed(loaded_marker) and "file" in loaded_marker


async def test_without_reload_falls_back_to_binlog_snapshot(my_db: MyDb) -> None:
    """MariaDB without RELOAD: each session reports its snapshot's binlog position (Binlog_snapshot_file /
    _position, checked here on 10.11); the load converges as well."""
    with user_without_reload(my_db) as creds:
        items, src = await _load_with_concurrent_writes(my_db, **creds)
        assert src._load is not None and getattr(src._load.engine, "path", None) == "binlog_snapshot"
        start = mysql(src._load.start_position)
        assert start["file"].startswith("mariadb-bin.") and start["pos"] > 4 and start["gtid"]
    assert _replay(items) == {int(k): int(v) for k, v in my_db.execute("SELECT id, v FROM w")}


def _engine(db: MyDb, *, want_position: bool, chunk_rows: int, buffer_size: int) -> MyLoadEngine:
    """A load engine over the test database's tables, as the ``cdc`` user."""
    return MyLoadEngine(
        lambda: connection_settings(db.config(user="cdc", password="cdc")),
        mariadb=True,
        want_position=want_position,
        selector=lambda s, t: s == db.name,
        chunk_rows=chunk_rows,
        buffer_size=buffer_size,
        no_hex_prefix=False,
        where="test",
    )


async def test_binlog_snapshot_status_is_exact(my_db: MyDb) -> None:
    """The fallback's premise on this server: a consistent snapshot's Binlog_snapshot_position is the binlog end
    at the snapshot, unchanged by later commits."""
    await run(my_db, "CREATE TABLE s (id int primary key)")
    engine = _engine(my_db, want_position=True, chunk_rows=100, buffer_size=10)
    await engine.open(1, fresh=True)
    try:
        conn = engine._sessions[0]
        before = engine._snapshot_position(conn)
        await run(my_db, "INSERT INTO s VALUES (1)")
        assert engine._snapshot_position(conn) == before
        file, pos = my_db.server.master_status()
        assert file == before["file"] and pos > before["pos"]
    finally:
        await engine.close()


async def test_check_names_missing_full_load_privileges(my_db: MyDb) -> None:
    from cdcstream.sources.mysql.checks import run_checks

    await run(my_db, "CREATE TABLE t1 (id int primary key)", "CREATE TABLE t2 (id int primary key)")
    full = {r.name: r for r in await run_checks(my_db.config(), None, None, full_load=True)}
    assert full["full load lock"].ok and not full["full load lock"].warning
    assert full["full load tables"].ok and "2 selected" in full["full load tables"].detail
    cdc_only = {r.name for r in await run_checks(my_db.config(), None, None)}
    assert "full load lock" not in cdc_only
    with user_without_reload(my_db) as creds:
        weak = {r.name: r for r in await run_checks(my_db.config(**creds), None, None, full_load=True)}
        assert weak["full load lock"].ok and weak["full load lock"].warning
        assert "GRANT RELOAD" in weak["full load lock"].fix
    # SELECT on t1 only (t2 visible through another privilege, but not readable): t2 is named.
    db = my_db.name
    my_db.server.execute("CREATE USER 'part'@'127.0.0.1' IDENTIFIED BY 'part'")
    try:
        my_db.server.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR, RELOAD ON *.* TO 'part'@'127.0.0.1'")
        my_db.server.execute(f"GRANT SELECT ON `{db}`.t1 TO 'part'@'127.0.0.1'")
        my_db.server.execute(f"GRANT INSERT ON `{db}`.t2 TO 'part'@'127.0.0.1'")
        part = {
            r.name: r for r in await run_checks(my_db.config(user="part", password="part"), None, None, full_load=True)
        }
        assert not part["full load tables"].ok and f"{db}.t2" in part["full load tables"].detail
        assert f"{db}.t1" not in part["full load tables"].detail and "GRANT SELECT" in part["full load tables"].fix
    finally:
        my_db.server.execute("DROP USER 'part'@'127.0.0.1'")


async def test_full_load_alone_needs_only_select(my_db: MyDb) -> None:
    """``migration_type = "full-load"`` reads tables only: a user with SELECT on the database and nothing else
    (no binlog privileges, no RELOAD) passes ``check`` and copies every row."""
    from cdcstream.sources.mysql.checks import run_checks

    await run(
        my_db,
        "CREATE TABLE w (id int primary key, v int not null)",
        "INSERT INTO w SELECT seq, seq FROM seq_1_to_50",
    )
    my_db.server.execute("CREATE USER 'reader'@'127.0.0.1' IDENTIFIED BY 'reader'")
    try:
        my_db.server.execute(f"GRANT SELECT ON `{my_db.name}`.* TO 'reader'@'127.0.0.1'")
        creds = {"user": "reader", "password": "reader"}
        results = await run_checks(my_db.config(**creds), None, None, full_load=True, cdc=False)
        assert all(r.ok for r in results) and "privileges" not in {r.name for r in results}, results
        src = _source(my_db, "full-load", **creds)
        await src.start(None)
        items: list[Any] = []

        async def drain() -> None:
            async for batch in src.changes():
                items.extend(batch)

        try:
            await asyncio.wait_for(drain(), 60)
        finally:
            await src.close()
        assert _replay(items) == {i: i for i in range(1, 51)}
    finally:
        my_db.server.execute("DROP USER 'reader'@'127.0.0.1'")


async def _read_all(engine: MyLoadEngine, spec: Any, *, raw: bool) -> list[tuple[list[dict[str, Any]], Any]]:
    """A table's chunks through ``read`` as (rows, last_key); raw chunks decoded by ``rows()``, both directly
    and after a pickle round trip (what a mapping worker receives)."""
    out = []
    async for chunk in engine.read(0, spec, Segment(spec.name), None, raw=raw):
        if raw:
            assert chunk.rows == [] and chunk.raw is not None
            rows = chunk.raw.rows()
            assert rows is not None and len(rows) == len(chunk.raw)
            copy = pickle.loads(pickle.dumps(chunk.raw))
            assert copy.rows() == rows
            assert [{k: type(v) for k, v in r.items()} for r in copy.rows()] == [
                {k: type(v) for k, v in r.items()} for r in rows
            ]
            assert await engine.decode(spec, chunk.raw) == rows
        else:
            assert chunk.raw is None
            rows = chunk.rows
        out.append((rows, chunk.last_key))
    return out


async def test_raw_chunks_decode_like_the_reader_thread(my_db: MyDb, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row packets decoded by ``MyRowPackets.rows()`` (in a worker: ``read(raw=True)``, after pickling too; in the
    session thread: ``read(raw=False)``): the same rows, value types and last keys as PyMySQL's own row parsing,
    over many types, long values and a composite key. (Each path against the server: test_mysql_oracle.py.)"""

    def prepare() -> None:
        conn = _session(my_db)
        with conn.cursor() as cur:
            _create_types_table(cur)
            # Invalid dates the server stores on request (zero in date, 30 February): the server's text.
            cur.execute("SET sql_mode = 'ALLOW_INVALID_DATES'")
            cur.execute(
                "INSERT INTO m (id, dt, dtm, dt6, dt0) VALUES "
                "(5, '2026-00-15', '2026-02-30 10:00:00.5', '2024-02-29 00:00:00.000001', '2026-04-31 00:00:00')"
            )
            cur.execute("SET sql_mode = ''")
            cur.execute(
                "INSERT INTO m (id, tx, bl, vb) SELECT seq + 10, REPEAT('é', seq * 300), "
                "REPEAT(x'00ff', seq * 20000), x'fe' FROM seq_1_to_4"
            )
            cur.execute(
                "CREATE TABLE k (a varbinary(8), b datetime(6), c decimal(10,3), d varchar(20) character set utf8mb4,"
                " e time(3), v mediumtext, n int, PRIMARY KEY (a, b, c, d, e))"
            )
            cur.execute(
                "INSERT INTO k SELECT CONCAT(x'00fe', CHAR(seq % 3)), '2026-01-02 03:04:05.123456' + INTERVAL seq DAY, "
                "seq / 7, CONCAT('😀', seq % 5), SEC_TO_TIME(CAST(seq AS SIGNED) * 1000 - 10000.5), "
                "IF(seq % 4 = 0, NULL, REPEAT('x', seq)), seq FROM seq_1_to_40"
            )
        conn.close()

    await asyncio.to_thread(prepare)
    engine = _engine(my_db, want_position=False, chunk_rows=7, buffer_size=3)
    await engine.open(1, fresh=True)
    try:
        specs = {s.name.split(".")[1]: s for s in await engine.tables()}
        assert specs["k"].key_columns == ("a", "b", "c", "d", "e")
        for name, count in (("m", 8), ("k", 40)):
            with monkeypatch.context() as m:
                m.setattr(snapshot, "RAW_READS", False)  # PyMySQL's own row parsing: the reference
                cooked = await _read_all(engine, specs[name], raw=False)
            raw = await _read_all(engine, specs[name], raw=True)
            in_thread = await _read_all(engine, specs[name], raw=False)  # packets decoded in the session thread
            assert sum(len(rows) for rows, _ in cooked) == count
            assert raw == cooked
            assert in_thread == cooked
            if name == "k":  # binary, datetime, decimal, text and time key values, as the checkpoint stores them
                assert raw[0][1][:4] == [{"hex": "00fe00"}, "2026-01-11 03:04:05.123456", "1.286", "😀4"]
                assert isinstance(raw[0][1][4], str)
            for got in (raw, in_thread):
                types = [{k: type(v) for k, v in r.items()} for rows, _ in got for r in rows]
                assert types == [{k: type(v) for k, v in r.items()} for rows, _ in cooked for r in rows]
        # the session is left clean for other queries after the raw reads
        with engine._sessions[0].cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        await engine.close()
