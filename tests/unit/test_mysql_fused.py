"""The compiled fused row path for MySQL/MariaDB (sources/mysql/fused.py, _fused.c) against the reference path,
byte for byte.

Every case converts the same binlog events twice, with the mapper's fused hook (compiled renderer) and without it
(the reference decoders + mapper + orjson), and compares every record: partition key, bytes, commit time, label;
or, where the reference raises, the same error. Events are built without a server (tests/support/binlog.py):
random tables of every compiled kind (and sometimes a column only the reference renders), WRITE/UPDATE/DELETE
events of v1 and v2 with several rows of random values - mostly what a server writes (valid dates, DECIMAL
digits, UTF-8 text, any double), sometimes any bytes (invalid UTF-8, zero and invalid dates, DECIMAL groups out of
range, NaN) - and truncated or padded bodies, under the mappings of the PostgreSQL fused tests (default, rename
and remove, primary-key keys with and without the ``schema.table.`` prefix, and reshaping ones), with and
without NULLs.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.changes import ChangeEvent, Item
from cdcstream.config import TargetConfig
from cdcstream.errors import CdcstreamError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.rules import MappingRules
from cdcstream.sources.mysql import fused
from cdcstream.sources.mysql import rows as types
from cdcstream.sources.mysql.binlog import events as ev
from tests.support.binlog import Col, converter, event, rows_event, table_map
from tests.unit.test_fused import MAPPINGS, _fixed_stamp  # noqa: F401  (the fixture pins the records' timestamp)
from tests.unit.test_mysql_binlog import _decimal2bin

COMPILED = fused.path_name().startswith("compiled")
needs_compiled = pytest.mark.skipif(not COMPILED, reason=fused.path_name())
UTF8MB4, UTF8MB3, LATIN1, BINARY = 45, 33, 8, 63
ROW_CODES = [ev.WRITE_ROWS_EVENT, ev.UPDATE_ROWS_EVENT, ev.DELETE_ROWS_EVENT]
ROW_CODES += [ev.WRITE_ROWS_EVENT_V1, ev.UPDATE_ROWS_EVENT_V1, ev.DELETE_ROWS_EVENT_V1]
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)


# --- values as the binlog stores them -------------------------------------------------------------------------


def decimal_bytes(precision: int, scale: int, negative: bool, digits: str) -> bytes:
    """MySQL's binary DECIMAL of ``digits`` (precision of them, the last ``scale`` after the point)."""
    text = digits[: precision - scale] + "." + digits[precision - scale :]
    return _decimal2bin(("-" if negative else "") + text, precision, scale)


def _frac(fsp: int, draw: st.DrawFn) -> bytes:
    nfrac = (fsp + 1) // 2
    if not nfrac:
        return b""
    top = 10 ** (2 * nfrac) if draw(st.integers(0, 9)) else 256**nfrac  # sometimes beyond its digits
    return draw(st.integers(0, top - 1)).to_bytes(nfrac, "big")


def _datetime2(fsp: int, draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 9)):
        y, mo = draw(st.integers(0, 9999)), draw(st.integers(0 if draw(st.booleans()) else 1, 12))
        d, h = draw(st.integers(0, 31)), draw(st.integers(0, 23))
        mi, s = draw(st.integers(0, 59)), draw(st.integers(0, 59))
        packed = (((y * 13 + mo) << 5 | d) << 17 | h << 12 | mi << 6 | s) + 0x8000000000
        head = packed.to_bytes(5, "big")
    else:
        head = draw(st.binary(min_size=5, max_size=5))
    return head + _frac(fsp, draw)


def _text(col: Col, draw: st.DrawFn, length_bytes: int) -> bytes:
    if col.collation == BINARY or not draw(st.integers(0, 9)):
        raw = draw(st.binary(max_size=40))
    else:
        raw = draw(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)).encode()
    if length_bytes == 1:
        raw = raw[:255]
    return len(raw).to_bytes(length_bytes, "little") + raw


@st.composite
def columns(draw: st.DrawFn) -> Col:
    kind = draw(st.sampled_from(["int", "double", "decimal", "date", "dt", "ts", "char", "varchar", "blob", "other"]))
    if kind == "int":
        t = draw(st.sampled_from([types.TINY, types.SHORT, types.INT24, types.LONG, types.LONGLONG, types.YEAR]))
        return Col(t, unsigned=draw(st.booleans()))
    if kind == "double":
        return Col(types.DOUBLE, b"\x08") if draw(st.booleans()) else Col(types.FLOAT, b"\x04")
    if kind == "decimal":
        p = draw(st.integers(1, 65))
        return Col(types.NEWDECIMAL, bytes([p, draw(st.integers(0, min(30, p)))]))
    if kind == "date":
        return Col(draw(st.sampled_from([types.DATE, types.NEWDATE])))
    if kind in ("dt", "ts"):
        return Col(types.DATETIME2 if kind == "dt" else types.TIMESTAMP2, bytes([draw(st.integers(0, 6))]))
    collation = draw(st.sampled_from([UTF8MB4, UTF8MB4, UTF8MB3, BINARY, LATIN1]))
    if kind == "char":
        n = draw(st.sampled_from([1, 4, 16, 36, 255]))
        return Col(types.STRING, bytes([types.STRING, n]), collation=collation)
    if kind == "varchar":
        n = draw(st.sampled_from([4, 64, 255, 256, 1000]))
        return Col(types.VARCHAR, n.to_bytes(2, "little"), collation=collation)
    if kind == "blob":
        return Col(types.BLOB, bytes([draw(st.integers(1, 4))]), collation=collation)
    # only the reference renders these: the table stays on the reference path
    return draw(st.sampled_from([Col(types.TIME2, b"\x03"), Col(types.BIT, b"\x01\x00")]))


def _floating(double: bool, draw: st.DrawFn) -> bytes:
    """A DOUBLE or FLOAT value: mostly a float's bytes (NaN and infinities included), sometimes any bytes."""
    if draw(st.integers(0, 9)):
        return struct.pack("<d", draw(st.floats())) if double else struct.pack("<f", draw(st.floats(width=32)))
    return draw(st.binary(min_size=8 if double else 4, max_size=8 if double else 4))


def value(col: Col, draw: st.DrawFn) -> bytes:
    t = col.type
    sizes = {types.TINY: 1, types.SHORT: 2, types.INT24: 3, types.LONG: 4, types.LONGLONG: 8, types.YEAR: 1}
    if t in sizes:
        return draw(st.binary(min_size=sizes[t], max_size=sizes[t]))
    if t in (types.DOUBLE, types.FLOAT):
        return _floating(t == types.DOUBLE, draw)
    if t == types.NEWDECIMAL:
        p, s = col.meta[0], col.meta[1]
        if draw(st.integers(0, 9)):
            digits = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=p, max_size=p)))
            return decimal_bytes(p, s, draw(st.booleans()), digits)
        intg = p - s
        size = _DIG2BYTES[intg % 9] + 4 * (intg // 9) + 4 * (s // 9) + _DIG2BYTES[s % 9]
        return draw(st.binary(min_size=size, max_size=size))
    if t in (types.DATE, types.NEWDATE):
        if draw(st.integers(0, 4)):
            y, m, d = draw(st.integers(0, 9999)), draw(st.integers(1, 12)), draw(st.integers(1, 31))
            return (y << 9 | m << 5 | d).to_bytes(3, "little")
        return draw(st.binary(min_size=3, max_size=3))
    if t == types.DATETIME2:
        return _datetime2(col.meta[0], draw)
    if t == types.TIMESTAMP2:
        sec = draw(st.sampled_from([0, 1, 86399, 951782400, 2**31 - 1, 2**32 - 1]) | st.integers(0, 2**32 - 1))
        return sec.to_bytes(4, "big") + _frac(col.meta[0], draw)
    if t == types.STRING:
        return _text(col, draw, 1)
    if t == types.VARCHAR:
        return _text(col, draw, 1 if int.from_bytes(col.meta, "little") < 256 else 2)
    if t == types.BLOB:
        return _text(col, draw, col.meta[0])
    if t == types.TIME2:
        return draw(st.binary(min_size=5, max_size=5))
    return draw(st.binary(min_size=1, max_size=1))  # BIT(1)


def image(cols: list[Col], draw: st.DrawFn) -> bytes:
    nulls = [draw(st.integers(0, 5)) == 0 for _ in cols]
    bitmap = bytearray((len(cols) + 7) // 8)
    for i, null in enumerate(nulls):
        if null:
            bitmap[i >> 3] |= 1 << (i & 7)
    return bytes(bitmap) + b"".join(value(c, draw) for c, null in zip(cols, nulls, strict=True) if not null)


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[Col], list[int]]:
    cols = draw(st.lists(columns(), min_size=1, max_size=9))
    for i, c in enumerate(cols):
        c.name = f"c{i}"
    key = sorted(draw(st.sets(st.integers(0, len(cols) - 1), max_size=2)))
    if any(cols[k].type in (types.DOUBLE, types.FLOAT) for k in key) and draw(st.booleans()):
        key = [k for k in key if cols[k].type not in (types.DOUBLE, types.FLOAT)]
    return cols, key


@st.composite
def scenarios(draw: st.DrawFn) -> list[bytes]:
    """A table map, then one to three row events of one to five rows each (sometimes cut short or padded)."""
    cols, key = draw(tables())
    events = [table_map(cols, key=key or None)]
    for _ in range(draw(st.integers(1, 3))):
        code = draw(st.sampled_from(ROW_CODES))
        per_row = 2 if code in ev.UPDATE_ROWS else 1
        body = b"".join(image(cols, draw) for _ in range(draw(st.integers(1, 5)) * per_row))
        if not draw(st.integers(0, 9)):
            body = body[: draw(st.integers(0, len(body)))] + draw(st.binary(max_size=3))
        events.append(rows_event(code, len(cols), body))
    events.append(event(ev.XID_EVENT, (77).to_bytes(8, "little"), log_pos=3000))
    return events


# --- both paths -----------------------------------------------------------------------------------------------


def _run(
    events: list[bytes], mapping: tuple[MappingRules, dict[str, Any]], include_nulls: bool, compiled: bool
) -> tuple[Any, int]:
    """(the records, or the error, and how many events the compiled path rendered)."""
    rules, extra = mapping
    target = TargetConfig(
        stream_name="s", message_format="json-unformatted", include_null_and_empty=include_nulls, **extra
    )
    mapper = Mapper(rules, target, "task")
    conv = converter(fuse=mapper.fused_columns if compiled else None)
    items: list[Item] = []
    try:
        for raw in events:
            conv.handle(raw, items)
        changes = [i for i in items if isinstance(i, ChangeEvent)]
        records = mapper.map(changes)
    except CdcstreamError as exc:
        return ("error", type(exc).__name__, str(exc)), 0
    out = [(r.partition_key, r.data, r.commit_epoch, r.label) for r in records]
    return out, sum(1 for e in changes if e.fused is not None)


def _same(events: list[bytes], mapping: tuple[MappingRules, dict[str, Any]], include_nulls: bool = True) -> int:
    pure, none = _run(events, mapping, include_nulls, compiled=False)
    compiled, n = _run(events, mapping, include_nulls, compiled=True)
    assert none == 0
    assert compiled == pure
    return n


@needs_compiled
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=scenarios(), mapping=st.sampled_from(list(MAPPINGS)), include_nulls=st.booleans())
def test_random_rows_identical(events: list[bytes], mapping: str, include_nulls: bool) -> None:
    """Every record and partition key the same, or the same error, whatever the table, its key and the values."""
    _same(events, MAPPINGS[mapping], include_nulls)


# --- what the compiled path renders itself --------------------------------------------------------------------

BENCH = [  # the bench table's columns (bench/common.py MARIADB_TABLE) as MariaDB's table map has them
    Col(types.LONGLONG, name="id", nullable=False),
    Col(types.VARCHAR, (256).to_bytes(2, "little"), name="name", collation=UTF8MB4),
    Col(types.LONG, name="qty"),
    Col(types.NEWDECIMAL, bytes([12, 2]), name="price"),
    Col(types.DATETIME2, b"\x06", name="created"),
    Col(types.TINY, name="flag"),
    Col(types.BLOB, b"\x04", name="payload", collation=UTF8MB4),
    Col(types.STRING, bytes([types.STRING, 128]), name="c8", collation=UTF8MB4),
    Col(types.DOUBLE, b"\x08", name="c9"),
    Col(types.STRING, bytes([types.STRING, 144]), name="c10", collation=UTF8MB4),
]


def _bench_row(i: int) -> bytes:
    def text(s: str, n: int) -> bytes:
        return len(s.encode()).to_bytes(n, "little") + s.encode()

    created = ((((2026 * 13 + 12) << 5 | 7) << 17 | 10 << 12 | 30 << 6 | 5) + 0x8000000000).to_bytes(5, "big")
    return (
        b"\0\0"
        + struct.pack("<q", i)
        + text(f"name {i}", 2)
        + struct.pack("<i", i % 100)
        + decimal_bytes(12, 2, False, f"{(i % 1000) * 100 // 7:012d}")
        + created
        + (123456).to_bytes(3, "big")
        + struct.pack("<b", i % 2)
        + text(f'{{"k": {i}}}', 4)
        + text(f"{i:032x}", 1)
        + struct.pack("<d", i / 3)
        + text("1b4e28ba-2ca1-11d9-b5e4-0a0b0c0d0e0f", 1)
    )


@needs_compiled
@pytest.mark.parametrize("mapping", ["default", "rename+remove", "primary-key", "primary-key+schema-table+value"])
@pytest.mark.parametrize("code", ROW_CODES)
def test_bench_table_rendered_compiled(mapping: str, code: int) -> None:
    """The bench's table, every kind of row event: every row rendered by the compiled code, identical records."""
    cols = [Col(c.type, c.meta, f"c{i}", c.unsigned, c.collation) for i, c in enumerate(BENCH)]
    per_row = 2 if code in ev.UPDATE_ROWS else 1
    body = b"".join(_bench_row(i) for i in range(1, 6) for _ in range(per_row))
    events = [table_map(cols, key=[0]), rows_event(code, len(cols), body)]
    events.append(event(ev.XID_EVENT, (77).to_bytes(8, "little"), log_pos=3000))
    assert _same(events, MAPPINGS[mapping]) == 5


@needs_compiled
def test_a_row_left_to_the_reference_path_mid_event() -> None:
    """A zero DATETIME in the middle row: that row is decoded by the reference reader (the server's own text), the
    rows around it compiled."""
    cols = [Col(types.LONG, name="id"), Col(types.DATETIME2, b"\0", name="d")]
    good = b"\0" + struct.pack("<i", 1) + ((((2026 * 13 + 12) << 5 | 7) << 17) + 0x8000000000).to_bytes(5, "big")
    zero = b"\0" + struct.pack("<i", 2) + (0x8000000000).to_bytes(5, "big")
    events = [table_map(cols, key=[0]), rows_event(ev.WRITE_ROWS_EVENT, 2, good + zero + good)]
    events.append(event(ev.XID_EVENT, (77).to_bytes(8, "little"), log_pos=3000))
    assert _same(events, MAPPINGS["primary-key"]) == 2


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(d=st.floats(allow_nan=False, allow_infinity=False))
def test_every_double_rendered_as_orjson(d: float) -> None:
    cols = [Col(types.DOUBLE, b"\x08", name="d")]
    events = [table_map(cols), rows_event(ev.WRITE_ROWS_EVENT, 1, b"\0" + struct.pack("<d", d))]
    assert _same(events, MAPPINGS["default"]) == 1


def _float_bits(f: float) -> int:
    return int.from_bytes(struct.pack("<f", f), "little")


@needs_compiled
@settings(max_examples=3000, deadline=None)
@given(bits=st.integers(0, 2**32 - 1) | st.floats(width=32, allow_nan=False).map(_float_bits))
def test_every_float_rendered_as_the_reference(bits: int) -> None:
    """FLOAT: the reference's shortest digits of the 4-byte float, computed the same way; NaN and infinities (which a
    server never writes) are left to the reference path."""
    cols = [Col(types.FLOAT, b"\x04", name="f")]
    events = [table_map(cols), rows_event(ev.WRITE_ROWS_EVENT, 1, b"\0" + bits.to_bytes(4, "little"))]
    finite = bits >> 23 & 0xFF != 0xFF
    assert _same(events, MAPPINGS["default"]) == int(finite)


@needs_compiled
def test_double_key_left_to_the_reference_path() -> None:
    """A double's key text is Python's str(): the table is not compiled, its records are the same."""
    cols = [Col(types.DOUBLE, b"\x08", name="d")]
    events = [table_map(cols, key=[0]), rows_event(ev.WRITE_ROWS_EVENT, 1, b"\0" + struct.pack("<d", 1e16))]
    assert _same(events, MAPPINGS["primary-key"]) == 0
    assert _same(events, MAPPINGS["default"]) == 1


def test_pure_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCSTREAM_PURE", "1")
    assert not fused.available()
    assert fused.path_name().startswith("pure")
    cols = [Col(types.LONG, name="id")]
    events = [table_map(cols), rows_event(ev.WRITE_ROWS_EVENT, 1, b"\0" + struct.pack("<i", 5))]
    _, rendered = _run(events, MAPPINGS["default"], True, compiled=True)
    assert rendered == 0
