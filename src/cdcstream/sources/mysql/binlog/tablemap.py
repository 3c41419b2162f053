"""TABLE_MAP_EVENT: which table the following row events change and how its columns are laid out (sans-IO).

The event body (MySQL ``rows_event.h``, MariaDB ``log_event.h``): schema and table name, the column count, one
type code per column, a block of per-type column metadata (lengths, precision, fractional digits, the real
type of CHAR/ENUM/SET), the nullability bitmap, and then the *optional metadata* that ``binlog_row_metadata =
FULL`` adds as type-length-value fields: signedness of numeric columns, character sets (a default plus
exceptions, or one per column), column names, ENUM and SET members, geometry types, the primary key, column
visibility (MySQL 8.0.23+) and vector dimensions (MySQL 9). Unknown optional fields are skipped: they describe,
but never change, how a row is laid out.

Two quirks that decide which columns the character-set lists cover: on MariaDB, GEOMETRY counts as a character
column (its charset, binary, is listed); on MySQL 9, VECTOR does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cdcstream.errors import DecodeError
from cdcstream.sources.mysql import rows as types
from cdcstream.sources.mysql.binlog.events import HEADER_LEN, packed_int

BLOB_COMPRESSED, VARCHAR_COMPRESSED, VECTOR = types.BLOB_COMPRESSED, types.VARCHAR_COMPRESSED, types.VECTOR

# Optional metadata field types (binlog_row_metadata = FULL).
SIGNEDNESS = 1
DEFAULT_CHARSET = 2
COLUMN_CHARSET = 3
COLUMN_NAME = 4
SET_STR_VALUE = 5
ENUM_STR_VALUE = 6
GEOMETRY_TYPE = 7
SIMPLE_PRIMARY_KEY = 8
PRIMARY_KEY_WITH_PREFIX = 9
ENUM_AND_SET_DEFAULT_CHARSET = 10
ENUM_AND_SET_COLUMN_CHARSET = 11
COLUMN_VISIBILITY = 12
VECTOR_DIMENSIONALITY = 13

_ONE_BYTE_META = frozenset(
    {types.FLOAT, types.DOUBLE, types.BLOB, types.GEOMETRY, types.JSON, types.TINY_BLOB, types.MEDIUM_BLOB}
    | {types.LONG_BLOB, types.TIMESTAMP2, types.DATETIME2, types.TIME2, BLOB_COMPRESSED, VECTOR}
)
_TWO_BYTE_META = frozenset(
    {types.VARCHAR, types.VAR_STRING, types.BIT, types.NEWDECIMAL, types.STRING, types.ENUM, types.SET}
    | {VARCHAR_COMPRESSED}
)
NUMERIC = frozenset({types.TINY, types.SHORT, types.INT24, types.LONG, types.LONGLONG} | {types.NEWDECIMAL})
NUMERIC |= {types.FLOAT, types.DOUBLE}
_CHARACTER = frozenset({types.STRING, types.VAR_STRING, types.VARCHAR, types.BLOB, BLOB_COMPRESSED, VARCHAR_COMPRESSED})


@dataclass(slots=True)
class ColumnDef:
    """One column as the table map describes it.

    ``type`` is the real type (CHAR columns holding an ENUM or SET are reported as ENUM/SET); ``meta`` the raw
    column metadata; ``collation`` the collation id of character, ENUM and SET columns (None when the map has no
    charset list). The attribute names ``name``, ``type``, ``unsigned``, ``character_set_name``, ``fsp``,
    ``precision`` and ``decimals`` are what :func:`cdcstream.sources.mysql.rows.table_info` reads.
    """

    index: int
    type: int
    meta: int
    nullable: bool
    name: str = ""
    unsigned: bool = False
    collation: int | None = None
    character_set_name: str | None = None
    enum_values: list[bytes] | None = None
    set_values: list[bytes] | None = None
    geometry_type: int | None = None
    visible: bool = True

    @property
    def fsp(self) -> int:
        return self.meta if self.type in (types.TIMESTAMP2, types.DATETIME2, types.TIME2) else 0

    @property
    def precision(self) -> int:
        return self.meta >> 8 if self.type == types.NEWDECIMAL else 0

    @property
    def decimals(self) -> int:
        return self.meta & 0xFF if self.type == types.NEWDECIMAL else 0

    @property
    def max_length(self) -> int:
        """Bytes of CHAR/VARCHAR/BINARY/VARBINARY (what decides a 1- or 2-byte length prefix)."""
        if self.type in (types.STRING, types.ENUM, types.SET):
            return self.meta & 0xFF | (((self.meta >> 8) & 0x30) ^ 0x30) << 4
        return self.meta


@dataclass(slots=True)
class TableMap:
    """A TABLE_MAP_EVENT: the table id the row events after it use, the names, the columns and the key."""

    table_id: int
    schema: str
    table: str
    columns: list[ColumnDef]
    primary_key: tuple[int, ...] = ()
    has_names: bool = False
    has_signedness: bool = False
    flags: int = 0
    unknown_fields: list[int] = field(default_factory=list)


def table_id(raw: bytes, post_header_len: int) -> int:
    """The table id at the start of a table map or row event's post-header (4 bytes in old formats, else 6)."""
    n = 4 if post_header_len == 6 else 6
    return int.from_bytes(raw[HEADER_LEN : HEADER_LEN + n], "little")


def _bits(data: bytes, count: int) -> list[bool]:
    """``count`` flags of a bitmap stored most significant bit first (the optional metadata's order)."""
    if len(data) * 8 < count:
        raise DecodeError(f"table map bitmap of {len(data)} bytes for {count} columns")
    return [bool(data[i >> 3] & (0x80 >> (i & 7))) for i in range(count)]


def _strings(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        n, pos = packed_int(data, pos)
        out.append(bytes(data[pos : pos + n]))
        pos += n
    if pos != len(data):
        raise DecodeError("table map: a name list runs past its field")
    return out


def _ints(data: bytes) -> list[int]:
    out, pos = [], 0
    while pos < len(data):
        n, pos = packed_int(data, pos)
        out.append(n)
    return out


def _charsets(data: bytes, default: bool, count: int) -> list[int]:
    """The collation of each of ``count`` columns: a default plus (column, collation) exceptions, or a list."""
    values = _ints(data)
    if not default:
        if len(values) != count:
            raise DecodeError(f"table map: {len(values)} column charsets for {count} character columns")
        return values
    if not values or len(values) % 2 != 1:
        raise DecodeError("table map: malformed default charset field")
    out = [values[0]] * count
    for i in range(1, len(values), 2):
        if values[i] >= count:
            raise DecodeError(f"table map: charset exception for column {values[i]} of {count}")
        out[values[i]] = values[i + 1]
    return out


def _value_lists(data: bytes) -> list[list[bytes]]:
    out, pos = [], 0
    while pos < len(data):
        n, pos = packed_int(data, pos)
        members = []
        for _ in range(n):
            length, pos = packed_int(data, pos)
            members.append(bytes(data[pos : pos + length]))
            pos += length
        out.append(members)
    if pos != len(data):
        raise DecodeError("table map: an ENUM/SET member list runs past its field")
    return out


def decode(raw: bytes, end: int, post_header_len: int, *, mariadb: bool) -> TableMap:
    """Decode a TABLE_MAP_EVENT (``end``: where its body ends, before the checksum)."""
    try:
        return _decode(raw, end, post_header_len, mariadb)
    except (IndexError, ValueError) as exc:
        raise DecodeError(f"TABLE_MAP_EVENT cannot be decoded: {exc!r}") from None


def _decode(raw: bytes, end: int, post_header_len: int, mariadb: bool) -> TableMap:
    tid = table_id(raw, post_header_len)
    flags = int.from_bytes(raw[HEADER_LEN + post_header_len - 2 : HEADER_LEN + post_header_len], "little")
    pos = HEADER_LEN + post_header_len
    n = raw[pos]
    schema = raw[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += n + 2
    n = raw[pos]
    table = raw[pos + 1 : pos + 1 + n].decode("utf-8")
    pos += n + 2
    count, pos = packed_int(raw, pos)
    codes = raw[pos : pos + count]
    if len(codes) != count:
        raise DecodeError("TABLE_MAP_EVENT: the column types run past the end of the event")
    pos += count
    meta_len, pos = packed_int(raw, pos)
    columns, meta_end = _columns(raw, pos, codes), pos + meta_len
    pos += sum(_meta_size(code) for code in codes)
    if pos != meta_end:
        raise DecodeError(
            f"TABLE_MAP_EVENT of {schema}.{table}: column metadata is {meta_len} bytes, the types need "
            f"{pos - (meta_end - meta_len)}"
        )
    nulls = raw[pos : pos + (count + 7) // 8]
    pos += (count + 7) // 8
    for c in columns:
        c.nullable = bool(nulls[c.index >> 3] & (1 << (c.index & 7)))  # this bitmap is least significant first
    tm = TableMap(tid, schema, table, columns, flags=flags)
    _optional_metadata(tm, raw, pos, end, mariadb)
    if any(i >= count for i in tm.primary_key):
        raise DecodeError(f"TABLE_MAP_EVENT of {schema}.{table}: primary key column out of range")
    return tm


def _meta_size(code: int) -> int:
    return 1 if code in _ONE_BYTE_META else 2 if code in _TWO_BYTE_META else 0


def _columns(raw: bytes, pos: int, codes: bytes) -> list[ColumnDef]:
    """The columns of the type codes ``codes``, with their metadata read from ``pos`` on."""
    columns: list[ColumnDef] = []
    for i, code in enumerate(codes):
        if code in _ONE_BYTE_META:
            meta = raw[pos]
        elif code in _TWO_BYTE_META:
            if code in (types.STRING, types.ENUM, types.SET, types.NEWDECIMAL):
                meta = raw[pos] << 8 | raw[pos + 1]  # (real type, length) / (precision, scale), high byte first
            else:
                meta = raw[pos] | raw[pos + 1] << 8
        else:
            meta = 0
        pos += _meta_size(code)
        real = code
        if code == types.STRING and meta:
            hi = meta >> 8
            real = hi | 0x30 if hi & 0x30 != 0x30 else hi  # the real type's two high bits carry length bits
            if real not in (types.STRING, types.ENUM, types.SET):
                real = types.STRING
        columns.append(ColumnDef(i, real, meta, False))
    return columns


@dataclass(slots=True)
class _Groups:
    """The columns an optional metadata field describes, in table order."""

    numeric: list[ColumnDef]
    character: list[ColumnDef]
    enum_set: list[ColumnDef]


def _optional_metadata(tm: TableMap, raw: bytes, pos: int, end: int, mariadb: bool) -> None:
    """The optional metadata fields (``binlog_row_metadata = FULL``) from ``pos`` to ``end``, into ``tm``."""
    columns = tm.columns
    groups = _Groups(
        [c for c in columns if c.type in NUMERIC],
        [c for c in columns if _is_character(c, mariadb)],
        [c for c in columns if c.type in (types.ENUM, types.SET)],
    )
    while pos < end:
        kind = raw[pos]
        length, pos = packed_int(raw, pos + 1)
        data = raw[pos : pos + length]
        if len(data) != length:
            raise DecodeError(f"TABLE_MAP_EVENT of {tm.schema}.{tm.table}: optional metadata field {kind} is cut short")
        pos += length
        read = _FIELDS.get(kind)
        if read is None:
            tm.unknown_fields.append(kind)  # VECTOR_DIMENSIONALITY and later additions: descriptive only
        else:
            read(tm, kind, data, groups)


def _signedness(tm: TableMap, kind: int, data: bytes, groups: _Groups) -> None:
    for c, flag in zip(groups.numeric, _bits(data, len(groups.numeric)), strict=False):
        c.unsigned = flag
    tm.has_signedness = True


def _charset(tm: TableMap, kind: int, data: bytes, groups: _Groups) -> None:
    default = kind in (DEFAULT_CHARSET, ENUM_AND_SET_DEFAULT_CHARSET)
    targets = groups.character if kind in (DEFAULT_CHARSET, COLUMN_CHARSET) else groups.enum_set
    for c, coll in zip(targets, _charsets(data, default, len(targets)), strict=True):
        c.collation = coll


def _names(tm: TableMap, kind: int, data: bytes, groups: _Groups) -> None:
    names = _strings(data)
    if len(names) != len(tm.columns):
        raise DecodeError(
            f"TABLE_MAP_EVENT of {tm.schema}.{tm.table}: {len(names)} names for {len(tm.columns)} columns"
        )
    for c, name in zip(tm.columns, names, strict=True):
        c.name = name.decode("utf-8")
    tm.has_names = True


def _members(tm: TableMap, kind: int, data: bytes, groups: _Groups) -> None:
    wanted = types.SET if kind == SET_STR_VALUE else types.ENUM
    targets = [c for c in tm.columns if c.type == wanted]
    lists = _value_lists(data)
    if len(lists) != len(targets):
        raise DecodeError(f"TABLE_MAP_EVENT of {tm.schema}.{tm.table}: member lists do not match the columns")
    for c, members in zip(targets, lists, strict=True):
        if kind == SET_STR_VALUE:
            c.set_values = members
        else:
            c.enum_values = members


def _geometry(tm: TableMap, kind: int, data: bytes, groups: _Groups) -> None:
    for c, g in zip([c for c in tm.columns if c.type == types.GEOMETRY], _ints(data), strict=False):
        c.geometry_type = g


def _primary_key(tm: TableMap, kind: int, data: bytes, groups: _Groups) -> None:
    tm.primary_key = tuple(_ints(data)) if kind == SIMPLE_PRIMARY_KEY else tuple(_ints(data)[::2])


def _visibility(tm: TableMap, kind: int, data: bytes, groups: _Groups) -> None:
    for c, visible in zip(tm.columns, _bits(data, len(tm.columns)), strict=True):
        c.visible = visible


_FIELDS: dict[int, Callable[[TableMap, int, bytes, _Groups], None]] = {
    SIGNEDNESS: _signedness,
    DEFAULT_CHARSET: _charset,
    COLUMN_CHARSET: _charset,
    ENUM_AND_SET_DEFAULT_CHARSET: _charset,
    ENUM_AND_SET_COLUMN_CHARSET: _charset,
    COLUMN_NAME: _names,
    SET_STR_VALUE: _members,
    ENUM_STR_VALUE: _members,
    GEOMETRY_TYPE: _geometry,
    SIMPLE_PRIMARY_KEY: _primary_key,
    PRIMARY_KEY_WITH_PREFIX: _primary_key,
    COLUMN_VISIBILITY: _visibility,
}
"""What each optional metadata field sets (the others are only listed in ``TableMap.unknown_fields``)."""


def _is_character(c: ColumnDef, mariadb: bool) -> bool:
    if c.type in _CHARACTER:
        return True
    return (mariadb and c.type == types.GEOMETRY) or (not mariadb and c.type == VECTOR)
