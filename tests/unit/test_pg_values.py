"""Rendering of PostgreSQL text values (pgoutput proto v1) into JSON-ready values."""

from __future__ import annotations

import pytest

from cdcstream.sources.postgres import values as v


def conv(oid: int, text: str, no_hex_prefix: bool = False) -> object:
    return v.converter_for(oid, v.converters(no_hex_prefix))(text)


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (v.BOOL, "t", True),
        (v.BOOL, "f", False),
        (v.INT2, "-32768", -32768),
        (v.INT4, "2147483647", 2147483647),
        (v.INT8, "9223372036854775807", 9223372036854775807),  # exact, no float rounding
        (v.OID, "4294967295", 4294967295),
        (v.FLOAT8, "1.5", 1.5),
        (v.FLOAT8, "0.1", 0.1),
        (v.FLOAT4, "-1e+30", -1e30),
        (v.FLOAT8, "NaN", "NaN"),
        (v.FLOAT8, "Infinity", "Infinity"),
        (v.FLOAT4, "-Infinity", "-Infinity"),
        (v.NUMERIC, "12.50", "12.50"),
        (v.NUMERIC, "NaN", "NaN"),
        (v.NUMERIC, "123456789012345678901234567890.000000001", "123456789012345678901234567890.000000001"),
        (v.JSON, '{"a": [1, 2]}', '{"a": [1, 2]}'),
        (v.JSONB, '{"a": 1}', '{"a": 1}'),
        (v.BYTEA, "\\x0aff", "0x0aff"),
        (v.BYTEA, "\\x", "0x"),
        (v.TIMESTAMPTZ, "2026-11-27 12:00:00.123456+00", "2026-11-27T12:00:00.123456Z"),
        (v.TIMESTAMPTZ, "2026-11-27 12:00:00+00", "2026-11-27T12:00:00Z"),
        (v.TIMESTAMPTZ, "2026-11-27 12:00:00.12+00", "2026-11-27T12:00:00.12Z"),
        (v.TIMESTAMPTZ, "2026-11-27 13:30:00.5+01:30", "2026-11-27T12:00:00.5Z"),  # a non-UTC session
        (v.TIMESTAMPTZ, "12026-11-27 12:00:00+00", "12026-11-27T12:00:00Z"),
        (v.TIMESTAMPTZ, "infinity", "infinity"),
        (v.TIMESTAMPTZ, "-infinity", "-infinity"),
        (v.TIMESTAMPTZ, "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"),
        (v.TIMESTAMP, "2026-11-27 12:00:00.5", "2026-11-27T12:00:00.5"),
        (v.TIMESTAMP, "infinity", "infinity"),
        (v.TIMESTAMP, "0044-03-15 12:00:00 BC", "0044-03-15 12:00:00 BC"),
        (v.DATE, "2026-11-27", "2026-11-27"),
        (v.DATE, "0044-03-15 BC", "0044-03-15 BC"),
        (v.DATE, "infinity", "infinity"),
        (25, "text as-is", "text as-is"),
        (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (1186, "1 day 02:00:00", "1 day 02:00:00"),
        (1007, "{1,2,NULL}", "{1,2,NULL}"),
        (99999, "user type", "user type"),
    ],
)
def test_render(oid: int, text: str, expected: object) -> None:
    got = conv(oid, text)
    assert got == expected and type(got) is type(expected)


def test_bytea_without_prefix() -> None:
    assert conv(v.BYTEA, "\\xdeadbeef", no_hex_prefix=True) == "deadbeef"


def test_bytea_escape_format_fallback() -> None:
    assert conv(v.BYTEA, "ab\\\\\\000") == "0x" + b"ab\\\x00".hex()


def test_identity_for_unknown_oid_is_the_same_function() -> None:
    assert v.converter_for(25, v.converters()) is v.identity
