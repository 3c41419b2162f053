"""Rendering of pgoutput proto v1 text values into JSON-ready Python values.

Every value arrives as PostgreSQL's text output (the walsender's session GUCs decide the format; the
replication connection sets ``TimeZone=UTC``, ``DateStyle=ISO``, ``bytea_output=hex``,
``extra_float_digits=1``). A converter is chosen once per column by type OID (:func:`converter_for`) and
then called per value, so the per-row cost is one plain function call. Converters reshape strings instead
of parsing into ``datetime``.

Type table (PG -> JSON):

========================  =====================================================================
bool                      true / false
int2, int4, int8, oid     integer (exact)
float4, float8            number; ``NaN``, ``Infinity``, ``-Infinity`` stay strings (JSON has none)
numeric                   string, exactly as PostgreSQL printed it (``"12.50"``, ``"NaN"``)
json, jsonb               the JSON text as a string (as DMS does)
bytea                     ``"0x"`` + lowercase hex (no prefix with ``no_hex_prefix``)
timestamptz               ``"2026-11-27T12:00:00.123456Z"`` (UTC, PG's fractional digits)
timestamp                 ``"2026-11-27T12:00:00.123456"``
date                      ``"2026-11-27"``
infinity / BC values      PostgreSQL's text unchanged
anything else             PostgreSQL's text unchanged (text, varchar, uuid, interval, arrays, enums, ...)
========================  =====================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Converter = Callable[[str], Any]

# Type OIDs from pg_type.dat; stable across PostgreSQL versions.
BOOL, BYTEA, INT8, INT2, INT4, OID = 16, 17, 20, 21, 23, 26
JSON, FLOAT4, FLOAT8, NUMERIC = 114, 700, 701, 1700
DATE, TIMESTAMP, TIMESTAMPTZ, JSONB = 1082, 1114, 1184, 3802

_NON_FINITE_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})


def identity(value: str) -> str:
    """Text, varchar, numeric, json, uuid, ...: PostgreSQL's text as-is."""
    return value


def to_bool(value: str) -> bool:
    return value == "t"


def to_float(value: str) -> float | str:
    if value in _NON_FINITE_FLOATS:
        return value
    return float(value)


def timestamptz(value: str) -> str:
    """``2026-11-27 12:00:00.12+00`` -> ``2026-11-27T12:00:00.12Z``.

    The fast path is a reshape of the UTC text the walsender prints with ``TimeZone=UTC``; any other offset (a
    server that ignored the GUC) goes through ``datetime``. Infinity and BC values keep PostgreSQL's text.
    """
    if value.endswith("+00"):
        sep = value.find(" ")  # not a fixed index: years past 9999 have five digits
        return value[:sep] + "T" + value[sep + 1 : -3] + "Z"
    if value[-3:] == " BC" or value[-1] == "y":  # 'infinity' / '-infinity'
        return value
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return value
    frac = ""
    dot = value.find(".", 19)
    if dot != -1:
        end = dot + 1
        while end < len(value) and value[end].isdigit():
            end += 1
        frac = value[dot:end]
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"


def timestamp(value: str) -> str:
    """``2026-11-27 12:00:00.5`` -> ``2026-11-27T12:00:00.5``; infinity and BC values unchanged."""
    if value[-1] == "y" or value[-3:] == " BC":
        return value
    sep = value.find(" ")
    return value[:sep] + "T" + value[sep + 1 :]


def make_bytea(no_hex_prefix: bool) -> Converter:
    """bytea in hex output (``\\x0a0b``) -> ``0x0a0b`` (or ``0a0b``)."""
    prefix = "" if no_hex_prefix else "0x"

    def bytea(value: str) -> str:
        if value.startswith("\\x"):
            return prefix + value[2:]
        return prefix + _unescape_bytea(value).hex()

    return bytea


def _unescape_bytea(value: str) -> bytes:
    """Decode the legacy ``escape`` bytea output (only if a server overrides ``bytea_output``)."""
    out = bytearray()
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            if value[i + 1] == "\\":
                out.append(0x5C)
                i += 2
            else:
                out.append(int(value[i + 1 : i + 4], 8))
                i += 4
        else:
            out.extend(ch.encode("latin-1"))
            i += 1
    return bytes(out)


def converters(no_hex_prefix: bool = False) -> dict[int, Converter]:
    """The OID -> converter table; types not in it render as their text."""
    return {
        BOOL: to_bool,
        INT2: int,
        INT4: int,
        INT8: int,
        OID: int,
        FLOAT4: to_float,
        FLOAT8: to_float,
        BYTEA: make_bytea(no_hex_prefix),
        TIMESTAMPTZ: timestamptz,
        TIMESTAMP: timestamp,
    }


def converter_for(type_oid: int, table: dict[int, Converter]) -> Converter:
    """The converter of one column (chosen once per Relation message)."""
    return table.get(type_oid, identity)


# Display names for TableInfo when the server did not describe the type (built-ins are never described by a
# Type message; pgoutput only sends those for user-defined types).
TYPE_NAMES: dict[int, str] = {
    BOOL: "bool",
    BYTEA: "bytea",
    18: "char",
    19: "name",
    INT8: "int8",
    INT2: "int2",
    INT4: "int4",
    25: "text",
    OID: "oid",
    JSON: "json",
    142: "xml",
    FLOAT4: "float4",
    FLOAT8: "float8",
    790: "money",
    829: "macaddr",
    869: "inet",
    650: "cidr",
    1042: "bpchar",
    1043: "varchar",
    DATE: "date",
    1083: "time",
    TIMESTAMP: "timestamp",
    TIMESTAMPTZ: "timestamptz",
    1186: "interval",
    1266: "timetz",
    1560: "bit",
    1562: "varbit",
    NUMERIC: "numeric",
    2950: "uuid",
    JSONB: "jsonb",
    3614: "tsvector",
    1000: "_bool",
    1005: "_int2",
    1007: "_int4",
    1016: "_int8",
    1009: "_text",
    1015: "_varchar",
    1021: "_float4",
    1022: "_float8",
    1231: "_numeric",
    2951: "_uuid",
    3807: "_jsonb",
}
