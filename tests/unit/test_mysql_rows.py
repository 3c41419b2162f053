"""Row value rendering of the MySQL source (pure functions; the server-side type matrix is in integration)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from cdcstream.sources.mysql import rows


@dataclass
class Col:
    """The column attributes rows.py reads (the full load's catalogue columns have the same)."""

    type: int
    name: str = "c"
    unsigned: bool = False
    character_set_name: str | None = None
    fsp: int = 0
    set_values: list[str] | None = None
    enum_values: list[str] | None = None
    precision: int = 10
    decimals: int = 2


def conv(col: Col, value: Any, no_hex_prefix: bool = False) -> Any:
    c = rows.converter_for(col, no_hex_prefix)
    return value if c is None else c(value)


@pytest.mark.parametrize(
    ("col", "value", "expected"),
    [
        (Col(rows.LONGLONG, unsigned=True), 18446744073709551615, 18446744073709551615),
        (Col(rows.TINY), -128, -128),
        (Col(rows.NEWDECIMAL), Decimal("-12.50"), "-12.50"),
        (Col(rows.NEWDECIMAL), Decimal("1E-7"), "0.0000001"),
        (Col(rows.FLOAT), 1.100000023841858, 1.1),
        (Col(rows.FLOAT), 3.4028234663852886e38, 3.4028235e38),
        (Col(rows.FLOAT), 1.401298464324817e-45, 1e-45),  # subnormal: fewer digits than a normal float
        (Col(rows.FLOAT), -1.1754942106924411e-38, -1.1754942e-38),
        (Col(rows.FLOAT), 16777216.0, 16777216.0),
        (Col(rows.DOUBLE), 0.1, 0.1),
        (Col(rows.DATE), date(2026, 11, 27), "2026-11-27"),
        (Col(rows.DATE), date(999, 1, 2), "0999-01-02"),
        (Col(rows.DATETIME2, fsp=3), datetime(2026, 11, 27, 12, 0, 0, 123000), "2026-11-27T12:00:00.123"),
        (Col(rows.DATETIME2, fsp=0), datetime(2026, 11, 27, 12, 0, 1), "2026-11-27T12:00:01"),
        (Col(rows.DATETIME2, fsp=6), datetime(2026, 11, 27, 12, 0, 0, 5), "2026-11-27T12:00:00.000005"),
        (Col(rows.TIMESTAMP2, fsp=2), datetime(2026, 11, 27, 12, 0, 0, 500000), "2026-11-27T12:00:00.50Z"),
        (Col(rows.TIMESTAMP2), datetime(1970, 1, 1), None),  # the zero TIMESTAMP
        (Col(rows.TIME2, fsp=2), -timedelta(hours=838, minutes=59, seconds=59), "-838:59:59.00"),
        (Col(rows.TIME2), timedelta(hours=1, minutes=2, seconds=3), "01:02:03"),
        (Col(rows.TIME2, fsp=1), timedelta(days=-1, hours=23, microseconds=500000), "-00:59:59.5"),
        (Col(rows.YEAR), 2026, 2026),
        (Col(rows.YEAR), 1900, 0),
        (Col(rows.VARCHAR, character_set_name="utf8mb4"), "héllo", "héllo"),
        (Col(rows.VARCHAR, character_set_name="utf16"), "ök".encode("utf-16-be").decode("utf-16-le"), "ök"),
        (Col(rows.STRING, character_set_name="ucs2"), "ök".encode("utf-16-be"), "ök"),
        (Col(rows.VARCHAR, character_set_name="binary"), b"\x0a\xff", "0x0aff"),
        (Col(rows.BLOB, character_set_name="binary"), b"", "0x"),
        (Col(rows.VARCHAR, character_set_name="swe7"), b"\x01", "0x01"),  # undecodable: hex, not lost
        (Col(rows.BIT), "1000000001", 513),
        (Col(rows.BIT), "1" * 64, 2**64 - 1),
        (Col(rows.ENUM), "b", "b"),
        (Col(rows.SET, set_values=["x", "y", "z"]), {"z", "x"}, "x,z"),
        (Col(rows.JSON), '{"a": 1}', '{"a": 1}'),
        (Col(rows.JSON), {b"a": [1, Decimal("2.5")]}, '{"a":[1,"2.5"]}'),
        (Col(rows.GEOMETRY), b"\x00\x00\x00\x00\x01", "0x0000000001"),
    ],
)
def test_converters(col: Col, value: Any, expected: Any) -> None:
    assert conv(col, value) == expected


def test_no_hex_prefix() -> None:
    assert conv(Col(rows.VARCHAR, character_set_name="binary"), b"\x0a", no_hex_prefix=True) == "0a"
    assert conv(Col(rows.GEOMETRY), b"\x01", no_hex_prefix=True) == "01"


def test_integers_and_text_cost_nothing() -> None:
    for t in (rows.TINY, rows.SHORT, rows.INT24, rows.LONG, rows.LONGLONG, rows.DOUBLE, rows.ENUM):
        assert rows.converter_for(Col(t)) is None


def test_type_names() -> None:
    assert rows.type_name(Col(rows.LONGLONG, unsigned=True)) == "bigint unsigned"
    assert rows.type_name(Col(rows.VARCHAR, character_set_name="binary")) == "varbinary"
    assert rows.type_name(Col(rows.DATETIME2, fsp=3)) == "datetime(3)"
    assert rows.type_name(Col(rows.NEWDECIMAL, precision=12, decimals=2)) == "decimal(12,2)"
