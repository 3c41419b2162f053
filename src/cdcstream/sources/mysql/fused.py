"""The fused hot path for MySQL/MariaDB: binlog row images straight to records' JSON ``data`` sections.

Why: on the reference path a row costs a Python object per value (a decoder call, a ``str``, a dict entry) in
the binlog reader thread, only for ``orjson`` to turn the dict back into JSON text on the event loop a moment
later. For the common case the compiled renderer (``_fused.c``) writes the ``data`` section's bytes directly from
the row event, in the reader thread, and the event loop only splices them into the record.

Design (the PostgreSQL fused path's, sources/postgres/fused.py, applied to row images):

* **Who decides.** Once per table version (table map), never per row:

  - the mapping's half, :meth:`Mapper.fused_columns <cdcstream.mapping.envelope.Mapper.fused_columns>`
    (``json-unformatted``, default or rename-only mapping, ``schema-table`` or ``primary-key`` partition key; see
    the PostgreSQL module for the full rule): each column's output name (or None), whether NULLs are written,
    the key's columns and prefix;
  - the source's half, :func:`column_kind`: every column has a compiled kind - TINYINT..BIGINT (signed and
    UNSIGNED), YEAR, CHAR/VARCHAR/TEXT in utf8mb4/utf8mb3 (MariaDB's JSON is such a LONGTEXT), BINARY/VARBINARY/
    BLOB (hex), DECIMAL, DATE, DATETIME(fsp), TIMESTAMP(fsp), DOUBLE and FLOAT (``types.float32``'s shortest
    digits, computed the same way). Other types (TIME, BIT, ENUM, SET, MySQL's binary JSON, GEOMETRY, other
    character sets, MariaDB's UUID/INET and COMPRESSED columns, the pre-5.6.4 temporal forms) keep the table on
    the reference path. A DOUBLE or FLOAT key column too (its key text is Python's ``str()``).

* **Where it plugs in.** :class:`~.tableplans.TablePlans` asks the hook when it builds a table version's plan and
  keeps an :class:`~cdcstream.sources.mysql._fused.ImagePlan` beside the reference decoders. For a row event whose
  images are FULL (every column present; not a PARTIAL_UPDATE_ROWS event) the converter hands the event body to
  the compiled plan, which renders the rows one after the other; each becomes a ``ChangeEvent`` whose ``fused``
  field carries the data section (and ``fused_key`` the partition key), ``after``/``before`` None. An UPDATE's
  before image is checked as the reference decodes it, then dropped: an eligible mapping writes no before image.

* **Fallback per row.** The compiled code renders only what it is sure of (see ``_fused.c``): at a row it is not
  (invalid UTF-8, a value past the event's end, a zero or invalid date, a DECIMAL group out of range, a
  non-finite double) it stops, and the converter decodes that one row with the reference reader - which renders
  it or raises its exact error - and hands the rest of the event back to the compiled plan. Positions, record
  numbers, per-key order and the record bytes are the reference path's.

* **Reference and switch.** The reference path is the oracle: tests/unit/test_mysql_fused.py (hypothesis over
  random row images of every supported type) and tests/integration/test_mysql_fused.py (a real MariaDB) hold
  the two byte for byte. The extension is optional at build time; without it, or with ``CDCSTREAM_PURE=1``,
  nothing here is used. At import the string and double renderings are checked against the installed ``orjson``:
  on a mismatch doubles (or everything) go to the reference path.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from cdcstream import compiled
from cdcstream.sources.mysql import rows as types
from cdcstream.sources.mysql.binlog.charsets import Charsets
from cdcstream.sources.mysql.binlog.tablemap import ColumnDef

if TYPE_CHECKING:
    from cdcstream.sources.mysql._fused import ImagePlan

try:
    from cdcstream.sources.mysql import _fused
except ImportError:  # built without a compiler: the pure path
    _fused = None  # type: ignore[assignment]

# Column kinds of _fused.c.
I8, U8, I16, U16, I24, U24, I32, U32, I64, U64 = range(10)
TEXT, HEX, HEX_BARE, DECIMAL, DATE, DATETIME2, TIMESTAMP2, DOUBLE, YEAR, FLOAT = range(10, 20)

Kind = tuple[int, int, int]
"""A column's kind and its two parameters (length bytes / precision / fsp, and pad / scale / null_invalid)."""

FusedKey = tuple[tuple[int, ...], str]
FusedColumns = tuple[tuple[str | None, ...], bool, FusedKey | None]
"""The mapping's half (Mapper.fused_columns): output names, whether NULLs are written, the partition key."""

_INTEGERS = {
    types.TINY: (I8, U8),
    types.SHORT: (I16, U16),
    types.INT24: (I24, U24),
    types.LONG: (I32, U32),
    types.LONGLONG: (I64, U64),
}
_UTF8 = frozenset({"utf8mb4", "utf8mb3", "utf8"})
_STRINGS = frozenset({types.STRING, types.VARCHAR, types.VAR_STRING})
_BLOBS = frozenset({types.BLOB, types.TINY_BLOB, types.MEDIUM_BLOB, types.LONG_BLOB})


def _probe() -> tuple[bool, bool]:
    """(strings and integers render as orjson writes them, doubles do): checked once against this orjson."""
    if _fused is None:
        return False, False
    text = ("".join(chr(i) for i in range(0x80)) + "é€😀\u2028").encode()
    plan = _fused.ImagePlan(((TEXT, 2, 0), (I64, 0, 0)), (b'"a":', b'"b":'), False, (1, 0), b"p.")
    image = b"\0" + len(text).to_bytes(2, "little") + text + (-123).to_bytes(8, "little", signed=True)
    rows, _ = plan.render(image, 0, len(image), False)
    want = orjson.dumps({"a": text.decode(), "b": -123})
    basic = len(rows) == 1 and rows[0] == (want, f"p.-123.{text.decode()}")
    doubles = [0.0, -0.0, 1.0, 100.0, 1.5, 0.1, 1e-05, 1.5e-05, 0.0001, 1e-07, 1.2345678901234567e-300, 1e16]
    doubles += [1.5e300, 5e-324, 1.7976931348623157e308, 1234567890123456.8, 1 / 3, -2.5e-5]
    dplan = _fused.ImagePlan(((DOUBLE, 0, 0),), (b'"f":',), False)
    ok = True
    for d in doubles:
        image = b"\0" + struct.pack("<d", d)
        rows, _ = dplan.render(image, 0, len(image), False)
        ok = ok and len(rows) == 1 and rows[0][0] == orjson.dumps({"f": d})
    return basic, ok


_BASIC, _DOUBLES = _probe()


def available() -> bool:
    """Whether the compiled path is built, agrees with this orjson and is not switched off (``CDCSTREAM_PURE``)."""
    return _BASIC and not compiled.pure_requested()


def path_name() -> str:
    """Which row path this process runs, for the start-up log line."""
    caveat = None if _DOUBLES else "tables with DOUBLE/FLOAT columns pure: orjson formats doubles differently"
    return compiled.path_name(_fused is not None, _BASIC, caveat)


def column_kind(c: ColumnDef, charsets: Charsets, no_hex_prefix: bool, invalid_dates: str) -> Kind | None:
    """The compiled kind of a column the reference decodes with :func:`.binlog.values.column_decoder` (no
    fixed-binary type), or None where only the reference renders it. Mirrors that function's choices."""
    t = c.type
    pair = _INTEGERS.get(t)
    if pair is not None:
        return (pair[1] if c.unsigned else pair[0], 0, 0)
    if t in (types.DOUBLE, types.FLOAT):
        return ((DOUBLE if t == types.DOUBLE else FLOAT), 0, 0) if _DOUBLES else None
    if t == types.YEAR:
        return (YEAR, 0, 0)
    if t == types.NEWDECIMAL:
        return (DECIMAL, c.precision, c.decimals)
    if t in (types.DATE, types.NEWDATE):
        return (DATE, 0, int(invalid_dates == "null"))
    if t in (types.DATETIME2, types.TIMESTAMP2) and 0 <= c.meta <= 6:
        return (DATETIME2 if t == types.DATETIME2 else TIMESTAMP2, c.meta, 0)
    if t in _STRINGS:
        length_bytes = 1 if c.max_length < 256 else 2
        return _text_kind(c, charsets, no_hex_prefix, length_bytes, c.max_length if t == types.STRING else 0)
    if t in _BLOBS and 1 <= c.meta <= 4:
        return _text_kind(c, charsets, no_hex_prefix, c.meta, 0)
    return None


def _text_kind(c: ColumnDef, charsets: Charsets, no_hex_prefix: bool, length_bytes: int, pad: int) -> Kind | None:
    name = charsets.name(c.collation) if c.collation is not None else None
    if name in _UTF8:
        return (TEXT, length_bytes, 0)
    if name == "binary" and pad <= 255:
        return (HEX_BARE if no_hex_prefix else HEX, length_bytes, pad)
    return None


def image_plan(kinds: Sequence[Kind | None], columns: FusedColumns | None) -> ImagePlan | None:
    """The compiled renderer of one table version's FULL row images, or None where the reference renders them."""
    if columns is None or not available() or any(k is None for k in kinds):
        return None
    names, include_nulls, key = columns
    if len(names) != len(kinds):
        return None
    specs = tuple(k for k in kinds if k is not None)
    encoded = tuple(None if n is None else orjson.dumps(n) + b":" for n in names)
    if key is None:
        return _fused.ImagePlan(specs, encoded, not include_nulls)
    indexes, prefix = key
    # A DOUBLE's or FLOAT's key text is Python's str() of the value, which the compiled code does not write.
    if not indexes or any(i >= len(specs) or specs[i][0] in (DOUBLE, FLOAT) for i in indexes):
        return None
    try:
        encoded_prefix = prefix.encode()
    except UnicodeEncodeError:
        return None
    return _fused.ImagePlan(specs, encoded, not include_nulls, indexes, encoded_prefix)
