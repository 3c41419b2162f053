"""The MySQL/MariaDB type matrix, with the server as the oracle.

Every case is one column: its SQL type, SQL values to store (row *i* of its table holds value *i* of every
column, NULL where a column has fewer; one more row is NULL everywhere), the SQL expression that asks the server
for its own rendering of the stored value (``CAST(... AS CHAR)``, ``HEX()``, ``CONVERT(... USING utf8mb4)``,
``ST_SRID()``/``ST_AsBinary()``), and the rendering rule of docs/types.md, "MySQL / MariaDB types", that turns the
server's answer into the record value. So the expected value of every cell is ``rule(server's answer)``: never a
literal typed here, never what python-mysql-replication or our own decoder makes of the bytes.

Cases were chosen with the public corpora of Maxwell (``src/test/resources/sql/json/``: big numbers, charsets
gbk/big5, invalid times, JSON) and Debezium (``debezium-connector-binlog/src/test/resources/ddl/``: integer
limits, zero and partial-zero dates, negative TIME fractions of DBZ-7594, BIT literals, geometry with SRIDs,
YEAR). The tables group the types by family (numbers, dates, times, text and binary, the rest, and the
character sets whose Python codecs are not the server's, last: a value the reader cannot decode stops the
stream there), plus ``k``, keyed by MariaDB's UUID/INET types.

Used by tests/integration/test_mysql_oracle.py (load and CDC records through MySQLSource and the mapping).
"""

from __future__ import annotations

import calendar
import contextlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Rule = Callable[[str], Any]


# -- the rendering rules (docs/types.md, "MySQL / MariaDB types"), each from the server's own text ------------------
def integer(text: str) -> int:
    """Integers (and BIT(n), YEAR): an exact JSON integer."""
    return int(text)


def same_text(text: str) -> str:
    """DECIMAL, TIME, DATE, text types, ENUM, SET, MariaDB JSON, UUID, INET4, INET6: the server's text itself."""
    return text


def float4(text: str) -> float:
    """FLOAT, from the float's exact value (``CAST(c AS DOUBLE)``): the shortest decimal that is the same 4-byte
    float (the server's own text has only 6 digits, ``16777200`` for 16777216)."""
    value = float(text)
    packed = struct.pack("<f", value)
    for digits in range(1, 10):
        shortest = float(f"{value:.{digits}g}")
        with contextlib.suppress(OverflowError):  # a rounding past the largest float
            if struct.pack("<f", shortest) == packed:
                return shortest
    raise AssertionError(f"no decimal of 9 digits or fewer for the float {text}")


def float8(text: str) -> float:
    """DOUBLE: the number the server prints (it prints the shortest digits that read back as the same double)."""
    return float(text)


def calendar_date(text: str) -> bool:
    """Whether ``YYYY-MM-DD...`` is a date of the (proleptic Gregorian, ISO 8601) calendar: the year 0000
    included, not a zero month or day, nor a day its month does not have."""
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    days = [31, 29 if calendar.isleap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
    return 1 <= month <= 12 and 1 <= day <= days[month - 1]


def datetime_text(text: str) -> str:
    """DATETIME: the server's text with ``T`` between date and time (its fractional digits as the column has);
    a value the calendar cannot hold is no instant and stays the server's text as it is."""
    return text.replace(" ", "T", 1) if calendar_date(text) else text


def timestamp_text(text: str) -> str:
    """TIMESTAMP: the server's text in UTC (the oracle session's time zone), with ``T`` and ``Z``; the zero
    TIMESTAMP stays the server's text as it is."""
    return text.replace(" ", "T", 1) + "Z" if calendar_date(text) else text


def binary_hex(text: str) -> str:
    """BINARY, VARBINARY, BLOB (and CHARACTER SET binary): ``0x`` + the bytes in lowercase hex, padding included."""
    return "0x" + text.lower()


def geometry(text: str) -> str:
    """GEOMETRY: hex of the internal value, the SRID as 4 little-endian bytes and then the WKB (the oracle
    answers ``<ST_SRID>:<HEX(ST_AsBinary)>``)."""
    srid, wkb = text.split(":")
    return "0x" + int(srid).to_bytes(4, "little").hex() + wkb.lower()


def calendar_only(rule: Rule) -> Rule:
    """``invalid_dates = "null"``: a date the calendar cannot hold becomes null; every other value keeps its
    rendering."""

    def wrapped(text: str) -> Any:
        return rule(text) if calendar_date(text) else None

    return wrapped


# -- the oracle expressions --------------------------------------------------------------------------------------
AS_CHAR = "CAST({c} AS CHAR)"
AS_UTF8 = "CONVERT({c} USING utf8mb4)"
HEX = "HEX({c})"
FLOAT_VALUE = "CAST(CAST({c} AS DOUBLE) AS CHAR)"
BITS = "CAST(CAST({c} AS UNSIGNED) AS CHAR)"
WKB = "CONCAT(ST_SRID({c}), ':', HEX(ST_AsBinary({c})))"


@dataclass(frozen=True)
class Case:
    """One column of the matrix."""

    column: str
    sql_type: str  # with the generation clause for generated columns
    values: tuple[str, ...]  # SQL expressions, one per row
    oracle: str  # SQL over ``{c}``: the server's rendering, as text
    rule: Rule
    generated: bool = False
    calendar: bool = False  # DATE, DATETIME, TIMESTAMP: null under invalid_dates = "null" when not a calendar date

    def query(self) -> str:
        return self.oracle.format(c=f"`{self.column}`")


def _ints(name: str, sql: str, lo: int, hi: int) -> Case:
    return Case(name, sql, (str(lo), str(hi), "0", "-1" if lo < 0 else "1", str(hi // 3)), AS_CHAR, integer)


def _times(kind: str, values: Sequence[str], rule: Rule) -> list[Case]:
    """One column per fractional-second precision 0..6 of a temporal type, all with the same values."""
    dates = kind != "time"
    return [
        Case(f"{kind}{fsp}", f"{kind}({fsp}) NULL", tuple(values), AS_CHAR, rule, calendar=dates) for fsp in range(7)
    ]


# Dates a calendar cannot hold (the writer allows them: sql_mode ALLOW_INVALID_DATES, no NO_ZERO_DATE /
# NO_ZERO_IN_DATE), the year 0000 (a calendar year, leap), the type's limits, a date before year 1000.
DATE_VALUES = (
    "'2026-11-27'",
    "'1000-01-01'",
    "'9999-12-31'",
    "'0000-00-00'",
    "'0001-00-00'",
    "'2020-00-10'",
    "'2020-02-31'",
    "'2023-02-29'",
    "'0000-01-01'",
    "'0001-01-01'",
    "'0999-01-02'",
    "'2024-02-29'",
    "'0000-02-29'",
)
DATETIME_VALUES = (
    "'2026-11-27 12:34:56.123456'",
    "'1000-01-01 00:00:00'",
    "'9999-12-31 23:59:59.999999'",
    "'0000-00-00 00:00:00'",
    "'0000-00-00 14:02:10.5'",
    "'0001-00-00 00:00:00.000001'",
    "'2020-02-31 10:00:00.25'",
    "'2020-04-31 23:59:59'",
    "'0000-01-01 00:00:00'",
    "'0999-01-02 03:04:05.000006'",
    "'2024-02-29 00:00:00.1'",
)
# Written in a session at +02:00; the oracle reads them at UTC. The TIMESTAMP range (UTC 1970-01-01 00:00:01 to
# 2038-01-19 03:14:07.999999), its zero value, and a leap day that is the day before in UTC.
TIMESTAMP_VALUES = (
    "'2026-11-27 14:00:00.5'",
    "'1970-01-01 02:00:01'",
    "'2038-01-19 05:14:07.999999'",
    "'0000-00-00 00:00:00'",
    "'2000-02-29 01:59:59.000001'",
)
# Over 24 h, negative, negative with a fraction (DBZ-7594: -01:01:01.000001 must not become -01:01:01.999999),
# the type's limits, minus zero with a fraction.
TIME_VALUES = (
    "'12:34:56.123456'",
    "'-838:59:59'",
    "'838:59:59'",
    "'-01:01:01.000001'",
    "'-733:00:00.0011'",
    "'-00:00:01.5'",
    "'-00:00:00.000001'",
    "'100:00:00'",
    "'-00:20:38'",
    "'00:00:00'",
    "'-01:00:00.999999'",
)

TABLES: dict[str, list[Case]] = {
    # integers at their limits, decimals of every digit-group shape, floats and doubles
    "num": [
        _ints("ti", "tinyint", -128, 127),
        _ints("tiu", "tinyint unsigned", 0, 255),
        _ints("t1", "tinyint(1)", -128, 127),
        _ints("si", "smallint", -32768, 32767),
        _ints("siu", "smallint unsigned", 0, 65535),
        _ints("mi", "mediumint", -8388608, 8388607),
        _ints("miu", "mediumint unsigned", 0, 16777215),
        _ints("i", "int", -2147483648, 2147483647),
        _ints("iu", "int unsigned", 0, 4294967295),
        _ints("bi", "bigint", -9223372036854775808, 9223372036854775807),
        _ints("biu", "bigint unsigned", 0, 18446744073709551615),
        Case(
            "d65",
            "decimal(65,30)",
            (
                "'" + "9" * 35 + "." + "9" * 30 + "'",
                "'-" + "9" * 35 + "." + "9" * 30 + "'",
                "0",
                "'0.000000000000000000000000000001'",
                "'-12345678901234567890.012345678901234567890123456789'",
                "'1'",
            ),
            AS_CHAR,
            same_text,
        ),
        Case("d50", "decimal(5,0)", ("99999", "-99999", "0", "-7"), AS_CHAR, same_text),
        Case("d122", "decimal(12,2)", ("'-9999999999.99'", "0.10", "0", "'-0.01'", "12345.678"), AS_CHAR, same_text),
        Case("d189", "decimal(18,9)", ("'123456789.123456789'", "'-0.000000001'", "0"), AS_CHAR, same_text),
        Case("d1010", "decimal(10,10)", ("'0.9999999999'", "'-0.0000000001'", "0"), AS_CHAR, same_text),
        Case("d3010", "decimal(30,10)", ("'-12345678901234567890.0123456789'", "'1'"), AS_CHAR, same_text),
        Case(
            "fl",
            "float",
            (
                "1.1",
                "16777217",
                "3.4028234663852886e38",
                "-3.4028234663852886e38",
                "1.17549435e-38",
                "1e-45",
                "-1e-40",
                "0",
                "0.1",
                "-123456.789",
                "1e10",
            ),
            FLOAT_VALUE,
            float4,
        ),
        Case(
            "db",
            "double",
            (
                "0.1",
                "0.30000000000000004",
                "1.7976931348623157e308",
                "-5e-324",
                "2.2250738585072014e-308",
                "1e22",
                "123456789012345680",
                "-2.5e-300",
                "0",
                "100",
            ),
            AS_CHAR,
            float8,
        ),
    ],
    # DATE, DATETIME(0..6), TIMESTAMP(0..6), YEAR
    "dat": [
        Case("d", "date", DATE_VALUES, AS_CHAR, same_text, calendar=True),
        *_times("datetime", DATETIME_VALUES, datetime_text),
        *_times("timestamp", TIMESTAMP_VALUES, timestamp_text),
        Case("y", "year", ("2026", "1901", "2155", "0", "'70'", "'69'", "'0000'"), AS_CHAR, integer),
    ],
    # TIME(0..6)
    "tim": _times("time", TIME_VALUES, same_text),
    # text in the character sets the old fast path decodes, binary types with trailing zero bytes, ENUM
    "txt": [
        Case(
            "c5",
            "char(5)",
            ("'ab'", "''", "'ab   '", "' a'", "'héllo'", "'😀'"),
            AS_UTF8,
            same_text,
        ),
        Case(
            "vc",
            "varchar(300)",
            ("'héllo 日本 😀👍'", "''", "'trailing  '", "'a\\tb\\nc\\\\d\"e'", "REPEAT('é', 300)", "'NULL'"),
            AS_UTF8,
            same_text,
        ),
        Case("vcbin", "varchar(20) collate utf8mb4_bin", ("'Ab'", "'ä'", "'a '"), AS_UTF8, same_text),
        Case(
            "l1",
            "varchar(40) character set latin1",
            ("'héllo'", "'€ ‰ Ÿ'", "x'ff'", "''"),
            AS_UTF8,
            same_text,
        ),
        Case("l1bin", "char(10) character set latin1 collate latin1_bin", ("'Ünïcode'", "'a'"), AS_UTF8, same_text),
        Case("asc", "varchar(10) character set ascii", ("'plain'", "'~'"), AS_UTF8, same_text),
        Case("u3", "varchar(10) character set utf8mb3", ("'ök€'", "'日本'"), AS_UTF8, same_text),
        Case("tt", "tinytext", ("'tiny'", "''"), AS_UTF8, same_text),
        Case("tx", "text", ("'text…'", "REPEAT('x', 300)"), AS_UTF8, same_text),
        Case("mt", "mediumtext", ("REPEAT('ü', 70000)", "''"), AS_UTF8, same_text),
        Case("lt", "longtext", ("REPEAT('abc', 30000)", "'😀'"), AS_UTF8, same_text),
        Case(
            "bn",
            "binary(10)",
            ("x'00010203'", "x''", "x'ffffffffffffffffffff'", "x'00'", "'ab'"),
            HEX,
            binary_hex,
        ),
        Case("bn16", "binary(16)", ("x'00000000000000000000000000000000'", "x'01'"), HEX, binary_hex),
        Case("vb", "varbinary(20)", ("x'0100'", "x''", "x'00'", "x'deadbeef00'"), HEX, binary_hex),
        Case("vcb", "varchar(10) character set binary", ("x'6100'", "'b'"), HEX, binary_hex),
        Case("tb", "tinyblob", ("x'00ff00'", "x''"), HEX, binary_hex),
        Case("bl", "blob", ("x'deadbeef'", "REPEAT(x'00ff', 300)"), HEX, binary_hex),
        Case("mb", "mediumblob", ("REPEAT(x'00fe', 40000)", "x'00'"), HEX, binary_hex),
        Case("lb", "longblob", ("REPEAT(x'01', 70000)", "x'0000'"), HEX, binary_hex),
        Case("en", "enum('a','b','','é')", ("'a'", "'b'", "''", "'é'"), AS_CHAR, same_text),
    ],
    # everything else: BIT, SET, JSON, GEOMETRY, MariaDB's UUID/INET4/INET6, generated columns, the invalid
    # ENUM value (index 0)
    "oth": [
        Case("b1", "bit(1)", ("b'1'", "b'0'"), BITS, integer),
        Case("b2", "bit(2)", ("b'10'", "2"), BITS, integer),
        Case("b10", "bit(10)", ("b'1000000001'", "0"), BITS, integer),
        Case("b17", "bit(17)", ("b'10000000000000001'", "65536"), BITS, integer),
        Case("b63", "bit(63)", ("b'" + "1" * 63 + "'", "1"), BITS, integer),
        Case("b64", "bit(64)", ("b'" + "1" * 64 + "'", "23989979", "b'1" + "0" * 63 + "'"), BITS, integer),
        Case("st", "set('x','y','z')", ("'z,x'", "''", "'x,y,z'", "'y'", "'y,y'"), AS_CHAR, same_text),
        Case(
            "st10",
            "set('a','b','c','d','e','f','g','h','i','j')",
            ("'j,a'", "'i'", "''"),
            AS_CHAR,
            same_text,
        ),
        Case("en0", "enum('a','b')", ("'a'", "'b'", "'a'"), AS_CHAR, same_text),  # row 3: index 0, see NON_STRICT
        Case(
            "js",
            "json",
            (
                '\'{"a": [1, 2.5, {"b": null}], "é": "😀"}\'',
                "'true'",
                "'null'",
                "'-1'",
                "'3.14'",
                "'\"scalar string\"'",
                "'18446744073709551616'",
                "'{}'",
                "'[]'",
                "CONCAT('[', REPEAT('{\"k\": \"v\"}, ', 5000), '1]')",
                "'  {\"spaced\" :1 }'",
            ),
            AS_UTF8,
            same_text,
        ),
        Case(
            "g",
            "geometry",
            (
                "ST_GeomFromText('POINT(1 2)')",
                "ST_GeomFromText('LINESTRING(0 0, 1 1)', 4326)",
                "ST_GeomFromText('POLYGON((0 0, 1 1, 1 0, 0 0))')",
                "ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1), LINESTRING(0 0, 1 1))', 3187)",
            ),
            WKB,
            geometry,
        ),
        Case("pt", "point", ("ST_GeomFromText('POINT(8.25554554 3.22124447)', 4326)",), WKB, geometry),
        Case(
            "u",
            "uuid",
            (
                "'01020304-0506-0708-090a-0b0c0d0e0f10'",
                "'00000000-0000-0000-0000-000000000000'",
                "'e4eaaaf2-d142-11e1-b3e4-080027620cdd'",
                "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
                "'2001db80-0000-0000-0000-000000000000'",
            ),
            AS_CHAR,
            same_text,
        ),
        Case("i4", "inet4", ("'1.2.3.4'", "'0.0.0.0'", "'255.255.255.255'", "'10.0.0.0'"), AS_CHAR, same_text),
        Case(
            "i6",
            "inet6",
            ("'2001:db8::'", "'::'", "'::ffff:1.2.3.4'", "'2001:db8::ff00:42:8329'", "'fe80::1'"),
            AS_CHAR,
            same_text,
        ),
        Case("base", "int", ("5", "-3"), AS_CHAR, integer),
        Case("gv", "int AS (`base` * 2) VIRTUAL", (), AS_CHAR, integer, generated=True),
        Case("gs", "varchar(20) AS (CONCAT('s', `base`)) STORED", (), AS_UTF8, same_text, generated=True),
        Case(
            "gd",
            "date AS (DATE('2020-01-01') + INTERVAL `base` DAY) VIRTUAL",
            (),
            AS_CHAR,
            same_text,
            generated=True,
            calendar=True,
        ),
    ],
    # character sets whose Python codecs are not the server's: MySQL's latin1 is cp1252 with its five undefined
    # bytes mapped to U+0081, U+008D, U+008F, U+0090, U+009D (the server converts them so); UTF-16/32 are
    # big-endian in MySQL; multi-byte gbk and big5. Last, because a decoder that cannot read a value stops
    # the stream there.
    "cs": [
        Case("l1u", "varchar(10) character set latin1", ("x'81'", "x'8d8f909d'", "x'41815a'"), AS_UTF8, same_text),
        Case("u16", "varchar(10) character set utf16", ("'ök€'", "'😀'"), AS_UTF8, same_text),
        Case("u16le", "varchar(10) character set utf16le", ("'ök€'", "'😀'"), AS_UTF8, same_text),
        Case("u32", "varchar(10) character set utf32", ("'ök€'", "'😀'"), AS_UTF8, same_text),
        Case("ucs", "char(5) character set ucs2", ("'ök€'", "''"), AS_UTF8, same_text),
        Case("gbk", "varchar(20) character set gbk", ("'乪'", "'中文'"), AS_UTF8, same_text),
        Case("big5", "varchar(20) character set big5", ("'圖形碼'",), AS_UTF8, same_text),
    ],
}

# Values only a non-strict session can store, set after the INSERTs: the invalid ENUM value (index 0, "").
NON_STRICT = ["UPDATE `oth` SET en0 = 'zz' WHERE id = 3"]


@dataclass(frozen=True)
class Table:
    """A matrix table: how to create and fill it, and every column's oracle and rule."""

    name: str
    statements: tuple[str, ...]  # CREATE TABLE and the INSERTs
    cases: tuple[Case, ...]  # every column, the key and the ``tick`` column included
    key: tuple[str, ...]
    tick: str  # an integer column that UPDATEs change, so every other value is in both images
    copyable: bool  # INSERT ... SELECT with id + 1000 gives new rows (the insert records)

    def oracle_query(self) -> str:
        """One ``SELECT`` asking the server for its rendering of every cell."""
        return f"SELECT {', '.join(c.query() for c in self.cases)} FROM `{self.name}`"

    def copy_statement(self) -> str:
        written = [f"`{c.column}`" for c in self.cases if not c.generated and c.column != "id"]
        return (
            f"INSERT INTO `{self.name}` (id, {', '.join(written)}) "
            f"SELECT id + 1000, {', '.join(written)} FROM `{self.name}` WHERE id < 1000"
        )


def matrix_table(name: str, cases: Sequence[Case]) -> Table:
    """A table of ``cases`` keyed by ``id``: rows 1..n hold the values, one more row is NULL everywhere."""
    written = [c for c in cases if not c.generated]
    rows = max(len(c.values) for c in written)
    cols = ", ".join(f"`{c.column}` {c.sql_type}" for c in cases)
    names = ", ".join(f"`{c.column}`" for c in written)
    statements = [f"CREATE TABLE `{name}` (id int PRIMARY KEY, tick int NOT NULL DEFAULT 0, {cols})"]
    for i in range(rows + 1):
        values = ", ".join(c.values[i] if i < len(c.values) else "NULL" for c in written)
        statements.append(f"INSERT INTO `{name}` (id, {names}) VALUES ({i + 1}, {values})")
    ints = [Case("id", "int", (), AS_CHAR, integer), Case("tick", "int", (), AS_CHAR, integer)]
    return Table(name, tuple(statements), (*ints, *cases), ("id",), "tick", True)


# MariaDB UUID, INET4, INET6 and a padded BINARY as a composite primary key: the partition key of a row must
# be the same text in its load record and in its CDC records (and the load's keyset pages must follow it).
KEY_TABLE = Table(
    "k",
    (
        "CREATE TABLE k (u uuid NOT NULL, i6 inet6 NOT NULL, i4 inet4 NOT NULL, bn binary(8) NOT NULL,"
        " v int NOT NULL, PRIMARY KEY (u, i6, i4, bn))",
        "INSERT INTO k VALUES "
        + ", ".join(
            f"('{u}', '{i6}', '{i4}', x'{bn}', {n})"
            for n, (u, i6, i4, bn) in enumerate(
                [
                    ("01020304-0506-0708-090a-0b0c0d0e0f10", "2001:db8::", "1.2.3.4", "01"),
                    ("00000000-0000-0000-0000-000000000000", "::", "0.0.0.0", ""),
                    ("e4eaaaf2-d142-11e1-b3e4-080027620cdd", "::ffff:1.2.3.4", "255.255.255.255", "0100"),
                    ("01020304-0506-0708-090a-0b0c0d0e0f10", "2001:db8::1", "1.2.3.4", "01"),
                    ("ffffffff-ffff-ffff-ffff-ffffffffffff", "fe80::", "10.0.0.1", "ffffffffffffffff"),
                    ("01020304-0506-0708-090a-0b0c0d0e0f10", "2001:db8::", "1.2.3.4", "0100000000000001"),
                ]
            )
        ),
    ),
    (
        Case("u", "uuid", (), AS_CHAR, same_text),
        Case("i6", "inet6", (), AS_CHAR, same_text),
        Case("i4", "inet4", (), AS_CHAR, same_text),
        Case("bn", "binary(8)", (), HEX, binary_hex),
        Case("v", "int", (), AS_CHAR, integer),
    ),
    ("u", "i6", "i4", "bn"),
    "v",
    False,
)

MATRIX = [KEY_TABLE, *(matrix_table(name, cases) for name, cases in TABLES.items())]


def partition_key(table: Table, row: dict[str, Any]) -> str:
    """The ``primary-key`` partition key of a rendered row: the key values' text joined with dots
    (docs/table-mappings.md)."""
    return ".".join(str(row[k]) for k in table.key)


def expected_rows(
    table: Table, answers: Sequence[Sequence[Any]], invalid_dates: str = "text"
) -> dict[str, dict[str, Any]]:
    """The record values of every row, by partition key: each column's rule over the server's answer (NULL
    stays None); with ``invalid_dates = "null"`` the date rules are :func:`calendar_only`."""
    out: dict[str, dict[str, Any]] = {}
    for answer in answers:
        row: dict[str, Any] = {}
        for case, cell in zip(table.cases, answer, strict=True):
            rule = calendar_only(case.rule) if case.calendar and invalid_dates == "null" else case.rule
            row[case.column] = None if cell is None else rule(str(cell))
        out[partition_key(table, row)] = row
    return out
