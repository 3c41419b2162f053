"""Fuzzing the MySQL source's sans-IO parts with hypothesis: whatever bytes or text the binlog carries, the
result is items or a typed error (DecodeError for row images, UnparsedStatement for DDL text), never another
exception and never a hang.

Row events are built without a server: python-mysql-replication's event classes with the few attributes the
converter reads, and a packet that hands out the fuzzed body. (The real decoding is compared with the
library's on a real server in tests/integration/test_mysql_source.py; an atheris harness for long runs is
scripts/fuzz_mysql_rows.py.)
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymysqlreplication.event import QueryEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdcstream.changes import ChangeEvent, Marker
from cdcstream.errors import DecodeError, SourceError
from cdcstream.sources.mysql import rows
from cdcstream.sources.mysql.ddl import TableDdl, UnparsedStatement, parse_ddl
from cdcstream.sources.mysql.source import mariadb_missing_gtids
from tests.support.binlog import LOG_POS, TABLE_ID, Col, Packet, Table, converter, row_event

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def columns(draw: st.DrawFn) -> Col:
    kind = draw(st.sampled_from(["int", "float", "decimal", "time", "enum", "text", "blob"]))
    col = Col(type=rows.LONG, name="")
    if kind == "int":
        col.type = draw(st.sampled_from([rows.TINY, rows.SHORT, rows.INT24, rows.LONG, rows.LONGLONG, rows.YEAR]))
        col.unsigned = draw(st.booleans())
    elif kind == "float":
        col.type = draw(st.sampled_from([rows.FLOAT, rows.DOUBLE]))
    elif kind == "decimal":
        col.type = rows.NEWDECIMAL
        col.precision = draw(st.integers(1, 65))
        col.decimals = draw(st.integers(0, min(30, col.precision)))
    elif kind == "time":
        col.type = draw(st.sampled_from([rows.DATE, rows.DATETIME2, rows.TIMESTAMP2]))
        col.fsp = draw(st.integers(0, 6))
    elif kind == "enum":
        col.type = rows.ENUM
        col.enum_values = draw(st.lists(st.text(max_size=3), min_size=1, max_size=4))
        col.size = draw(st.sampled_from([1, 2]))
    else:
        col.type = rows.BLOB if kind == "blob" else draw(st.sampled_from([rows.VARCHAR, rows.STRING]))
        col.character_set_name = draw(st.sampled_from(["utf8mb4", "latin1", "ascii", "binary"]))
        col.max_length = draw(st.sampled_from([10, 255, 1000]))
        col.length_size = draw(st.integers(1, 4))
    return col


@FUZZ
@given(
    cols=st.lists(columns(), min_size=1, max_size=6),
    cls=st.sampled_from([WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent]),
    body=st.binary(max_size=200),
)
def test_row_images_give_changes_or_a_decode_error(cols: list[Col], cls: type, body: bytes) -> None:
    for i, col in enumerate(cols):
        col.name = f"c{i}"
    conv = converter()
    out: list[Any] = []
    try:
        conv.handle(row_event(cls, len(cols), body), {TABLE_ID: Table("db", "t", cols, "c0")}, out)
    except DecodeError as exc:
        assert f"bin.000001:{LOG_POS}" in str(exc)  # the position, for the bug report
        return
    assert all(isinstance(item, ChangeEvent) for item in out)


ddl_words = st.sampled_from(
    ["TRUNCATE", "DROP", "TABLE", "TEMPORARY", "IF", "EXISTS", "`a`", "b.c", "`x``y`", ",", ";", "WAIT", "5",
     "NOWAIT", "RESTRICT", "CASCADE", "/*", "*/", "--", "'", '"', "(", ")", "VIEW", "DATABASE", "\n"]
)  # fmt: skip


@FUZZ
@given(st.one_of(st.text(max_size=120), st.lists(ddl_words, max_size=12).map(" ".join)))
def test_ddl_text_gives_tables_or_unparsed(query: str) -> None:
    try:
        out = parse_ddl(query, "db")
    except UnparsedStatement:
        return
    assert all(isinstance(t, TableDdl) and t.schema and t.table for t in out)


@FUZZ
@given(st.one_of(st.text(max_size=120), st.lists(ddl_words, max_size=12).map(" ".join)), st.binary(max_size=8))
def test_any_query_event_is_a_transaction_end(query: str, schema: bytes) -> None:
    """A QueryEvent outside a transaction (DDL) always ends with a marker: nothing stops the stream."""
    ev = QueryEvent.__new__(QueryEvent)
    ev.query, ev.schema, ev.timestamp, ev.event_size = query, schema, 1_700_000_000, 40
    ev.packet = Packet(b"", LOG_POS)
    out: list[Any] = []
    converter().handle(ev, {}, out)
    assert out and isinstance(out[-1], Marker)


@FUZZ
@given(st.text(max_size=60), st.text(max_size=60))
def test_gtid_comparison_never_raises(purged: str, resume: str) -> None:
    assert isinstance(mariadb_missing_gtids(purged, resume), str)


def test_gtid_comparison() -> None:
    assert mariadb_missing_gtids("0-1-8", "0-1-7") == "0-1-8"
    assert mariadb_missing_gtids("0-1-8", "0-2-8") == ""  # same domain, same sequence: nothing purged unread
    assert mariadb_missing_gtids("0-1-8,1-1-3", "0-1-9") == "1-1-3"  # domain 1 was never read
    assert mariadb_missing_gtids("", "0-1-9") == ""


def test_rows_inside_an_xa_transaction_are_refused() -> None:
    """Rows of an XA transaction are logged at XA PREPARE, before it is known whether it commits."""
    conv = converter()
    start = QueryEvent.__new__(QueryEvent)
    start.query, start.schema, start.timestamp, start.event_size = "XA START X'61',X'',1", b"db", 0, 40
    start.packet = Packet(b"", 1000)
    out: list[Any] = []
    conv.handle(start, {}, out)
    assert out == []  # not a transaction end
    table = {TABLE_ID: Table("db", "t", [Col(rows.LONG, "id")], "id")}
    with pytest.raises(SourceError, match=r"db\.t was changed inside an XA .* XA START at bin\.000001:960"):
        conv.handle(row_event(WriteRowsEvent, 1, b"\x00\x01\x00\x00\x00"), table, out)
