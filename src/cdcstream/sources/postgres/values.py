"""Rendering of pgoutput proto v1 text values into JSON-ready Python values, chosen once per column by type OID.

Every value arrives as PostgreSQL's text output. The replication connection pins the GUCs that shape it
(``TimeZone=UTC``, ``DateStyle=ISO``, ``IntervalStyle=iso_8601``, ``bytea_output=hex``,
``extra_float_digits=1``), so converters reshape strings instead of parsing them into ``datetime`` and back.

:class:`TypeRegistry` is the type map of one source: built-in types are known statically by OID (they are
fixed in ``pg_type.dat``); user-defined and extension types (enums, domains, composites, arrays of them,
hstore, citext, ...) are described by :class:`PgType` rows the source reads from ``pg_type`` on its normal
connection *before* the frames that reference them are decoded (see ``PostgresSource.changes``), so the decoder
itself stays sans-IO and never blocks. ``TypeRegistry.converter(oid)`` returns ``None`` for types whose text
is already their JSON rendering (text, uuid, numeric, ...): the hot loop then skips the call entirely.
Arrays, records of composite types and hstore are parsed by :mod:`.structured`.

The rendering of every type is documented in docs/types.md, "PostgreSQL types"; tests/unit/test_pg_values.py and
tests/integration/test_pg_types.py hold it to that table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from cdcstream.sources.postgres.structured import make_array, make_record, parse_hstore

Converter = Callable[[str], Any]
JsonAs = Literal["string", "object"]


class NeedTypes(Exception):
    """Raised by a converter whose type description is stale (a composite changed by ``ALTER TYPE``).

    The decoder stops before the message that raised it (nothing of that message emitted) and hands the rest of
    the batch back; the source re-reads these OIDs from the catalog and feeds the rest again.
    """

    def __init__(self, oids: set[int]) -> None:
        super().__init__(f"type descriptions needed: {sorted(oids)}")
        self.oids = oids


# Type OIDs from pg_type.dat; stable across PostgreSQL versions.
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
XID, CID, JSON, XML, FLOAT4, FLOAT8, MONEY = 28, 29, 114, 142, 700, 701, 790
BPCHAR, VARCHAR, DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1042, 1043, 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID, JSONB, XID8 = 1700, 2950, 3802, 5069

FIRST_NORMAL_OID = 16384
"""OIDs below this are assigned by initdb (built-in); user-defined and extension types are at or above it."""

# Built-in scalar types (OID -> name). Everything here without a converter in TypeRegistry._scalar renders as
# its text. Built-in OIDs not listed (arrays, ranges, rarely used types) are resolved from pg_type like
# user-defined types, once per connection.
BUILTIN_NAMES: dict[int, str] = {
    BOOL: "bool",
    BYTEA: "bytea",
    CHAR: "char",
    NAME: "name",
    INT8: "int8",
    INT2: "int2",
    INT4: "int4",
    24: "regproc",
    TEXT: "text",
    OID: "oid",
    27: "tid",
    XID: "xid",
    CID: "cid",
    JSON: "json",
    XML: "xml",
    600: "point",
    601: "lseg",
    602: "path",
    603: "box",
    604: "polygon",
    628: "line",
    650: "cidr",
    FLOAT4: "float4",
    FLOAT8: "float8",
    718: "circle",
    774: "macaddr8",
    MONEY: "money",
    829: "macaddr",
    869: "inet",
    BPCHAR: "bpchar",
    VARCHAR: "varchar",
    DATE: "date",
    TIME: "time",
    TIMESTAMP: "timestamp",
    TIMESTAMPTZ: "timestamptz",
    INTERVAL: "interval",
    TIMETZ: "timetz",
    1560: "bit",
    1562: "varbit",
    NUMERIC: "numeric",
    2202: "regprocedure",
    2203: "regoper",
    2204: "regoperator",
    2205: "regclass",
    2206: "regtype",
    UUID: "uuid",
    3220: "pg_lsn",
    3614: "tsvector",
    3615: "tsquery",
    3734: "regconfig",
    3769: "regdictionary",
    JSONB: "jsonb",
    4072: "jsonpath",
    4089: "regnamespace",
    4096: "regrole",
    4191: "regcollation",
    XID8: "xid8",
}

_NON_FINITE_FLOATS = frozenset({"NaN", "Infinity", "-Infinity"})


# ---------------------------------------------------------------------------------------------------------
# Scalar converters
# ---------------------------------------------------------------------------------------------------------


def to_bool(value: str) -> bool:
    return value == "t"


def to_float(value: str) -> float | str:
    """``real``/``double precision``: a JSON number, or the string ``NaN``/``Infinity``/``-Infinity``.

    With ``extra_float_digits=1`` PostgreSQL prints the shortest text that reads back as the same float, so
    ``float(text)`` is exact and orjson prints the same shortest digits again.
    """
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


class _DuplicateKey(Exception):
    pass


def _json_float(text: str) -> float | orjson.Fragment:
    # A float when the double denotes the same number as the text (what any consumer's parser reads back);
    # otherwise the digits verbatim, e.g. 1.00000000000000000001 or 1e400.
    f = float(text)
    if math.isfinite(f) and Decimal(repr(f)) == Decimal(text):
        return f
    return orjson.Fragment(text)


def _json_int(text: str) -> int | orjson.Fragment:
    n = int(text)
    if -(2**63) <= n < 2**64:  # what orjson can write
        return n
    return orjson.Fragment(text)


def _json_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise _DuplicateKey  # only `json` (not jsonb) keeps duplicate keys; a dict would drop one
    return d


def json_value(value: str) -> Any:
    """json/jsonb with ``json_as = "object"``: the JSON as Python values, written back as embedded JSON.

    Numbers that a double cannot hold exactly and integers beyond 64 bits stay as their digits
    (``orjson.Fragment``); a ``json`` value with duplicate keys is embedded verbatim as a whole, and so is a
    top-level JSON ``null`` (it must not look like SQL NULL). Plain Python values elsewhere keep partition keys
    and transformations deterministic.
    """
    try:
        parsed = json.loads(value, parse_float=_json_float, parse_int=_json_int, object_pairs_hook=_json_pairs)
    except _DuplicateKey:
        return orjson.Fragment(value)
    # A JSON null is a value, not SQL NULL: None would be dropped with include_null_and_empty off.
    return _JSON_NULL if parsed is None else parsed


_JSON_NULL = orjson.Fragment(b"null")


_MONEY_C = re.compile(r"^(-?)\$([0-9]{1,3}(?:,[0-9]{3})*)(\.[0-9]+)?$")


def money(value: str) -> str:
    """``-$1,234.56`` -> ``"-1234.56"``: an exact decimal string, when printed in the C/en_US format.

    money's text depends on the database's ``lc_monetary`` (and so does the meaning of the stored integer), so
    cdcstream does not pin it; any other locale's format is passed through unchanged rather than guessed at.
    """
    m = _MONEY_C.match(value)
    if m is None:
        return value
    return m.group(1) + m.group(2).replace(",", "") + (m.group(3) or "")


# ---------------------------------------------------------------------------------------------------------
# The type map
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class PgType:
    """One row of the catalog query (``pg_type`` + the attributes of a composite)."""

    oid: int
    namespace: str
    name: str
    kind: str  # pg_type.typtype: b base, c composite, d domain, e enum, p pseudo, r range, m multirange
    is_array: bool  # typoutput = array_out (int2vector/oidvector/point have a typelem but are not arrays)
    elem: int = 0  # array element type
    base: int = 0  # domain base type
    delim: str = ","  # array delimiter (';' for box)
    fields: tuple[tuple[str, int], ...] = ()  # composite attributes (name, type OID), dropped ones left out

    @property
    def display_name(self) -> str:
        return self.name if self.namespace == "pg_catalog" else f"{self.namespace}.{self.name}"

    def references(self) -> list[int]:
        """Type OIDs this type's rendering depends on."""
        refs = [self.elem, self.base, *(oid for _, oid in self.fields)]
        return [r for r in refs if r]


class TypeRegistry:
    """Type OID -> converter for one source, with the rendering options of its config.

    Converters are built once per OID and cached; :meth:`add` (new catalog rows) clears the cache so the next
    Relation message gets plans built from the refreshed types.
    """

    def __init__(self, *, no_hex_prefix: bool = False, json_as: JsonAs = "string", hstore_as: JsonAs = "string"):
        self.no_hex_prefix = no_hex_prefix
        self.json_as = json_as
        self.hstore_as = hstore_as
        self.types: dict[int, PgType] = {}
        #: Bumped by every :meth:`add`: a copy of the descriptions made before it may be stale.
        self.generation = 0
        self._cache: dict[int, Converter | None] = {}
        # (composite OID, field count) pairs already re-described after a mismatch: a value that still does not
        # fit was written under an older definition than the catalog's, and is passed through as text.
        self._rechecked: set[tuple[int, int]] = set()
        json_conv: Converter | None = json_value if json_as == "object" else None
        self._scalar: dict[int, Converter | None] = {
            BOOL: to_bool,
            INT2: int,
            INT4: int,
            INT8: int,
            OID: int,
            XID: int,
            CID: int,
            XID8: int,
            FLOAT4: to_float,
            FLOAT8: to_float,
            BYTEA: make_bytea(no_hex_prefix),
            TIMESTAMPTZ: timestamptz,
            TIMESTAMP: timestamp,
            MONEY: money,
            JSON: json_conv,
            JSONB: json_conv,
        }

    # -- what needs a catalog lookup ----------------------------------------------------------------------
    def known(self, oid: int) -> bool:
        return oid in BUILTIN_NAMES or oid in self.types

    def missing(self, oids: Iterable[int]) -> set[int]:
        """The OIDs (and the OIDs they reference) that the catalog has not described yet."""
        out: set[int] = set()
        todo = list(oids)
        seen: set[int] = set()
        while todo:
            oid = todo.pop()
            if oid in seen or oid == 0:
                continue
            seen.add(oid)
            t = self.types.get(oid)
            if t is not None:
                todo.extend(t.references())
            elif oid not in BUILTIN_NAMES:
                out.add(oid)
        return out

    def add(self, types: Iterable[PgType]) -> None:
        """Record (or replace) catalog descriptions; converters are rebuilt on next use."""
        for t in types:
            self.types[t.oid] = t
        self._cache.clear()
        self.generation += 1

    def _mismatch(self, oid: int) -> Callable[[str, int], Any]:
        def on_mismatch(value: str, nfields: int) -> Any:
            key = (oid, nfields)
            if key in self._rechecked:
                return value
            self._rechecked.add(key)
            raise NeedTypes({oid})

        return on_mismatch

    # -- names and converters ------------------------------------------------------------------------------
    def name(self, oid: int) -> str | None:
        t = self.types.get(oid)
        if t is not None:
            return t.display_name
        return BUILTIN_NAMES.get(oid)

    def converter(self, oid: int) -> Converter | None:
        """The converter for a column of this type; None means "the text is the rendering"."""
        try:
            return self._cache[oid]
        except KeyError:
            pass
        conv = self._build(oid, 0)
        self._cache[oid] = conv
        return conv

    def _build(self, oid: int, depth: int) -> Converter | None:
        if depth > 32:  # PostgreSQL forbids recursive types; a corrupt catalog answer must not recurse forever
            raise ValueError(f"type {oid} nests more than 32 levels")
        if oid in self._scalar:
            return self._scalar[oid]
        t = self.types.get(oid)
        if t is None:
            return None  # built-in text-like type, or not described: its text
        if t.kind == "d":
            return self._build(t.base, depth + 1)
        if t.is_array:
            return make_array(self._build(t.elem, depth + 1), t.delim)
        if t.kind == "c":
            return make_record([(name, self._build(f, depth + 1)) for name, f in t.fields], self._mismatch(oid))
        if t.name == "hstore" and self.hstore_as == "object":
            return parse_hstore
        return None  # enums, ranges, multiranges, extension base types (citext, ltree, ...): their text
