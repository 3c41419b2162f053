"""CDC values and event forms against a private MariaDB, with the server as the oracle.

Each test writes values, reads them back from the server (``CAST(... AS CHAR)``, ``HEX()``, or the column as a
utf8mb4 client receives it) and compares with what cdcstream's binlog decoder made of the row events. Covered
here: what was once rendered wrong (BINARY padding, negative TIME fractions, dates the calendar cannot hold, MariaDB
UUID/INET4/INET6, every character set), MariaDB's COMPRESSED columns and compressed binlog events, generated
columns, partial row images and statement-based DML from sessions that set them (and the global values changed
while streaming). The full type matrix for CDC and load records is tests/integration/test_mysql_oracle.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from cdcstream.changes import ChangeEvent, Op
from cdcstream.errors import SourceError
from tests.integration.test_mysql_source import run
from tests.support.mysql import MyDb
from tests.support.reader import Reader, n_events, open_reader

pytestmark = pytest.mark.timeout(180)


def _session(db: MyDb, *statements: str, params: list[Any] | None = None) -> None:
    """Run statements in one root session (session variables apply to the ones after them)."""
    conn = db.connect()
    try:
        with conn.cursor() as cur:
            for i, s in enumerate(statements):
                cur.execute(s, (params or {}).get(i) if isinstance(params, dict) else None)
    finally:
        conn.close()


@contextlib.contextmanager
def _global(db: MyDb, name: str, value: str) -> Iterator[None]:
    old = db.server.execute(f"SELECT @@GLOBAL.{name}")[0][0]
    db.server.execute(f"SET GLOBAL {name} = {value}")
    try:
        yield
    finally:
        db.server.execute(f"SET GLOBAL {name} = '{old}'")


async def _rows(reader: Reader, n: int) -> list[ChangeEvent]:
    await reader.wait_for(n_events(n), within=30)
    return reader.events[:n]


async def test_binary_keeps_its_zero_bytes(my_db: MyDb) -> None:
    """The binlog drops BINARY(n)'s trailing zero bytes; SELECT returns all n."""
    await run(
        my_db, "CREATE TABLE b (id int PRIMARY KEY, b10 binary(10), b16 binary(16), b1 binary(1), vb varbinary(8))"
    )
    reader = await open_reader(my_db.config())
    try:
        await run(
            my_db,
            "INSERT INTO b VALUES (1, x'00010203', x'00000000000000000000000000000000', x'00', x'0a00')",
            "INSERT INTO b VALUES (2, x'', x'ff', '', x'')",
        )
        events = await _rows(reader, 2)
        oracle = my_db.execute("SELECT id, HEX(b10), HEX(b16), HEX(b1), HEX(vb) FROM b ORDER BY id")
        for e, row in zip(events, oracle, strict=True):
            assert e.after is not None
            assert [e.after[k] for k in ("b10", "b16", "b1", "vb")] == ["0x" + str(h).lower() for h in row[1:]]
        assert events[0].after is not None and events[0].after["b16"] == "0x" + "00" * 16
    finally:
        await reader.stop()


TIMES = [
    "-01:01:01.000001",
    "-733:00:00.001",
    "-00:00:01.5",
    "-838:59:59",
    "838:59:59.999999",
    "-00:00:00.000001",
    "24:00:00.25",
    "00:00:00",
    "-12:34:56.789",
]


async def test_negative_time_with_fractions(my_db: MyDb) -> None:
    """Negative TIME fractions: -01:01:01.000001 once arrived as -01:01:01.999999. Every fsp 0-6."""
    cols = ", ".join(f"t{f} time({f})" for f in range(7))
    await run(my_db, f"CREATE TABLE tm (id int PRIMARY KEY, {cols})")
    reader = await open_reader(my_db.config())
    try:
        for i, value in enumerate(TIMES):
            vals = ", ".join([f"'{value}'"] * 7)
            await run(my_db, f"INSERT INTO tm VALUES ({i}, {vals})")
        events = await _rows(reader, len(TIMES))
        names = [f"t{f}" for f in range(7)]
        oracle = my_db.execute(f"SELECT {', '.join(f'CAST({n} AS CHAR)' for n in names)} FROM tm ORDER BY id")
        got = [tuple(e.after[n] for n in names) for e in events if e.after is not None]
        assert got == [tuple(r) for r in oracle]
        assert got[0][6] == "-01:01:01.000001" and got[1][3] == "-733:00:00.001"
    finally:
        await reader.stop()


INVALID = [
    ("'0001-00-00'", "'0001-00-00 00:00:00'"),
    ("'2020-02-31'", "'2020-02-31 23:59:59.5'"),
    ("'0000-00-00'", "'0000-00-00 14:02:10'"),
    ("'0000-00-00'", "'0000-00-00 00:00:00'"),
    ("'2020-00-15'", "'2020-11-00 01:02:03.123456'"),
    ("'2024-02-29'", "'0000-01-01 00:00:00'"),
]


@pytest.mark.parametrize("mode", ["text", "null"])
async def test_dates_the_calendar_cannot_hold(my_db: MyDb, mode: str) -> None:
    """Dates the calendar cannot hold: the server's own text (default), or null with invalid_dates = "null" (DMS)."""
    await run(my_db, "CREATE TABLE d (id int PRIMARY KEY, d date, dt datetime(6), dt0 datetime, ts timestamp(3) NULL)")
    reader = await open_reader(my_db.config(invalid_dates=mode))
    try:
        statements = ["SET sql_mode = 'ALLOW_INVALID_DATES'"]
        for i, (d, dt) in enumerate(INVALID):
            statements.append(f"INSERT INTO d VALUES ({i}, {d}, {dt}, {dt}, '0000-00-00 00:00:00')")
        await asyncio.to_thread(_session, my_db, *statements)
        events = await _rows(reader, len(INVALID))
        oracle = my_db.execute(
            "SELECT CAST(d AS CHAR), CAST(dt AS CHAR), CAST(dt0 AS CHAR), CAST(ts AS CHAR), "
            "d = DATE(d) AND MONTH(d) > 0 AND DAYOFMONTH(d) > 0 AND DAYOFMONTH(LAST_DAY(d)) >= DAYOFMONTH(d), "
            "MONTH(dt) > 0 AND DAYOFMONTH(dt) > 0 AND DAYOFMONTH(LAST_DAY(dt)) >= DAYOFMONTH(dt) "
            "FROM d ORDER BY id"
        )
        for e, (d, dt, dt0, ts, d_ok, dt_ok) in zip(events, oracle, strict=True):
            after = e.after
            assert after is not None
            if mode == "text":
                assert after["d"] == d
                assert after["dt"] == (dt.replace(" ", "T") if dt_ok else dt)
                assert after["dt0"] == (dt0.replace(" ", "T") if dt_ok else dt0)
                assert after["ts"] == ts == "0000-00-00 00:00:00.000"
            else:
                assert after["d"] == (d if d_ok else None)
                assert after["dt"] == (dt.replace(" ", "T") if dt_ok else None)
                assert after["ts"] is None
        assert events[0].after is not None and events[0].after["d"] == ("0001-00-00" if mode == "text" else None)
    finally:
        await reader.stop()


UUIDS = [
    "01020304-0506-0708-090a-0b0c0d0e0f10",
    "6ccd780c-baba-1026-9564-5b8c656024db",  # version 1: MariaDB stores it with the segments swapped
    "12345678-9abc-4ef0-8234-000000000000",  # trailing zero bytes
    "00000000-0000-0000-0000-000000000000",
]
INET6 = [
    "2001:db8::",
    "::",
    "::1",
    "::ffff:1.2.3.4",
    "::1.2.3.4",
    "1:0:0:2:0:0:0:3",
    "fe80::1:2:3:4",
    "1:2:3:4:5:6:7:0",
]
INET4 = ["0.0.0.0", "1.2.3.4", "255.255.255.255", "10.0.0.0"]


async def test_uuid_inet4_inet6_are_their_text(my_db: MyDb) -> None:
    """MariaDB UUID/INET4/INET6: the table map says BINARY(16)/BINARY(4); the catalogue says UUID/INET6/INET4, and the
    value is the server's text. A UUID primary key is the key. After ALTER ... MODIFY to BINARY(16), hex."""
    await run(my_db, "CREATE TABLE u (u uuid PRIMARY KEY, i6 inet6, i4 inet4, bin binary(16))")
    reader = await open_reader(my_db.config())
    try:
        for i, u in enumerate(UUIDS):
            await run(
                my_db,
                f"INSERT INTO u VALUES ('{u}', '{INET6[i % len(INET6)]}', '{INET4[i]}', x'0102')",
            )
        for i, addr in enumerate(INET6[len(UUIDS) :]):
            await run(my_db, f"INSERT INTO u (u, i6) VALUES ('ffffffff-0000-0000-0000-00000000000{i}', '{addr}')")
        n = len(UUIDS) + len(INET6) - len(UUIDS)
        events = await _rows(reader, n)
        oracle = {
            str(r[0]): r[1:]
            for r in my_db.execute("SELECT CAST(u AS CHAR), CAST(i6 AS CHAR), CAST(i4 AS CHAR), HEX(bin) FROM u")
        }
        for e in events:
            assert e.after is not None
            i6, i4, b = oracle[e.after["u"]]
            assert (e.after["i6"], e.after["i4"]) == (i6, i4)
            assert e.after["bin"] == (None if b is None else "0x" + str(b).lower())
        assert {c.name: c.type_name for c in events[0].table.columns}["u"] == "uuid"
        assert events[0].table.key_columns == ("u",)
        await run(
            my_db,
            "ALTER TABLE u MODIFY i6 binary(16)",
            "INSERT INTO u (u, i6) VALUES ('aaaaaaaa-0000-0000-0000-000000000001', x'20010db8')",
        )
        await reader.wait_for(lambda r: len([e for e in r.events if e.op is Op.INSERT]) > n)
        last = [e for e in reader.events if e.op is Op.INSERT][-1].after
        assert last is not None and last["i6"] == "0x20010db8" + "00" * 12
    finally:
        await reader.stop()


SINGLE_BYTE = ["latin1", "latin2", "latin5", "latin7", "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852"]
SINGLE_BYTE += ["cp866", "greek", "hebrew", "koi8r", "koi8u", "macce", "macroman", "armscii8", "dec8", "hp8", "swe7"]
SINGLE_BYTE += ["keybcs2", "geostd8", "tis620"]
TEXTS = {
    "utf8mb4": "ök€ 😀",
    "utf8mb3": "ök€",
    "utf16": "ök€ 😀",
    "utf16le": "ök€ 😀",
    "utf32": "ök€ 😀",
    "ucs2": "ök€",
    "ascii": "plain text",
    "sjis": "日本語テキスト",
    "cp932": "日本語テキスト①",
    "ujis": "日本語テキスト",
    "eucjpms": "日本語テキスト",
    "gbk": "中文文本",
    "gb2312": "中文文本",
    "big5": "中文文本",
    "euckr": "한국어 텍스트",
}


async def test_every_character_set(my_db: MyDb) -> None:
    """Single-byte sets: every byte value (what the server maps it to, '?' included); the others: text the
    set can hold (MariaDB has no gb18030, MySQL's only addition). Oracle: the column as a utf8mb4 client
    receives it."""
    sets = [*SINGLE_BYTE, *TEXTS]
    cols = ", ".join(f"`{cs}` varchar(300) CHARACTER SET {cs}" for cs in sets)
    await run(my_db, f"CREATE TABLE cs (id int PRIMARY KEY, {cols}, t text CHARACTER SET latin2)")
    reader = await open_reader(my_db.config())
    every = bytes(range(32, 256)).hex()
    try:
        values = [f"CONVERT(UNHEX('{every}') USING {cs})" for cs in SINGLE_BYTE]
        values += [f"CONVERT(%s USING {cs})" for cs in TEXTS]
        conn = my_db.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"INSERT INTO cs VALUES (1, {', '.join(values)}, CONVERT(UNHEX('{every}') USING latin2))",
                    list(TEXTS.values()),
                )
        finally:
            conn.close()
        (event,) = await _rows(reader, 1)
        oracle = my_db.execute(f"SELECT {', '.join(f'`{cs}`' for cs in sets)}, t FROM cs")[0]
        assert event.after is not None
        got = [event.after[cs] for cs in sets] + [event.after["t"]]
        assert got == list(oracle)
        assert [event.after[cs] for cs in TEXTS] == list(TEXTS.values())
    finally:
        await reader.stop()


async def test_enum_set_compressed_and_generated_columns(my_db: MyDb) -> None:
    await run(
        my_db,
        """CREATE TABLE e (id int PRIMARY KEY, en enum('', 'a', 'ü'), st set('x', 'y', 'ß'),
           bc blob COMPRESSED, tc text COMPRESSED, vc varchar(1000) COMPRESSED, vb varbinary(500) COMPRESSED,
           g int AS (id * 2) VIRTUAL, gs varchar(10) AS (CONCAT('s', id)) PERSISTENT)""",
    )
    reader = await open_reader(my_db.config())
    try:
        long = "long text " * 200
        await asyncio.to_thread(
            _session,
            my_db,
            "SET sql_mode = ''",
            f"INSERT INTO e (id, en, st, bc, tc, vc, vb) VALUES (1, '', '', x'00ff', 'ä', '{long}', x'0102')",
            f"INSERT INTO e (id, en, st, bc, tc, vc, vb) VALUES (2, 'bogus', 'x,ß', '{long}', '{long}', 'v', '')",
            "INSERT INTO e (id, en, st) VALUES (3, 'ü', 'y')",
        )
        events = await _rows(reader, 3)
        oracle = my_db.execute("SELECT en, st, HEX(bc), tc, vc, HEX(vb), g, gs FROM e ORDER BY id")
        for e, row in zip(events, oracle, strict=True):
            a = e.after
            assert a is not None
            got = (a["en"], a["st"], a["bc"], a["tc"], a["vc"], a["vb"], a["g"], a["gs"])
            want = (row[0], row[1], None if row[2] is None else "0x" + row[2].lower(), row[3], row[4],
                    None if row[5] is None else "0x" + row[5].lower(), row[6], row[7])  # fmt: skip
            assert got == want
        assert events[1].after is not None and events[1].after["en"] == ""  # the invalid value, index 0
        types = {c.name: c.type_name for c in events[0].table.columns}
        assert (types["bc"], types["tc"], types["vc"], types["vb"]) == ("blob", "blob", "varchar", "varbinary")
    finally:
        await reader.stop()


async def test_partial_row_images_from_a_session_and_from_the_global_setting(my_db: MyDb) -> None:
    """binlog_row_image = MINIMAL / NOBLOB set by a privileged session, then globally while streaming: no
    record silently lacks columns. An UPDATE's unchanged key comes from its before image; columns the server
    did not send are listed in unchanged_columns (docs/mysql.md, "What the binlog may carry")."""
    await run(my_db, "CREATE TABLE p (id int PRIMARY KEY, a varchar(5), b int, t text)")
    await run(my_db, "INSERT INTO p VALUES (1, 'a0', 10, 'text'), (2, 'a2', 20, 'x')")
    reader = await open_reader(my_db.config())
    try:
        await asyncio.to_thread(
            _session,
            my_db,
            "SET SESSION binlog_row_image = 'MINIMAL'",
            "UPDATE p SET a = 'a1' WHERE id = 1",  # the case: arrived as {"a": "a1"}
            "INSERT INTO p (id, a) VALUES (3, 'a3')",
            "DELETE FROM p WHERE id = 2",
            "SET SESSION binlog_row_image = 'NOBLOB'",
            "UPDATE p SET b = 11 WHERE id = 1",
        )
        upd, ins, dele, upd2 = await _rows(reader, 4)
        assert upd.op is Op.UPDATE and upd.after == {"id": 1, "a": "a1"}
        assert upd.before == {"id": 1} and upd.unchanged_columns == ("b", "t")
        # MINIMAL logs only the columns an INSERT set: the others got their default, which the binlog omits
        assert ins.after == {"id": 3, "a": "a3"} and ins.unchanged_columns == ("b", "t")
        assert dele.before == {"id": 2} and dele.unchanged_columns == ("a", "b", "t")
        assert upd2.after == {"id": 1, "a": "a1", "b": 11} and upd2.unchanged_columns == ("t",)
        with _global(my_db, "binlog_row_image", "'MINIMAL'"):
            await run(my_db, "UPDATE p SET b = 12 WHERE id = 3")  # a new session takes the new global value
            *_, late = await _rows(reader, 5)
        assert late.after == {"id": 3, "b": 12} and late.unchanged_columns == ("a", "t")
    finally:
        await reader.stop()


@pytest.mark.parametrize("fmt", ["STATEMENT", "MIXED"])
async def test_statement_dml_on_a_captured_table_stops(my_db: MyDb, fmt: str) -> None:
    """A session with binlog_format STATEMENT/MIXED logs its DML as a QUERY event without rows: on a captured
    table the change cannot be captured, so the reader stops (never skips); other tables do not matter."""
    await run(my_db, "CREATE TABLE keep (id int PRIMARY KEY)", "CREATE TABLE other (id int PRIMARY KEY)")
    reader = await open_reader(my_db.config(), selector=lambda _s, t: t == "keep")
    try:
        await asyncio.to_thread(_session, my_db, f"SET SESSION binlog_format = '{fmt}'", "INSERT INTO other VALUES (1)")
        await run(my_db, "INSERT INTO keep VALUES (1)")
        await reader.wait_for(n_events(1))
        await asyncio.to_thread(_session, my_db, f"SET SESSION binlog_format = '{fmt}'", "INSERT INTO keep VALUES (2)")
        with pytest.raises(SourceError, match=r"change of .*\.keep logged as an SQL statement") as info:
            await reader.wait_for(lambda _r: False, what="the statement error")
        assert not info.value.retriable
        assert [e.after for e in reader.events] == [{"id": 1}]
    finally:
        await reader.source.close()


async def test_statement_dml_after_the_global_format_changed_stops(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE g (id int PRIMARY KEY)")
    reader = await open_reader(my_db.config())
    try:
        with _global(my_db, "binlog_format", "'STATEMENT'"):
            await run(my_db, "INSERT INTO g VALUES (1)")
            with pytest.raises(SourceError, match="logged as an SQL statement"):
                await reader.wait_for(lambda _r: False, what="the statement error")
    finally:
        await reader.source.close()


async def test_row_format_statements_that_look_like_dml_pass(my_db: MyDb) -> None:
    """binlog_format = ROW logs CREATE TABLE ... SELECT as a generated CREATE TABLE followed by row events, and
    XA COMMIT / SAVEPOINT as statements: none of them is a data change logged as a statement."""
    await run(
        my_db,
        "CREATE TABLE src (id int PRIMARY KEY)",
        "CREATE TABLE other (id int PRIMARY KEY)",
        "INSERT INTO src VALUES (1), (2)",
    )
    reader = await open_reader(my_db.config(), selector=lambda _s, t: t != "other")
    try:
        await run(my_db, "CREATE TABLE copy (PRIMARY KEY (id)) SELECT id FROM src")
        await asyncio.to_thread(
            _session,
            my_db,
            "BEGIN",
            "INSERT INTO src VALUES (3)",
            "SAVEPOINT s",
            "INSERT INTO src VALUES (4)",
            "ROLLBACK TO SAVEPOINT s",
            "COMMIT",
            "XA START 'x'",
            "INSERT INTO other VALUES (9)",
            "XA END 'x'",
            "XA PREPARE 'x'",
            "XA ROLLBACK 'x'",
        )
        await reader.wait_for(n_events(3))
        await asyncio.sleep(0.3)
        got = [(e.table.table, e.after) for e in reader.events if e.op is Op.INSERT]
        assert got[:3] == [("copy", {"id": 1}), ("copy", {"id": 2}), ("src", {"id": 3})]
    finally:
        await reader.stop()


async def test_character_sets_of_columns_after_a_geometry(my_db: MyDb) -> None:
    """MariaDB lists a charset for GEOMETRY columns too (MySQL does not): the charsets of the text columns
    after one must still be theirs."""
    await run(
        my_db,
        "CREATE TABLE geo (id int PRIMARY KEY, g geometry, a varchar(5) CHARACTER SET latin1, pt point, "
        "b varchar(5) CHARACTER SET utf8mb4, c varbinary(5), d char(3) CHARACTER SET latin2) "
        "DEFAULT CHARSET = utf8mb4",
    )
    reader = await open_reader(my_db.config())
    try:
        await run(
            my_db,
            "INSERT INTO geo VALUES (1, ST_GeomFromText('POINT(1 2)'), 'é€', ST_GeomFromText('POINT(3 4)'), "
            "'ök😀', x'00', 'ąž')",
        )
        (e,) = await _rows(reader, 1)
        oracle = my_db.execute("SELECT HEX(g), a, HEX(pt), b, HEX(c), d FROM geo")[0]
        assert e.after is not None
        got = (e.after["g"], e.after["a"], e.after["pt"], e.after["b"], e.after["c"], e.after["d"])
        assert got == ("0x" + oracle[0].lower(), oracle[1], "0x" + oracle[2].lower(), oracle[3], "0x00", oracle[5])
    finally:
        await reader.stop()
