"""The MySQL load's pure parts: row packets parsed outside PyMySQL (``parse_row_packets``), for every
length-coded string form (1, 3, 4 and 9 byte lengths) and NULL, and the renderers of the server's text (the
values themselves are checked against the server in tests/integration/test_mysql_oracle.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from pymysql import converters

from cdcstream.errors import SourceError
from cdcstream.sources.mysql import rows
from cdcstream.sources.mysql.snapshot import select_column
from cdcstream.sources.mysql.textrows import Field, calendar_date, load_converter, parse_row_packets


def _lcs(value: bytes | None) -> bytes:
    if value is None:
        return b"\xfb"
    n = len(value)
    if n < 251:
        head = bytes([n])
    elif n < 1 << 16:
        head = b"\xfc" + n.to_bytes(2, "little")
    elif n < 1 << 24:
        head = b"\xfd" + n.to_bytes(3, "little")
    else:
        head = b"\xfe" + n.to_bytes(8, "little")
    return head + value


FIELDS: tuple[Field, ...] = (
    ("ascii", int),
    ("utf8", None),
    (None, None),
    ("ascii", Decimal),
    ("ascii", float),
    ("ascii", converters.convert_datetime),
)


@pytest.mark.parametrize("size", [0, 250, 251, 65535, 65536, (1 << 24) + 3])
def test_lengths_and_nulls(size: int) -> None:
    n = size // 2
    rows_in: list[list[bytes | None]] = [
        [b"-12", "é".encode() * n, b"\x00\xfe" * n, b"1.50", b"2.5e3", b"2026-11-27 10:00:00.5"],
        [None, None, None, None, None, None],
        [b"7", b"", b"", b"0", b"0", b"0000-00-00 00:00:00"],
    ]
    packets = [b"".join(_lcs(v) for v in row) for row in rows_in]
    got = parse_row_packets(b"".join(packets), len(packets), FIELDS)
    assert got == [
        [-12, "é" * n, b"\x00\xfe" * n, Decimal("1.50"), 2500.0, datetime(2026, 11, 27, 10, 0, 0, 500000)],
        [None, None, None, None, None, None],
        [7, "", b"", Decimal("0"), 0.0, "0000-00-00 00:00:00"],  # PyMySQL leaves a zero date as text
    ]
    assert [type(v) for v in got[0]] == [int, str, bytes, Decimal, float, datetime]


def test_a_short_row_is_an_error() -> None:
    with pytest.raises(SourceError, match="bytes left"):
        parse_row_packets(_lcs(b"1") * 3, 1, FIELDS[:2])


def _col(type_: int, data_type: str = "", charset: str | None = None) -> Any:
    return SimpleNamespace(name="c", type=type_, data_type=data_type, character_set_name=charset, fsp=0)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("2026-11-27", True),
        ("2024-02-29 00:00:00", True),
        ("0001-01-01", True),
        ("9999-12-31 23:59:59.999999", True),
        ("0000-00-00", False),
        ("0000-01-01", True),  # the year 0 of ISO 8601's proleptic Gregorian calendar
        ("0000-02-29", True),  # a leap year
        ("1900-02-29", False),
        ("0001-00-00", False),
        ("2020-00-10 00:00:00", False),
        ("2020-02-31 10:00:00.25", False),
        ("2023-02-29", False),
        ("2020-04-31", False),
    ],
)
def test_calendar_dates(text: str, ok: bool) -> None:
    assert calendar_date(text) is ok


@pytest.mark.parametrize(
    ("type_", "text", "as_text", "as_null"),
    [
        (rows.DATE, "2026-11-27", "2026-11-27", "2026-11-27"),
        (rows.DATE, "0001-00-00", "0001-00-00", None),
        (rows.DATETIME2, "2026-11-27 12:00:00.123", "2026-11-27T12:00:00.123", "2026-11-27T12:00:00.123"),
        (rows.DATETIME2, "0000-00-00 14:02:10", "0000-00-00 14:02:10", None),  # no instant: the text as is
        (rows.DATETIME2, "2020-02-31 10:00:00.25", "2020-02-31 10:00:00.25", None),
        (rows.DATETIME2, "0000-01-01 00:00:00", "0000-01-01T00:00:00", "0000-01-01T00:00:00"),
        (rows.TIMESTAMP2, "2038-01-19 03:14:07.999999", "2038-01-19T03:14:07.999999Z", "2038-01-19T03:14:07.999999Z"),
        (rows.TIMESTAMP2, "0000-00-00 00:00:00.00", "0000-00-00 00:00:00.00", None),
        (rows.TIME2, "-01:01:01.000001", "-01:01:01.000001", "-01:01:01.000001"),
        (rows.TIME2, "-838:59:59", "-838:59:59", "-838:59:59"),
        (rows.NEWDECIMAL, "-0.000000000000000000000000000001", "-0.000000000000000000000000000001", None),
    ],
)
def test_text_renderers(type_: int, text: str, as_text: str, as_null: str | None) -> None:
    for mode, want in (("text", as_text), ("null", as_null if type_ != rows.NEWDECIMAL else as_text)):
        conv = load_converter(_col(type_), mariadb=True, no_hex_prefix=False, invalid_dates=mode)
        assert conv is not None and conv(text) == want, mode


def test_mariadb_uuid_and_inet_are_their_text() -> None:
    """The server sends them as utf8mb4 text; the binlog, like information_schema, calls them binary."""
    for data_type in ("uuid", "inet4", "inet6"):
        col = _col(rows.STRING, data_type, charset="binary")
        assert load_converter(col, mariadb=True, no_hex_prefix=False) is None
    binary = load_converter(_col(rows.STRING, "binary", charset="binary"), mariadb=True, no_hex_prefix=False)
    assert binary is not None and binary(b"\x01\x00") == "0x0100"


def test_float_columns_are_read_as_their_exact_value() -> None:
    assert select_column(_col(rows.FLOAT)) == "`c` * 1e0"
    assert select_column(_col(rows.DOUBLE)) == "`c`"
