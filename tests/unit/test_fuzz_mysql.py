"""Fuzzing the MySQL source's sans-IO parts with hypothesis: whatever bytes or text the binlog carries, the
result is items or a typed error (a ``SourceError``: ``DecodeError`` for bytes, the refusals for what cannot be
captured; ``UnparsedStatement`` for DDL text), never another exception and never a hang.

Events are built without a server (tests/support/binlog.py): a table map of random columns with valid
metadata followed by a row event with a random body; events of any type code with random bodies; binary JSON,
compressed records and transaction payloads of random bytes. An atheris harness for long runs is
scripts/fuzz_mysql_rows.py.
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.changes import ChangeEvent, Marker
from cdcstream.errors import DecodeError, SourceError
from cdcstream.sources.mysql import rows as types
from cdcstream.sources.mysql.binlog import compression, jsonb
from cdcstream.sources.mysql.binlog import events as ev
from cdcstream.sources.mysql.ddl import TableDdl, UnparsedStatement, dml_targets, parse_ddl
from cdcstream.sources.mysql.resume import mariadb_ahead, mariadb_missing_gtids, mariadb_unknown_gtids
from tests.support.binlog import Col, converter, event, rows_event, table_map

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROW_CODES = [ev.WRITE_ROWS_EVENT, ev.UPDATE_ROWS_EVENT, ev.DELETE_ROWS_EVENT, ev.WRITE_ROWS_EVENT_V1]
ROW_CODES += [ev.UPDATE_ROWS_EVENT_V1, ev.DELETE_ROWS_EVENT_V1, ev.PARTIAL_UPDATE_ROWS_EVENT]
COLLATIONS = [45, 8, 11, 63, 33, 54]  # utf8mb4, latin1, ascii, binary, utf8mb3, utf16


@st.composite
def columns(draw: st.DrawFn) -> Col:
    kind = draw(st.sampled_from(["int", "float", "decimal", "time", "bit", "enum", "text", "blob", "json", "raw"]))
    if kind == "int":
        t = draw(st.sampled_from([types.TINY, types.SHORT, types.INT24, types.LONG, types.LONGLONG, types.YEAR]))
        return Col(t, unsigned=draw(st.booleans()))
    if kind == "float":
        return Col(types.FLOAT, b"\x04") if draw(st.booleans()) else Col(types.DOUBLE, b"\x08")
    if kind == "decimal":
        p = draw(st.integers(1, 65))
        return Col(types.NEWDECIMAL, bytes([p, draw(st.integers(0, min(30, p)))]))
    if kind == "time":
        t = draw(st.sampled_from([types.DATETIME2, types.TIMESTAMP2, types.TIME2, types.DATE, types.TIME]))
        t2 = draw(st.sampled_from([types.DATETIME, types.TIMESTAMP, t]))
        return Col(t2, bytes([draw(st.integers(0, 6))]) if t2 in (17, 18, 19) else b"")
    if kind == "bit":
        return Col(types.BIT, bytes([draw(st.integers(0, 7)), draw(st.integers(0, 8))]))
    if kind == "enum":
        real = draw(st.sampled_from([types.ENUM, types.SET]))
        size = draw(st.sampled_from([1, 2] if real == types.ENUM else [1, 2, 3, 4, 8]))
        members = draw(st.lists(st.text(max_size=3), min_size=1, max_size=10))
        return Col(types.STRING, bytes([real, size]), collation=45, members=members)
    if kind == "text":
        t = draw(st.sampled_from([types.VARCHAR, types.STRING]))
        n = draw(st.sampled_from([4, 16, 255, 1000]))
        meta = n.to_bytes(2, "little") if t == types.VARCHAR else bytes([types.STRING, n & 0xFF])
        return Col(t, meta, collation=draw(st.sampled_from(COLLATIONS)))
    if kind == "blob":
        return Col(types.BLOB, bytes([draw(st.integers(1, 4))]), collation=draw(st.sampled_from(COLLATIONS)))
    if kind == "json":
        return Col(types.JSON, b"\x04")
    return Col(draw(st.integers(0, 255)), draw(st.binary(max_size=2)))  # any type code: decoded or refused


@FUZZ
@given(
    cols=st.lists(columns(), min_size=1, max_size=6),
    code=st.sampled_from(ROW_CODES),
    body=st.binary(max_size=200),
    present=st.none() | st.binary(min_size=1, max_size=1),
)
def test_row_images_give_changes_or_a_decode_error(
    cols: list[Col], code: int, body: bytes, present: bytes | None
) -> None:
    for i, col in enumerate(cols):
        col.name = f"c{i}"
    conv = converter(mariadb=False)
    out: list[Any] = []
    try:
        conv.handle(table_map(cols, key=[0]), out)
        conv.handle(rows_event(code, len(cols), body, present=present, present2=present), out)
    except SourceError as exc:
        assert "bin.000001:" in str(exc), exc  # where, for the bug report
        return
    assert all(isinstance(item, ChangeEvent) for item in out)


@FUZZ
@given(code=st.integers(0, 255), flags=st.integers(0, 0xFFFF), body=st.binary(max_size=120), checksum=st.booleans())
def test_any_event_is_decoded_ignored_or_refused(code: int, flags: int, body: bytes, checksum: bool) -> None:
    """Every type code, known or not, with any body: items, or a typed error; never a crash or a skip of an
    unknown type that is not marked ignorable."""
    conv = converter(checksum=checksum)
    out: list[Any] = []
    raw = event(code, body, log_pos=4096, flags=flags, checksum=checksum)
    try:
        conv.handle(raw, out)
    except SourceError as exc:
        assert "bin.000001:" in str(exc), exc
        return
    known = ev.EVENT_TYPES.get(code)
    assert known is not None or flags & ev.LOG_EVENT_IGNORABLE_F or code == ev.FORMAT_DESCRIPTION_EVENT


@FUZZ
@given(st.binary(max_size=300))
def test_binary_json_gives_text_or_a_decode_error(data: bytes) -> None:
    try:
        text = jsonb.to_text(data)
    except DecodeError:
        return
    assert isinstance(text, str)


@FUZZ
@given(st.binary(max_size=200))
def test_json_diffs_give_diffs_or_a_decode_error(data: bytes) -> None:
    try:
        diffs = jsonb.parse_diffs(data)
        jsonb.apply_diffs({"a": [jsonb.Raw("1")]}, diffs)
    except (DecodeError, ValueError):
        return


@FUZZ
@given(st.binary(max_size=200), st.sampled_from(sorted(ev.COMPRESSED_ROWS_EVENTS | {ev.QUERY_COMPRESSED_EVENT})))
def test_mariadb_compressed_events_give_events_or_a_decode_error(body: bytes, code: int) -> None:
    raw = event(code, body, log_pos=4096, checksum=False)
    try:
        out = compression.mariadb_uncompress(raw, len(raw), ev.Format(False))
    except DecodeError:
        return
    assert out[4] in (ev.QUERY_EVENT, *ev.ROWS_EVENTS)


@FUZZ
@given(st.binary(max_size=200))
def test_transaction_payloads_give_events_or_a_decode_error(body: bytes) -> None:
    raw = event(ev.TRANSACTION_PAYLOAD_EVENT, body, log_pos=4096, checksum=False)
    try:
        for inner in compression.mysql_payload_events(raw, len(raw)):
            assert len(inner) >= ev.HEADER_LEN
    except DecodeError:
        return


ddl_words = st.sampled_from(
    ["TRUNCATE", "DROP", "TABLE", "TEMPORARY", "IF", "EXISTS", "`a`", "b.c", "`x``y`", ",", ";", "WAIT", "5",
     "NOWAIT", "RESTRICT", "CASCADE", "/*", "*/", "--", "'", '"', "(", ")", "VIEW", "DATABASE", "\n", "INSERT",
     "INTO", "UPDATE", "SET", "DELETE", "FROM", "REPLACE", "LOAD", "DATA", "SELECT", "CREATE"]
)  # fmt: skip


@FUZZ
@given(st.one_of(st.text(max_size=120), st.lists(ddl_words, max_size=12).map(" ".join)))
def test_ddl_text_gives_tables_or_unparsed(query: str) -> None:
    for parse in (parse_ddl, dml_targets):
        try:
            out = parse(query, "db")
        except UnparsedStatement:
            continue
        for t in out:
            assert (isinstance(t, TableDdl) and t.schema and t.table) or (isinstance(t, tuple) and all(t))


@FUZZ
@given(st.one_of(st.text(max_size=120), st.lists(ddl_words, max_size=12).map(" ".join)), st.binary(max_size=8))
def test_any_standalone_query_is_a_transaction_end_or_a_refusal(query: str, schema: bytes) -> None:
    """A QUERY event outside a transaction (DDL) ends with a marker, unless it is a data change of a captured
    table logged as a statement, which stops the reader: nothing is skipped silently."""
    body = struct.pack("<IIBHH", 1, 0, len(schema), 0, 0) + schema + b"\0" + query.encode()
    out: list[Any] = []
    try:
        converter().handle(event(ev.QUERY_EVENT, body, log_pos=4096), out)
    except SourceError as exc:
        assert "logged as an SQL statement" in str(exc)
        return
    assert out and isinstance(out[-1], Marker)


@FUZZ
@given(st.text(max_size=60), st.text(max_size=60))
def test_gtid_comparison_never_raises(purged: str, resume: str) -> None:
    assert isinstance(mariadb_missing_gtids(purged, resume), str)
    assert isinstance(mariadb_unknown_gtids(purged, resume), str) and isinstance(mariadb_ahead(resume, purged), str)


def test_gtid_comparison() -> None:
    assert mariadb_missing_gtids("0-1-8", "0-1-7") == "0-1-8"
    assert mariadb_missing_gtids("0-1-8", "0-2-8") == ""  # same domain, same sequence: nothing purged unread
    assert mariadb_missing_gtids("0-1-8,1-1-3", "0-1-9") == "1-1-3"  # domain 1 was never read
    assert mariadb_missing_gtids("", "0-1-9") == ""


def test_gtids_the_server_never_wrote() -> None:
    """gtid_binlog_state keeps the last sequence number per domain *and server id*: 0-1-8 is in a binlog whose
    state is 0-1-9, not in one whose state is 0-2-9 (another server's transaction with a higher number)."""
    assert mariadb_unknown_gtids("0-1-9", "0-1-8") == ""
    assert mariadb_unknown_gtids("0-1-9", "0-1-9") == ""
    assert mariadb_unknown_gtids("0-1-9", "0-1-10") == "0-1-10"  # ahead of this server
    assert mariadb_unknown_gtids("0-2-9", "0-1-8") == "0-1-8"  # same domain, another server id
    assert mariadb_unknown_gtids("0-1-3,0-2-9", "0-1-3,1-5-1") == "1-5-1"  # a domain this server never had
    assert mariadb_unknown_gtids("", "0-1-1") == "0-1-1"  # RESET MASTER


def test_gtid_state_at_a_position() -> None:
    """BINLOG_GTID_POS(file, pos) against the checkpoint's state: behind is tolerated (seeded a moment early),
    ahead, a domain missing there, or another server id at the same sequence number is not this position."""
    assert mariadb_ahead("0-1-7", "0-1-7") == ""
    assert mariadb_ahead("0-1-6", "0-1-7") == ""
    assert mariadb_ahead("0-1-8", "0-1-7") == "0-1-8"
    assert mariadb_ahead("0-2-7", "0-1-7") == "0-2-7"
    assert mariadb_ahead("0-1-7,1-1-1", "0-1-7") == "1-1-1"
    assert mariadb_ahead("0-1-7", "") == "0-1-7"
