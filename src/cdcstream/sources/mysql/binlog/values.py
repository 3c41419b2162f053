"""Column values of row images: one decoder per column, compiled once per table version (sans-IO).

A decoder reads one non-NULL value at an offset of the row image and returns the JSON-ready value and the
offset after it. Decoders are chosen from the table map column (type code, metadata, signedness, character
set) by :func:`column_decoder`; every type code MySQL 8.4/9.x and MariaDB 10.x/11.x put in a table map is either
decoded here or refused with an error naming the column and the type.

Each value is rendered as the server returns it (docs/types.md, "MySQL / MariaDB types"), decoded from the binlog's
packed form directly (no ``datetime`` objects on the hot path):

* ``BINARY(n)``: the binlog drops trailing zero bytes (MySQL/MariaDB pack CHAR columns without their padding):
  they are put back, so the value has the n bytes ``SELECT`` returns.
* Dates and times (:mod:`.temporal`): ``TIME`` keeps its sign on the whole value; dates the calendar cannot
  hold are the server's own text with ``invalid_dates = "text"``, null with ``"null"``.
* MariaDB ``UUID``, ``INET4``, ``INET6``: the binlog describes them as ``BINARY(16)``/``BINARY(4)`` and carries
  the value's bytes in text order (MariaDB ``plugin/type_uuid``, ``plugin/type_inet``); which columns have these
  types is learnt from the catalogue (:mod:`cdcstream.sources.mysql.catalog`), and they are rendered as the
  server prints them.
* MariaDB ``COMPRESSED`` columns are decompressed (zlib) first.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cdcstream.errors import DecodeError
from cdcstream.sources.mysql import rows as types
from cdcstream.sources.mysql.binlog import jsonb, temporal
from cdcstream.sources.mysql.binlog.charsets import Charsets, TextDecoder
from cdcstream.sources.mysql.binlog.tablemap import BLOB_COMPRESSED, VARCHAR_COMPRESSED, VECTOR, ColumnDef

Decoder = Callable[[bytes, int], tuple[Any, int]]

_DIG2BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)

# MariaDB types the binlog describes as binary strings of fixed length (table map: BINARY(16) / BINARY(4)).
UUID, INET4, INET6 = "uuid", "inet4", "inet6"
FIXED_BINARY_LENGTH = {UUID: 16, INET6: 16, INET4: 4}


@dataclass(frozen=True, slots=True)
class ValueOptions:
    """How values are rendered: ``no_hex_prefix`` (binary as bare hex), ``invalid_dates`` ("text" | "null")."""

    charsets: Charsets
    no_hex_prefix: bool = False
    invalid_dates: str = "text"


# --- numbers -------------------------------------------------------------------------------------------------


def _fixed(fmt: str) -> Decoder:
    s = struct.Struct(fmt)
    unpack, size = s.unpack_from, s.size

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        return unpack(buf, pos)[0], pos + size

    dec.inline = s  # type: ignore[attr-defined]  # rowevents inlines the unpack into the generated image reader
    return dec


def _int24(unsigned: bool) -> Decoder:
    signed = not unsigned

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(buf[pos : pos + 3], "little", signed=signed), pos + 3

    return dec


def _float(buf: bytes, pos: int) -> tuple[Any, int]:
    return types.float32(struct.unpack_from("<f", buf, pos)[0]), pos + 4


def _decimal(precision: int, scale: int) -> Decoder:
    if not 1 <= precision <= 65 or scale > 30 or scale > precision:
        raise ValueError(f"DECIMAL({precision},{scale}) is not a valid DECIMAL")
    size, text = jsonb.decimal_reader(precision, scale)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        end = pos + size
        if end > len(buf):
            raise ValueError("DECIMAL value past the end of the row event")
        return text(int.from_bytes(buf[pos:end], "big")), end

    return dec


def _bit(meta: int) -> Decoder:
    size = (meta >> 8) + (1 if meta & 0xFF else 0)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        return int.from_bytes(buf[pos : pos + size], "big"), pos + size

    return dec


# --- strings -----------------------------------------------------------------------------------------------


def _length_prefixed(length_bytes: int) -> Callable[[bytes, int], tuple[bytes, int]]:
    def read(buf: bytes, pos: int) -> tuple[bytes, int]:
        n = int.from_bytes(buf[pos : pos + length_bytes], "little")
        start = pos + length_bytes
        end = start + n
        if end > len(buf):
            raise ValueError("a string value runs past the end of the row event")
        return buf[start:end], end

    return read


def _text(length_bytes: int, decode: TextDecoder) -> Decoder:
    if length_bytes == 1:  # VARCHAR/CHAR up to 255 bytes: the common case, read inline

        def dec1(buf: bytes, pos: int) -> tuple[Any, int]:
            end = pos + 1 + buf[pos]
            if end > len(buf):
                raise ValueError("a string value runs past the end of the row event")
            return decode(buf[pos + 1 : end]), end

        return dec1
    read = _length_prefixed(length_bytes)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        raw, pos = read(buf, pos)
        return decode(raw), pos

    return dec


def _hex(length_bytes: int, prefix: str, pad_to: int = 0) -> Decoder:
    read = _length_prefixed(length_bytes)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        raw, pos = read(buf, pos)
        if pad_to:
            raw = raw.ljust(pad_to, b"\0")
        return prefix + raw.hex(), pos

    return dec


def uuid_text(raw: bytes) -> str:
    """MariaDB UUID: 16 bytes in text order, printed ``01020304-0506-0708-090a-0b0c0d0e0f10``."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def inet4_text(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def inet6_text(raw: bytes) -> str:
    """MariaDB INET6 as the server prints it (``Inet6::to_string``): lower-case hex words without leading
    zeros, the longest run of zero words (the first of equal runs, even a single word) as ``::``, and an
    IPv4-compatible (``::1.2.3.4``) or IPv4-mapped (``::ffff:1.2.3.4``) address with its IPv4 part dotted."""
    words = [raw[i] << 8 | raw[i + 1] for i in range(0, 16, 2)]
    gap_pos, gap_len = -1, -1
    run_pos, run_len = -1, -1
    for i, w in enumerate(words):
        if w:
            if run_pos >= 0 and run_len > gap_len:
                gap_pos, gap_len = run_pos, run_len
            run_pos, run_len = -1, -1
        elif run_pos >= 0:
            run_len += 1
        else:
            run_pos, run_len = i, 1
    if run_pos >= 0 and run_len > gap_len:
        gap_pos, gap_len = run_pos, run_len
    out: list[str] = []
    i = 0
    while i < 8:
        if i == gap_pos:
            out.append("::" if i == 0 else ":")
            i += gap_len
            continue
        if i == 6 and gap_pos == 0 and (gap_len == 6 or (gap_len == 5 and words[5] == 0xFFFF)):
            out.append(inet4_text(raw[12:]))
            break
        out.append(f"{words[i]:x}")
        if i != 7:
            out.append(":")
        i += 1
    return "".join(out)


_FIXED_BINARY_TEXT = {UUID: uuid_text, INET4: inet4_text, INET6: inet6_text}


def _fixed_binary(kind: str, length_bytes: int) -> Decoder:
    read = _length_prefixed(length_bytes)
    size = FIXED_BINARY_LENGTH[kind]
    render = _FIXED_BINARY_TEXT[kind]

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        raw, pos = read(buf, pos)
        if len(raw) > size:
            raise ValueError(f"a {kind.upper()} value of {len(raw)} bytes")
        return render(raw.ljust(size, b"\0")), pos

    return dec


def _enum(size: int, members: list[str]) -> Decoder:
    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        i = int.from_bytes(buf[pos : pos + size], "little")
        if i == 0:
            return "", pos + size  # the invalid value '' (stored when a non-strict INSERT gets a non-member)
        if i > len(members):
            raise ValueError(f"ENUM index {i} of {len(members)} members")
        return members[i - 1], pos + size

    return dec


def _set(size: int, members: list[str]) -> Decoder:
    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        bits = int.from_bytes(buf[pos : pos + size], "little")
        if bits >> len(members):
            raise ValueError(f"SET bits {bits:#x} beyond its {len(members)} members")
        return ",".join(m for i, m in enumerate(members) if bits >> i & 1), pos + size

    return dec


def uncompress_column(raw: bytes, column: str) -> bytes:
    """A MariaDB ``COMPRESSED`` column's value (``Field_longstr::uncompress``): empty, or a header byte (method in
    the high nibble: 0 stored as is, 8 zlib; bit 3 raw deflate; bits 0-2 the bytes of the original length)."""
    if not raw:
        return b""
    method = raw[0] >> 4
    if method == 0:
        return raw[1:]
    if method != 8:
        raise DecodeError(f"column {column}: compression method {method} is not known (8 = zlib)")
    lenlen = raw[0] & 0x07
    length = int.from_bytes(raw[1 : 1 + lenlen], "big")
    inflate = zlib.decompressobj(-15 if raw[0] & 0x08 else 15)
    try:
        out = inflate.decompress(raw[1 + lenlen :], length + 1)
    except zlib.error as exc:
        raise DecodeError(f"column {column}: zlib cannot decompress the value: {exc}") from None
    if len(out) != length:
        raise DecodeError(f"column {column}: the value decompresses to {len(out)} bytes, its header says {length}")
    return out


def _compressed(length_bytes: int, column: str, decode: TextDecoder | None, prefix: str) -> Decoder:
    read = _length_prefixed(length_bytes)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        raw, pos = read(buf, pos)
        value = uncompress_column(raw, column)
        return (decode(value) if decode else prefix + value.hex()), pos

    return dec


def _json(length_bytes: int) -> Decoder:
    read = _length_prefixed(length_bytes)

    def dec(buf: bytes, pos: int) -> tuple[Any, int]:
        raw, pos = read(buf, pos)
        return jsonb.to_text(raw), pos

    return dec


# --- choosing a decoder ------------------------------------------------------------------------------------


def text_decoder(c: ColumnDef, charsets: Charsets) -> TextDecoder | None:
    """The column's text decoder, None for binary columns; DecodeError when the charset is not known."""
    if c.collation is None:
        raise DecodeError(
            f"column {c.name or c.index + 1} has no character set in the table map: the server's "
            "binlog_row_metadata is not FULL"
        )
    name = charsets.name(c.collation)
    if name is None:
        raise DecodeError(f"column {c.name or c.index + 1}: collation id {c.collation} is not known to the server")
    c.character_set_name = name
    return charsets.decoder(name)


def column_decoder(c: ColumnDef, opts: ValueOptions, fixed_binary: str | None = None) -> Decoder:
    """The decoder of one column; ``fixed_binary`` names the MariaDB type (uuid/inet4/inet6) of a column the
    table map shows as BINARY(n). Raises DecodeError for a type that cannot be decoded."""
    try:
        return _column_decoder(c, opts, fixed_binary)
    except ValueError as exc:
        raise DecodeError(f"column {c.name or c.index + 1}: {exc}") from None


def _column_decoder(c: ColumnDef, opts: ValueOptions, fixed_binary: str | None) -> Decoder:
    t = c.type
    simple = _NUMERIC.get(t) or _TEMPORAL.get(t)
    if simple is not None:
        return simple(c, opts.invalid_dates == "null")
    prefix = "" if opts.no_hex_prefix else "0x"
    if t in (types.ENUM, types.SET):
        return _enum_or_set(c, opts, prefix)
    if t == types.JSON:
        return _json(c.meta)
    if t in (types.GEOMETRY, VECTOR):
        if not 1 <= c.meta <= 4:
            raise ValueError(f"length of {c.meta} bytes")
        return _hex(c.meta, prefix)
    if t in (types.STRING, types.VARCHAR, types.VAR_STRING, VARCHAR_COMPRESSED):
        return _string(c, opts, prefix, fixed_binary)
    if t in (types.BLOB, types.TINY_BLOB, types.MEDIUM_BLOB, types.LONG_BLOB, BLOB_COMPRESSED):
        return _blob(c, opts, prefix)
    name = types.TYPE_NAMES.get(t)
    raise DecodeError(
        f"column {c.name or c.index + 1} has {f'{name} ({t})' if name else f'type code {t}'}, which cdcstream "
        "cannot decode; exclude the table "
        "from the mapping, or convert the column"
    )


# The decoder of a numeric or temporal column from the column and whether invalid dates render as null.
_Simple = Callable[[ColumnDef, bool], Decoder]

_NUMERIC: dict[int, _Simple] = {
    types.TINY: lambda c, _n: _fixed("<B" if c.unsigned else "<b"),
    types.SHORT: lambda c, _n: _fixed("<H" if c.unsigned else "<h"),
    types.INT24: lambda c, _n: _int24(c.unsigned),
    types.LONG: lambda c, _n: _fixed("<I" if c.unsigned else "<i"),
    types.LONGLONG: lambda c, _n: _fixed("<Q" if c.unsigned else "<q"),
    types.FLOAT: lambda c, _n: _float,
    types.DOUBLE: lambda c, _n: _fixed("<d"),
    types.NEWDECIMAL: lambda c, _n: _decimal(c.precision, c.decimals),
    types.BIT: lambda c, _n: _bit(c.meta),
}

_TEMPORAL: dict[int, _Simple] = {
    types.YEAR: lambda c, _n: temporal.year_value,
    types.DATE: lambda c, null_invalid: temporal.date(null_invalid),
    types.NEWDATE: lambda c, null_invalid: temporal.date(null_invalid),
    types.DATETIME2: lambda c, null_invalid: temporal.datetime2(c.meta, null_invalid),
    types.TIMESTAMP2: lambda c, null_invalid: temporal.timestamp2(c.meta, null_invalid),
    types.TIME2: lambda c, _n: temporal.time2(c.meta),
    types.DATETIME: lambda c, null_invalid: temporal.datetime_v1(null_invalid),
    types.TIMESTAMP: lambda c, null_invalid: temporal.timestamp2(0, null_invalid, v1=True),
    types.TIME: lambda c, _n: temporal.time_v1,
}


def _enum_or_set(c: ColumnDef, opts: ValueOptions, prefix: str) -> Decoder:
    t, meta = c.type, c.meta
    members_raw = c.enum_values if t == types.ENUM else c.set_values
    if members_raw is None:
        raise DecodeError(
            f"column {c.name or c.index + 1}: the table map has no {types.TYPE_NAMES[t].upper()} members (the "
            "server's binlog_row_metadata is not FULL)"
        )
    member_text = text_decoder(c, opts.charsets) or (lambda b: prefix + b.hex())
    members = [member_text(m) for m in members_raw]
    size = meta & 0xFF
    if (t == types.ENUM and size not in (1, 2)) or (t == types.SET and size not in (1, 2, 3, 4, 8)):
        raise ValueError(f"{types.TYPE_NAMES[t].upper()} of {size} bytes")
    return _enum(size, members) if t == types.ENUM else _set(size, members)


def _string(c: ColumnDef, opts: ValueOptions, prefix: str, fixed_binary: str | None) -> Decoder:
    t = c.type
    length_bytes = 1 if c.max_length < 256 else 2
    decode = text_decoder(c, opts.charsets)
    if t == VARCHAR_COMPRESSED:
        return _compressed(length_bytes, c.name, decode, prefix)
    if decode is not None:
        return _text(length_bytes, decode)
    if fixed_binary is not None:
        return _fixed_binary(fixed_binary, length_bytes)
    # BINARY(n) values lose their trailing zero bytes in the binlog; SELECT returns all n.
    return _hex(length_bytes, prefix, c.max_length if t == types.STRING else 0)


def _blob(c: ColumnDef, opts: ValueOptions, prefix: str) -> Decoder:
    meta = c.meta
    if not 1 <= meta <= 4:
        raise ValueError(f"BLOB length of {meta} bytes")
    decode = text_decoder(c, opts.charsets)
    if c.type == BLOB_COMPRESSED:
        return _compressed(meta, c.name, decode, prefix)
    return _text(meta, decode) if decode is not None else _hex(meta, prefix)
