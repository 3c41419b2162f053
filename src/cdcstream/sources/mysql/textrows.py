"""Full-load rows of MySQL/MariaDB rendered exactly as the binlog path renders the same values.

A load session reads rows over the text protocol (utf8mb4, time zone UTC, the temporal and decimal types as the server's
text: :data:`SESSION_CONVERSIONS`); :func:`load_converter` turns each value into its rendering
(docs/types.md, "MySQL / MariaDB types"), from the server's own text where that is the rendering (dates, times,
decimals, MariaDB UUID/INET). Columns are described from ``information_schema`` by stand-ins of
python-mysql-replication's ``Column`` (:func:`column_stand_in`), which ``rows.py`` reads as the binlog path reads table
maps.

Rows arrive as the result's text-protocol row packets (``packets.py``) and are parsed here
(:func:`parse_row_packets`) exactly as PyMySQL would parse them, without its row objects. :class:`MyRowPackets` is
the raw chunk a mapping worker process decodes: it carries its :class:`PacketSpec`, from which any process
rebuilds the converters. Everything here is pure: functions of the server's bytes and text.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any

import orjson
import pymysql.converters
from pymysql.constants import FIELD_TYPE

from cdcstream.changes import Described, TableInfo
from cdcstream.errors import SourceError
from cdcstream.sources.loadengine import per_spec
from cdcstream.sources.mysql import rows

_TYPES: dict[str, int] = {
    "tinyint": rows.TINY,
    "smallint": rows.SHORT,
    "mediumint": rows.INT24,
    "int": rows.LONG,
    "integer": rows.LONG,
    "bigint": rows.LONGLONG,
    "decimal": rows.NEWDECIMAL,
    "numeric": rows.NEWDECIMAL,
    "float": rows.FLOAT,
    "double": rows.DOUBLE,
    "real": rows.DOUBLE,
    "date": rows.DATE,
    "datetime": rows.DATETIME2,
    "timestamp": rows.TIMESTAMP2,
    "time": rows.TIME2,
    "year": rows.YEAR,
    "bit": rows.BIT,
    "enum": rows.ENUM,
    "set": rows.SET,
    "char": rows.STRING,
    "binary": rows.STRING,
    "varchar": rows.VARCHAR,
    "varbinary": rows.VARCHAR,
    "json": rows.JSON,
}
_BLOBS = {"tinytext", "text", "mediumtext", "longtext", "tinyblob", "blob", "mediumblob", "longblob"}
_GEOMETRY = {"geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon"}
_GEOMETRY |= {"geometrycollection", "geomcollection"}


def column_stand_in(
    name: str, data_type: str, column_type: str, charset: str | None, fsp: Any, prec: Any, scale: Any
) -> Any:
    """A stand-in for python-mysql-replication's ``Column`` (what ``rows.type_name``/converters read)."""
    if data_type in _BLOBS:
        code = rows.BLOB
    elif data_type in _GEOMETRY:
        code = rows.GEOMETRY
    else:
        code = _TYPES.get(data_type, rows.STRING)  # MariaDB inet6/uuid & co.: fixed-width strings in the binlog
    if code in rows.TEXT_TYPES and charset is None:
        charset = "binary"  # binary/varbinary/blob: information_schema has no charset, the binlog says binary
    return SimpleNamespace(
        name=name,
        data_type=data_type,
        type=code,
        unsigned="unsigned" in column_type,
        character_set_name=charset,
        fsp=int(fsp or 0),
        precision=int(prec or 0),
        decimals=int(scale or 0),
        set_values=[],
        enum_values=[],
    )


def _bit(value: bytes | int) -> int:
    return value if isinstance(value, int) else int.from_bytes(value, "big")


def _set(value: str | set[str]) -> str:
    return value if isinstance(value, str) else ",".join(sorted(value))  # the server sends definition order


def calendar_date(text: str) -> bool:
    """Whether the server's ``YYYY-MM-DD...`` text is a date of the calendar: a month 1-12 and a day that month
    has (not ``2020-02-31``, stored under ``ALLOW_INVALID_DATES``, nor a zero month or day). The year 0000 is one
    (ISO 8601's proleptic Gregorian calendar has it, a leap year)."""
    try:
        year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    except ValueError:
        return False
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]


def _server_text(text: str) -> str:
    return text


def _iso_datetime(text: str) -> str:
    return text[:10] + "T" + text[11:]  # YYYY-MM-DD HH:MM:SS[.fraction of the column's fsp digits]


def _iso_timestamp(text: str) -> str:
    return text[:10] + "T" + text[11:] + "Z"  # the session time zone is UTC


# Column types whose value is the server's text itself (docs/types.md, "MySQL / MariaDB types"): the load sessions
# read them as text (SESSION_CONVERSIONS) and render it here, with no date/Decimal/timedelta object on the way.
_TEXT_RENDER: dict[int, Callable[[str], str]] = {
    rows.TIME2: _server_text,  # sign, hours beyond 24, the column's fsp digits
    rows.NEWDECIMAL: _server_text,  # the exact digits
}
# The temporal types: a calendar date renders so; one the calendar cannot hold (no instant) is the server's text
# as it is with invalid_dates = "text", null with "null".
_CALENDAR_RENDER: dict[int, Callable[[str], str]] = {
    rows.DATE: _server_text,
    rows.DATETIME2: _iso_datetime,
    rows.TIMESTAMP2: _iso_timestamp,
}
# Result types PyMySQL would turn into date/datetime/timedelta/Decimal objects (the dates the calendar cannot
# hold staying text): the load sessions' PyMySQL keeps them text (SESSION_CONVERSIONS).
_TEXT_DECODERS = frozenset(
    {
        FIELD_TYPE.DATE,
        FIELD_TYPE.DATETIME,
        FIELD_TYPE.TIMESTAMP,
        FIELD_TYPE.TIME,
        FIELD_TYPE.NEWDECIMAL,
        FIELD_TYPE.DECIMAL,
    }
)
# MariaDB types whose record value is their text form (``2001:db8::``), as a SELECT returns it.
_MARIADB_TEXT_TYPES = frozenset({"uuid", "inet4", "inet6"})


def with_text_types(info: TableInfo, columns: Sequence[Any]) -> TableInfo:
    """``info`` with MariaDB's UUID/INET4/INET6 columns named so (``rows.table_info`` knows binlog type codes,
    which call them binary strings), as the binlog reader names them from the catalogue."""
    named = {c.name: c.data_type for c in columns if c.data_type in _MARIADB_TEXT_TYPES}
    if not named:
        return info
    cols = tuple(replace(c, type_name=named[c.name]) if c.name in named else c for c in info.columns)
    return replace(info, columns=cols)


def text_renderer(column: Any, invalid_dates: str) -> Callable[[str], Any] | None:
    """The rendering of a column whose value is the server's text (:data:`_TEXT_RENDER`,
    :data:`_CALENDAR_RENDER`), or None."""
    render = _CALENDAR_RENDER.get(column.type)
    if render is None:
        return _TEXT_RENDER.get(column.type)
    if render is _server_text and invalid_dates == "text":
        return render  # a DATE is its text whether the calendar has it or not
    null_invalid = invalid_dates == "null"

    def calendar_or_text(text: str) -> str | None:
        if calendar_date(text):
            return render(text)
        return None if null_invalid else text

    return calendar_or_text


def load_converter(
    column: Any, *, mariadb: bool, no_hex_prefix: bool, invalid_dates: str = "text"
) -> Callable[[Any], Any] | None:
    """The converter of a value as a load session reads it (text protocol, utf8mb4, time zone UTC, the types of
    :data:`_TEXT_DECODERS` as text) to its rendering, which is what the binlog path renders for the same value;
    None = keep as is."""
    t = column.type
    text = text_renderer(column, invalid_dates)
    if text is not None:
        return text
    if t == rows.BIT:
        return _bit
    if t == rows.SET:
        return _set
    if t == rows.YEAR:
        return None  # PyMySQL reads 0000 as 0, what the binlog path renders too
    if t == rows.JSON:
        # MySQL's binlog JSON is re-serialised by the CDC path (compact); the text protocol's is spaced.
        return None if mariadb else (lambda v: rows.json_text(orjson.loads(v)))
    if column.data_type in _MARIADB_TEXT_TYPES:
        return None  # sent as utf8mb4 text (the binlog has their bytes)
    if t in rows.TEXT_TYPES and column.character_set_name != "binary":
        binary = rows.make_binary(no_hex_prefix)
        # The server converts every character set to utf8mb4 for this connection: no repair needed.
        return lambda v: binary(v) if isinstance(v, bytes) else v
    return rows.converter_for(column, no_hex_prefix)


def key_json(value: Any) -> Any:
    """A key value as a load session reads it (temporal and decimal values as the server's text) as JSON for the
    checkpoint (accepted back by :meth:`MyLoadEngine._param`)."""
    if value is None or isinstance(value, int | str | float):
        return value
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    return str(value)


# A text-protocol row packet's column: PyMySQL's (encoding, decoder) pair of the result (None: keep bytes/str).
Field = tuple[str | None, Callable[[Any], Any] | None]


def parse_row_packets(data: bytes, count: int, fields: Sequence[Field]) -> list[list[Any]]:
    """``count`` text-protocol row packets, concatenated, as PyMySQL's ``MySQLResult._read_row_from_packet``
    reads each: length-coded strings, decoded with the field's encoding, then its decoder (NULL stays None)."""
    # int() and float() read ASCII digits from bytes as from str: skip the decode for them (a third of a
    # typical row's fields).
    plan = [(None, conv) if enc == "ascii" and conv in (int, float) else (enc, conv) for enc, conv in fields]
    out = []
    pos = 0
    for _ in range(count):
        values: list[Any] = []
        append = values.append
        for enc, conv in plan:
            n = data[pos]
            if n < 251:
                pos += 1
            elif n == 251:  # NULL
                pos += 1
                append(None)
                continue
            elif n == 252:
                n = data[pos + 1] | data[pos + 2] << 8
                pos += 3
            elif n == 253:
                n = data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16
                pos += 4
            else:
                n = int.from_bytes(data[pos + 1 : pos + 9], "little")
                pos += 9
            end = pos + n
            v: Any = data[pos:end]
            pos = end
            if enc is not None:
                v = v.decode(enc)
            append(v if conv is None else conv(v))
        out.append(values)
    if pos != len(data):
        raise SourceError(f"full load: {len(data) - pos} bytes left after {count} row packets (a short row?)")
    return out


@dataclass(slots=True, frozen=True)
class PacketSpec(Described):
    """What decoding a table's row packets needs, in a form another process can rebuild converters from.

    ``key`` is unique per spec (the worker caches the load converters under it); ``fields`` are the result's
    PyMySQL decoders (module-level functions, picklable by name) and ``columns`` the ``_column`` stand-ins
    :func:`load_converter` reads."""

    key: str
    names: tuple[str, ...]
    fields: tuple[Field, ...]
    columns: tuple[Any, ...]
    mariadb: bool
    no_hex_prefix: bool
    invalid_dates: str


@per_spec
def _spec_plan_of(spec: PacketSpec) -> tuple[list[Field], list[tuple[int, Callable[[Any], Any]]]]:
    """The spec's fields and load converters, with the :data:`_TEXT_RENDER` types rendered at parse time."""
    direct = {i: f for i, c in enumerate(spec.columns) if (f := text_renderer(c, spec.invalid_dates)) is not None}
    fields: list[Field] = [("ascii", direct[i]) if i in direct else f for i, f in enumerate(spec.fields)]
    convs = [
        (i, conv)
        for i, conv in load_converters(spec.columns, spec.mariadb, spec.no_hex_prefix, spec.invalid_dates)
        if i not in direct
    ]
    return fields, convs


def load_converters(
    columns: Sequence[Any], mariadb: bool, no_hex_prefix: bool, invalid_dates: str
) -> list[tuple[int, Any]]:
    return [
        (i, conv)
        for i, c in enumerate(columns)
        if (conv := load_converter(c, mariadb=mariadb, no_hex_prefix=no_hex_prefix, invalid_dates=invalid_dates))
        is not None
    ]


def render_rows(
    names: Sequence[str], convs: Sequence[tuple[int, Callable[[Any], Any]]], raw: list[list[Any]]
) -> list[dict[str, Any]]:
    """Rows as PyMySQL read them, with the load converters applied (in place: ``raw`` is consumed)."""
    out = []
    for values in raw:
        for i, conv in convs:
            v = values[i]
            if v is not None:
                values[i] = conv(v)
        out.append(dict(zip(names, values, strict=True)))
    return out


@dataclass(slots=True)
class MyRowPackets:
    """MySQL's :class:`~cdcstream.changes.RawRows`: a result's text-protocol row packet payloads as read
    (concatenated, without their headers) and their spec."""

    data: bytes
    count: int
    spec: PacketSpec

    def __len__(self) -> int:
        return self.count

    def rows(self) -> list[dict[str, Any]]:
        fields, convs = _spec_plan_of(self.spec)
        return render_rows(self.spec.names, convs, parse_row_packets(self.data, self.count, fields))


# PyMySQL's conversions without the decoders of _TEXT_DECODERS: those values arrive as the server's text.
SESSION_CONVERSIONS = {k: v for k, v in pymysql.converters.conversions.items() if k not in _TEXT_DECODERS}
