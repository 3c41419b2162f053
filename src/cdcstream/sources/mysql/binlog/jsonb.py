"""MySQL's binary JSON (the JSON column type's storage and binlog format) to JSON text, and partial JSON updates.

The format (MySQL ``sql-common/json_binary.h``): a type byte, then the value. Objects and arrays come in a small
(16-bit offsets) and a large (32-bit) form: element count, byte size, key entries (offset, length), value
entries (type, and an offset or, for literals and small integers, the value inlined), then keys and values.
Scalars: literals (null/true/false), [u]int16/32/64, double, utf8mb4 strings (length in 7-bit groups), and
*opaque* values of any MySQL type (DECIMAL, DATE/TIME/DATETIME/TIMESTAMP as packed integers, anything else as
bytes). Object keys are stored sorted (by length, then bytes), which is also the order the server prints.

The text is compact (no spaces), in the stored order: integers exact, doubles the shortest text that reads back
as the same double (``1.5``, ``1e100``, ``100.0``), DECIMAL its exact digits, dates and times as the quoted text
the server prints (``"2015-01-15 23:24:25.000000"``), other opaque values as MySQL prints them
(``"base64:type15:..."``). MariaDB has no binary JSON (its JSON is LONGTEXT): this module is for MySQL only,
tested on binlogs recorded by MySQL 8.0 and on hand-built values, as no MySQL server runs here.

:func:`apply_diffs` applies the JSON diffs of a PARTIAL_UPDATE_ROWS_EVENT (``binlog_row_value_options =
PARTIAL_JSON``: REPLACE, INSERT or REMOVE at a path) to the column's old value, as the server's replica does.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from typing import Any

import orjson

from cdcstream.errors import DecodeError

_SMALL_OBJECT, _LARGE_OBJECT, _SMALL_ARRAY, _LARGE_ARRAY, _LITERAL = 0, 1, 2, 3, 4
_INT16, _UINT16, _INT32, _UINT32, _INT64, _UINT64, _DOUBLE, _STRING, _OPAQUE = 5, 6, 7, 8, 9, 10, 11, 12, 15
_LITERALS = {0: "null", 1: "true", 2: "false"}
_DOUBLE_FMT = struct.Struct("<d")
# MySQL field types an opaque value may carry that print as something other than base64.
_NEWDECIMAL, _DATE, _TIME, _DATETIME, _TIMESTAMP, _TIME2, _DATETIME2, _TIMESTAMP2 = 246, 10, 11, 12, 7, 19, 18, 17
_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
MAX_DEPTH = 150  # the server allows 100 levels; a deeper value is corrupt (and would exhaust the stack)


class Raw(str):
    """JSON text of a number or literal, kept as the server would print it."""

    __slots__ = ()


Node = dict[str, "Node"] | list["Node"] | Raw | str


def to_text(data: bytes) -> str:
    """The JSON text of one binary JSON value (an empty value is JSON null, as the server reads it)."""
    if not data:
        return "null"
    return dumps(parse(data))


def parse(data: bytes) -> Node:
    """The value as a tree: dicts (stored order), lists, :class:`Raw` numbers/literals and str strings."""
    if not data:
        return Raw("null")
    try:
        return _value(data, data[0], 1, len(data), 0)
    except (IndexError, KeyError, struct.error, UnicodeDecodeError, ValueError) as exc:
        raise DecodeError(f"binary JSON value cannot be decoded: {exc!r}") from None


def _uint(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise ValueError("offset past the end of the JSON value")
    return int.from_bytes(data[pos : pos + size], "little")


def _value(data: bytes, t: int, pos: int, end: int, depth: int) -> Node:
    if t in (_SMALL_OBJECT, _LARGE_OBJECT, _SMALL_ARRAY, _LARGE_ARRAY):
        if depth > MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH} levels")
        return _container(data, t, pos, end, depth + 1)
    if t == _LITERAL:
        return Raw(_LITERALS[data[pos]])
    if t == _INT16:
        return Raw(str(int.from_bytes(data[pos : pos + 2], "little", signed=True)))
    if t == _UINT16:
        return Raw(str(_uint(data, pos, 2)))
    if t == _INT32:
        return Raw(str(int.from_bytes(data[pos : pos + 4], "little", signed=True)))
    if t == _UINT32:
        return Raw(str(_uint(data, pos, 4)))
    if t == _INT64:
        return Raw(str(int.from_bytes(data[pos : pos + 8], "little", signed=True)))
    if t == _UINT64:
        return Raw(str(_uint(data, pos, 8)))
    if t == _DOUBLE:
        return Raw(double_text(_DOUBLE_FMT.unpack_from(data, pos)[0]))
    if t == _STRING:
        n, pos = _varlen(data, pos)
        if pos + n > end:
            raise ValueError("string past the end of the JSON value")
        return data[pos : pos + n].decode("utf-8")
    if t == _OPAQUE:
        field_type = data[pos]
        n, pos = _varlen(data, pos + 1)
        if pos + n > end:
            raise ValueError("opaque value past the end of the JSON value")
        return _opaque(field_type, data[pos : pos + n])
    raise ValueError(f"unknown JSON value type {t}")


def _varlen(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for _ in range(5):
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
    raise ValueError("JSON length field too long")


def _container(data: bytes, t: int, pos: int, end: int, depth: int) -> Node:
    large = t in (_LARGE_OBJECT, _LARGE_ARRAY)
    w = 4 if large else 2
    count = _uint(data, pos, w)
    size = _uint(data, pos + w, w)
    if pos + size > end:
        raise ValueError("JSON container larger than its value")
    is_object = t in (_SMALL_OBJECT, _LARGE_OBJECT)
    entries = pos + 2 * w + (count * (w + 2) if is_object else 0)
    values: list[Node] = []
    for i in range(count):
        e = entries + i * (1 + w)
        vt = data[e]
        if vt == _LITERAL or vt in (_INT16, _UINT16) or (large and vt in (_INT32, _UINT32)):
            values.append(_value(data, vt, e + 1, e + 1 + w, depth))
        else:
            off = _uint(data, e + 1, w)
            if not 2 * w <= off < size:
                raise ValueError("JSON value offset outside its container")
            values.append(_value(data, vt, pos + off, pos + size, depth))
    if not is_object:
        return values
    out: dict[str, Node] = {}
    for i in range(count):
        k = pos + 2 * w + i * (w + 2)
        off, n = _uint(data, k, w), _uint(data, k + w, 2)
        if off + n > size:
            raise ValueError("JSON key past its container")
        out[data[pos + off : pos + off + n].decode("utf-8")] = values[i]
    return out


def double_text(v: float) -> str:
    """A double as MySQL's JSON prints it: the shortest round-trip digits, ``1e100`` rather than ``1e+100``,
    and ``.0`` on integral values written without an exponent."""
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError("JSON cannot hold NaN or infinity")
    text = repr(v)
    if "e" in text:
        mantissa, _, exp = text.partition("e")
        return f"{mantissa}e{int(exp)}"
    return text


def _packed_time(v: int) -> tuple[bool, int, int, int, int, int, int, int]:
    """MySQL's packed DATETIME/TIME integer: (negative, year, month, day, hour, minute, second, micro)."""
    neg = v < 0
    v = abs(v)
    frac = v % (1 << 24)
    v >>= 24
    ymd, hms = v >> 17, v % (1 << 17)
    ym = ymd >> 5
    return neg, ym // 13, ym % 13, ymd % 32, hms >> 12, (hms >> 6) % 64, hms % 64, frac


def _opaque(field_type: int, raw: bytes) -> Node:
    if field_type == _NEWDECIMAL and len(raw) >= 2:
        return Raw(decimal_text(raw[2:], raw[0], raw[1]))
    if field_type in (_DATE, _TIME, _DATETIME, _TIMESTAMP, _TIME2, _DATETIME2, _TIMESTAMP2) and len(raw) >= 8:
        packed = int.from_bytes(raw[:8], "little", signed=True)
        if field_type in (_TIME, _TIME2):  # hours (with the days) above the minute and second bits
            neg, packed = packed < 0, abs(packed)
            hms, us = packed >> 24, packed % (1 << 24)
            return f"{'-' if neg else ''}{hms >> 12:02d}:{(hms >> 6) % 64:02d}:{hms % 64:02d}.{us:06d}"
        _neg, y, mo, d, h, mi, s, us = _packed_time(packed)
        if field_type == _DATE:
            return f"{y:04d}-{mo:02d}-{d:02d}"
        return f"{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}.{us:06d}"
    return f"base64:type{field_type}:{base64.b64encode(raw).decode()}"


def decimal_reader(precision: int, scale: int) -> tuple[int, Callable[[int], str]]:
    """(size in bytes, text of the big-endian integer of those bytes) of MySQL's binary DECIMAL(precision, scale)
    (``decimal2bin``): the sign in the top bit (a negative value has every bit inverted), then base-10^9 digit
    groups of 4 bytes, with the integer part's leading and the fraction's trailing remainder digits packed in as
    few bytes as they need. Integer arithmetic only: this runs once per DECIMAL value of every row."""
    intg0, intg0x = divmod(precision - scale, 9)
    frac0, frac0x = divmod(scale, 9)
    lead, tail = _DIG2BYTES[intg0x], _DIG2BYTES[frac0x]
    size = lead + intg0 * 4 + frac0 * 4 + tail
    bits = 8 * size
    sign, mask = 1 << (bits - 1), (1 << bits) - 1
    tail_bits, tail_mask, tail_scale = 8 * tail, (1 << 8 * tail) - 1, 10**frac0x
    frac_shift = 32 * frac0 + tail_bits
    fields = [(32 * (intg0 - 1 - i) + frac_shift) for i in range(intg0)]
    frac_fields = [(32 * (frac0 - 1 - i) + tail_bits) for i in range(frac0)]
    lead_shift = 32 * intg0 + frac_shift

    def text(v: int) -> str:
        negative = not v & sign
        if negative:
            v ^= mask
        v ^= sign
        integer = v >> lead_shift if lead else 0
        for shift in fields:
            integer = integer * 1_000_000_000 + (v >> shift & 0xFFFFFFFF)
        if not scale:
            return f"-{integer}" if negative else str(integer)
        fraction = 0
        for shift in frac_fields:
            fraction = fraction * 1_000_000_000 + (v >> shift & 0xFFFFFFFF)
        if tail:
            fraction = fraction * tail_scale + (v & tail_mask)
        return f"{'-' if negative else ''}{integer}.{fraction:0{scale}d}"

    return size, text


def decimal_text(raw: bytes, precision: int, scale: int) -> str:
    """MySQL's binary DECIMAL (``decimal2bin``) as its exact digits."""
    size, text = decimal_reader(precision, scale)
    if len(raw) < size or size == 0:
        raise DecodeError(f"DECIMAL({precision},{scale}) needs {size} bytes, the value has {len(raw)}")
    return text(int.from_bytes(raw[:size], "big"))


def dumps(node: Node) -> str:
    """Compact JSON text of a tree from :func:`parse`."""
    out: list[str] = []
    _dump(node, out)
    return "".join(out)


def _dump(node: Node, out: list[str]) -> None:
    if isinstance(node, Raw):
        out.append(node)
    elif isinstance(node, str):
        out.append(orjson.dumps(node).decode())
    elif isinstance(node, dict):
        out.append("{")
        for i, (k, v) in enumerate(node.items()):
            if i:
                out.append(",")
            out.append(orjson.dumps(k).decode())
            out.append(":")
            _dump(v, out)
        out.append("}")
    else:
        out.append("[")
        for i, v in enumerate(node):
            if i:
                out.append(",")
            _dump(v, out)
        out.append("]")


# --- partial updates ----------------------------------------------------------------------------------------

REPLACE, INSERT, REMOVE = 0, 1, 2


def parse_diffs(data: bytes) -> list[tuple[int, list[str | int], Node | None]]:
    """The diffs of a partial JSON value (after its length): (operation, path legs, value or None)."""
    from cdcstream.sources.mysql.binlog.events import packed_int

    out: list[tuple[int, list[str | int], Node | None]] = []
    pos = 0
    try:
        while pos < len(data):
            op = data[pos]
            if op not in (REPLACE, INSERT, REMOVE):
                raise DecodeError(f"partial JSON update with unknown operation {op}")
            n, pos = packed_int(data, pos + 1)
            path = parse_path(data[pos : pos + n].decode("utf-8"))
            pos += n
            value: Node | None = None
            if op != REMOVE:
                n, pos = packed_int(data, pos)
                value = parse(data[pos : pos + n])
                pos += n
            out.append((op, path, value))
    except (IndexError, UnicodeDecodeError) as exc:
        raise DecodeError(f"partial JSON update cannot be decoded: {exc!r}") from None
    if pos != len(data):
        raise DecodeError("partial JSON update runs past its value")
    return out


def parse_path(text: str) -> list[str | int]:
    """A JSON path as the server writes it in a diff: ``$``, then ``.member``, ``."quoted member"`` or
    ``[index]`` legs (no wildcards)."""
    if not text.startswith("$"):
        raise DecodeError(f"partial JSON update path {text!r} does not start with $")
    legs: list[str | int] = []
    i, n = 1, len(text)
    while i < n:
        c = text[i]
        if c == ".":
            i += 1
            if i < n and text[i] == '"':
                j = i + 1
                while j < n and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                legs.append(orjson.loads(text[i : j + 1]))
                i = j + 1
            else:
                j = i
                while j < n and text[j] not in ".[":
                    j += 1
                legs.append(text[i:j])
                i = j
        elif c == "[":
            j = text.index("]", i)
            legs.append(int(text[i + 1 : j]))
            i = j + 1
        else:
            raise DecodeError(f"partial JSON update path {text!r} is not a simple path")
    if not legs:
        raise DecodeError("partial JSON update of the whole document")
    return legs


def _key_order(key: str) -> tuple[int, bytes]:
    raw = key.encode("utf-8")
    return len(raw), raw


def apply_diffs(doc: Node, diffs: list[tuple[int, list[str | int], Node | None]]) -> Node:
    """``doc`` with the diffs applied, in order (a diff the document does not fit raises DecodeError: the
    server's replica rejects it too)."""
    for op, path, value in diffs:
        parent: Any = doc
        for leg in path[:-1]:
            parent = _child(parent, leg)
        last = path[-1]
        if op == INSERT:
            if isinstance(parent, dict) and isinstance(last, str) and last not in parent:
                parent[last] = value
                items = sorted(parent.items(), key=lambda kv: _key_order(kv[0]))
                parent.clear()
                parent.update(items)
            elif isinstance(parent, list) and isinstance(last, int):
                parent.insert(min(last, len(parent)), value)
            else:
                raise DecodeError(f"partial JSON update: cannot insert at {path}")
            continue
        _child(parent, last)  # REPLACE and REMOVE need the member or cell to be there
        if op == REPLACE:
            parent[last] = value
        else:
            del parent[last]
    return doc


def _child(node: Any, leg: str | int) -> Any:
    if isinstance(node, dict) and isinstance(leg, str) and leg in node:
        return node[leg]
    if isinstance(node, list) and isinstance(leg, int) and 0 <= leg < len(node):
        return node[leg]
    raise DecodeError(f"partial JSON update: path leg {leg!r} is not in the document")
