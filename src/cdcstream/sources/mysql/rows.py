"""Rendering of binlog row values (as python-mysql-replication decodes them) into JSON-ready values.

A converter is chosen once per column from the table map (:func:`converter_for`) and then called per non-NULL
value; integer and text columns have none (the library's value is already right), so most columns cost nothing.
Pure functions: no I/O, no clocks.

Type table (MySQL / MariaDB -> JSON), docs/types.md, "MySQL / MariaDB types":

==========================================  =========================================================================
TINYINT .. BIGINT, signed and UNSIGNED      integer, exact (BIGINT UNSIGNED up to 18446744073709551615)
DECIMAL / NUMERIC                           string with the column's exact digits (``"-12.50"``), never exponent form
FLOAT                                       number, the shortest decimal that round-trips the 4-byte float (1.1 -> 1.1)
DOUBLE                                      number
DATE                                        ``"2026-11-27"``
DATETIME(fsp)                               ``"2026-11-27T12:00:00.123"`` (exactly fsp fractional digits)
TIMESTAMP(fsp)                              ``"2026-11-27T12:00:00.123Z"`` (UTC, whatever the session time zone)
TIME(fsp)                                   ``"-838:59:59.00"`` (hours may exceed 24; sign kept)
YEAR                                        integer (``0`` for the zero year ``0000``)
zero dates (``0000-00-00``, zero TIMESTAMP) null (they are not instants; the server accepts them only without strict
                                            mode) — documented, so a consumer never parses ``0000-00-00``
CHAR, VARCHAR, TEXT (any character set)     string, decoded from the column's character set
BINARY, VARBINARY, BLOB                     ``"0x"`` + lowercase hex (no prefix with ``no_hex_prefix``)
BIT(n)                                      integer (BIT(64) included: integers are exact)
ENUM                                        the member's string (``""`` for the invalid-value index 0)
SET                                         members joined by ``,`` in definition order (``""`` for the empty set)
JSON                                        the JSON text as a string (MariaDB stores LONGTEXT; MySQL's binary JSON is
                                            re-serialised)
GEOMETRY                                    hex (``0x`` prefix as binary) of MySQL's internal value: 4-byte
                                            little-endian SRID followed by the WKB
NULL                                        null (left out of the record unless ``include_null_and_empty``)
==========================================  =========================================================================
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Collection, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from cdcstream.changes import Column, TableInfo

Converter = Callable[[Any], Any]

# Column type codes (include/mysql_com.h enum_field_types), as TableMapEvent reports them.
DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP, LONGLONG, INT24 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR, BIT = 10, 11, 12, 13, 14, 15, 16
TIMESTAMP2, DATETIME2, TIME2 = 17, 18, 19
JSON, NEWDECIMAL, ENUM, SET = 245, 246, 247, 248
TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB, VAR_STRING, STRING, GEOMETRY = 249, 250, 251, 252, 253, 254, 255
# Only in binlog table maps: MariaDB's COMPRESSED columns and MySQL 9's VECTOR.
BLOB_COMPRESSED, VARCHAR_COMPRESSED, VECTOR = 140, 141, 242

TYPE_NAMES = {
    DECIMAL: "decimal",
    TINY: "tinyint",
    SHORT: "smallint",
    LONG: "int",
    FLOAT: "float",
    DOUBLE: "double",
    NULL: "null",
    TIMESTAMP: "timestamp",
    LONGLONG: "bigint",
    INT24: "mediumint",
    DATE: "date",
    TIME: "time",
    DATETIME: "datetime",
    YEAR: "year",
    NEWDATE: "date",
    VARCHAR: "varchar",
    BIT: "bit",
    TIMESTAMP2: "timestamp",
    DATETIME2: "datetime",
    TIME2: "time",
    JSON: "json",
    NEWDECIMAL: "decimal",
    ENUM: "enum",
    SET: "set",
    TINY_BLOB: "blob",
    MEDIUM_BLOB: "blob",
    LONG_BLOB: "blob",
    BLOB: "blob",
    VAR_STRING: "varchar",
    STRING: "char",
    GEOMETRY: "geometry",
    BLOB_COMPRESSED: "blob",
    VARCHAR_COMPRESSED: "varchar",
    VECTOR: "vector",
}
INTEGER_TYPES = frozenset({TINY, SHORT, LONG, LONGLONG, INT24})
TEXT_TYPES = frozenset({VARCHAR, VAR_STRING, STRING, BLOB, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB})
TEXT_TYPES |= {BLOB_COMPRESSED, VARCHAR_COMPRESSED}

# python-mysql-replication decodes text with ``pymysql.charset_by_name(cs).encoding`` or, when PyMySQL does not
# know the charset, with the charset's name as a Python codec. For MySQL's UTF-16/UTF-32 charsets (big-endian on
# the wire) that name is Python's native little-endian codec; for ucs2/utf16le the codec lookup fails and the
# library hands back bytes. These are the (codec the library used, right codec) pairs that repair both cases.
_WIDE_CHARSETS: dict[str, tuple[str | None, str]] = {
    "utf16": ("utf-16-le", "utf-16-be"),
    "utf32": ("utf-32-le", "utf-32-be"),
    "ucs2": (None, "utf-16-be"),
    "utf16le": (None, "utf-16-le"),
}

_EPOCH_NAIVE = datetime(1970, 1, 1)
_F32 = struct.Struct("<f")
_F32_MIN_NORMAL = 1.1754943508222875e-38


def decimal_text(value: Decimal) -> str:
    """Exact digits, never exponent notation (``Decimal('1E-7')`` -> ``'0.0000001'``)."""
    return format(value, "f")


def float32(value: float) -> float:
    """The shortest decimal that maps to the same 4-byte float (MySQL FLOAT 1.1 is 1.100000023841858 as double).

    A normal float has more than 7 significant digits, so when 6 or fewer name it, 6 digits (``g`` drops the
    trailing zeros) already give the shortest; a subnormal has fewer (``1e-45``, not ``1.4013e-45``)."""
    packed = _F32.pack(value)
    for digits in range(6 if abs(value) >= _F32_MIN_NORMAL else 1, 10):
        candidate = float(f"{value:.{digits}g}")
        if _F32.pack(candidate) == packed:
            return candidate
    return value


_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def valid_day(year: int, month: int, day: int) -> bool:
    """Whether ``day`` exists in ``month`` (1..12) of ``year`` (days 1..28 always do; year 0 is a leap year,
    as in the proleptic Gregorian calendar of ISO 8601)."""
    if day <= 28:
        return True
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _DAYS[month]


def _fraction(microsecond: int, fsp: int) -> str:
    return "." + f"{microsecond:06d}"[:fsp] if fsp else ""


def make_date() -> Converter:
    def conv(value: date) -> str:
        return value.isoformat()

    return conv


def make_datetime(fsp: int) -> Converter:
    def conv(value: datetime) -> str:
        return value.replace(microsecond=0).isoformat() + _fraction(value.microsecond, fsp)

    return conv


def make_timestamp(fsp: int) -> Converter:
    """The library gives a naive UTC datetime; TIMESTAMP 0 is the zero date ``0000-00-00 00:00:00`` (the
    type's range starts at 1970-01-01 00:00:01 UTC), rendered as null like the other zero dates."""

    def conv(value: datetime) -> str | None:
        if value == _EPOCH_NAIVE:
            return None
        return value.replace(microsecond=0).isoformat() + _fraction(value.microsecond, fsp) + "Z"

    return conv


def make_time(fsp: int) -> Converter:
    def conv(value: timedelta) -> str:
        total_us = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        sign = "-" if total_us < 0 else ""
        total_us = abs(total_us)
        seconds, micro = divmod(total_us, 1_000_000)
        hours, rest = divmod(seconds, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}{_fraction(micro, fsp)}"

    return conv


def year(value: int) -> int:
    # YEAR is stored as value-1900 in one byte; 0 means the zero year 0000, which the library reads as 1900.
    return 0 if value == 1900 else value


def make_binary(no_hex_prefix: bool) -> Converter:
    prefix = "" if no_hex_prefix else "0x"

    def conv(value: bytes | str) -> str:
        if isinstance(value, str):  # a non-binary decode the library did; binary columns never take this path
            value = value.encode("utf-8", "surrogateescape")
        return prefix + value.hex()

    return conv


def make_text(charset: str | None, no_hex_prefix: bool) -> Converter | None:
    """None for the common case (the library decoded it right); a repair for wide charsets; hex for bytes the
    library could not decode (an unknown charset), so nothing is lost."""
    wide = _WIDE_CHARSETS.get(charset or "")
    binary = make_binary(no_hex_prefix)
    if wide is None:

        def conv(value: str | bytes) -> str:
            return binary(value) if isinstance(value, bytes) else value

        return conv
    used, right = wide

    def conv_wide(value: str | bytes) -> str:
        raw = value if isinstance(value, bytes) else value.encode(used or "utf-8", "surrogatepass")
        return raw.decode(right, "replace")

    return conv_wide


def bit(value: str) -> int:
    """The library renders BIT(n) as a string of n '0'/'1' characters."""
    return int(value, 2) if value else 0


def make_set(members: list[str] | None) -> Converter:
    order = {m: i for i, m in enumerate(members or ())}

    def conv(value: set[str]) -> str:
        return ",".join(sorted(value, key=lambda m: order.get(m, len(order))))

    return conv


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, Decimal):
        return decimal_text(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    raise TypeError(f"cannot serialise {type(obj).__name__} in a JSON column")


def json_text(value: Any) -> str:
    """MariaDB JSON is LONGTEXT (a str already); MySQL's binary JSON comes parsed (with bytes keys)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        value = {k.decode() if isinstance(k, bytes) else k: v for k, v in value.items()}
    return orjson.dumps(value, default=_json_default).decode()


def converter_for(column: Any, no_hex_prefix: bool = False) -> Converter | None:
    """The converter of one column of a table map (python-mysql-replication ``Column``); None = keep as is."""
    t = column.type
    if t in INTEGER_TYPES or t in (DOUBLE, ENUM, NULL):
        return None
    if t in (NEWDECIMAL, DECIMAL):
        return decimal_text
    if t == FLOAT:
        return float32
    if t in (DATE, NEWDATE):
        return make_date()
    if t in (DATETIME, DATETIME2):
        return make_datetime(getattr(column, "fsp", 0) or 0)
    if t in (TIMESTAMP, TIMESTAMP2):
        return make_timestamp(getattr(column, "fsp", 0) or 0)
    if t in (TIME, TIME2):
        return make_time(getattr(column, "fsp", 0) or 0)
    if t == YEAR:
        return year
    if t == BIT:
        return bit
    if t == SET:
        return make_set(column.set_values)
    if t == JSON:
        return json_text
    if t == GEOMETRY:
        return make_binary(no_hex_prefix)
    if t in TEXT_TYPES:
        charset = column.character_set_name
        if charset == "binary":
            return make_binary(no_hex_prefix)
        return make_text(charset, no_hex_prefix)
    return None


def table_info(schema: str, table: str, columns: Sequence[Any], keys: Collection[str]) -> TableInfo:
    """The ``TableInfo`` of binlog columns: one definition for the binlog reader and the full load, so load and
    CDC rows of a table share one mapping plan."""
    return TableInfo(
        schema,
        table,
        tuple(
            Column(name=c.name, type_name=type_name(c), type_id=c.type, nullable=True, is_key=c.name in keys)
            for c in columns
        ),
    )


def type_name(column: Any) -> str:
    """A display name for ``TableInfo`` (``bigint unsigned``, ``varbinary``, ``datetime(3)``...)."""
    t = column.type
    name = TYPE_NAMES.get(t, str(t))
    if t in TEXT_TYPES and column.character_set_name == "binary":
        name = {"varchar": "varbinary", "char": "binary"}.get(name, name)
    if t in INTEGER_TYPES and column.unsigned:
        name += " unsigned"
    fsp = getattr(column, "fsp", 0)
    if t in (DATETIME2, TIMESTAMP2, TIME2) and fsp:
        name += f"({fsp})"
    if t == NEWDECIMAL:
        name += f"({column.precision},{column.decimals})"
    return name
