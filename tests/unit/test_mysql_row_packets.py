"""MySQL load row packets parsed outside PyMySQL (``parse_row_packets``): what PyMySQL's own row parsing reads
from the same packets, for every length-coded string form (1, 3, 4 and 9 byte lengths) and NULL."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from pymysql import converters
from pymysql.connections import MySQLResult
from pymysql.protocol import MysqlPacket

from cdcstream.errors import SourceError
from cdcstream.sources.mysql.snapshot import Field, parse_row_packets


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


def _pymysql(packet: bytes) -> list[Any]:
    result: Any = MySQLResult.__new__(MySQLResult)
    result.converters = FIELDS
    result.unbuffered_active = False  # its __del__ reads it
    return list(result._read_row_from_packet(MysqlPacket(packet, "utf8")))


@pytest.mark.parametrize("size", [0, 250, 251, 65535, 65536, (1 << 24) + 3])
def test_lengths_and_nulls_parse_as_pymysql_does(size: int) -> None:
    rows = [
        [b"-12", "é".encode() * (size // 2), b"\x00\xfe" * (size // 2), b"1.50", b"2.5e3", b"2026-11-27 10:00:00.5"],
        [None, None, None, None, None, None],
        [b"7", b"", b"", b"0", b"0", b"0000-00-00 00:00:00"],
    ]
    packets = [b"".join(_lcs(v) for v in row) for row in rows]
    got = parse_row_packets(b"".join(packets), len(packets), FIELDS)
    assert got == [_pymysql(p) for p in packets]
    assert [[type(v) for v in r] for r in got] == [[type(v) for v in _pymysql(p)] for p in packets]


def test_a_short_row_is_an_error() -> None:
    with pytest.raises(SourceError, match="bytes left"):
        parse_row_packets(_lcs(b"1") * 3, 1, FIELDS[:2])
