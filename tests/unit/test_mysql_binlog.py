"""The binlog decoder from bytes: the dispatch table, checksums, unknown and refused events, compressed events,
table maps, GTID sets, and binlogs recorded by MySQL 8.0.

The MySQL 8.0 binlogs are the ones Debian's ``mariadb-test-data`` installs (MariaDB's replication tests, GPL;
read from the installed path, never copied here). No MySQL server runs here, so their values are checked
against the SQL that wrote them (quoted from the tests that recorded them) and, where noted, against
``mariadb-binlog --base64-output=decode-rows -vv``; the same code paths are checked against a real MariaDB
server in tests/integration/test_mysql_binlog_values.py.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from cdcstream.changes import ChangeEvent, Marker, Op
from cdcstream.errors import DecodeError, SourceError
from cdcstream.sources.mysql import rows as types
from cdcstream.sources.mysql.binlog import events as ev
from cdcstream.sources.mysql.binlog import jsonb
from cdcstream.sources.mysql.binlog.gtid import GtidSet
from tests.support import server_missing
from tests.support.binlog import (
    MYSQL_80,
    MYSQL_80_STM,
    STD_DATA,
    Col,
    converter,
    event,
    mariadb_compressed_record,
    mysql_payload,
    payload_events,
    read_binlog,
    resize,
    rows_event,
    table_map,
    with_names,
)
from tests.support.checkpoints import mysql


@pytest.fixture
def binlog_files() -> None:
    """The binlog files of Debian's mariadb-test-data: skipped locally without them, a failure in CI."""
    if not MYSQL_80.exists():
        server_missing(f"{MYSQL_80} is missing: apt-get install mariadb-test-data (.ci/run does)")


needs_fixtures = pytest.mark.usefixtures("binlog_files")


def _gtid(seq: int, *, log_pos: int, flags: int = 0) -> bytes:
    """A MariaDB GTID event (domain 0, server 1)."""
    return event(ev.MARIADB_GTID_EVENT, struct.pack("<QIB", seq, 0, flags) + bytes(6), log_pos=log_pos)


def _xid(log_pos: int) -> bytes:
    return event(ev.XID_EVENT, struct.pack("<Q", 77), log_pos=log_pos)


def _one_int_table() -> bytes:
    return table_map([Col(types.LONG, name="id", nullable=False)], key=[0], log_pos=1100)


def _insert(value: int, *, log_pos: int = 1200) -> bytes:
    return rows_event(ev.WRITE_ROWS_EVENT_V1, 1, b"\x00" + struct.pack("<i", value), log_pos=log_pos)


# --- the dispatch table ---------------------------------------------------------------------------------


def test_every_type_code_of_mysql_and_mariadb_has_a_decision() -> None:
    """MySQL 8.4/9.x write codes 0-42, MariaDB 10.x/11.x 0-38 and 160-171: each is decoded, ignored with a
    reason, or refused with one."""
    for code in [*range(0, 43), *range(160, 172)]:
        known = ev.EVENT_TYPES[code]
        assert known.name
        if known.handling is not ev.Handling.DECODE:
            assert len(known.why) > 20, known
    assert set(ev.EVENT_TYPES) == {*range(0, 43), *range(160, 172)}


def test_an_unknown_event_type_stops_before_the_transaction_ends() -> None:
    """A type code cdcstream does not know, inside a transaction: a DecodeError naming the type, the position and
    what to do, raised before the transaction's marker, so nothing after it can be checkpointed."""
    conv = converter()
    out: list[Any] = []
    for raw in (_gtid(5, log_pos=1000), _one_int_table(), _insert(1)):
        conv.handle(raw, out)
    unknown = event(99, b"\x01\x02\x03", log_pos=1300)
    with pytest.raises(DecodeError) as info:
        conv.handle(unknown, out)
    text = str(info.value)
    assert "unknown type 99" in text and f"bin.000001:{1300 - len(unknown)}" in text and "upgrade cdcstream" in text
    assert not info.value.retriable and info.value.exit_code == 3
    assert [type(i) for i in out] == [ChangeEvent]  # the row, and no marker: the checkpoint stays before it
    conv.reset_transaction()


def test_an_unknown_event_marked_ignorable_is_skipped() -> None:
    """LOG_EVENT_IGNORABLE_F: the server's promise that a replica that does not know the type may skip it."""
    conv = converter()
    out: list[Any] = []
    conv.handle(_gtid(5, log_pos=1000), out)
    conv.handle(event(99, b"\x01", log_pos=1100, flags=ev.LOG_EVENT_IGNORABLE_F), out)
    conv.handle(_xid(1200), out)
    assert [type(i) for i in out] == [Marker]


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (ev.INCIDENT_EVENT, "changes may be missing from the binlog"),
        (ev.GTID_TAGGED_LOG_EVENT, "tagged GTID"),
        (ev.START_EVENT_V3, "MySQL 3.23-5.0"),
        (ev.PRE_GA_WRITE_ROWS_EVENT, "5.1 beta"),
    ],
)
def test_refused_events_stop_with_the_reason(code: int, words: str) -> None:
    raw = event(code, b"\x00" * 30, log_pos=1000)
    with pytest.raises(DecodeError, match=words) as info:
        converter().handle(raw, [])
    assert f"bin.000001:{1000 - len(raw)}" in str(info.value)


@pytest.mark.parametrize("code", [c for c, t in ev.EVENT_TYPES.items() if t.handling is ev.Handling.IGNORE])
def test_ignored_events_are_skipped(code: int) -> None:
    out: list[Any] = []
    converter().handle(event(code, b"\x00" * 8, log_pos=1000), out)
    assert out == []


def test_a_bad_checksum_stops_the_reader() -> None:
    raw = bytearray(_gtid(5, log_pos=1000))
    raw[25] ^= 0x01
    with pytest.raises(DecodeError, match=r"at bin.000001:\d+ fails its CRC32 checksum"):
        converter().handle(bytes(raw), [])


def test_an_event_whose_size_field_lies_stops_the_reader() -> None:
    raw = _gtid(5, log_pos=1000)
    with pytest.raises(DecodeError, match="says it is"):
        converter().handle(raw + b"\x00", [])


@needs_fixtures
def test_events_without_checksums_after_a_format_description_saying_so() -> None:
    """The FORMAT_DESCRIPTION_EVENT decides (a file written with binlog_checksum = NONE)."""
    _off, fde = next(iter(read_binlog(MYSQL_80)))
    plain = bytearray(fde)
    plain[len(plain) - 5] = 0  # algorithm NONE; the last four bytes are then not checked
    conv = converter(checksum=True)
    out: list[Any] = []
    conv.handle(bytes(plain), out)
    conv.handle(
        event(ev.MARIADB_GTID_EVENT, struct.pack("<QIB", 5, 0, 0) + bytes(6), log_pos=1000, checksum=False), out
    )
    assert conv.fmt.checksum is False and conv.in_tx


# --- MySQL 8.0 binlogs -------------------------------------------------------------------------------------


def _mysql80(selector: Any = None) -> tuple[list[Any], list[tuple[int, BaseException]]]:
    """Every event of the MySQL 8.0.40 binlog through the converter, its table maps given the column names
    and keys ``binlog_row_metadata = FULL`` would have written (the file was recorded with MINIMAL). The
    compressed transaction is rebuilt around its (patched) events with zstd."""
    tables = {b"\x02t1\x00": (["a", "b", "c"], [0]), b"\x02t2\x00": (["a", "b"], [0])}

    def patch(raw: bytes, checksum: bool = True) -> bytes:
        if raw[4] != ev.TABLE_MAP_EVENT:
            return raw
        names, key = next(v for k, v in tables.items() if k in raw)
        return with_names(raw, names, key, checksum=checksum)

    conv = converter(mariadb=False, file="master-bin.000001", **({"selector": selector} if selector else {}))
    out: list[Any] = []
    errors: list[tuple[int, BaseException]] = []
    for off, raw in read_binlog(MYSQL_80):
        if raw[4] == ev.TRANSACTION_PAYLOAD_EVENT:
            raw = mysql_payload([patch(e, checksum=False) for e in payload_events(raw)], raw)
        try:
            conv.handle(patch(raw), out)
        except SourceError as exc:
            errors.append((off, exc))
            conv.reset_transaction()
    return out, errors


@needs_fixtures
def test_mysql_80_binlog_rows_compressed_transaction_and_partial_json() -> None:
    """rpl_from_mysql80.test recorded: INSERT (1, 0, ''); BEGIN; (2, 0, 'hulu'); (3, 0, 'bulu'); COMMIT;
    (4, 0, 'skip'); with binlog_transaction_compression = 1, 100 rows (1000 + i, i, '--i--' + 100 '/' + '--')
    in one transaction; (5, 0, 'after compressed'); CREATE TABLE t2 (a INT PRIMARY KEY, b JSON); an INSERT
    into t2 logged as a statement; and, with binlog_row_value_options = PARTIAL_JSON,
    UPDATE t2 SET b = JSON_REPLACE(b, '$.b', REPEAT("oOo", 50))."""
    out, errors = _mysql80()
    rows = [i for i in out if isinstance(i, ChangeEvent)]
    inserts = [(e.after["a"], e.after["b"], e.after["c"]) for e in rows if e.op is Op.INSERT and e.after]
    assert inserts[:4] == [(1, 0, ""), (2, 0, "hulu"), (3, 0, "bulu"), (4, 0, "skip")]
    assert inserts[4:104] == [(1000 + i, i, f"--{i}--" + "/" * 100 + "--") for i in range(100)]
    assert inserts[104:] == [(5, 0, "after compressed")]
    compressed = [e for e in rows if e.op is Op.INSERT and e.after and e.after["a"] >= 1000]
    # one transaction, numbered from the anonymous GTID event before the payload
    assert {e.transaction_id for e in compressed} == {"master-bin.000001:1389"}
    assert [e.transaction_record_id for e in compressed] == list(range(1, 101))
    markers = [mysql(i.checkpoint)["pos"] for i in out if isinstance(i, Marker)]
    assert 2297 in markers  # the payload's end: the compressed transaction ends there
    # the INSERT into t2 was logged as a statement: refused (t2 is captured), the transaction not checkpointed
    (at, refusal), *rest = errors
    assert at == 2982 and "change of test.t2 logged as an SQL statement" in str(refusal) and not rest
    assert 3159 not in markers
    update = next(e for e in rows if e.op is Op.UPDATE)
    assert update.before is not None and update.after is not None
    old = '{"a":"hulu","b":"' + "[zyzzy]" * 100 + '","c":"bulu"}'
    assert update.before == {"a": 1, "b": old}
    assert update.after == {"a": 1, "b": '{"a":"hulu","b":"' + "oOo" * 50 + '","c":"bulu"}'}
    assert update.unchanged_columns == ()


@needs_fixtures
def test_statement_dml_on_tables_not_captured_passes() -> None:
    out, errors = _mysql80(selector=lambda _s, t: t == "t1")
    assert errors == []
    assert [e.table.table for e in out if isinstance(e, ChangeEvent)] == ["t1"] * 105


@needs_fixtures
def test_mysql_80_statement_binlog_is_refused_for_captured_tables() -> None:
    """mysql-8.0.13-stm-temporal-round-binlog: two INSERTs into test.t1 logged with binlog_format=statement."""
    conv = converter(mariadb=False, file="master-bin.000001")
    out: list[Any] = []
    with pytest.raises(SourceError, match=r"change of test\.t1 logged as an SQL statement.*binlog_format = ROW"):
        for _off, raw in read_binlog(MYSQL_80_STM):
            conv.handle(raw, out)
    assert not any(isinstance(i, Marker) for i in out[1:])
    conv = converter(mariadb=False, file="master-bin.000001", selector=lambda _s, _t: False)
    out = []
    for _off, raw in read_binlog(MYSQL_80_STM):
        conv.handle(raw, out)
    assert len([i for i in out if isinstance(i, Marker)]) == 2


@needs_fixtures
def test_a_payload_without_compression_and_a_cut_payload() -> None:
    events = dict(read_binlog(MYSQL_80))
    payload = events[1468]
    inner = payload_events(payload)
    assert [e[4] for e in inner][:3] == [ev.QUERY_EVENT, ev.TABLE_MAP_EVENT, ev.WRITE_ROWS_EVENT]
    assert inner[-1][4] == ev.XID_EVENT and all(int.from_bytes(e[13:17], "little") == 0 for e in inner)
    plain = mysql_payload(inner, payload, compress=False)
    assert payload_events(plain) == inner
    cut = resize(payload, payload[ev.HEADER_LEN : len(payload) - 40], checksum=True)
    with pytest.raises(DecodeError, match="TRANSACTION_PAYLOAD_EVENT"):
        payload_events(cut)


@needs_fixtures
def test_every_binlog_file_of_the_test_data_decodes_or_stops_with_a_typed_error() -> None:
    """MariaDB's own test binlogs (MySQL 5.x, MariaDB 5.5-10.x, corrupt and truncated ones): every event is
    decoded, ignored or refused; nothing raises anything but a SourceError."""
    files = [p for p in STD_DATA.rglob("*") if p.is_file() and p.read_bytes()[:4] == ev.BINLOG_MAGIC]
    assert len(files) > 10
    for path in files:
        conv = converter(mariadb="mysql" not in path.name, selector=lambda _s, _t: False)
        out: list[Any] = []
        try:
            for _off, raw in read_binlog(path):
                if len(raw) < ev.HEADER_LEN:
                    break
                conv.handle(raw, out)
        except SourceError:
            continue


# --- MariaDB compressed events ----------------------------------------------------------------------------


def _compress_rows(plain: bytes, code: int) -> bytes:
    """A row event compressed as MariaDB writes it: the header and bitmaps as they are, the rows as a
    compressed record, and the compressed type code."""
    body = plain[ev.HEADER_LEN : len(plain) - 4]
    v1 = code <= ev.DELETE_ROWS_COMPRESSED_EVENT_V1
    head_len = 8 + (0 if v1 else 2) + 1 + 1 * (2 if code in (167, 170) else 1)  # one column: 1-byte bitmaps
    raw = bytearray(resize(plain, body[:head_len] + mariadb_compressed_record(body[head_len:]), checksum=True))
    raw[4] = code
    return ev.with_checksum(bytes(raw[:-4]))


@pytest.mark.parametrize(
    ("plain_code", "code"),
    [
        (ev.WRITE_ROWS_EVENT_V1, ev.WRITE_ROWS_COMPRESSED_EVENT_V1),
        (ev.UPDATE_ROWS_EVENT_V1, ev.UPDATE_ROWS_COMPRESSED_EVENT_V1),
        (ev.DELETE_ROWS_EVENT_V1, ev.DELETE_ROWS_COMPRESSED_EVENT_V1),
        (ev.WRITE_ROWS_EVENT, ev.WRITE_ROWS_COMPRESSED_EVENT),
        (ev.UPDATE_ROWS_EVENT, ev.UPDATE_ROWS_COMPRESSED_EVENT),
        (ev.DELETE_ROWS_EVENT, ev.DELETE_ROWS_COMPRESSED_EVENT),
    ],
)
def test_mariadb_compressed_row_events_give_the_rows_of_the_plain_event(plain_code: int, code: int) -> None:
    images = b"".join(b"\x00" + struct.pack("<i", i) for i in range(1, 61))
    if plain_code in ev.UPDATE_ROWS:
        images = b"".join(b"\x00" + struct.pack("<i", i) + b"\x00" + struct.pack("<i", -i) for i in range(1, 31))
    plain = rows_event(plain_code, 1, images, log_pos=3000)
    results = []
    for raw in (plain, _compress_rows(plain, code)):
        conv = converter()
        out: list[Any] = []
        for e in (_gtid(5, log_pos=1000), _one_int_table(), raw, _xid(4000)):
            conv.handle(e, out)
        results.append([(i.op, i.before, i.after) for i in out if isinstance(i, ChangeEvent)])
    assert results[0] == results[1] and len(results[0]) in (30, 60)


def test_mariadb_compressed_query_event() -> None:
    query = "TRUNCATE TABLE t /* " + "x" * 300 + " */"
    head = struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"db\0"
    raw = event(ev.QUERY_COMPRESSED_EVENT, head + mariadb_compressed_record(query.encode()), log_pos=2000)
    out: list[Any] = []
    conv = converter()
    conv.handle(_gtid(5, log_pos=1000, flags=ev.FL_STANDALONE), out)
    conv.handle(raw, out)
    assert [(i.op, i.table.table) for i in out if isinstance(i, ChangeEvent)] == [(Op.TRUNCATE, "t")]
    assert isinstance(out[-1], Marker) and mysql(out[-1].checkpoint)["pos"] == 2000


@pytest.mark.parametrize(
    ("record", "words"),
    [
        (b"\x91\x05" + b"x" * 5, "names no algorithm"),  # algorithm 1: none is defined
        (b"\x81\x05" + b"not zlib", "zlib cannot decompress"),
        (b"\x81\x09" + __import__("zlib").compress(b"short"), "its header says 9"),
    ],
)
def test_a_bad_compressed_record_stops_the_reader(record: bytes, words: str) -> None:
    head = struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"db\0"
    with pytest.raises(DecodeError, match=words):
        converter().handle(event(ev.QUERY_COMPRESSED_EVENT, head + record, log_pos=2000), [])


# --- table maps, partial images ---------------------------------------------------------------------------


def test_table_map_without_names_is_refused_with_the_setting() -> None:
    raw = table_map([Col(types.LONG, name="id")], key=[0])
    # drop the optional metadata: what binlog_row_metadata = NO_LOG / MINIMAL writes
    cut = raw[: ev.HEADER_LEN + 8 + 3 + 2 + 2 + 1 + 1 + 1 + 1] + b""
    plain = resize(raw, cut[ev.HEADER_LEN :], checksum=True)
    with pytest.raises(SourceError, match="binlog_row_metadata is not FULL"):
        converter().handle(plain, [])


def test_partial_images_fill_from_the_before_image_and_mark_the_rest() -> None:
    """binlog_row_image = MINIMAL: an UPDATE's before image has the key, its after image the columns the
    statement set. The key comes from the before image; the other columns are listed as unchanged."""
    cols = [Col(types.LONG, name="id", nullable=False), Col(types.LONG, name="a"), Col(types.LONG, name="b")]
    conv = converter()
    out: list[Any] = []
    conv.handle(_gtid(5, log_pos=1000), out)
    conv.handle(table_map(cols, key=[0], log_pos=1100), out)
    update = b"\x00" + struct.pack("<i", 1) + b"\x00" + struct.pack("<i", 7)  # before: id=1; after: a=7
    conv.handle(rows_event(ev.UPDATE_ROWS_EVENT, 3, update, present=b"\x01", present2=b"\x02"), out)
    delete = b"\x00" + struct.pack("<i", 2)
    conv.handle(rows_event(ev.DELETE_ROWS_EVENT, 3, delete, present=b"\x01", log_pos=2100), out)
    upd, dele = (i for i in out if isinstance(i, ChangeEvent))
    assert upd.before == {"id": 1} and upd.after == {"id": 1, "a": 7} and upd.unchanged_columns == ("b",)
    assert dele.before == {"id": 2} and dele.unchanged_columns == ("a", "b")
    # an INSERT whose image lacks the key cannot be keyed: refused
    with pytest.raises(SourceError, match=r"without its key column\(s\) id.*binlog_row_image = FULL"):
        conv.handle(rows_event(ev.WRITE_ROWS_EVENT, 3, b"\x00" + struct.pack("<i", 3), present=b"\x02"), out)


@pytest.mark.parametrize(
    ("columns", "image", "words"),
    [
        # a column type code no server writes today (a newer server's type): the table map of a captured table
        # already stops, naming the column and what to do
        (
            [Col(200, name="odd")],
            b"\x00\x01",
            "db.u at bin.000001:1250: column odd has type code 200, which cdcstream cannot decode; exclude the table",
        ),
        # a row image cut short: the event cannot be what the table map says
        ([Col(types.LONG, name="n")], b"\x00\x01\x02", "cannot decode the insert row event of db.u at bin.000001:"),
    ],
)
def test_a_row_event_that_cannot_be_decoded_stops_before_the_transaction_ends(
    columns: list[Col], image: bytes, words: str
) -> None:
    """A row event of a captured table that cannot be decoded stops the reader (exit 3) with the event, its
    position and what to do, before the transaction's marker: nothing after the last checkpoint is acknowledged."""
    conv = converter()
    out: list[Any] = []
    for raw in (_gtid(5, log_pos=1000), _one_int_table(), _insert(1)):
        conv.handle(raw, out)
    bad = rows_event(ev.WRITE_ROWS_EVENT_V1, len(columns), image, table_id=8, log_pos=1400)
    with pytest.raises(DecodeError) as info:
        conv.handle(table_map(columns, table_id=8, table="u", log_pos=1300), out)
        conv.handle(bad, out)
    text = str(info.value)
    assert words in text, text
    assert "stops rather than skip it" in text or "exclude the table" in text, text
    assert not info.value.retriable and info.value.exit_code == 3
    # the earlier row, no marker, and nothing read from the bad event (the cut image's value would be the bytes
    # after it: the checksum)
    assert [type(i) for i in out] == [ChangeEvent] and out[0].table.table == "t"


def test_a_row_event_of_an_unselected_table_is_never_decoded() -> None:
    conv = converter(selector=lambda _s, _t: False)
    out: list[Any] = []
    conv.handle(_one_int_table(), out)
    conv.handle(rows_event(ev.WRITE_ROWS_EVENT_V1, 1, b"garbage that is no row image"), out)
    assert out == []


def test_rows_inside_an_xa_transaction_are_refused() -> None:
    """Rows of an XA transaction are logged at XA PREPARE, before it is known whether they commit."""
    conv = converter()
    out: list[Any] = []
    start = event(ev.QUERY_EVENT, struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"db\0XA START X'61',X'',1", log_pos=1000)
    conv.handle(start, out)
    assert out == []  # not a transaction end
    conv.handle(_one_int_table(), out)
    with pytest.raises(SourceError, match=r"db\.t was changed inside an XA .* XA START at bin\.000001:9"):
        conv.handle(_insert(1), out)


# --- values from bytes (the server as oracle: tests/integration/test_mysql_binlog_values.py) --------------


def _time2(packed: int, fsp: int) -> bytes:
    """MySQL's my_time_packed_to_binary (C's truncating % and / on negative values)."""
    int_part = packed >> 24
    frac = abs(packed) % (1 << 24) * (-1 if packed < 0 else 1)
    if fsp in (1, 2):
        q = abs(frac) // 10_000 * (-1 if frac < 0 else 1)
        return (0x800000 + int_part).to_bytes(3, "big") + (q & 0xFF).to_bytes(1, "big")
    if fsp in (3, 4):
        q = abs(frac) // 100 * (-1 if frac < 0 else 1)
        return (0x800000 + int_part).to_bytes(3, "big") + (q & 0xFFFF).to_bytes(2, "big")
    if fsp in (5, 6):
        return (packed + 0x800000000000).to_bytes(6, "big")
    return (0x800000 + int_part).to_bytes(3, "big")


def _packed_time(negative: bool, h: int, m: int, s: int, us: int) -> int:
    v = ((h << 12 | m << 6 | s) << 24) + us
    return -v if negative else v


@pytest.mark.parametrize(
    ("fsp", "value", "text"),
    [
        (6, (True, 1, 1, 1, 1), "-01:01:01.000001"),
        (3, (True, 733, 0, 0, 1000), "-733:00:00.001"),
        (2, (True, 0, 0, 1, 500_000), "-00:00:01.50"),
        (1, (True, 838, 59, 59, 0), "-838:59:59.0"),
        (4, (False, 838, 59, 59, 999_900), "838:59:59.9999"),
        (0, (True, 0, 0, 1, 0), "-00:00:01"),
        (5, (False, 24, 0, 0, 10), "24:00:00.00001"),
    ],
)
def test_time2_keeps_the_sign_of_negative_fractions(fsp: int, value: tuple[int, ...], text: str) -> None:
    from cdcstream.sources.mysql.binlog.charsets import Charsets
    from cdcstream.sources.mysql.binlog.tablemap import ColumnDef
    from cdcstream.sources.mysql.binlog.values import ValueOptions, column_decoder

    dec = column_decoder(ColumnDef(0, types.TIME2, fsp, True, "t"), ValueOptions(Charsets()))
    raw = _time2(_packed_time(*value), fsp)  # type: ignore[arg-type]
    assert dec(raw, 0) == (text, len(raw))


def test_inet6_and_uuid_text() -> None:
    from cdcstream.sources.mysql.binlog.values import inet4_text, inet6_text, uuid_text

    def v6(text: str) -> str:
        import ipaddress

        return inet6_text(ipaddress.IPv6Address(text).packed)

    assert v6("2001:db8::") == "2001:db8::"
    assert v6("::") == "::"
    assert v6("::1") == "::1"
    assert v6("1:0:0:2:0:0:0:3") == "1:0:0:2::3"  # the longest run
    assert v6("1:0:0:2:0:0:3:4") == "1::2:0:0:3:4"  # the first of equal runs
    assert v6("1:2:3:4:5:6:7:0") == "1:2:3:4:5:6:7::"  # one zero word is a gap too
    assert v6("::ffff:1.2.3.4") == "::ffff:1.2.3.4"
    assert v6("::1.2.3.4") == "::1.2.3.4"
    assert inet4_text(bytes([192, 168, 0, 1])) == "192.168.0.1"
    assert uuid_text(bytes(range(1, 17))) == "01020304-0506-0708-090a-0b0c0d0e0f10"


# --- MySQL binary JSON -------------------------------------------------------------------------------------


def _jstr(s: str) -> bytes:
    b = s.encode()
    assert len(b) < 128
    return bytes([len(b)]) + b


def test_binary_json_scalars_containers_and_opaque_values() -> None:
    # {"a": [1, -2, 3.5, true], "bb": "x"}: a small object, keys sorted by length
    arr_values = struct.pack("<d", 3.5)
    arr = struct.pack("<HH", 4, 4 + 4 * 3 + 8)
    arr += bytes([5]) + struct.pack("<h", 1) + bytes([5]) + struct.pack("<h", -2)
    arr += bytes([11]) + struct.pack("<H", 4 + 4 * 3) + bytes([4]) + struct.pack("<H", 1)
    arr += arr_values
    keys_at = 4 + 2 * 4 + 2 * 3
    obj_size = keys_at + 3 + len(arr) + len(_jstr("x"))
    obj = struct.pack("<HH", 2, obj_size)
    obj += struct.pack("<HH", keys_at, 1) + struct.pack("<HH", keys_at + 1, 2)
    obj += bytes([2]) + struct.pack("<H", keys_at + 3) + bytes([12]) + struct.pack("<H", keys_at + 3 + len(arr))
    obj += b"abb" + arr + _jstr("x")
    assert jsonb.to_text(b"\x00" + obj) == '{"a":[1,-2,3.5,true],"bb":"x"}'
    assert jsonb.to_text(b"") == "null"
    assert jsonb.to_text(b"\x0b" + struct.pack("<d", 1e100)) == "1e100"
    assert jsonb.to_text(b"\x0b" + struct.pack("<d", 100.0)) == "100.0"
    assert jsonb.to_text(b"\x0a" + struct.pack("<Q", 18446744073709551615)) == "18446744073709551615"
    assert jsonb.to_text(b"\x0c" + _jstr('q"\n')) == '"q\\"\\n"'
    # DECIMAL(5,2) -12.50 as an opaque value: precision, scale, binary decimal
    dec = bytes([0x7F, 0xF3, 0xCD])  # decimal2bin(-12.50, 5, 2): 2 bytes for 3 integer digits, 1 for 2 decimals
    assert jsonb.to_text(b"\x0f" + bytes([246, 2 + len(dec), 5, 2]) + dec) == "-12.50"
    when = (((2015 * 13 + 1) << 5 | 15) << 17 | (23 << 12 | 24 << 6 | 25)) << 24
    assert jsonb.to_text(b"\x0f" + bytes([12, 8]) + struct.pack("<q", when)) == '"2015-01-15 23:24:25.000000"'
    assert jsonb.to_text(b"\x0f" + bytes([252, 2]) + b"hi") == '"base64:type252:aGk="'
    with pytest.raises(DecodeError):
        jsonb.to_text(b"\x00\x01\x00\xff\xff")


def test_partial_json_diffs() -> None:
    doc = jsonb.parse(b"\x0c" + _jstr("x"))
    assert doc == "x"

    def diff(op: int, path: str, value: bytes | None = None) -> bytes:
        out = bytes([op, len(path)]) + path.encode()
        return out + (bytes([len(value)]) + value if value is not None else b"")

    tree: jsonb.Node = {"a": [jsonb.Raw("1"), jsonb.Raw("2")], "c": jsonb.Raw("null")}
    diffs = jsonb.parse_diffs(
        diff(jsonb.REPLACE, "$.a[1]", b"\x04\x01") + diff(jsonb.INSERT, '$."b b"', b"\x0c\x01z") + diff(2, "$.c")
    )
    assert jsonb.dumps(jsonb.apply_diffs(tree, diffs)) == '{"a":[1,true],"b b":"z"}'
    with pytest.raises(DecodeError, match="not in the document"):
        jsonb.apply_diffs({"a": jsonb.Raw("1")}, jsonb.parse_diffs(diff(jsonb.REPLACE, "$.x", b"\x04\x01")))


# --- GTID sets -------------------------------------------------------------------------------------------


def test_gtid_set_parse_add_print_and_encode() -> None:
    u1, u2 = "3e11fa47-71ca-11e1-9e33-c80aa9429562", "0f0e0d0c-0b0a-0908-0706-050403020100"
    s = GtidSet(f"{u1}:1-5:7,\n{u2}:3")
    s.add(f"{u1}:6")
    s.add(f"{u2}:4")
    s.add(f"{u2}:10")
    assert str(s) == f"{u2}:3-4:10,{u1}:1-7"
    assert f"{u1}:7" in s and f"{u1}:8" not in s
    enc = s.encode()
    assert struct.unpack_from("<Q", enc)[0] == 2
    assert enc[8:24] == bytes.fromhex(u2.replace("-", ""))
    assert struct.unpack_from("<QQQQQ", enc, 24) == (2, 3, 5, 10, 11)  # exclusive ends
    assert GtidSet(str(s)) == s and GtidSet("") == GtidSet(None)
    tagged = GtidSet(f"{u1}:tag_1:1-3")
    assert str(tagged) == f"{u1}:tag_1:1-3"
    with pytest.raises(SourceError, match="tagged GTIDs"):
        tagged.encode()
    with pytest.raises(ValueError):
        GtidSet("not-a-uuid:1")


# --- DECIMAL --------------------------------------------------------------------------------------------------


def _decimal2bin(digits: str, precision: int, scale: int) -> bytes:
    """MySQL's decimal2bin, written from its description: base-10^9 groups of 4 bytes, the integer part's
    leading and the fraction's trailing remainder digits in as few bytes as they need, the sign bit flipped on,
    every bit inverted for a negative value."""
    sizes = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
    negative = digits.startswith("-")
    integer, _, fraction = digits.lstrip("-").partition(".")
    intg, frac = precision - scale, scale
    integer = integer.rjust(intg, "0")
    fraction = fraction.ljust(frac, "0")
    out = b""
    lead = intg % 9
    if lead:
        out += int(integer[:lead]).to_bytes(sizes[lead], "big")
    for i in range(lead, intg, 9):
        out += int(integer[i : i + 9]).to_bytes(4, "big")
    for i in range(0, frac - frac % 9, 9):
        out += int(fraction[i : i + 9]).to_bytes(4, "big")
    if frac % 9:
        out += int(fraction[frac - frac % 9 :]).to_bytes(sizes[frac % 9], "big")
    raw = bytearray(out)
    raw[0] ^= 0x80
    if negative:
        raw = bytearray(b ^ 0xFF for b in raw)
    return bytes(raw)


@pytest.mark.parametrize(
    ("digits", "precision", "scale"),
    [
        ("-12.50", 5, 2),
        ("0.10", 12, 2),
        ("7", 5, 0),
        ("-12345678901234567890.0123456789", 30, 10),
        ("99999999999999999999999999999999999.999999999999999999999999999999", 65, 30),
        ("-99999999999999999999999999999999999.999999999999999999999999999999", 65, 30),
        ("0.000000000000000000000000000001", 65, 30),
        ("0", 1, 0),
        ("-0.5", 1, 1),
        ("123456789.123456789", 18, 9),
    ],
)
def test_decimal_digits(digits: str, precision: int, scale: int) -> None:
    assert jsonb.decimal_text(_decimal2bin(digits, precision, scale), precision, scale) == digits


def test_heartbeats_report_how_far_the_server_has_sent() -> None:
    conv = converter()
    conv.handle(event(ev.HEARTBEAT_LOG_EVENT, b"mariadb-bin.000007", log_pos=4711, timestamp=0), [])
    assert conv.heard == ("mariadb-bin.000007", 4711)
    # MariaDB past 4 GiB: 0 in the header, the position in an 8-byte sub-header
    far = struct.pack("<Q", 5_000_000_000) + b"mariadb-bin.000008"
    conv.handle(event(ev.HEARTBEAT_LOG_EVENT, far, log_pos=0, timestamp=0), [])
    assert conv.heard == ("mariadb-bin.000008", 5_000_000_000)
    # MySQL 8.0.26+ v2: type-length-value fields (1 file name, 2 position as a length-encoded integer)
    v2 = b"\x01\x0bbinlog.0042" + b"\x02\x09\xfe" + struct.pack("<Q", 6_000_000_000) + b"\x00"
    conv.handle(event(ev.HEARTBEAT_LOG_EVENT_V2, v2, log_pos=0, timestamp=0), [])
    assert conv.heard == ("binlog.0042", 6_000_000_000)


def test_a_rotate_sets_the_file_and_position() -> None:
    conv = converter()
    conv.handle(event(ev.ROTATE_EVENT, struct.pack("<Q", 4) + b"mariadb-bin.000009", log_pos=0, timestamp=0), [])
    assert (conv.file, conv.pos) == ("mariadb-bin.000009", 4)
