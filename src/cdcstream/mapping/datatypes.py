"""Source type names -> DMS type names (``control.table-def``), LOB classification, ``change-data-type`` casts."""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from cdcstream.mapping.rules import DataType

# As real DMS output shows them (INT32 for a PostgreSQL integer, STRING for text and json).
_DMS_NAMES = {
    "bool": "BOOLEAN",
    "boolean": "BOOLEAN",
    "int2": "INT16",
    "smallint": "INT16",
    "tinyint": "INT8",
    "int4": "INT32",
    "integer": "INT32",
    "int": "INT32",
    "mediumint": "INT32",
    "int8": "INT64",
    "bigint": "INT64",
    "oid": "UINT32",
    "float4": "REAL4",
    "float": "REAL4",
    "real": "REAL4",
    "float8": "REAL8",
    "double": "REAL8",
    "numeric": "NUMERIC",
    "decimal": "NUMERIC",
    "money": "NUMERIC",
    "date": "DATE",
    "time": "TIME",
    "timetz": "TIME",
    "timestamp": "DATETIME",
    "timestamptz": "DATETIME",
    "datetime": "DATETIME",
    "bytea": "BLOB",
    "blob": "BLOB",
    "tinyblob": "BLOB",
    "mediumblob": "BLOB",
    "longblob": "BLOB",
    "binary": "BYTES",
    "varbinary": "BYTES",
}
_DATA_TYPE_NAMES = {
    "int1": "INT8",
    "int2": "INT16",
    "int4": "INT32",
    "int8": "INT64",
    "uint1": "UINT8",
    "uint2": "UINT16",
    "uint4": "UINT32",
    "uint8": "UINT64",
}

# DMS treats these as LOBs: never in a non-lob before image (DMS's BeforeImageSettings, column-filter non-lob).
LOB_TYPES = frozenset(
    {
        "text",
        "bytea",
        "json",
        "jsonb",
        "xml",
        "tinytext",
        "mediumtext",
        "longtext",
        "blob",
        "tinyblob",
        "mediumblob",
        "longblob",
    }
)


def dms_type_name(source_type: str) -> str:
    """The DMS type name a source column is reported as in ``control.table-def``."""
    return _DMS_NAMES.get(source_type.lower(), "STRING")


def data_type_name(dt: DataType) -> str:
    """The DMS type name of a ``data-type`` given in a rule."""
    return _DATA_TYPE_NAMES.get(dt.type, dt.type.upper())


def is_lob(source_type: str) -> bool:
    return source_type.lower() in LOB_TYPES


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"{v!r} is not an integer")
        return int(v)
    d = Decimal(str(v).strip())
    return int(d.to_integral_value(rounding=ROUND_HALF_EVEN)) if d == d.to_integral_value() else int(d)


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return v != 0
    s = str(v).strip().lower()
    if s in ("1", "t", "true", "y", "yes", "on"):
        return True
    if s in ("0", "f", "false", "n", "no", "off"):
        return False
    raise ValueError(f"{v!r} is not a boolean")


def _to_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return str(v)


def _numeric(dt: DataType) -> Callable[[Any], Any]:
    quantum = Decimal(1).scaleb(-dt.scale) if dt.scale is not None else None

    def conv(v: Any) -> str:
        d = Decimal(str(v).strip()) if not isinstance(v, bool) else Decimal(int(v))
        if quantum is not None:
            d = d.quantize(quantum, rounding=ROUND_HALF_EVEN)
        return str(d)  # exact decimal string, as cdcstream renders numerics

    return conv


def converter(dt: DataType) -> Callable[[Any], Any]:
    """A function turning a JSON-ready value into ``dt``'s JSON form (None stays None; ValueError on junk).

    ``length`` is descriptive only: cdcstream never truncates a value silently.
    """
    t = dt.type
    inner: Callable[[Any], Any]
    if t.startswith(("int", "uint")):
        inner = _to_int
    elif t in ("real4", "real8"):
        inner = lambda v: float(v) if not isinstance(v, str) else float(v.strip())  # noqa: E731
    elif t == "numeric":
        inner = _numeric(dt)
    elif t == "boolean":
        inner = _to_bool
    else:  # string, wstring, clob, nclob, date, time, datetime, bytes, blob: already text from the source
        inner = _to_text

    def conv(v: Any) -> Any:
        if v is None:
            return None
        try:
            return inner(v)
        except (ValueError, ArithmeticError, InvalidOperation) as exc:
            raise ValueError(f"cannot convert {v!r} to {t}: {exc}") from None

    return conv
